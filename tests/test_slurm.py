"""Snakemake on a real Slurm through profiles/slurm: every job via sbatch, GPU requests in both
styles, interrupted training that resumes from its checkpoint, no resubmission after success, and
a run stopped before it submits jobs that no node can run.

The cluster is a one-node Slurm on this machine, started by profiles/slurm/local-cluster.sh (it
needs root and apt). Where it cannot start, the tests that need it are skipped saying why;
with VADBENCH_REQUIRE_SLURM=1 (as in CI) they fail instead.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipelines.training import load_checkpoint
from tests.conftest import REPO, snakemake_env
from tests.slurm_workflow.toy_train import train
from tests.workflow_helpers import planned_jobs, tiny_config

CLUSTER_SCRIPT = REPO / "profiles" / "slurm" / "local-cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
TOY_SNAKEFILE = REPO / "tests" / "slurm_workflow" / "Snakefile"
# The profile polls at the pace of a busy lab cluster; these make a small run on an idle one quick
# and keep the Slurm logs of successful jobs for the assertions.
QUICK_POLLING = (
    "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
    "--slurm-keep-successful-logs",
)
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")


def cluster_unavailable(reason: str):
    """Skip, or fail where the Slurm tests must run (VADBENCH_REQUIRE_SLURM=1, as in CI)."""
    if os.environ.get("VADBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running local cluster; stopped again at the end if these tests started it."""
    was_running = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True).returncode == 0
    if not was_running:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            cluster_unavailable("the local Slurm cluster needs root and apt-get (profiles/slurm/local-cluster.sh)")
        started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        if started.returncode != 0:
            cluster_unavailable(f"the local Slurm cluster did not start:\n{started.stdout}\n{started.stderr}")
    yield
    if not was_running:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True, timeout=120)


def profile_copy(directory: Path, gpu_request: str = "gpus", gpu_type: str | None = None) -> Path:
    """The shipped profile with another GPU request style (and GPU model) and its partition map by
    absolute path."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["default-resources"]["gpu_request"] = gpu_request
    if gpu_type:
        profile["default-resources"]["gpu_type"] = gpu_type
    profile["slurm-partition-config"] = str(REPO / profile["slurm-partition-config"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    return directory


class SnakemakeRun:
    """Snakemake in the background with its output in a file, stopped like Ctrl-C when it overruns."""

    def __init__(self, workdir: Path, profile: Path, *args: str, snakefile: Path = REPO / "workflow" / "Snakefile"):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "snakemake.out"
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
            "--profile", str(profile), *QUICK_POLLING, *args,
        ]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=snakemake_env())

    @property
    def output(self) -> str:
        return self.log.read_text()

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Interrupt like Ctrl-C (Snakemake then scancels its jobs); kill it if that takes over a minute."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def finish(self, timeout: float) -> str:
        """Wait for the end; past ``timeout`` stop Snakemake and fail."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"Snakemake ran past {timeout} s\n{self.diagnostics()}")
        return self.output

    def diagnostics(self) -> str:
        """Snakemake's output, the Slurm logs of its jobs and the controller's log, for a failure."""
        parts = [f"===== snakemake output (last lines)\n{self.output[-6000:]}"]
        for slurm_log in sorted((self.workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
            parts.append(f"===== {slurm_log}\n{slurm_log.read_text()[-3000:]}")
        controller_log = Path(os.environ.get("VADBENCH_SLURM_ROOT", "/tmp/vadbench-slurm")) / "log" / "slurmctld.log"
        if controller_log.is_file():
            parts.append(f"===== {controller_log}\n" + "\n".join(controller_log.read_text().splitlines()[-40:]))
        parts.append("===== squeue\n" + subprocess.run(["squeue", "--states=all"], capture_output=True, text=True).stdout)
        return "\n".join(parts)

    def succeed(self, timeout: float) -> str:
        output = self.finish(timeout)
        assert self.process.returncode == 0, f"Snakemake failed ({self.process.returncode})\n{self.diagnostics()}"
        return output


def wait_until(condition, run: SnakemakeRun, timeout: float, what: str) -> None:
    """Poll ``condition`` every half second while Snakemake runs; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if not run.running():
            pytest.fail(f"Snakemake ended while waiting for {what}\n{run.diagnostics()}")
        if time.monotonic() > end:
            run.stop()
            pytest.fail(f"no {what} after {timeout} s\n{run.diagnostics()}")
        time.sleep(0.5)


def node_state() -> str:
    """The local cluster's node state as sinfo prints it (e.g. "idle", "drained", "idle*")."""
    return subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T", "--nodes=localhost"],
                          capture_output=True, text=True, check=True).stdout.splitlines()[0]


def wait_for_node(states: str, what: str, timeout: float = 120) -> None:
    """Wait until the local node's state matches ``states`` (a regular expression); fail if it
    does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not re.fullmatch(rf"(?:{states})\s*", state := node_state()):
        if time.monotonic() > deadline:
            pytest.fail(f"the local Slurm node is {state!r}, not {what}, after {timeout:.0f} s")
        time.sleep(1)


def job_record(job_id: str) -> str:
    """The controller's one-line record of a job (kept for MinJobAge = 30 min after it ends, longer than
    any test's run)."""
    return subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


def job_field(job_id: str, name: str) -> str | None:
    found = re.search(rf"\b{name}=(\S+)", job_record(job_id))
    return found.group(1) if found else None


def jobs_named(name: str) -> list[str]:
    """Ids of the jobs the controller knows under ``name`` (the plugin names jobs by run id)."""
    listed = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i", "--name", name], capture_output=True, text=True)
    return listed.stdout.split()


def executed_in_slurm(workdir: Path) -> dict[str, list[str]]:
    """Slurm job id -> rules whose jobs ran inside it, read from the Slurm logs the plugin keeps."""
    ran = {}
    for slurm_log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        # the innermost Snakemake of a job step announces each job it executes as "localrule <name>:"
        ran[slurm_log.stem] = re.findall(r"^localrule (\w+):$", slurm_log.read_text(), flags=re.M)
    return ran


@pytest.mark.parametrize("gpu_request", ["gpus", "gres"])
def test_profile_asks_for_gpus_in_the_chosen_style(tmp_path, gpu_request):
    profile = profile_copy(tmp_path / "profile", gpu_request)
    command = [sys.executable, "-m", "snakemake", "-s", str(TOY_SNAKEFILE), "-d", str(tmp_path / "run"),
               "--profile", str(profile), "-n", "gpu.txt", "cpu.txt"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=snakemake_env(), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    resources = {
        device: dict(item.split("=", 1) for item in listed.split(", "))
        for device, listed in re.findall(r"output: (\w+)\.txt\n(?:.*\n)*?\s+resources: (.*)", out.stdout)
    }
    expected = {"gpus": ("gpu", "1"), "gres": ("gres", "gpu:1")}[gpu_request]
    assert resources["gpu"].get(expected[0]) == expected[1], resources["gpu"]
    assert int(resources["cpu"].get("gpu", 0)) == 0 and "gres" not in resources["cpu"], resources["cpu"]
    # one style at a time: a job never carries both requests
    assert not {"gpu", "gres"} <= resources["gpu"].keys()


def test_every_gpu_rule_asks_in_the_profiles_style():
    """A rule that writes `gpu=N` itself would send `--gpus` to a cluster that takes only `--gres`."""
    literal = [f"{path.name}: {line.strip()}" for path in sorted((REPO / "workflow" / "rules").rglob("*.smk"))
               for line in path.read_text().splitlines() if re.match(r"\s+(gpu|gres)\s*=", line)]
    assert literal == []


def test_the_profiles_name_only_rules_the_workflow_has(tmp_path):
    """A rule renamed in the workflow and not in a profile silently loses its resources and bundling."""
    from tests.workflow_helpers import run_snakemake

    rules = set(run_snakemake(tmp_path, tiny_config(), "--list-rules").stdout.split())
    assert {"train_stage", "extract_frames", "synthetic_shard"} <= rules
    for profile in ("slurm", "local"):
        settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
        named = {rule for key in ("set-resources", "set-threads", "groups") for rule in settings.get(key) or {}}
        assert named - rules == set(), f"profiles/{profile} names rules the workflow does not have"


def test_the_slurm_profile_builds_the_dag_of_a_method_that_follows_its_test_split(tmp_path):
    """With test_eval_every, a training stage reads the test labels: with the labels rules in the summary
    bundle, that group both fed the training and waited for its scores, which Snakemake refuses (the
    local profile built the same DAG without a word)."""
    from tests.workflow_helpers import merge_config

    config = merge_config(tiny_config(), yaml.safe_load((REPO / "configs" / "weak_tiny.yaml").read_text()))
    config["methods"]["arnet"]["test_eval_every"] = 1
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
               "--profile", str(profile_copy(tmp_path / "profile")), "-n"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=snakemake_env(), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert re.search(r"^arnet_?\w*|train_stage", out.stdout, re.M)


def test_profile_rejects_an_unknown_gpu_style(tmp_path):
    profile = profile_copy(tmp_path / "profile", "cuda")
    command = [sys.executable, "-m", "snakemake", "-s", str(TOY_SNAKEFILE), "-d", str(tmp_path / "run"),
               "--profile", str(profile), "-n", "gpu.txt"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=snakemake_env(), timeout=120)
    assert out.returncode != 0
    assert "gpu_request='cuda'" in out.stdout + out.stderr


@pytest.mark.slow
def test_demo_runs_every_job_through_sbatch_and_a_rerun_submits_nothing(slurm_cluster, tmp_path):
    workdir = tmp_path / "demo"
    config = tiny_config(n_train=1, n_test=2, n_frames=32)
    planned = planned_jobs(workdir, config)
    planned.pop("all")

    run = SnakemakeRun(workdir, profile_copy(tmp_path / "profile"), "--configfile", str(workdir / "config.yaml"))
    output = run.succeed(timeout=900)

    table = pd.read_csv(workdir / "results" / "report" / "auc_table.csv")
    assert (table.dataset[0], table.method[0], table.n_videos[0]) == ("synthetic", "tde", 2)
    # The report job's output went to its Slurm log: Snakemake itself prints the table at the end.
    assert re.search(r"results/report/auc_table\.md:\s+\| dataset +\| method[^\n]*\n[^\n]*\n\| synthetic +\| tde +\|",
                     output), output[-3000:]
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    submitted = SUBMITTED.findall(output)
    ran = executed_in_slurm(workdir)
    assert set(ran) == set(submitted), run.diagnostics()
    for job_id in submitted:
        assert job_field(job_id, "JobName") == run_id
        assert job_field(job_id, "JobState") == "COMPLETED", job_record(job_id)
    ran_rules = [rule for rules in ran.values() for rule in rules]
    assert {rule: ran_rules.count(rule) for rule in set(ran_rules)} == planned, run.diagnostics()
    # per-video jobs and the closing steps are bundled: fewer Slurm jobs than Snakemake jobs
    assert len(submitted) < len(ran_rules)

    rerun = SnakemakeRun(workdir, profile_copy(tmp_path / "profile"), "--configfile", str(workdir / "config.yaml"))
    rerun_output = rerun.succeed(timeout=300)
    assert "Nothing to be done" in rerun_output
    assert not SUBMITTED.search(rerun_output)
    rerun_id = re.search(r"SLURM run ID: (\S+)", rerun_output)
    if rerun_id:  # the controller knows no job of the rerun either
        assert not jobs_named(rerun_id.group(1))


@pytest.mark.slow
@pytest.mark.parametrize(("gpu_request", "slurm_field", "gpu_type"), [
    ("gpus", "TresPerJob", None), ("gres", "TresPerNode", None),
    ("gpus", "TresPerJob", "fake"), ("gres", "TresPerNode", "fake"),  # the local cluster's GPU model
])
def test_gpu_job_is_scheduled_on_a_gpu(slurm_cluster, tmp_path, gpu_request, slurm_field, gpu_type):
    """A GPU job gets a GPU (of the profile's gpu_type where it names one) on the GPU partition;
    a CPU job asks for none, whatever the GPU type."""
    workdir = tmp_path / "probe"
    run = SnakemakeRun(workdir, profile_copy(tmp_path / "profile", gpu_request, gpu_type), "gpu.txt", "cpu.txt",
                       snakefile=TOY_SNAKEFILE)
    output = run.succeed(timeout=300)

    seen = {device: dict(item.split("=") for item in (workdir / f"{device}.txt").read_text().split())
            for device in ("gpu", "cpu")}
    assert sorted(SUBMITTED.findall(output)) == sorted(seen[device]["job"] for device in seen)
    gpu_job, cpu_job = seen["gpu"]["job"], seen["cpu"]["job"]
    expected = f"gres:gpu:{gpu_type}:1" if gpu_type else "gres:gpu:1"
    assert job_field(gpu_job, slurm_field) == expected, job_record(gpu_job)
    assert job_field(gpu_job, "Partition") == "gpu"
    assert seen["gpu"]["cuda"] != "none", "the GPU job saw no CUDA_VISIBLE_DEVICES"
    assert job_field(cpu_job, "TresPerJob") is None and job_field(cpu_job, "TresPerNode") is None, job_record(cpu_job)
    assert job_field(cpu_job, "Partition") == "main"
    assert seen["cpu"]["cuda"] == "none"


@pytest.mark.slow
def test_a_retried_job_asks_for_more_memory(slurm_cluster, tmp_path):
    """A job killed for memory would fail the same way again with the same request: each retry
    asks for half the first request more (the profile's resources grow with `attempt`)."""
    workdir = tmp_path / "flaky"
    run = SnakemakeRun(workdir, profile_copy(tmp_path / "profile"), "flaky.txt", snakefile=TOY_SNAKEFILE)
    output = run.succeed(timeout=300)
    first, second = SUBMITTED.findall(output)
    assert [job_field(job, "MinMemoryNode") for job in (first, second)] == ["2000M", "3000M"]
    assert (workdir / "flaky.txt").read_text().split() == ["mem_mb=2000", "mem_mb=3000"]


def newest_checkpoint_step(workdir: Path) -> int:
    steps = [int(p.stem.split("_")[1]) for p in (workdir / "model.pt.resume").glob("step_*.pt")]
    return max(steps, default=0)


def attempts(workdir: Path) -> list[tuple[int, str]]:
    """(start step, Slurm job id) of every start of the training stage."""
    path = workdir / "attempts.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(int(re.search(r"start=(\d+)", l).group(1)), re.search(r"job=(\S+)", l).group(1)) for l in lines]


@pytest.mark.slow
def test_preempted_and_cancelled_training_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    workdir = tmp_path / "train"
    steps, every = 16, 2
    run = SnakemakeRun(workdir, profile_copy(tmp_path / "profile"), "model.pt", "--config", f"steps={steps}",
                       f"every={every}", "seconds_per_step=1.0", snakefile=TOY_SNAKEFILE)

    # Preemption: Slurm requeues the job (sbatch --requeue); it restarts under the same job id.
    wait_until(lambda: newest_checkpoint_step(workdir) >= every, run, 300, "first periodic checkpoint")
    first_job = attempts(workdir)[0][1]
    subprocess.run(["scontrol", "requeue", first_job], check=True)
    wait_until(lambda: job_field(first_job, "JobState") == "PENDING", run, 60, "requeued job pending")
    # Slurm holds a requeued job for two minutes; release it now
    subprocess.run(["scontrol", "update", f"JobId={first_job}", "StartTime=now"], check=True)

    # Cancellation: Snakemake reports the job failed and its retry resumes in a new Slurm job.
    def restarted_and_progressed():
        started = attempts(workdir)
        return len(started) == 2 and newest_checkpoint_step(workdir) >= started[1][0] + every

    wait_until(restarted_and_progressed, run, 300, "progress after the requeue")
    subprocess.run(["scancel", first_job], check=True)
    output = run.succeed(timeout=600)

    (start_0, job_0), (start_1, job_1), (start_2, job_2) = attempts(workdir)
    assert (start_0, job_0, job_1) == (0, first_job, first_job)
    assert every <= start_1 < start_2 < steps, "a restart began from step 0 instead of its checkpoint"
    assert job_2 != first_job
    assert job_field(first_job, "Restarts") == "1"
    assert job_field(first_job, "JobState") == "CANCELLED"
    assert f"SLURM-job '{first_job}' failed, SLURM status is: 'CANCELLED'" in output
    assert "Trying to restart job" in output
    assert job_field(job_2, "JobState") == "COMPLETED"

    resumed = load_checkpoint(workdir / "model.pt", "toy", {"features": 4})
    straight = train(tmp_path / "straight" / "model.pt", steps, every)
    assert resumed["step"] == straight.step == steps
    straight_weights = load_checkpoint(tmp_path / "straight" / "model.pt", "toy")["model"]
    for name, value in straight_weights.items():
        assert torch.equal(resumed["model"][name], value), f"{name} differs from an uninterrupted run"
    assert not (workdir / "model.pt.resume").exists()
    # Snakemake empties the job's log before each start; the stage printed its earlier attempts again
    log = (workdir / "logs" / "train.log").read_text()
    assert re.findall(r"=== attempt started \S+ on \S+, Slurm job (\d+)", log) == [job_0, job_1, job_2]
    assert "step 1 loss" in log and f"step {steps} loss" in log


def test_a_run_whose_jobs_fit_no_node_stops_before_submitting(slurm_cluster, tmp_path):
    """Slurm would keep such a job pending for ever and Snakemake would wait with it: the run stops
    first, naming the rule, what it asks for and what the nodes have, and submits nothing. A retry
    that would outgrow every node, and jobs that only a drained node can run, are only warnings."""
    workdir = tmp_path / "unfit"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(n_train=1, n_test=1, n_frames=16)))
    profile_dir = profile_copy(tmp_path / "profile")
    profile = yaml.safe_load((profile_dir / "config.yaml").read_text())
    profile["set-resources"]["report_tables"] = {"cpus_per_task": 4096}
    profile["set-resources"]["score_video"]["mem_mb"] = "1000 if attempt == 1 else 100000000"
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))

    subprocess.run(["scontrol", "update", "nodename=localhost", "state=drain", "reason=vadbench test"], check=True)
    try:
        wait_for_node(r"drained", "drained")  # "draining" while a job of an earlier test ends
        run = SnakemakeRun(workdir, profile_dir, "--configfile", str(workdir / "config.yaml"))
        output = run.finish(timeout=300)
    finally:
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"])
        wait_for_node(r"idle|mixed|allocated", "back in service after the drain")
    assert re.search(r"the nodes that fit them take no new jobs now.*\n"
                     r"(?:  .*\n)*  score_video: only localhost \(drained\) can run its jobs", output), output[-3000:]
    assert run.process.returncode != 0, output[-3000:]
    unfit = re.search(r"no node and partition of this cluster can run them \(nothing was submitted\):\n((?:  .*\n)+)", output)
    assert unfit, output[-3000:]
    lines = unfit.group(1).splitlines()
    assert len(lines) == 1 and "report_tables" in lines[0] and "asks for 4096 CPUs" in lines[0], lines
    assert re.search(r"retry asks for more than any node has.*\n\s+score_video at attempt 2 asks for \d+ CPUs, 100000000 MB",
                     output), output[-3000:]
    assert not SUBMITTED.search(output)
    assert not (workdir / ".snakemake" / "slurm_logs").exists()


def test_a_partitions_per_node_memory_limit_is_part_of_the_fit_check(slurm_cluster, tmp_path):
    """A node may have the memory a job asks for while its partition lets a job use less of it
    (MaxMemPerNode): Slurm keeps such a job pending too, so the run stops first, saying so."""
    workdir = tmp_path / "capped"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(n_train=1, n_test=1, n_frames=16)))
    shown = subprocess.run(["scontrol", "--oneliner", "show", "partition", "main"], capture_output=True, text=True,
                           check=True).stdout
    before = re.search(r"MaxMemPerNode=(\S+)", shown).group(1)
    subprocess.run(["scontrol", "update", "partitionname=main", "MaxMemPerNode=1000"], check=True)
    try:
        run = SnakemakeRun(workdir, profile_copy(tmp_path / "profile"), "--configfile", str(workdir / "config.yaml"))
        output = run.finish(timeout=300)
    finally:  # scontrol update refuses UNLIMITED; 0 means unlimited
        value = "0" if before == "UNLIMITED" else before
        restored = subprocess.run(["scontrol", "update", "partitionname=main", f"MaxMemPerNode={value}"])
    assert restored.returncode == 0
    assert run.process.returncode != 0, output[-3000:]
    assert re.search(r"asks for \d+ CPUs, 2000 MB, \d+ min in partition main; the largest node has \d+ CPUs, "
                     r"1000 MB \(partition limit\)", output), output[-3000:]
    assert not SUBMITTED.search(output)
