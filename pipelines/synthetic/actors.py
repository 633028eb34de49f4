"""Moving actors of the synthetic scene and their 2-D geometry at a given frame.

An actor is a trajectory (ground point, heading, gait phase and gait amount per frame) plus a look. Its shape
at a frame is its 3-D model (skeleton, bicycle, car) projected by the scene camera; the same shape is drawn,
written out as a ground-truth pose, and (drawn) decides whether the actor counts as visible for the frame labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.scene import Camera
from pipelines.synthetic.skeleton import RUN, WALK, cycling_pose, gait_pose
from pipelines.synthetic.vehicles import BOX_FACES, CAR, Solid, bicycle

Colour = tuple[int, int, int]  # BGR, as OpenCV draws

# Widths and radii of what the renderer draws around the projected points, in metres at the actor
# (times the shape's pixels per metre); the visibility test (render.drawn_in_frame) pads the points'
# bounds by them.
LIMB_WIDTH_M = 0.12  # arms; legs are a pixel wider
SHOE_RADIUS = 0.6  # of the limb width, around each ankle
TORSO_STROKE_M = 0.3  # neck to pelvis, at least 2 px
HEAD_RADIUS_M = 0.11  # around the mean of ears and eyes, at least 1.2 px
TUBE_WIDTH_M = 0.04  # bicycle rims and tubes
ANTIALIAS_PX = 1.0  # OpenCV's antialiased edges reach a pixel further


def limb_width(scale: float) -> int:
    return max(1, int(round(LIMB_WIDTH_M * scale)))


def torso_stroke(scale: float) -> int:
    return max(2, int(round(TORSO_STROKE_M * scale)))


def head_radius(scale: float) -> float:
    return max(1.2, HEAD_RADIUS_M * scale)


def tube_width(scale: float) -> int:
    return max(1, int(round(TUBE_WIDTH_M * scale)))


@dataclass(frozen=True)
class Look:
    stature_m: float
    skin: Colour
    top: Colour
    bottom: Colour
    paint: Colour  # bicycle frame or car body


@dataclass(frozen=True, eq=False)
class Track:
    """Per-frame state of an actor from ``first_frame`` on, one row per frame."""

    first_frame: int
    anchors: np.ndarray  # (T, 2) image position of the ground point under the actor
    headings: np.ndarray  # (T, 2) unit ground direction faced
    phases: np.ndarray  # (T,) gait or crank phase, radians
    amounts: np.ndarray  # (T,) gait amount: 0 standing still, 1 full stride

    @property
    def end_frame(self) -> int:
        return self.first_frame + len(self.anchors)

    def window(self, start: int, stop: int) -> Track:
        """The part of the track in frames [start, stop)."""
        lo, hi = max(start, self.first_frame), min(stop, self.end_frame)
        rows = slice(lo - self.first_frame, max(hi, lo) - self.first_frame)
        return Track(lo, self.anchors[rows], self.headings[rows], self.phases[rows], self.amounts[rows])


@dataclass(frozen=True, eq=False)
class Actor:
    kind: str  # "pedestrian", "runner", "cyclist" or "vehicle"
    look: Look
    track: Track
    event: str | None = None  # the anomaly type this actor enacts; None for normal walkers
    person_id: int | None = None  # stable id in the pose files; None for vehicles


@dataclass(frozen=True, eq=False)
class Shape:
    """An actor as seen in one frame."""

    actor: Actor
    anchor: np.ndarray  # image position of the ground point; lower in the image means nearer
    scale: float  # pixels per metre at the ground point
    keypoints: np.ndarray | None = None  # (17, 2) image coordinates, COCO order, people only
    depths: np.ndarray | None = None  # (17,) metres away from the camera, to draw far limbs first
    wheels: np.ndarray | None = None  # (2, K, 2) bicycle rims
    tubes: np.ndarray | None = None  # (S, 2, 2) bicycle frame segments
    faces: tuple[tuple[np.ndarray, float, bool], ...] = ()  # car: (polygon, shade, is glass), body before cabin
    wheel_centres: np.ndarray | None = None  # (4, 2) car wheels

    def bounds(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of everything drawn."""
        parts = [p.reshape(-1, 2) for p in (self.keypoints, self.wheels, self.tubes, self.wheel_centres)
                 if p is not None]
        parts += [polygon for polygon, _, _ in self.faces]
        points = np.concatenate(parts)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    def reach(self) -> float:
        """How far, in pixels, the drawing may extend beyond the points of ``bounds``: stroke half-widths,
        the shoes', head's and wheels' radii, and antialiasing (``render.drawn_in_frame`` draws the
        frames where this margin, and not the points, reaches into the picture)."""
        s, reach = self.scale, 0.0
        if self.keypoints is not None:
            limb = limb_width(s)
            reach = max((limb + 1) / 2, SHOE_RADIUS * limb, torso_stroke(s) / 2, head_radius(s))
        if self.wheels is not None:
            reach = max(reach, tube_width(s) / 2)
        if self.wheel_centres is not None:
            reach = max(reach, CAR.wheel_radius * s)
        return reach + ANTIALIAS_PX


def actor_shape(actor: Actor, frame: int, camera: Camera) -> Shape:
    """Shape of ``actor`` at ``frame`` (which must lie within its track)."""
    track = actor.track
    row = frame - track.first_frame
    anchor, heading = track.anchors[row], track.headings[row]
    phase, amount = float(track.phases[row]), float(track.amounts[row])
    scale = camera.scale(anchor[1])
    stature = actor.look.stature_m
    if actor.kind in ("pedestrian", "runner"):
        gait = RUN if actor.kind == "runner" else WALK
        keypoints, depths = camera.project(anchor, heading, gait_pose(gait, phase, amount, stature))
        return Shape(actor, anchor, scale, keypoints, depths)
    if actor.kind == "cyclist":
        bike = bicycle(stature)
        keypoints, depths = camera.project(anchor, heading, cycling_pose(bike.fit, phase, stature))
        wheels = camera.project(anchor, heading, bike.wheels.reshape(-1, 3))[0].reshape(2, -1, 2)
        tubes = camera.project(anchor, heading, bike.tubes.reshape(-1, 3))[0].reshape(-1, 2, 2)
        return Shape(actor, anchor, scale, keypoints, depths, wheels=wheels, tubes=tubes)
    if actor.kind == "vehicle":
        faces = _visible_faces(camera, anchor, heading, CAR.body, glass=False)
        faces += _visible_faces(camera, anchor, heading, CAR.cabin, glass=True)
        wheel_centres = camera.project(anchor, heading, CAR.wheel_centres)[0]
        return Shape(actor, anchor, scale, faces=faces, wheel_centres=wheel_centres)
    raise ValueError(f"unknown actor kind {actor.kind!r}")


def _visible_faces(camera: Camera, anchor: np.ndarray, heading: np.ndarray, solid: Solid,
                   glass: bool) -> tuple[tuple[np.ndarray, float, bool], ...]:
    """Faces of a convex solid that face the camera; these never overlap, so their order is free."""
    corners = camera.project(anchor, heading, solid.corners)[0]
    facing = camera.facing_camera(heading, solid.normals)
    faces = []
    for face, normal, shown in zip(BOX_FACES, solid.normals, facing):
        if shown:
            # Light from above: roofs brightest, flanks darker the more they turn away from the sky.
            shade = 0.65 + 0.35 * max(float(normal[2]), 0.0)
            # A car's cabin has glass on its sides; its roof is painted.
            faces.append((corners[face], shade, glass and normal[2] < 0.9))
    return tuple(faces)
