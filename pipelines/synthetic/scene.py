"""Camera and static layout of the synthetic surveillance scene.

An elevated camera looks down at a fixed tilt onto flat ground crossed by two or three walkways, like the
fixed cameras of UCSD Ped2 or ShanghaiTech. The projection is weak-perspective: the ground point of an actor
sets its scale (pixels per metre grow linearly towards the bottom of the image) and the actor's body is
projected orthographically at that scale. The layout depends on the dataset seed only, so every video of
one dataset shows the same place and every walkway keeps its flow direction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.params import SyntheticParams, scene_seed

TILT_RAD = np.deg2rad(40.0)  # camera pitch below the horizon
REFERENCE_STATURE_M = 1.75
NEAR_STATURE_FRACTION = 0.22  # a person standing on the bottom row is this fraction of the image height
FAR_SCALE_RATIO = 0.6  # scale on the top row relative to the bottom row
_COS_TILT, _SIN_TILT = float(np.cos(TILT_RAD)), float(np.sin(TILT_RAD))


@dataclass(frozen=True)
class Camera:
    """Maps metres around a ground point to pixels; local frames are (forward, left, up)."""

    width: int
    height: int
    near_scale: float  # pixels per metre on the bottom image row

    @classmethod
    def for_frame(cls, width: int, height: int) -> Camera:
        return cls(width, height, NEAR_STATURE_FRACTION * height / (REFERENCE_STATURE_M * _COS_TILT))

    def scale(self, y: float | np.ndarray) -> float | np.ndarray:
        """Pixels per metre at image row ``y`` (clamped so points far outside the frame stay sane)."""
        if np.ndim(y) == 0:  # the common case, kept off numpy's slower array path
            row = min(max(float(y) / self.height, -0.5), 1.5)
        else:
            row = np.clip(np.asarray(y, dtype=float) / self.height, -0.5, 1.5)
        return self.near_scale * (FAR_SCALE_RATIO + (1.0 - FAR_SCALE_RATIO) * row)

    def project(self, anchor: np.ndarray, heading: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image points and depths (metres away from the camera) of body-frame points ``local`` (N, 3).

        ``heading`` is the unit ground direction (a, b) the body faces: a to the image right, b away.
        """
        forward, left, up = local[:, 0], local[:, 1], local[:, 2]
        b = forward * heading[1] + left * heading[0]
        s = self.scale(anchor[1])
        image = np.empty((len(local), 2))
        image[:, 0] = anchor[0] + s * (forward * heading[0] - left * heading[1])
        image[:, 1] = anchor[1] - s * (up * _COS_TILT + b * _SIN_TILT)
        return image, b

    def facing_camera(self, heading: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Whether surfaces with body-frame outward ``normals`` (N, 3) face the camera."""
        # The direction towards the camera is (a, b, up) = (0, -cos tilt, sin tilt): only b and up matter.
        b = normals[:, 0] * heading[1] + normals[:, 1] * heading[0]
        return normals[:, 2] * _SIN_TILT - b * _COS_TILT > 1e-9

    def lifted(self, anchor: np.ndarray, metres: float) -> np.ndarray:
        """Image point ``metres`` straight above ground point ``anchor``."""
        return np.array([anchor[0], anchor[1] - metres * self.scale(anchor[1]) * _COS_TILT])

    def ground_direction(self, image_vector: np.ndarray) -> np.ndarray:
        """Unit ground direction(s) that move a ground point along ``image_vector`` (..., 2)."""
        v = np.asarray(image_vector, dtype=float)
        ground = np.stack([v[..., 0], -v[..., 1] / _SIN_TILT], axis=-1)
        return ground / np.linalg.norm(ground, axis=-1, keepdims=True)

    def ground_offset(self, anchor: np.ndarray, direction: np.ndarray, metres: float) -> np.ndarray:
        """Image displacement(s) of walking ``metres`` from ``anchor`` in ground ``direction`` (both (..., 2))."""
        d = np.asarray(direction, dtype=float)
        pixels = metres * np.asarray(self.scale(np.asarray(anchor)[..., 1]))
        return pixels[..., None] * np.stack([d[..., 0], -d[..., 1] * _SIN_TILT], axis=-1)

    def pixels_per_metre(self, image_direction: np.ndarray, y: float) -> float:
        """Image distance covered per metre walked in the ground direction shown by ``image_direction``."""
        g = self.ground_direction(image_direction)
        return self.scale(y) * float(np.hypot(g[0], g[1] * _SIN_TILT))


@dataclass(frozen=True, eq=False)
class Walkway:
    """A walkway: a dense centre polyline in its flow direction, reaching far beyond the frame at both ends."""

    points: np.ndarray  # (M, 2) image points, one pixel apart
    arc: np.ndarray  # (M,) arc length of each point
    half_width_m: float
    enter: float  # arc length where the centre line enters the frame
    leave: float  # arc length where it leaves

    def locate(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Point and unit tangent (flow direction) at arc length ``s``, clamped to the polyline."""
        i = int(np.clip(np.searchsorted(self.arc, s) - 1, 0, len(self.arc) - 2))
        t = float(np.clip((s - self.arc[i]) / (self.arc[i + 1] - self.arc[i]), 0.0, 1.0))
        chord = self.points[i + 1] - self.points[i]
        return self.points[i] + t * chord, chord / np.linalg.norm(chord)


@dataclass(frozen=True)
class Prop:
    """A static object beside the walkways: a bush or a lamp post."""

    kind: str
    position: tuple[float, float]
    size_m: float


@dataclass(frozen=True, eq=False)
class Scene:
    camera: Camera
    walkways: tuple[Walkway, ...]
    props: tuple[Prop, ...]
    texture_seed: int


def build_scene(params: SyntheticParams) -> Scene:
    """The static scene of the dataset with ``params.seed``."""
    rng = np.random.default_rng(scene_seed(params))
    camera = Camera.for_frame(params.width, params.height)
    w, h = params.width, params.height
    ends = [
        # One walkway across the image, one from the far edge to the near edge, sometimes one cutting a corner.
        ((0.0, rng.uniform(0.35, 0.85) * h), (w, rng.uniform(0.35, 0.85) * h)),
        ((rng.uniform(0.25, 0.75) * w, 0.0), (rng.uniform(0.2, 0.8) * w, h)),
    ]
    if rng.random() < 0.5:
        ends.append(((0.0, rng.uniform(0.1, 0.4) * h), (rng.uniform(0.3, 0.7) * w, 0.0)))
    walkways = []
    for start, end in ends:
        if rng.random() < 0.5:  # flow direction: which end walkers come from
            start, end = end, start
        walkways.append(_walkway(camera, np.array(start), np.array(end), rng))
    props = _props(camera, walkways, rng)
    return Scene(camera, tuple(walkways), props, int(rng.integers(2**31)))


def _walkway(camera: Camera, start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> Walkway:
    w, h = camera.width, camera.height
    chord = end - start
    normal = np.array([-chord[1], chord[0]]) / np.linalg.norm(chord)
    # A control point inside the frame keeps the whole curve inside it (convex hull of a quadratic Bezier).
    control = (start + end) / 2 + normal * rng.uniform(-0.15, 0.15) * min(w, h)
    control = np.clip(control, [0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h])
    t = np.linspace(0.0, 1.0, 400)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    reach = 2.0 * max(w, h)  # room for actors to start and finish well outside the frame
    head = start - _unit(control - start) * reach
    tail = end + _unit(end - control) * reach
    polyline = np.concatenate([[head], curve, [tail]])
    points = _resample(polyline, step=1.0)
    arc = np.arange(len(points), dtype=float)
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    rows = np.flatnonzero(inside)
    return Walkway(points, arc, rng.uniform(1.2, 1.6), float(arc[rows[0]]), float(arc[rows[-1]]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _resample(polyline: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` pixels along ``polyline``, so arc length is simply the index."""
    lengths = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    targets = np.arange(0.0, arc[-1], step)
    return np.stack([np.interp(targets, arc, polyline[:, 0]), np.interp(targets, arc, polyline[:, 1])], axis=1)


def _props(camera: Camera, walkways: list[Walkway], rng: np.random.Generator) -> tuple[Prop, ...]:
    props = []
    wanted = {"bush": int(rng.integers(3, 7)), "lamp": int(rng.integers(1, 3))}
    for kind, count in wanted.items():
        for _ in range(40 * count):
            if sum(p.kind == kind for p in props) == count:
                break
            x, y = rng.uniform(0, camera.width), rng.uniform(0.1, 1.0) * camera.height
            size = rng.uniform(0.8, 1.6) if kind == "bush" else 0.15
            if _clear_of_walkways(camera, walkways, np.array([x, y]), size):
                props.append(Prop(kind, (x, y), size))
    return tuple(props)


def _clear_of_walkways(camera: Camera, walkways: list[Walkway], point: np.ndarray, size_m: float) -> bool:
    clearance = (max(w.half_width_m for w in walkways) + size_m + 0.5) * camera.scale(point[1])
    return all(np.min(np.linalg.norm(w.points - point, axis=1)) > clearance for w in walkways)
