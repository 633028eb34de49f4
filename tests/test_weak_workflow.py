"""The weakly-supervised methods inside the DAG: features, AR-Net and SSRL on the synthetic weak split, report rows."""
from __future__ import annotations

import hashlib
import json
import re
import shlex

import h5py
import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config_check import load_schema
from pipelines.provenance import config_hash
from tests.conftest import REPO
from tests.workflow_helpers import merge_config, planned_jobs, run_snakemake, tiny_config

OVERLAY = REPO / "configs" / "weak_tiny.yaml"


def weak_config(**features) -> dict:
    """The shipped config with the CPU smoke overlay of the weak methods (random backbones allowed there)."""
    config = merge_config(tiny_config(), yaml.safe_load(OVERLAY.read_text()))
    config["features"].update(features)
    return config


@pytest.mark.parametrize("overlay", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_overlay_configs_fit_the_schema(overlay):
    config = merge_config(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(overlay.read_text()))
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    assert [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(config)] == []


def test_missing_weights_stop_the_run_naming_where_to_put_them(tmp_path):
    config = weak_config(allow_random_weights=False, weights_dir=str(tmp_path / "weights"))
    out = run_snakemake(tmp_path / "work", config, "-n", check=False)
    assert out.returncode != 0
    assert f"Put the file at {tmp_path / 'weights' / 'rgb_imagenet.pt'}" in out.stdout
    assert "features.allow_random_weights: true" in out.stdout


def test_weights_released_without_a_checksum_need_a_pinned_one_before_the_run_starts(tmp_path):
    """The ResNet-50 I3D file was released without a checksum: the run stops naming the key and the
    file's sha256 until the user pins it, and the extraction jobs check the file against the pin."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "i3d_baseline_32x2_IN_pretrain_400k.pkl").write_bytes(b"a downloaded file")
    digest = hashlib.sha256(b"a downloaded file").hexdigest()
    out = run_snakemake(tmp_path / "work", weak_config(weights_dir=str(weights)), "-n", check=False)
    assert out.returncode != 0
    assert "features.weights_sha256.r50_nonlocal_k400" in out.stdout and digest in out.stdout
    pinned = weak_config(weights_dir=str(weights), weights_sha256={"r50_nonlocal_k400": digest})
    out = run_snakemake(tmp_path / "work", pinned, "-n", "-p")
    assert f"--weights-sha256 r50_nonlocal_k400={digest}" in out.stdout


@pytest.mark.slow
def test_pinning_weights_already_in_use_redoes_no_extraction(tmp_path):
    """A pin checks the weights file and changes no feature: it reaches the jobs as a resource, so
    adding one to a config whose features exist reruns nothing."""
    until = ("--until", "extract_features")
    run_snakemake(tmp_path, weak_config(), *until)
    pinned = weak_config(weights_sha256={"r50_nonlocal_k400": "0" * 64})
    out = run_snakemake(tmp_path, pinned, "-n", *until).stdout
    assert re.search(r"^total\s+0$", out, re.M) and not re.search(r"^extract_features\s+\d", out, re.M), out[-2000:]


@pytest.mark.slow
def test_a_row_hash_follows_the_feature_settings_and_not_how_jobs_run(tmp_path):
    """Two configs whose AR-Net numbers differ (the flow stream) must not share a config hash; how
    jobs run (batch size, device), how frames are stored and how demo videos are split into jobs
    change no number, and neither do another dataset's published features, so they leave it."""

    def arnet_hash(config) -> str:
        out = run_snakemake(tmp_path / "work", config, "-n", "-p").stdout
        found = {config_hash(json.loads(shlex.split(line)[shlex.split(line).index("--run-config") + 1]))
                 for line in out.splitlines() if "pipelines.evaluate arnet " in line}
        assert len(found) == 1, out[-3000:]
        return found.pop()

    base = arnet_hash(weak_config())
    assert arnet_hash(weak_config(flow=True)) != base
    assert arnet_hash(weak_config(batch_size=1, device="cpu", spatial_scale=0.07)) == base
    config = weak_config()
    config["frames"]["compression"] = "none"
    config["datasets"]["synthetic"]["videos_per_job"] = 1
    assert arnet_hash(config) == base
    # Another dataset's published features are not this row's business.
    config["features"]["published_dirs"] = {"ucf_crime": {"rtfm": str(tmp_path)}}
    assert arnet_hash(config) == base


def test_published_features_replace_extraction(tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    config = weak_config()
    config["methods"]["ssrl"]["enabled"] = False
    config["features"]["presets"] = {"arnet": "rtfm"}
    (tmp_path / "other").mkdir()
    config["features"]["published_dirs"] = {"synthetic": {"rtfm": [str(tmp_path / "other"), str(published)]}}
    synthetic = config["datasets"]["synthetic"]
    names = [f"train_{i:03d}" for i in range(synthetic["n_train"])]
    names += [f"test_{i:03d}" for i in range(synthetic["n_test"])]
    names += [f"trainabn_{i:03d}" for i in range(synthetic["n_train_abnormal"])]
    for name in names:
        np.save(published / f"{name}_i3d.npy", np.zeros((2, 10, 8), np.float32))
    jobs = planned_jobs(tmp_path / "work", config)
    assert jobs["published_features"] == len(names) and "extract_features" not in jobs
    # SSRL on published RTFM features: its patch features, never published, are extracted beside them.
    config["methods"]["ssrl"]["enabled"] = True
    jobs = planned_jobs(tmp_path / "work", config)
    assert jobs["published_clip_features"] == jobs["published_features"] == len(names)
    assert "extract_features" not in jobs
    config["features"]["published_dirs"] = {"synthetic": {"ssrl_patches": str(published)}}
    out = run_snakemake(tmp_path / "work", config, "-n", check=False)
    assert out.returncode != 0 and "used with published rtfm features only" in out.stdout


def test_the_ssrl_end_to_end_ablation_reads_ssrls_features_and_trains_one_stage(tmp_path):
    config = weak_config()
    before = planned_jobs(tmp_path / "work", config)
    config["methods"]["ssrl_end_to_end"] = dict(config["methods"]["ssrl"], enabled=True)
    config["methods"]["ssrl_end_to_end"].pop("stage_init", None)
    after = planned_jobs(tmp_path / "work", config)
    assert after["train_stage"] == before["train_stage"] + 1, "one stage, beside SSRL's four"
    assert after["extract_features"] == before["extract_features"], "the same feature files as SSRL's"
    assert after["evaluate"] == before["evaluate"] + 1


@pytest.mark.slow
def test_weak_methods_run_end_to_end_on_the_synthetic_weak_split(tmp_path):
    workdir = tmp_path / "work"
    config = weak_config()
    config["methods"]["arnet"]["test_eval_every"] = 1  # AR-Net follows its test split; SSRL does not
    run_snakemake(workdir, config)
    results = workdir / "results"

    table = pd.read_csv(results / "report" / "auc_table.csv").set_index("method")
    assert set(table.index) == {"arnet", "ssrl"}
    for method, features in (("arnet", "features arnet (extracted; inception_k400_rgb random-init"),
                             ("ssrl", "features rtfm_ssrl_patches (extracted; r50_nonlocal_k400 random-init")):
        row = table.loc[method]
        assert row.split == "weak_test" and 0 <= row.auc_micro <= 100 and row.n_videos == 2
        assert features in row.protocol and "NOT COMPARABLE to the paper" in row.protocol
        assert "snippet scores expanded x16" in row.protocol
    # AR-Net's features drop each video's partial last window, whose frames are left out of its AUC.
    assert table.loc["arnet"].n_frames < table.loc["ssrl"].n_frames
    # The best test AUC of AR-Net's training (iterations 1 to 3), never below its last iteration's, which
    # is the row's own number; SSRL followed nothing.
    assert table.loc["arnet"].auc_micro_best_on_test >= table.loc["arnet"].auc_micro - 1e-6
    assert pd.isna(table.loc["ssrl"].auc_micro_best_on_test)
    assert "auc_micro_best_on_test: the best of test AUCs taken every 1 iterations" in table.loc["arnet"].protocol
    assert "best_on_test" not in table.loc["ssrl"].protocol
    # AR-Net's FAR beside its AUC (empty where the split has no normal test video); SSRL's papers report none
    arnet = json.loads((results / "eval" / "arnet" / "synthetic" / "seed_0" / "weak_test.json").read_text())
    normal_videos = arnet["n_far_videos"]
    assert f"far: share of the {normal_videos} normal videos' frames scored >= 0.5" in table.loc["arnet"].protocol
    assert (0 <= table.loc["arnet"].far <= 100) if normal_videos else pd.isna(table.loc["arnet"].far)
    assert pd.isna(table.loc["ssrl"].far)
    best = json.loads((results / "eval" / "arnet" / "synthetic" / "seed_0" / "weak_test.json").read_text())["best_on_test"]
    assert best["every"] == 1 and best["iteration"] in (1, 2, 3)

    record = json.loads((results / "eval" / "ssrl" / "synthetic" / "seed_0" / "weak_test.json").read_text())
    assert record["protocol"]["snippet_length"] == 16
    # Loop-padded features: each video counts 16 * ceil(n/16) frames, as RTFM's and SSRL's gt files;
    # AR-Net's dropped tails are not padded.
    assert record["protocol"]["pad_to_multiple_of"] == 16 and record["n_frames"] % 16 == 0
    assert arnet["protocol"]["pad_to_multiple_of"] == 0
    features = sorted((results / "features" / "rtfm_ssrl_patches" / "synthetic").glob("*/*.h5"))
    assert len(features) == 4  # 1 normal + 1 abnormal training video, 2 test videos, each extracted once
    with h5py.File(features[0]) as handle:
        assert handle["features"].shape[1:] == (10, 2048) and handle["patches_4x7"].shape[1:] == (28, 2048)
        assert json.loads(handle.attrs["backbones"]) == {"r50_nonlocal_k400": "random-init"}
        assert handle.attrs["n_snippets"] == -(-handle.attrs["n_frames"] // 16)
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        assert (results / "models" / "ssrl" / "synthetic" / "seed_0" / f"{stage}.pt").is_file()

    assert "Nothing to be done" in run_snakemake(workdir, config).stdout
    # Frames deleted once the features are made (they are an intermediate file of these methods): a
    # labels job to redo reads the frames jobs' counts, so no frames (and no features) are made again.
    for frames in (results / "frames" / "synthetic").glob("*/*.h5"):
        frames.unlink()
    assert "Nothing to be done" in run_snakemake(workdir, config, "-n").stdout
    out = run_snakemake(workdir, config, "-n", "--forcerun", "synthetic_labels").stdout
    assert "synthetic_labels" in out and "extract_frames" not in out and "extract_features" not in out, out[-3000:]
