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
import sys
from pathlib import Path

from pipelines.atomic import write_text
from pipelines.provenance import sha256_file


class WeightsPinError(ValueError):
    """A weights file without a pinned sha256, or whose content is not the pinned one."""


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
