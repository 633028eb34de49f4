"""Data protocol shared by the weakly-supervised methods (RTFM, SSRL, AR-Net).

Pure numpy: the 32-segment division RTFM (Tian et al., ICCV 2021) and SSRL (Li et al., ECCV 2022)
train on, the snippet <-> frame ground-truth rules, the ShanghaiTech weakly-supervised split
order (Zhong et al., CVPR 2019), and the index logic of the balanced samplers of RTFM/SSRL and of
AR-Net (Wan et al., ICME 2020). Nothing here reads files; callers pass arrays in.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

FRAMES_PER_SNIPPET = 16
TRAIN_SEGMENTS = 32

SnippetRule = Literal["pad_last", "truncate"]
# "pad_last": features keep the final partial 16-frame window (loop-padded), so T = ceil(n/16) and
# the labels are extended to 16*T by repeating the last label (RTFM/SSRL, gt-sh.npy; UCF-Crime's
# gt-ucf.npy labels those frames normal instead, see DatasetAdapter.padded_frame_label).
# "truncate": the extractor drops the partial window, so T = floor(n/16) and the labels are cut to
# 16*T (AR-Net).
SNIPPET_RULES: tuple[SnippetRule, ...] = ("pad_last", "truncate")


def divide_into_segments(features: np.ndarray, n_segments: int = TRAIN_SEGMENTS) -> np.ndarray:
    """Average a (T, ...) snippet sequence into (n_segments, ...) training segments.

    Boundaries are ``linspace(0, T, n_segments + 1)`` truncated to integers; a segment with an
    empty range (only when T < n_segments) takes the single snippet at its start, so snippets repeat.
    Trailing axes (crops, patches, feature) are carried through unchanged.
    """
    features = np.asarray(features)
    n_snippets = features.shape[0]
    if n_snippets == 0:
        raise ValueError("cannot divide an empty snippet sequence")
    # astype(int) truncates, which is what the reference's np.linspace(..., dtype=np.int) did.
    bounds = np.linspace(0, n_snippets, n_segments + 1).astype(int)
    out = np.empty((n_segments, *features.shape[1:]), dtype=features.dtype)
    for i in range(n_segments):
        start, stop = bounds[i], bounds[i + 1]
        out[i] = features[start:stop].mean(axis=0) if stop > start else features[start]
    return out


def divide_32(features: np.ndarray) -> np.ndarray:
    """The RTFM/SSRL training division: (T, ...) snippets -> (32, ...) segments."""
    return divide_into_segments(features, TRAIN_SEGMENTS)


def training_segments(clip_features: np.ndarray, *patch_features: np.ndarray) -> np.ndarray:
    """One RTFM/SSRL training item: (T, 10, F) clip crops and (T, P_s, F) patch grids -> (10 + sum P_s, 32, F).

    The crops and patches are stacked along axis 1 and each one is divided into 32 segments on its own.
    """
    for patches in patch_features:
        if patches.shape[0] != clip_features.shape[0]:
            raise ValueError(f"patch features have {patches.shape[0]} snippets, clip features {clip_features.shape[0]}")
    stacked = np.concatenate([clip_features, *patch_features], axis=1)
    return divide_32(stacked).transpose(1, 0, 2)


def snippet_count(n_frames: int, rule: SnippetRule) -> int:
    """Number of 16-frame snippets an extractor following ``rule`` yields for ``n_frames`` frames."""
    _check_rule(rule)
    if rule == "pad_last":
        return -(-n_frames // FRAMES_PER_SNIPPET)
    return n_frames // FRAMES_PER_SNIPPET


def frame_gt_from_snippets(frame_labels: np.ndarray, n_snippets: int, rule: SnippetRule) -> np.ndarray:
    """Frame labels of one video brought to ``16 * n_snippets`` frames, float64.

    ``n_snippets`` must be what ``rule`` gives for ``len(frame_labels)``: a mismatch means the
    features and the labels disagree about the video, which is a data error, not something to
    trim or pad silently.
    """
    labels = np.asarray(frame_labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"frame labels must be a non-empty 1-D array, got shape {labels.shape}")
    expected = snippet_count(labels.size, rule)
    if n_snippets != expected:
        raise ValueError(
            f"{labels.size} frames give {expected} snippets under rule {rule!r}, "
            f"but the features have {n_snippets}"
        )
    n_frames = FRAMES_PER_SNIPPET * n_snippets
    labels = labels.astype(np.float64)
    if rule == "truncate":
        return labels[:n_frames]
    return np.concatenate([labels, np.full(n_frames - labels.size, labels[-1])])


def expand_scores_to_frames(snippet_scores: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Repeat each snippet score 16 times; a sequence of per-video arrays is concatenated in order.

    The result lines up with ``frame_gt_from_snippets`` / ``weak_test_ground_truth`` under either
    rule, since both give 16 frames per snippet.
    """
    if isinstance(snippet_scores, np.ndarray):
        return np.repeat(snippet_scores.reshape(-1), FRAMES_PER_SNIPPET)
    parts = [np.repeat(np.asarray(s).reshape(-1), FRAMES_PER_SNIPPET) for s in snippet_scores]
    return np.concatenate(parts) if parts else np.zeros(0)


def weak_test_ground_truth(
    video_ids: Sequence[str],
    frame_labels: Mapping[str, np.ndarray],
    n_snippets: Mapping[str, int],
    rule: SnippetRule,
) -> np.ndarray:
    """Concatenated frame ground truth of a test list, the way RTFM built gt-sh.npy.

    Videos with an entry in ``frame_labels`` are converted by ``frame_gt_from_snippets``; videos
    without one are normal and contribute ``16 * n_snippets`` zeros (their frame count is not
    needed, only their snippet count).
    """
    parts = []
    for video in video_ids:
        if video in frame_labels:
            parts.append(frame_gt_from_snippets(frame_labels[video], n_snippets[video], rule))
        else:
            parts.append(np.zeros(FRAMES_PER_SNIPPET * n_snippets[video]))
    return np.concatenate(parts) if parts else np.zeros(0)


def is_shanghaitech_anomalous(video_id: str) -> bool:
    """True for ids from the original ShanghaiTech test set (4-digit suffix, e.g. ``01_0014``).

    In Zhong et al.'s weakly-supervised split, a 4-digit suffix holds exactly for the anomalous videos.
    """
    scene, clip = video_id.split("_")
    return len(clip) == 4 and scene.isdigit() and clip.isdigit()


def shanghaitech_weak_order(video_ids: Iterable[str]) -> list[str]:
    """RTFM/SSRL list order: anomalous ids sorted, then normal ids sorted."""
    ids = list(video_ids)
    anomalous = sorted(v for v in ids if is_shanghaitech_anomalous(v))
    normal = sorted(v for v in ids if not is_shanghaitech_anomalous(v))
    return anomalous + normal


def balanced_batch_indices(
    n_normal: int, n_abnormal: int, batch_size: int, step: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``batch_size`` normal and abnormal videos of training step ``step`` (1-based).

    RTFM/SSRL draw the two classes from separate shuffled loaders that drop the last partial batch
    and are restarted (with a fresh shuffle) whenever they run out, so each class cycles through
    its own epochs independently.
    """
    if step < 1:
        raise ValueError("steps count from 1")
    return (
        _epoch_batch(n_normal, batch_size, step, seed, class_key=0),
        _epoch_batch(n_abnormal, batch_size, step, seed, class_key=1),
    )


def _epoch_batch(n_videos: int, batch_size: int, step: int, seed: int, class_key: int) -> np.ndarray:
    batches_per_epoch = n_videos // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{n_videos} videos cannot fill a batch of {batch_size}")
    epoch, position = divmod(step - 1, batches_per_epoch)
    order = np.random.default_rng([seed, class_key, epoch]).permutation(n_videos)
    return order[position * batch_size : (position + 1) * batch_size]


def arnet_item_videos(
    n_anomalous: int, n_normal: int, rng: np.random.Generator, sample_size: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Video indices of one AR-Net training item: ``sample_size`` of each class, without replacement.

    Every item is drawn independently of its position in the epoch.
    """
    return (
        rng.choice(n_anomalous, size=sample_size, replace=False),
        rng.choice(n_normal, size=sample_size, replace=False),
    )


def jittered_uniform_indices(n_snippets: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """AR-Net's subsampling of an anomalous video longer than ``length``.

    Bin ``i`` starts at ``floor(i*T/length)``; each bin except the last picks a random index between
    its start and the next bin's start, both inclusive (so neighbours may coincide); the last bin
    takes its start. The whole video is covered and order is kept.
    """
    if n_snippets <= length:
        raise ValueError(f"jittered sampling needs more than {length} snippets, got {n_snippets}")
    starts = (np.arange(length + 1) * n_snippets) // length
    indices = rng.integers(starts[:-2], starts[1:-1] + 1)
    return np.append(indices, starts[-2])


def contiguous_crop_start(n_snippets: int, length: int, rng: np.random.Generator) -> int:
    """Start of AR-Net's random contiguous window for a normal video longer than ``length``.

    Drawn from ``[0, T - length)``: the reference's ``np.random.randint(T - length)`` excludes
    the window that ends on the last snippet.
    """
    if n_snippets <= length:
        raise ValueError(f"cropping needs more than {length} snippets, got {n_snippets}")
    return int(rng.integers(0, n_snippets - length))


def arnet_fit_length(
    features: np.ndarray, anomalous: bool, rng: np.random.Generator, length: int = 300
) -> np.ndarray:
    """Bring a (T, D) video to (length, D) for an AR-Net training item.

    Longer anomalous videos are jitter-subsampled over their whole span, longer normal videos
    are cropped to a random contiguous window, and shorter videos of either class are zero-padded
    at the end (the training loop recovers their length from the non-zero rows).
    """
    n_snippets = features.shape[0]
    if n_snippets > length:
        if anomalous:
            return features[jittered_uniform_indices(n_snippets, length, rng)]
        start = contiguous_crop_start(n_snippets, length, rng)
        return features[start : start + length]
    padding = [(0, length - n_snippets)] + [(0, 0)] * (features.ndim - 1)
    return np.pad(features, padding)


def _check_rule(rule: str) -> None:
    if rule not in SNIPPET_RULES:
        raise ValueError(f"unknown snippet rule {rule!r}; expected one of {SNIPPET_RULES}")
