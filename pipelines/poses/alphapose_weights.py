"""Check AlphaPose's weights files against the sha256 pinned in the config before AlphaPose runs.

AlphaPose reads its pose, detector and tracker weights with a plain ``torch.load``, which unpickles
anything, and its model zoo publishes no checksums: each file must be pinned by the user
(``poses.alphapose.weights_sha256``) after checking it against a copy they trust. This step checks
every file once per run and records ``{name: {"path", "sha256"}}``; the AlphaPose jobs wait for it and
the poses files copy the record, so no file is hashed again per video.

Run by hand: ``python -m pipelines.poses.alphapose_weights OUT.json --file NAME=PATH --pinned-json J``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from pipelines.atomic import write_text
from pipelines.provenance import sha256_file


class WeightsPinError(ValueError):
    """A weights file without a pinned sha256, or whose content is not the pinned one."""


def detector_weights_path(detector: str) -> str | None:
    """Where ``demo_inference.py --detector NAME`` loads its detector from, relative to the checkout
    (AlphaPose's ``detector/apis.py`` and ``detector/yolo_cfg.py``); None for detectors it configures
    elsewhere (EfficientDet, the JDE tracker)."""
    name = detector.lower()
    if name == "yolo":
        return "detector/yolo/data/yolov3-spp.weights"
    if "yolox" in name:
        return f"detector/yolox/data/{('yolox-x' if name == 'yolox' else name).replace('-', '_')}.pth"
    return None


_LOADMODEL = re.compile(r"""^cfg\.loadmodel\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def tracker_weights_path(checkout: str | Path) -> str | None:
    """The Re-ID weights ``--pose_track`` loads: ``cfg.loadmodel`` of the checkout's
    ``trackers/tracker_cfg.py`` (None when the checkout has no such file)."""
    cfg = Path(checkout) / "trackers" / "tracker_cfg.py"
    found = _LOADMODEL.search(cfg.read_text()) if cfg.is_file() else None
    return found.group(1) if found else None


def settings_problems(settings: dict) -> list[str]:
    """Config values naming weights other than those AlphaPose will load: the pins would check (and
    the poses files record) one file while AlphaPose unpickles another."""
    problems = []
    expected = detector_weights_path(settings["detector"])
    if expected and Path(settings["detector_weights"]) != Path(expected):
        problems.append(f"poses.alphapose.detector_weights is {settings['detector_weights']}, but AlphaPose loads "
                        f"{expected} for detector {settings['detector']}: set it to {expected}")
    if settings["tracker"] == "pose_track":
        tracker = tracker_weights_path(settings["checkout"])
        if not settings["tracker_weights"]:
            problems.append("poses.alphapose.tracker_weights is needed with tracker pose_track (its Re-ID weights are "
                            f"unpickled too): set it to {tracker or 'the cfg.loadmodel of trackers/tracker_cfg.py'}")
        elif tracker and Path(settings["tracker_weights"]) != Path(tracker):
            problems.append(f"poses.alphapose.tracker_weights is {settings['tracker_weights']}, but the checkout's "
                            f"trackers/tracker_cfg.py loads {tracker}: set it to {tracker}")
    return problems


def checkout_revision(checkout: str | Path) -> str:
    """The commit of an AlphaPose checkout ("+changes" when its tracked files differ), or "unknown"."""
    def git(*args):
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode or Path(top.stdout.strip()).resolve() != Path(checkout).resolve():
            return "unknown"  # not a git checkout itself (perhaps a copy inside another repository)
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + ("+changes" if changed else "")


def check_weights(files: dict[str, Path], pinned: dict[str, str]) -> dict[str, dict[str, str]]:
    """The path and sha256 of each file, each checked against its pin; errors name the file."""
    record = {}
    for name, path in sorted(files.items()):
        found = sha256_file(path)
        if name not in pinned:
            raise WeightsPinError(f"{path}: no sha256 pinned for AlphaPose's {name} weights; this file's is {found}: "
                                  f"check it against a copy you trust, then set "
                                  f"poses.alphapose.weights_sha256.{name}: {found}")
        if found != pinned[name]:
            raise WeightsPinError(f"{path}: sha256 {found}, but poses.alphapose.weights_sha256.{name} pins "
                                  f"{pinned[name]}: the file changed or is another download")
        record[name] = {"path": str(path), "sha256": found}
    return record


def _named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the record to write (.json)")
    parser.add_argument("--file", type=_named_path, action="append", required=True, help="NAME=PATH (repeatable)")
    parser.add_argument("--pinned-json", required=True, help='{"NAME": "SHA256", ...}')
    args = parser.parse_args(argv)
    try:
        record = check_weights(dict(args.file), json.loads(args.pinned_json))
    except WeightsPinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_text(args.out, json.dumps(record, indent=1, sort_keys=True) + "\n")
    checked = ", ".join(f"{name} {entry['sha256'][:12]}" for name, entry in record.items())
    print(f"{args.out}: {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
