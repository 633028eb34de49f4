"""ffmpeg's messages while it decodes one video, read line by line as they come.

The output muxer's timestamp notices are dropped as they arrive and only the last lines are kept,
so a source that makes ffmpeg print a line per frame does not grow memory with the video's length.
"""
from __future__ import annotations

import re
from collections import deque

KEPT_LINES = 20  # the last lines kept for an error message
_MAX_LINE = 1 << 16  # a longer line is read in pieces of this many bytes

# What the raw output muxer says about the timestamps it is handed (a source with repeated
# timestamps): the frames are written all the same, and a raw pipe carries no timestamps.
_OUTPUT_TIMESTAMP_NOTICE = re.compile(r"^\[rawvideo @ [^\]]*\] Application provided invalid, non monotonically increasing dts")


class DecoderLog:
    """The decoding errors ffmpeg reports: how many lines, and the last few."""

    def __init__(self, keep: int = KEPT_LINES):
        self.count = 0
        self.last: deque[str] = deque(maxlen=keep)

    def read(self, stream) -> None:
        """Read ffmpeg's stderr (bytes) to its end; run in a thread, so that ffmpeg never waits on a full pipe."""
        for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
            self.add(raw.decode(errors="replace"))

    def add(self, line: str) -> None:
        line = line.strip()
        if line and not _OUTPUT_TIMESTAMP_NOTICE.match(line):
            self.count += 1
            self.last.append(line)

    def summary(self, n: int = 3) -> str:
        """The last ``n`` lines, for an error message."""
        lines = list(self.last)[-n:]
        return " | ".join(lines) if lines else "no message from ffmpeg"
