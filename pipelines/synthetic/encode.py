"""H.264 encoding of rendered frames through ffmpeg.

Frames are streamed to ffmpeg's stdin one at a time, so no video is ever held in memory. libx264 runs
single-threaded with the bitexact flags, so the same frames always give the same bytes with the same ffmpeg.
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import ffmpeg
import numpy as np

from pipelines.ffmpeg_tools import ffmpeg_exe

CRF = 18  # visually lossless for x264: keeps thin limbs crisp without large files
PRESET = "veryfast"  # speed matters more than size for videos this small
# The container comes from the final name's suffix: outputs are written under temporary names first.
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov"}


class EncodingError(RuntimeError):
    """ffmpeg could not write a video."""


def container_of(path: Path) -> str:
    """ffmpeg muxer for a video file name; an error names the file and the supported suffixes."""
    try:
        return CONTAINERS[Path(path).suffix.lower()]
    except KeyError:
        raise EncodingError(f"{path}: unsupported video suffix; expected one of {sorted(CONTAINERS)}") from None


def encode_video(frames: Iterable[np.ndarray], path: Path, container: str, width: int, height: int, fps: int,
                 name_in_errors: Path | None = None) -> int:
    """Encodes BGR uint8 frames (height, width, 3) to H.264 yuv420p at ``path``; returns the frame count.

    Raises EncodingError naming ``name_in_errors`` (default ``path``) with ffmpeg's own message when
    ffmpeg fails; a frame of the wrong size or type is refused before it reaches ffmpeg.
    """
    shown = name_in_errors or path
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="bgr24", s=f"{width}x{height}", framerate=fps)
    stream = ffmpeg.output(
        stream, str(path), format=container, vcodec="libx264", pix_fmt="yuv420p", crf=CRF, preset=PRESET,
        threads=1, map_metadata=-1, flags="+bitexact", fflags="+bitexact",
    )
    stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").overwrite_output()
    command = ffmpeg.compile(stream, cmd=ffmpeg_exe())
    count = 0
    stopped_early = False
    # ffmpeg's messages go to a file, not a pipe, so a chatty ffmpeg can never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for frame in frames:
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise EncodingError(f"{shown}: frame {count} is {frame.dtype} {frame.shape}, "
                                        f"expected uint8 {(height, width, 3)}")
                try:
                    process.stdin.write(frame.tobytes())
                except BrokenPipeError:
                    stopped_early = True
                    break
                count += 1
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if returncode != 0 or stopped_early:
            log.seek(0)
            message = log.read().decode(errors="replace").strip() or "no message"
            raise EncodingError(f"{shown}: ffmpeg failed (exit status {returncode}) after {count} frames: "
                                f"{message[-2000:]}")
    return count
