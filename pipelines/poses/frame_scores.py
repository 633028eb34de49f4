"""Per-person segment scores -> per-frame normality scores, the STG-NF / GENet protocol.

As in STG-NF (Hirschorn & Avidan, ICCV 2023) and GENet (Yang et al., ACM MM 2024): a segment's
normality score is written at its centre frame f0 + seg_len // 2 only; a frame takes the most
abnormal (lowest) score among its persons; frames without any score are filled with the maximum
finite score over the whole dataset ("nobody there" counts as maximally normal); each clip is
then smoothed by six Gaussian passes with sigma 1..6 (effective sigma sqrt(91), about 9.5 frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipelines import metrics

SMOOTHING_SIGMAS = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class ClipSegmentScores:
    """Scored segments of one clip: parallel arrays over its segments, and the clip's frame count."""

    num_frames: int
    person_ids: np.ndarray
    start_frames: np.ndarray
    scores: np.ndarray


def clip_frame_scores(clip: ClipSegmentScores, seg_len: int) -> np.ndarray:
    """(num_frames,) lowest centre-frame score per frame; +inf where no segment is centred."""
    person_ids = np.asarray(clip.person_ids)
    start_frames = np.asarray(clip.start_frames, dtype=np.int64)
    scores = np.asarray(clip.scores, dtype=np.float64)
    if not person_ids.shape == start_frames.shape == scores.shape or scores.ndim != 1:
        raise ValueError(
            f"person_ids, start_frames and scores must be 1-D and equally long, got "
            f"{person_ids.shape}, {start_frames.shape}, {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("segment scores contain NaN")
    pairs = np.stack([np.unique(person_ids, return_inverse=True)[1], start_frames], axis=1)
    if len(np.unique(pairs, axis=0)) != len(pairs):
        raise ValueError("a person has two segments with the same start frame")
    centres = start_frames + seg_len // 2
    if centres.size and (centres.min() < 0 or centres.max() >= clip.num_frames):
        raise ValueError(
            f"segment centres span frames {centres.min()}..{centres.max()} but the clip has "
            f"{clip.num_frames} frames"
        )
    frame_scores = np.full(clip.num_frames, np.inf)
    np.minimum.at(frame_scores, centres, scores)
    return frame_scores


def fill_non_finite(clip_scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Replace +inf by the maximum and -inf by the minimum finite score over all clips together."""
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in clip_scores])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no finite frame score in any clip: nothing to fill the empty frames with")
    high, low = finite.max(), finite.min()
    return [np.where(s == np.inf, high, np.where(s == -np.inf, low, s)) for s in clip_scores]


def smooth(scores: np.ndarray, sigmas: Sequence[float] = SMOOTHING_SIGMAS) -> np.ndarray:
    """Gaussian passes in sequence (scipy defaults: 'reflect' boundary, truncate at 4 sigma)."""
    return metrics.smooth(scores, sigmas)


def dataset_frame_scores(
    clips: Sequence[ClipSegmentScores], seg_len: int, sigmas: Sequence[float] = SMOOTHING_SIGMAS
) -> list[np.ndarray]:
    """Per-clip smoothed frame normality scores for a whole test set, in the order of ``clips``."""
    filled = fill_non_finite([clip_frame_scores(clip, seg_len) for clip in clips])
    return [smooth(scores, sigmas) for scores in filled]
