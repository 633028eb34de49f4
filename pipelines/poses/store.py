"""HDF5 storage of tracked person skeletons, one file per video.

The skeleton-based methods (STG-NF: Hirschorn & Avidan, ICCV 2023; GENet: Yang et al., ACM MM 2024)
read person tracks: per detection its track id, frame index, 17 COCO keypoints (x, y in pixels and a
confidence), a box and a pose score. Every pose backend (AlphaPose, the offline BlazePose backend, the
synthetic demo's ground truth, released JSON packages) ends in this one layout:

* ``track_ids`` (N,) int64, ``frames`` (N,) int64: detections sorted by track, then frame;
* ``keypoints`` (N, 17, 3) float32, ``boxes`` (N, 4) float32 as x1, y1, x2, y2, ``scores`` (N,) float32;
* attributes: the video's frame count and size, the backend and its settings (detector, tracker,
  thresholds, weights checksums), where the boxes came from, and the tracks' gap statistics.

A track may skip frames (a missed detection); it is kept whole, and its gaps are counted in the
attributes: the segmenter (``pipelines.poses.segments``) decides which windows a gap breaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from pipelines import h5attrs
from pipelines.atomic import atomic_path
from pipelines.provenance import versions

FORMAT = "vadbench-poses-1"
NUM_KEYPOINTS = 17
_ARRAYS = ("track_ids", "frames", "keypoints", "boxes", "scores")


class PoseDataError(ValueError):
    """Pose detections that are inconsistent: wrong shapes, duplicates, frames outside the video."""


@dataclass
class PoseTracks:
    """All person detections of one video, sorted by (track id, frame)."""

    track_ids: np.ndarray
    frames: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    n_frames: int
    frame_size: tuple[int, int]  # (width, height) in pixels

    def __post_init__(self) -> None:
        self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        n = self.track_ids.size
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(n, NUM_KEYPOINTS, 3)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        if self.frames.size != n:
            raise PoseDataError(f"{n} track ids but {self.frames.size} frame indices")
        for name in ("keypoints", "boxes", "scores"):
            if not np.isfinite(getattr(self, name)).all():
                raise PoseDataError(f"{name} contain NaN or infinite values")
        if n and (self.frames.min() < 0 or self.frames.max() >= self.n_frames):
            raise PoseDataError(
                f"detections in frames {self.frames.min()}..{self.frames.max()} but the video has "
                f"{self.n_frames} frames (0..{self.n_frames - 1})"
            )
        order = np.lexsort((self.frames, self.track_ids))
        for name in _ARRAYS:
            setattr(self, name, getattr(self, name)[order])
        same = (np.diff(self.track_ids) == 0) & (np.diff(self.frames) == 0)
        if same.any():
            at = int(np.argmax(same))
            raise PoseDataError(
                f"track {self.track_ids[at]} has two detections in frame {self.frames[at]}: "
                "a track holds at most one person per frame"
            )

    def __len__(self) -> int:
        return int(self.track_ids.size)

    def tracks(self) -> Iterator[tuple[int, slice]]:
        """(track id, slice of its detections), in id order."""
        ids, starts = np.unique(self.track_ids, return_index=True)
        ends = np.append(starts[1:], len(self))
        for track_id, start, end in zip(ids, starts, ends):
            yield int(track_id), slice(int(start), int(end))

    def gap_stats(self) -> dict[str, int]:
        """How often tracks skip frames: gaps counted, and the longest run of missing frames."""
        gaps, longest = 0, 0
        for _, rows in self.tracks():
            missing = np.diff(self.frames[rows]) - 1
            gaps += int(np.count_nonzero(missing))
            longest = max(longest, int(missing.max(initial=0)))
        return {"n_track_gaps": gaps, "longest_track_gap": longest}


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """(N, 17, 3) keypoints -> (N, 4) x1, y1, x2, y2 around the joints with confidence > 0 (all if none)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    confident = keypoints[..., 2] > 0
    confident[~confident.any(axis=1)] = True
    x = np.where(confident, keypoints[..., 0], np.nan)
    y = np.where(confident, keypoints[..., 1], np.nan)
    return np.stack([np.nanmin(x, 1), np.nanmin(y, 1), np.nanmax(x, 1), np.nanmax(y, 1)], axis=1)




def write_poses(path: str | Path, tracks: PoseTracks, attrs: dict[str, Any]) -> None:
    """Write the tracks and their provenance atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            for name in _ARRAYS:
                handle.create_dataset(name, data=getattr(tracks, name))
            h5attrs.write(
                handle.attrs,
                {
                    "format": FORMAT,
                    "n_frames": tracks.n_frames,
                    "frame_width": tracks.frame_size[0],
                    "frame_height": tracks.frame_size[1],
                    "n_tracks": len(np.unique(tracks.track_ids)),
                    "n_detections": len(tracks),
                    "versions": versions(),
                    **tracks.gap_stats(),
                    **attrs,
                },
            )


def read_poses(path: str | Path) -> tuple[PoseTracks, dict[str, Any]]:
    """The tracks of a poses file and its attributes (JSON attributes decoded)."""
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != FORMAT:
                raise PoseDataError(f"{path}: not a poses file (format {handle.attrs.get('format')!r})")
            arrays = {name: handle[name][()] for name in _ARRAYS}
            attrs = h5attrs.read(handle.attrs)
    except OSError as err:
        raise PoseDataError(f"{path}: unreadable poses file ({err})") from err
    tracks = PoseTracks(
        **arrays, n_frames=int(attrs["n_frames"]), frame_size=(attrs["frame_width"], attrs["frame_height"])
    )
    return tracks, attrs

