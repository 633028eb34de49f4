"""Atomic outputs: complete under their final name, or nothing at all."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from pipelines.atomic import atomic_path, write_text
from tests.conftest import REPO


def python_child(script: str, **options) -> subprocess.Popen:
    """Python running ``script`` with SIGINT at its default, as in a terminal or a Slurm job: a suite
    started in the background of a shell without job control (``cmd &``) inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler in its children."""
    return subprocess.Popen([sys.executable, "-c", script],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **options)


def test_a_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    write_text(tmp_path / "out.txt", "whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"] and (tmp_path / "out.txt").read_text() == "whole"


def test_sigterm_during_a_write_leaves_nothing_and_the_handler_is_put_back(tmp_path):
    """SIGTERM (what Slurm sends a preempted or cancelled job) would end the process without any
    cleanup, leaving the hidden temporary folder; during a write it exits through the cleanup."""
    script = textwrap.dedent(f"""
        import signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pipelines.atomic import atomic_path
        with atomic_path({str(tmp_path / "done.txt")!r}) as tmp:
            tmp.write_text("complete")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "handler not put back"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler not put back"
        with atomic_path({str(tmp_path / "out.bin")!r}) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = python_child(script, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["done.txt"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_an_hdf5_write_ends_the_writer_and_leaves_nothing(tmp_path, signum):
    """h5py runs Python weak-reference callbacks between its writes; an exception raised by a signal
    handler inside one is printed and dropped by Python, and the writer went on to its last frame
    and exited 0 (a stopped frames job finished its file under the final name)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import h5py, numpy as np
        from pipelines.atomic import atomic_path
        frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        with atomic_path({str(tmp_path / "frames.h5")!r}) as tmp, h5py.File(tmp, "w") as handle:
            frames = handle.create_dataset("frames", (20000, *frame.shape), np.uint8,
                                           chunks=(1, *frame.shape), compression="gzip")
            for index in range(frames.shape[0]):
                frames[index] = frame
                if index == 50:
                    print("writing", flush=True)
    """)
    proc = python_child(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 128 + signum
    assert list(tmp_path.iterdir()) == []
    assert f"unfinished, not written: {tmp_path / 'frames.h5'}" in proc.stderr.read()


def _killed_writer(final, tmp_path):
    """Start a writer of ``final`` and SIGKILL it in the middle of its write; return its folder."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pipelines.atomic import atomic_path
        with atomic_path({str(final)!r}) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = python_child(script, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    """SIGKILL (the out-of-memory killer, Slurm after its grace period) runs no cleanup: the hidden
    folder stays until the output is written again, and only folders of dead processes of this host
    are removed then."""
    final = tmp_path / "frames.h5"
    killed = _killed_writer(final, tmp_path)
    killed.kill()
    killed.wait(timeout=30)
    abandoned = [p.name for p in tmp_path.iterdir()]
    assert len(abandoned) == 1 and abandoned[0].startswith(".frames.h5.") and abandoned[0].endswith(".part")

    running = _killed_writer(final, tmp_path)  # another writer of the same name, still alive
    other_host = tmp_path / ".frames.h5.node042-1.abcdefgh.part"
    other_host.mkdir()
    other_output = tmp_path / ".frames.h5.x.part"  # not one of ours: no owner in its name
    other_output.mkdir()
    try:
        live = {p.name for p in tmp_path.iterdir()} - set(abandoned) - {other_host.name, other_output.name}
        write_text(final, "whole")
        left = {p.name for p in tmp_path.iterdir()}
        assert left == live | {"frames.h5", other_host.name, other_output.name}
        assert final.read_text() == "whole"
    finally:
        running.kill()
        running.wait(timeout=30)


def test_a_durable_write_reaches_the_disk_before_and_after_its_rename(tmp_path, monkeypatch):
    """Checkpoints replace the previous resume point: their bytes are flushed before the rename and
    the folder's entry after it, so a node crash cannot leave an empty file under the final name."""
    import os

    from pipelines import atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    final = tmp_path / "ckpt" / "step_10.pt"
    with atomic_path(final, durable=True) as tmp:
        tmp.write_bytes(b"weights")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].endswith("/step_10.pt") and ".part" in events[0][1]
    assert events[2][1] == str(final.parent)
    events.clear()
    write_text(tmp_path / "plain.txt", "not durable")
    assert [kind for kind, _ in events] == ["replace"]
