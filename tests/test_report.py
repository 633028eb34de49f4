"""The report tables: one row per method x dataset x split, the mean and standard deviation over seeds."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from pipelines.provenance import config_hash
from pipelines.metrics import Protocol, VideoScores, evaluate
from pipelines.report import build_table, seed_roc, write_report
from tests.conftest import REPO

PAPERS = REPO / "workflow" / "resources" / "paper_results.csv"


def record(method: str, seed: int, noise: float, *, config: dict | None = None, n_frames: int = 60,
           dataset: str = "ped2", convention: str = "test") -> dict:
    """An evaluation record as pipelines.evaluate writes it, from scores that separate the classes
    less as ``noise`` grows."""
    rng = np.random.default_rng(seed)
    videos = []
    for index in range(3):
        labels = np.zeros(n_frames, np.int8)
        labels[20 + index:40] = 1
        scores = (labels + noise * rng.standard_normal(n_frames)).astype(np.float32)
        videos.append(VideoScores(f"v{index}", labels, scores, np.ones(n_frames, bool)))
    result = evaluate(videos, Protocol(normalisation="minmax_per_video", label_convention=convention, skipped_start_frames=1))
    # The row stands for the paper's whole test split (paper_n_videos) unless a test says otherwise.
    published = pd.read_csv(PAPERS).query("dataset == @dataset and split == 'test'")["paper_n_videos"]
    result["n_videos"] = int(published.iloc[0]) if len(published) else result["n_videos"]
    config = {"method": {"name": method}} if config is None else config
    return {"method": method, "dataset": dataset, "split": "test", "seed": seed, **result, "config": config,
            "config_hash": config_hash(config), "versions": {"python": "3.11.7", "vadbench_revision": "cd" * 20}}


def test_one_row_per_method_with_mean_and_sample_std_over_seeds():
    records = [record("lgn_net", seed, noise) for seed, noise in ((0, 0.6), (1, 0.9), (2, 1.2))]
    records.append(record("tde", 0, 0.8))
    table = build_table(records, pd.read_csv(PAPERS)).set_index("method")

    micro = [100 * r["auc_micro"] for r in records[:3]]
    assert len(set(np.round(micro, 2))) == 3, "the three seeds should give three different numbers"
    lgn = table.loc["lgn_net"]
    assert lgn.auc_micro == pytest.approx(round(float(np.mean(micro)), 2))
    assert lgn.auc_micro_std == pytest.approx(round(float(np.std(micro, ddof=1)), 2))
    assert lgn.ap == pytest.approx(round(float(np.mean([100 * r["ap"] for r in records[:3]])), 2))
    assert lgn.seeds == "0 1 2" and lgn.paper_auc == 97.1 and lgn.n_frames == records[0]["n_frames"]
    tde = table.loc["tde"]
    assert tde.seeds == "0" and np.isnan(tde.auc_micro_std) and tde.auc_micro == round(100 * records[3]["auc_micro"], 2)


def test_a_paper_number_of_other_labels_is_not_shown_beside_a_row():
    """Both Avenue papers scored with Liu et al.'s labels; the dataset's own masks differ on 441 frames."""
    masks = "avenue: masks, testing_label_mask/<N>_label.mat volLabel, a frame with any mask pixel set = abnormal"
    liu = "avenue: liu2018, frame_labels_avenue.npy (Liu et al. 2018; MNAD, LGN-Net), test videos concatenated"
    records = [record("lgn_net", 0, 0.6, dataset="avenue", convention=masks), record("std", 0, 0.6, dataset="avenue", convention=liu)]
    table = build_table(records, pd.read_csv(PAPERS)).set_index("method")
    assert np.isnan(table.loc["lgn_net"].paper_auc)
    assert table.loc["lgn_net"].paper_ref.endswith("its 89.3 is not shown: the paper's labels are avenue: liu2018, "
                                                   "this row's avenue: masks")
    assert table.loc["std"].paper_auc == 87.1 and "not shown" not in table.loc["std"].paper_ref


def test_a_paper_number_of_another_smoothing_is_not_shown_beside_a_row():
    """STG-NF's 85.9 is its six-pass smoothed number (81.9 without); it stood beside a row run with
    smoothing_sigmas: []."""
    def stg_nf(sigmas, convention="shanghaitech: test_frame_mask"):
        row = record("stg_nf", 0, 0.6, dataset="shanghaitech", convention=convention)
        row["protocol"]["smoothing_sigmas"] = sigmas
        return row

    table = build_table([stg_nf([])], pd.read_csv(PAPERS)).set_index("method")
    assert np.isnan(table.loc["stg_nf"].paper_auc)
    assert table.loc["stg_nf"].paper_ref.endswith("its 85.9 is not shown: the paper's gaussian sigmas "
                                                  "1,2,3,4,5,6, this row's no smoothing")
    table = build_table([stg_nf([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])], pd.read_csv(PAPERS)).set_index("method")
    assert table.loc["stg_nf"].paper_auc == 85.9 and "not shown" not in table.loc["stg_nf"].paper_ref
    # Both differences are named; a paper that smooths nothing is withheld beside a smoothed row.
    lgn = record("lgn_net", 0, 0.6, dataset="avenue", convention="avenue: masks")
    lgn["protocol"]["smoothing_sigmas"] = [2.0]
    table = build_table([lgn], pd.read_csv(PAPERS)).set_index("method")
    assert table.loc["lgn_net"].paper_ref.endswith("its 89.3 is not shown: the paper's labels are avenue: liu2018, "
                                                   "this row's avenue: masks; the paper's no smoothing, this "
                                                   "row's gaussian sigmas 2")


def test_a_paper_number_is_not_shown_beside_a_row_of_part_of_its_test_split():
    """A test_subset run (or a split with videos left out) scores other videos than the paper did."""
    part = record("lgn_net", 0, 0.6) | {"n_videos": 2}
    table = build_table([part], pd.read_csv(PAPERS)).set_index("method")
    assert np.isnan(table.loc["lgn_net"].paper_auc)
    assert table.loc["lgn_net"].paper_ref.endswith("its 97.1 is not shown: the paper's test split has 12 videos, "
                                                   "this row's 2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": {"method": {"name": "other"}}}, r"lgn_net on ped2/test: seeds 0 and 1 differ in config_hash"),
        ({"n_frames": 50}, r"seeds 0 and 1 differ in n_frames"),
    ],
)
def test_seeds_of_one_row_must_share_config_and_frames(change, message):
    records = [record("lgn_net", 0, 0.6), record("lgn_net", 1, 0.9, **change)]
    with pytest.raises(ValueError, match=message):
        build_table(records, pd.read_csv(PAPERS))


def test_a_config_hash_reads_numbers_as_numbers():
    assert config_hash({"sigmas": [2, 1], "n": 3}) == config_hash({"n": 3.0, "sigmas": [2.0, 1.0]})
    assert config_hash({"sigmas": [2, 1]}) != config_hash({"sigmas": [2, 2]})
    assert config_hash({"flag": True}) != config_hash({"flag": 1})


def test_the_same_seed_twice_is_an_error():
    with pytest.raises(ValueError, match="two evaluation records of lgn_net on ped2/test with seed 0"):
        build_table([record("lgn_net", 0, 0.6), record("lgn_net", 0, 0.9)], pd.read_csv(PAPERS))


def test_report_files_and_a_record_without_a_seed(tmp_path):
    paths = []
    for seed, noise in ((0, 0.6), (1, 0.9)):
        paths.append(tmp_path / f"seed_{seed}.json")
        paths[-1].write_text(json.dumps(record("std", seed, noise)))
    write_report(tmp_path / "report", PAPERS, paths)
    by_seed = pd.read_csv(tmp_path / "report" / "auc_by_seed.csv")
    assert list(by_seed.seed) == [0, 1] and set(by_seed.method) == {"std"}
    table = pd.read_csv(tmp_path / "report" / "auc_table.csv")
    assert table.auc_micro.iloc[0] == pytest.approx(round(by_seed.auc_micro.mean(), 2), abs=0.01)
    assert "auc_micro_std" in (tmp_path / "report" / "auc_table.md").read_text()
    assert (tmp_path / "report" / "roc_ped2.png").stat().st_size > 0

    old = json.loads(paths[0].read_text())
    del old["seed"]
    paths[0].write_text(json.dumps(old))
    with pytest.raises(ValueError, match=rf"{paths[0]}: evaluation record without seed; rerun its evaluate job"):
        write_report(tmp_path / "again", PAPERS, paths)
    assert not (tmp_path / "again").exists()


def test_the_report_names_the_records_and_code_it_was_made_from(tmp_path):
    """A table alone can be traced: provenance.json lists each record with its row hash and code
    revision, the Markdown and HTML tables and the ROC plot's PNG text name the revision and versions."""
    from PIL import Image

    made_with = {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6", "vadbench_revision": "ab" * 20}
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"seed_{seed}.json")
        paths[-1].write_text(json.dumps(record("std", seed, 0.5) | {"versions": made_with}))
    write_report(tmp_path / "report", PAPERS, paths)
    made_from = json.loads((tmp_path / "report" / "provenance.json").read_text())
    assert [(r["file"], r["seed"], r["config_hash"], r["vadbench_revision"]) for r in made_from["evaluation_records"]] \
        == [(str(path), seed, config_hash({"method": {"name": "std"}}), "ab" * 20) for seed, path in enumerate(paths)]
    assert made_from["versions_of_the_records"] == [made_with] and "vadbench_revision" in made_from["report"]
    footer = f"From 2 evaluation records of vadbench {'ab' * 6} (python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6)"
    assert footer in (tmp_path / "report" / "auc_table.md").read_text()
    assert footer in (tmp_path / "report" / "auc_table.html").read_text()
    assert Image.open(tmp_path / "report" / "roc_ped2.png").text["Source"].startswith(footer)


def test_the_markdown_table_shows_each_cell_as_the_csv_does(tmp_path):
    """tabulate read a column of config hashes made of digits (or digits around one "e") as
    numbers: 012345678901 was printed as 1.23457e+10 and 00000000e042 as 0."""
    paths = []
    # configs whose hashes are 014439261620 and 2682e2050452
    for method, config in (("std", {"variant": 2056}), ("lgn_net", {"variant": 147})):
        paths.append(tmp_path / f"{method}.json")
        # 50.0 beside a number of two decimals: pandas' HTML printed it 50.00
        paths[-1].write_text(json.dumps(record(method, 0, 0.6, config=config) | ({"auc_micro": 0.5} if method == "std" else {})))
    write_report(tmp_path / "report", PAPERS, paths)
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in (tmp_path / "report" / "auc_table.md").read_text().splitlines() if "| ped2" in line]
    csv = pd.read_csv(tmp_path / "report" / "auc_table.csv", dtype=str, keep_default_na=False).values.tolist()
    assert rows == csv, (rows, csv)
    assert {row[-1] for row in rows} == {"014439261620", "2682e2050452"}
    # The HTML table too: pandas printed a column's numbers to its longest one's decimals (97.1 as 97.10).
    page = (tmp_path / "report" / "auc_table.html").read_text()
    html_rows = [[html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
                 for row in re.findall(r"<tr>(.*?)</tr>", page, re.S) if "<td>" in row]
    assert html_rows == csv, (html_rows, csv)
    assert "<td>97.1</td>" in page and "<td>50.0</td>" in page


def test_the_roc_of_a_row_is_the_mean_of_its_seeds_between_their_extremes():
    records = [record("lgn_net", seed, noise) for seed, noise in ((0, 0.6), (1, 0.9), (2, 1.2))]
    fpr, mean, low, high = seed_roc(records)
    tprs = np.array([r["roc"]["tpr"] for r in records])
    assert fpr.tolist() == records[0]["roc"]["fpr"]
    np.testing.assert_allclose(mean, tprs.mean(axis=0))
    np.testing.assert_array_equal(low, tprs.min(axis=0))
    np.testing.assert_array_equal(high, tprs.max(axis=0))
    assert (high - low).max() > 0.05, "seeds this far apart should give visibly different curves"
    # A record stored on another grid is read at the first record's points.
    coarse = dict(records[1], roc={"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    _, mean, _, _ = seed_roc([records[0], coarse])
    np.testing.assert_allclose(mean, (np.array(records[0]["roc"]["tpr"]) + fpr) / 2)


def test_timelines_shade_every_abnormal_run_a_whole_frame_wide():
    from pipelines.timeline import abnormal_runs

    labels = np.zeros(40, np.uint8)
    labels[10] = 1  # a one-frame event
    labels[20:35] = 1
    labels[39] = 1  # an event that runs to the last frame
    assert abnormal_runs(labels) == [(10, 10), (20, 34), (39, 39)]
    assert abnormal_runs(np.zeros(5, np.uint8)) == [] and abnormal_runs(np.ones(3, np.uint8)) == [(0, 2)]



def test_ar_nets_published_false_alarm_rate_stands_beside_its_own():
    """AR-Net's paper gives its false alarm rate with its AUC (0.10 %); the table showed only ours."""
    arnet = record("arnet", 0, 0.6, dataset="shanghaitech") | {"split": "weak_test", "far": 0.0021, "n_videos": 199}
    table = build_table([arnet, record("lgn_net", 0, 0.6)], pd.read_csv(PAPERS)).set_index("method")
    assert (table.at["arnet", "paper_auc"], table.at["arnet", "paper_far"], table.at["arnet", "far"]) == (91.24, 0.1, 0.21)
    assert np.isnan(table.at["lgn_net", "paper_far"]) and np.isnan(table.at["lgn_net", "far"])


def test_the_protocol_column_says_when_frames_are_counted_to_whole_snippets():
    from pipelines.report import describe_protocol

    row = record("ssrl", 0, 0.3)
    assert "multiple of" not in describe_protocol(row)
    assert "; normalisation minmax_per_video; no smoothing; " in describe_protocol(row)
    row["protocol"] |= {"snippet_length": 16, "pad_to_multiple_of": 16}
    text = describe_protocol(row)
    assert "each video counted to a multiple of 16 frames, its last frame's score and label repeated (as RTFM's " \
           "and SSRL's gt-sh.npy)" in text
    assert text.endswith("labels test")  # the labels' phrase stays last
    row["protocol"]["padded_frame_label"] = "normal"  # UCF-Crime's gt-ucf.npy: 1 only on [start, end]
    text = describe_protocol(row)
    assert "each video counted to a multiple of 16 frames, its last frame's score repeated and the added frames " \
           "labelled normal (as RTFM's and SSRL's gt-ucf.npy)" in text and "label repeated" not in text


def test_a_row_whose_seeds_were_scored_by_different_code_says_so(tmp_path):
    """The seeds of one row were averaged without a word when their scores came from different revisions."""
    paths = []
    for seed, revisions in ((0, ["ab" * 20]), (1, ["ab" * 20, "cd" * 20 + "+changes"]), (2, ["ab" * 20])):
        paths.append(tmp_path / f"seed_{seed}.json")
        scored_with = [{"vadbench_revision": revision, "checkpoint_sha256": f"{seed}" * 64} for revision in revisions]
        paths[-1].write_text(json.dumps(record("std", seed, 0.6) | {"scored_with": scored_with}))
    table = write_report(tmp_path / "report", PAPERS, paths)
    assert ("scores from 2 code revisions: seed 0 abababababab; seed 1 abababababab, cdcdcdcdcdcd+changes; "
            "seed 2 abababababab (provenance.json: scored_with)") in table.protocol[0]
    assert table.protocol[0].endswith("labels test")
    made_from = json.loads((tmp_path / "report" / "provenance.json").read_text())
    assert [len(r["scored_with"]) for r in made_from["evaluation_records"]] == [1, 2, 1]
    paths.pop(1)
    assert "code revisions" not in write_report(tmp_path / "same", PAPERS, paths).protocol[0]
