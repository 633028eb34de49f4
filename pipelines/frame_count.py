"""The frame count a frames job writes beside its frames file (``<video>.n_frames.json``).

The labels job reads these counts, not the frames files: a frames file deleted once the features
were made is then not extracted again when only the labels must be redone. Kept apart from
``pipelines.frames`` so that the workflow can name the files without importing the extractor.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.atomic import write_text
from pipelines.ffmpeg_tools import VideoError

COUNT_SUFFIX = ".n_frames.json"


def count_file(frames_file: str | Path) -> str:
    """The count file beside ``<video>.h5``."""
    return str(frames_file).removesuffix(".h5") + COUNT_SUFFIX


def write_frame_count(path: Path, frames_file: Path, n_frames: int) -> None:
    write_text(path, json.dumps({"video": Path(frames_file).stem, "n_frames": n_frames, "frames": str(frames_file)}) + "\n")


def read_frame_count(path: Path) -> int:
    """The frame count a count file holds, checked."""
    try:
        record = json.loads(Path(path).read_text())
        n = record["n_frames"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VideoError(f"{path}: not a readable frame count ({err}); delete it and rerun its frames job") from None
    if not isinstance(n, int) or n < 1:
        raise VideoError(f"{path}: frame count {n!r} is not a positive integer; rerun its frames job")
    return n
