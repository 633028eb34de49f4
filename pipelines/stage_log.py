"""A training stage's log that survives restarts.

Snakemake empties a job's log file before every start, so a stage that resumes after its Slurm
job was preempted, requeued or cancelled would otherwise keep only what its last attempt printed:
the losses of the earlier steps and the reason the earlier attempt stopped would be gone. While a
stage runs, what it prints is copied into ``<out>.resume/attempts.log`` beside its resume points;
a restarted stage prints that file first, so the job's log ends up holding every attempt in
order. The copy goes when the stage's final checkpoint is written, with the resume points.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import socket
import sys
import traceback
from pathlib import Path

from pipelines.training import resume_dir_of

ATTEMPTS_LOG = "attempts.log"


class _Tee(io.TextIOBase):
    """A text stream that writes to several streams (the job's own output and the kept log)."""

    def __init__(self, *streams):
        super().__init__()
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


def _attempt_header() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    where = socket.gethostname() + (f", Slurm job {job}" if job else "") + f", pid {os.getpid()}"
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"=== attempt started {started} on {where} ===\n"


@contextlib.contextmanager
def kept_stage_log(out: str | Path):
    """Print the earlier attempts' log of the stage writing ``out``, then copy this attempt's
    Python-level output (``sys.stdout`` and ``sys.stderr``, tracebacks included) into it. Kept on
    failure, for the next attempt; removed once ``out`` exists."""
    out = Path(out)
    kept = resume_dir_of(out) / ATTEMPTS_LOG
    if kept.is_file():
        sys.stdout.write(f"=== earlier attempts of this stage, from {kept} ===\n")
        sys.stdout.write(kept.read_text(errors="replace"))
        sys.stdout.flush()
    kept.parent.mkdir(parents=True, exist_ok=True)
    original = sys.stdout, sys.stderr
    with open(kept, "a", buffering=1) as log:
        sys.stdout, sys.stderr = _Tee(original[0], log), _Tee(original[1], log)
        try:
            print(_attempt_header(), end="", flush=True)
            yield kept
        except BaseException:
            log.write(traceback.format_exc())  # the job's log gets it from the interpreter
            raise
        finally:
            sys.stdout, sys.stderr = original
    if out.exists():
        kept.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            kept.parent.rmdir()  # only if empty: the stage removes its resume points itself
