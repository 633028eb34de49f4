"""Skeletons and the pose methods inside the DAG: the synthetic demo's ground-truth skeletons through
the converter, STG-NF, then GENet (guidance and exploration stages, person tubes), each to a report row;
and the wiring of the AlphaPose and precomputed backends."""
from __future__ import annotations

import hashlib
import json

import h5py
import pandas as pd
import pytest

from tests.workflow_helpers import planned_jobs, run_snakemake, tiny_config

pytestmark = pytest.mark.slow


def _pose_config() -> dict:
    config = tiny_config(n_train=4, n_test=3, n_frames=96, anomaly_types=["running", "loitering", "cyclist"])
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["stg_nf"].update(enabled=True, seg_len=16, epochs=8, batch_size=64)
    config["methods"]["genet"].update(
        enabled=True, seg_len=16, guidance_epochs=8, guidance_batch_size=64, epochs=3, batch_size=64,
        tube_crop_size=32, allow_random_backbone=True,  # no Kinetics weights here: a seeded random I3D
    )
    return config


@pytest.fixture(scope="module")
def pose_demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pose_demo")
    run_snakemake(workdir, _pose_config())
    return workdir


def test_stg_nf_and_genet_report_rows(pose_demo):
    table = pd.read_csv(pose_demo / "results" / "report" / "auc_table.csv").set_index("method")
    print(table[["auc_micro", "auc_macro", "ap", "n_frames"]])
    for method in ("stg_nf", "genet"):
        row = table.loc[method]
        assert row.dataset == "synthetic" and row.n_videos == 3
        assert row.auc_micro > 65, f"{method}: micro AUC {row.auc_micro} on the synthetic demo"
        assert "gaussian sigmas 1,2,3,4,5,6" in row.protocol and "first 0 frames" in row.protocol
        assert "skeletons: the synthetic set's rendered ground truth" in row.protocol
        assert "frames without a person take the split's most normal score" in row.protocol
        assert "windows of 16 detections spanning at most 18 frames" in row.protocol
    # GENet's tubes came from a random-init I3D here: its row says its number does not compare.
    assert "NOT COMPARABLE to the paper: person tubes from a random-init I3D" in table.loc["genet"].protocol
    assert "NOT COMPARABLE" not in table.loc["stg_nf"].protocol


def test_frames_without_a_person_are_filled_from_the_whole_split(pose_demo):
    """Each score file marks its empty frames; the evaluation record, seeing all of the split, says
    how it filled them."""
    import h5py

    for method in ("stg_nf", "genet"):
        files = sorted((pose_demo / "results" / "scores" / method).rglob("*.h5"))
        assert files
        with h5py.File(files[0]) as handle:
            assert handle["empty"].dtype == bool and handle["empty"].shape == handle["scores"].shape
        record = json.loads(next((pose_demo / "results" / "eval" / method).rglob("test.json")).read_text())
        assert record["protocol"]["empty_frame_fill"] == "most_normal_in_split"


def test_pose_and_tube_files_carry_their_provenance(pose_demo):
    results = pose_demo / "results"
    with h5py.File(results / "poses" / "synthetic" / "test" / "test_000.h5") as handle:
        assert handle.attrs["backend"] == "ground_truth" and handle.attrs["source_format"] == "tracked_person"
        assert handle.attrs["dataset"] == "synthetic" and len(handle.attrs["source_sha256"]) == 64
        assert handle["keypoints"].shape[1:] == (17, 3) and handle.attrs["n_tracks"] > 0
    with h5py.File(results / "tubes" / "genet" / "synthetic" / "test" / "test_000.h5") as handle:
        assert handle.attrs["backbone_weights"] == "random-init"
        assert handle["features"].shape[1:] == (1024, 2, 3, 3)
        assert json.loads(handle.attrs["settings"])["window"]["stride"] == 1
    with h5py.File(results / "tubes" / "genet" / "synthetic" / "train" / "train_000.h5") as handle:
        assert json.loads(handle.attrs["settings"])["window"]["stride"] == 6
    for stage in ("guidance", "exploration"):
        assert (results / "models" / "genet" / "synthetic" / "seed_0" / f"{stage}.pt").stat().st_size > 0


def test_a_test_stride_change_redoes_the_test_tubes_and_scores_never_the_training(pose_demo):
    """The tube command and the scoring parameters are Snakemake params; ones computed from a job's
    input are left out of its params-changed trigger, so these must come from the wildcards alone."""
    config = _pose_config()
    for method in ("stg_nf", "genet"):
        config["methods"][method]["test_stride"] = 2
    assert planned_jobs(pose_demo, config) == {
        "person_tubes": 3, "score_video": 6, "evaluate": 2, "plot_timelines": 2, "report_tables": 1, "all": 1,
    }


def test_alphapose_and_precomputed_backends_plan_their_jobs(tmp_path):
    checkout = tmp_path / "AlphaPose"
    for relative in ("configs/coco/resnet/256x192_res152_lr1e-3_1x-duc.yaml",
                     "pretrained_models/fast_421_res152_256x192.pth", "detector/yolox/data/yolox_x.pth"):
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_text("placeholder")
    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["stg_nf"]["enabled"] = True
    config["poses"].update(dataset_backends={"synthetic": "alphapose"}, alphapose={"checkout": str(checkout)})
    # AlphaPose unpickles its weights and publishes no checksums: the run needs the user's pins first.
    out = run_snakemake(tmp_path / "alphapose", config, "-n", check=False).stdout
    digest = hashlib.sha256(b"placeholder").hexdigest()
    assert "poses.alphapose.weights_sha256.{checkpoint, detector_weights} are needed" in out
    assert f"checkpoint: {checkout}/pretrained_models/fast_421_res152_256x192.pth has sha256 {digest}" in out
    assert f"detector_weights: {checkout}/detector/yolox/data/yolox_x.pth has sha256 {digest}" in out
    config["poses"]["alphapose"]["weights_sha256"] = {"checkpoint": digest, "detector_weights": digest}
    config["poses"]["alphapose"]["detector"] = "yolox-l"  # AlphaPose would load yolox_l.pth, not the pinned file
    out = run_snakemake(tmp_path / "alphapose", config, "-n", check=False).stdout
    assert "but AlphaPose loads detector/yolox/data/yolox_l.pth for detector yolox-l" in out
    config["poses"]["alphapose"]["detector"] = "yolox-x"
    jobs = planned_jobs(tmp_path / "alphapose", config)
    assert jobs["alphapose"] == jobs["poses"] == 2 + 4  # every train and test video of the tiny demo
    assert jobs["alphapose_weights"] == 1, "the weights are checked once, before any AlphaPose job"
    # A folder of released JSON files replaces extraction; a video without its file is a clear error.
    released = tmp_path / "released"
    for split, names in (("train", ("train_000", "train_001")), ("test", ("test_000", "test_001", "test_002"))):
        (released / split).mkdir(parents=True)
        for name in names:
            (released / split / f"{name}_alphapose_tracked_person.json").write_text("{}")
    config["poses"].update(dataset_backends={}, precomputed={"synthetic": str(released)})
    out = run_snakemake(tmp_path / "precomputed", config, "-n", check=False).stdout
    assert "poses.precomputed.synthetic" in out and "no file for video 'test_003'" in out
    (released / "test" / "test_003_alphapose_tracked_person.json").write_text("{}")
    jobs = planned_jobs(tmp_path / "precomputed", config)
    assert jobs["poses"] == 6 and "alphapose" not in jobs


def released_ped2_skeletons(released: Path, shared_data: Path) -> Path:
    """A folder of (empty) released AlphaPose files, one per Ped2 video, as STG-NF's package names them."""
    for split, folder in (("train", "training"), ("test", "testing")):
        (released / split).mkdir(parents=True)
        for video in (shared_data / "ped2" / folder / "frames").iterdir():
            (released / split / f"{video.name}_alphapose_tracked_person.json").write_text("{}")
    return released


def test_precomputed_json_of_a_frame_folder_dataset_is_indexed_by_the_folder(tmp_path, shared_data):
    """alphapose-results.json names each frame by its image file: for a frame-folder dataset (Ped2)
    the converter gets the folder, so that 1-based file names cannot shift the frames by one."""
    released = released_ped2_skeletons(tmp_path / "released", shared_data)
    config = tiny_config()
    config["datasets"]["synthetic"]["enabled"] = False
    config["datasets"]["ped2"].update(enabled=True, root=str(shared_data / "ped2"),
                                      labels=str(shared_data / "ped2" / "frame_labels_ped2.npy"))
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["stg_nf"]["enabled"] = True
    config["poses"].update(dataset_backends={}, precomputed={"ped2": str(released)})
    out = run_snakemake(tmp_path / "run", config, "-n", "-p").stdout
    assert f"--image-dir {shared_data / 'ped2' / 'testing' / 'frames' / '01'}" in out
    assert out.count("pipelines.poses.convert") == 16 + 12


def test_each_datasets_evaluation_sees_only_its_own_skeleton_settings(tmp_path, shared_data):
    """Ped2's released skeletons and the demo's ground truth: each evaluation's parameters and row
    config hold its own dataset's skeleton description and settings only, so changing one dataset's
    skeletons neither reruns the other's evaluation nor changes its config_hash."""
    import shlex

    released = released_ped2_skeletons(tmp_path / "released", shared_data)
    config = tiny_config()
    config["datasets"]["ped2"].update(enabled=True, root=str(shared_data / "ped2"),
                                      labels=str(shared_data / "ped2" / "frame_labels_ped2.npy"))
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["stg_nf"]["enabled"] = True
    config["poses"]["precomputed"] = {"ped2": str(released)}
    out = run_snakemake(tmp_path / "run", config, "-n", "-p").stdout
    evaluations = {}
    for line in out.splitlines():
        if "pipelines.evaluate stg_nf " in line:
            tokens = shlex.split(line)
            dataset = tokens[tokens.index("pipelines.evaluate") + 2]
            evaluations[dataset] = (json.loads(tokens[tokens.index("--params-json") + 1]),
                                    json.loads(tokens[tokens.index("--run-config") + 1]))
    assert set(evaluations) == {"ped2", "synthetic"}
    for dataset, (params, row_config) in evaluations.items():
        assert list(params["pose_source"]) == [dataset] == list(row_config["method"]["pose_source"])
    assert evaluations["synthetic"][1]["poses"] == {"backend": "ground_truth"}
    assert evaluations["ped2"][1]["poses"] == {"backend": "precomputed", "precomputed": str(released)}


def test_a_released_checkpoint_is_an_input_of_its_stage(tmp_path, shared_data):
    """A wrong path stops the run before the DAG is built, naming the key; the named file is what the
    stage reads."""
    config = tiny_config()
    config["methods"]["tde"]["enabled"] = False
    config["methods"]["stg_nf"].update(enabled=True, pretrained=str(tmp_path / "nowhere" / "ShanghaiTech_85_9.tar"))
    out = run_snakemake(tmp_path / "missing", config, "-n", check=False)
    assert out.returncode != 0 and "config key 'methods.stg_nf.pretrained'" in out.stdout
    assert "nowhere/ShanghaiTech_85_9.tar does not exist" in out.stdout
    config["methods"]["stg_nf"]["pretrained"] = str(shared_data.parent / "weights" / "stg_nf" / "ShanghaiTech_85_9.tar")
    assert planned_jobs(tmp_path / "released", config)["train_stage"] == 1


def test_a_released_checkpoint_set_per_dataset_is_what_that_datasets_stage_reads(tmp_path, shared_data):
    """The stage reads its dataset's value (per_dataset over the method's), so that one is its input: a
    per-dataset file was no input (no rerun when it changed), and a per-dataset null declared the
    method's file anyway."""
    released = str(shared_data.parent / "weights" / "stg_nf" / "ShanghaiTech_85_9.tar")

    def guidance_inputs(genet, workdir):
        config = tiny_config()
        config["methods"]["tde"]["enabled"] = False
        config["methods"]["genet"].update(enabled=True, allow_random_backbone=True, **genet)
        out = run_snakemake(workdir, config, "-n").stdout
        job = next(job for job in out.split("rule train_stage:")[1:] if "guidance.pt" in job.split("log:")[0])
        return job.split("input:")[1].splitlines()[0]

    assert released in guidance_inputs({"per_dataset": {"synthetic": {"guidance_pretrained": released}}}, tmp_path / "own")
    assert released not in guidance_inputs({"guidance_pretrained": released,
                                             "per_dataset": {"synthetic": {"guidance_pretrained": None}}}, tmp_path / "null")
