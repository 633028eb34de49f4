"""Per-video score timelines with the abnormal frames shaded, for a few test videos.

Scores are drawn as the method's paper protocol post-processes them, so the curve is the one
the AUC was computed on. Videos with anomalies come first.

Run by hand: ``python -m pipelines.timeline METHOD LABELS.h5 OUT.png SCORES.h5 ... [--videos 4]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.atomic import atomic_path  # noqa: E402
from pipelines.evaluate import split_scores  # noqa: E402
from pipelines.metrics import fill_empty_frames, postprocess  # noqa: E402
from pipelines.provenance import versions  # noqa: E402


def abnormal_runs(abnormal: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of each run of abnormal frames; each is shaded a whole frame wide, so a
    one-frame event shows too."""
    edges = np.diff(np.concatenate([[0], abnormal.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def plot_timelines(method: str, params: dict, labels_file: Path, score_files: list[Path], out: Path, n_videos: int) -> None:
    # every video of the split, checked as the evaluation checks them: an empty frame's fill (pose
    # methods) comes from all of them, and a curve is drawn only where the AUC could be computed
    protocol, videos = split_scores(method, params, labels_file, score_files)
    masks = {video.name: video.scored for video in videos}
    labels = {video.name: video.labels for video in videos}
    filled = {video.name: video.scores for video in fill_empty_frames(videos, protocol)}
    chosen = sorted(labels, key=lambda v: (-int(labels[v].any()), v))[:n_videos]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 1.8 * len(chosen)), squeeze=False)
    for ax, video in zip(axes[:, 0], chosen):
        scored = masks[video]
        ax.plot(np.flatnonzero(scored), postprocess(filled[video][scored], protocol), linewidth=1)
        abnormal = labels[video].astype(bool)
        for first, last in abnormal_runs(abnormal):
            ax.axvspan(first - 0.5, last + 0.5, color="red", alpha=0.2, linewidth=0)
        ax.set_ylabel(video, fontsize=8)
        ax.set_xlim(-0.5, abnormal.size - 0.5)
    axes[-1, 0].set_xlabel("frame (red: abnormal)")
    fig.suptitle(f"{method}: anomaly score over time", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        # PNG text: what the plot shows and the code that drew it, as the report's other files record.
        made = versions()
        fig.savefig(tmp, format="png", dpi=100, metadata={
            "Description": f"{method} scores of {', '.join(chosen)} ({labels_file}); params {json.dumps(params, sort_keys=True)}",
            "Source": f"vadbench {made.get('vadbench_revision')} (python {made.get('python')}, torch {made.get('torch')})",
        })
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("scores", type=Path, nargs="+")
    parser.add_argument("--params-json", default="{}")
    parser.add_argument("--videos", type=int, default=4)
    args = parser.parse_args(argv)
    plot_timelines(args.method, json.loads(args.params_json), args.labels, args.scores, args.out, args.videos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
