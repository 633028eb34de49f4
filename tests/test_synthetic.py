"""The synthetic demo dataset: real H.264 videos, frame labels, poses and split files, decoded back with ffmpeg."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.ffmpeg_tools import ffmpeg_exe, probe
from pipelines.synthetic import ANOMALY_TYPES, SPLITS, SyntheticParams, render_video, video_names, write_split_files
from pipelines.synthetic import encode
from pipelines.synthetic.encode import EncodingError
from pipelines.synthetic.params import ParamsError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = SyntheticParams()
# Every test video (the detectability check needs them all), and a few of the training splits.
RENDERED = {
    "test": video_names(DEFAULT)["test"],
    "train": ["train_000", "train_001"],
    "train_abnormal": ["trainabn_000"],
}


def _render(params: SyntheticParams, split: str, name: str, folder: Path) -> dict[str, Path]:
    paths = {"video": folder / f"{name}.mp4", "labels": folder / f"{name}.npy", "poses": folder / f"{name}.json"}
    render_video(params, split, name, paths["video"], paths["labels"], paths["poses"])
    return paths


def _decode(video: Path, width: int, height: int) -> np.ndarray:
    raw, _ = (
        ffmpeg.input(str(video))
        .output("pipe:", format="rawvideo", pix_fmt="gray")
        .run(capture_stdout=True, capture_stderr=True, cmd=ffmpeg_exe())
    )
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The default dataset's split files and the videos in RENDERED, rendered once for the module."""
    folder = tmp_path_factory.mktemp("synthetic")
    write_split_files(DEFAULT, folder / "weak_split.csv", folder / "manifest.json")
    videos = {name: dict(_render(DEFAULT, split, name, folder), split=split)
              for split, names in RENDERED.items() for name in names}
    return folder, videos


def test_video_names_are_pure_and_listed_by_the_split_files(dataset):
    folder, _ = dataset
    names = video_names(DEFAULT)
    assert set(names) == set(SPLITS)
    assert names["train"] == [f"train_{i:03d}" for i in range(8)]
    assert names["test"] == [f"test_{i:03d}" for i in range(8)]
    assert names["train_abnormal"] == [f"trainabn_{i:03d}" for i in range(4)]
    assert video_names(DEFAULT) == names
    assert video_names(SyntheticParams(n_train=1000))["train"][-1] == "train_999"
    with open(folder / "weak_split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video", "source_split", "weak_split", "video_label"]
    assert {(r["video"], r["source_split"]) for r in rows} == {(n, s) for s, ns in names.items() for n in ns}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {n: v["split"] for n, v in manifest["videos"].items()} == {n: s for s, ns in names.items() for n in ns}


def test_manifest_records_params_versions_and_events(dataset):
    folder, _ = dataset
    manifest = json.loads((folder / "manifest.json").read_text())
    assert SyntheticParams.from_mapping(manifest["params"]) == DEFAULT
    assert manifest["generator"].startswith("vadbench-synthetic/")
    assert manifest["ffmpeg"].startswith("ffmpeg version")
    lengths = [v["n_frames"] for v in manifest["videos"].values()]
    # Lengths vary around n_frames, so nothing downstream can assume equal lengths.
    assert len(set(lengths)) > 5 and all(0.8 * 120 - 1 <= n <= 1.2 * 120 + 1 for n in lengths)
    events = {n: v["events"] for n, v in manifest["videos"].items()}
    assert all(not events[n] for n in video_names(DEFAULT)["train"])
    assert all(events[n] for n in video_names(DEFAULT)["test"] + video_names(DEFAULT)["train_abnormal"])
    assert {e["type"] for n in video_names(DEFAULT)["test"] for e in events[n]} == set(ANOMALY_TYPES)


def test_videos_decode_to_one_frame_per_label_at_the_requested_size(dataset):
    _, videos = dataset
    for name, paths in videos.items():
        labels = np.load(paths["labels"])
        assert labels.dtype == np.uint8 and labels.ndim == 1
        frames = _decode(paths["video"], DEFAULT.width, DEFAULT.height)
        assert len(frames) == len(labels), name
        info = probe(paths["video"])
        assert (info.width, info.height, info.codec, info.fps) == (160, 120, "h264", 25.0)


def test_labels_mark_exactly_the_anomaly_events(dataset):
    folder, videos = dataset
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, paths in videos.items():
        labels = np.load(paths["labels"])
        entry = manifest["videos"][name]
        assert len(labels) == entry["n_frames"]
        expected = np.zeros_like(labels)
        for event in entry["events"]:
            expected[event["start"]:event["end"]] = 1
        np.testing.assert_array_equal(labels, expected, err_msg=name)
        if paths["split"] == "train":
            assert not labels.any(), name
        else:
            assert set(np.unique(labels)) == {0, 1}, name


def test_weak_split_agrees_with_the_frame_labels(dataset):
    folder, videos = dataset
    with open(folder / "weak_split.csv", newline="") as f:
        rows = {r["video"]: r for r in csv.DictReader(f)}
    for name, paths in videos.items():
        row = rows[name]
        assert row["source_split"] == paths["split"]
        assert row["weak_split"] == ("test" if paths["split"] == "test" else "train")
        assert int(row["video_label"]) == int(np.load(paths["labels"]).any())
    assert {r["video_label"] for r in rows.values() if r["source_split"] == "train"} == {"0"}
    assert {r["video_label"] for r in rows.values() if r["source_split"] == "train_abnormal"} == {"1"}


def test_poses_follow_the_alphapose_tracked_person_format(dataset):
    _, videos = dataset
    for name, paths in videos.items():
        poses = json.loads(paths["poses"].read_text())
        n_frames = len(np.load(paths["labels"]))
        assert poses and all(re.fullmatch(r"[1-9]\d*", pid) for pid in poses), name
        for pid, track in poses.items():
            keys = list(track)
            assert all(re.fullmatch(r"\d{4}", k) for k in keys), (name, pid)
            frames = [int(k) for k in keys]
            assert frames == sorted(frames) and 0 <= frames[0] and frames[-1] < n_frames
            points = []
            for entry in track.values():
                assert set(entry) == {"keypoints", "scores"} and isinstance(entry["scores"], float)
                kp = np.array(entry["keypoints"], dtype=float).reshape(17, 3)
                assert len(entry["keypoints"]) == 51
                assert set(np.unique(kp[:, 2])) <= {0.0, 1.0}
                assert entry["scores"] == pytest.approx(kp[:, 2].mean(), abs=1e-4)
                seen = kp[kp[:, 2] == 1.0]
                assert np.all((seen[:, 0] >= 0) & (seen[:, 0] < 160) & (seen[:, 1] >= 0) & (seen[:, 1] < 120))
                points.append(kp[:, :2].mean(axis=0))
            # One id follows one person: between consecutive frames it moves at most a runner's stride.
            steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
            gaps = np.diff(frames)
            assert np.all(steps[gaps == 1] < 10), (name, pid, steps.max())


def test_each_anomalous_person_has_a_pose_in_exactly_its_event_frames(dataset):
    folder, videos = dataset
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, paths in videos.items():
        poses = json.loads(paths["poses"].read_text())
        for event in manifest["videos"][name]["events"]:
            if event["type"] == "vehicle":
                assert event["person_id"] is None
                continue
            frames = [int(k) for k in poses[str(event["person_id"])]]
            assert frames == list(range(event["start"], event["end"])), (name, event)


def test_same_seed_gives_identical_files_and_frames(dataset, tmp_path):
    _, videos = dataset
    # Rendered alone, and with another n_test: a video depends on (params, split, index) only.
    again = _render(SyntheticParams(n_test=1), "test", "test_000", tmp_path)
    for kind in ("video", "labels", "poses"):
        assert again[kind].read_bytes() == videos["test_000"][kind].read_bytes(), kind
    np.testing.assert_array_equal(_decode(again["video"], 160, 120), _decode(videos["test_000"]["video"], 160, 120))


def test_another_seed_gives_another_video(dataset, tmp_path):
    _, videos = dataset
    other = _render(SyntheticParams(seed=1), "test", "test_000", tmp_path)
    original = videos["test_000"]
    assert not np.array_equal(np.load(other["labels"]), np.load(original["labels"]))
    assert json.loads(other["poses"].read_text()) != json.loads(original["poses"].read_text())
    a, b = _decode(other["video"], 160, 120), _decode(original["video"], 160, 120)
    n = min(len(a), len(b))
    assert np.abs(a[:n].astype(int) - b[:n]).mean() > 5


def test_frame_differences_detect_the_anomalies(dataset):
    """Motion energy alone must find most anomalies, or the demo data would not be worth detecting."""
    _, videos = dataset
    scores, labels = [], []
    for name in RENDERED["test"]:
        frames = _decode(videos[name]["video"], 160, 120).astype(np.float32)
        scores.append(np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2)))
        labels.append(np.load(videos[name]["labels"])[1:])  # the first frame has no predecessor
    auc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    print(f"frame-difference ROC AUC over the default test videos: {auc:.3f}")
    assert auc >= 0.7, auc


def test_failed_encoding_raises_naming_the_output_and_leaves_no_file(tmp_path, monkeypatch):
    with pytest.raises(EncodingError, match=re.escape(str(tmp_path / "v.webm"))):
        render_video(DEFAULT, "test", "test_001", tmp_path / "v.webm", tmp_path / "l.npy", tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []
    # A real ffmpeg failure midway: libx264 refuses an unknown preset once the first frame arrives.
    monkeypatch.setattr(encode, "PRESET", "no-such-preset")
    with pytest.raises(EncodingError, match=re.escape(str(tmp_path / "v.mp4")) + ".*ffmpeg failed"):
        render_video(DEFAULT, "test", "test_001", tmp_path / "v.mp4", tmp_path / "l.npy", tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []


def test_params_are_validated_and_normalised():
    from_json = SyntheticParams.from_mapping({"walkers": [1, 3], "anomaly_types": ["vehicle"]})
    assert from_json.walkers == (1, 3) and from_json.anomaly_types == ("vehicle",)
    assert hash(from_json) == hash(SyntheticParams(walkers=(1, 3), anomaly_types=("vehicle",)))
    with pytest.raises(ParamsError, match="unknown key.*'sed'"):
        SyntheticParams.from_mapping({"sed": 1})
    with pytest.raises(ParamsError, match="height must be an even integer"):
        SyntheticParams(height=121)
    with pytest.raises(ParamsError, match="anomaly_types"):
        SyntheticParams(anomaly_types=("fighting",))
    with pytest.raises(ParamsError, match="walkers"):
        SyntheticParams(walkers=(4, 2))
    with pytest.raises(ParamsError, match="'test_008' is not in split 'test'"):
        render_video(DEFAULT, "test", "test_008", Path("v.mp4"), Path("l.npy"), Path("p.json"))


def test_command_line_renders_a_video_and_the_split_files(tmp_path):
    run = [sys.executable, "-m", "pipelines.synthetic.generate"]
    shown = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "video" in shown and "splits" in shown
    params = json.dumps({"seed": 3, "n_frames": 30, "height": 64, "width": 96, "n_test": 2})
    subprocess.run(run + ["video", "--params-json", params, "--split", "test", "--name", "test_001",
                          "--video", str(tmp_path / "v.mkv"), "--labels", str(tmp_path / "l.npy"),
                          "--poses", str(tmp_path / "p.json")], cwd=REPO, check=True)
    subprocess.run(run + ["splits", "--params-json", params, "--weak-split", str(tmp_path / "w.csv"),
                          "--manifest", str(tmp_path / "m.json")], cwd=REPO, check=True)
    labels = np.load(tmp_path / "l.npy")
    assert len(_decode(tmp_path / "v.mkv", 96, 64)) == len(labels)
    assert json.loads((tmp_path / "m.json").read_text())["videos"]["test_001"]["n_frames"] == len(labels)
    failed = subprocess.run(run + ["splits", "--params-json", '{"height": 63}', "--weak-split", str(tmp_path / "x.csv"),
                                   "--manifest", str(tmp_path / "x.json")], cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1 and "height must be an even integer" in failed.stderr


def test_a_shard_renders_its_consecutive_videos_into_one_folder(tmp_path):
    run = [sys.executable, "-m", "pipelines.synthetic.generate"]
    params = {"seed": 3, "n_frames": 16, "height": 32, "width": 48, "n_test": 5}
    folder = tmp_path / "test" / "shard_001"
    subprocess.run(run + ["shard", "--params-json", json.dumps(params), "--split", "test", "--shard", "shard_001",
                          "--videos-per-job", "2", "--out", str(folder)], cwd=REPO, check=True, capture_output=True)
    assert sorted(p.name for p in folder.iterdir()) == ["shard.json"] + [
        f"test_00{i}{suffix}" for i in (2, 3) for suffix in (".mp4", ".npy", "_alphapose_tracked_person.json")]
    assert json.loads((folder / "shard.json").read_text()) == {"videos": ["test_002", "test_003"]}
    assert [p.name for p in tmp_path.joinpath("test").iterdir()] == ["shard_001"]  # no temporary folder left
    # The same video rendered alone is byte-identical: sharding changes the layout, not the data.
    alone = _render(SyntheticParams.from_mapping(params), "test", "test_003", tmp_path)
    assert alone["video"].read_bytes() == (folder / "test_003.mp4").read_bytes()
    np.testing.assert_array_equal(np.load(alone["labels"]), np.load(folder / "test_003.npy"))


def test_a_shard_outside_the_split_or_already_present_is_refused(tmp_path):
    from pipelines.synthetic.generate import render_shard

    params = SyntheticParams(n_test=5, n_frames=16, height=32, width=48)
    with pytest.raises(ParamsError, match=r"no shard 'shard_003' at 2 videos per job \(shards: shard_000 .. shard_002\)"):
        render_shard(params, "test", "shard_003", 2, tmp_path / "x")
    (tmp_path / "old").mkdir()
    with pytest.raises(ParamsError, match="old: already exists"):
        render_shard(params, "test", "shard_000", 2, tmp_path / "old")
    assert not list((tmp_path / "old").iterdir()) and not (tmp_path / "x").exists()


def test_no_video_is_shorter_than_one_snippet():
    """Lengths vary by 20 % around n_frames; at the smallest n_frames allowed (16) none may fall under
    one 16-frame snippet, which a feature extractor dropping partial windows could not use."""
    from pipelines.synthetic.plan import plan_video
    from pipelines.synthetic.scene import build_scene

    params = SyntheticParams(n_frames=16, n_train=30, n_test=30, height=64, width=80)
    scene = build_scene(params)
    lengths = [plan_video(params, scene, split, i).n_frames for split in ("train", "test") for i in range(30)]
    assert min(lengths) == 16 and max(lengths) > 16


class _NoNoise:
    def add_to(self, frame: np.ndarray) -> np.ndarray:
        return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_frame_is_labelled_abnormal_exactly_when_an_anomalous_actor_is_drawn_in_it(seed):
    """Visibility was the projected points' box, while limbs, shoes, heads and wheels are drawn around
    them: frames with an anomalous actor's pixels at the border were labelled normal, and an event was
    recorded from its first to its last visible frame across frames where its actor had left."""
    from pipelines.synthetic.actors import actor_shape
    from pipelines.synthetic.plan import plan_video
    from pipelines.synthetic.render import draw_frame
    from pipelines.synthetic.scene import build_scene

    params = SyntheticParams(seed=seed, n_test=10)
    scene = build_scene(params)
    camera = scene.camera
    blanks = [np.full((camera.height, camera.width, 3), value, np.uint8) for value in (0, 255)]
    undrawn_but_labelled = 0
    for index in range(params.n_test):
        plan = plan_video(params, scene, "test", index)
        drawn = np.zeros(plan.n_frames, bool)
        for frame in range(plan.n_frames):
            shapes = [actor_shape(a, frame, camera) for a in plan.actors_at(frame) if a.event is not None]
            drawn[frame] = bool(shapes) and any((draw_frame(b, shapes, _NoNoise()) != b).any() for b in blanks)
        labels = plan.labels.astype(bool)
        assert not (drawn & ~labels).any(), f"test video {index}: drawn but labelled normal: {np.flatnonzero(drawn & ~labels)}"
        undrawn_but_labelled += int((labels & ~drawn).sum())
        events = np.zeros(plan.n_frames, bool)
        for event in plan.events:
            assert labels[event.start:event.end].all(), f"test video {index}: {event} spans unlabelled frames"
            events[event.start:event.end] = True
        np.testing.assert_array_equal(events, labels)
    assert undrawn_but_labelled == 0
