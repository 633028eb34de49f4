"""Atomic file writing: an output exists under its final name only once it is complete.

A failed or stopped job (an exception, Ctrl-C, SIGTERM: what Slurm sends a preempted or cancelled
job) leaves nothing behind; one killed outright (SIGKILL) leaves at most a hidden temporary folder
in the output's directory, never a file that looks finished.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator


_installed_for = 0  # open atomic writes for which this module's SIGTERM handler is installed


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the writers' cleanup, as Ctrl-C does


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While an atomic write is open in the main thread of a process that left SIGTERM to its
    default (which ends the process without running any cleanup), SIGTERM exits through Python."""
    global _installed_for
    own = threading.current_thread() is threading.main_thread() and (
        _installed_for > 0 or signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    if own:
        if _installed_for == 0:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _installed_for += 1
    try:
        yield
    finally:
        if own:
            _installed_for -= 1
            if _installed_for == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary path (``final``'s name in a fresh hidden folder beside it) does not exist yet,
    so writers create it instead of truncating an existing file: on ext4, closing a file that was
    truncated and then rewritten forces its data to disk at once (``auto_da_alloc``), which cost
    a 1 GB frames file half a second.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_unwinds():
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
        tmp_path = folder / final.name
        try:
            yield tmp_path
            if not tmp_path.exists():
                raise FileNotFoundError(f"{final}: the writer produced no file")
            os.replace(tmp_path, final)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
