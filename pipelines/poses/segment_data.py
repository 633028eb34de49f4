"""Pose segments of whole videos and splits, for the skeleton methods STG-NF and GENet.

The window rule, the joint layout and the normalisation are those of STG-NF (Hirschorn & Avidan,
ICCV 2023) in ``pipelines.poses.segments``; here they are applied to poses files. A
:class:`SegmentBank` keeps only the detections' keypoints and, per segment, the rows of its
detections (a window is consecutive rows of a track, so its first row says them all), and builds
normalised batches when asked: memory grows with the detections, not with segments x window
length. :func:`frame_anomaly_scores` turns one video's segment scores into frame scores with the
protocol of ``pipelines.poses.frame_scores``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from pipelines.poses.frame_scores import ClipSegmentScores, clip_frame_scores
from pipelines.poses.segments import coco17_to_openpose18, continuous_window_starts, hflip, model_input
from pipelines.poses.store import PoseTracks, read_poses


@dataclass(frozen=True)
class WindowSettings:
    """How tracks become segments (STG-NF: seg_len 24 for ShanghaiTech, 16 for UBnormal)."""

    seg_len: int
    stride: int
    max_missing: int = 2
    released_rule: bool = False
    frame_size: tuple[int, int] = (856, 480)


def dataset_of(files: Sequence[Path]) -> str | None:
    """The dataset the poses files (or person-tube files) belong to; they must agree."""
    names = set()
    for path in files:
        with h5py.File(path, "r") as handle:
            names.add(handle.attrs.get("dataset", ""))
    if len(names) > 1:
        raise ValueError(f"input files belong to several datasets: {sorted(names)}")
    name = names.pop() if names else ""
    return name or None


class SegmentBank:
    """Windows of ``seg_len`` consecutive detections of the tracks of one or more videos."""

    def __init__(self, videos: Sequence[PoseTracks], settings: WindowSettings):
        self.settings = settings
        keypoints, first_rows, video_index, track_ids, start_frames = [], [], [], [], []
        offset = 0
        for number, tracks in enumerate(videos):
            for track_id, span in tracks.tracks():
                frames = tracks.frames[span]
                starts = continuous_window_starts(
                    frames, settings.seg_len, settings.stride, settings.max_missing, settings.released_rule
                )
                first_rows.append(offset + span.start + starts)
                video_index.append(np.full(starts.size, number))
                track_ids.append(np.full(starts.size, track_id))
                start_frames.append(frames[starts])
            keypoints.append(tracks.keypoints)
            offset += len(tracks)
        self.keypoints = np.concatenate(keypoints) if keypoints else np.zeros((0, 17, 3), np.float32)
        def joined(parts):
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

        self.first_rows, self.video_index = joined(first_rows), joined(video_index)
        self.track_ids, self.start_frames = joined(track_ids), joined(start_frames)

    @classmethod
    def from_files(cls, files: Sequence[Path], settings: WindowSettings) -> "SegmentBank":
        return cls([read_poses(path)[0] for path in files], settings)

    def __len__(self) -> int:
        return int(self.first_rows.size)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """(B, T) detection rows of the segments ``index``."""
        return self.first_rows[np.asarray(index)][:, None] + np.arange(self.settings.seg_len)[None, :]

    def poses(self, index: np.ndarray) -> np.ndarray:
        """(B, 3, T, 18) pixel poses in OpenPose order (x, y, confidence) of the segments ``index``."""
        windows = coco17_to_openpose18(self.keypoints[self.rows(index)])  # (B, T, 18, 3)
        return windows.transpose(0, 3, 1, 2)

    def model_input(self, index: np.ndarray, flipped: np.ndarray | None = None) -> np.ndarray:
        """(B, 2, T, 18) normalised x, y; segments where ``flipped`` is True are mirrored first."""
        poses = self.poses(index).astype(np.float64)
        if flipped is not None and flipped.any():
            poses[flipped] = hflip(poses[flipped])
        return model_input(poses, self.settings.frame_size)


def frame_anomaly_scores(
    n_frames: int,
    track_ids: np.ndarray,
    start_frames: np.ndarray,
    normality: np.ndarray,
    seg_len: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One video's frame anomaly scores (float32, higher = more abnormal) from segment normality
    scores, and the mask of its empty frames.

    A segment's score goes to its centre frame and a frame takes its most abnormal person; the
    score is the negated normality, so that higher means more abnormal. Frames where no segment is
    centred ("nobody there") are marked empty, with a placeholder score of 0: the protocol gives them
    the most normal score of the whole test split (``Protocol.empty_frame_fill``), which the
    evaluation, seeing every video, computes.
    """
    clip = ClipSegmentScores(n_frames, np.asarray(track_ids), np.asarray(start_frames), np.asarray(normality))
    frame_normality = clip_frame_scores(clip, seg_len)
    if np.isneginf(frame_normality).any():
        raise ValueError("a segment has a normality of -inf: the model produced an infinite score")
    empty = np.isposinf(frame_normality)
    frame_normality[empty] = 0.0
    return (-frame_normality).astype(np.float32), empty
