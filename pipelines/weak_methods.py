"""What the glue of the weakly-supervised feature methods shares: training files, scores to frames, protocol.

Used by AR-Net (Wan et al., ICME 2020) and SSRL (Li et al., ECCV 2022): splitting a weak training split by
video label, checking that all its feature files are of one kind, RTFM's 32-segment training items kept
in a cache file (Tian et al., ICCV 2021), turning one video's snippet scores into frame scores by the
features' own snippet rule (never an upstream ground-truth array), and the evaluation protocol, whose label
convention also names the features the numbers were obtained on.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from models.base import EvaluationSet, TrainInputs, VideoScore
from pipelines.atomic import atomic_path
from pipelines.datasets import get_adapter
from pipelines.features.store import FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY, FeatureReader, FeatureSource
from pipelines.labels import read_labels
from pipelines.metrics import Protocol, VideoScores, evaluate, expand_snippets, with_dataset_note
from pipelines.weak_protocol import FRAMES_PER_SNIPPET, TRAIN_SEGMENTS, snippet_count

_RULE_OF_TAIL = {"loop_pad": "pad_last", "drop": "truncate"}


def split_by_label(inputs: TrainInputs) -> tuple[list[Path], list[Path]]:
    """(normal files, abnormal files) of a weak training split, each in input order."""
    normal, abnormal = [], []
    for path in inputs.files:
        video = Path(path).stem
        if video not in inputs.video_labels:
            raise ValueError(f"{path}: video {video} has no video label in the training labels")
        (abnormal if inputs.video_labels[video] else normal).append(Path(path))
    if not normal or not abnormal:
        raise ValueError(f"weak training needs normal and abnormal videos; found {len(normal)} normal, "
                         f"{len(abnormal)} abnormal")
    return normal, abnormal


def training_features(files: Sequence[Path], grids: Sequence[tuple[int, int]] = ()) -> dict[str, Any]:
    """Check that a split's feature files are of one feature set and shape (with ``grids``); describe them."""
    seen: dict[tuple, list[str]] = {}
    sources = set()
    for path in files:
        with FeatureReader(path) as reader:
            missing = [grid for grid in grids if grid not in reader.grids]
            if missing:
                raise ValueError(f"{path}: no patch features for grids {missing} (it has {reader.grids}); "
                                 f"published clip features carry none: extract them or give published patch files")
            key = (reader.attrs["feature_set"], reader.n_views, reader.feature_dim)
            seen.setdefault(key, []).append(Path(path).stem)
            sources.add(FeatureSource.from_attrs(reader.attrs))
    if len(seen) != 1:
        kinds = "; ".join(f"{k[0]} (views {k[1]}, dim {k[2]}) for {v[:3]}" for k, v in seen.items())
        raise ValueError(f"training features are of more than one kind: {kinds}")
    (feature_set, views, dim), = seen
    return {
        "feature_set": feature_set,
        "n_views": views,
        "feature_dim": dim,
        "sources": sorted({f"{s.origin}: " + ", ".join(f"{n} {w}" for n, w in s.backbones) for s in sources}),
    }


def divided_segments(reader: FeatureReader, grids: Sequence[tuple[int, int]] = (),
                     n_segments: int = TRAIN_SEGMENTS) -> np.ndarray:
    """One video's training item (views + sum P, n_segments, D): ``weak_protocol.training_segments`` of its
    clip and patch features, read one segment's snippets at a time so memory does not grow with T."""
    n = reader.n_snippets
    if n == 0:
        raise ValueError(f"{reader.path}: no snippets to divide")
    bounds = np.linspace(0, n, n_segments + 1).astype(int)
    channels = reader.n_views + sum(rows * cols for rows, cols in grids)
    out = np.empty((channels, n_segments, reader.feature_dim), np.float32)
    for index in range(n_segments):
        # An empty range (only when T < n_segments) takes the single snippet at its start.
        start, stop = bounds[index], max(bounds[index + 1], bounds[index] + 1)
        parts = [reader.features(start, stop)] + [reader.patches(grid, start, stop) for grid in grids]
        out[:, index] = np.concatenate(parts, axis=1).mean(axis=0)
    return out


class SegmentCache:
    """The 32-segment training items of a list of videos, divided once and kept in one HDF5 file.

    Rebuilt (atomically) when the file is missing or was made from other files (paths, sizes,
    modification times) or grids; a training step
    then reads only the rows of its batch.
    """

    def __init__(self, path: Path, files: Sequence[Path], grids: Sequence[tuple[int, int]] = ()):
        self.path = Path(path)
        # Each file's size and modification time too: features made again at the same paths (other
        # weights, a stage interrupted meanwhile) must not be read from the old divisions.
        made = [[str(f), Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files]
        key = json.dumps({"files": made, "grids": [list(g) for g in grids]})
        if not self._matches(key):
            self._build(files, grids, key)
        self._file = h5py.File(self.path, "r")
        self._items = self._file["segments"]

    def _matches(self, key: str) -> bool:
        if not self.path.is_file():
            return False
        with h5py.File(self.path, "r") as handle:
            return handle.attrs.get("key") == key

    def _build(self, files: Sequence[Path], grids: Sequence[tuple[int, int]], key: str) -> None:
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as handle:
            items = None
            for index, path in enumerate(files):
                with FeatureReader(path) as reader:
                    item = divided_segments(reader, grids)
                if items is None:
                    items = handle.create_dataset("segments", (len(files), *item.shape), np.float32,
                                                  chunks=(1, *item.shape))
                items[index] = item
            handle.attrs["key"] = key

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        """Items of the given videos, in the given order: (len(indices), channels, n_segments, D)."""
        return np.stack([self._items[int(i)] for i in indices])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SegmentCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_scores(snippet_scores: np.ndarray, n_frames: int, tail: str) -> VideoScore:
    """Frame scores of one video from its snippet scores, each repeated over its 16 frames.

    Loop-padded features (tail "loop_pad", T = ceil(n/16)) score every frame, the last snippet its partial
    window; the protocol then counts 16T frames, the last score repeated (see :func:`protocol`). Features
    without the partial tail (tail "drop", T = floor(n/16), AR-Net) leave the last
    n - 16T frames unscored, as AR-Net's evaluation cuts the ground truth to 16T frames.
    """
    scores = np.asarray(snippet_scores, dtype=np.float32).reshape(-1)
    expected = snippet_count(n_frames, _RULE_OF_TAIL[tail])
    if scores.size != expected:
        raise ValueError(f"{scores.size} snippet scores for {n_frames} frames, but tail {tail!r} gives {expected}")
    if tail == "loop_pad":
        return VideoScore(expand_snippets(scores, n_frames).astype(np.float32), np.ones(n_frames, bool))
    covered = FRAMES_PER_SNIPPET * scores.size
    frames = np.zeros(n_frames, np.float32)
    scored = np.zeros(n_frames, bool)
    if covered:
        frames[:covered] = expand_snippets(scores, covered)
        scored[:covered] = True
    return VideoScore(frames, scored)


def padding_of(tail: str | None, label_convention: str) -> dict[str, Any]:
    """The Protocol's frame padding for features of ``tail``: whole snippets for loop-padded ones, the
    added frames labelled as the dataset's adapter says (``padded_frame_label``); the dataset is the
    label convention's prefix (every adapter's convention starts ``<dataset>:``)."""
    if tail != "loop_pad":
        return {"pad_to_multiple_of": 0, "padded_frame_label": "last"}
    dataset = get_adapter(label_convention.partition(":")[0], {})
    return {"pad_to_multiple_of": FRAMES_PER_SNIPPET, "padded_frame_label": dataset.padded_frame_label}


def protocol(params: dict[str, Any], label_convention: str) -> Protocol:
    """Pooled frame AUC of snippet scores expanded x16, labelled with the features they were obtained on.

    With loop-padded features (the dataset's tail in ``params[FEATURE_TAIL_KEY]``) each video counts
    16 * ceil(n/16) frames, its last frame's score repeated and the added frames labelled as the
    dataset's ground-truth file of RTFM and SSRL does: its last label (gt-sh.npy) or normal (gt-ucf.npy).
    """
    described = with_dataset_note(label_convention, params, FEATURE_SOURCE_KEY,
                                  "features not recorded (run outside the workflow)")
    tail = params.get(FEATURE_TAIL_KEY, {}).get(label_convention.partition(":")[0])
    return Protocol(pooling="micro", label_convention=described, snippet_length=FRAMES_PER_SNIPPET,
                    **padding_of(tail, label_convention))


TEST_CURVE_NOTE = "test_curve"
BEST_WEIGHTS_NOTE = "best_on_test_weights"


class EvaluationCurve:
    """The evaluation split's pooled AUC every ``every`` iterations of a training stage.

    The papers of these methods keep the checkpoint with the best test AUC (their repositories
    evaluate on the test set as they train; there is no validation split). The pipeline's rows are
    the last iteration's; this curve gives the best-on-test number beside it, labelled as such. It
    lives in the stage's notes, so a resumed job keeps the points from before the restart.
    """

    def __init__(self, evaluation: EvaluationSet | None, protocol_of, notes: dict[str, Any], keep_best: bool = False,
                 after: int = 0):
        self.evaluation = evaluation
        self.after = after  # no evaluation up to this iteration (SSRL's reference starts after 50)
        self.notes = notes
        self.keep_best = keep_best  # also keep the weights of the best point (BEST_WEIGHTS_NOTE)
        if evaluation is None:
            return
        self.labels, _, attrs = read_labels(evaluation.labels)
        self.files = {Path(p).stem: Path(p) for p in evaluation.files}
        missing = sorted(set(self.labels) - set(self.files))
        if missing:
            raise ValueError(f"{evaluation.labels}: no evaluation input for videos {missing[:5]}")
        # The frames counted follow the evaluation features' tail, as the rows' protocol does from the
        # workflow's note (a training job is not handed that evaluation-only note).
        tails = set()
        for path in self.files.values():
            with FeatureReader(path) as reader:
                tails.add(reader.tail)
        if len(tails) > 1:
            raise ValueError(f"{evaluation.labels}: the evaluation features mix snippet tails {sorted(tails)}")
        self.protocol = dataclasses.replace(protocol_of(attrs["label_convention"]),
                                            **padding_of(next(iter(tails), None), attrs["label_convention"]))
        notes.setdefault(TEST_CURVE_NOTE, {"every": evaluation.every, "iterations": [], "auc_micro": [],
                                           "pad_to_multiple_of": self.protocol.pad_to_multiple_of,
                                           "padded_frame_label": self.protocol.padded_frame_label})

    def due(self, iteration: int) -> bool:
        return self.evaluation is not None and iteration > self.after and iteration % self.evaluation.every == 0

    @staticmethod
    def first_due(every: int, after: int) -> int:
        """The first iteration ``due`` is true at, for an evaluation every ``every`` iterations after ``after``."""
        return (after // every + 1) * every

    def record(self, iteration: int, model, score_file) -> float:
        """Score every evaluation video with ``score_file(path) -> VideoScore`` (``model`` in evaluation
        mode meanwhile, its training mode put back after) and log the pooled AUC; with ``keep_best``, keep
        a copy of ``model``'s weights at the best point so far."""
        training = model.training
        model.eval()
        videos = []
        for name in sorted(self.labels):
            result = score_file(self.files[name])
            videos.append(VideoScores(name, self.labels[name], result.scores, result.scored))
        model.train(training)
        auc = float(evaluate(videos, self.protocol)["auc_micro"])
        curve = self.notes[TEST_CURVE_NOTE]
        if self.keep_best and (not curve["auc_micro"] or auc > max(curve["auc_micro"])):
            self.notes[BEST_WEIGHTS_NOTE] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        curve["iterations"].append(iteration)
        curve["auc_micro"].append(auc)
        print(f"iteration {iteration}: test AUC {100 * auc:.2f} (best so far {100 * max(curve['auc_micro']):.2f})",
              flush=True)
        return auc


def best_on_test(notes: dict[str, Any]) -> dict[str, Any] | None:
    """The best point of a stage's test curve ({auc_micro, iteration, every, pad_to_multiple_of and
    padded_frame_label: how its frames were counted, None in a curve recorded before that was noted;
    a padded curve recorded before its label was noted repeated the last one}), or None without one."""
    curve = (notes or {}).get(TEST_CURVE_NOTE)
    if not curve or not curve["auc_micro"]:
        return None
    index = int(np.argmax(curve["auc_micro"]))
    return {"auc_micro": curve["auc_micro"][index], "iteration": curve["iterations"][index], "every": curve["every"],
            "pad_to_multiple_of": curve.get("pad_to_multiple_of"),
            "padded_frame_label": curve.get("padded_frame_label", "last")}
