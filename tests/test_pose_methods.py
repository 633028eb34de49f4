"""STG-NF and GENet as pipeline methods: segment banks, frame scores, training stages, person tubes."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from models import TrainInputs, get_method
from models.genet_net import ExplorationNet, GuidedExploration
from models.safe_checkpoint import load_checkpoint
from models.stg_nf import STGNF
from pipelines.features.weights import WeightsMissingError, load_backbone
from pipelines.frame_store import FrameReader, FrameWriter
from pipelines.poses.convert import PoseFormatError, find_pose_json
from pipelines.poses.segment_data import SegmentBank, WindowSettings, frame_anomaly_scores
from pipelines.presets import resolve_params
from pipelines.poses.segments import model_input, segment_track
from pipelines.poses.store import PoseTracks, read_poses, write_poses
from pipelines.poses.tubes import (DetectionCrops, TubeSettings, crop_detections, crops_in_start_order, extract,
                                   read_tubes, tube_boxes, tube_features)
from pipelines.training import CheckpointError, StageRun
from tests.conftest import REPO

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
RELEASED = SHARED / "weights" / "stg_nf" / "ShanghaiTech_85_9.tar"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are small: one thread is faster than two fighting over shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _defaults(method: str) -> dict:
    entry = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text())["methods"][method])
    entry.pop("enabled")
    return entry


def _walker(n_frames: int, x0: float, speed: float, phase: float = 0.0) -> np.ndarray:
    """(n, 17, 3) COCO keypoints of a stick figure walking right at ``speed`` px/frame, legs swinging."""
    t = np.arange(n_frames)[:, None]
    base = np.array([[0, -60], [-3, -62], [3, -62], [-6, -60], [6, -60], [-10, -45], [10, -45], [-13, -30],
                     [13, -30], [-14, -15], [14, -15], [-7, -10], [7, -10], [-8, 10], [8, 10], [-8, 30], [8, 30]],
                    float)[None]
    swing = 10 * np.sin(0.5 * t + phase)
    xy = np.repeat(base, n_frames, axis=0)
    xy[:, [13, 15], 0] += swing
    xy[:, [14, 16], 0] -= swing
    xy[:, :, 0] += x0 + speed * t
    xy[:, :, 1] += 100
    return np.concatenate([xy, np.ones((n_frames, 17, 1))], axis=2)


def _poses_file(path: Path, people: list[tuple[np.ndarray, np.ndarray]], n_frames: int, dataset: str = "demo") -> Path:
    ids = np.concatenate([np.full(len(frames), i) for i, (frames, _) in enumerate(people)])
    frames = np.concatenate([f for f, _ in people])
    keypoints = np.concatenate([k for _, k in people])
    tracks = PoseTracks(ids, frames, keypoints, np.zeros((len(ids), 4)), np.ones(len(ids)), n_frames, (320, 200))
    write_poses(path, tracks, {"dataset": dataset, "backend": "test"})
    return path


def _frames_file(path: Path, n_frames: int) -> Path:
    with FrameWriter(path, height=200, width=320, channels=3, compression="none") as writer:
        writer.append(np.random.default_rng(0).integers(0, 255, (n_frames, 200, 320, 3), dtype=np.uint8))
    return path


# ---- frame scores and segment banks ---------------------------------------------------------

def test_frame_anomaly_scores_by_hand():
    # seg_len 4: segment f0 scores frame f0 + 2. Person 1: f0 0, 1 -> frames 2, 3; person 2: f0 1 -> frame 3.
    scores, empty = frame_anomaly_scores(6, np.array([1, 1, 2]), np.array([0, 1, 1]), np.array([-1.0, -2.0, -5.0]),
                                         seg_len=4)
    # Frame 3 takes the most abnormal person (-5); frames 0, 1, 4, 5 are empty (placeholder 0, marked).
    np.testing.assert_array_equal(scores, [0, 0, 1.0, 5.0, 0, 0])
    np.testing.assert_array_equal(empty, [True, True, False, False, True, True])
    assert scores.dtype == np.float32
    with pytest.raises(ValueError, match="-inf"):
        frame_anomaly_scores(6, np.array([1]), np.array([0]), np.array([-np.inf]), 4)


def test_segment_bank_matches_segment_track():
    frames = np.r_[0:30, 34:60]  # a 3-frame gap splits the track
    keypoints = _walker(60, 10, 2)[frames]
    tracks = PoseTracks(np.zeros(len(frames)), frames, keypoints, np.zeros((len(frames), 4)), np.ones(len(frames)),
                        60, (320, 200))
    settings = WindowSettings(seg_len=12, stride=3)
    bank = SegmentBank([tracks], settings)
    expected = segment_track(frames, keypoints, np.ones(len(frames)), 12, 3)
    np.testing.assert_array_equal(bank.start_frames, expected.start_frames)
    np.testing.assert_allclose(bank.poses(np.arange(len(bank))), expected.poses, rtol=1e-6)
    np.testing.assert_allclose(bank.model_input(np.arange(len(bank))), model_input(expected.poses), atol=1e-6)


def test_per_dataset_values_replace_the_defaults():
    params = {"seg_len": 24, "train_stride": 6, "per_dataset": {"ubnormal": {"seg_len": 16}}}
    assert resolve_params(params, "ubnormal") == {"seg_len": 16, "train_stride": 6}
    assert resolve_params(params, "shanghaitech") == {"seg_len": 24, "train_stride": 6}


# ---- STG-NF as a method ---------------------------------------------------------------------

@pytest.fixture
def walkers(tmp_path) -> list[Path]:
    files = []
    for v in range(2):
        people = [(np.arange(50), _walker(50, 20 + 40 * p, 1.5 + 0.5 * p, phase=p + v)) for p in range(3)]
        files.append(_poses_file(tmp_path / f"train_{v}.h5", people, 50))
    return files


def test_stg_nf_trains_resumes_identically_and_scores(tmp_path, walkers, monkeypatch):
    params = _defaults("stg_nf") | {"seg_len": 16, "epochs": 2, "batch_size": 16, "checkpoint_every_steps": 3}
    method = get_method("stg_nf", params, seed=3)
    inputs = TrainInputs(walkers, {p.stem: 0 for p in walkers})
    method.train_stage("train", inputs, None, tmp_path / "a.pt")
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    assert a["extra"]["n_train_segments"] == 2 * 3 * 6  # 50 detections, 16-long windows, stride 6: starts 0..30
    # A run killed after its first periodic checkpoint and started again ends with the same weights.
    advance = StageRun.advance

    def killed_at_step_4(run, *args):
        advance(run, *args)
        if run.step == 4:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(StageRun, "advance", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        method.train_stage("train", inputs, None, tmp_path / "b.pt")
    assert [p.name for p in (tmp_path / "b.pt.resume").iterdir()] == ["step_3.pt"]
    monkeypatch.setattr(StageRun, "advance", advance)
    method.train_stage("train", inputs, None, tmp_path / "b.pt")
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])

    # Scoring: a runner among walkers is more abnormal than the walkers at the frames where it is centred.
    test = _poses_file(tmp_path / "test.h5", [(np.arange(40), _walker(40, 20, 1.5)),
                                              (np.arange(20, 40), _walker(20, 150, 9.0, phase=0.3))], 50)
    result = method.score_video(tmp_path / "a.pt", test)
    assert result.scores.shape == (50,) and result.scored.all() and np.isfinite(result.scores).all()
    # nobody there: marked empty, for the evaluation to fill from the whole split (16-frame windows
    # centred at f0 + 8 of tracks that end at frame 39: frames 0..7 and 32..49 hold no centre)
    assert result.empty[:8].all() and result.empty[32:].all() and not result.empty[8:32].any()
    assert result.scores[30] > result.scores[12]  # runner (centred at 28..) vs walkers only
    protocol = method.protocol("test labels")
    assert protocol.smoothing_sigmas == (1, 2, 3, 4, 5, 6) and protocol.pooling == "micro"
    assert protocol.empty_frame_fill == "most_normal_in_split"


def test_stg_nf_refuses_a_checkpoint_of_another_segment_length(tmp_path, walkers):
    params = _defaults("stg_nf") | {"seg_len": 16, "epochs": 1, "batch_size": 64}
    get_method("stg_nf", params).train_stage("train", TrainInputs(walkers, {}), None, tmp_path / "a.pt")
    longer = get_method("stg_nf", params | {"seg_len": 24})
    with pytest.raises(CheckpointError, match="seg_len"):
        longer.score_video(tmp_path / "a.pt", walkers[0])


def test_stg_nf_uses_a_released_checkpoint(tmp_path, walkers):
    if not RELEASED.is_file():
        pytest.skip(f"released STG-NF checkpoint not found at {RELEASED}")
    people = [(np.arange(60), _walker(60, 20 + 40 * p, 2.0, phase=p)) for p in range(2)]
    files = [_poses_file(tmp_path / "train.h5", people, 60)]
    params = _defaults("stg_nf") | {"pretrained": str(RELEASED)}
    method = get_method("stg_nf", params)
    method.train_stage("train", TrainInputs(files, {}), None, tmp_path / "released.pt")
    payload = torch.load(tmp_path / "released.pt", weights_only=True)
    released = STGNF.from_checkpoint(load_checkpoint(RELEASED))
    for key, value in released.state_dict().items():
        torch.testing.assert_close(payload["model"][key], value)
    assert len(payload["extra"]["pretrained_sha256"]) == 64
    assert np.isfinite(method.score_video(tmp_path / "released.pt", files[0]).scores).all()
    with pytest.raises(ValueError, match="seg_len"):
        get_method("stg_nf", params | {"seg_len": 16}).train_stage("train", TrainInputs(files, {}), None,
                                                                    tmp_path / "x.pt")


# ---- GENet ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seg_len", [24, 16])
def test_exploration_output_matches_the_guidance_latent(seg_len):
    student = ExplorationNet()
    features = torch.randn(2, 1024, seg_len // 8, 3, 3)
    output = student(features)
    assert output.shape == (2, 32, seg_len // 8, 3, 3)
    assert output.flatten(1).shape[1] == 2 * seg_len * 18
    teacher = STGNF(seg_len=seg_len)
    teacher.train()
    teacher(torch.randn(8, 2, seg_len, 18))  # ActNorm initialisation
    target, flat = GuidedExploration(teacher, student)(torch.randn(2, 2, seg_len, 18), features)
    assert target.shape == flat.shape == (2, 2 * seg_len * 18)


def test_guidance_stays_frozen_while_the_student_learns():
    teacher = STGNF(seg_len=16)
    teacher(torch.randn(8, 2, 16, 18))
    model = GuidedExploration(teacher, ExplorationNet()).train()
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.Adamax(model.student.parameters(), lr=1e-3)
    poses, features = torch.randn(4, 2, 16, 18), torch.randn(4, 1024, 2, 3, 3)
    losses = []
    for _ in range(3):
        target, output = model(poses, features)
        loss = ((target - output) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not model.teacher.training and losses[-1] < losses[0]
    for key, value in model.teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(p.grad is None for p in model.teacher.parameters())


def test_tube_boxes_are_the_keypoint_box_enlarged_by_a_fifth():
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, 0] = np.linspace(100, 140, 17)  # width 40
    keypoints[0, :, 1] = np.linspace(50, 150, 17)  # height 100
    keypoints[0, :, 2] = 1
    np.testing.assert_allclose(tube_boxes(keypoints, 0.2), [[92, 30, 148, 170]])


def test_crops_come_from_the_detection_box(tmp_path):
    path = tmp_path / "frames.h5"
    frames = np.zeros((3, 60, 80, 3), np.uint8)
    frames[1, 10:30, 40:60] = (200, 50, 10)  # a box in frame 1 only
    with FrameWriter(path, 60, 80, 3, "none") as writer:
        writer.append(frames)
    with FrameReader(path) as reader:
        crops = crop_detections(reader, np.array([1, 2]), np.array([[40, 10, 60, 30], [40, 10, 60, 30]]), 16)
    assert (np.abs(crops[0][2:-2, 2:-2].astype(int) - [200, 50, 10]).max()) <= 1
    assert crops[1].max() == 0


def test_person_tubes_file(tmp_path):
    people = [(np.arange(40), _walker(40, 30, 2.0)), (np.arange(10, 30), _walker(20, 200, -2.0))]
    poses = _poses_file(tmp_path / "poses.h5", people, 40)
    frames = _frames_file(tmp_path / "frames.h5", 40)
    settings = TubeSettings(WindowSettings(seg_len=16, stride=4), crop_size=64, batch_size=4)
    with pytest.raises(WeightsMissingError):
        load_backbone("inception_k400_rgb", None, allow_random=False)
    backbone = load_backbone("inception_k400_rgb", None, allow_random=True, seed=0)
    n = extract(poses, frames, tmp_path / "tubes.h5", settings, backbone, dataset="demo")
    tubes = read_tubes(tmp_path / "tubes.h5")
    bank = SegmentBank([read_poses(poses)[0]], settings.window)
    assert n == len(bank) == len(tubes.track_ids) > 0
    np.testing.assert_array_equal(tubes.start_frames, bank.start_frames)
    np.testing.assert_allclose(tubes.poses, bank.poses(np.arange(n)), rtol=1e-6)
    features = tubes.features(np.array([n - 1, 0]))
    assert features.shape == (2, 1024, 2, 3, 3) and np.isfinite(features).all() and features.std() > 0
    assert tubes.attrs["backbone_weights"] == "random-init" and tubes.attrs["dataset"] == "demo"
    assert "batch_size" not in json.loads(tubes.attrs["settings"]), "a runtime key: the bytes must not depend on it"
    with h5py.File(tmp_path / "tubes.h5") as handle:
        assert handle["features"].dtype == np.float16


def test_tube_crops_held_do_not_grow_with_the_video(tmp_path):
    """Two people over 400 frames, windows of 8 at stride 1: the crops held stay within a window plus
    a read block of frames, and every crop is the one cropping all detections at once gives."""
    people = [(np.arange(400), _walker(400, 30, 0.5)), (np.arange(100, 380), _walker(280, 200, -0.5))]
    tracks = read_poses(_poses_file(tmp_path / "poses.h5", people, 400))[0]
    bank = SegmentBank([tracks], WindowSettings(seg_len=8, stride=1))
    boxes = tube_boxes(tracks.keypoints, 0.2)
    with FrameReader(_frames_file(tmp_path / "frames.h5", 400)) as reader:
        everything = crop_detections(reader, tracks.frames, boxes, 16)
        crops, held = DetectionCrops(reader, tracks.frames, boxes, 16), []
        for index, clips in crops_in_start_order(bank, crops, 4):
            np.testing.assert_array_equal(clips, everything[bank.rows(index)])
            held.append(len(crops))
    assert len(bank) > 600 and max(held) <= 2 * (8 + 64), max(held)


def test_extraction_streams_across_a_gap_that_a_window_bridges(tmp_path, monkeypatch):
    """STG-NF's released continuity rule keeps a window over a track that leaves for 1,100 frames:
    extract() must not stream (and hold) the gap's detections of other people to reach its far end.
    A second person walks through every frame; the crops held after each batch are counted."""
    from pipelines.poses import tubes
    from pipelines.poses.segments import continuous_window_starts

    n, away = 1200, np.r_[0:30, 1130:1160]
    window = WindowSettings(seg_len=24, stride=1, released_rule=True)
    starts = continuous_window_starts(away, 24, 1, released_rule=True)
    assert (away[starts + 23] - away[starts]).max() > 1000, "the released rule keeps a window across the gap"
    people = [(away, _walker(60, 30, 0.0)), (np.arange(n), _walker(n, 200, 0.0))]
    poses = _poses_file(tmp_path / "poses.h5", people, n)
    frames = tmp_path / "frames.h5"
    with FrameWriter(frames, height=24, width=40, channels=3, compression="lz4") as writer:
        writer.append(np.full((n, 24, 40, 3), 128, np.uint8))
    held, take = [], tubes.DetectionCrops.take

    def counted_take(self, rows):
        out = take(self, rows)
        held.append(len(self))
        return out

    monkeypatch.setattr(tubes.DetectionCrops, "take", counted_take)
    settings = TubeSettings(window, crop_size=16, batch_size=8)
    backbone = load_backbone("inception_k400_rgb", None, allow_random=True, seed=0)
    assert extract(poses, frames, tmp_path / "tubes.h5", settings, backbone) == len(SegmentBank([read_poses(poses)[0]], window))
    assert max(held) <= 2 * (8 + 24 + 256 + 64), max(held)  # two people over a batch, the horizon and a read block


def test_a_detection_past_the_video_is_refused_naming_the_frames_file(tmp_path):
    frames = tmp_path / "frames.h5"
    with FrameWriter(frames, height=8, width=8, channels=3, compression="none") as writer:
        writer.append(np.zeros((3, 8, 8, 3), np.uint8))
    with FrameReader(frames) as reader, pytest.raises(ValueError, match=r"frames.h5: a detection in frame 5, but the "
                                                                        r"video has 3 frames"):
        DetectionCrops(reader, np.array([1, 5]), np.zeros((2, 4)), 16)


def test_person_tubes_match_the_tubes_of_all_crops_at_once(tmp_path):
    people = [(np.arange(60), _walker(60, 30, 2.0)), (np.arange(10, 50), _walker(40, 200, -2.0))]
    poses, frames = _poses_file(tmp_path / "poses.h5", people, 60), _frames_file(tmp_path / "frames.h5", 60)
    settings = TubeSettings(WindowSettings(seg_len=8, stride=3), crop_size=32, batch_size=5)
    backbone = load_backbone("inception_k400_rgb", None, allow_random=True, seed=0)
    extract(poses, frames, tmp_path / "tubes.h5", settings, backbone)
    tracks = read_poses(poses)[0]
    bank = SegmentBank([tracks], settings.window)
    with FrameReader(frames) as reader:
        everything = crop_detections(reader, tracks.frames, tube_boxes(tracks.keypoints, 0.2), 32)
    expected = np.concatenate([tube_features(backbone, everything[bank.rows(np.arange(i, min(i + 5, len(bank))))], 8, "cpu")
                               for i in range(0, len(bank), 5)])
    tubes = read_tubes(tmp_path / "tubes.h5")
    got = tubes.features(np.arange(len(bank)))
    # The random backbone's maps are ~1e-6, where float16 steps by 6e-8: allow two steps, and check
    # that this tells segments apart (a row written to the wrong place would be far off).
    step = float(np.finfo(np.float16).smallest_subnormal)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2 * step)
    assert np.abs(got - expected[::-1]).max() > 10 * step
    np.testing.assert_allclose(tubes.poses, bank.poses(np.arange(len(bank))), rtol=1e-6)


# ---- released JSON folders ------------------------------------------------------------------

def test_precomputed_json_is_found_by_video_and_split(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "pose" / split).mkdir(parents=True)
    (tmp_path / "pose" / "train" / "01_001_alphapose_tracked_person.json").write_text("{}")
    (tmp_path / "pose" / "test" / "01_0014_alphapose_tracked_person.json").write_text("{}")
    (tmp_path / "pose" / "train" / "05_0001_alphapose_tracked_person.json").write_text("{}")
    (tmp_path / "pose" / "test" / "05_0001_alphapose_tracked_person.json").write_text("{}")
    assert find_pose_json(tmp_path, "01_0014", "test").parent.name == "test"
    assert find_pose_json(tmp_path, "05_0001", "train").parent.name == "train"
    with pytest.raises(PoseFormatError, match="no file for video '02_002'"):
        find_pose_json(tmp_path, "02_002", "train")


@pytest.mark.slow
def test_genet_stages_train_in_order_and_score(tmp_path):
    """Guidance, then exploration, then scoring, on person tubes of a seeded random I3D (about 15-30 s)."""
    backbone = load_backbone("inception_k400_rgb", None, allow_random=True, seed=0)
    files = {}
    for split, stride in (("train", 4), ("test", 1)):
        people = [(np.arange(30), _walker(30, 30, 2.0)), (np.arange(30), _walker(30, 150, 2.5, phase=1))]
        poses = _poses_file(tmp_path / f"{split}_poses.h5", people, 36)
        settings = TubeSettings(WindowSettings(seg_len=8, stride=stride), crop_size=32, batch_size=16)
        extract(poses, _frames_file(tmp_path / f"{split}_frames.h5", 36), tmp_path / f"{split}.h5", settings,
                backbone, dataset="demo")
        files[split] = tmp_path / f"{split}.h5"
    params = _defaults("genet") | {"seg_len": 8, "guidance_epochs": 1, "guidance_batch_size": 16, "epochs": 2,
                                   "batch_size": 8, "allow_random_backbone": True}
    method = get_method("genet", params)
    inputs = TrainInputs([files["train"]], {"train": 0})
    with pytest.raises(ValueError, match="guidance checkpoint"):
        method.train_stage("exploration", inputs, None, tmp_path / "exploration.pt")
    method.train_stage("guidance", inputs, None, tmp_path / "guidance.pt")
    method.train_stage("exploration", inputs, tmp_path / "guidance.pt", tmp_path / "exploration.pt")
    guidance = torch.load(tmp_path / "guidance.pt", weights_only=True)
    exploration = torch.load(tmp_path / "exploration.pt", weights_only=True)
    for key, value in guidance["model"].items():  # the guidance came through exploration unchanged
        torch.testing.assert_close(exploration["model"][f"teacher.{key}"], value)
    assert exploration["extra"]["backbone_weights"] == ["random-init"]
    result = method.score_video(tmp_path / "exploration.pt", files["test"])
    assert result.scores.shape == (36,) and np.isfinite(result.scores).all()
    assert result.empty[26:].all() and not result.empty[8:26].any()  # nobody there: for the evaluation to fill
    with pytest.raises(ValueError, match="multiple of 8"):
        get_method("genet", params | {"seg_len": 12}).score_video(tmp_path / "exploration.pt", files["test"])
    # The public loader's 2N pairs (mirrored poses beside unmirrored features): twice the steps of an epoch.
    mirrored = get_method("genet", params | {"mirrored_pairs": True})
    mirrored.train_stage("exploration", inputs, tmp_path / "guidance.pt", tmp_path / "mirrored.pt")
    n = exploration["extra"]["n_train_segments"]
    twice = torch.load(tmp_path / "mirrored.pt", weights_only=True)
    assert (exploration["step"], twice["step"]) == (2 * math.ceil(n / 8), 2 * math.ceil(2 * n / 8))
    student = next(k for k in exploration["model"] if k.startswith("student.") and k.endswith("weight"))
    assert not torch.equal(twice["model"][student], exploration["model"][student])
    # Its mirrored poses negate x and leave the joints in place, as that loader does: the teacher's
    # latent (the student's target) follows the joint order, so a left/right swap would change it.
    from models.genet import TubeSet
    tube_set = TubeSet([read_tubes(files["train"])], (856, 480))
    index = np.arange(min(3, len(tube_set)))
    plain, mirror = tube_set.unflipped_input(index), tube_set.pose_input(index, np.ones(index.size, bool))
    raw = tube_set.raw_poses[index].astype(np.float64)
    np.testing.assert_allclose(mirror, model_input(raw * np.array([-1.0, 1.0, 1.0])[None, :, None, None], (856, 480)))
    assert not np.allclose(mirror, plain)
