"""Locating ffmpeg and asking it about a video.

A system ffmpeg is used when one is on PATH; otherwise the static binary that the
``imageio-ffmpeg`` wheel carries, so a fresh machine needs no root. ffprobe is optional:
the wheel has none, so probing falls back to parsing ``ffmpeg -i``'s stream line.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class VideoError(RuntimeError):
    """A video that ffmpeg cannot read, or reads only in part."""


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary used everywhere in the pipeline."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version``, recorded in every output's provenance."""
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    codec: str


_STREAM_RE = re.compile(r"Stream #\S+.*?: Video: (?P<codec>\w+).*?, (?P<w>\d{2,5})x(?P<h>\d{2,5})[ ,\[]")
_FPS_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) (?:fps|tbr)")


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and codec of the first video stream of ``path``.

    Raises VideoError naming the file when it is missing or holds no video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        return _probe_with_ffprobe(ffprobe, path)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True
    )
    for line in proc.stderr.splitlines():
        stream = _STREAM_RE.search(line)
        if stream:
            fps = _FPS_RE.search(line)
            rate = float(fps["fps"]) * (1000 if fps and fps["k"] else 1) if fps else 0.0
            return VideoInfo(int(stream["w"]), int(stream["h"]), rate, stream["codec"])
    detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
    raise VideoError(f"{path}: no readable video stream ({detail})")


def _probe_with_ffprobe(ffprobe: str, path: Path) -> VideoInfo:
    proc = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
    )
    streams = json.loads(proc.stdout or "{}").get("streams", []) if proc.returncode == 0 else []
    if not streams:
        raise VideoError(f"{path}: no readable video stream ({proc.stderr.strip() or 'ffprobe found none'})")
    s = streams[0]
    num, _, den = s.get("avg_frame_rate", "0/1").partition("/")
    fps = float(num) / float(den) if den and float(den) else 0.0
    return VideoInfo(int(s["width"]), int(s["height"]), fps, s.get("codec_name", "unknown"))
