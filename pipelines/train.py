"""Run one training stage of a method and write its checkpoint.

Run by hand: ``python -m pipelines.train METHOD STAGE OUT.pt --labels LABELS.h5 INPUT.h5 ...
[--previous PREV.pt] [--params-json J] [--runtime-json R] [--seed S] [--eval-every N --eval-labels L.h5 --eval-inputs F ...]``.
``--labels`` gives the video-level labels of a weak training split; one-class stages train on
normal videos only. ``--eval-every`` makes the weakly-supervised methods score the evaluation split
every N iterations and keep the curve in the checkpoint (the papers' best-on-test number).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models import EvaluationSet, TrainInputs, get_method
from pipelines.labels import read_labels
from pipelines.stage_log import kept_stage_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("stage")
    parser.add_argument("out", type=Path, help="checkpoint to write")
    parser.add_argument("inputs", type=Path, nargs="+", help="one input file per training video")
    parser.add_argument("--labels", type=Path, help="canonical labels file with the videos' labels")
    parser.add_argument("--previous", type=Path, help="checkpoint of the previous stage")
    parser.add_argument("--params-json", default="{}")
    parser.add_argument("--runtime-json", default="{}",
                        help="the method's runtime keys (Method.runtime_params: resume-point intervals and the like)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="iterations between AUCs on the evaluation split (0: none); needs the two below")
    parser.add_argument("--eval-labels", type=Path, help="the evaluation split's labels file")
    parser.add_argument("--eval-inputs", type=Path, nargs="+", default=[], help="one input file per evaluation video")
    args = parser.parse_args(argv)
    video_labels = read_labels(args.labels)[1] if args.labels else {p.stem: 0 for p in args.inputs}
    evaluation = None
    if args.eval_every > 0:
        if not args.eval_labels or not args.eval_inputs:
            parser.error("--eval-every needs --eval-labels and --eval-inputs")
        evaluation = EvaluationSet(list(args.eval_inputs), args.eval_labels, args.eval_every)
    method = get_method(args.method, json.loads(args.params_json) | json.loads(args.runtime_json), args.seed)
    with kept_stage_log(args.out):
        method.train_stage(args.stage, TrainInputs(list(args.inputs), video_labels, evaluation), args.previous, args.out)
        print(f"{args.out}: {args.method} stage {args.stage} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
