"""Score every frame of one video with a method and write the scores to HDF5.

Output: ``scores`` (float32 per frame, higher = more abnormal) and ``scored`` (bool, False
for frames the method leaves unscored), with the method, its parameters, and the path and
sha256 of both the checkpoint and the input (frames, features or poses file) in the attributes,
so a score file names exactly which bytes it was computed from.

A method that carries state from one video of a split to the next (``Method.carries_state``)
starts from the state stored in the previous video's score file (``--previous``), which must come
from the same checkpoint, method and parameters; the state it ends with is stored under
``state/`` for the next one, and the file records which file its own start came from.

Run by hand: ``python -m pipelines.score METHOD INPUT.h5 OUT.h5 [--checkpoint C] [--params-json J] [--runtime-json R]
[--previous P.h5]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from models import get_method
from models.base import VideoScore
from pipelines import h5attrs
from pipelines.atomic import atomic_path
from pipelines.provenance import sha256_file, versions

STATE = "state"  # group of the arrays a chained method carries to the split's next video


def write_scores(out: Path, result: VideoScore, attrs: dict) -> None:
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("scores", data=result.scores.astype(np.float32))
            handle.create_dataset("scored", data=result.scored.astype(bool))
            if result.empty is not None:
                handle.create_dataset("empty", data=result.empty.astype(bool))
            for name, array in (result.state or {}).items():
                handle.create_dataset(f"{STATE}/{name}", data=array)
            h5attrs.write(handle.attrs, attrs)


def read_state(path: Path, method: str, params: dict, checkpoint_sha256: str) -> dict[str, np.ndarray]:
    """The state a chained method left after the previous video, refused unless that file was
    scored by the same method, parameters and checkpoint (another run's memory would silently
    change every score that follows)."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = h5attrs.read(handle.attrs)
            state = {name: data[()] for name, data in handle[STATE].items()} if STATE in handle else None
    except (OSError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable scores file ({err}); delete it and rerun its score job") from None
    if state is None:
        raise ValueError(f"{path}: holds no {method} state to continue from (scored with test state not carried?); "
                         "rerun its score job")
    made = (attrs.get("method"), attrs.get("params"), attrs.get("checkpoint_sha256"))
    if made != (method, params, checkpoint_sha256):
        raise ValueError(f"{path}: scored by another method, parameters or checkpoint than this video's "
                         f"({made[0]}, checkpoint sha256 {str(made[2])[:12]}); rerun the split's score jobs in order")
    return state


def read_scores(path: Path) -> VideoScore:
    """One video's scores, checked: a damaged or foreign file is named, not met deep in h5py."""
    try:
        with h5py.File(path, "r") as handle:
            scores, scored = handle["scores"][()], handle["scored"][()]
            empty = handle["empty"][()] if "empty" in handle else None
    except (OSError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable scores file ({err}); delete it and rerun its score job") from None
    if scores.ndim != 1 or scored.shape != scores.shape or scored.dtype != bool:
        raise ValueError(f"{path}: scores of shape {scores.shape} and a scored mask of shape {scored.shape} "
                         f"({scored.dtype}); expected two per-frame vectors of one length")
    if empty is not None and (empty.shape != scores.shape or empty.dtype != bool):
        raise ValueError(f"{path}: an empty-frame mask of shape {empty.shape} ({empty.dtype}) for {scores.shape[0]} frames")
    non_finite = int((~np.isfinite(scores[scored])).sum())
    if non_finite:
        raise ValueError(f"{path}: {non_finite} scored frames have non-finite scores")
    return VideoScore(scores, scored, empty)


def scored_with(score_files: list[Path]) -> list[dict[str, str]]:
    """The distinct code revisions (with the checkpoint's sha256, where one was used) that the score
    files record they were made with; "not recorded" for a file written without them."""
    found = set()
    for path in score_files:
        try:
            with h5py.File(path, "r") as handle:
                attrs = h5attrs.read(handle.attrs)
        except OSError as err:
            raise ValueError(f"{path}: not a readable scores file ({err}); delete it and rerun its score job") from None
        made = {"vadbench_revision": (attrs.get("versions") or {}).get("vadbench_revision", "not recorded")}
        if attrs.get("checkpoint_sha256", "none") != "none":
            made["checkpoint_sha256"] = attrs["checkpoint_sha256"]
        found.add(tuple(made.items()))
    return [dict(made) for made in sorted(found)]


def scores_by_video(score_files: list[Path]) -> dict[str, Path]:
    """Score files by video name (the file's stem); two files of one name (another seed's or
    method's folder given too) are refused rather than one silently replacing the other."""
    by_video: dict[str, list[Path]] = {}
    for path in score_files:
        by_video.setdefault(Path(path).stem, []).append(Path(path))
    repeated = {name: paths for name, paths in by_video.items() if len(paths) > 1}
    if repeated:
        name, paths = sorted(repeated.items())[0]
        raise ValueError(f"{len(repeated)} videos have more than one score file, e.g. {name}: "
                         f"{', '.join(map(str, paths))}")
    return {name: paths[0] for name, paths in by_video.items()}


def score(method_name: str, video: Path, out: Path, params: dict, seed: int, checkpoint: Path | None,
          previous: Path | None = None, runtime: dict | None = None) -> VideoScore:
    """Score one video and write its file. ``runtime`` holds the method's runtime keys
    (``Method.runtime_params``, e.g. a scoring batch): the method gets them, the file records ``params``
    alone, since they change no score."""
    method = get_method(method_name, params | (runtime or {}), seed)
    checkpoint_sha256 = sha256_file(checkpoint) if checkpoint else "none"
    provenance = {}
    if method.carries_state():
        state = read_state(previous, method_name, params, checkpoint_sha256) if previous else None
        result = method.score_video(checkpoint, video, state)
        provenance = {"state_from": str(previous) if previous else "none (the first video of its split)",
                      "state_from_sha256": sha256_file(previous) if previous else "none"}
    elif previous:
        raise ValueError(f"{method_name} with these parameters scores each video on its own; "
                         f"--previous {previous} has no use")
    else:
        result = method.score_video(checkpoint, video)
    if not np.isfinite(result.scores[result.scored]).all():
        raise ValueError(f"{method_name} produced non-finite scores for {video}")
    write_scores(
        out,
        result,
        {
            "method": method_name,
            "params": params,
            "seed": seed,
            "input": str(video),
            "input_sha256": sha256_file(video),
            "checkpoint": str(checkpoint) if checkpoint else "none",
            "checkpoint_sha256": checkpoint_sha256,
            **provenance,
            "versions": versions(),
        },
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("input", type=Path, help="the video's frames (or features, poses) file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--params-json", default="{}")
    parser.add_argument("--runtime-json", default="{}", help="the method's runtime keys (Method.runtime_params)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--previous", type=Path,
                        help="score file of the video before this one in its split, for a method that carries state")
    args = parser.parse_args(argv)
    result = score(args.method, args.input, args.out, json.loads(args.params_json), args.seed, args.checkpoint,
                   args.previous, json.loads(args.runtime_json))
    print(f"{args.out}: {int(result.scored.sum())} of {result.scores.size} frames scored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
