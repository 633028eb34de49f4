"""Offline CPU skeletons: MediaPipe BlazePose on tiles of each frame, mapped to COCO-17 and tracked.

BlazePose (Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", CVPR Workshops 2020)
is a two-stage model: an SSD-style detector finds a person and two alignment points (hip centre and a
point giving body size and rotation); a landmark network then reads a 256x256 crop of that rotated
region and returns 33 landmarks with visibility. Both TFLite models run in the LiteRT interpreter.

The detector was trained on people who fill much of the picture: small, distant people (surveillance
views) are only found on zoomed-in tiles. Each frame is therefore cut into overlapping square tiles
(plus, optionally, the whole letterboxed frame); detections from all of them are merged by MediaPipe's
weighted non-maximum suppression, each person gets its landmarks, duplicates are suppressed, the 33
landmarks are reduced to the 17 COCO joints AlphaPose gives, and ``pipelines.poses.tracker`` links
people across frames. Decoding follows MediaPipe's published graph settings (SSD anchors, 224x224
detector input in [-1, 1], ROI scale 1.25, landmark input in [0, 1], pose-presence threshold 0.5);
the heatmap refinement of the landmark coordinates is not done here.

Run by hand: ``python -m pipelines.poses.blazepose FRAMES.h5 OUT.h5 [--settings-json J]
[--detector-weights P] [--landmark-weights P] [--cache-dir D] [--dataset NAME]``.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from pipelines.atomic import atomic_path
from pipelines.frame_store import FrameReader
from pipelines.poses.store import PoseTracks, write_poses
from pipelines.poses.tracker import HungarianTracker, TrackerSettings, box_iou
from pipelines.provenance import sha256_file

_MEDIAPIPE = "https://github.com/google-ai-edge/mediapipe/raw"


@dataclass(frozen=True)
class ModelFile:
    """A released TFLite model: where it is published and the sha256 it must have."""

    name: str
    url: str
    sha256: str
    config_key: str  # the poses.blazepose key that gives its path instead of a download


DETECTOR = ModelFile(
    "pose_detection.tflite",
    f"{_MEDIAPIPE}/c5ad36fdfae1fbdc2313ffb70c63a19f3a0b09a3/mediapipe/modules/pose_detection/pose_detection.tflite",
    "7df1fe71ea9e577631b2bd76cf9dda16b303c9425c67b4e846f0b2103008a9ca",
    "detector_weights",
)
LANDMARK_LITE = ModelFile(
    "pose_landmark_lite.tflite",
    f"{_MEDIAPIPE}/a715f1ec4d3360f6256bc5ec84c45a93265dc3b7/mediapipe/modules/pose_landmark/pose_landmark_lite.tflite",
    "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
    "landmark_weights",
)

# BlazePose landmark index of each COCO-17 joint (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

_DETECTOR_SIZE = 224
_LANDMARK_SIZE = 256
_NUM_LANDMARKS = 39  # 33 body landmarks and 6 auxiliary points


class ChecksumError(ValueError):
    """A model file whose content is not the pinned release."""


def fetch_model(model: ModelFile, path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """A verified model file: ``path`` if given, else ``cache_dir/<name>`` (downloaded once if missing)."""
    if path is None:
        if cache_dir is None:
            raise FileNotFoundError(f"{model.name}: give its path or a cache folder to download it into")
        path = Path(cache_dir) / model.name
        if not path.is_file():
            with atomic_path(path) as partial:
                try:
                    with urllib.request.urlopen(model.url, timeout=60) as response, partial.open("wb") as out:
                        shutil.copyfileobj(response, out)
                except OSError as err:  # URLError, timeouts, a connection cut half-way
                    raise FileNotFoundError(
                        f"{model.name}: not in {cache_dir} and its download from {model.url} failed ({err}). "
                        f"On a machine without network access, copy the file there or set "
                        f"poses.blazepose.{model.config_key} to its path (its sha256 must be {model.sha256})"
                    ) from None
                _verify(model, partial, f"{model.url} (download discarded)")
            return path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{model.name}: {path} does not exist (published at {model.url})")
    _verify(model, path, str(path))
    return path


def _verify(model: ModelFile, path: Path, where: str) -> None:
    found = sha256_file(path)
    if found != model.sha256:
        raise ChecksumError(f"{where}: sha256 {found}, but the pinned {model.name} has {model.sha256}")


def ssd_anchors() -> np.ndarray:
    """(2254, 2) anchor centres (x, y) in [0, 1] of the pose detector.

    MediaPipe's SsdAnchorsCalculator with 5 layers, strides 8, 16, 32, 32, 32, aspect ratio 1 and fixed
    anchor size: consecutive layers of equal stride share one grid, and each layer puts two anchors in a
    cell (its own and the interpolated scale), so the grids are 28x28x2, 14x14x2 and 7x7x6.
    """
    strides = (8, 16, 32, 32, 32)
    centres, layer = [], 0
    while layer < len(strides):
        same = 1
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        cells = math.ceil(_DETECTOR_SIZE / strides[layer])
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([x.ravel(), y.ravel()], axis=1)
        centres.append(np.repeat(grid, 2 * same, axis=0))
        layer += same
    return np.concatenate(centres)


@dataclass(frozen=True)
class BlazePoseSettings:
    """Tiling, thresholds and tracking of the offline backend."""

    tile_size: int = 224  # side of the square frame tiles, in frame pixels
    tile_overlap: float = 0.5  # fraction of a tile shared with its neighbour
    whole_frame: bool = True  # also run the detector on the whole letterboxed frame (large people)
    detection_threshold: float = 0.5  # detector score (after the sigmoid)
    nms_iou: float = 0.3  # weighted NMS overlap of the detector boxes
    presence_threshold: float = 0.5  # landmark model's pose-presence flag
    duplicate_overlap: float = 0.5  # two skeletons sharing more of the smaller one's box are one person
    min_box_height: float = 16.0  # skeletons shorter than this (pixels) are dropped: too small to be read
    roi_scale: float = 1.25  # MediaPipe's margin around the detector's body region
    tracker: TrackerSettings = TrackerSettings()

    @classmethod
    def from_dict(cls, values: dict) -> "BlazePoseSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown BlazePose settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("tracker"), dict):
            values["tracker"] = TrackerSettings(**values["tracker"])
        return cls(**values)


@dataclass(frozen=True)
class PersonPose:
    keypoints: np.ndarray  # (17, 3) COCO x, y (pixels), visibility
    box: np.ndarray  # (4,) x1, y1, x2, y2 around the keypoints
    score: float  # pose-presence flag of the landmark model


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels, evenly spread from 0 to ``length - tile``, as few
    as keep neighbours sharing at least ``overlap`` of a tile."""
    if length <= tile:
        return [0]
    step = max(tile * (1 - overlap), 1.0)
    count = math.ceil((length - tile) / step) + 1
    return [int(round(x)) for x in np.linspace(0, length - tile, count)]


def _square_region(image: np.ndarray, x0: float, y0: float, side: float, size: int, fill: float) -> np.ndarray:
    """The axis-aligned square (x0, y0, side) of ``image`` resized to size x size, zero-padded outside."""
    scale = size / side
    matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(fill, fill, fill))


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression: each kept detection is the score-weighted mean of
    the detections overlapping the best remaining one by more than ``iou``."""
    order = np.argsort(-scores, kind="stable")
    kept_boxes, kept_keypoints, kept_scores = [], [], []
    while order.size:
        overlap = box_iou(boxes[order[:1]], boxes[order])[0]
        overlap[0] = 1.0  # a degenerate box has no area, but it belongs to its own group
        group = order[overlap > iou]
        weights = scores[group][:, None]
        kept_boxes.append((boxes[group] * weights).sum(0) / weights.sum())
        kept_keypoints.append((keypoints[group] * weights[:, :, None]).sum(0) / weights.sum())
        kept_scores.append(scores[order[0]])
        order = order[overlap <= iou]
    return (np.asarray(kept_boxes).reshape(-1, 4), np.asarray(kept_keypoints).reshape(-1, 4, 2),
            np.asarray(kept_scores))


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 1e-6, None) * np.clip(boxes[..., 3] - boxes[..., 1], 1e-6, None)


def overlap_of_smaller(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` with each of ``others`` over the smaller of the two areas: a skeleton found
    twice, once whole and once as a part, overlaps by about 1 although its IoU is small."""
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    return width * height / np.minimum(_box_area(box), _box_area(others))


class BlazePose:
    """Multi-person BlazePose on one RGB frame at a time."""

    def __init__(self, detector_path: str | Path, landmark_path: str | Path,
                 settings: BlazePoseSettings = BlazePoseSettings(), num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.settings = settings
        self._detector = Interpreter(model_path=str(detector_path), num_threads=num_threads)
        self._landmark = Interpreter(model_path=str(landmark_path), num_threads=num_threads)
        for interpreter in (self._detector, self._landmark):
            interpreter.allocate_tensors()
        self._anchors = ssd_anchors()
        self._detector_out = {d["shape"][-1]: d["index"] for d in self._detector.get_output_details()}
        self._landmark_out = {tuple(d["shape"]): d["index"] for d in self._landmark.get_output_details()}

    def _run_detector(self, square: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """224x224 float [-1, 1] image -> face boxes (x1, y1, x2, y2), 4 alignment points, scores; in [0, 1]."""
        self._detector.set_tensor(self._detector.get_input_details()[0]["index"], square[None])
        self._detector.invoke()
        raw = self._detector.get_tensor(self._detector_out[12])[0]
        logits = self._detector.get_tensor(self._detector_out[1])[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
        keep = scores >= self.settings.detection_threshold
        raw, anchors, scores = raw[keep] / _DETECTOR_SIZE, self._anchors[keep], scores[keep]
        valid = (raw[:, 2] > 0) & (raw[:, 3] > 0)  # a box of no size is not a detection
        raw, anchors, scores = raw[valid], anchors[valid], scores[valid]
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :]
        return boxes, points, scores

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections over all tiles of an RGB frame, merged: boxes (N, 4), points (N, 4, 2) in pixels, scores."""
        height, width = frame.shape[:2]
        s = self.settings
        image = frame.astype(np.float32) / 127.5 - 1.0
        regions = [(x0, y0, s.tile_size) for y0 in tile_origins(height, s.tile_size, s.tile_overlap)
                   for x0 in tile_origins(width, s.tile_size, s.tile_overlap)]
        if s.whole_frame:
            side = max(height, width)
            regions.append(((width - side) / 2, (height - side) / 2, side))
        boxes, points, scores = [], [], []
        for x0, y0, side in regions:
            found_boxes, found_points, found_scores = self._run_detector(
                _square_region(image, x0, y0, side, _DETECTOR_SIZE, 0.0))
            boxes.append(found_boxes * side + np.array([x0, y0, x0, y0]))
            points.append(found_points * side + np.array([x0, y0]))
            scores.append(found_scores)
        return weighted_nms(np.concatenate(boxes), np.concatenate(points), np.concatenate(scores), s.nms_iou)

    def _roi(self, points: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Rotated square region (centre, side, rotation) from the hip centre and the full-body size point."""
        centre, scale_point = points[0], points[1]
        side = 2.0 * float(np.hypot(*(scale_point - centre))) * self.settings.roi_scale
        rotation = math.pi / 2 - math.atan2(-(scale_point[1] - centre[1]), scale_point[0] - centre[0])
        rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
        return centre, side, rotation

    def landmarks(self, frame: np.ndarray, points: np.ndarray) -> PersonPose | None:
        """The person whose detector alignment points are ``points``; None if the landmark model sees nobody."""
        centre, side, rotation = self._roi(points)
        if side < 2:
            return None
        cos, sin = math.cos(rotation), math.sin(rotation)
        # Unit-square crop coordinates (u, v) -> image: MediaPipe's rotated sub-rectangle transform.
        to_image = np.array([[side * cos, -side * sin, centre[0] - 0.5 * side * (cos - sin)],
                             [side * sin, side * cos, centre[1] - 0.5 * side * (sin + cos)]])
        pixels_to_unit = np.diag([1 / _LANDMARK_SIZE, 1 / _LANDMARK_SIZE, 1.0])
        crop_to_image = to_image @ pixels_to_unit
        crop = cv2.warpAffine(frame, crop_to_image.astype(np.float32), (_LANDMARK_SIZE, _LANDMARK_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        self._landmark.set_tensor(self._landmark.get_input_details()[0]["index"],
                                  (crop.astype(np.float32) / 255.0)[None])
        self._landmark.invoke()
        presence = float(self._landmark.get_tensor(self._landmark_out[(1, 1)])[0, 0])
        if presence < self.settings.presence_threshold:
            return None
        raw = self._landmark.get_tensor(self._landmark_out[(1, _NUM_LANDMARKS * 5)])[0].reshape(_NUM_LANDMARKS, 5)
        coco = raw[list(BLAZEPOSE_TO_COCO17)]
        xy = (crop_to_image @ np.concatenate([coco[:, :2], np.ones((17, 1))], axis=1).T).T
        visibility = 1.0 / (1.0 + np.exp(-coco[:, 3].astype(np.float64)))
        keypoints = np.concatenate([xy, visibility[:, None]], axis=1)
        box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
        if box[3] - box[1] < self.settings.min_box_height:
            return None
        return PersonPose(keypoints, box, presence)

    def __call__(self, frame: np.ndarray) -> list[PersonPose]:
        """All people of one RGB uint8 frame, duplicates removed (the higher presence score wins)."""
        _, points, _ = self.detect(frame)
        people = [p for p in (self.landmarks(frame, each) for each in points) if p is not None]
        people.sort(key=lambda p: -p.score)
        kept: list[PersonPose] = []
        for person in people:
            if not kept or overlap_of_smaller(person.box, np.stack([k.box for k in kept])).max() <= \
                    self.settings.duplicate_overlap:
                kept.append(person)
        return kept


def track_video(frames: Iterable[np.ndarray], model: BlazePose, n_frames: int, frame_size: tuple[int, int]
                ) -> PoseTracks:
    """Estimate and track the people of every frame (RGB uint8, in order)."""
    tracker = HungarianTracker(model.settings.tracker)
    rows: dict[str, list] = {"track_ids": [], "frames": [], "keypoints": [], "boxes": [], "scores": []}
    for index, frame in enumerate(frames):
        people = model(frame)
        if not people:
            continue
        boxes = np.stack([p.box for p in people])
        keypoints = np.stack([p.keypoints for p in people])
        rows["track_ids"].extend(tracker.update(index, boxes, keypoints))
        rows["frames"].extend([index] * len(people))
        rows["keypoints"].extend(keypoints)
        rows["boxes"].extend(boxes)
        rows["scores"].extend(p.score for p in people)
    return PoseTracks(
        track_ids=np.asarray(rows["track_ids"], np.int64),
        frames=np.asarray(rows["frames"], np.int64),
        keypoints=np.asarray(rows["keypoints"], np.float32).reshape(-1, 17, 3),
        boxes=np.asarray(rows["boxes"], np.float32).reshape(-1, 4),
        scores=np.asarray(rows["scores"], np.float32),
        n_frames=n_frames,
        frame_size=frame_size,
    )


def rgb_frames(reader: FrameReader) -> Iterator[np.ndarray]:
    """The frames of a frames file as RGB, block by block (grey frames are expanded to three channels)."""
    for _, block in reader.blocks():
        for frame in block:
            yield np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame


def estimate(frames_file: Path, out: Path, settings: BlazePoseSettings, detector: Path, landmark: Path,
             dataset: str = "") -> PoseTracks:
    """Skeletons of one video's frames file, tracked, written to ``out`` with their provenance."""
    model = BlazePose(detector, landmark, settings)
    started = time.perf_counter()
    with FrameReader(frames_file) as reader:
        n_frames, height, width = len(reader), reader.shape[1], reader.shape[2]
        video = reader.attrs
        tracks = track_video(rgb_frames(reader), model, n_frames, (width, height))
    elapsed = time.perf_counter() - started
    write_poses(out, tracks, {
        "backend": "blazepose",
        "dataset": dataset,
        "source": str(video.get("source", frames_file)),  # the video the frames were decoded from
        "source_format": "frames",
        "source_sha256": video.get("source_sha256", ""),
        "frames_file": str(frames_file),
        "box_source": "keypoints",
        "settings": asdict(settings),
        "weights_sha256": {DETECTOR.name: sha256_file(detector), LANDMARK_LITE.name: sha256_file(landmark)},
    })
    # The speed goes to the job's log, not the file: a file's bytes depend only on what it was made from.
    print(f"{out}: {n_frames} frames in {elapsed:.1f} s ({n_frames / max(elapsed, 1e-9):.2f} frames/s)")
    return tracks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", type=Path, help="the video's frames file")
    parser.add_argument("out", type=Path, help="poses file to write (.h5)")
    parser.add_argument("--settings-json", default="{}", help="BlazePoseSettings fields as JSON")
    parser.add_argument("--detector-weights", type=Path, help=f"{DETECTOR.name}; default: cache folder")
    parser.add_argument("--landmark-weights", type=Path, help=f"{LANDMARK_LITE.name}; default: cache folder")
    parser.add_argument("--cache-dir", type=Path, default=Path("results/weights/blazepose"))
    parser.add_argument("--dataset", default="", help="dataset name, recorded")
    args = parser.parse_args(argv)
    settings = BlazePoseSettings.from_dict(json.loads(args.settings_json))
    try:
        detector = fetch_model(DETECTOR, args.detector_weights, args.cache_dir)
        landmark = fetch_model(LANDMARK_LITE, args.landmark_weights, args.cache_dir)
    except (FileNotFoundError, ChecksumError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tracks = estimate(args.frames, args.out, settings, detector, landmark, args.dataset)
    print(f"{args.out}: {len(tracks)} skeletons in {len(np.unique(tracks.track_ids))} tracks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
