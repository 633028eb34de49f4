"""A training stage's log keeps every attempt: Snakemake empties a job's log before each start."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.stage_log import ATTEMPTS_LOG, kept_stage_log

REPO = Path(__file__).resolve().parents[1]


def test_a_failed_attempt_is_printed_again_by_the_next_and_the_kept_log_goes_with_success(tmp_path, capsys):
    out = tmp_path / "stage.pt"
    kept = tmp_path / "stage.pt.resume" / ATTEMPTS_LOG
    with pytest.raises(RuntimeError, match="disk quota"):
        with kept_stage_log(out):
            print("step 1 loss 0.5")
            raise RuntimeError("disk quota exceeded")
    first = capsys.readouterr().out
    assert "=== attempt started" in first and "step 1 loss 0.5" in first
    assert "RuntimeError: disk quota exceeded" in kept.read_text(), "the traceback is kept for the next attempt"

    with kept_stage_log(out):
        print("step 2 loss 0.4")
        out.write_bytes(b"final checkpoint")
    second = capsys.readouterr().out
    earlier, this = second.split("step 1 loss 0.5", 1)
    assert f"earlier attempts of this stage, from {kept}" in earlier
    assert "RuntimeError: disk quota exceeded" in this.split("=== attempt started")[0]
    assert "step 2 loss 0.4" in this.split("=== attempt started")[1]
    assert not kept.parent.exists(), "the kept log and its folder go once the final checkpoint exists"


def test_a_killed_training_job_leaves_its_lines_for_the_restart(tmp_path):
    """SIGKILL (what a node failure or a Slurm kill after the grace time does) in the middle of a
    resumable stage; the restarted job's output starts with the killed attempt's lines."""
    out = tmp_path / "model.pt"
    resume = tmp_path / "model.pt.resume"
    command = [sys.executable, "-m", "tests.slurm_workflow.toy_train", str(out), "--steps", "6", "--every", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*command, "--seconds-per-step", "0.5"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        # Wait on what is asserted below: step 2's whole line in the kept log (the checkpoint is saved
        # before the line is printed, and the job's own output may reach its file first).
        deadline = time.monotonic() + 120
        kept = resume / ATTEMPTS_LOG
        while not (kept.is_file() and re.search(r"^step 2 loss \S+\n", kept.read_text(), re.MULTILINE)):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        # Freeze it, then see where it stands: a slow test process may have let it reach step 4.
        first.send_signal(signal.SIGSTOP)
        newest = max(int(path.stem.removeprefix("step_")) for path in resume.glob("step_*.pt"))
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert newest in (2, 4), newest

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    earlier, this = second.stdout.split("=== attempt started")[1:]
    # Step 2's line was waited for; a later checkpoint's own line may have missed the kill, not those before it.
    assert all(f"step {step} loss" in earlier for step in range(1, max(3, newest))), earlier
    assert "step 1 loss" not in this and f"step {newest + 1} loss" in this and "step 6 loss" in this
    assert f"step {newest} loss" not in this
    assert out.is_file() and not (tmp_path / "model.pt.resume").exists()
