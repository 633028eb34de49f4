"""Pixels of the synthetic scene: the textured background, people, bicycles, cars and sensor noise.

Drawing uses OpenCV primitives with 4 fractional bits, so slow walkers glide smoothly instead of jumping
from pixel to pixel, and anti-aliased edges, so figures look like a low-resolution camera's rather than
like masks. Actors are drawn far to near (painter's order) over a copy of the static background.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipelines.synthetic.actors import SHOE_RADIUS, Shape, head_radius, limb_width, torso_stroke, tube_width
from pipelines.synthetic.scene import Camera, Scene, Walkway
from pipelines.synthetic.skeleton import J, LEFT_SIDE, RIGHT_SIDE
from pipelines.synthetic.vehicles import CAR

SENSOR_NOISE_SIGMA = 2.0  # grey levels; the read noise of a compressed surveillance feed
_SHIFT = 4  # fractional bits of drawing coordinates
_ONE = 1 << _SHIFT
_GROUND = np.array([92.0, 124.0, 112.0])  # BGR of trodden grass
_PAVING = np.array([150.0, 158.0, 164.0])


def render_background(scene: Scene) -> np.ndarray:
    """The static scene (H, W, 3) uint8 BGR: textured ground, walkways and props."""
    camera = scene.camera
    rng = np.random.default_rng(scene.texture_seed)
    h, w = camera.height, camera.width
    patches = _smooth_noise(rng, h, w, cell=12)
    # Anti-aliased drawing needs 8-bit images.
    image = np.clip(np.rint(_GROUND + patches[..., None] * np.array([6.0, 14.0, 8.0])), 0, 255).astype(np.uint8)
    for way in scene.walkways:
        _draw_walkway(image, camera, way, rng)
    for prop in scene.props:
        _draw_prop(image, camera, prop.kind, np.array(prop.position), prop.size_m, rng)
    image = cv2.GaussianBlur(image, (3, 3), 0.7)
    grain = rng.normal(0.0, 3.0, (h, w, 1))  # gravel and grass, identical in every frame
    return np.clip(np.rint(image + grain), 0, 255).astype(np.uint8)


class SensorNoise:
    """Seeded Gaussian sensor noise, a new field for every frame.

    Each frame takes a window at a random offset into a bank of noise four frames long: one random draw per
    frame instead of one per pixel, which keeps rendering well under a second per video.
    """

    def __init__(self, shape: tuple[int, int, int], rng: np.random.Generator) -> None:
        self.size = int(np.prod(shape))
        self.shape = shape
        self.rng = rng
        self.bank = np.rint(rng.normal(0.0, SENSOR_NOISE_SIGMA, 4 * self.size)).astype(np.int16)

    def add_to(self, frame: np.ndarray) -> np.ndarray:
        start = int(self.rng.integers(0, len(self.bank) - self.size + 1))
        noisy = frame.astype(np.int16) + self.bank[start:start + self.size].reshape(self.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)


def draw_frame(background: np.ndarray, shapes: list[Shape], noise: SensorNoise) -> np.ndarray:
    """One frame: actors drawn far to near over the background, plus fresh sensor noise."""
    frame = background.copy()
    for shape in sorted(shapes, key=lambda s: s.anchor[1]):
        _draw_shape(frame, shape)
    return noise.add_to(frame)


def _draw_shape(image: np.ndarray, shape: Shape) -> None:
    if shape.faces:
        _draw_car(image, shape)
    else:
        if shape.wheels is not None:
            _draw_bicycle(image, shape)
        _draw_person(image, shape)


def drawn_in_frame(shape: Shape, width: int, height: int) -> bool:
    """Whether drawing ``shape`` changes any pixel of a ``width`` x ``height`` frame: what the labels and
    the skeleton files count as visible. Limbs, shoes, heads and wheels reach beyond the projected
    points, so an actor at the border is drawn into frames where none of its points are; only such
    borderline frames are drawn to find out (on black and on white, so that no colour goes unseen)."""
    x0, y0, x1, y1 = shape.bounds()
    pad = shape.reach()
    if x1 + pad < 0 or x0 - pad >= width or y1 + pad < 0 or y0 - pad >= height:
        return False
    if x0 >= 0 and y0 >= 0 and x1 <= width - 1 and y1 <= height - 1:
        return True
    for value in (0, 255):
        canvas = np.full((height, width, 3), value, np.uint8)
        _draw_shape(canvas, shape)
        if (canvas != value).any():
            return True
    return False


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean noise (h, w) varying over about ``cell`` pixels."""
    coarse = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2))
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _draw_walkway(image: np.ndarray, camera: Camera, way: Walkway, rng: np.random.Generator) -> None:
    margin = 0.5 * max(camera.width, camera.height)
    rows = (way.arc >= way.enter - margin) & (way.arc <= way.leave + margin)
    centre = way.points[rows]
    heading = camera.ground_direction(np.gradient(centre, axis=0))
    left_of_heading = np.stack([-heading[:, 1], heading[:, 0]], axis=1)
    offset = camera.ground_offset(centre, left_of_heading, way.half_width_m)
    left, right = centre + offset, centre - offset
    outline = np.concatenate([left, right[::-1]])
    tint = _PAVING + rng.normal(0.0, 4.0, 3)
    cv2.fillPoly(image, [_fixed(outline)], tint.tolist(), cv2.LINE_AA, _SHIFT)
    # Paving joints about every metre, then kerbs: texture that makes motion along the walkway visible.
    step = max(3, int(round(camera.near_scale)))
    for i in range(0, len(centre), step):
        cv2.line(image, _point(left[i]), _point(right[i]), (tint * 0.88).tolist(), 1, cv2.LINE_AA, _SHIFT)
    for edge in (left, right):
        cv2.polylines(image, [_fixed(edge)], False, (tint * 0.7).tolist(), 1, cv2.LINE_AA, _SHIFT)


def _draw_prop(image: np.ndarray, camera: Camera, kind: str, position: np.ndarray, size_m: float,
               rng: np.random.Generator) -> None:
    s = camera.scale(position[1])
    if kind == "bush":
        cv2.ellipse(image, _point(position + [0.2 * s, 0]), _axes(size_m * s * 0.6, size_m * s * 0.25), 0, 0, 360,
                    (_GROUND * 0.6).tolist(), -1, cv2.LINE_AA, _SHIFT)
        for _ in range(7):
            blob = camera.lifted(position, 0.45 * size_m) + rng.normal(0.0, 0.25 * size_m * s, 2)
            green = np.array([40.0, 95.0, 55.0]) * rng.uniform(0.7, 1.3)
            cv2.circle(image, _point(blob), int(_ONE * rng.uniform(0.25, 0.45) * size_m * s), green.tolist(), -1,
                       cv2.LINE_AA, _SHIFT)
    elif kind == "lamp":
        top = camera.lifted(position, 3.5)
        cv2.line(image, _point(position), _point(top), (60, 60, 64), max(1, int(round(size_m * s))), cv2.LINE_AA,
                 _SHIFT)
        cv2.circle(image, _point(top), int(_ONE * 0.25 * s), (200, 225, 235), -1, cv2.LINE_AA, _SHIFT)
    else:
        raise ValueError(f"unknown prop kind {kind!r}")


def _draw_person(image: np.ndarray, shape: Shape) -> None:
    look, kp, s = shape.actor.look, shape.keypoints, shape.scale
    limb = limb_width(s)
    # The side of the body turned away from the camera is drawn first and a little darker.
    left_far = shape.depths[list(LEFT_SIDE)].mean() > shape.depths[list(RIGHT_SIDE)].mean()
    far, near = ("left", "right") if left_far else ("right", "left")
    shoe = (40, 40, 45)

    def leg(side: str, dim: float) -> None:
        colour = (np.array(look.bottom) * dim).tolist()
        _polyline(image, kp[[J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]]], colour, limb + 1)
        cv2.circle(image, _point(kp[J[f"{side}_ankle"]]), int(_ONE * SHOE_RADIUS * limb), shoe, -1, cv2.LINE_AA, _SHIFT)

    def arm(side: str, dim: float) -> None:
        _polyline(image, kp[[J[f"{side}_shoulder"], J[f"{side}_elbow"]]], (np.array(look.top) * dim).tolist(), limb)
        _polyline(image, kp[[J[f"{side}_elbow"], J[f"{side}_wrist"]]], (np.array(look.skin) * dim).tolist(), limb)

    arm(far, 0.8)
    leg(far, 0.8)
    leg(near, 1.0)
    shoulders, hips = kp[[J["left_shoulder"], J["right_shoulder"]]], kp[[J["left_hip"], J["right_hip"]]]
    torso = np.concatenate([shoulders, hips[::-1]])
    cv2.fillPoly(image, [_fixed(torso)], look.top, cv2.LINE_AA, _SHIFT)
    # The torso seen edge-on still has depth: a thick stroke from neck to pelvis.
    _polyline(image, np.stack([shoulders.mean(axis=0), hips.mean(axis=0)]), look.top, torso_stroke(s))
    head = kp[[J["left_ear"], J["right_ear"], J["left_eye"], J["right_eye"]]].mean(axis=0)
    cv2.circle(image, _point(head), int(_ONE * head_radius(s)), look.skin, -1, cv2.LINE_AA, _SHIFT)
    arm(near, 1.0)


def _draw_bicycle(image: np.ndarray, shape: Shape) -> None:
    thickness = tube_width(shape.scale)
    for rim in shape.wheels:
        cv2.polylines(image, [_fixed(rim)], True, (30, 30, 30), thickness, cv2.LINE_AA, _SHIFT)
    for a, b in shape.tubes:
        cv2.line(image, _point(a), _point(b), shape.actor.look.paint, thickness, cv2.LINE_AA, _SHIFT)


def _draw_car(image: np.ndarray, shape: Shape) -> None:
    radius = int(_ONE * CAR.wheel_radius * shape.scale)
    for centre in shape.wheel_centres:
        cv2.circle(image, _point(centre), radius, (25, 25, 25), -1, cv2.LINE_AA, _SHIFT)
    paint, glass = np.array(shape.actor.look.paint), np.array([70.0, 60.0, 50.0])
    for polygon, shade, is_glass in shape.faces:
        colour = (glass if is_glass else paint) * shade
        cv2.fillPoly(image, [_fixed(polygon)], colour.tolist(), cv2.LINE_AA, _SHIFT)


def _polyline(image: np.ndarray, points: np.ndarray, colour, thickness: int) -> None:
    cv2.polylines(image, [_fixed(points)], False, colour, thickness, cv2.LINE_AA, _SHIFT)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _point(point: np.ndarray) -> tuple[int, int]:
    x, y = np.rint(np.asarray(point, dtype=float) * _ONE).astype(int)
    return int(x), int(y)


def _axes(a: float, b: float) -> tuple[int, int]:
    return int(round(a * _ONE)), int(round(b * _ONE))
