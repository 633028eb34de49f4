"""Locating ffmpeg and asking it about a video.

A system ffmpeg is used when one of release 5.1 or newer is on PATH; otherwise the static binary
that the ``imageio-ffmpeg`` wheel carries, so a fresh machine needs no root. ffprobe is optional:
the wheel has none, so probing falls back to parsing ``ffmpeg -i``'s stream line.
"""
from __future__ import annotations

import functools
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class VideoError(RuntimeError):
    """A video that ffmpeg cannot read, or reads only in part."""


# The oldest ffmpeg the decoder's options exist in (``-fps_mode``, 5.1).
MIN_FFMPEG = (5, 1)
_VERSION_RE = re.compile(r"^ffmpeg version n?(\d+)\.(\d+)")


def _first_version_line(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def release_of(version_line: str) -> tuple[int, int] | None:
    """(major, minor) of an ``ffmpeg -version`` line; None for a build that names no release (a git
    snapshot such as ``N-112233-g...``, newer than any release it could be mistaken for)."""
    found = _VERSION_RE.match(version_line)
    return (int(found[1]), int(found[2])) if found else None


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary used everywhere in the pipeline: the system's when it is recent
    enough, else the one the imageio-ffmpeg wheel carries (a cluster's default module is often
    older than the decoder's options; it would fail on every video)."""
    import imageio_ffmpeg

    found = shutil.which("ffmpeg")
    if found:
        release = release_of(_first_version_line(found))
        if release is None or release >= MIN_FFMPEG:
            return found
        bundled = imageio_ffmpeg.get_ffmpeg_exe()
        if (release_of(_first_version_line(bundled)) or MIN_FFMPEG) < MIN_FFMPEG:
            raise VideoError(f"{found} is ffmpeg {release[0]}.{release[1]} and the bundled {bundled} is older than "
                             f"{MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} too; put ffmpeg {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} or newer on PATH")
        print(f"note: {found} is ffmpeg {release[0]}.{release[1]}, older than {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]}; "
              f"using the bundled {bundled}", file=sys.stderr)
        return bundled
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version``, recorded in every output's provenance."""
    return _first_version_line(ffmpeg_exe())


@functools.cache
def crops_by_container() -> bool:
    """Whether this ffmpeg crops decoded frames by their container's cropping metadata unless told
    not to: release 7.1 and newer, whose ``ffmpeg -h long`` lists ``-apply_cropping``."""
    help_text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", "long"], capture_output=True, text=True,
                               errors="replace").stdout
    return "-apply_cropping[" in help_text


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream: its coded size, and the rotation its metadata asks players for."""

    width: int
    height: int
    fps: float
    codec: str
    rotation: int = 0  # degrees, 0..359, from the stream's display matrix (phones record portrait video so)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames ffmpeg decodes, a container's cropping aside: a rotation of
        90 or 270 degrees swaps the coded sides, any other one turns the picture within them."""
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)


# A video stream's codec and frame size, as ffmpeg describes them after "Stream #0:0...".
VIDEO_DESCRIPTION = r": Video: (?P<codec>\w+).*?, (?P<w>\d{1,5})x(?P<h>\d{1,5})[ ,\[]"
_STREAM_RE = re.compile(r"Stream #\S+.*?" + VIDEO_DESCRIPTION)
_FPS_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?)(?P<k>k?) (?:fps|tbr)")
_ROTATION_RE = re.compile(r"rotation of (?P<deg>-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_NO_OUTPUT_USAGE = "At least one output file must be specified"


def _whole_degrees(degrees: float) -> int:
    """A display rotation as ffmpeg takes it: rounded to whole degrees (halves away from zero), in
    0..359. ffmpeg transposes the frames only when that is 90 or 270 (a 89.4 degree rotation is 89,
    and turns the picture within the coded size)."""
    return int(math.copysign(math.floor(abs(degrees) + 0.5), degrees)) % 360


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate, codec and rotation of the first video stream of ``path`` (the stream the
    frames are decoded from).

    Raises VideoError naming the file when it is missing or holds no video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        return _probe_with_ffprobe(ffprobe, path)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", input_url(path)], capture_output=True, text=True,
        errors="replace",  # metadata tags in other encodings must not stop the probe
    )
    lines = proc.stderr.splitlines()
    for index, line in enumerate(lines):
        stream = _STREAM_RE.search(line)
        if stream:
            fps = _FPS_RE.search(line)
            rate = float(fps["fps"]) * (1000 if fps and fps["k"] else 1) if fps else 0.0
            return VideoInfo(int(stream["w"]), int(stream["h"]), rate, stream["codec"], _stream_rotation(lines[index + 1:]))
    # Asked for no output, ffmpeg ends with its usage line: no reason for anything. A file it opened
    # and described without a video stream holds none; one it could not open, its last line says why.
    said = [line.strip() for line in lines if line.strip() and line.strip() != _NO_OUTPUT_USAGE]
    video = next((line for line in said if ": Video: " in line), None)
    if video:
        raise VideoError(f"{path}: no readable video stream (ffmpeg gives it no size: {video})")
    if not said or any(line.startswith("Input #") for line in said):
        raise VideoError(f"{path}: the file holds no video stream")
    raise VideoError(f"{path}: no readable video stream ({said[-1]})")


def _stream_rotation(following: list[str]) -> int:
    """The rotation in the side data printed under a stream's line, up to the next stream."""
    for line in following:
        if "Stream #" in line or not line.startswith(" "):
            break
        rotation = _ROTATION_RE.search(line)
        if rotation:
            return _whole_degrees(float(rotation["deg"]))
    return 0


def input_url(path: str | Path) -> str:
    """``path`` as ffmpeg reads a local file: with the file protocol, so that a name with a colon
    (``12:30.mp4``) is not taken for a protocol and one starting with ``-`` not for an option."""
    return f"file:{path}"


def _probe_with_ffprobe(ffprobe: str, path: Path) -> VideoInfo:
    proc = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", input_url(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    streams = json.loads(proc.stdout or "{}").get("streams", []) if proc.returncode == 0 else []
    if proc.returncode == 0 and not streams:
        raise VideoError(f"{path}: the file holds no video stream")
    if not streams:
        raise VideoError(f"{path}: no readable video stream ({proc.stderr.strip() or 'no output from ffprobe'})")
    s = streams[0]
    num, _, den = s.get("avg_frame_rate", "0/1").partition("/")
    fps = float(num) / float(den) if den and float(den) else 0.0
    rotation = next((float(d["rotation"]) for d in s.get("side_data_list", []) if "rotation" in d), None)
    if rotation is None:  # older ffprobe: a "rotate" tag, clockwise (the display matrix is counter-clockwise)
        rotation = -float(s.get("tags", {}).get("rotate", 0))
    return VideoInfo(int(s["width"]), int(s["height"]), fps, s.get("codec_name", "unknown"), _whole_degrees(rotation))
