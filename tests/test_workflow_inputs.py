"""The DAG on datasets laid out as users have them: all six at once, awkward paths, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import encode_video, moving_square_frames
from tests.workflow_helpers import planned_jobs, run_snakemake, tiny_config

pytestmark = pytest.mark.slow


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _all_six_config(data, root):
    """Raw folders laid out as each dataset ships (empty placeholder files), with the real label files."""
    gt = data / "gt"
    for i in range(1, 17):
        _touch(root / "avenue" / "training_videos" / f"{i:02d}.avi")
    for i in range(1, 22):
        _touch(root / "avenue" / "testing_videos" / f"{i:02d}.avi")
    weak = (data / "lists" / "shanghaitech_weak" / "SH_Train.txt").read_text().split()
    weak += (data / "lists" / "shanghaitech_weak" / "SH_Test.txt").read_text().split()
    for video in weak:
        if len(video.split("_")[1]) == 3:
            _touch(root / "shanghaitech" / "training" / "videos" / f"{video}.avi")
    for mask in (gt / "shanghaitech" / "test_frame_mask").glob("*.npy"):
        (root / "shanghaitech" / "testing" / "frames" / mask.stem).mkdir(parents=True)
    for listing in ("Anomaly_Train.txt", "Anomaly_Test.txt"):
        for line in (gt / "ucf_crime" / listing).read_text().split():
            _touch(root / "ucf_crime" / line)
    for label in (gt / "ubnormal").glob("*_tracks.txt"):
        name = label.name.removesuffix("_tracks.txt")
        _touch(root / "ubnormal" / f"Scene{name.split('_')[2]}" / f"{name}.mp4")
    config = tiny_config()
    datasets = config["datasets"]
    datasets["ped2"].update(enabled=True, root=str(data / "ped2"), labels=str(data / "ped2" / "frame_labels_ped2.npy"))
    datasets["avenue"].update(enabled=True, root=str(root / "avenue"), labels=str(gt / "avenue" / "testing_label_mask"))
    datasets["shanghaitech"].update(
        enabled=True, root=str(root / "shanghaitech"), labels=str(gt / "shanghaitech" / "test_frame_mask"),
        weak_lists=str(data / "lists" / "shanghaitech_weak"),
    )
    datasets["ucf_crime"].update(
        enabled=True, root=str(root / "ucf_crime"), lists=str(gt / "ucf_crime"),
        labels=str(gt / "ucf_crime" / "Temporal_Anomaly_Annotation.txt"),
    )
    datasets["ubnormal"].update(enabled=True, root=str(root / "ubnormal"), labels=str(gt / "ubnormal"))
    return config


def test_dry_run_builds_the_dag_for_all_six_datasets(shared_data, tmp_path):
    config = _all_six_config(shared_data, tmp_path / "raw")
    jobs = planned_jobs(tmp_path / "work", config)
    labels = {rule for rule in jobs if rule.endswith("_labels")}
    assert labels == {f"{d}_labels" for d in ("ped2", "avenue", "shanghaitech", "ucf_crime", "ubnormal", "synthetic")}
    # ped2 16+12, avenue 16+21, shanghaitech 330 training videos named in the weak lists (placeholders) + 107 test,
    # ucf_crime 800 normal training + 290 test, ubnormal 211 test (no normal training placeholders), synthetic 2+4.
    assert jobs["extract_frames"] == 28 + 37 + 437 + 1090 + 211 + 6, jobs
    assert jobs["evaluate"] == 6 and jobs["score_video"] == 12 + 21 + 107 + 290 + 211 + 4


def test_a_training_split_without_videos_stops_only_a_method_that_trains_on_it(shared_data, tmp_path):
    """An empty training folder with the baseline (which trains on nothing) is fine; with LGN-Net it
    stops the DAG build by name (its training job failed with argparse's usage message)."""
    root = tmp_path / "ped2"
    (root / "training" / "frames").mkdir(parents=True)
    (root / "testing" / "frames" / "01").mkdir(parents=True)
    config = tiny_config()
    config["datasets"]["synthetic"]["enabled"] = False
    config["datasets"]["ped2"].update(enabled=True, root=str(root), labels=str(shared_data / "ped2" / "frame_labels_ped2.npy"))
    assert planned_jobs(tmp_path / "baseline", config)["score_video"] == 1
    config["methods"]["lgn_net"]["enabled"] = True
    proc = run_snakemake(tmp_path / "trained", config, "-n", check=False)
    assert proc.returncode != 0
    assert (f"config key 'datasets.ped2': no videos of its train split found under {root} (expected: the UCSD Ped2 "
            "folder") in proc.stdout and "and method lgn_net trains on it" in proc.stdout, proc.stdout[-3000:]


def _write_masks(path, abnormal):
    """An Avenue ``<N>_label.mat``: one pixel mask per frame (a cell array volLabel), set where abnormal."""
    import scipy.io

    masks = np.empty((1, len(abnormal)), dtype=object)
    for t, flag in enumerate(abnormal):
        masks[0, t] = np.full((4, 6), flag, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"volLabel": masks})


def _avenue_like(root, lengths, seed=0):
    """A small dataset in Avenue's layout: real encoded videos and mask label files."""
    for i, n in enumerate(lengths["train"], 1):
        encode_video(root / "training_videos" / f"{i:02d}.avi", moving_square_frames(n, seed=seed + i))
    for i, n in enumerate(lengths["test"], 1):
        frames = moving_square_frames(n, seed=seed + 10 + i)
        abnormal = np.zeros(n, np.uint8)
        abnormal[n // 2 :] = 1
        frames[n // 2 :, 30:40, 10:50] = 255  # something appears: more temporal energy at its onset
        encode_video(root / "testing_videos" / f"{i:02d}.avi", frames)
        _write_masks(root / "testing_label_mask" / f"{i}_label.mat", abnormal)
    return root


def _avenue_config(root):
    """The config of an Avenue-like folder: its few test videos are named as the subset to score."""
    config = tiny_config()
    config["datasets"]["synthetic"]["enabled"] = False
    subset = sorted(p.stem for p in (root / "testing_videos").glob("*.avi"))
    config["datasets"]["avenue"].update(enabled=True, root=str(root), labels=str(root / "testing_label_mask"),
                                        test_subset=subset)
    return config


def test_paths_with_spaces_and_quotes(tmp_path):
    root = _avenue_like(tmp_path / "raw data 'quoted' \"twice\"", {"train": [20], "test": [24, 30]})
    work = tmp_path / "work dir 'x'"
    run_snakemake(work, _avenue_config(root))
    assert (work / "results" / "report" / "auc_table.csv").is_file()
    assert len(list((work / "results" / "frames" / "avenue" / "test").glob("*.h5"))) == 2


def test_truncated_video_fails_naming_it_and_leaves_no_frames(tmp_path):
    root = _avenue_like(tmp_path / "raw", {"train": [20], "test": [24, 60]})
    victim = root / "testing_videos" / "02.avi"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    proc = run_snakemake(tmp_path / "work", _avenue_config(root), "--keep-going", check=False)
    assert proc.returncode != 0
    assert "02.avi: ffmpeg could not decode the whole video" in proc.stdout
    frames = tmp_path / "work" / "results" / "frames" / "avenue" / "test"
    assert (frames / "01.h5").is_file() and not list(frames.glob("*02*"))


def test_zero_frame_video_fails_naming_it(tmp_path):
    root = _avenue_like(tmp_path / "raw", {"train": [20], "test": [24]})
    empty = root / "testing_videos" / "02.avi"
    _write_masks(root / "testing_label_mask" / "2_label.mat", np.zeros(1, np.uint8))
    import subprocess

    from pipelines.ffmpeg_tools import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "color=s=64x48:r=25", "-frames:v", "0",
                    str(empty)], check=True)
    proc = run_snakemake(tmp_path / "work", _avenue_config(root), check=False)
    assert proc.returncode != 0 and "02.avi: the video has no frames" in proc.stdout
    assert not list((tmp_path / "work" / "results" / "frames" / "avenue" / "test").glob("*02*"))


def test_label_count_mismatch_fails_naming_both_counts(tmp_path):
    root = _avenue_like(tmp_path / "raw", {"train": [20], "test": [24, 30]})
    _write_masks(root / "testing_label_mask" / "2_label.mat", np.zeros(29, np.uint8))
    proc = run_snakemake(tmp_path / "work", _avenue_config(root), check=False)
    assert proc.returncode != 0
    assert "avenue/02: 29 labels in" in proc.stdout and "2_label.mat but the video has 30 frames" in proc.stdout
    assert not (tmp_path / "work" / "results" / "labels" / "avenue" / "test.h5").exists()


def test_missing_label_file_stops_before_the_dag(tmp_path):
    root = _avenue_like(tmp_path / "raw", {"train": [20], "test": [24]})
    (root / "testing_label_mask" / "1_label.mat").unlink()
    proc = run_snakemake(tmp_path / "work", _avenue_config(root), check=False)
    assert proc.returncode != 0 and "config key 'datasets.avenue.labels'" in proc.stdout
    assert not (tmp_path / "work" / "results").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["datasets"].update(mydata={"enabled": True}), "config key 'datasets.mydata': unknown dataset"),
        (lambda c: c["datasets"]["synthetic"].update(n_tset=3), "config key 'datasets.synthetic.n_tset' is not allowed"),
    ],
)
def test_bad_config_stops_before_the_dag(tmp_path, edit, message):
    config = tiny_config()
    edit(config)
    proc = run_snakemake(tmp_path, config, check=False)
    assert proc.returncode != 0 and message in proc.stdout
    assert not (tmp_path / "results").exists()


def test_training_jobs_get_only_the_keys_training_reads(tmp_path):
    """Keys read only when scoring (LGN-Net's lambda and gamma, STG-NF's test stride) and another
    dataset's per_dataset values are left out of a training job's parameters, so changing them
    never retrains; the scoring jobs still get them. Another dataset's per_dataset values reach
    neither the evaluation's parameters nor the row's config (and its hash)."""
    import json
    import shlex

    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["lgn_net"].update(enabled=True, preset="cpu_budget", test_lambda=0.5)
    config["methods"]["stg_nf"].update(enabled=True, test_stride=2)
    config["datasets"]["synthetic"]["frames"] = {"compression": "none", "pixel_format": "gray"}
    out = run_snakemake(tmp_path, config, "-n", "-p").stdout
    commands = [line for line in out.splitlines() if "--params-json" in line]

    def params(module, method):
        found = []
        for command in commands:
            if f"pipelines.{module} {method} " in command:
                tokens = shlex.split(command)
                found.append(json.loads(tokens[tokens.index("--params-json") + 1]))
        assert found, f"no pipelines.{module} command of {method}"
        return found[0]

    assert "test_lambda" not in params("train", "lgn_net") and params("score", "lgn_net")["test_lambda"] == 0.5
    assert "test_stride" not in params("train", "stg_nf") and params("score", "stg_nf")["test_stride"] == 2
    assert "per_dataset" not in params("train", "stg_nf")  # UBnormal's seg_len is not the synthetic set's business
    evaluation = next(shlex.split(c) for c in commands if "pipelines.evaluate stg_nf synthetic " in c)
    assert json.loads(evaluation[evaluation.index("--params-json") + 1])["test_stride"] == 2
    for option in ("--params-json", "--run-config"):
        assert "ubnormal" not in evaluation[evaluation.index(option) + 1], option
    # How frames are stored is not a number of the table; how they look is.
    row_config = json.loads(evaluation[evaluation.index("--run-config") + 1])
    assert "compression" not in json.dumps(row_config) and row_config["frames"]["pixel_format"] == "gray"


def _commands(out, module):
    """The shell commands of a dry run (-p) that run ``python -m pipelines.<module>``, as argument lists."""
    import shlex

    return [shlex.split(line) for line in out.splitlines() if f"python -m pipelines.{module} " in line]


def _option(tokens, name):
    return tokens[tokens.index(name) + 1]


def test_how_jobs_run_stays_out_of_the_jobs_params_and_the_rows_config(tmp_path):
    """Resume-point intervals, inference batch sizes and GENet's weights cache folder change how jobs
    run, not a number: they reach the jobs as resources (--runtime-json, --batch-size), never their
    params (whose change reruns them) nor a row's config."""
    import json

    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["std"].update(enabled=True, checkpoint_every=7, score_batch=3)
    config["methods"]["genet"].update(enabled=True, allow_random_backbone=True, checkpoint_every_steps=11,
                                      tube_batch_size=5, i3d_cache_dir=str(tmp_path / "cache"))
    out = run_snakemake(tmp_path / "run", config, "-n", "-p").stdout
    runtime = {"std": {"checkpoint_every": 7, "score_batch": 3},
               "genet": {"checkpoint_every_steps": 11, "i3d_cache_dir": str(tmp_path / "cache"), "tube_batch_size": 5}}
    for module in ("train", "score"):
        commands = _commands(out, module)
        assert {tokens[tokens.index(f"pipelines.{module}") + 1] for tokens in commands} == set(runtime)
        for tokens in commands:
            method = tokens[tokens.index(f"pipelines.{module}") + 1]
            params = json.loads(_option(tokens, "--params-json"))
            assert not set(runtime[method]) & set(params), (module, method, params)
            assert json.loads(_option(tokens, "--runtime-json")) == runtime[method]
    evaluations = _commands(out, "evaluate")
    assert len(evaluations) == 2
    for tokens in evaluations:
        for option in ("--params-json", "--run-config"):
            assert not any(key in _option(tokens, option) for key in ("checkpoint_every", "score_batch", "tube_batch",
                                                                      "i3d_cache")), option
    tubes = _commands(out, "poses.tubes")
    assert tubes and all("--cache-dir" not in t and _option(t, "--batch-size") == "5" for t in tubes)
    assert all("batch_size" not in json.loads(_option(t, "--settings-json")) for t in tubes)


def test_a_training_stage_gets_only_the_keys_it_reads(tmp_path):
    """STD and GENet list the keys of each stage: a key of a later stage leaves the earlier stages'
    params, and so the earlier stages, be; the keys a stage's saved state carries (STD's two
    optimisers) belong to every stage."""
    import json

    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["std"].update(enabled=True, joint_iterations=9)
    config["methods"]["genet"].update(enabled=True, allow_random_backbone=True, epochs=3)
    out = run_snakemake(tmp_path / "run", config, "-n", "-p").stdout
    stages = {tuple(tokens[tokens.index("pipelines.train") + 1:][:2]): json.loads(_option(tokens, "--params-json"))
              for tokens in _commands(out, "train")}
    assert set(stages) == {("std", "pretrain_ae"), ("std", "init_centres"), ("std", "joint"),
                           ("genet", "guidance"), ("genet", "exploration")}
    assert stages["std", "joint"]["joint_iterations"] == 9
    for stage in ("pretrain_ae", "init_centres"):
        assert "joint_iterations" not in stages["std", stage] and {"ae_lr", "cluster_lr"} <= set(stages["std", stage])
    assert not {"epochs", "lr", "lr_decay", "batch_size", "mirrored_pairs"} & set(stages["genet", "guidance"])
    assert stages["genet", "exploration"]["epochs"] == 3
    assert not any(key.startswith("guidance_") for key in stages["genet", "exploration"])


def _weak_config(tmp_path, shanghaitech=False):
    """AR-Net on random-backbone features of the synthetic demo's weak split; with ``shanghaitech`` a
    second weak dataset too, a tiny one of placeholder files in ShanghaiTech's layout."""
    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["arnet"]["enabled"] = True
    config["features"]["allow_random_weights"] = True
    if shanghaitech:
        root = tmp_path / "shanghaitech"
        _touch(root / "training" / "videos" / "01_001.avi")
        (root / "test_frame_mask").mkdir()
        for video in ("01_0014", "01_0015"):
            (root / "testing" / "frames" / video).mkdir(parents=True)
            np.save(root / "test_frame_mask" / f"{video}.npy", np.zeros(1, np.uint8))
        (root / "lists").mkdir()
        (root / "lists" / "SH_Train.txt").write_text("01_001\n01_0014\n")
        (root / "lists" / "SH_Test.txt").write_text("01_0015\n")
        config["datasets"]["shanghaitech"].update(enabled=True, root=str(root), labels=str(root / "test_frame_mask"),
                                                  weak_lists=str(root / "lists"), test_subset=["01_0014", "01_0015"])
    return config


def test_another_dataset_leaves_a_rows_evaluation_and_config_hash_be(tmp_path):
    """The descriptions the workflow adds to a method's entry per dataset (its features, their snippet
    tail) reach each dataset's evaluation and row config for that dataset alone: enabling a second
    dataset changed the first one's evaluation parameters and config_hash, and reran its evaluation."""
    def synthetic_evaluation(config, workdir):
        out = run_snakemake(workdir, config, "-n", "-p").stdout
        found = {tokens[tokens.index("pipelines.evaluate") + 2]: tokens for tokens in _commands(out, "evaluate")}
        return found, {option: found["synthetic"][found["synthetic"].index(option) + 1]
                       for option in ("--params-json", "--run-config")}

    _, alone = synthetic_evaluation(_weak_config(tmp_path), tmp_path / "alone")
    evaluated, beside = synthetic_evaluation(_weak_config(tmp_path, shanghaitech=True), tmp_path / "beside")
    assert set(evaluated) == {"synthetic", "shanghaitech"}
    assert beside == alone
    assert "feature_tail" in alone["--params-json"] and "shanghaitech" not in alone["--run-config"]


def test_cpu_feature_extraction_asks_for_no_gpu(tmp_path):
    """features.device cpu: the extraction jobs run on the CPU, so they ask the cluster for no GPU."""
    import re

    def extraction_gpus(config, workdir):
        out = run_snakemake(workdir, config, "-n").stdout
        jobs = out.split("rule extract_features:")[1:]
        assert jobs
        return {re.search(r"resources:.*\bgpu=(\d+)", job).group(1) for job in jobs}

    config = _weak_config(tmp_path)
    assert extraction_gpus(config, tmp_path / "auto") == {"1"}
    config["features"]["device"] = "cpu"
    assert extraction_gpus(config, tmp_path / "cpu") == {"0"}
