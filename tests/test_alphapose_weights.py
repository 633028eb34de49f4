"""AlphaPose's weights are checked against the user's pinned sha256 before AlphaPose unpickles them."""
from __future__ import annotations

import hashlib
import json

from pipelines.poses.alphapose_weights import main


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
