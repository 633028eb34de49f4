"""Atomic file writing: an output exists under its final name only once it is complete.

A failed or stopped job (an exception, Ctrl-C, SIGTERM: what Slurm sends a preempted or cancelled
job) leaves nothing behind; one killed outright (SIGKILL: the out-of-memory killer, or Slurm once
its grace period is over) leaves at most a hidden temporary folder in the output's directory, never
a file that looks finished, and the next write of the same output on that host removes it.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_abandoned(final: Path, host: str) -> None:
    """Remove the temporary folders that earlier writes of ``final`` on this host left when their
    process was killed outright. A folder is named ``.<final>.<host>-<pid>.<random>.part``; one
    whose process still runs, or that another host made (its process cannot be checked from
    here), is left alone."""
    prefix, suffix = f".{final.name}.", ".part"
    for folder in final.parent.glob(glob.escape(prefix) + "*" + suffix):
        owner = folder.name[len(prefix):-len(suffix)].rpartition(".")[0]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host == host and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush one file's data, or one folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or a folder with everything under it, to disk."""
    for entry in sorted(path.rglob("*")) if path.is_dir() else []:
        _fsync(entry)
    _fsync(path)


@contextlib.contextmanager
def atomic_path(final: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary path (``final``'s name in a fresh hidden folder beside it) does not exist yet,
    so writers create it instead of truncating an existing file: on ext4, closing a file that was
    truncated and then rewritten forces its data to disk at once (``auto_da_alloc``), which cost
    a 1 GB frames file half a second. ``durable`` flushes the data to disk before the rename and
    the rename after it, for files whose loss in a node crash costs work (the resume points of
    training, which replace the previous one): without it a crash soon after the rename can leave
    an empty file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    _remove_abandoned(final, host)
    with _sigterm_unwinds():
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.{host}-{os.getpid()}.", suffix=".part",
                                       dir=final.parent))
        tmp_path = folder / final.name
        try:
            yield tmp_path
            if not tmp_path.exists():
                raise FileNotFoundError(f"{final}: the writer produced no file")
            if durable:
                _fsync_tree(tmp_path)
            os.replace(tmp_path, final)
            if durable:
                _fsync(final.parent)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
