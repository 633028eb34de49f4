"""Converting AlphaPose's two JSON layouts into poses files, and refusing damaged input."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.frame_store import FrameWriter
from pipelines.poses.convert import PoseFormatError, convert, main
from pipelines.poses.segments import segment_track
from pipelines.poses.store import PoseDataError, read_poses


def _keypoints(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(10, 90, size=(17, 2)).round(2)
    conf = rng.uniform(0.1, 1.0, size=(17, 1)).round(3)
    return np.concatenate([xy, conf], axis=1).ravel().tolist()


@pytest.fixture
def frames_file(tmp_path) -> Path:
    path = tmp_path / "frames.h5"
    with FrameWriter(path, height=100, width=120, channels=3, compression="none") as writer:
        writer.append(np.zeros((30, 100, 120, 3), np.uint8))
    return path


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# What AlphaPose's demo_inference.py writes for a video with tracking on: image_id "<frame>.jpg",
# box [x, y, w, h], idx the track id (PoseFlow writes an int; merged pose-NMS ids come as a list).
ALPHAPOSE_RESULTS = [
    {"image_id": "0.jpg", "category_id": 1, "keypoints": _keypoints(0), "score": 2.61,
     "box": [10.0, 12.0, 40.0, 80.0], "idx": 1},
    {"image_id": "0.jpg", "category_id": 1, "keypoints": _keypoints(1), "score": 2.2,
     "box": [60.0, 8.0, 30.0, 70.0], "idx": 2},
    {"image_id": "1.jpg", "category_id": 1, "keypoints": _keypoints(2), "score": 2.58,
     "box": [11.0, 12.5, 40.0, 80.0], "idx": [1.0]},
    {"image_id": "2.jpg", "category_id": 1, "keypoints": _keypoints(3), "score": 2.5,
     "box": [12.0, 13.0, 41.0, 79.0], "idx": 1},
]

# The released STG-NF pose packages: {person_id: {zero-padded frame: {keypoints, scores}}}.
TRACKED_PERSON = {
    "1": {"0000": {"keypoints": _keypoints(10), "scores": 2.9},
          "0001": {"keypoints": _keypoints(11), "scores": 2.8}},
    "3": {"0004": {"keypoints": _keypoints(12), "scores": 1.7}},
}


def test_alphapose_results_round_trip(tmp_path, frames_file):
    source = _write(tmp_path / "alphapose-results.json", ALPHAPOSE_RESULTS)
    settings = {"detector": "yolox-x", "tracker": "pose_flow", "min_box_area": 0}
    checked = {"checkpoint": hashlib.sha256(b"weights").hexdigest()}  # as pipelines.poses.alphapose_weights records it
    convert(source, tmp_path / "v.h5", frames_file, settings=settings, weights_sha256=checked)
    tracks, attrs = read_poses(tmp_path / "v.h5")
    np.testing.assert_array_equal(tracks.track_ids, [1, 1, 1, 2])
    np.testing.assert_array_equal(tracks.frames, [0, 1, 2, 0])
    for row, item in zip(range(4), [ALPHAPOSE_RESULTS[i] for i in (0, 2, 3, 1)]):
        np.testing.assert_allclose(tracks.keypoints[row].ravel(), item["keypoints"], rtol=1e-6)
        x, y, w, h = item["box"]
        np.testing.assert_allclose(tracks.boxes[row], [x, y, x + w, y + h])
        assert tracks.scores[row] == pytest.approx(item["score"])
    assert (tracks.n_frames, tracks.frame_size) == (30, (120, 100))
    assert attrs["source_format"] == "alphapose_results" and attrs["box_source"] == "detector"
    assert attrs["settings"] == settings
    assert attrs["weights_sha256"] == checked
    assert attrs["n_tracks"] == 2 and attrs["n_track_gaps"] == 0


def test_skeletons_of_the_source_are_scaled_onto_resized_frames(tmp_path):
    """AlphaPose reads the source video; frames stored at another size (frames.size) get keypoints and
    boxes scaled by the same factors, so they lie on the pixels GENet's tubes crop."""
    frames = tmp_path / "frames.h5"
    with FrameWriter(frames, height=50, width=30, channels=3, compression="none") as writer:
        writer.append(np.zeros((30, 50, 30, 3), np.uint8))
        writer.set_attrs({"original_size": [100, 120]})  # (height, width) of the source
    convert(_write(tmp_path / "alphapose-results.json", ALPHAPOSE_RESULTS), tmp_path / "v.h5", frames)
    tracks, _ = read_poses(tmp_path / "v.h5")
    first = np.asarray(ALPHAPOSE_RESULTS[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(tracks.keypoints[0], first * [0.25, 0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(tracks.boxes[0], [2.5, 6.0, 12.5, 46.0])
    assert tracks.frame_size == (30, 50)


def test_skeletons_far_outside_the_frame_are_refused(tmp_path, frames_file):
    """Keypoints of a 1920-wide video converted against 120-wide frames: another video or size."""
    wide = (np.asarray(ALPHAPOSE_RESULTS[0]["keypoints"]).reshape(17, 3) * [16, 1, 1]).ravel().tolist()
    source = _write(tmp_path / "alphapose-results.json", [dict(ALPHAPOSE_RESULTS[0], keypoints=wide)])
    with pytest.raises(PoseDataError, match=r"alphapose-results\.json: keypoints span x .* on frames of 120x100 "
                                            r"\(the source video is 120x100\): are these the skeletons of another video"):
        convert(source, tmp_path / "v.h5", frames_file)
    assert not (tmp_path / "v.h5").exists()


def test_alphapose_output_records_the_checkout_commit_and_its_pose_config(tmp_path, frames_file):
    checkout = tmp_path / "AlphaPose"
    (checkout / "configs").mkdir(parents=True)
    (checkout / "configs" / "pose.yaml").write_text("MODEL: FastPose\n")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    settings = {"checkout": str(checkout), "cfg": "configs/pose.yaml", "detector": "yolox-x"}
    source = _write(tmp_path / "alphapose-results.json", ALPHAPOSE_RESULTS)
    convert(source, tmp_path / "v.h5", frames_file, settings=settings)
    attrs = read_poses(tmp_path / "v.h5")[1]
    assert attrs["alphapose_revision"] == head
    assert attrs["alphapose_cfg_sha256"] == hashlib.sha256(b"MODEL: FastPose\n").hexdigest()
    (checkout / "configs" / "pose.yaml").write_text("MODEL: changed\n")
    convert(source, tmp_path / "v.h5", frames_file, settings=settings)
    assert read_poses(tmp_path / "v.h5")[1]["alphapose_revision"] == f"{head}+changes"


def test_tracked_person_round_trip(tmp_path, frames_file):
    source = _write(tmp_path / "01_0014_alphapose_tracked_person.json", TRACKED_PERSON)
    convert(source, tmp_path / "v.h5", frames_file)
    tracks, attrs = read_poses(tmp_path / "v.h5")
    np.testing.assert_array_equal(tracks.track_ids, [1, 1, 3])
    np.testing.assert_array_equal(tracks.frames, [0, 1, 4])
    np.testing.assert_allclose(tracks.keypoints[2].ravel(), TRACKED_PERSON["3"]["0004"]["keypoints"], rtol=1e-6)
    np.testing.assert_allclose(tracks.scores, [2.9, 2.8, 1.7], rtol=1e-6)
    keypoints = np.asarray(TRACKED_PERSON["1"]["0000"]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(tracks.boxes[0], [*keypoints[:, :2].min(0), *keypoints[:, :2].max(0)], rtol=1e-6)
    assert attrs["source_format"] == "tracked_person" and attrs["box_source"] == "keypoints"


def test_frame_folder_names_map_to_positions(tmp_path, frames_file):
    images = tmp_path / "frames_dir"
    images.mkdir()
    for k in range(1, 31):  # 1-based names, as some datasets number their frames
        (images / f"{k:03d}.jpg").write_bytes(b"")
    data = [dict(item, image_id=f"{int(item['image_id'][:-4]) + 1:03d}.jpg") for item in ALPHAPOSE_RESULTS]
    source = _write(tmp_path / "alphapose-results.json", data)
    tracks = convert(source, tmp_path / "v.h5", frames_file, image_dir=images)
    np.testing.assert_array_equal(tracks.frames, [0, 1, 2, 0])


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_json_is_a_clear_error(tmp_path, frames_file, cut):
    text = json.dumps(ALPHAPOSE_RESULTS)
    source = tmp_path / "alphapose-results.json"
    source.write_text(text[: int(len(text) * cut)])
    with pytest.raises(PoseFormatError, match=r"alphapose-results\.json: (truncated|corrupt) JSON .* line 1"):
        convert(source, tmp_path / "v.h5", frames_file)
    assert not (tmp_path / "v.h5").exists()


def test_corrupt_and_empty_json_are_clear_errors(tmp_path, frames_file):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"1": {"0000": {"keypoints": [1, 2, oops]}}}')
    with pytest.raises(PoseFormatError, match="corrupt JSON"):
        convert(corrupt, tmp_path / "v.h5", frames_file)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(PoseFormatError, match="empty file"):
        convert(empty, tmp_path / "v.h5", frames_file)


@pytest.mark.parametrize("layout", ["results", "tracked"])
def test_wrong_keypoint_length_names_the_detection(tmp_path, frames_file, layout):
    if layout == "results":
        data = json.loads(json.dumps(ALPHAPOSE_RESULTS))
        data[2]["keypoints"] = data[2]["keypoints"][:-3]  # 16 joints
        where = r"detection 2 \(image '1\.jpg'\)"
    else:
        data = json.loads(json.dumps(TRACKED_PERSON))
        data["3"]["0004"]["keypoints"] += [1.0, 2.0, 0.5] * 9  # 26 joints (Halpe)
        where = r"person '3', frame '0004'"
    source = _write(tmp_path / "poses.json", data)
    with pytest.raises(PoseFormatError, match=rf"{where}: expected 17 COCO keypoints as 51 values .* found (48|78)"):
        convert(source, tmp_path / "v.h5", frames_file)


@pytest.mark.parametrize("edit, where, problem", [
    (lambda d: d[1].update(score=None), r"detection 1 \(image '0\.jpg'\)", "score None"),
    (lambda d: d[3].update(box=["a", 1, 2, 3]), r"detection 3 \(image '2\.jpg'\)", "box value 'a'"),
    (lambda d: d[0].update(score="high"), r"detection 0 \(image '0\.jpg'\)", "score 'high'"),
])
def test_a_field_of_the_wrong_type_names_the_detection(tmp_path, frames_file, edit, where, problem):
    """Each ended in float()'s own TypeError or ValueError, naming neither file nor detection."""
    data = json.loads(json.dumps(ALPHAPOSE_RESULTS))
    edit(data)
    source = _write(tmp_path / "alphapose-results.json", data)
    with pytest.raises(PoseFormatError, match=rf"alphapose-results.json: {where}: {problem} is not a finite number"):
        convert(source, tmp_path / "v.h5", frames_file)
    tracked = json.loads(json.dumps(TRACKED_PERSON))
    tracked["1"]["0001"]["scores"] = [0.9, "high"]
    source = _write(tmp_path / "tracked.json", tracked)
    with pytest.raises(PoseFormatError, match=r"tracked.json: person '1', frame '0001': score 'high' is not a finite number"):
        convert(source, tmp_path / "v.h5", frames_file)
    assert not (tmp_path / "v.h5").exists()


def test_untracked_results_are_refused(tmp_path, frames_file):
    data = json.loads(json.dumps(ALPHAPOSE_RESULTS))
    del data[1]["idx"]
    with pytest.raises(PoseFormatError, match="no track id.*--pose_flow"):
        convert(_write(tmp_path / "a.json", data), tmp_path / "v.h5", frames_file)
    data = json.loads(json.dumps(ALPHAPOSE_RESULTS))
    data[1]["idx"] = [[2.0], [5.0]]  # pose-NMS merged two boxes: not a track id
    with pytest.raises(PoseFormatError, match="several ids"):
        convert(_write(tmp_path / "b.json", data), tmp_path / "v.h5", frames_file)


def test_duplicate_and_out_of_range_detections_are_errors(tmp_path, frames_file):
    data = json.loads(json.dumps(ALPHAPOSE_RESULTS))
    data[2]["image_id"] = "0.jpg"  # track 1 twice in frame 0
    with pytest.raises(PoseDataError, match="track 1 has two detections in frame 0"):
        convert(_write(tmp_path / "a.json", data), tmp_path / "v.h5", frames_file)
    data = json.loads(json.dumps(TRACKED_PERSON))
    data["3"]["0030"] = data["3"].pop("0004")  # the video has frames 0..29
    with pytest.raises(PoseDataError, match="frames 0..30 but the video has 30 frames"):
        convert(_write(tmp_path / "b.json", data), tmp_path / "v.h5", frames_file)


def test_a_track_that_jumps_is_kept_and_its_gap_never_bridged(tmp_path, frames_file):
    # Track 7 is seen in frames 0..9, lost for frames 10..14, and seen again in 15..29.
    frames = [*range(0, 10), *range(15, 30)]
    data = {"7": {f"{f:04d}": {"keypoints": _keypoints(f), "scores": 1.0} for f in frames}}
    tracks = convert(_write(tmp_path / "jump.json", data), tmp_path / "v.h5", frames_file)
    _, attrs = read_poses(tmp_path / "v.h5")
    assert len(tracks) == len(frames)  # nothing dropped
    assert attrs["n_track_gaps"] == 1 and attrs["longest_track_gap"] == 5
    segments = segment_track(tracks.frames, tracks.keypoints, tracks.scores, seg_len=8, stride=1)
    spans = [(f0, tracks.frames[np.searchsorted(tracks.frames, f0) + 7]) for f0 in segments.start_frames]
    assert spans and all(end < 10 or start >= 15 for start, end in spans)


def test_command_line_reports_errors_without_a_traceback(tmp_path, frames_file, capsys):
    source = tmp_path / "bad.json"
    source.write_text("[{")
    assert main([str(source), str(tmp_path / "v.h5"), "--frames", str(frames_file)]) == 1
    assert "truncated JSON" in capsys.readouterr().err
    good = _write(tmp_path / "good.json", ALPHAPOSE_RESULTS)
    assert main([str(good), str(tmp_path / "v.h5"), "--frames", str(frames_file), "--backend", "alphapose"]) == 0
    assert "4 detections in 2 tracks" in capsys.readouterr().out
