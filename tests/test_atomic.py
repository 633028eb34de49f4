"""Atomic outputs: complete under their final name, or nothing at all."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from pipelines.atomic import atomic_path, write_text
from tests.conftest import REPO


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
        with atomic_path({str(tmp_path / "out.bin")!r}) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["done.txt"]
