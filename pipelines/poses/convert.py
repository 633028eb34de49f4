"""Convert AlphaPose's JSON skeletons into the pipeline's per-video poses file.

Two JSON layouts come out of AlphaPose (Fang et al., TPAMI 2022) as STG-NF (Hirschorn & Avidan,
ICCV 2023) and GENet (Yang et al., ACM MM 2024) use it:

* ``alphapose-results.json``, what ``scripts/demo_inference.py`` writes: a list of detections
  ``{"image_id": "12.jpg", "keypoints": [x, y, c] * 17, "score": s, "box": [x, y, w, h], "idx": id}``,
  where ``idx`` is the track id when tracking (``--pose_flow`` or ``--pose_track``) was on;
* ``<video>_alphapose_tracked_person.json``, the per-person layout of the released STG-NF pose
  packages: ``{person_id: {frame: {"keypoints": [x, y, c] * 17, "scores": s}}}``.

Damaged input is an error naming the file and the place, never skipped: truncated or corrupt JSON,
a keypoint list that is not 17 x 3 values, a detection without a track id, two detections of one
track in one frame, a frame outside the video. A track that skips frames is kept whole; its gaps are
counted in the output's attributes. The segmenter's default rule keeps windows from bridging long
gaps (at most two missing frames inside a window); STG-NF's released rule, which the paper overlays
choose, can bridge one (see pipelines.poses.segments).

AlphaPose and the released packages give pixels of the source video; when the frames file was
resized (``frames.size``), the keypoints and boxes are scaled by the same factors, so every backend's
skeletons lie on the stored frames that GENet's tubes crop (BlazePose reads those frames directly).
Keypoints far outside the frame after that (more than half a side beyond an edge) mean skeletons of
another video or another size: an error naming the file.

Run by hand: ``python -m pipelines.poses.convert INPUT.json OUT.h5 --frames FRAMES.h5
[--format auto|alphapose_results|tracked_person] [--image-dir DIR] [--backend B] [--settings-json J]
[--weights-json WEIGHTS.json] [--dataset NAME]``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipelines.frame_store import FrameReader
from pipelines.frames import list_images
from pipelines.poses.alphapose_weights import checkout_revision
from pipelines.poses.store import NUM_KEYPOINTS, PoseDataError, PoseTracks, keypoint_boxes, write_poses
from pipelines.provenance import sha256_file

FORMATS = ("alphapose_results", "tracked_person")
_VALUES = NUM_KEYPOINTS * 3


class PoseFormatError(ValueError):
    """A pose JSON file that cannot be read as either AlphaPose layout."""


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a missing, empty, truncated or corrupt file is a PoseFormatError."""
    path = Path(path)
    if not path.is_file():
        raise PoseFormatError(f"{path}: pose file not found")
    text = path.read_text()
    if not text.strip():
        raise PoseFormatError(f"{path}: empty file (did the pose estimator finish?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        ending = "truncated" if err.pos >= len(text.rstrip()) - 1 else "corrupt"
        raise PoseFormatError(
            f"{path}: {ending} JSON ({err.msg} at line {err.lineno}, column {err.colno}; "
            f"{len(text)} characters in the file)"
        ) from None


def detect_format(data: Any, source: Path) -> str:
    if isinstance(data, list):
        return "alphapose_results"
    if isinstance(data, dict):
        return "tracked_person"
    raise PoseFormatError(f"{source}: expected a JSON list (alphapose-results) or object (tracked persons)")


def _keypoints(values: Any, where: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != _VALUES:
        found = len(values) if isinstance(values, list) else type(values).__name__
        raise PoseFormatError(f"{where}: expected 17 COCO keypoints as {_VALUES} values (x, y, c), found {found}")
    try:
        keypoints = np.asarray(values, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
    except (TypeError, ValueError) as err:
        raise PoseFormatError(f"{where}: keypoints are not numbers ({err})") from None
    if not np.isfinite(keypoints).all():
        raise PoseFormatError(f"{where}: keypoints hold NaN or infinite values")
    return keypoints


def _integer(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool):
        raise PoseFormatError(f"{where}: {what} {value!r} is not an integer")
    if isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise PoseFormatError(f"{where}: {what} {value!r} is not an integer")


def _number(value: Any, what: str, where: str) -> float:
    """A finite JSON number (null, text, NaN are format errors, not crashes inside float())."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    raise PoseFormatError(f"{where}: {what} {value!r} is not a finite number")


def _track_id(value: Any, where: str) -> int:
    """AlphaPose's ``idx``: an integer when tracked; a list of merged ids must agree on one."""
    if value is None:
        raise PoseFormatError(
            f"{where}: no track id ('idx'); run AlphaPose with tracking (--pose_flow or --pose_track)"
        )
    if isinstance(value, list):
        flat = np.asarray(value, dtype=object).reshape(-1).tolist()
        ids = {_integer(v, "track id", where) for v in flat}
        if len(ids) != 1:
            raise PoseFormatError(
                f"{where}: 'idx' {value!r} holds several ids, i.e. untracked box indices; "
                "run AlphaPose with tracking (--pose_flow or --pose_track)"
            )
        return ids.pop()
    return _integer(value, "track id", where)


def frame_indexer(image_dir: Path | None) -> Callable[[Any, str], int]:
    """Map AlphaPose's ``image_id`` to a frame index.

    Video input names frame k ``"k.jpg"`` (and ``--eval`` writes the integer k); frames read from a
    folder are named as their files, whose position in the folder's natural order (the order the frames
    store uses) is the frame index.
    """
    positions = {p.name: i for i, p in enumerate(list_images(image_dir))} if image_dir else None

    def index(image_id: Any, where: str) -> int:
        if positions is not None:
            if image_id not in positions:
                raise PoseFormatError(f"{where}: image {image_id!r} is not a frame of {image_dir}")
            return positions[image_id]
        if isinstance(image_id, str):
            return _integer(Path(image_id).stem, "frame number of image_id", where)
        return _integer(image_id, "image_id", where)

    return index


def parse_alphapose_results(data: list, source: Path, frame_index: Callable[[Any, str], int]) -> dict[str, np.ndarray]:
    """Detections of an ``alphapose-results.json`` list, as parallel arrays."""
    rows = {"track_ids": [], "frames": [], "keypoints": [], "boxes": [], "scores": []}
    for number, item in enumerate(data):
        where = f"{source}: detection {number}"
        if not isinstance(item, dict) or "image_id" not in item or "keypoints" not in item:
            raise PoseFormatError(f"{where}: expected an object with image_id and keypoints, found {str(item)[:80]}")
        where = f"{where} (image {item['image_id']!r})"
        keypoints = _keypoints(item["keypoints"], where)
        rows["track_ids"].append(_track_id(item.get("idx"), where))
        rows["frames"].append(frame_index(item["image_id"], where))
        rows["keypoints"].append(keypoints)
        rows["scores"].append(_number(item.get("score", 0.0), "score", where))
        box = item.get("box")
        if box is None:
            rows["boxes"].append(keypoint_boxes(keypoints[None])[0])
        elif isinstance(box, list) and len(box) == 4:
            x, y, w, h = (_number(v, "box value", where) for v in box)
            rows["boxes"].append([x, y, x + w, y + h])
        else:
            raise PoseFormatError(f"{where}: box must be [x, y, width, height], found {box!r}")
    return {k: np.asarray(v, dtype=np.float64).reshape(len(data), *shape)
            for (k, v), shape in zip(rows.items(), ((), (), (NUM_KEYPOINTS, 3), (4,), ()))}


def parse_tracked_person(data: dict, source: Path) -> dict[str, np.ndarray]:
    """Detections of a ``{person: {frame: {keypoints, scores}}}`` file, as parallel arrays."""
    track_ids, frames, keypoints, scores = [], [], [], []
    for person, detections in data.items():
        where = f"{source}: person {person!r}"
        person_id = _integer(person, "person id", where)
        if not isinstance(detections, dict):
            raise PoseFormatError(f"{where}: expected an object of frames, found {type(detections).__name__}")
        for frame, entry in detections.items():
            here = f"{where}, frame {frame!r}"
            if not isinstance(entry, dict) or "keypoints" not in entry:
                raise PoseFormatError(f"{here}: expected an object with keypoints and scores")
            track_ids.append(person_id)
            frames.append(_integer(frame, "frame", here))
            keypoints.append(_keypoints(entry["keypoints"], here))
            score = entry.get("scores", 0.0)
            values = [_number(v, "score", here) for v in (score if isinstance(score, list) else [score])]
            if not values:
                raise PoseFormatError(f"{here}: an empty list of scores")
            scores.append(float(np.mean(values)))
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    return {
        "track_ids": np.asarray(track_ids, dtype=np.int64),
        "frames": np.asarray(frames, dtype=np.int64),
        "keypoints": keypoints,
        "boxes": keypoint_boxes(keypoints) if len(keypoints) else np.zeros((0, 4)),
        "scores": np.asarray(scores, dtype=np.float64),
    }


def load_pose_json(path: str | Path, n_frames: int, frame_size: tuple[int, int], fmt: str = "auto",
                   image_dir: Path | None = None) -> tuple[PoseTracks, str]:
    """Parse either AlphaPose layout into PoseTracks; returns the tracks and the layout found."""
    path = Path(path)
    data = read_json(path)
    found = detect_format(data, path)
    if fmt != "auto" and fmt != found:
        raise PoseFormatError(f"{path}: expected the {fmt} layout, found {found}")
    arrays = (parse_alphapose_results(data, path, frame_indexer(image_dir)) if found == "alphapose_results"
              else parse_tracked_person(data, path))
    try:
        return PoseTracks(**arrays, n_frames=n_frames, frame_size=frame_size), found
    except PoseDataError as err:
        raise PoseDataError(f"{path}: {err}") from None


# File names a video's skeletons may have in a folder of released JSON files.
_JSON_NAMES = ("{video}_alphapose_tracked_person.json", "{video}_alphapose-results.json", "{video}.json",
               "{video}/alphapose-results.json")
# Folder names the released packages use for each split (STG-NF: pose/train, pose/test).
_SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "testing")}


@functools.cache
def _json_index(folder: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.json")):
        index.setdefault(path.name, []).append(path)
        index.setdefault(f"{path.parent.name}/{path.name}", []).append(path)
    return index


def find_pose_json(folder: str | Path, video: str, split: str) -> Path:
    """The JSON file holding ``video``'s skeletons in a folder of released pose files (any depth).

    Several candidates (a train and a test file of the same name) are told apart by a parent folder
    named after the split; a missing or ambiguous video is a PoseFormatError naming what was tried.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PoseFormatError(f"pose JSON folder {folder} does not exist")
    index = _json_index(folder)
    names = [pattern.format(video=video) for pattern in _JSON_NAMES]
    found = [path for name in names for path in index.get(name, [])]
    if len(found) > 1:
        in_split = [p for p in found if set(_SPLIT_FOLDERS.get(split, (split,))) & set(p.relative_to(folder).parts)]
        found = in_split if len(in_split) == 1 else found
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(map(str, found[:4]))})"
        raise PoseFormatError(f"{folder}: {what} for video {video!r} of split {split!r}; looked for {', '.join(names)}")
    return found[0]


def alphapose_provenance(settings: dict) -> dict[str, str]:
    """The AlphaPose checkout's commit and the sha256 of the pose config it ran with."""
    checkout = Path(settings["checkout"])
    cfg = checkout / settings["cfg"]
    return {"alphapose_revision": checkout_revision(checkout),
            "alphapose_cfg_sha256": sha256_file(cfg) if cfg.is_file() else "missing"}


def check_inside_frame(tracks: PoseTracks, source: Path, source_size: tuple[int, int]) -> None:
    """Refuse keypoints more than half a frame side beyond an edge: AlphaPose places an occluded
    joint a little outside the frame, never that far, so they belong to another video or size."""
    if not len(tracks):
        return
    width, height = tracks.frame_size
    xy = tracks.keypoints[..., :2]
    low, high = xy.min(axis=(0, 1)), xy.max(axis=(0, 1))
    if (low < -0.5 * np.array([width, height])).any() or (high > 1.5 * np.array([width, height])).any():
        raise PoseDataError(
            f"{source}: keypoints span x {low[0]:.0f}..{high[0]:.0f}, y {low[1]:.0f}..{high[1]:.0f} on frames of "
            f"{width}x{height} (the source video is {source_size[0]}x{source_size[1]}): are these the skeletons "
            "of another video, or of another size?")


def convert(source: Path, out: Path, frames_file: Path, fmt: str = "auto", image_dir: Path | None = None,
            backend: str = "alphapose", settings: dict | None = None,
            weights_sha256: dict[str, str] | None = None, dataset: str = "") -> PoseTracks:
    """Convert one video's pose JSON to ``out``, checking it against the video's frames file;
    ``weights_sha256`` (the checked record of the weights that made it) is recorded, and for
    AlphaPose the checkout's commit and the sha256 of its pose config (from ``settings``)."""
    with FrameReader(frames_file) as reader:
        n_frames, height, width = len(reader), reader.shape[1], reader.shape[2]
        source_height, source_width = reader.attrs.get("original_size", (height, width))
    tracks, found = load_pose_json(source, n_frames, (width, height), fmt, image_dir)
    scale = (width / source_width, height / source_height)
    if scale != (1.0, 1.0):
        tracks.keypoints[..., :2] *= np.asarray(scale, dtype=np.float32)
        tracks.boxes *= np.asarray(scale * 2, dtype=np.float32)
    check_inside_frame(tracks, source, (source_width, source_height))
    box_source = "keypoints" if found == "tracked_person" else "detector"
    write_poses(out, tracks, {
        "backend": backend,
        "dataset": dataset,
        "source": str(source),
        "source_format": found,
        "source_sha256": sha256_file(source),
        "frames_file": str(frames_file),
        "box_source": box_source,
        "settings": settings or {},
        "weights_sha256": dict(weights_sha256 or {}),
    } | (alphapose_provenance(settings) if backend == "alphapose" and settings and settings.get("checkout") else {}))
    return tracks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="alphapose-results.json or *_alphapose_tracked_person.json")
    parser.add_argument("out", type=Path, help="poses file to write (.h5)")
    parser.add_argument("--frames", type=Path, required=True, help="the video's frames file (frame count and size)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--image-dir", type=Path, help="frame folder AlphaPose read (image_id = file name)")
    parser.add_argument("--backend", default="alphapose", help="what made the skeletons, recorded")
    parser.add_argument("--settings-json", default="{}", help="detector, tracker, thresholds ..., recorded")
    parser.add_argument("--weights-json", type=Path,
                        help="the checked weights record (pipelines.poses.alphapose_weights), recorded")
    parser.add_argument("--dataset", default="", help="dataset name, recorded")
    args = parser.parse_args(argv)
    weights = json.loads(args.weights_json.read_text()) if args.weights_json else {}
    try:
        tracks = convert(args.source, args.out, args.frames, args.format, args.image_dir, args.backend,
                         json.loads(args.settings_json), {name: entry["sha256"] for name, entry in weights.items()},
                         args.dataset)
    except (PoseFormatError, PoseDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    gaps = tracks.gap_stats()
    print(f"{args.out}: {len(tracks)} detections in {len(np.unique(tracks.track_ids))} tracks; "
          f"{gaps['n_track_gaps']} gaps in tracks, longest {gaps['longest_track_gap']} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
