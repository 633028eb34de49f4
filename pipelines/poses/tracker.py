"""Frame-to-frame person tracking by Hungarian matching on box overlap and keypoint distance.

Gives the persistent person ids that skeleton-based anomaly detection (STG-NF: Hirschorn & Avidan,
ICCV 2023) needs when the pose estimator itself does not track. Each frame, the detections are matched
to the live tracks with ``scipy.optimize.linear_sum_assignment`` (Kuhn's Hungarian method) on a
similarity that mixes the IoU of the boxes with an OKS-like keypoint agreement; a track's box and
keypoints are first moved by its smoothed centre velocity, so walkers are followed between frames.
Unmatched detections open new tracks; a track unseen for more than ``max_age`` frames is closed for good.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class TrackerSettings:
    """Matching weights and thresholds."""

    iou_weight: float = 0.5  # similarity = w * IoU + (1 - w) * keypoint agreement
    keypoint_sigma: float = 0.15  # keypoint distance scale, as a fraction of the track's box diagonal
    min_similarity: float = 0.2  # pairs below are never matched
    max_age: int = 10  # frames a track may go unseen and still be continued
    min_confidence: float = 0.3  # keypoints below take no part in the distance
    velocity_smoothing: float = 0.5  # weight of the previous velocity when a track moves on


@dataclass
class _Track:
    track_id: int
    frame: int
    box: np.ndarray
    keypoints: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre motion per frame, smoothed

    def shift(self, frame: int) -> np.ndarray:
        """Expected (dx, dy) of the person from its last frame to ``frame``."""
        return self.velocity * (frame - self.frame)

    def follow(self, frame: int, box: np.ndarray, keypoints: np.ndarray, smoothing: float) -> None:
        moved = (box[:2] + box[2:] - self.box[:2] - self.box[2:]) / 2 / (frame - self.frame)
        self.velocity = smoothing * self.velocity + (1 - smoothing) * moved
        self.frame, self.box, self.keypoints = frame, box, keypoints


def _area(box: np.ndarray) -> np.ndarray:
    return (box[..., 2] - box[..., 0]).clip(0) * (box[..., 3] - box[..., 1]).clip(0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 4) x (N, 4) boxes as x1, y1, x2, y2 -> (M, N) intersection over union."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def keypoint_similarity(track_keypoints: np.ndarray, track_boxes: np.ndarray, keypoints: np.ndarray,
                        sigma: float, min_confidence: float) -> np.ndarray:
    """(M, 17, 3) x (N, 17, 3) -> (M, N) mean of exp(-d^2 / 2 (sigma * diagonal)^2) over joints both see."""
    diagonal = np.hypot(track_boxes[:, 2] - track_boxes[:, 0], track_boxes[:, 3] - track_boxes[:, 1])
    scale = (sigma * np.maximum(diagonal, 1.0))[:, None, None]
    d2 = ((track_keypoints[:, None, :, :2] - keypoints[None, :, :, :2]) ** 2).sum(-1)
    seen = (track_keypoints[:, None, :, 2] >= min_confidence) & (keypoints[None, :, :, 2] >= min_confidence)
    agreement = np.exp(-d2 / (2 * scale**2))
    count = seen.sum(-1)
    return np.where(count > 0, (agreement * seen).sum(-1) / np.maximum(count, 1), 0.0)


class HungarianTracker:
    """Assigns persistent ids to per-frame detections, one frame at a time, in frame order."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()):
        self.settings = settings
        self._tracks: list[_Track] = []
        self._next_id = 0

    def update(self, frame: int, boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Track ids (N,) for the N detections of ``frame``: boxes (N, 4) x1, y1, x2, y2; keypoints (N, 17, 3)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        keypoints = np.asarray(keypoints, np.float64).reshape(len(boxes), -1, 3)
        s = self.settings
        self._tracks = [t for t in self._tracks if frame - t.frame <= s.max_age]
        ids = np.full(len(boxes), -1, np.int64)
        if self._tracks and len(boxes):
            shifts = np.stack([t.shift(frame) for t in self._tracks])
            predicted = np.stack([t.box for t in self._tracks]) + np.tile(shifts, 2)
            moved = np.stack([t.keypoints for t in self._tracks])
            moved[..., :2] += shifts[:, None, :]
            similarity = s.iou_weight * box_iou(predicted, boxes) + (1 - s.iou_weight) * keypoint_similarity(
                moved, predicted, keypoints, s.keypoint_sigma, s.min_confidence)
            rows, cols = linear_sum_assignment(-similarity)
            for row, col in zip(rows, cols):
                if similarity[row, col] >= s.min_similarity:
                    self._tracks[row].follow(frame, boxes[col], keypoints[col], s.velocity_smoothing)
                    ids[col] = self._tracks[row].track_id
        for col in np.flatnonzero(ids < 0):
            self._tracks.append(_Track(self._next_id, frame, boxes[col], keypoints[col]))
            ids[col] = self._next_id
            self._next_id += 1
        return ids
