"""Atomic file writing: an output exists under its final name only once it is complete.

A failed or stopped job (an exception, Ctrl-C, SIGTERM: what Slurm sends a preempted or cancelled
job) leaves nothing behind; one killed outright (SIGKILL: the out-of-memory killer, or Slurm once
its grace period is over) leaves at most a hidden temporary folder in the output's directory, never
a file that looks finished, and the next write of the same output on that host removes it.

While a write is open in the main thread, SIGTERM and SIGINT remove the process's unfinished
outputs and end it at once (exit status 128 + the signal). They do not raise an exception to unwind
through the writer: h5py runs Python callbacks (weak-reference clean-ups) between its writes, and an
exception raised by a signal handler inside one of those is printed and dropped by Python, so a
stopped frames job wrote on to its last frame and exited 0.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator


#: Each signal this module handles while a write is open, with the handler a process has by default
#: (one a program set itself is left alone).
_STOP_SIGNALS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
_handled: dict[int, object] = {}  # signal -> the handler to put back once no write is open
_open_writes = 0  # open atomic writes in the main thread while the handlers are installed
_open_folders: dict[Path, Path] = {}  # temporary folder -> final output, of the unfinished writes


def _remove_unfinished_and_exit(signum, frame):
    """Remove the temporary folders of the open writes, say so, and end the process now."""
    unfinished = dict(_open_folders)
    for folder in unfinished:
        shutil.rmtree(folder, ignore_errors=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    said = f"stopped by {signal.Signals(signum).name}"
    if unfinished:
        said += f"; unfinished, not written: {', '.join(map(str, unfinished.values()))}"
    with contextlib.suppress(OSError):
        os.write(2, f"{said}\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def _stop_signals_clean_up() -> Iterator[None]:
    """While an atomic write is open in the main thread, SIGTERM and SIGINT (where the process left
    them to their defaults) remove its unfinished outputs before the process ends."""
    global _open_writes
    own = threading.current_thread() is threading.main_thread()
    if own:
        if _open_writes == 0:
            for signum, default in _STOP_SIGNALS.items():
                if signal.getsignal(signum) is default:
                    _handled[signum] = signal.signal(signum, _remove_unfinished_and_exit)
        _open_writes += 1
    try:
        yield
    finally:
        if own:
            _open_writes -= 1
            if _open_writes == 0:
                for signum in list(_handled):
                    signal.signal(signum, _handled.pop(signum))


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
    with _stop_signals_clean_up():
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.{host}-{os.getpid()}.", suffix=".part",
                                       dir=final.parent))
        _open_folders[folder] = final
        tmp_path = folder / final.name
        try:
            yield tmp_path
            if not tmp_path.exists():
                raise FileNotFoundError(f"{final}: the writer produced no file")
            if durable:
                _fsync_tree(tmp_path)
            os.replace(tmp_path, final)
            _open_folders.pop(folder, None)  # complete under its final name: a stop now leaves it
            if durable:
                _fsync(final.parent)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            _open_folders.pop(folder, None)


def write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
