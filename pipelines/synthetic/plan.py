"""What happens in one synthetic video: who moves where, which anomalies occur, and the frame labels.

Normal pedestrians walk the walkways at ordinary speed in each walkway's flow direction; their number
about (on screen, or on their way in from beyond the edge) wanders between the configured minimum and
maximum, so fewer may be in view at a moment. Test and abnormal-training videos add one or
two anomaly events: running (3-4x walking speed, running gait), a car, a cyclist, walking against the flow,
or loitering (lingering and wandering around one spot). A frame is labelled abnormal while an anomalous
actor is visible in it (drawing it changes a pixel of the frame). Planning renders no video: only an
anomalous actor at the frame's edge is drawn, alone, to decide its visibility, so labels and split
files come without rendering.
"""
from __future__ import annotations

import colorsys
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from pipelines.synthetic.actors import Actor, Look, Track, actor_shape
from pipelines.synthetic.params import SyntheticParams, video_seed
from pipelines.synthetic.render import drawn_in_frame
from pipelines.synthetic.scene import Camera, Scene, Walkway
from pipelines.synthetic.skeleton import RUN, WALK

WALKING_SPEED_MPS = 1.35  # comfortable adult walking speed (Bohannon, Age and Ageing 26, 1997)
CYCLING_DEVELOPMENT_M = 5.5  # metres travelled per crank turn in a middle gear
LENGTH_JITTER = 0.2  # video lengths vary by up to this fraction around params.n_frames
MIN_FRAMES = 16  # no video shorter than one 16-frame snippet (the smallest n_frames allowed)
# Frame (as a fraction of the video length) where an event's actor first becomes visible: loiterers come
# early so that they have time to linger; the others anywhere that leaves normal frames before them.
_FIRST_VISIBLE = {"running": (0.15, 0.6), "vehicle": (0.15, 0.6), "cyclist": (0.15, 0.6),
                  "against_flow": (0.15, 0.5), "loitering": (0.05, 0.25)}
# How far beyond the frame edge (metres) an actor starts and stops, so that it is wholly off-screen.
_OFFSCREEN_M = {"pedestrian": 2.2, "runner": 2.2, "cyclist": 2.6, "vehicle": 5.0}


@dataclass(frozen=True)
class Event:
    type: str
    start: int  # first frame with the anomalous actor visible
    end: int  # one past the last frame of this run of visible frames (an actor may leave and come back)
    person_id: int | None  # the actor's id in the pose file; None for a car


@dataclass(frozen=True, eq=False)
class VideoPlan:
    split: str
    index: int
    n_frames: int
    actors: tuple[Actor, ...]
    events: tuple[Event, ...]
    labels: np.ndarray  # (n_frames,) uint8, 1 = abnormal
    noise_seed: np.random.SeedSequence  # for the per-frame sensor noise of the renderer

    def actors_at(self, frame: int) -> list[Actor]:
        return [a for a in self.actors if a.track.first_frame <= frame < a.track.end_frame]


def plan_video(params: SyntheticParams, scene: Scene, split: str, index: int) -> VideoPlan:
    """The plan of video ``index`` of ``split``: a function of (params, split, index) only."""
    plan_seed, noise_seed = video_seed(params, split, index).spawn(2)
    rng = np.random.default_rng(plan_seed)
    n_frames = max(MIN_FRAMES, int(round(params.n_frames * rng.uniform(1 - LENGTH_JITTER, 1 + LENGTH_JITTER))))
    person_ids = itertools.count(1)
    actors = _pedestrians(rng, scene, n_frames, params.walkers, params.fps, person_ids)
    labels = np.zeros(n_frames, dtype=np.uint8)
    events = []
    if split != "train":
        # Cycling through the configured types guarantees that a handful of videos covers all of them.
        types = [params.anomaly_types[index % len(params.anomaly_types)]]
        if rng.random() < 0.3:
            types.append(str(rng.choice(params.anomaly_types)))
        for kind in types:
            actor, visible = _anomaly(kind, rng, scene, n_frames, params.fps, person_ids)
            actors.append(actor)
            labels[visible] = 1
            # one event per run of visible frames: a loiterer may step out of the frame and back
            breaks = np.flatnonzero(np.diff(visible) > 1)
            for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, visible.size - 1]):
                events.append(Event(kind, int(visible[first]), int(visible[last]) + 1, actor.person_id))
    return VideoPlan(split, index, n_frames, tuple(actors), tuple(events), labels, noise_seed)


def _pedestrians(rng: np.random.Generator, scene: Scene, n_frames: int, walkers: tuple[int, int], fps: int,
                 person_ids: Iterator[int]) -> list[Actor]:
    """Normal walkers: some already on their way at frame 0, more arriving whenever too few are about."""
    low, high = walkers
    actors: list[Actor] = []
    if high == 0:
        return actors
    target = int(rng.integers(low, high + 1))
    for _ in range(target):
        way = scene.walkways[rng.integers(len(scene.walkways))]
        # Anywhere from where arrivals start to where they vanish, as in a crowd that has long been flowing:
        # starting everyone on screen would make every video's first seconds busier than the rest.
        start = rng.uniform(way.enter - _offscreen_px(scene.camera, way, way.enter, "pedestrian"),
                            way.leave + _offscreen_px(scene.camera, way, way.leave, "pedestrian"))
        actors.append(_walker(rng, scene.camera, way, start, 0, n_frames, fps, next(person_ids)))
    retarget_at = int(rng.integers(fps, 3 * fps))
    spawn_after = 0
    for frame in range(1, n_frames):
        if frame >= retarget_at:
            target = int(rng.integers(low, high + 1))
            retarget_at = frame + int(rng.integers(fps, 3 * fps))
        present = sum(a.track.end_frame > frame for a in actors)
        if present < target and frame >= spawn_after:
            way = scene.walkways[rng.integers(len(scene.walkways))]
            start = way.enter - _offscreen_px(scene.camera, way, way.enter, "pedestrian")
            actors.append(_walker(rng, scene.camera, way, start, frame, n_frames, fps, next(person_ids)))
            spawn_after = frame + int(rng.integers(fps // 2, 2 * fps))
    return actors


def _walker(rng: np.random.Generator, camera: Camera, way: Walkway, start: float, first_frame: int,
            n_frames: int, fps: int, person_id: int) -> Actor:
    look = _person_look(rng)
    trajectory = _Trajectory(camera, fps, WALK.stride * look.stature_m, rng)
    lateral = rng.uniform(-0.6, 0.6) * way.half_width_m
    speed = float(np.clip(rng.normal(WALKING_SPEED_MPS, 0.12), 1.0, 1.7))
    trajectory.follow(way, start, +1, lateral, speed, "pedestrian", max_frames=n_frames - first_frame)
    return Actor("pedestrian", look, trajectory.track(first_frame), person_id=person_id)


def _anomaly(kind: str, rng: np.random.Generator, scene: Scene, n_frames: int, fps: int,
             person_ids: Iterator[int]) -> tuple[Actor, np.ndarray]:
    """The actor of one anomaly event, timed to come into view at a random frame, and its visible frames."""
    camera = scene.camera
    way = scene.walkways[rng.integers(len(scene.walkways))]
    look = _person_look(rng)
    lateral = rng.uniform(-0.5, 0.5) * way.half_width_m
    walking = float(np.clip(rng.normal(WALKING_SPEED_MPS, 0.12), 1.0, 1.7))
    if kind == "running":
        actor_kind, stride, speed, direction = "runner", RUN.stride * look.stature_m, walking * rng.uniform(3, 4), 1
    elif kind == "cyclist":
        actor_kind, stride, speed, direction = "cyclist", CYCLING_DEVELOPMENT_M, walking * rng.uniform(3, 4.5), 1
    elif kind == "vehicle":
        # Cars keep to the middle of the walkway and may come from either end.
        actor_kind, stride, speed, direction = "vehicle", 1.0, rng.uniform(7.0, 10.0), int(rng.choice([-1, 1]))
        lateral = 0.0
    elif kind in ("against_flow", "loitering"):
        actor_kind, stride, speed = "pedestrian", WALK.stride * look.stature_m, walking
        direction = -1 if kind == "against_flow" else 1
    else:
        raise ValueError(f"unknown anomaly type {kind!r}")

    trajectory = _Trajectory(camera, fps, stride, rng)
    if direction > 0:
        start = way.enter - _offscreen_px(camera, way, way.enter, actor_kind)
    else:
        start = way.leave + _offscreen_px(camera, way, way.leave, actor_kind)
    if kind == "loitering":
        spot = way.enter + rng.uniform(0.08, 0.2) * (way.leave - way.enter)
        trajectory.follow(way, start, 1, lateral, speed, actor_kind, stop_at=spot)
        trajectory.loiter(frames=int(rng.uniform(0.5, 0.9) * n_frames), radius_m=rng.uniform(1.0, 2.5))
        # back to its own lane (not the walkway's centre line), so that walking on is no sideways jump
        trajectory.walk_to(trajectory.lane_point(way, spot, 1, lateral)[0], speed)
        trajectory.follow(way, spot, 1, lateral, speed, actor_kind)
    else:
        trajectory.follow(way, start, direction, lateral, speed, actor_kind)

    person_id = next(person_ids) if actor_kind != "vehicle" else None
    whole = Actor(actor_kind, look, trajectory.track(0), event=kind, person_id=person_id)
    seen = [t for t in range(whole.track.end_frame)
            if drawn_in_frame(actor_shape(whole, t, camera), camera.width, camera.height)]
    if not seen:
        raise RuntimeError(f"{kind} actor never enters the {camera.width}x{camera.height} frame")
    low, high = _FIRST_VISIBLE[kind]
    # Never from frame 0: every abnormal video keeps some normal frames.
    first_visible = int(rng.integers(max(1, int(low * n_frames)), int(high * n_frames) + 1))
    shift = first_visible - seen[0]
    track = replace(whole.track, first_frame=shift).window(0, n_frames)
    actor = Actor(actor_kind, look, track, event=kind, person_id=person_id)
    visible = np.array([t + shift for t in seen if t + shift < n_frames])
    return actor, visible


def _offscreen_px(camera: Camera, way: Walkway, edge: float, kind: str) -> float:
    """Distance along ``way`` beyond the frame edge at arc length ``edge`` that hides an actor of ``kind``."""
    return _OFFSCREEN_M[kind] * camera.scale(way.locate(edge)[0][1])


class _Trajectory:
    """Builds an actor's track frame by frame; the gait phase advances with the distance covered."""

    def __init__(self, camera: Camera, fps: int, stride_m: float, rng: np.random.Generator) -> None:
        self.camera, self.fps, self.stride_m, self.rng = camera, fps, stride_m, rng
        self.anchors: list[np.ndarray] = []
        self.heading_angles: list[float] = []
        self.phases: list[float] = []
        self.amounts: list[float] = []
        self.phase = rng.uniform(0, 2 * np.pi)
        self.amount = 1.0

    def _step(self, anchor: np.ndarray, heading_angle: float, metres: float, amount: float) -> None:
        self.anchors.append(anchor)
        self.heading_angles.append(heading_angle)
        self.phases.append(self.phase)
        # Easing the gait amount makes starting and stopping take a few frames, as it does for people.
        self.amount += 0.3 * (amount - self.amount)
        self.amounts.append(self.amount)
        self.phase += 2 * np.pi * metres / self.stride_m

    def follow(self, way: Walkway, s: float, direction: int, lateral_m: float, speed: float, kind: str,
               stop_at: float | None = None, max_frames: int | None = None) -> None:
        """Moves along ``way`` from arc length ``s`` until ``stop_at`` or until well past the frame edge."""
        if stop_at is None:
            edge = way.leave if direction > 0 else way.enter
            stop_at = edge + direction * _offscreen_px(self.camera, way, edge, kind)
        limit = len(self.anchors) + max_frames if max_frames is not None else None
        metres = speed / self.fps
        while (s - stop_at) * direction <= 0 and (limit is None or len(self.anchors) < limit):
            point, tangent = way.locate(s)
            anchor, heading = self._in_lane(point, tangent * direction, lateral_m)
            self._step(anchor, float(np.arctan2(heading[1], heading[0])), metres, 1.0)
            s += direction * metres * self.camera.pixels_per_metre(tangent * direction, point[1])

    def lane_point(self, way: Walkway, s: float, direction: int, lateral_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(image point, ground heading) of a walker at arc length ``s`` of ``way``, ``lateral_m`` to its left."""
        point, tangent = way.locate(s)
        return self._in_lane(point, tangent * direction, lateral_m)

    def _in_lane(self, point: np.ndarray, tangent: np.ndarray, lateral_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(image point, ground heading) ``lateral_m`` to the left of ``point`` for a walker moving along ``tangent``."""
        heading = self.camera.ground_direction(tangent)
        left = np.array([-heading[1], heading[0]])
        return point + self.camera.ground_offset(point, left, lateral_m), heading

    def walk_to(self, target: np.ndarray, speed: float) -> None:
        """Walks straight to image point ``target`` at ``speed`` metres per second."""
        position = self.anchors[-1]
        metres = speed / self.fps
        amount = min(1.0, speed / WALKING_SPEED_MPS)
        while np.linalg.norm(target - position) > 1e-6:
            heading = self.camera.ground_direction(target - position)
            step = self.camera.ground_offset(position, heading, metres)
            if np.linalg.norm(target - position) <= np.linalg.norm(step):
                return
            position = position + step
            self._step(position, float(np.arctan2(heading[1], heading[0])), metres, amount)

    def loiter(self, frames: int, radius_m: float) -> None:
        """Lingers around the current position for ``frames``: short slow walks, pauses, looking around."""
        home = self.anchors[-1]
        w, h = self.camera.width, self.camera.height
        end = len(self.anchors) + frames
        while len(self.anchors) < end:
            angle, distance = self.rng.uniform(0, 2 * np.pi), radius_m * np.sqrt(self.rng.uniform())
            direction = np.array([np.cos(angle), np.sin(angle)])
            # Spots are kept well inside the frame so that the loiterer never leaves the view.
            target = np.clip(home + self.camera.ground_offset(home, direction, distance),
                             [0.08 * w, 0.2 * h], [0.92 * w, 0.97 * h])
            self._pause(int(self.rng.integers(self.fps // 2, 3 * self.fps)), target)
            self.walk_to(target, self.rng.uniform(0.4, 0.8))

    def _pause(self, frames: int, look_towards: np.ndarray) -> None:
        """Stands still, turning a little each frame to face ``look_towards``."""
        position = self.anchors[-1]
        offset = look_towards - position
        goal = self.heading_angles[-1]
        if np.linalg.norm(offset) > 1e-6:
            heading = self.camera.ground_direction(offset)
            goal = float(np.arctan2(heading[1], heading[0]))
        angle = self.heading_angles[-1]
        for _ in range(frames):
            turn = (goal - angle + np.pi) % (2 * np.pi) - np.pi
            angle += float(np.clip(turn, -0.12, 0.12))
            self._step(position, angle, 0.0, 0.0)

    def track(self, first_frame: int) -> Track:
        angles = np.array(self.heading_angles)
        return Track(first_frame, np.array(self.anchors).reshape(-1, 2),
                     np.stack([np.cos(angles), np.sin(angles)], axis=1).reshape(-1, 2),
                     np.array(self.phases), np.array(self.amounts))


def _person_look(rng: np.random.Generator) -> Look:
    skin_tones = ((95, 130, 180), (75, 105, 150), (130, 165, 215), (55, 80, 115), (105, 145, 200))
    return Look(
        stature_m=float(np.clip(rng.normal(1.72, 0.08), 1.55, 1.92)),
        skin=skin_tones[rng.integers(len(skin_tones))],
        top=_bgr(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95)),
        bottom=_bgr(rng.choice([0.6, 0.08, 0.0]), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.5)),
        paint=_bgr(rng.uniform(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 0.95)),
    )


def _bgr(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(round(255 * b)), int(round(255 * g)), int(round(255 * r))
