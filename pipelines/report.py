"""Report tables and plots from the evaluation records.

``auc_table.csv`` (and the same as Markdown and HTML) has one row per method x dataset x split:
our micro and macro AUC and AP in percent beside the paper's number and reference, the
protocol in words, the number of videos and frames, and the config hash. ``roc_<dataset>.png``
overlays the pooled ROC curves of every method on a dataset.

Run by hand: ``python -m pipelines.report OUT_DIR PAPERS.csv EVAL.json ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines.atomic import atomic_path, write_text  # noqa: E402

COLUMNS = [
    "dataset", "method", "split", "auc_micro", "auc_macro", "ap",
    "paper_auc", "paper_ref", "protocol", "n_videos", "n_frames", "config_hash",
]


def describe_protocol(record: dict) -> str:
    """One line saying how the numbers of a record were computed."""
    p = record["protocol"]
    sigmas = ",".join(f"{s:g}" for s in p["smoothing_sigmas"]) or "none"
    parts = [
        f"AUC micro-pooled over frames; macro skips {record['n_macro_skipped']} one-class videos",
        f"normalisation {p['normalisation']}",
        f"gaussian sigmas {sigmas}",
        f"first {p['skipped_start_frames']} frames of each video unscored",
        f"labels {p['label_convention']}",
    ]
    if p.get("snippet_length"):
        parts.append(f"snippet scores expanded x{p['snippet_length']}")
    return "; ".join(parts)


def build_table(records: list[dict], papers: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in records:
        rows.append({
            "dataset": r["dataset"], "method": r["method"], "split": r["split"],
            "auc_micro": round(100 * r["auc_micro"], 2), "auc_macro": round(100 * r["auc_macro"], 2),
            "ap": round(100 * r["ap"], 2), "protocol": describe_protocol(r),
            "n_videos": r["n_videos"], "n_frames": r["n_frames"], "config_hash": r["config_hash"],
        })
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("paper_auc", "paper_ref")])
    table = table.merge(papers, on=["method", "dataset", "split"], how="left")
    table["paper_ref"] = table["paper_ref"].fillna("")
    return table[COLUMNS].sort_values(["dataset", "split", "method"]).reset_index(drop=True)


def plot_roc(records: list[dict], dataset: str, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for r in sorted(records, key=lambda r: r["method"]):
        ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], label=f"{r['method']} ({r['split']}) {100 * r['auc_micro']:.1f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{dataset}: pooled frame ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, papers_csv: Path, eval_files: list[Path]) -> pd.DataFrame:
    records = [json.loads(Path(p).read_text()) for p in eval_files]
    table = build_table(records, pd.read_csv(papers_csv))
    write_text(out_dir / "auc_table.csv", table.to_csv(index=False))
    write_text(out_dir / "auc_table.md", table.to_markdown(index=False) + "\n")
    write_text(out_dir / "auc_table.html", table.to_html(index=False, na_rep="", border=0))
    for dataset in sorted({r["dataset"] for r in records}):
        plot_roc([r for r in records if r["dataset"] == dataset], dataset, out_dir / f"roc_{dataset}.png")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("papers", type=Path, help="published numbers with their citations")
    parser.add_argument("evals", type=Path, nargs="+", help="evaluation records (JSON)")
    args = parser.parse_args(argv)
    table = write_report(args.out_dir, args.papers, args.evals)
    shown = table[["dataset", "method", "split", "auc_micro", "auc_macro", "ap", "paper_auc", "n_videos", "n_frames"]]
    print(shown.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
