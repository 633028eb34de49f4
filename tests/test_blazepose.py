"""The offline BlazePose backend and the Hungarian tracker, down to the real vtest.avi scene."""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.frame_store import FrameWriter
from pipelines.poses.blazepose import (
    BLAZEPOSE_TO_COCO17,
    DETECTOR,
    LANDMARK_LITE,
    ChecksumError,
    fetch_model,
    main,
    ssd_anchors,
    tile_origins,
    weighted_nms,
)
from pipelines.poses.store import read_poses
from pipelines.poses.tracker import HungarianTracker, TrackerSettings, box_iou

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
WEIGHTS = SHARED / "weights" / "blazepose"
VTEST = SHARED / "data" / "videos" / "vtest.avi"

BLAZEPOSE_NAMES = {0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear", 11: "left_shoulder",
                   12: "right_shoulder", 13: "left_elbow", 14: "right_elbow", 15: "left_wrist", 16: "right_wrist",
                   23: "left_hip", 24: "right_hip", 25: "left_knee", 26: "right_knee", 27: "left_ankle",
                   28: "right_ankle"}
COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
          "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
          "left_ankle", "right_ankle")


def _weights() -> Path:
    if not (WEIGHTS / DETECTOR.name).is_file():
        pytest.skip(f"BlazePose models not found in {WEIGHTS}")
    return WEIGHTS


def test_landmarks_map_to_coco_joints_by_name():
    assert [BLAZEPOSE_NAMES[i] for i in BLAZEPOSE_TO_COCO17] == list(COCO17)


def test_ssd_anchors_follow_the_detector_grids():
    anchors = ssd_anchors()
    assert anchors.shape == (2254, 2)  # the detector's output count
    np.testing.assert_allclose(anchors[0], anchors[1])  # two anchors per cell on the stride-8 grid
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])  # x runs fastest
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # stride 16 starts after 28 * 28 * 2
    np.testing.assert_allclose(anchors[-6:], np.tile([6.5 / 7, 6.5 / 7], (6, 1)))  # six anchors per 7x7 cell


def test_tiles_cover_the_frame_with_overlap():
    assert tile_origins(768, 224, 0.5) == [0, 109, 218, 326, 435, 544]
    assert tile_origins(576, 224, 0.5) == [0, 88, 176, 264, 352]
    assert tile_origins(448, 224, 0.0) == [0, 224]
    assert tile_origins(100, 224, 0.5) == [0]


def test_weighted_nms_averages_overlapping_detections():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    points = np.stack([np.full((4, 2), 0.0), np.full((4, 2), 3.0), np.full((4, 2), 50.0)])
    kept_boxes, kept_points, scores = weighted_nms(boxes, points, np.array([0.75, 0.25, 0.5]), iou=0.3)
    np.testing.assert_allclose(kept_boxes[0], [0.25, 0, 10.25, 10])
    np.testing.assert_allclose(kept_points[0], np.full((4, 2), 0.75))
    np.testing.assert_allclose(scores, [0.75, 0.5])
    np.testing.assert_allclose(kept_boxes[1], boxes[2])


def test_models_are_checked_against_their_pinned_sha256(tmp_path):
    weights = _weights()
    assert fetch_model(DETECTOR, weights / DETECTOR.name) == weights / DETECTOR.name
    assert fetch_model(LANDMARK_LITE, None, weights) == weights / LANDMARK_LITE.name  # found in the cache folder
    damaged = tmp_path / DETECTOR.name
    shutil.copy(weights / DETECTOR.name, damaged)
    with damaged.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01")
    with pytest.raises(ChecksumError, match="sha256 .* pinned pose_detection.tflite"):
        fetch_model(DETECTOR, damaged)
    with pytest.raises(FileNotFoundError, match="published at https://"):
        fetch_model(DETECTOR, tmp_path / "missing.tflite")


def test_a_failed_download_names_the_model_and_what_to_set_instead(tmp_path, capsys):
    """No network (here: a port where nothing listens): the error says which file, from where, and
    which config key reads it from disk instead; nothing half-downloaded stays in the cache."""
    unreachable = dataclasses.replace(DETECTOR, url="http://127.0.0.1:9/pose_detection.tflite")
    with pytest.raises(FileNotFoundError, match=r"pose_detection\.tflite: not in .* its download from "
                                                r"http://127\.0\.0\.1:9/pose_detection\.tflite failed .* set "
                                                r"poses\.blazepose\.detector_weights to its path"):
        fetch_model(unreachable, None, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())
    frames = tmp_path / "frames.h5"
    with FrameWriter(frames, 8, 8, 3, "none") as writer:
        writer.append(np.zeros((2, 8, 8, 3), np.uint8))
    assert main([str(frames), str(tmp_path / "poses.h5"), "--cache-dir", str(tmp_path / "cache"),
                 "--detector-weights", str(tmp_path / "missing.tflite")]) == 1
    assert "error: pose_detection.tflite:" in capsys.readouterr().err


def test_the_poses_file_names_the_video_its_frames_came_from(tmp_path):
    frames = tmp_path / "frames.h5"
    with FrameWriter(frames, 64, 96, 3, "none") as writer:
        writer.append(np.zeros((2, 64, 96, 3), np.uint8))
        writer.set_attrs({"source": "/data/ped2/test/01.avi", "source_sha256": "ab" * 32})
    assert main([str(frames), str(tmp_path / "poses.h5"), "--cache-dir", str(_weights())]) == 0
    attrs = read_poses(tmp_path / "poses.h5")[1]
    assert (attrs["source"], attrs["source_sha256"]) == ("/data/ped2/test/01.avi", "ab" * 32)
    assert attrs["versions"]["ai-edge-litert"] not in ("", "not installed")


def _person(x: float, y: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    box = np.array([x, y, x + 20, y + 60])
    keypoints = np.zeros((17, 3))
    keypoints[:, 0] = x + np.linspace(2, 18, 17)
    keypoints[:, 1] = y + np.linspace(2, 58, 17)
    keypoints[:, 2] = 1
    return box, keypoints


def test_tracker_follows_crossing_walkers_and_bridges_short_misses():
    tracker = HungarianTracker(TrackerSettings(max_age=3))
    ids = []
    for frame in range(30):
        people = [_person(10 + 6 * frame), _person(200 - 6 * frame, 60)]  # they cross near frame 16
        if 10 <= frame < 12:
            people = people[1:]  # the first walker is missed for two frames
        boxes, keypoints = zip(*people)
        ids.append(tracker.update(frame, np.stack(boxes), np.stack(keypoints)))
    first = [frame_ids[0] for f, frame_ids in enumerate(ids) if not 10 <= f < 12]
    second = [frame_ids[-1] for frame_ids in ids]
    assert set(first) == {0} and set(second) == {1}
    # Unseen for longer than max_age, a person comes back under a new id.
    box, keypoints = _person(10 + 6 * 40)
    assert tracker.update(40, box[None], keypoints[None])[0] == 2


def test_box_iou():
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]), [[1 / 3, 0]])


@pytest.mark.slow
def test_blazepose_finds_and_tracks_the_people_of_vtest(tmp_path):
    """Measured on the first 40 frames of the real scene (three to five people, 60-100 px tall)."""
    weights = _weights()
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} not found")
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < 40:
        ok, frame = capture.read()
        assert ok, "vtest.avi has fewer frames than expected"
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    with FrameWriter(tmp_path / "vtest.h5", 576, 768, 3, "lz4") as writer:
        writer.append(np.stack(frames))
    started = time.perf_counter()
    assert main([str(tmp_path / "vtest.h5"), str(tmp_path / "poses.h5"), "--cache-dir", str(weights),
                 "--dataset", "vtest"]) == 0
    seconds = time.perf_counter() - started
    tracks, attrs = read_poses(tmp_path / "poses.h5")
    people_per_frame = np.bincount(tracks.frames, minlength=40)
    lengths = np.sort([rows.stop - rows.start for _, rows in tracks.tracks()])[::-1]
    print(f"vtest: {np.mean(people_per_frame > 0):.0%} of frames with people, {people_per_frame.mean():.2f} per "
          f"frame, {len(lengths)} tracks, longest {lengths[:5].tolist()}, {40 / seconds:.2f} frames/s")
    assert np.mean(people_per_frame > 0) >= 0.95
    assert people_per_frame.mean() >= 2.0
    assert lengths[0] == 40 and lengths[1] >= 20  # one person followed throughout, another for half the clip
    assert lengths[lengths >= 10].sum() >= 0.9 * len(tracks)  # nearly every skeleton is in a lasting track
    assert attrs["backend"] == "blazepose" and len(attrs["weights_sha256"]) == 2
    assert attrs["source_sha256"] == "" and attrs["source"] == str(tmp_path / "vtest.h5")  # written by hand, no source
    assert (tracks.keypoints[..., 2] > 0.5).mean() > 0.5  # most joints are seen
