"""How long a video file says its video is, to tell a file cut short from a whole one.

ffmpeg decodes some cut files without an error: an AVI cut at a chunk boundary, an MPEG-TS cut
anywhere. Where the file declares the length of its video, the frames step compares it with the
time up to which ffmpeg decoded. An AVI's is read from its video stream's header here, because
ffmpeg scales the header's length down by the share of the file that is missing. Another container's
is the ``Duration`` ffmpeg prints, when the video is its only stream (else that may be an audio
track's, running on past the video). An MPEG-TS declares none (ffmpeg's duration is that of the
packets it finds), nor does a file whose duration ffmpeg estimates from its bit rate.
"""
from __future__ import annotations

import struct
from pathlib import Path

_HEADER_CHUNKS = 4096  # an AVI's header lists are at its start; this bounds the walk through them


def avi_declared_seconds(path: Path) -> float | None:
    """The length of the first video stream in an AVI's header (``strh``: dwLength frames of
    dwScale/dwRate seconds), or None when the file is no AVI or its header gives no length (a
    recording that never finished)."""
    with open(path, "rb") as handle:
        riff = handle.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"AVI ":
            return None
        offset = 12
        for _ in range(_HEADER_CHUNKS):
            handle.seek(offset)
            header = handle.read(12)
            if len(header) < 8:
                return None
            fourcc, size = header[:4], struct.unpack("<I", header[4:8])[0]
            if fourcc == b"LIST":
                if header[8:12] == b"movi":  # the frames begin: no video stream header before them
                    return None
                if header[8:12] in (b"hdrl", b"strl"):  # step into the list
                    offset += 12
                    continue
            elif fourcc == b"strh":
                body = header[8:] + handle.read(max(0, min(size, 56) - 4))
                if body[:4] == b"vids" and len(body) >= 36:
                    scale, rate, _start, length = struct.unpack_from("<4I", body, 20)
                    return length * scale / rate if scale and rate and length else None
            offset += 8 + size + (size & 1)
    return None


def declared_seconds(path: Path, input_format: str | None, n_streams: int, ffmpeg_duration: float | None) -> float | None:
    """The length ``path`` declares for its video, or None: an AVI's header's, else the duration
    ffmpeg read (None where it found none or estimated it from the bit rate) of a file whose only
    stream is the video."""
    if input_format == "avi":
        return avi_declared_seconds(path)
    return ffmpeg_duration if n_streams == 1 else None


SHORTFALL_S = 1.0  # a decoded video ending more than this before its declared end is reported


def shortfall(source: Path, declared: float | None, decoded_end: float | None, n_frames: int) -> str | None:
    """A warning when the frames ffmpeg decoded end clearly before the declared length, else None.

    Time is compared, not frame counts: a variable frame rate makes a declared length times the
    nominal rate miscount whole videos (an AVI stores a skipped frame as an empty chunk, and ffmpeg
    reports its time base as the rate). One second is far above ffmpeg's rounding (hundredths) and a
    last frame's own duration; a video cut less than that short passes. It is a warning, not an
    error: a whole file can fall short of its declared length too (an AVI capture whose last second
    of frames was dropped keeps them as empty chunks), and refusing it would stop the run on a sound
    video; the warning names the file, and the frames file records both lengths.
    """
    if declared is None or decoded_end is None or decoded_end >= declared - SHORTFALL_S:
        return None
    return (f"{source}: the file declares {declared:.2f} s of video, and ffmpeg decoded {n_frames} frames ending at "
            f"{decoded_end:.2f} s without an error: it may be cut short (an interrupted copy or download); "
            f"the {n_frames} frames are stored")
