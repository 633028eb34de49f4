"""Evaluate one method on one dataset split: frame-level AUC (micro, macro) and AP, with protocol.

Reads the split's canonical labels and the per-video score files, applies the method's paper
protocol (normalisation, smoothing, unscored frames) and writes one JSON record: the numbers,
the training seed, the protocol that produced them (a number that does not exist, e.g. a macro AUC
without a two-class video, as null), the pooled ROC curve, the config that can change
them with its hash, the versions, and the code revisions (and checkpoints) the score files were made with;
and, for a training stage that followed this split (``--checkpoint``), its best AUC during training.

Run by hand: ``python -m pipelines.evaluate METHOD DATASET SPLIT LABELS.h5 OUT.json SCORES.h5 ... --run-config JSON``,
JSON the config values that can change the row, recorded with their hash (``snakemake -np --forcerun
evaluate OUT.json`` prints the workflow's command with them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models import get_method
from pipelines import json_text
from pipelines.atomic import write_text
from pipelines.labels import read_labels
from pipelines.metrics import Protocol, VideoScores, evaluate
from pipelines.provenance import config_hash, versions
from pipelines.score import read_scores, scored_with, scores_by_video
from pipelines.training import load_checkpoint
from pipelines.weak_methods import best_on_test


def split_scores(method: str, params: dict, labels_file: Path, score_files: list[Path]) -> tuple[Protocol, list[VideoScores]]:
    """The method's paper protocol and every labelled video's labels and scores, in name order.

    Every labelled video must have exactly one score file, and no score file may lack labels; a
    video whose score count differs from its label count is named with both counts."""
    labels, _, attrs = read_labels(labels_file)
    by_video = scores_by_video(score_files)
    missing = sorted(set(labels) - set(by_video))
    extra = sorted(set(by_video) - set(labels))
    if missing or extra:
        raise ValueError(f"{labels_file}: score files missing for {missing[:5]}, unlabelled scores for {extra[:5]}")
    protocol = get_method(method, params).protocol(attrs["label_convention"])
    videos = []
    for name in sorted(labels):
        result = read_scores(by_video[name])
        if result.scores.size != labels[name].size:
            raise ValueError(f"video {name!r}: {labels[name].size} labels in {labels_file} but "
                             f"{result.scores.size} scores in {by_video[name]}")
        videos.append(VideoScores(name, labels[name], result.scores, result.scored, result.empty))
    return protocol, videos


def evaluate_split(method: str, params: dict, labels_file: Path, score_files: list[Path]) -> dict:
    """Metrics of one method on one split (see ``split_scores`` for what the inputs must be)."""
    protocol, videos = split_scores(method, params, labels_file, score_files)
    return evaluate(videos, protocol)


def _frames_counted(counted: dict) -> str:
    """How a protocol, or a training-time test curve, counted each video's frames: two that count
    alike give one text."""
    pad = counted["pad_to_multiple_of"]
    if pad is None:
        return "counted frames before the count was recorded"
    if not pad:
        return "counted each video's own frames"
    label = "labelled normal" if counted.get("padded_frame_label") == "normal" else "labelled as its last frame"
    return f"counted each video to a multiple of {pad} frames, the added frames {label}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("dataset")
    parser.add_argument("split")
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("scores", type=Path, nargs="+")
    parser.add_argument("--params-json", default="{}")
    parser.add_argument("--run-config", required=True,
                        help="the config values that can change the row, as JSON: recorded with their hash")
    parser.add_argument("--seed", type=int, default=0, help="the training seed of the scores (recorded)")
    parser.add_argument("--checkpoint", type=Path,
                        help="final checkpoint of a stage that followed this split while training: its best test AUC is recorded")
    args = parser.parse_args(argv)
    result = evaluate_split(args.method, json.loads(args.params_json), args.labels, args.scores)
    record = {"method": args.method, "dataset": args.dataset, "split": args.split, "seed": args.seed, **result,
              "scored_with": scored_with(args.scores)}
    if args.checkpoint:
        best = best_on_test(load_checkpoint(args.checkpoint, args.method, mmap=True).get("notes"))
        if best and _frames_counted(best) != _frames_counted(result["protocol"]):
            raise SystemExit(
                f"error: {args.checkpoint}: its training-time test curve {_frames_counted(best)}, "
                f"this row {_frames_counted(result['protocol'])}: retrain the stage "
                "(snakemake --forcerun train_stage) so that its best-on-test number compares with the row")
        record["best_on_test"] = best
    run_config = json.loads(args.run_config)
    record |= {"config_hash": config_hash(run_config), "config": run_config, "versions": versions()}
    write_text(args.out, json_text.dumps(record, indent=1))
    print(f"{args.method} (seed {args.seed}) on {args.dataset}/{args.split}: micro AUC {result['auc_micro']:.4f}, macro {result['auc_macro']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
