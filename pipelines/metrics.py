"""Frame-level evaluation for video anomaly detection.

Frame-level ROC AUC and average precision, pooled over all test frames ("micro", the number
most papers report, e.g. STG-NF: Hirschorn & Avidan, "Normalizing Flows for Human Pose Anomaly
Detection", ICCV 2023) and averaged over videos ("macro"), together with the post-processing
methods apply before scoring: per-video min-max normalisation (LGN-Net, STD), repeated Gaussian
smoothing (STG-NF's six passes, sigma 1..6) and expansion of 16-frame snippet scores to frames
(RTFM and other weakly supervised methods).

Convention everywhere: label 1 = abnormal, and a higher score = more abnormal. A method whose
native score is a normality converts it before calling in here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# scipy and scikit-learn are imported where they are used: the workflow imports `Protocol` (through
# models.base) while it builds the DAG, and should not pay for them there.
NORMALISATIONS = ("none", "minmax_per_video")
POOLINGS = ("micro", "macro")
# What frames holding nothing to score (VideoScores.empty) become: "none" (there are none), or
# "most_normal_in_split", the lowest score of the split's scored frames, before any smoothing: the
# STG-NF / GENet protocol, where a frame without a person counts as the test set's most normal.
EMPTY_FRAME_FILLS = ("none", "most_normal_in_split")
# The label of the frames a video is padded with (Protocol.pad_to_multiple_of): its last label repeated
# (ShanghaiTech's gt-sh.npy), or normal (UCF-Crime's gt-ucf.npy, 1 only on an event's [start, end]).
PADDED_FRAME_LABELS = ("last", "normal")


@dataclass(frozen=True)
class Protocol:
    """How a number was computed; every number written carries one (as a dict via ``as_dict()``).

    ``normalisation``, ``smoothing_sigmas`` and ``skipped_start_frames`` are applied by
    :func:`evaluate`; ``pooling``, ``label_convention`` and ``snippet_length`` record what the
    caller did, so a reader can tell how the number came about.
    """

    pooling: str = "micro"
    normalisation: str = "none"
    smoothing_sigmas: tuple[float, ...] = ()
    label_convention: str = ""
    skipped_start_frames: int = 0
    snippet_length: int | None = None
    empty_frame_fill: str = "none"
    # AR-Net's FAR: the share of the normal videos' frames scored at or above this (None: not reported)
    false_alarm_threshold: float | None = None
    # Each video extended to a multiple of this many frames by repeating its last frame (score,
    # masks; the label as ``padded_frame_label`` says), before anything else; 0: none. RTFM's and
    # SSRL's ground-truth files do this with loop-padded snippet features: 16 * ceil(n/16) frames.
    pad_to_multiple_of: int = 0
    padded_frame_label: str = "last"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"Protocol.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"Protocol.normalisation must be one of {NORMALISATIONS}, "
                f"got {self.normalisation!r}"
            )
        # A list given here would make the frozen instance unhashable and its dict ambiguous.
        sigmas = tuple(float(s) for s in self.smoothing_sigmas)
        if any(not np.isfinite(s) or s <= 0 for s in sigmas):
            raise ValueError(f"Protocol.smoothing_sigmas must all be positive, got {sigmas}")
        object.__setattr__(self, "smoothing_sigmas", sigmas)
        if self.skipped_start_frames < 0:
            raise ValueError(
                f"Protocol.skipped_start_frames must be >= 0, got {self.skipped_start_frames}"
            )
        if self.empty_frame_fill not in EMPTY_FRAME_FILLS:
            raise ValueError(f"Protocol.empty_frame_fill must be one of {EMPTY_FRAME_FILLS}, got {self.empty_frame_fill!r}")
        if self.false_alarm_threshold is not None and not np.isfinite(self.false_alarm_threshold):
            raise ValueError(f"Protocol.false_alarm_threshold must be a number, got {self.false_alarm_threshold}")
        if self.snippet_length is not None and self.snippet_length < 1:
            raise ValueError(f"Protocol.snippet_length must be >= 1, got {self.snippet_length}")
        if self.pad_to_multiple_of < 0:
            raise ValueError(f"Protocol.pad_to_multiple_of must be >= 0, got {self.pad_to_multiple_of}")
        if self.padded_frame_label not in PADDED_FRAME_LABELS:
            raise ValueError(f"Protocol.padded_frame_label must be one of {PADDED_FRAME_LABELS}, got {self.padded_frame_label!r}")

    def as_dict(self) -> dict:
        """Plain JSON-serialisable dict of every field (sigmas as a list)."""
        fields = dataclasses.asdict(self)
        fields["smoothing_sigmas"] = list(self.smoothing_sigmas)
        return fields


def with_dataset_note(label_convention: str, params: dict, key: str, missing: str) -> str:
    """``label_convention`` followed by the note the workflow wrote into a method's ``params[key]``
    for the convention's dataset (every adapter's convention starts ``<dataset>:``), or ``missing``
    (a method run by hand, outside the workflow)."""
    dataset = label_convention.partition(":")[0]
    return f"{label_convention}; {params.get(key, {}).get(dataset, missing)}"


def _as_1d_float(scores: np.ndarray, what: str) -> np.ndarray:
    """A float64 copy, so no function here writes into its caller's array."""
    array = np.array(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {array.shape}")
    return array


def minmax_per_video(scores: np.ndarray) -> np.ndarray:
    """Rescale one video's scores to [0, 1]; a constant video becomes all zeros rather than NaN.

    This uses the test video's own minimum and maximum, so it is not causal.
    """
    array = _as_1d_float(scores, "scores")
    if array.size == 0:
        return array
    low, high = array.min(), array.max()
    if high == low:
        return np.zeros_like(array)
    return (array - low) / (high - low)


def smooth(scores: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Apply ``gaussian_filter1d`` (reflect mode, truncate 4) once per sigma, in order.

    Passes compose like one pass of sigma = sqrt(sum of squares) away from the borders, e.g.
    STG-NF's (1, 2, 3, 4, 5, 6) acts like sqrt(91) ~ 9.5 frames. No sigmas returns a copy.
    """
    from scipy.ndimage import gaussian_filter1d

    array = _as_1d_float(scores, "scores")
    for sigma in sigmas:
        if not sigma > 0:
            raise ValueError(f"smoothing sigmas must be positive, got {tuple(sigmas)}")
        array = gaussian_filter1d(array, float(sigma), mode="reflect")
    return array


def expand_snippets(
    snippet_scores: np.ndarray, n_frames: int, snippet_length: int = 16
) -> np.ndarray:
    """Turn one video's snippet scores into frame scores, each repeated ``snippet_length`` times.

    The last snippet may run past ``n_frames`` (feature extractors loop-pad the tail); the
    result is cut to ``n_frames``. Too few snippets to cover the video, or a whole snippet
    lying beyond its end, means the scores belong to a different frame count: ValueError.
    """
    snippets = _as_1d_float(snippet_scores, "snippet_scores")
    if snippet_length < 1:
        raise ValueError(f"snippet_length must be >= 1, got {snippet_length}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    covered = snippets.size * snippet_length
    if covered < n_frames:
        raise ValueError(
            f"{snippets.size} snippets of {snippet_length} frames cover {covered} frames, "
            f"but the video has {n_frames} frames"
        )
    if covered - n_frames >= snippet_length:
        raise ValueError(
            f"{snippets.size} snippets of {snippet_length} frames cover {covered} frames, "
            f"more than one snippet beyond the video's {n_frames} frames"
        )
    return np.repeat(snippets, snippet_length)[:n_frames]


def postprocess(scores: np.ndarray, protocol: Protocol) -> np.ndarray:
    """One video's scores after the protocol's normalisation, then its smoothing (float64)."""
    array = _as_1d_float(scores, "scores")
    if protocol.normalisation == "minmax_per_video":
        array = minmax_per_video(array)
    return smooth(array, protocol.smoothing_sigmas)


@dataclass
class VideoScores:
    """One test video: frame labels (1 = abnormal), frame scores (higher = more abnormal) and
    an optional boolean mask, False where the method gave the frame no score."""

    name: str
    labels: np.ndarray
    scores: np.ndarray
    scored: np.ndarray | None = None
    empty: np.ndarray | None = None  # True where the frame holds nothing to score: see fill_empty_frames


def _counted_frames(video: VideoScores, protocol: Protocol) -> np.ndarray:
    """The frames that count: scored (the mask checked, naming the video), and past the protocol's
    skipped start frames."""
    size = np.asarray(video.scores).size
    if video.scored is None:
        counted = np.ones(size, dtype=bool)
    else:
        counted = np.asarray(video.scored).ravel()
        if counted.dtype != bool:
            raise ValueError(f"video {video.name!r}: scored mask must be boolean, got {counted.dtype}")
        if counted.size != size:
            raise ValueError(f"video {video.name!r}: scored mask has {counted.size} entries for {size} frames")
        counted = counted.copy()
    counted[: protocol.skipped_start_frames] = False
    return counted


def padded_to_multiple(video: VideoScores, multiple: int, label: str = "last") -> VideoScores:
    """``video`` extended to a multiple of ``multiple`` frames by repeating its last frame's score and
    masks, and its last label or, with ``label`` "normal", 0 (unchanged when it already is one, or
    when its arrays disagree in length, which the evaluation then reports)."""
    labels, scores = np.asarray(video.labels).ravel(), np.asarray(video.scores).ravel()
    extra = -labels.size % multiple if multiple else 0
    if not extra or not labels.size or labels.size != scores.size:
        return video

    def extended(array, fill=None):
        if array is None:
            return None
        array = np.asarray(array).ravel()
        added = np.repeat(array[-1:], extra) if fill is None else np.full(extra, fill, array.dtype)
        return np.concatenate([array, added]) if array.size == labels.size else array

    return dataclasses.replace(video, labels=extended(labels, 0 if label == "normal" else None), scores=extended(scores),
                               scored=extended(video.scored), empty=extended(video.empty))


def fill_empty_frames(videos: Sequence[VideoScores], protocol: Protocol) -> list[VideoScores]:
    """The videos with their empty frames (``empty`` True) given the protocol's fill, computed over
    all of them (the whole split): with ``most_normal_in_split``, the lowest score among the counted
    frames that are not empty. Empty frames under a protocol that fills none are an error."""
    marked = [v for v in videos if v.empty is not None and np.asarray(v.empty).any()]
    if not marked:
        return list(videos)
    if protocol.empty_frame_fill == "none":
        raise ValueError(f"video {marked[0].name!r}: has frames marked empty, but the protocol fills none")
    for video in videos:  # sizes first: the fill reads every video's masks
        size = np.asarray(video.scores).size
        if video.empty is not None and np.asarray(video.empty).size != size:
            raise ValueError(f"video {video.name!r}: empty-frame mask has {np.asarray(video.empty).size} entries for {size} frames")
    found = [np.asarray(v.scores, np.float64).ravel()[_counted_frames(v, protocol) & ~_empty_of(v)] for v in videos]
    found = np.concatenate(found) if found else np.empty(0)
    found = found[np.isfinite(found)]
    if found.size == 0:
        raise ValueError(f"no frame of the {len(videos)} videos holds a score: nothing to fill their empty frames with")
    fill = float(found.min())
    return [dataclasses.replace(v, scores=np.where(_empty_of(v), fill, np.asarray(v.scores, np.float64).ravel()), empty=None)
            for v in videos]


def _empty_of(video: VideoScores) -> np.ndarray:
    size = np.asarray(video.scores).size
    return np.zeros(size, bool) if video.empty is None else np.asarray(video.empty, bool).ravel()


def _scored_frames(video: VideoScores, protocol: Protocol) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels and post-processed scores of the video's scored frames, and its unscored count."""
    labels = np.asarray(video.labels).ravel()
    scores = np.asarray(video.scores, dtype=np.float64).ravel()
    if labels.size != scores.size:
        raise ValueError(
            f"video {video.name!r}: {labels.size} labels but {scores.size} scores"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"video {video.name!r}: labels must be 0 (normal) or 1 (abnormal), "
            f"found values {np.unique(labels).tolist()}"
        )
    scored = _counted_frames(video, protocol)
    kept = scores[scored]
    bad = ~np.isfinite(kept)
    if bad.any():
        frame = int(np.flatnonzero(scored)[np.argmax(bad)])
        raise ValueError(
            f"video {video.name!r}: {int(bad.sum())} scored frames have NaN or inf scores "
            f"(first at frame {frame})"
        )
    return labels[scored].astype(np.int8), postprocess(kept, protocol), int((~scored).sum())


def evaluate(videos: Sequence[VideoScores], protocol: Protocol) -> dict:
    """Frame-level micro and macro ROC AUC and pooled average precision.

    Unscored frames (``scored`` False, and the first ``protocol.skipped_start_frames`` of every
    video) are excluded before anything else: they take no part in normalisation, are not fed
    to smoothing (which runs over the scored frames in order) and are not counted in AUC or AP;
    their scores may be anything, NaN included.

    ``auc_micro``: ROC AUC over the pooled scored frames of all videos, each video post-processed
    on its own first. ``auc_macro``: mean of per-video AUCs over the videos that have both
    classes among their scored frames; NaN when none has, ``n_macro_skipped`` counts the others.
    ``ap``: average precision over the pooled frames. ``far`` (where the protocol sets a
    ``false_alarm_threshold``): the share of the normal videos' scored frames at or above it.

    Each video is first extended to a multiple of ``protocol.pad_to_multiple_of`` frames (its last
    frame repeated, the label as ``protocol.padded_frame_label`` says), where the protocol asks for it. Frames marked ``empty`` then take the protocol's fill (:func:`fill_empty_frames`), which
    depends on every video given: pass the whole split.

    Raises ValueError, naming the video, for label/score length mismatch, labels other than
    0/1, or NaN/inf among scored frames; and when the pooled labels hold one class only.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    if not videos:
        raise ValueError("no videos to evaluate")
    names = [video.name for video in videos]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"videos listed more than once: {duplicates}")
    videos = [padded_to_multiple(video, protocol.pad_to_multiple_of, protocol.padded_frame_label) for video in videos]
    videos = fill_empty_frames(videos, protocol)

    all_labels, all_scores, per_video_auc, normal_scores = [], [], [], []
    n_unscored = 0
    for video in videos:
        labels, scores, unscored = _scored_frames(video, protocol)
        all_labels.append(labels)
        all_scores.append(scores)
        n_unscored += unscored
        if np.unique(labels).size == 2:
            per_video_auc.append(roc_auc_score(labels, scores))
        if not np.asarray(video.labels).any():  # a normal video by all its frames, scored or not
            normal_scores.append(scores)

    pooled_labels = np.concatenate(all_labels)
    pooled_scores = np.concatenate(all_scores)
    classes = np.unique(pooled_labels)
    if classes.size < 2:
        raise ValueError(
            f"micro AUC undefined: the {pooled_labels.size} scored frames of {len(videos)} videos "
            f"have only label(s) {classes.tolist()}"
        )
    return {
        "auc_micro": float(roc_auc_score(pooled_labels, pooled_scores)),
        "auc_macro": float(np.mean(per_video_auc)) if per_video_auc else float("nan"),
        "ap": float(average_precision_score(pooled_labels, pooled_scores)),
        "n_videos": len(videos),
        "n_frames": int(pooled_labels.size),
        "n_frames_unscored": n_unscored,
        "n_macro_videos": len(per_video_auc),
        "n_macro_skipped": len(videos) - len(per_video_auc),
        "protocol": protocol.as_dict(),
        **_false_alarms(normal_scores, protocol),
        "roc": roc_points(pooled_labels, pooled_scores),
    }


def _false_alarms(normal_scores: list[np.ndarray], protocol: Protocol) -> dict:
    """AR-Net's FAR where the protocol asks for it: the share of the scored frames of normal videos
    (no abnormal frame, scored or not) whose post-processed score reaches the threshold; NaN without
    a normal video."""
    if protocol.false_alarm_threshold is None:
        return {}
    pooled = np.concatenate(normal_scores) if normal_scores else np.empty(0)
    far = float(np.mean(pooled >= protocol.false_alarm_threshold)) if pooled.size else float("nan")
    return {"far": far, "n_far_videos": len(normal_scores)}


def roc_points(labels: np.ndarray, scores: np.ndarray, n_points: int = 101) -> dict:
    """The pooled ROC curve on a fixed false-positive-rate grid, small enough to store with a number."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0.0, 1.0, n_points)
    return {"fpr": grid.round(4).tolist(), "tpr": np.interp(grid, fpr, tpr).round(4).tolist()}
