"""Evaluation inputs that are damaged or mixed up are refused by name, never scored."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.base import VideoScore
from pipelines.datasets import LabelError
from pipelines.evaluate import evaluate_split, main as evaluate_main
from pipelines.frame_store import FrameWriter
from pipelines.labels import write_labels
from pipelines.provenance import config_hash
from pipelines.report import read_record
from pipelines.score import read_scores, write_scores
from pipelines.timeline import plot_timelines

PED2_TEST_LENGTHS = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


@pytest.fixture
def ped2_split(shared_data, tmp_path):
    """Canonical Ped2 test labels (the real label file, frames files of one-pixel frames of the
    real lengths) and one score file per video."""
    frames = []
    for index, n in enumerate(PED2_TEST_LENGTHS, start=1):
        path = tmp_path / "frames" / f"{index:02d}.h5"
        path.parent.mkdir(exist_ok=True)
        with FrameWriter(path, 1, 1, 1, "none") as writer:
            writer.append(np.zeros((n, 1, 1, 1), np.uint8))
        frames.append(path)
    config = {"root": str(shared_data / "ped2"), "labels": str(shared_data / "ped2" / "frame_labels_ped2.npy")}
    labels_file = tmp_path / "labels.h5"
    labels = write_labels("ped2", "test", config, frames, labels_file)
    scores = []
    for seed_folder, flip in (("seed_0", False), ("seed_1", True)):
        for name, truth in labels.items():
            path = tmp_path / seed_folder / f"{name}.h5"
            path.parent.mkdir(exist_ok=True)
            values = (1 - truth if flip else truth) + np.linspace(0, 0.5, truth.size)
            write_scores(path, VideoScore(values.astype(np.float32), np.ones(truth.size, bool)), {})
            scores.append(path)
    return labels_file, scores[:12], scores[12:], frames


def test_the_scores_of_one_seed_evaluate(ped2_split):
    labels_file, seed_0, _, _ = ped2_split
    assert evaluate_split("tde", {}, labels_file, seed_0)["auc_micro"] > 0.9


def test_two_score_files_of_one_video_are_refused_not_one_silently_kept(ped2_split):
    """Another seed's folder given too: the last file of each name won, and its AUC was reported
    under the first seed."""
    labels_file, seed_0, seed_1, _ = ped2_split
    with pytest.raises(ValueError, match=r"12 videos have more than one score file, e\.g\. 01: .*seed_0/01\.h5, .*seed_1/01\.h5"):
        evaluate_split("tde", {}, labels_file, seed_0 + seed_1)


def test_a_damaged_score_or_labels_file_is_named(ped2_split, tmp_path):
    labels_file, seed_0, _, frames = ped2_split
    cut = seed_0[4]
    cut.write_bytes(cut.read_bytes()[:600])
    with pytest.raises(ValueError, match=rf"{cut}: not a readable scores file .*rerun its score job"):
        evaluate_split("tde", {}, labels_file, seed_0)
    write_scores(cut, VideoScore(np.full(150, np.nan, np.float32), np.ones(150, bool)), {})
    with pytest.raises(ValueError, match=rf"{cut}: 150 scored frames have non-finite scores"):
        evaluate_split("tde", {}, labels_file, seed_0)
    with pytest.raises(LabelError, match=rf"{frames[0]}: not a readable canonical labels file"):
        evaluate_split("tde", {}, frames[0], seed_0)


def test_timelines_draw_only_what_the_evaluation_accepts(ped2_split, tmp_path):
    """The timeline job does not wait for the evaluation: it drew a plot (exit 0) from scores cut
    short, from part of the split, and failed with a bare KeyError on an unlabelled video."""
    labels_file, seed_0, _, _ = ped2_split
    out = tmp_path / "timeline.png"
    with pytest.raises(ValueError, match=r"score files missing for \['02', '03'"):
        plot_timelines("tde", {}, labels_file, seed_0[:1], out, 2)
    stray = tmp_path / "other" / "99.h5"
    stray.parent.mkdir()
    stray.write_bytes(seed_0[0].read_bytes())
    with pytest.raises(ValueError, match=r"unlabelled scores for \['99'\]"):
        plot_timelines("tde", {}, labels_file, seed_0 + [stray], out, 2)
    write_scores(seed_0[2], VideoScore(np.zeros(143, np.float32), np.ones(143, bool)), {})
    with pytest.raises(ValueError, match=rf"video '03': 150 labels in {labels_file} but 143 scores in {seed_0[2]}"):
        plot_timelines("tde", {}, labels_file, seed_0, out, 2)
    assert not out.exists()


def test_a_cut_evaluation_record_is_named(tmp_path):
    record = tmp_path / "eval.json"
    record.write_text(json.dumps({"method": "tde", "auc_micro": 0.7})[:20])
    with pytest.raises(ValueError, match=rf"{record}: not a readable evaluation record .*rerun its evaluate job"):
        read_record(record)
    record.write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{record}: not an evaluation record \(a JSON list\)"):
        read_record(record)


def test_a_record_carries_the_config_it_was_run_with_and_its_hash(ped2_split, tmp_path):
    """Run without --run-config, the record held the hash of an empty config as if it were the row's."""
    labels_file, seed_0, _, _ = ped2_split
    out = tmp_path / "eval.json"
    command = ["tde", "ped2", "test", str(labels_file), str(out), *map(str, seed_0)]
    with pytest.raises(SystemExit):
        evaluate_main(command)
    assert not out.exists()
    run_config = {"dataset": {"root": "/data/ped2"}, "method": {"smoothing_sigmas": [2, 1]}}
    assert evaluate_main([*command, "--run-config", json.dumps(run_config)]) == 0
    record = read_record(out)
    assert record["config"] == run_config and record["config_hash"] == config_hash(run_config)
    assert record["versions"]["vadbench_revision"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("config"), r"evaluation record without config; rerun its evaluate job"),
        (lambda r: r.pop("versions"), r"evaluation record without versions; rerun its evaluate job"),
        (lambda r: r["versions"].pop("vadbench_revision"),
         r"evaluation record without versions\.vadbench_revision; rerun its evaluate job"),
        (lambda r: r["config"]["method"].update(smoothing_sigmas=[3]),
         r"config_hash \w+ is not the hash of its config \(\w+\); rerun its evaluate job"),
    ],
    ids=["no config", "no versions", "no revision", "hash of another config"],
)
def test_a_record_whose_config_or_versions_are_missing_or_disagree_is_refused(ped2_split, tmp_path, change, message):
    labels_file, seed_0, _, _ = ped2_split
    out = tmp_path / "eval.json"
    run_config = {"method": {"smoothing_sigmas": [2, 1]}}
    evaluate_main(["tde", "ped2", "test", str(labels_file), str(out), *map(str, seed_0),
                   "--run-config", json.dumps(run_config)])
    record = json.loads(out.read_text())
    change(record)
    out.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"{out}: {message}"):
        read_record(out)


def test_a_record_names_the_code_revisions_and_checkpoints_its_scores_were_made_with(ped2_split, tmp_path):
    """The record's versions are the evaluate job's own; the score files it read may come from other code."""
    labels_file, seed_0, _, _ = ped2_split
    for index, path in enumerate(seed_0):
        result = read_scores(path)
        revision = "a" * 40 if index < 8 else "b" * 40 + "+changes"
        write_scores(path, result, {"checkpoint_sha256": "c" * 64, "versions": {"vadbench_revision": revision}})
    out = tmp_path / "eval.json"
    evaluate_main(["tde", "ped2", "test", str(labels_file), str(out), *map(str, seed_0), "--run-config", "{}"])
    assert read_record(out)["scored_with"] == [
        {"vadbench_revision": "a" * 40, "checkpoint_sha256": "c" * 64},
        {"vadbench_revision": "b" * 40 + "+changes", "checkpoint_sha256": "c" * 64},
    ]
    write_scores(seed_0[0], read_scores(seed_0[0]), {"checkpoint_sha256": "none"})  # scored by hand, long ago
    evaluate_main(["tde", "ped2", "test", str(labels_file), str(out), *map(str, seed_0), "--run-config", "{}"])
    assert {"vadbench_revision": "not recorded"} in read_record(out)["scored_with"]


def strict_json(text: str):
    """JSON as jq reads it: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_number_that_does_not_exist_is_written_null_and_read_back_as_nan(tmp_path):
    """No video with both classes: the macro AUC is NaN, which json.dumps wrote as NaN, not JSON."""
    import h5py

    labels_file = tmp_path / "labels.h5"
    frame_labels = {"abnormal": np.ones(30, np.uint8), "normal": np.zeros(30, np.uint8)}
    with h5py.File(labels_file, "w") as handle:
        for name, labels in frame_labels.items():
            handle.create_dataset(f"labels/{name}", data=labels).attrs["video_label"] = int(labels.any())
        handle.attrs["label_convention"] = "synthetic: one class per video"
    scores = []
    for name, labels in frame_labels.items():
        scores.append(tmp_path / "scores" / f"{name}.h5")
        scores[-1].parent.mkdir(exist_ok=True)
        write_scores(scores[-1], VideoScore(labels + np.linspace(0, 0.5, 30, dtype=np.float32), np.ones(30, bool)), {})
    out = tmp_path / "eval.json"
    evaluate_main(["tde", "synthetic", "test", str(labels_file), str(out), *map(str, scores), "--run-config", "{}"])
    written = strict_json(out.read_text())
    assert written["auc_macro"] is None and written["n_macro_videos"] == 0 and written["auc_micro"] == 1.0
    assert np.isnan(read_record(out)["auc_macro"])


def test_json_text_writes_every_non_finite_float_as_null():
    from pipelines.json_text import dumps

    value = {"far": float("nan"), "curve": [1.0, float("inf"), {"low": -float("inf")}], "n": 3, "ok": 0.5}
    assert strict_json(dumps(value)) == {"far": None, "curve": [1.0, None, {"low": None}], "n": 3, "ok": 0.5}


def test_labels_are_written_only_for_frames_files_that_are_exactly_the_split(shared_data, tmp_path):
    """Given part of a split (or a stray video) by hand, the labels file held only those videos and
    the job reported success; the evaluation then scored the videos it was given."""
    for video in ("01_0014", "01_0015"):
        (tmp_path / "raw" / "testing" / "frames" / video).mkdir(parents=True)
    config = {"root": str(tmp_path / "raw"), "labels": str(shared_data / "gt" / "shanghaitech" / "test_frame_mask"),
              "test_subset": ["01_0014", "01_0015"]}

    def frames_file(video):
        n = np.load(shared_data / "gt" / "shanghaitech" / "test_frame_mask" / f"{video}.npy").size
        path = tmp_path / "frames" / f"{video}.h5"
        path.parent.mkdir(exist_ok=True)
        with FrameWriter(path, 1, 1, 1, "none") as writer:
            writer.append(np.zeros((n, 1, 1, 1), np.uint8))
        return path

    out = tmp_path / "labels.h5"
    with pytest.raises(LabelError, match=r"shanghaitech/test: .* not the split's 2 videos; missing 1: 01_0015$"):
        write_labels("shanghaitech", "test", config, [frames_file("01_0014")], out)
    stray = frames_file("01_0015").with_name("01_0016.h5")
    frames_file("01_0015").rename(stray)
    with pytest.raises(LabelError, match=r"missing 1: 01_0015; not in the split: 01_0016$"):
        write_labels("shanghaitech", "test", config, [frames_file("01_0014"), stray], out)
    assert not out.exists() and list(tmp_path.glob(".*")) == []
    assert len(write_labels("shanghaitech", "test", config, [frames_file("01_0014"), frames_file("01_0015")], out)) == 2
