"""ffmpeg's messages while it decodes one video, read line by line as they come.

ffmpeg runs at ``-loglevel level+info``: each message carries its level, so its errors are told
apart from its description of the input and the output. From the output's description, which
ffmpeg prints before it writes the first frame, comes the size of the frames it writes, so that its
bytes are never read as frames of another size. From the input's come its container and the
duration it declares, and from ffmpeg's last report the time up to which it wrote frames
(``pipelines.declared_length`` compares the two).
The output muxer's timestamp notices are dropped as they arrive and only the last error lines are
kept, so a source that makes ffmpeg print a line per frame does not grow memory with the video's length.
"""
from __future__ import annotations

import re
import threading
from collections import deque

from pipelines.ffmpeg_tools import VIDEO_DESCRIPTION


KEPT_LINES = 20  # the last error lines kept for an error message
_MAX_LINE = 1 << 16  # a longer line is read in pieces of this many bytes

# "[h264 @ 0x..] [error] message", "[info] message"; a message's further lines carry no level.
_LEVEL = re.compile(r"^(?P<context>(?:\[[^\]]*\] )*)\[(?P<level>panic|fatal|error|warning|info|verbose|debug|trace)\] ")
_ERROR_LEVELS = ("panic", "fatal", "error")
# The output's video stream and its frame size. ffmpeg prints "Stream #0:0: Video: ..." in pieces, and
# since ffmpeg 7 a decoder message can land between them, cutting the line after "Stream #0:0": the
# size is read from the piece that holds it, whatever came before.
_OUTPUT_VIDEO = re.compile(VIDEO_DESCRIPTION)
_INPUT = re.compile(r"Input #0, (?P<format>[^ ]+), from ")
_INPUT_STREAM = re.compile(r"^Stream #0:\d+\S*: \w+: ")  # not the "Stream #0:0 -> #0:0" of the mapping
_TIME = r"(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)"
_DURATION = re.compile(rf"^Duration: {_TIME}")
_LAST_REPORT = re.compile(rf"^frame=.* time={_TIME} ")
_ESTIMATED_DURATION = "Estimating duration from bitrate"
# What the raw output muxer says about the timestamps it is handed (a source with repeated
# timestamps): the frames are written all the same, and a raw pipe carries no timestamps.
_OUTPUT_TIMESTAMP_NOTICE = re.compile(r"^\[rawvideo @ [^\]]*\] Application provided invalid, non monotonically increasing dts")


def _seconds(found: re.Match) -> float:
    return int(found["h"]) * 3600 + int(found["m"]) * 60 + float(found["s"])


class DecoderLog:
    """What ffmpeg says while it decodes: the (height, width) of the frames it writes, its input's
    container, streams and declared duration (seconds), the time its frames reach, and its errors
    (how many lines, and the last few)."""

    def __init__(self, keep: int = KEPT_LINES):
        self.count = 0
        self.last: deque[str] = deque(maxlen=keep)
        self.output_size: tuple[int, int] | None = None
        self.described = threading.Event()  # set once output_size is known, or ffmpeg has ended
        self.input_format: str | None = None
        self.input_streams = 0
        self.duration: float | None = None
        self.duration_estimated = False  # from the bit rate: no declared length
        self.decoded_end: float | None = None
        self._level = "info"
        self._in_output = False

    def read(self, stream) -> None:
        """Read ffmpeg's stderr (bytes) to its end; run in a thread, so that ffmpeg never waits on a full pipe."""
        try:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                self.add(raw.decode(errors="replace"))
        finally:
            self.described.set()

    def add(self, line: str) -> None:
        tagged = _LEVEL.match(line)
        if tagged:
            self._level = tagged["level"]
            line = tagged["context"] + line[tagged.end():]
        line = line.strip()
        if not line:
            return
        if self._in_output and self.output_size is None and (stream := _OUTPUT_VIDEO.search(line)):
            self.output_size = (int(stream["h"]), int(stream["w"]))
            self.described.set()
        elif self._level in _ERROR_LEVELS:
            if not _OUTPUT_TIMESTAMP_NOTICE.match(line):
                self.count += 1
                self.last.append(line)
        elif "Output #0, " in line:  # may follow a warning's last line on the same line
            self._in_output = True
        elif self._in_output:
            if report := _LAST_REPORT.match(line):
                self.decoded_end = _seconds(report)
        elif _ESTIMATED_DURATION in line:
            self.duration_estimated = True
        elif found := _INPUT.search(line):
            self.input_format = found["format"]
        elif _INPUT_STREAM.match(line):
            self.input_streams += 1
        elif self.duration is None and (found := _DURATION.match(line)):
            self.duration = _seconds(found)

    @property
    def declared_duration(self) -> float | None:
        """The duration ffmpeg read from the input, unless it estimated it from the bit rate."""
        return None if self.duration_estimated else self.duration

    def summary(self, n: int = 3) -> str:
        """The last ``n`` error lines, for an error message."""
        lines = list(self.last)[-n:]
        return " | ".join(lines) if lines else "no message from ffmpeg"
