"""The AR-Net and SSRL methods in the pipeline: staged training, resume, streaming scores, frames and protocol."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models import TrainInputs, get_method, get_method_class
from models.arnet import build_arnet
from models.ssrl import SSRL_STAGES, SSRLNetwork, snippet_scores
from pipelines.features import store
from pipelines.features.store import FeatureReader, FeatureSource
from pipelines.training import CheckpointError, StageRun, load_checkpoint
from pipelines.weak_methods import (
    SegmentCache,
    divided_segments,
    frame_scores,
    protocol,
    split_by_label,
    training_features,
)
from pipelines.weak_protocol import training_segments

DIM = 16  # feature width of these tests; the I3D features are 2048-d
GRIDS = ((2, 3), (3, 5), (4, 7))


def write_features(path: Path, n_snippets: int, *, views: int = 10, grids=GRIDS, tail: str = "loop_pad",
                   abnormal: bool = False, seed: int = 0, feature_set: str = "rtfm_ssrl_patches") -> Path:
    """A features file in the pipeline's layout; abnormal videos have a burst of large features in the middle."""
    rng = np.random.default_rng(seed)
    clip = rng.random((n_snippets, views, DIM), dtype=np.float32)
    if abnormal:
        clip[n_snippets // 3 : n_snippets // 3 + 3] += 4.0
    n_frames = 16 * n_snippets - 3 if tail == "loop_pad" else 16 * n_snippets + 5
    with h5py.File(path, "w") as handle:
        store.create_dataset(handle, store.FEATURES, n_snippets, views, DIM)[...] = clip
        for rows, cols in grids:
            data = store.create_dataset(handle, store.patch_dataset((rows, cols)), n_snippets, rows * cols, DIM)
            data[...] = rng.random((n_snippets, rows * cols, DIM), dtype=np.float32)
        store.write_attrs(handle, {
            "format": store.FORMAT, "feature_set": feature_set, "origin": "extracted", "tail": tail,
            "n_frames": n_frames, "n_snippets": n_snippets, "backbones": {"r50_nonlocal_k400": "random-init"},
            "patch_grids": [list(g) for g in grids], "patches_reconstructed": bool(grids), "spatial_scale": 1.0,
        })
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> TrainInputs:
    folder = tmp_path_factory.mktemp("weak")
    files, labels = [], {}
    for index, (name, n_snippets) in enumerate([("n0", 40), ("n1", 7), ("n2", 33), ("a0", 35), ("a1", 20)]):
        files.append(write_features(folder / f"{name}.h5", n_snippets, abnormal=name.startswith("a"), seed=index))
        labels[name] = int(name.startswith("a"))
    return TrainInputs(files, labels)


# --- frames, protocol, training items --------------------------------------------------------------


def test_frame_scores_by_the_features_snippet_rule():
    padded = frame_scores(np.array([0.1, 0.9]), 20, "loop_pad")
    assert padded.scored.all() and padded.scores.tolist() == pytest.approx([0.1] * 16 + [0.9] * 4)
    dropped = frame_scores(np.array([0.1, 0.9]), 40, "drop")
    assert dropped.scored.tolist() == [True] * 32 + [False] * 8
    assert dropped.scores[:32].tolist() == pytest.approx([0.1] * 16 + [0.9] * 16)
    none = frame_scores(np.zeros(0), 15, "drop")
    assert none.scores.shape == (15,) and not none.scored.any()
    for scores, n, tail in ((np.zeros(2), 33, "loop_pad"), (np.zeros(3), 47, "drop")):
        with pytest.raises(ValueError, match="snippet scores"):
            frame_scores(scores, n, tail)


def test_protocol_names_the_features_of_its_dataset():
    params = {"feature_source": {"shanghaitech": "features rtfm (published; ...)",
                                 "synthetic": "features x; NOT COMPARABLE"}}
    found = protocol(params, "shanghaitech: test_frame_mask/<video>.npy per video, 1 = abnormal")
    assert found.label_convention.endswith("; features rtfm (published; ...)")
    assert found.snippet_length == 16 and found.pooling == "micro" and found.normalisation == "none"
    assert "not recorded" in protocol({}, "ucf_crime: annotation").label_convention
    assert get_method("ssrl", params).protocol("synthetic: labels").label_convention.endswith("NOT COMPARABLE")
    assert get_method_class("arnet").protocol_params == ("feature_source", "feature_tail")
    # Loop-padded features count 16 * ceil(n/16) frames per video, as RTFM's and SSRL's gt files do.
    assert found.pad_to_multiple_of == 0  # no tail recorded (run by hand)
    tails = {"feature_tail": {"shanghaitech": "loop_pad", "ucf_crime": "drop"}}
    assert protocol(tails, "shanghaitech: masks").pad_to_multiple_of == 16
    assert protocol(tails, "ucf_crime: annotation").pad_to_multiple_of == 0
    # The padded frames are labelled as the dataset's ground-truth file does: gt-sh.npy repeats the last
    # label, gt-ucf.npy labels them normal (1 only on [start, end]).
    padded = {"feature_tail": {"shanghaitech": "loop_pad", "ucf_crime": "loop_pad"}}
    assert protocol(padded, "shanghaitech: masks").padded_frame_label == "last"
    ucf = protocol(padded, "ucf_crime: annotation")
    assert (ucf.pad_to_multiple_of, ucf.padded_frame_label) == (16, "normal")


def test_feature_source_says_when_numbers_do_not_compare():
    published = FeatureSource("rtfm", "published", (("upstream extractor", "published features from /x"),))
    assert "NOT COMPARABLE" not in published.describe("rtfm") and "ceil(n/16)" in published.describe("rtfm")
    ours = FeatureSource("arnet", "extracted", (("inception_k400_rgb", "rgb_imagenet.pt"),), "drop",
                         missing_streams=("flow",))
    assert ours.differences("arnet") == ["no flow stream"]
    assert "frames after the last whole snippet unscored" in ours.describe("arnet")
    smoke = FeatureSource("rtfm_ssrl_patches", "extracted", (("r50_nonlocal_k400", "random-init"),), spatial_scale=0.1,
                          patches_reconstructed=True)
    assert smoke.differences("rtfm_ssrl_patches") == ["backbone r50_nonlocal_k400 randomly initialised",
                                                      "frames at 0.1 of the preset's size"]
    assert "reconstructed" in smoke.describe("rtfm_ssrl_patches")
    assert FeatureSource("rtfm", "published", ()).differences("arnet") == ["the paper used arnet features"]


@pytest.mark.parametrize("n_snippets", [7, 70])
def test_divided_segments_are_the_training_segments(tmp_path, n_snippets):
    path = write_features(tmp_path / "v.h5", n_snippets)
    with FeatureReader(path) as reader:
        expected = training_segments(reader.features(), *(reader.patches(g) for g in GRIDS[:2]))
        np.testing.assert_array_equal(divided_segments(reader, GRIDS[:2]), expected)
        assert divided_segments(reader).shape == (10, 32, DIM)


def test_segment_cache_is_rebuilt_for_other_files(tmp_path, split):
    path = tmp_path / "cache.h5"
    with SegmentCache(path, split.files[:2]) as cache:
        first = cache.rows([1, 0])
    with FeatureReader(split.files[1]) as reader:
        np.testing.assert_array_equal(first[0], divided_segments(reader))
    with SegmentCache(path, split.files[2:4], GRIDS[:1]) as cache:
        assert cache.rows([0]).shape == (1, 16, 32, DIM)


def test_segment_cache_is_rebuilt_for_features_made_again_at_the_same_paths(tmp_path):
    """Features extracted again (other weights) while a stage's resume folder, and its cache, stayed."""
    files = [write_features(tmp_path / f"v{i}.h5", 7, seed=i) for i in range(2)]
    with SegmentCache(tmp_path / "cache.h5", files) as cache:
        cache.rows([0])
    write_features(files[0], 7, seed=5)
    with SegmentCache(tmp_path / "cache.h5", files) as cache, FeatureReader(files[0]) as reader:
        np.testing.assert_array_equal(cache.rows([0])[0], divided_segments(reader))


def test_training_files_are_checked(tmp_path, split):
    normal, abnormal = split_by_label(split)
    assert [p.stem for p in normal] == ["n0", "n1", "n2"] and [p.stem for p in abnormal] == ["a0", "a1"]
    with pytest.raises(ValueError, match="normal and abnormal"):
        split_by_label(TrainInputs(normal, {p.stem: 0 for p in normal}))
    with pytest.raises(ValueError, match="no video label"):
        split_by_label(TrainInputs(split.files, {}))
    clip_only = write_features(tmp_path / "c.h5", 9, grids=(), feature_set="rtfm")
    with pytest.raises(ValueError, match="more than one kind"):
        training_features([split.files[0], clip_only])
    with pytest.raises(ValueError, match="no patch features for grids"):
        training_features([clip_only], GRIDS[:1])
    assert training_features(split.files, GRIDS)["feature_dim"] == DIM


# --- SSRL ---------------------------------------------------------------------------------------------


def _payload(path: Path) -> dict:
    return load_checkpoint(path, "ssrl")["model"]


def test_ssrl_stages_load_freeze_and_extend(tmp_path, split):
    method = get_method("ssrl", {"iterations": 2, "batch_per_class": 2}, seed=1)
    checkpoints = {}
    previous = None
    for stage in method.stages:
        checkpoints[stage] = tmp_path / f"{stage}.pt"
        method.train_stage(stage, split, previous, checkpoints[stage])
        previous = checkpoints[stage]
        assert not checkpoints[stage].with_name(f"{stage}.pt.resume").exists()
    states = {stage: _payload(path) for stage, path in checkpoints.items()}
    for number in (2, 3, 4):
        before, after = states[f"stage{number - 1}"], states[f"stage{number}"]
        # Everything the previous stage had comes back unchanged (loaded, frozen, BN on running statistics).
        assert all(torch.equal(before[k], after[k]) for k in before)
        new = [k for k in after if k.startswith(f"patch_branches.{number - 2}.")]
        assert new and set(new) == set(after) - set(before)
        torch.manual_seed(1)
        fresh = SSRLNetwork(number, DIM).state_dict()
        assert any(not torch.equal(fresh[k], after[k]) for k in new if k.endswith("weight"))
    extra = load_checkpoint(checkpoints["stage3"], "ssrl")["extra"]
    assert extra["loaded_from_previous"]["units"] == ["classifier", "patch_branches.0", "temporal_relation"]
    score = method.score_video(checkpoints["stage4"], split.files[3])
    assert score.scores.shape == (35 * 16 - 3,) and score.scored.all() and np.isfinite(score.scores).all()


def test_ssrl_end_to_end_trains_every_scale_at_once_from_scratch(tmp_path, split):
    """The ablation the specification keeps: the last stage's network, one stage, nothing loaded or
    frozen, every unit trained (the staged schedule's stage 4 trains only the 4x7 branch)."""
    method = get_method("ssrl_end_to_end", {"iterations": 2, "batch_per_class": 2}, seed=1)
    assert method.stages == ("train",)
    method.train_stage("train", split, None, tmp_path / "train.pt")
    payload = load_checkpoint(tmp_path / "train.pt", "ssrl_end_to_end")
    torch.manual_seed(1)
    fresh = SSRLNetwork(len(SSRL_STAGES), DIM).state_dict()
    assert set(payload["model"]) == set(fresh)
    units = {k.split(".")[0] if not k.startswith("patch_branches") else ".".join(k.split(".")[:2]) for k in fresh}
    changed = {u for u in units for k in fresh
               if (k.startswith(u + ".")) and k.endswith("weight") and not torch.equal(fresh[k], payload["model"][k])}
    assert changed == units == {"temporal_relation", "classifier", "patch_branches.0", "patch_branches.1", "patch_branches.2"}
    assert payload["extra"]["loaded_from_previous"] == {}
    score = method.score_video(tmp_path / "train.pt", split.files[3])
    assert score.scores.shape == (35 * 16 - 3,) and np.isfinite(score.scores).all()
    assert "end-to-end ablation" in method.protocol("synthetic: labels").label_convention
    with pytest.raises(CheckpointError):
        get_method("ssrl", {}).score_video(tmp_path / "train.pt", split.files[3])


def test_ssrl_stage_refuses_the_wrong_previous_stage(tmp_path, split):
    method = get_method("ssrl", {"iterations": 1, "batch_per_class": 1}, seed=0)
    method.train_stage("stage1", split, None, tmp_path / "stage1.pt")
    with pytest.raises(CheckpointError, match="stage2"):
        method.train_stage("stage3", split, tmp_path / "stage1.pt", tmp_path / "stage3.pt")
    with pytest.raises(ValueError, match="none was given"):
        method.train_stage("stage2", split, None, tmp_path / "stage2.pt")


def test_ssrl_scores_in_blocks_as_the_whole_forward(tmp_path):
    path = write_features(tmp_path / "long.h5", 300)
    torch.manual_seed(0)
    model = SSRLNetwork(4, DIM)
    for module in model.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    model.eval()
    with FeatureReader(path) as reader, torch.no_grad():
        streamed = snippet_scores(model, reader, "cpu")
        whole = np.concatenate([reader.features()] + [reader.patches(g) for g in GRIDS], axis=1)
        expected = model(torch.from_numpy(whole).transpose(0, 1)[None]).scores[0].numpy()
    np.testing.assert_allclose(streamed, expected, rtol=1e-5, atol=1e-6)


# --- AR-Net -------------------------------------------------------------------------------------------


def _preempt_at_step(monkeypatch, step: int) -> list[int]:
    """Make the next training stage stop (as a killed job) once it has counted ``step``; the steps
    counted after that, in any later run, are listed in the returned list."""
    advance = StageRun.advance
    counted: list[int] = []
    armed = [True]

    def advance_then_stop(run, *args):
        advance(run, *args)
        counted.append(run.step)
        if armed[0] and run.step == step:
            armed[0] = False
            raise KeyboardInterrupt("job killed")

    monkeypatch.setattr(StageRun, "advance", advance_then_stop)
    return counted


def test_arnet_resumes_to_the_weights_of_a_straight_run(tmp_path, split, monkeypatch):
    params = {"iterations": 4, "videos_per_class": 2, "max_seqlen": 30, "checkpoint_every": 2}
    straight = tmp_path / "straight.pt"
    get_method("arnet", params, seed=2).train_stage("train", split, None, straight)

    resumed = tmp_path / "resumed.pt"
    steps_run = _preempt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        get_method("arnet", params, seed=2).train_stage("train", split, None, resumed)
    assert (tmp_path / "resumed.pt.resume" / "step_2.pt").is_file() and not resumed.exists()
    steps_run.clear()
    get_method("arnet", params, seed=2).train_stage("train", split, None, resumed)
    assert steps_run == [3, 4], "the restarted stage continues after its last checkpoint"
    a, b = load_checkpoint(straight, "arnet")["model"], load_checkpoint(resumed, "arnet")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(2)
    assert not torch.equal(build_arnet("single", DIM).state_dict()["embed.weight"], a["embed.weight"])


def test_arnet_trains_its_epochs_over_the_split_it_is_given(tmp_path, split):
    """An epoch is one item per training video, as the reference counts it; the length was a fixed 4,760
    (ShanghaiTech's 20 epochs), three epochs of UCF-Crime's 1,610 videos."""
    n_videos = len(split.files)
    get_method("arnet", {"epochs": 2, "videos_per_class": 2, "max_seqlen": 30}).train_stage("train", split, None, tmp_path / "a.pt")
    payload = load_checkpoint(tmp_path / "a.pt", "arnet")
    assert payload["step"] == payload["extra"]["iterations"] == 2 * n_videos
    get_method("arnet", {"epochs": 2, "iterations": 3, "videos_per_class": 2}).train_stage("train", split, None, tmp_path / "b.pt")
    assert load_checkpoint(tmp_path / "b.pt", "arnet")["step"] == 3


def test_arnet_needs_enough_videos_per_class(tmp_path, split):
    with pytest.raises(ValueError, match="only 2 abnormal"):
        get_method("arnet", {"videos_per_class": 3}).train_stage("train", split, None, tmp_path / "a.pt")


@pytest.mark.parametrize("variant", ["single", "sequence"])
def test_arnet_scores_long_videos_in_blocks_as_a_whole(tmp_path, split, variant):
    checkpoint = tmp_path / "a.pt"
    method = get_method("arnet", {"iterations": 1, "videos_per_class": 2, "variant": variant, "view": "mean"})
    method.train_stage("train", split, None, checkpoint)
    long = write_features(tmp_path / "long.h5", 2100, grids=(), tail="drop", feature_set="rtfm")
    result = method.score_video(checkpoint, long)
    assert result.scored.tolist() == [True] * 2100 * 16 + [False] * 5
    model = build_arnet(variant, DIM)
    model.load_state_dict(load_checkpoint(checkpoint, "arnet")["model"])
    with FeatureReader(long) as reader, torch.no_grad():
        whole = model.eval()(torch.from_numpy(reader.features().mean(axis=1))[None])[0].numpy()
    np.testing.assert_allclose(result.scores[: 2100 * 16 : 16], whole, rtol=1e-5, atol=1e-6)


def test_registered_methods_declare_their_features():
    arnet, ssrl = get_method_class("arnet"), get_method_class("ssrl")
    assert (arnet.input_kind, arnet.supervision, arnet.uses_gpu, arnet.stages) == ("features", "weak", True, ("train",))
    assert (ssrl.input_kind, ssrl.supervision, ssrl.uses_gpu) == ("features", "weak", True)
    assert ssrl.stages == tuple(f"stage{s.number}" for s in SSRL_STAGES) == ("stage1", "stage2", "stage3", "stage4")
    assert (arnet.paper_features, ssrl.paper_features, ssrl.feature_patches) == ("arnet", "rtfm_ssrl_patches",
                                                                                   "ssrl_patches")


def _evaluation_split(folder: Path, every: int):
    """Three test videos (features and a canonical labels file, their bursts abnormal) as an EvaluationSet."""
    from models import EvaluationSet
    from pipelines.labels import LABELS

    folder.mkdir(parents=True, exist_ok=True)
    files, frame_labels = [], {}
    for index, (name, n_snippets) in enumerate([("t0", 12), ("t1", 9), ("t2", 15)]):
        abnormal = name != "t1"
        files.append(write_features(folder / f"{name}.h5", n_snippets, abnormal=abnormal, seed=10 + index))
        labels = np.zeros(16 * n_snippets - 3, np.uint8)
        if abnormal:
            labels[16 * (n_snippets // 3) : 16 * (n_snippets // 3 + 3)] = 1
        frame_labels[name] = labels
    with h5py.File(folder / "labels.h5", "w") as handle:
        group = handle.create_group(LABELS)
        for name, labels in frame_labels.items():
            group.create_dataset(name, data=labels).attrs["video_label"] = int(labels.any())
        handle.attrs["label_convention"] = "synthetic: test labels"
    return EvaluationSet(files, folder / "labels.h5", every)


@pytest.mark.parametrize("method", ["arnet", "ssrl"])
def test_a_stage_that_follows_its_test_split_records_the_curve_the_papers_select_on(tmp_path, split, method):
    """Every `every` iterations the stage scores the test split; the last point is the AUC of the final
    model's own scores (the row's number), the best is what the papers report; scoring changes no weight."""
    from models.base import TrainInputs
    from pipelines.evaluate import evaluate_split
    from pipelines.weak_methods import TEST_CURVE_NOTE, best_on_test

    evaluation = _evaluation_split(tmp_path / "test", every=2)
    params = ({"iterations": 6, "videos_per_class": 2, "max_seqlen": 30, "checkpoint_every": 4} if method == "arnet"
              else {"iterations": 6, "batch_per_class": 2, "checkpoint_every": 4, "test_eval_after": 0})
    stage = get_method_class(method).stages[0]
    followed, plain = tmp_path / "followed.pt", tmp_path / "plain.pt"
    get_method(method, params, seed=1).train_stage(stage, TrainInputs(split.files, split.video_labels, evaluation), None, followed)
    get_method(method, params, seed=1).train_stage(stage, split, None, plain)
    payload = load_checkpoint(followed, method)
    curve = payload["notes"][TEST_CURVE_NOTE]
    assert curve["every"] == 2 and curve["iterations"] == [2, 4, 6] and len(curve["auc_micro"]) == 3
    if method == "ssrl":  # the reference evaluates only after iteration 50: here after 3
        late = tmp_path / "late.pt"
        get_method(method, params | {"test_eval_after": 3}, seed=1).train_stage(
            stage, TrainInputs(split.files, split.video_labels, evaluation), None, late)
        assert load_checkpoint(late, method)["notes"][TEST_CURVE_NOTE]["iterations"] == [4, 6]
    assert all(torch.equal(payload["model"][k], load_checkpoint(plain, method)["model"][k]) for k in payload["model"])
    scores = []
    for path in evaluation.files:
        out = tmp_path / "scores" / path.name
        out.parent.mkdir(exist_ok=True)
        from pipelines.score import score

        score(method, path, out, params, 1, followed)
        scores.append(out)
    # The row's protocol, with the features' tail the workflow hands it: both count 16 * T frames.
    row = evaluate_split(method, params | {"feature_tail": {"synthetic": "loop_pad"}}, evaluation.labels, scores)
    assert row["n_frames"] == 16 * (12 + 9 + 15)
    assert curve["auc_micro"][-1] == pytest.approx(row["auc_micro"], abs=1e-9)
    # The row refuses a curve whose frames were counted otherwise (a stage trained before the count
    # followed the features' tail), naming the checkpoint.
    from pipelines.evaluate import main as evaluate_main

    command = [method, "synthetic", "test", str(evaluation.labels), str(tmp_path / "row.json"), *map(str, scores),
               "--checkpoint", str(followed), "--run-config", "{}"]
    tail = json.dumps(params | {"feature_tail": {"synthetic": "loop_pad"}})
    assert evaluate_main([*command, "--params-json", tail]) == 0
    assert json.loads((tmp_path / "row.json").read_text())["best_on_test"]["pad_to_multiple_of"] == 16
    with pytest.raises(SystemExit, match=rf"{followed}: its training-time test curve counted each video to a "
                                         r"multiple of 16 frames, the added frames labelled as its last frame, this "
                                         r"row counted each video's own frames"):
        evaluate_main([*command, "--params-json", json.dumps(params)])
    # Labels of a dataset whose padded frames are normal (UCF-Crime's): the curve, made with the last
    # label repeated, does not compare with the row.
    with h5py.File(evaluation.labels, "a") as handle:
        handle.attrs["label_convention"] = "ucf_crime: Temporal_Anomaly_Annotation.txt"
    with pytest.raises(SystemExit, match=r"curve counted each video to a multiple of 16 frames, the added frames "
                                         r"labelled as its last frame, this row .* the added frames labelled normal"):
        evaluate_main([*command, "--params-json", json.dumps(params | {"feature_tail": {"ucf_crime": "loop_pad"}})])
    best = best_on_test(payload["notes"])
    assert best["auc_micro"] == max(curve["auc_micro"]) and best["iteration"] in (2, 4, 6)
    assert best_on_test(load_checkpoint(plain, method)["notes"]) is None


@pytest.mark.parametrize(("convention", "label"), [("synthetic: test labels", "last"),
                                                ("ucf_crime: Temporal_Anomaly_Annotation.txt", "normal")])
def test_the_training_time_curve_labels_padded_frames_as_the_rows_do(tmp_path, convention, label):
    """The curve counts loop-padded features' 16 * T frames (a training job is not handed the rows'
    feature tail) and labels the added frames by the same dataset rule as the rows, recording it."""
    from pipelines.weak_methods import TEST_CURVE_NOTE, EvaluationCurve

    evaluation = _evaluation_split(tmp_path / "test", every=2)
    with h5py.File(evaluation.labels, "a") as handle:
        handle.attrs["label_convention"] = convention
    notes = {}
    curve = EvaluationCurve(evaluation, get_method("ssrl", {}).protocol, notes)
    assert (curve.protocol.pad_to_multiple_of, curve.protocol.padded_frame_label) == (16, label)
    assert notes[TEST_CURVE_NOTE]["padded_frame_label"] == label


def test_a_resumed_stage_keeps_the_test_curve_of_before_its_restart(tmp_path, split, monkeypatch):
    from models.base import TrainInputs
    from pipelines.weak_methods import TEST_CURVE_NOTE

    evaluation = _evaluation_split(tmp_path / "test", every=2)
    inputs = TrainInputs(split.files, split.video_labels, evaluation)
    params = {"iterations": 6, "videos_per_class": 2, "max_seqlen": 30, "checkpoint_every": 4}
    get_method("arnet", params, seed=3).train_stage("train", inputs, None, tmp_path / "straight.pt")
    steps_run = _preempt_at_step(monkeypatch, 5)  # one past the periodic checkpoint of step 4
    with pytest.raises(KeyboardInterrupt):
        get_method("arnet", params, seed=3).train_stage("train", inputs, None, tmp_path / "resumed.pt")
    steps_run.clear()
    get_method("arnet", params, seed=3).train_stage("train", inputs, None, tmp_path / "resumed.pt")
    assert steps_run == [5, 6]
    straight = load_checkpoint(tmp_path / "straight.pt", "arnet")["notes"][TEST_CURVE_NOTE]
    assert load_checkpoint(tmp_path / "resumed.pt", "arnet")["notes"][TEST_CURVE_NOTE] == straight
    assert straight["iterations"] == [2, 4, 6]


def test_ssrl_can_start_a_stage_from_the_previous_stages_best_on_test_weights(tmp_path, split):
    """stage_init best_on_test: stage 2 loads the weights stage 1 had at its best test AUC (kept in its
    checkpoint), not its last ones, and the rows say the numbers were selected on the test split."""
    from models.base import TrainInputs
    from pipelines.weak_methods import BEST_WEIGHTS_NOTE, TEST_CURVE_NOTE

    evaluation = _evaluation_split(tmp_path / "test", every=1)
    inputs = TrainInputs(split.files, split.video_labels, evaluation)
    params = {"iterations": 4, "batch_per_class": 2, "test_eval_every": 1, "test_eval_after": 0, "stage_init": "best_on_test",
              "lr": 0.05}
    method = get_method("ssrl", params, seed=4)
    method.train_stage("stage1", inputs, None, tmp_path / "stage1.pt")
    first = load_checkpoint(tmp_path / "stage1.pt", "ssrl")
    best = first["notes"][BEST_WEIGHTS_NOTE]
    curve = first["notes"][TEST_CURVE_NOTE]
    # (this seed's curve peaks before the last iteration, so best and last weights differ)
    assert int(np.argmax(curve["auc_micro"])) < 3 and any(not torch.equal(best[k], first["model"][k]) for k in best)
    method.train_stage("stage2", inputs, tmp_path / "stage1.pt", tmp_path / "stage2.pt")
    second = load_checkpoint(tmp_path / "stage2.pt", "ssrl")["model"]
    assert all(torch.equal(best[k], second[k]) for k in best)  # loaded and frozen
    assert BEST_WEIGHTS_NOTE in load_checkpoint(tmp_path / "stage2.pt", "ssrl")["notes"]
    assert "best-on-test weights" in method.protocol("synthetic: labels").label_convention
    with pytest.raises(ValueError, match="needs test_eval_every"):
        method.train_stage("stage1", split, None, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"iterations 4, test_eval_every 1 and test_eval_after 50 no stage evaluates"):
        get_method("ssrl", params | {"test_eval_after": 50}, seed=4).train_stage("stage1", inputs, None, tmp_path / "o.pt")
    last = get_method("ssrl", params | {"stage_init": "last", "test_eval_every": 0}, seed=4)
    last.train_stage("stage1", split, None, tmp_path / "plain1.pt")
    # the row says which weights stages 2-4 started from, whichever they were (the papers' protocol
    # is the best ones; a row of the default, the last ones, sat beside the paper's number silently)
    assert "stages 2-4 started from the previous stage's last weights" in last.protocol("synthetic: labels").label_convention
    with pytest.raises(CheckpointError, match="no best-on-test weights"):
        method.train_stage("stage2", inputs, tmp_path / "plain1.pt", tmp_path / "x.pt")


def test_a_resume_point_of_other_settings_or_files_is_discarded(tmp_path, split, monkeypatch, capsys):
    """A stage rerun after an edit (another learning rate, other training files) must not continue
    from weights trained under the old ones: it starts over, saying so."""
    params = {"iterations": 4, "videos_per_class": 2, "max_seqlen": 30, "checkpoint_every": 2}
    out = tmp_path / "stage.pt"
    steps_run = _preempt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        get_method("arnet", params, seed=2).train_stage("train", split, None, out)
    steps_run.clear()
    get_method("arnet", params | {"lr": 1e-3}, seed=2).train_stage("train", split, None, out)
    assert steps_run == [1, 2, 3, 4] and "made under other settings" in capsys.readouterr().out
    clean = tmp_path / "clean.pt"
    get_method("arnet", params | {"lr": 1e-3}, seed=2).train_stage("train", split, None, clean)
    a, b = load_checkpoint(out, "arnet")["model"], load_checkpoint(clean, "arnet")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The same with the training files touched (regenerated) between the two runs.
    steps_run = _preempt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        get_method("arnet", params, seed=2).train_stage("train", split, None, tmp_path / "again.pt")
    os.utime(split.files[0], ns=(split.files[0].stat().st_atime_ns, split.files[0].stat().st_mtime_ns + 10**9))
    steps_run.clear()
    get_method("arnet", params, seed=2).train_stage("train", split, None, tmp_path / "again.pt")
    assert steps_run == [1, 2, 3, 4]
