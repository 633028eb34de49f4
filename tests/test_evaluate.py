"""Evaluation inputs that are damaged or mixed up are refused by name, never scored."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.base import VideoScore
from pipelines.datasets import LabelError
from pipelines.evaluate import evaluate_split
from pipelines.frame_store import FrameWriter
from pipelines.labels import write_labels
from pipelines.report import read_record
from pipelines.score import write_scores
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
