"""Fixed-length pose segments from person tracks, as STG-NF consumes them.

Follows the data preparation of STG-NF (Hirschorn & Avidan, ICCV 2023), reused by GENet
(Yang et al., ACM MM 2024): 17 COCO joints become the 18-joint OpenPose layout with a neck,
each track is cut into windows of consecutive detections that are continuous in time, and each
segment is normalised on its own (frame-size division, mean removal, division by the standard
deviation of y). Training doubles the data with horizontally mirrored segments.

Segments are arrays of shape (..., 3, T, 18): channels x, y (pixels) and joint confidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Index 17 of the COCO array is the appended neck (mean of the two shoulders, COCO 5 and 6).
COCO17_TO_OPENPOSE18 = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
OPENPOSE18_JOINTS = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# OPENPOSE18_MIRROR[j] is the joint that j becomes in a mirror image (left <-> right).
OPENPOSE18_MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

# The released code divides by 856 x 480 for every dataset, UBnormal included; keep it, since it
# sets the x/y aspect the released weights were trained on.
DEFAULT_FRAME_SIZE = (856, 480)


@dataclass(frozen=True)
class SegmentSettings:
    """Windowing of person tracks: length, strides and the tolerated number of missing frames."""

    seg_len: int
    train_stride: int = 6
    test_stride: int = 1
    max_missing: int = 2
    released_continuity_rule: bool = False  # see continuous_window_starts
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE


SHANGHAITECH_SEGMENTS = SegmentSettings(seg_len=24)
UBNORMAL_SEGMENTS = SegmentSettings(seg_len=16)


@dataclass(frozen=True)
class TrackSegments:
    """The segments cut from one person track.

    poses: (S, 3, seg_len, 18) float32; scores: (S, seg_len) per-detection pose confidence;
    start_frames: (S,) frame number of each segment's first detection.
    """

    poses: np.ndarray
    scores: np.ndarray
    start_frames: np.ndarray


def coco17_to_openpose18(keypoints: np.ndarray) -> np.ndarray:
    """(..., 17, D) COCO keypoints -> (..., 18, D) in OpenPose order, the neck averaging the shoulders."""
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != 17:
        raise ValueError(f"expected 17 COCO joints on axis -2, got shape {keypoints.shape}")
    neck = 0.5 * (keypoints[..., 5, :] + keypoints[..., 6, :])
    extended = np.concatenate([keypoints, neck[..., None, :]], axis=-2)
    return extended[..., COCO17_TO_OPENPOSE18, :]


def continuous_window_starts(
    frame_ids: np.ndarray, seg_len: int, stride: int, max_missing: int = 2, released_rule: bool = False
) -> np.ndarray:
    """Detection indices at which a window of ``seg_len`` consecutive detections may start.

    ``frame_ids`` are the track's frame numbers, sorted and unique. Candidates are 0, stride,
    2*stride, ... strictly below n - seg_len (the released code never uses the last possible
    window). A candidate is kept only if its detections span at most seg_len + max_missing frames:
    a window tolerates ``max_missing`` missing frames, and a longer gap splits the track.

    ``released_rule`` applies the released code's test instead: at least seg_len - max_missing of
    the detections lie in the seg_len frames from the first one. It also accepts windows whose last
    ``max_missing`` detections come after a gap of any length, i.e. it can bridge a long gap.
    """
    frame_ids = np.asarray(frame_ids)
    if frame_ids.ndim != 1 or np.any(np.diff(frame_ids) <= 0):
        raise ValueError("frame_ids must be a 1-D array of strictly increasing frame numbers")
    num_candidates = max(int(np.ceil((len(frame_ids) - seg_len) / stride)), 0)
    starts = np.arange(num_candidates) * stride
    windows = frame_ids[starts[:, None] + np.arange(seg_len)[None, :]]
    if released_rule:
        in_range = np.count_nonzero(windows < windows[:, :1] + seg_len, axis=1)
        keep = in_range >= seg_len - max_missing
    else:
        keep = windows[:, -1] - windows[:, 0] <= seg_len - 1 + max_missing
    return starts[keep].astype(np.int64)


def segment_track(
    frame_ids: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    seg_len: int,
    stride: int,
    max_missing: int = 2,
    released_rule: bool = False,
) -> TrackSegments:
    """Cut one person track into continuous windows.

    frame_ids: (n,) frame numbers in any order, unique; keypoints: (n, 17, 3) COCO x, y, confidence
    in pixels; scores: (n,) per-detection pose confidence. ``max_missing`` and ``released_rule``
    are as in :func:`continuous_window_starts`.
    """
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if keypoints.shape != (len(frame_ids), 17, 3) or scores.shape != (len(frame_ids),):
        raise ValueError(
            f"expected keypoints ({len(frame_ids)}, 17, 3) and scores ({len(frame_ids)},), "
            f"got {keypoints.shape} and {scores.shape}"
        )
    order = np.argsort(frame_ids, kind="stable")
    frame_ids, keypoints, scores = frame_ids[order], keypoints[order], scores[order]
    if np.any(np.diff(frame_ids) == 0):
        raise ValueError("a person track has two detections in the same frame")
    starts = continuous_window_starts(frame_ids, seg_len, stride, max_missing, released_rule)
    windows = starts[:, None] + np.arange(seg_len)[None, :]
    poses = coco17_to_openpose18(keypoints)[windows]  # (S, T, V, 3)
    return TrackSegments(
        poses=poses.transpose(0, 3, 1, 2).astype(np.float32),
        scores=scores[windows],
        start_frames=frame_ids[starts],
    )


def hflip(segments: np.ndarray, swap_left_right: bool = True) -> np.ndarray:
    """Mirror segments horizontally in pixel coordinates (x -> -x); confidence is untouched.

    With ``swap_left_right`` the left and right joints also exchange places, so the result is the
    pose a detector would report on the mirrored image. The released STG-NF code only negates x;
    its flow treats all joints alike (the all-pairs graph), so its NLL is the same either way.
    """
    flipped = np.array(segments, dtype=np.float64, copy=True)
    flipped[..., 0, :, :] *= -1.0
    if swap_left_right:
        flipped = flipped[..., OPENPOSE18_MIRROR]
    return flipped


def with_flips(segments: np.ndarray, swap_left_right: bool = True) -> np.ndarray:
    """Training augmentation: the S segments followed by their S mirror images, (2S, 3, T, V)."""
    return np.concatenate([np.asarray(segments, dtype=np.float64), hflip(segments, swap_left_right)])


def normalize(segments: np.ndarray, frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> np.ndarray:
    """Per-segment normalisation of (..., 3, T, V) pixel poses.

    x /= width and y /= height; subtract the mean x and mean y over (T, V); divide x and y by the
    (population) standard deviation of y over (T, V), which keeps the aspect. A segment whose y
    does not vary at all is only centred, not scaled, so it cannot turn into NaNs.
    """
    result = np.array(segments, dtype=np.float64, copy=True)
    result[..., 0, :, :] /= frame_size[0]
    result[..., 1, :, :] /= frame_size[1]
    xy = result[..., :2, :, :]
    xy -= xy.mean(axis=(-2, -1), keepdims=True)
    y_std = xy[..., 1:2, :, :].std(axis=(-2, -1), keepdims=True)
    xy /= np.where(y_std > 0, y_std, 1.0)
    return result


def model_input(segments: np.ndarray, frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> np.ndarray:
    """Normalised x, y channels as the flow takes them: (..., 2, T, V) float32."""
    return normalize(segments, frame_size)[..., :2, :, :].astype(np.float32)
