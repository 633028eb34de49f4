"""AlphaPose's weights are checked against the user's pinned sha256 before AlphaPose unpickles them."""
from __future__ import annotations

import hashlib
import json

from pipelines.poses.alphapose_weights import (detector_weights_path, main, settings_problems,
                                               tracker_weights_path)


def test_each_weights_file_must_match_its_pin_and_the_record_is_written_only_then(tmp_path, capsys):
    pose, detector = tmp_path / "fast_421_res152_256x192.pth", tmp_path / "yolox_x.pth"
    pose.write_bytes(b"pose weights")
    detector.write_bytes(b"detector weights")
    digests = {"checkpoint": hashlib.sha256(b"pose weights").hexdigest(),
               "detector_weights": hashlib.sha256(b"detector weights").hexdigest()}
    out = tmp_path / "weights.json"
    files = ["--file", f"checkpoint={pose}", "--file", f"detector_weights={detector}"]

    unpinned = {"checkpoint": digests["checkpoint"]}
    assert main([str(out), *files, "--pinned-json", json.dumps(unpinned)]) == 1
    error = capsys.readouterr().err
    assert f"{detector}: no sha256 pinned" in error and digests["detector_weights"] in error
    assert "poses.alphapose.weights_sha256.detector_weights" in error

    other = digests | {"checkpoint": "0" * 64}
    assert main([str(out), *files, "--pinned-json", json.dumps(other)]) == 1
    assert f"{pose}: sha256 {digests['checkpoint']}, but poses.alphapose.weights_sha256.checkpoint pins" in \
        capsys.readouterr().err
    assert not out.exists()

    assert main([str(out), *files, "--pinned-json", json.dumps(digests)]) == 0
    record = json.loads(out.read_text())
    assert record == {"checkpoint": {"path": str(pose), "sha256": digests["checkpoint"]},
                      "detector_weights": {"path": str(detector), "sha256": digests["detector_weights"]}}


def test_the_weights_checked_are_those_alphapose_loads(tmp_path):
    """AlphaPose derives the detector's file from --detector and the Re-ID file from its tracker
    config: a config naming other files would pin and record one file while another is unpickled."""
    assert detector_weights_path("yolox-x") == detector_weights_path("yolox") == "detector/yolox/data/yolox_x.pth"
    assert detector_weights_path("yolox-l") == "detector/yolox/data/yolox_l.pth"
    assert detector_weights_path("yolo") == "detector/yolo/data/yolov3-spp.weights"
    assert detector_weights_path("efficientdet_d0") is None
    (tmp_path / "trackers").mkdir()
    (tmp_path / "trackers" / "tracker_cfg.py").write_text(
        'cfg = edict()\ncfg.arch = "osnet_ain"\ncfg.loadmodel = "trackers/weights/osnet.pth"\n')
    assert tracker_weights_path(tmp_path) == "trackers/weights/osnet.pth"
    settings = {"checkout": str(tmp_path), "detector": "yolox-x", "detector_weights": "detector/yolox/data/yolox_x.pth",
                "tracker": "pose_flow", "tracker_weights": None}
    assert settings_problems(settings) == []
    wrong = settings_problems({**settings, "detector": "yolox-l"})
    assert wrong == ["poses.alphapose.detector_weights is detector/yolox/data/yolox_x.pth, but AlphaPose loads "
                     "detector/yolox/data/yolox_l.pth for detector yolox-l: set it to detector/yolox/data/yolox_l.pth"]
    assert "tracker_weights is needed with tracker pose_track" in settings_problems({**settings, "tracker": "pose_track"})[0]
    assert "trackers/tracker_cfg.py loads trackers/weights/osnet.pth" in settings_problems(
        {**settings, "tracker": "pose_track", "tracker_weights": "trackers/weights/other.pth"})[0]
    assert settings_problems({**settings, "tracker": "pose_track", "tracker_weights": "trackers/weights/osnet.pth"}) == []


def test_a_checkout_inside_another_repository_records_no_commit(tmp_path):
    """An unzipped AlphaPose copy inside another git repository is not that repository's commit."""
    import subprocess

    from pipelines.poses.alphapose_weights import checkout_revision

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "outer"], check=True)
    (tmp_path / "third_party" / "AlphaPose").mkdir(parents=True)
    assert checkout_revision(tmp_path / "third_party" / "AlphaPose") == "unknown"
    assert checkout_revision(tmp_path / "missing") == "unknown"
