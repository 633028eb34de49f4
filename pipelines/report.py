"""Report tables and plots from the evaluation records.

``auc_table.csv`` (and the same as Markdown and HTML) has one row per method x dataset x split:
our micro and macro AUC and AP in percent, each the mean over the training seeds with its
sample standard deviation (empty for one seed), the best micro AUC seen on the evaluation split
during training where the method followed it (the papers' test-set selection; empty otherwise),
beside the paper's number and reference (the number withheld, saying why, where the row's labels or
smoothing differ from the paper's), the
protocol in words, the number of videos and frames, the seeds and the config hash (of everything
but the seed). ``auc_by_seed.csv`` has each seed's numbers. ``roc_<dataset>.png`` overlays the
pooled ROC curves of every method on a dataset: the mean true-positive rate over the seeds at each
false-positive rate (vertical averaging), shaded between the lowest and highest seed.

Run by hand: ``python -m pipelines.report OUT_DIR PAPERS.csv EVAL.json ...``.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines import json_text  # noqa: E402
from pipelines.atomic import atomic_path, write_text  # noqa: E402
from pipelines.provenance import config_hash, versions  # noqa: E402

COLUMNS = [
    "dataset", "method", "split", "auc_micro", "auc_micro_std", "auc_macro", "auc_macro_std", "ap", "ap_std",
    "far", "auc_micro_best_on_test", "paper_auc", "paper_far", "paper_ref", "protocol", "n_videos", "n_frames", "seeds", "config_hash",
]
# The best pooled AUC a training stage saw on the evaluation split while it trained (test-set model
# selection, what the weakly-supervised papers report), where the stage followed one; never a row's
# own number, which is the last iteration's.
BEST_ON_TEST = "auc_micro_best_on_test"
METRICS = ("auc_micro", "auc_macro", "ap")
# Fields that every seed of one row must share: the seeds may differ in their numbers only.
SHARED = ("n_videos", "n_frames", "n_macro_skipped", "protocol", "config_hash")
SEED_COLUMNS = ["dataset", "method", "split", "seed", *METRICS, "far", BEST_ON_TEST, "best_on_test_iteration", "n_videos",
                "n_frames", "config_hash"]
RUN_KEY = ["dataset", "method", "split"]


def describe_sigmas(sigmas) -> str:
    """Gaussian smoothing passes in words: "gaussian sigmas 1,2,3", or "no smoothing"."""
    return "gaussian sigmas " + ",".join(f"{s:g}" for s in sigmas) if len(sigmas) else "no smoothing"


def describe_protocol(record: dict, notes: tuple[str, ...] = ()) -> str:
    """One line saying how the numbers of a record were computed, with ``notes`` about its row."""
    p = record["protocol"]
    parts = [
        f"AUC micro-pooled over frames; macro skips {record['n_macro_skipped']} one-class videos",
        f"normalisation {p['normalisation']}",
        describe_sigmas(p["smoothing_sigmas"]),
        f"first {p['skipped_start_frames']} frames of each video unscored",
    ]
    if p.get("snippet_length"):
        parts.append(f"snippet scores expanded x{p['snippet_length']}")
    if p.get("pad_to_multiple_of"):
        added = ("score repeated and the added frames labelled normal (as RTFM's and SSRL's gt-ucf.npy)"
                 if p.get("padded_frame_label") == "normal" else "score and label repeated (as RTFM's and SSRL's gt-sh.npy)")
        parts.append(f"each video counted to a multiple of {p['pad_to_multiple_of']} frames, its last frame's {added}")
    if p.get("empty_frame_fill", "none") == "most_normal_in_split":
        parts.append("frames without a person take the split's most normal score")
    if p.get("false_alarm_threshold") is not None:
        parts.append(f"far: share of the {record.get('n_far_videos', 0)} normal videos' frames scored >= "
                     f"{p['false_alarm_threshold']:g} (AR-Net's FAR)")
    best = record.get("best_on_test")
    if best and best.get("every"):
        parts.append(f"auc_micro_best_on_test: the best of test AUCs taken every {best['every']} iterations of "
                     "training (selected on the test split)")
    parts.extend(notes)
    # last: the labels' phrase may end with NOT COMPARABLE and its reasons, which nothing may follow
    parts.append(f"labels {p['label_convention']}")
    return "; ".join(parts)


def scoring_revisions(record: dict) -> list[str]:
    """The code revisions the record's score files were made with ("not recorded" in an older record)."""
    return sorted({made["vadbench_revision"] for made in record.get("scored_with", [{"vadbench_revision": "not recorded"}])})


def mixed_revisions_note(members: list[dict]) -> tuple[str, ...]:
    """A note for a row whose seeds' scores come from more than one code revision: its mean is over
    scores of different code, which the row must say."""
    revisions = {revision for r in members for revision in scoring_revisions(r)}
    if len(revisions) < 2:
        return ()
    seeds = "; ".join(f"seed {r['seed']} {', '.join(map(_short_revision, scoring_revisions(r)))}" for r in members)
    return (f"scores from {len(revisions)} code revisions: {seeds} (provenance.json: scored_with)",)


def best_on_test_percent(record: dict) -> float:
    best = record.get("best_on_test")
    return 100 * best["auc_micro"] if best else float("nan")


def seed_table(records: list[dict]) -> pd.DataFrame:
    """One row per record (method x dataset x split x seed), numbers in percent."""
    rows = [
        {**{k: r[k] for k in SEED_COLUMNS if k in r and k not in METRICS}, **{m: 100 * r[m] for m in METRICS},
         "far": 100 * r.get("far", float("nan")), BEST_ON_TEST: best_on_test_percent(r),
         "best_on_test_iteration": (r.get("best_on_test") or {}).get("iteration")}
        for r in records
    ]
    return pd.DataFrame(rows, columns=SEED_COLUMNS).sort_values(RUN_KEY + ["seed"]).reset_index(drop=True)


def group_seeds(records: list[dict]) -> dict[tuple, list[dict]]:
    """The records of each method x dataset x split, in seed order; the seeds of one row must be
    distinct runs of one configuration on the same frames."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: (*(r[k] for k in RUN_KEY), r["seed"])):
        groups.setdefault(tuple(r[k] for k in RUN_KEY), []).append(r)
    for (dataset, method, split), members in groups.items():
        first = members[0]
        for previous, other in zip(members, members[1:]):
            if other["seed"] == previous["seed"]:
                raise ValueError(f"two evaluation records of {method} on {dataset}/{split} with seed {other['seed']}")
            for field in SHARED:
                if other[field] != first[field]:
                    raise ValueError(
                        f"{method} on {dataset}/{split}: seeds {first['seed']} and {other['seed']} differ in "
                        f"{field} ({first[field]!r} against {other[field]!r})"
                    )
    return groups


def build_table(records: list[dict], papers: pd.DataFrame) -> pd.DataFrame:
    """One row per method x dataset x split: the mean over its seeds of each number (in percent), their
    sample standard deviation (empty for a single seed), and the seeds."""
    rows = []
    for key, members in group_seeds(records).items():
        first = members[0]
        row = dict(zip(RUN_KEY, key))
        for metric in METRICS:
            values = pd.Series([100 * r[metric] for r in members])
            row[metric] = round(values.mean(), 2)
            row[f"{metric}_std"] = round(values.std(ddof=1), 2) if len(values) > 1 else float("nan")
        far = pd.Series([100 * r.get("far", float("nan")) for r in members])
        row["far"] = round(far.mean(), 2) if far.notna().all() else float("nan")
        best = pd.Series([best_on_test_percent(r) for r in members])
        row[BEST_ON_TEST] = round(best.mean(), 2) if best.notna().all() else float("nan")
        row |= {
            "protocol": describe_protocol(first, mixed_revisions_note(members)), "n_videos": first["n_videos"],
            "n_frames": first["n_frames"],
            "seeds": " ".join(str(r["seed"]) for r in members), "config_hash": first["config_hash"],
            "row_labels": first["protocol"]["label_convention"], "row_sigmas": first["protocol"]["smoothing_sigmas"],
        }
        rows.append(row)
    own = [c for c in COLUMNS if c not in ("paper_auc", "paper_far", "paper_ref")] + ["row_labels", "row_sigmas"]
    table = pd.DataFrame(rows, columns=own).merge(papers, on=RUN_KEY, how="left")
    table["paper_ref"] = table["paper_ref"].fillna("")
    withheld_papers_of_other_protocols(table)
    return table[COLUMNS].sort_values(["dataset", "split", "method"]).reset_index(drop=True)


def withheld_papers_of_other_protocols(table: pd.DataFrame) -> None:
    """Blank the paper's number beside a row scored under another protocol than the paper's, as far as
    ``papers`` records it, saying why in its reference: another label convention (Avenue's masks
    against Liu et al.'s labels differ on 441 frames; ``label_convention`` is how the row's must begin)
    or other smoothing (STG-NF's 85.9 is smoothed six times, 81.9 without; ``smoothing_sigmas``, the
    sigmas in order or "none"), or another number of test videos (a ``test_subset`` run, or a split
    with videos left out; ``paper_n_videos``). An empty cell: any."""
    def column(name: str) -> pd.Series:
        values = table.get(name, pd.Series("", index=table.index)).astype(object)
        return values.where(values.notna(), "").astype(str).str.strip()

    labels, sigmas, videos = column("label_convention"), column("smoothing_sigmas"), column("paper_n_videos")
    for i in table.index[table["paper_auc"].notna()]:
        reasons = []
        if videos[i] and int(float(videos[i])) != int(table.at[i, "n_videos"]):
            reasons.append(f"the paper's test split has {int(float(videos[i]))} videos, this row's {table.at[i, 'n_videos']}")
        if labels[i] and not table.at[i, "row_labels"].startswith(labels[i]):
            reasons.append(f"the paper's labels are {labels[i]}, this row's {table.at[i, 'row_labels'].split(',')[0]}")
        if sigmas[i]:
            paper = [] if sigmas[i] == "none" else [float(s) for s in sigmas[i].split()]
            if paper != list(table.at[i, "row_sigmas"]):
                reasons.append(f"the paper's {describe_sigmas(paper)}, this row's {describe_sigmas(table.at[i, 'row_sigmas'])}")
        if reasons:
            table.at[i, "paper_ref"] += f"; its {table.at[i, 'paper_auc']:g} is not shown: " + "; ".join(reasons)
            table.loc[i, ["paper_auc", "paper_far"]] = float("nan")


def seed_roc(members: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The seeds' pooled ROC curves on the first seed's false-positive-rate grid: the grid, the mean
    true-positive rate over the seeds, and its lowest and highest seed at each point."""
    fpr = np.asarray(members[0]["roc"]["fpr"], dtype=float)
    tpr = np.stack([np.interp(fpr, r["roc"]["fpr"], r["roc"]["tpr"]) for r in members])
    return fpr, tpr.mean(axis=0), tpr.min(axis=0), tpr.max(axis=0)


def plot_roc(records: list[dict], dataset: str, out: Path, source: str = "") -> None:
    """Pooled ROC curves on one dataset: one per method and split, the mean over its seeds with the
    band between the lowest and highest seed."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for (_, method, split), members in group_seeds(records).items():
        fpr, mean, low, high = seed_roc(members)
        micro = pd.Series([100 * r["auc_micro"] for r in members])
        auc = f"{micro.mean():.1f}" if len(members) == 1 else f"{micro.mean():.1f} ± {micro.std(ddof=1):.1f}, {len(members)} seeds"
        (line,) = ax.plot(fpr, mean, label=f"{method} ({split}) {auc}")
        if len(members) > 1:
            ax.fill_between(fpr, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{dataset}: pooled frame ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Source": source} if source else None)
    plt.close(fig)


def read_record(path: Path) -> dict:
    """One evaluation record, refused by name when it is cut, lacks a field the report needs (the
    config and versions a row is regenerated from among them) or its config hash is not its config's."""
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable evaluation record ({err}); rerun its evaluate job") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not an evaluation record (a JSON {type(record).__name__}); rerun its evaluate job")
    missing = [k for k in (*RUN_KEY, "seed", *METRICS, *SHARED, "roc", "config", "versions") if k not in record]
    if not missing and "vadbench_revision" not in (record["versions"] if isinstance(record["versions"], dict) else {}):
        missing = ["versions.vadbench_revision"]
    if missing:
        raise ValueError(f"{path}: evaluation record without {', '.join(missing)}; rerun its evaluate job")
    for key in (*METRICS, "far"):  # written null where the number does not exist
        if key in record and record[key] is None:
            record[key] = float("nan")
    if config_hash(record["config"]) != record["config_hash"]:
        raise ValueError(f"{path}: config_hash {record['config_hash']} is not the hash of its config "
                         f"({config_hash(record['config'])}); rerun its evaluate job")
    return record


def provenance(records: list[dict], eval_files: list[Path]) -> dict:
    """What the tables and plots were made from: every evaluation record (its file, row and row
    hash, seed, code revision, and the revisions and checkpoints its scores were made with), the
    distinct package versions those records were computed with, and the report step's own."""
    made_with = sorted({json.dumps(r.get("versions", {}), sort_keys=True) for r in records})
    return {
        "evaluation_records": [
            {"file": str(path), **{k: record[k] for k in (*RUN_KEY, "seed", "config_hash")},
             "vadbench_revision": record.get("versions", {}).get("vadbench_revision", "not recorded"),
             "scored_with": record.get("scored_with", "not recorded")}
            for path, record in zip(eval_files, records)
        ],
        "versions_of_the_records": [json.loads(v) for v in made_with],
        "report": versions(),
    }


def provenance_line(record_provenance: dict) -> str:
    """One sentence under the Markdown and HTML tables: the code revisions and main versions."""
    records = record_provenance["evaluation_records"]
    revisions = sorted({_short_revision(r["vadbench_revision"]) for r in records})
    packages = "; ".join(", ".join(f"{k} {v[k]}" for k in ("python", "torch", "numpy", "scikit-learn") if k in v)
                         for v in record_provenance["versions_of_the_records"])
    noun = "record" if len(records) == 1 else "records"
    return (f"From {len(records)} evaluation {noun} of vadbench {', '.join(revisions)} ({packages}); "
            f"provenance.json lists each with its config hash.")


def _short_revision(revision: str) -> str:
    """A git revision as 12 hex digits, keeping a "+changes" mark."""
    commit, plus, rest = revision.partition("+")
    return commit[:12] + plus + rest if len(commit) == 40 else revision


def shown_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Each cell as the CSV writes it, empty where no number exists. Left to themselves, tabulate
    would print a config hash of digits (or digits around one "e") as a number and 73.0 as 73, and
    pandas' HTML would print every number of a column to its longest one's decimals (97.1 as 97.10,
    a precision the paper never gave)."""
    return table.astype(object).where(table.notna(), "").astype(str)


def markdown_table(table: pd.DataFrame) -> str:
    """The table as Markdown, each cell as the CSV writes it."""
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns]
    return shown_cells(table).to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def write_report(out_dir: Path, papers_csv: Path, eval_files: list[Path]) -> pd.DataFrame:
    records = [read_record(p) for p in eval_files]
    table = build_table(records, pd.read_csv(papers_csv))
    made_from = provenance(records, eval_files)
    footer = provenance_line(made_from)
    write_text(out_dir / "provenance.json", json_text.dumps(made_from, indent=1, sort_keys=True) + "\n")
    write_text(out_dir / "auc_by_seed.csv", seed_table(records).round(2).to_csv(index=False))
    write_text(out_dir / "auc_table.csv", table.to_csv(index=False))
    # Empty cells, not "nan", where a number does not exist (the std of one seed, a paper without the dataset).
    write_text(out_dir / "auc_table.md", markdown_table(table) + f"\n{footer}\n")
    write_text(out_dir / "auc_table.html",
               shown_cells(table).to_html(index=False, border=0) + f"\n<p>{html.escape(footer)}</p>\n")
    for dataset in sorted({r["dataset"] for r in records}):
        plot_roc([r for r in records if r["dataset"] == dataset], dataset, out_dir / f"roc_{dataset}.png",
                 source=footer)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("papers", type=Path, help="published numbers with their citations")
    parser.add_argument("evals", type=Path, nargs="+", help="evaluation records (JSON)")
    args = parser.parse_args(argv)
    table = write_report(args.out_dir, args.papers, args.evals)
    shown = table[["dataset", "method", "split", "auc_micro", "auc_micro_std", "auc_macro", "ap", "paper_auc", "n_frames", "seeds"]]
    print(shown.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
