"""The learned frame methods (every registered method that reads frames and trains) as pipeline
methods: resumable staged training on frames files, deterministic streamed scoring, the checks on
checkpoints and inputs, their paper protocols, and (slow) the DAG end to end on CPU."""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from models import TrainInputs, get_method, get_method_class, method_names
from models.std import std_regularity, std_video_score
from pipelines.frame_clips import ClipSampler, FrameFormat, convert
from pipelines.frame_store import FrameReader, FrameWriter
from pipelines.metrics import postprocess
from pipelines.provenance import sha256_file
from pipelines.training import CheckpointError, StageRun

LEARNED_FRAME_METHODS = [
    # Frame methods that train a network (a GPU job where one is given): what these tests pin is
    # the contract of such training (resume, identical bytes, NaN stops, checkpoint checks).
    name for name in method_names()
    if get_method_class(name).input_kind == "frames" and get_method_class(name).stages
    and get_method_class(name).uses_gpu
]

# Tiny settings of each learned frame method: 32 px and a handful of steps, checkpoints every 2.
TINY = {
    "lgn_net": {"preset": "cpu_budget", "image_size": 32, "epochs": 2, "steps_per_epoch": 2, "batch_size": 2,
                "checkpoint_every": 2},
    "std": {"preset": "cpu_budget", "image_size": 32, "batch_size": 2, "pretrain_iterations": 2, "kmeans_batches": 8,
            "kmeans_n_init": 1, "joint_iterations": 4, "checkpoint_every": 2, "score_batch": 4},
}
TEST_FRAMES = 10  # frames of the scored test video
# The setting that diverges the first stage in one step.
DIVERGING = {"lgn_net": {"lr": 1e30}, "std": {"ae_lr": 1e30}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, as Snakemake gives a job by default, and for every run here: the reference
    weights and a resumed run must sum in the same order to be bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(method: str, **changes) -> dict:
    if method not in TINY:
        pytest.fail(f"learned frame method {method!r} has no tiny settings in TINY: add them")
    return TINY[method] | changes


def write_frames(path: Path, n: int, seed: int) -> Path:
    """A small RGB video: a bright square drifting over noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(30, 60, size=(n, 40, 48, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, 8:18, 2 * t : 2 * t + 10] = (220, 180, 60)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FrameWriter(path, 40, 48, 3, "lz4") as writer:
        writer.append(frames)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("frames")
    return {
        "train": [write_frames(root / "train" / f"{i}.h5", 12, seed=i) for i in range(2)],
        "test": write_frames(root / "test" / "t.h5", TEST_FRAMES, seed=9),
        "short": write_frames(root / "short" / "s.h5", 3, seed=5),
    }


def train_all(method: str, params: dict, files: list[Path], out_dir: Path) -> Path:
    """Run every stage in order, each from the previous stage's checkpoint; the last checkpoint."""
    model = get_method(method, params, seed=0)
    previous = None
    for stage in model.stages:
        out = out_dir / f"{stage}.pt"
        model.train_stage(stage, TrainInputs(files, {p.stem: 0 for p in files}), previous, out)
        previous = out
    return previous


@pytest.fixture(scope="module")
def trained(videos, tmp_path_factory) -> dict[str, Path]:
    """Final checkpoint of each method, trained straight through."""
    return {m: train_all(m, tiny(m), videos["train"], tmp_path_factory.mktemp(m)) for m in LEARNED_FRAME_METHODS}


def test_the_learned_frame_methods_are_registered():
    assert {"lgn_net", "std"} <= set(LEARNED_FRAME_METHODS)
    for name in LEARNED_FRAME_METHODS:
        assert get_method_class(name).supervision == "one_class"
    assert get_method_class("std").stages == ("pretrain_ae", "init_centres", "joint")


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_stopped_and_resumed_training_ends_with_the_same_weights(method, videos, trained, tmp_path, monkeypatch):
    stages = get_method_class(method).stages
    advance = StageRun.advance

    class Preempted(Exception):
        pass

    def advance_then_preempt(self, model, optimizers):
        advance(self, model, optimizers)
        if self.stage == stages[-1] and self.step == 3:  # one step past the periodic checkpoint of step 2
            raise Preempted

    monkeypatch.setattr(StageRun, "advance", advance_then_preempt)
    with pytest.raises(Preempted):
        train_all(method, tiny(method), videos["train"], tmp_path)
    final = tmp_path / f"{stages[-1]}.pt"
    assert not final.exists() and (tmp_path / f"{final.name}.resume" / "step_2.pt").exists()

    steps_run = []

    def advance_and_count(self, model, optimizers):
        advance(self, model, optimizers)
        steps_run.append(self.step)

    monkeypatch.setattr(StageRun, "advance", advance_and_count)
    model = get_method(method, tiny(method), seed=0)
    previous = tmp_path / f"{stages[-2]}.pt" if len(stages) > 1 else None
    model.train_stage(stages[-1], TrainInputs(videos["train"], {}), previous, final)
    assert steps_run == [3, 4], "the restarted stage must continue after its last checkpoint"

    resumed = torch.load(final, weights_only=True)
    straight = torch.load(trained[method], weights_only=True)
    assert resumed["model"].keys() == straight["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert not (tmp_path / f"{final.name}.resume").exists()
    assert straight["config"]["image_size"] == 32 and straight["versions"]["torch"].startswith("2.")
    assert straight["torch_threads"] == torch.get_num_threads()
    assert straight["host"]["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_a_second_training_run_writes_a_byte_identical_checkpoint(method, videos, trained, tmp_path):
    """The resume fingerprint holds the training files' modification times; in the final checkpoint
    it made every run's bytes (and the scores' checkpoint digests) differ."""
    for path in videos["train"]:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = train_all(method, tiny(method), videos["train"], tmp_path)
    assert again.read_bytes() == trained[method].read_bytes()


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_scoring_twice_gives_the_same_scores(method, videos, trained):
    model = get_method(method, tiny(method))
    first = model.score_video(trained[method], videos["test"])
    second = model.score_video(trained[method], videos["test"])
    np.testing.assert_array_equal(first.scores, second.scores)
    skipped = model.protocol("synthetic").skipped_start_frames
    assert first.scores.shape == (TEST_FRAMES,) and first.scores.dtype == np.float32
    assert not first.scored[:skipped].any() and first.scored[skipped:].all()
    assert np.isfinite(first.scores).all() and np.unique(first.scores[skipped:]).size > 1


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_a_checkpoint_of_another_method_or_resolution_is_refused(method, videos, trained, tmp_path):
    other = next(m for m in LEARNED_FRAME_METHODS if m != method)
    with pytest.raises(CheckpointError, match=f"checkpoint of method '{other}', expected '{method}'"):
        get_method(method, tiny(method)).score_video(trained[other], videos["test"])
    bigger = get_method(method, tiny(method, image_size=48))
    with pytest.raises(CheckpointError, match="checkpoint has image_size=32, this run needs image_size=48"):
        bigger.score_video(trained[method], videos["test"])
    stages = get_method_class(method).stages
    if len(stages) > 1:  # a later stage refuses an earlier stage made at another resolution
        with pytest.raises(CheckpointError, match="image_size=48"):
            bigger.train_stage(stages[-1], TrainInputs(videos["train"], {}), trained[method], tmp_path / "x.pt")


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_a_video_shorter_than_a_clip_is_a_clear_error(method, videos, trained, tmp_path):
    model = get_method(method, tiny(method))
    files = [*videos["train"], videos["short"]]
    with pytest.raises(ValueError, match=r"s\.h5: 3 frames, fewer than the \d+ needed for one 5-frame clip"):
        model.train_stage(model.stages[0], TrainInputs(files, {}), None, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="fewer than"):
        model.score_video(trained[method], videos["short"])
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_a_nan_loss_stops_with_a_clear_message_and_no_checkpoint(method, videos, tmp_path):
    if method not in DIVERGING:
        pytest.fail(f"learned frame method {method!r} has no diverging setting in DIVERGING: add one")
    model = get_method(method, tiny(method, checkpoint_every=1) | DIVERGING[method])
    out = tmp_path / f"{model.stages[0]}.pt"
    with pytest.raises(FloatingPointError, match=rf"{method} stage {model.stages[0]} step \d+.*loss is"):
        model.train_stage(model.stages[0], TrainInputs(videos["train"], {}), None, out)
    assert not out.exists()
    for periodic in (tmp_path / f"{out.name}.resume").glob("*.pt"):  # only steps whose loss was finite
        weights = torch.load(periodic, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), periodic


def test_lgn_net_refuses_to_score_with_weights_that_give_nan(videos, trained, tmp_path):
    """A diverged checkpoint makes NaN PSNRs: scoring stops naming the video and the checkpoint
    instead of min-maxing them into a constant score."""
    payload = torch.load(trained["lgn_net"], weights_only=True)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point() and "decoder" in k)
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    broken = tmp_path / "diverged.pt"
    torch.save(payload, broken)
    with pytest.raises(ValueError, match=r"t\.h5: the PSNR or feature distance of 6 frames is not finite .*diverged\.pt"):
        get_method("lgn_net", tiny("lgn_net")).score_video(broken, videos["test"])


def test_frames_are_converted_to_each_network_convention():
    frames = np.zeros((2, 40, 48, 3), np.uint8)
    frames[..., 0] = 255  # pure red
    bgr = convert(frames, FrameFormat(32, "bgr", -1.0, 1.0))
    rgb = convert(frames, FrameFormat(16, "rgb", 0.0, 1.0))
    assert bgr.shape == (2, 3, 32, 32) and rgb.shape == (2, 3, 16, 16)
    assert torch.equal(bgr[:, 2], torch.ones(2, 32, 32)) and torch.equal(bgr[:, 0], -torch.ones(2, 32, 32))
    assert torch.equal(rgb[:, 0], torch.ones(2, 16, 16)) and rgb[:, 1:].abs().max() == 0
    grey = convert(np.full((1, 40, 48, 1), 51, np.uint8), FrameFormat(16, "rgb", 0.0, 1.0))
    assert grey.shape == (1, 3, 16, 16) and torch.allclose(grey, torch.full_like(grey, 0.2))


def test_frames_shrink_as_the_official_loader_or_without_aliasing():
    """LGN-Net's official loader shrinks with OpenCV's bilinear default (no antialiasing): its paper
    preset does too; area interpolation (cpu_budget) averages. Enlarging is bilinear in both."""
    stripes = np.zeros((1, 64, 64, 1), np.uint8)
    stripes[:, :, 1::4] = stripes[:, :, 2::4] = 255  # half the columns: bilinear at a quarter samples only these
    area, bilinear = (convert(stripes, FrameFormat(16, "rgb", 0.0, 1.0, resize)) for resize in ("area", "bilinear"))
    assert torch.allclose(area, torch.full_like(area, 128 / 255))
    assert torch.equal(bilinear, torch.ones_like(bilinear))
    assert (cv2.resize(stripes[0, :, :, 0], (16, 16)) == 255).all(), "what the official loader's cv2.resize gives"
    small = stripes[:, :8, :8]
    assert torch.equal(*(convert(small, FrameFormat(16, "rgb", 0.0, 1.0, resize)) for resize in ("area", "bilinear")))
    assert get_method("lgn_net", {"preset": "paper"}).frame_format.resize == "bilinear"
    assert get_method("lgn_net", {"preset": "cpu_budget"}).frame_format.resize == "area"
    assert get_method("lgn_net", {"preset": "cpu_budget", "resize": "bilinear"}).frame_format.resize == "bilinear"


def test_std_pairs_each_clip_with_the_frame_after_its_target(videos, trained):
    """Frame t holds the score of the clip starting at t - 5; the protocol's per-video min-max
    turns the stored -regularity into the official 1 - minmax(regularity)."""
    method = get_method("std", tiny("std"))
    result = method.score_video(trained["std"], videos["test"])
    network = method.load(trained["std"])
    with FrameReader(videos["test"]) as reader:
        clips = torch.stack([convert(reader.clip(start, 5), method.frame_format) for start in range(TEST_FRAMES - 5)])
    with torch.no_grad():
        regularity = std_regularity(network(clips), clips)
    np.testing.assert_allclose(result.scores[5:], -regularity.numpy(), rtol=1e-5)
    protocol = method.protocol("synthetic")
    official = std_video_score(regularity).numpy()
    np.testing.assert_allclose(postprocess(result.scores[result.scored], protocol), official, atol=1e-5)


def test_std_stages_continue_one_stream_of_batches(videos, tmp_path, monkeypatch):
    """The official script runs STD's three phases in one process from one shuffling loader: the
    K-means and joint stages draw the batches after the previous stage's, not the first ones again."""
    drawn = []
    sample = ClipSampler.sample

    def recording_sample(self, rng, batch):
        clips = sample(self, rng, batch)
        drawn.append(clips)
        return clips

    monkeypatch.setattr(ClipSampler, "sample", recording_sample)
    settings = tiny("std")
    train_all("std", settings, videos["train"], tmp_path)
    fmt = get_method("std", settings).frame_format
    with ClipSampler(videos["train"], 5, fmt, tail=1) as sampler:
        rng = np.random.default_rng(0)
        one_stream = [sample(sampler, rng, settings["batch_size"]) for _ in drawn]
    assert len(drawn) == 2 + 8 + 4
    for index, (ours, expected) in enumerate(zip(drawn, one_stream, strict=True)):
        assert torch.equal(ours, expected), f"batch {index}"


def test_lgn_net_test_time_memory_update_is_gated_by_gamma(videos, trained):
    never = get_method("lgn_net", tiny("lgn_net", test_gamma=0.0)).score_video(trained["lgn_net"], videos["test"])
    always = get_method("lgn_net", tiny("lgn_net", test_gamma=1e9)).score_video(trained["lgn_net"], videos["test"])
    assert never.scored.sum() == always.scored.sum() == TEST_FRAMES - 4
    assert not np.array_equal(never.scores, always.scores)


def test_lgn_nets_test_memory_is_carried_from_video_to_video_through_the_score_files(videos, trained, tmp_path):
    """The official evaluation carries the memory across test videos: the second video of a chain
    starts from what the first left, which the first's score file stores, and only from the same
    checkpoint and parameters; per_video starts every video from the trained memory."""
    from pipelines.score import score

    params = tiny("lgn_net", test_gamma=1e9)  # every frame updates the memory
    checkpoint, video = trained["lgn_net"], videos["test"]
    first = score("lgn_net", video, tmp_path / "a.h5", params, 0, checkpoint)
    second = score("lgn_net", video, tmp_path / "b.h5", params, 0, checkpoint, previous=tmp_path / "a.h5")
    assert not np.array_equal(first.scores, second.scores), "the second video started from the trained memory"
    method = get_method("lgn_net", params)
    again = method.score_video(checkpoint, video, first.state)
    np.testing.assert_array_equal(again.scores, second.scores)
    np.testing.assert_array_equal(again.state["memory"], second.state["memory"])
    with h5py.File(tmp_path / "b.h5", "r") as handle:
        assert handle.attrs["state_from"] == str(tmp_path / "a.h5")
        np.testing.assert_array_equal(handle["state/memory"][()], second.state["memory"])
    assert not np.array_equal(first.state["memory"], get_method("lgn_net", params).load(checkpoint).memory.items.numpy())

    with pytest.raises(ValueError, match=rf"{tmp_path / 'a.h5'}: scored by another method, parameters or checkpoint"):
        score("lgn_net", video, tmp_path / "c.h5", params | {"test_lambda": 0.5}, 0, checkpoint, previous=tmp_path / "a.h5")
    per_video = tiny("lgn_net", test_gamma=1e9, test_memory="per_video")
    alone = score("lgn_net", video, tmp_path / "d.h5", per_video, 0, checkpoint)
    np.testing.assert_array_equal(alone.scores, first.scores)
    with h5py.File(tmp_path / "d.h5", "r") as handle:
        assert "state" not in handle
    with pytest.raises(ValueError, match="scores each video on its own; --previous"):
        score("lgn_net", video, tmp_path / "e.h5", per_video, 0, checkpoint, previous=tmp_path / "a.h5")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'd.h5'}: holds no lgn_net state"):
        score("lgn_net", video, tmp_path / "f.h5", params, 0, checkpoint, previous=tmp_path / "d.h5")
    assert not any((tmp_path / f"{n}.h5").exists() for n in "cef")
    assert "memory carried from each video to the next" in method.protocol("").label_convention
    assert "memory reset to the trained one" in get_method("lgn_net", per_video).protocol("").label_convention


def test_protocols_state_the_paper_conventions():
    lgn = get_method("lgn_net", {"preset": "paper"}).protocol("ped2 labels")
    assert (lgn.normalisation, lgn.skipped_start_frames, lgn.smoothing_sigmas) == ("none", 4, ())
    assert "lambda=0.6" in lgn.label_convention and "gamma=0.009" in lgn.label_convention
    std = get_method("std", {}).protocol("ped2 labels")
    assert (std.normalisation, std.skipped_start_frames, std.pooling) == ("minmax_per_video", 5, "micro")
    assert std.label_convention.startswith("ped2 labels; std")


def test_presets_fill_unset_keys_and_reject_unknown_ones():
    paper = get_method("std", {"preset": "paper", "joint_iterations": None})
    assert (paper.cfg.image_size, paper.cfg.joint_iterations, paper.cfg.ae_lr) == (256, 100_000, 1e-5)
    budget = get_method("lgn_net", {"preset": "cpu_budget", "lr": 1e-3})
    assert (budget.cfg.image_size, budget.cfg.lr, budget.settings["steps_per_epoch"]) == (64, 1e-3, 100)
    with pytest.raises(ValueError, match="unknown parameters \\['image_sise'\\]"):
        get_method("lgn_net", {"image_sise": 64})
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        get_method("std", {"preset": "fast"})


@pytest.mark.slow
@pytest.mark.parametrize("method", LEARNED_FRAME_METHODS)
def test_the_dag_trains_scores_and_reports_each_seed_on_cpu(method, tmp_path):
    """`seed: [0, 1]`: the method trains and scores once per seed, the baseline (nothing to train)
    once; its row is the mean and sample std of the per-seed rows; adding a seed runs only that seed."""
    from pipelines.training import load_checkpoint
    from tests.workflow_helpers import merge_config, planned_jobs, run_snakemake, tiny_config

    config = tiny_config(n_train=2, n_test=2, n_frames=24, height=48, width=64)
    config["methods"][method].update(tiny(method), enabled=True)
    config["seed"] = [0, 1]
    run_snakemake(tmp_path, config)
    results = tmp_path / "results"

    stages = get_method_class(method).stages
    for stage in stages:
        for seed in (0, 1):
            assert (results / "models" / method / "synthetic" / f"seed_{seed}" / f"{stage}.pt").is_file()
    weights = [load_checkpoint(results / "models" / method / "synthetic" / f"seed_{s}" / f"{stages[-1]}.pt", method)
               for s in (0, 1)]
    assert [w["seed"] for w in weights] == [0, 1]
    first = weights[0]["model"]
    assert any(not torch.equal(first[k], weights[1]["model"][k]) for k in first), "two seeds, identical weights"
    assert [p.name for p in sorted((results / "scores" / "tde" / "synthetic").iterdir())] == ["seed_0"]

    by_seed = pd.read_csv(results / "report" / "auc_by_seed.csv")
    ours = by_seed[by_seed.method == method]
    assert list(ours.seed) == [0, 1] and list(by_seed[by_seed.method == "tde"].seed) == [0]
    table = pd.read_csv(results / "report" / "auc_table.csv").set_index("method")
    row = table.loc[method]
    assert (row.dataset, row.split, row.n_videos, row.seeds) == ("synthetic", "test", 2, "0 1")
    assert 0 <= row.auc_micro <= 100 and np.isfinite(row.auc_micro)
    assert row.auc_micro == pytest.approx(ours.auc_micro.mean(), abs=0.01)
    assert row.auc_micro_std == pytest.approx(ours.auc_micro.std(ddof=1), abs=0.01)
    assert str(table.loc["tde"].seeds) == "0" and np.isnan(table.loc["tde"].auc_micro_std)
    record = json.loads((results / "eval" / method / "synthetic" / "seed_1" / "test.json").read_text())
    assert record["seed"] == 1
    assert record["protocol"]["skipped_start_frames"] == get_method(method, tiny(method)).protocol("").skipped_start_frames
    score_file = sorted((results / "scores" / method / "synthetic" / "seed_1" / "test").glob("*.h5"))[0]
    with h5py.File(score_file, "r") as handle:
        attrs = dict(handle.attrs)
    assert attrs["checkpoint_sha256"] == sha256_file(results / "models" / method / "synthetic" / "seed_1"
                                                     / f"{stages[-1]}.pt")
    assert attrs["input_sha256"] == sha256_file(tmp_path / attrs["input"]), "the score file names the bytes it scored"
    if get_method(method, tiny(method)).carries_state():  # the second video started where the first ended
        with h5py.File(sorted(score_file.parent.glob("*.h5"))[1], "r") as handle:
            assert handle.attrs["state_from"] == str(score_file.relative_to(tmp_path))

    config["seed"] = [0, 1, 2]
    jobs = planned_jobs(tmp_path, config)
    assert jobs == {"train_stage": len(stages), "score_video": 2, "evaluate": 1, "report_tables": 1, "all": 1}

    config["seed"] = [0, 1]
    assert planned_jobs(tmp_path, merge_config(copy.deepcopy(config), {"methods": {method: RUNTIME_ONLY[method]}})) == {}, \
        "how jobs run (resume points, the scoring batch) reruns nothing"
    if method in LAST_STAGE_ONLY:
        jobs = planned_jobs(tmp_path, merge_config(copy.deepcopy(config), {"methods": {method: LAST_STAGE_ONLY[method]}}))
        assert jobs == {"train_stage": 2, "score_video": 4, "evaluate": 2, "plot_timelines": 1, "report_tables": 1,
                        "all": 1}, "a key of the last stage reruns that stage of every seed and what follows, not the others"
    if method in SCORING_ONLY:
        config["methods"][method].update(SCORING_ONLY[method])
        jobs = planned_jobs(tmp_path, config)
        assert jobs == {"score_video": 4, "evaluate": 2, "plot_timelines": 1, "report_tables": 1, "all": 1}, \
            "a parameter only scoring reads reruns the scoring of every seed, never the training"


SCORING_ONLY = {"lgn_net": {"test_lambda": 0.5}}
RUNTIME_ONLY = {"lgn_net": {"checkpoint_every": 3}, "std": {"checkpoint_every": 3, "score_batch": 3}}
LAST_STAGE_ONLY = {"std": {"joint_iterations": 5}}


def test_the_paper_overlay_plans_three_seeds_of_gpu_training_on_ped2(shared_data, tmp_path):
    """configs/ped2_paper.yaml (the GPU command of the README): every training stage of both methods
    once per seed, each asking for a GPU, each with the paper preset; every test video scored per seed."""
    from tests.workflow_helpers import REPO, base_config, merge_config, run_snakemake

    config = base_config()
    for overlay in ("ped2.yaml", "ped2_paper.yaml"):
        merge_config(config, yaml.safe_load((REPO / "configs" / overlay).read_text()))
    config["datasets"]["ped2"].update(root=str(shared_data / "ped2"), labels=str(shared_data / "ped2" / "frame_labels_ped2.npy"))
    out = run_snakemake(tmp_path, config, "-n", "-p").stdout

    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.MULTILINE))
    stages = len(get_method_class("lgn_net").stages) + len(get_method_class("std").stages)
    n_test = len(list((shared_data / "ped2" / "testing" / "frames").iterdir()))
    assert int(counts["train_stage"]) == 3 * stages
    assert int(counts["score_video"]) == 3 * 2 * n_test + n_test  # the baseline once
    trainings = re.findall(r"python -m pipelines\.train (\w+) (\w+) .*--params-json '(\{.*?\})' --runtime-json '\{.*?\}' --seed (\d)", out)
    assert sorted({(m, s) for m, _, _, s in trainings}) == [(m, s) for m in ("lgn_net", "std") for s in "012"]
    assert {json.loads(params)["preset"] for _, _, params, _ in trainings} == {"paper"}
    train_jobs = out.split("rule train_stage:")[1:]
    assert len(train_jobs) == 3 * stages and all(re.search(r"resources:.*\bgpu=1\b", job) for job in train_jobs)
    # LGN-Net's test memory is carried across the videos (the official evaluation): each of its
    # scoring jobs after the first starts from the one before's score file; STD's stand alone.
    scorings = re.findall(r"python -m pipelines\.score (\w+) \S+ '?results/scores/\w+/ped2/seed_0/test/(\d+)\.h5'? (.*)", out)
    chained = {(m, v): re.search(r"--previous '?results/scores/lgn_net/ped2/seed_0/test/(\d+)\.h5", rest)
               for m, v, rest in scorings}
    assert len(chained) == 3 * n_test
    assert all((chained[m, v] is None) == (m != "lgn_net" or v == "01") for m, v in chained)
    assert all(int(found.group(1)) == int(v) - 1 for (m, v), found in chained.items() if found)

