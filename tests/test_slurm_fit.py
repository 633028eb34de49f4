"""The check that stops a Slurm run whose jobs no node can run (pipelines/slurm_fit.py): what it
reads from sinfo and what it decides. The run on a real cluster is in tests/test_slurm.py."""
from __future__ import annotations

import math
import re

import pytest

from pipelines.slurm_fit import (Cluster, ClusterQueryError, PartitionLimits, Request, parse_gres, parse_nodes,
                                 parse_partition_limits, parse_time_limit, parse_time_limits, report)

# `sinfo --Node --noheader --format=%N|%R|%c|%m|%G|%T` on a small lab cluster: a node is listed once per partition.
NODES = """\
cpu01|cpu|64|256000|(null)|mixed
cpu01|long|64|256000|(null)|mixed
gpu01|gpu|32|512000|gpu:a100:4(S:0-1)|idle
gpu02|gpu|32|192000|gpu:v100:2,gpu:t4:1|allocated
"""
LIMITS = "cpu*|3-00:00:00\nlong|infinite\ngpu|2-00:00:00\n"  # sinfo --format=%P|%l: cpu is the default


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(parse_nodes(NODES), *parse_time_limits(LIMITS))


@pytest.mark.parametrize(("text", "minutes"), [
    ("infinite", math.inf), ("UNLIMITED", math.inf), ("30", 30), ("30:00", 30), ("2:00:00", 120),
    ("1-00:00:00", 1440), ("2-12", 3600), ("1-01:30", 1530),
])
def test_slurm_time_limits_are_read_in_minutes(text, minutes):
    assert parse_time_limit(text) == minutes


def test_gpus_are_counted_by_model():
    assert parse_gres("gpu:a100:4(S:0-1)") == {"a100": 4}
    assert parse_gres("gpu:v100:2,gpu:t4:1") == {"v100": 2, "t4": 1}
    assert parse_gres("gpu:2,mps:100") == {"": 2}
    assert parse_gres("(null)") == {}


def test_a_node_in_several_partitions_is_one_node(cluster):
    nodes = {node.name: node for node in cluster.nodes}
    assert nodes["cpu01"].partitions == {"cpu", "long"}
    assert (nodes["gpu02"].cpus, nodes["gpu02"].mem_mb, nodes["gpu02"].gpu_count(None)) == (32, 192000, 3)
    assert cluster.time_limits == {"cpu": 4320, "long": math.inf, "gpu": 2880} and cluster.default_partition == "cpu"


def test_unreadable_sinfo_output_is_named():
    with pytest.raises(ClusterQueryError, match="cpu01"):
        parse_nodes("cpu01|cpu|many|256000|(null)|idle\n")
    with pytest.raises(ClusterQueryError, match=re.escape("expected NODE|PARTITION|CPUS|MEMORY|GRES|STATE")):
        parse_nodes("cpu01|cpu|64|256000|(null)\n")


def test_jobs_that_fit_a_node_pass(cluster):
    requests = [
        Request("extract_frames", cpus=1, mem_mb=2000, runtime=10),
        Request("train_stage", cpus=8, mem_mb=32000, gpus=1, runtime=1440),
        Request("train_stage", cpus=32, mem_mb=400000, gpus=4, gpu_model="a100", runtime=2880),
        Request("alphapose", cpus=4, mem_mb=16000, gpus=1, gpu_model="t4", runtime=60),
        Request("slow_rule", cpus=2, mem_mb=1000, runtime=10000),  # only partition long has no time limit
    ]
    assert report(requests, cluster) == (None, None)


def test_a_job_no_node_can_run_stops_the_run_naming_it(cluster):
    requests = [
        Request("extract_frames", cpus=1, mem_mb=2000, runtime=10),
        Request("train_stage", cpus=8, mem_mb=32000, gpus=8, runtime=1440),  # 4 GPUs per node at most
        Request("train_stage", cpus=8, mem_mb=32000, gpus=1, gpu_model="h100", runtime=1440),  # no such GPU
        Request("score_video", cpus=2, mem_mb=600000, runtime=60),  # more memory than any node
        Request("score_video", cpus=2, mem_mb=700000, runtime=60),
        Request("long_gpu", cpus=1, mem_mb=1000, gpus=1, runtime=4000),  # longer than partition gpu allows
        Request("pinned", cpus=1, mem_mb=1000, runtime=10, partition="debug"),  # no such partition
    ]
    error, warning = report(requests, cluster)
    assert warning is None
    lines = error.splitlines()
    assert "nothing was submitted" in lines[0]
    named = {line.split()[0] for line in lines[1:-1]}
    assert named == {"train_stage", "score_video", "long_gpu", "pinned"}
    score = next(line for line in lines if line.strip().startswith("score_video"))
    assert "2 different requests" in score and "700000 MB" in score and "the largest node has 64 CPUs, 512000 MB" in score
    assert "a time limit of at most 2880 min" in next(line for line in lines if "long_gpu" in line)
    assert "no partition 'debug'" in next(line for line in lines if "pinned" in line)
    assert "VADBENCH_SLURM_FIT_CHECK=0" in lines[-1]


def test_a_retry_that_fits_nowhere_is_a_warning_not_an_error(cluster):
    requests = [
        Request("score_video", cpus=2, mem_mb=200000, runtime=60),
        Request("score_video", cpus=2, mem_mb=400000, runtime=90, attempt=2),
        Request("score_video", cpus=2, mem_mb=600000, runtime=120, attempt=3),
        # a rule that fails at its first attempt is named once, as an error
        Request("train_stage", cpus=128, mem_mb=1000, runtime=10),
        Request("train_stage", cpus=128, mem_mb=1500, runtime=10, attempt=2),
    ]
    error, warning = report(requests, cluster)
    assert "score_video" not in error and "train_stage asks for 128 CPUs" in error
    retry_lines = warning.splitlines()[1:]
    assert len(retry_lines) == 1 and retry_lines[0].strip().startswith("score_video at attempt 3 asks for 2 CPUs, 600000 MB")


def test_a_job_naming_several_partitions_fits_when_one_of_them_holds_it(cluster):
    assert report([Request("slow_rule", cpus=2, mem_mb=1000, runtime=10000, partition="cpu,long")], cluster) == (None, None)
    error, _ = report([Request("slow_rule", cpus=2, mem_mb=1000, runtime=10000, partition="cpu,gpu")], cluster)
    assert "slow_rule asks for 2 CPUs, 1000 MB, 10000 min in partition cpu,gpu" in error
    assert "a time limit of at most 4320 min" in error


def test_a_job_is_checked_against_the_partition_it_is_sent_to_not_any(cluster):
    """A 400 GB CPU job sent to partition cpu (its own, the map's choice or the default) waits for
    ever there, though a GPU node of another partition has 512 GB."""
    error, _ = report([Request("score_video", cpus=2, mem_mb=400000, runtime=60, partition="cpu")], cluster)
    assert "score_video asks for 2 CPUs, 400000 MB, 60 min in partition cpu; the largest node has 64 CPUs, 256000 MB" in error
    assert report([Request("score_video", cpus=2, mem_mb=400000, runtime=60, partition="gpu")], cluster) == (None, None)


@pytest.mark.parametrize(("state", "takes_jobs"), [
    ("idle", True), ("mixed", True), ("allocated", True), ("idle~", True), ("completing", True), ("mixed-", True),
    ("drained", False), ("draining", False), ("down*", False), ("down", False), ("idle*", False), ("fail", False),
    ("drain", False), ("inval", False), ("maint", False), ("reserved", False), ("idle$", False),
])
def test_node_states_that_take_no_new_jobs(state, takes_jobs):
    assert parse_nodes(f"n1|p|4|1000|(null)|{state}\n")[0].takes_jobs is takes_jobs


def test_jobs_only_a_down_or_drained_node_can_run_are_a_warning(cluster):
    """The only A100 node drained and a CPU node not responding: their jobs would wait until the
    nodes return, which may be soon; the run goes on, with the nodes named."""
    drained = NODES.replace("a100:4(S:0-1)|idle", "a100:4(S:0-1)|drained").replace("(null)|mixed", "(null)|down*")
    cluster = Cluster(parse_nodes(drained), *parse_time_limits(LIMITS))
    requests = [
        Request("train_stage", cpus=8, mem_mb=32000, gpus=2, gpu_model="a100", runtime=1440),
        Request("train_stage", cpus=8, mem_mb=32000, gpus=1, gpu_model="v100", runtime=1440),  # gpu02 takes jobs
        Request("extract_frames", cpus=1, mem_mb=2000, runtime=10, partition="cpu"),
        Request("alphapose", cpus=4, mem_mb=16000, gpus=1, runtime=60),  # gpu02 has GPUs of no model asked for
    ]
    error, warning = report(requests, cluster)
    assert error is None
    lines = warning.splitlines()
    assert "take no new jobs now" in lines[0]
    assert [line.strip() for line in lines[1:]] == [
        "extract_frames: only cpu01 (down*) can run its jobs",
        "train_stage: only gpu01 (drained) can run its jobs",
    ]


# `scontrol --all --oneliner show partition` (shortened): the GPU partition lets a job use 16 of a
# node's CPUs and 128 GB of its memory; partition long is down.
PARTITIONS = """\
PartitionName=cpu AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=3-00:00:00 MaxCPUsPerNode=UNLIMITED State=UP DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
PartitionName=long AllowGroups=ALL Default=NO MaxTime=UNLIMITED MaxCPUsPerNode=UNLIMITED State=DOWN MaxMemPerNode=UNLIMITED
PartitionName=gpu AllowGroups=ALL Default=NO MaxTime=2-00:00:00 MaxCPUsPerNode=16 State=UP DefMemPerCPU=4000 MaxMemPerNode=128000
PartitionName=debug AllowGroups=ALL Default=NO MaxTime=UNLIMITED MaxCPUsPerNode=UNLIMITED State=DRAIN MaxMemPerCPU=2000
"""


def test_partition_limits_are_read_from_scontrol():
    limits = parse_partition_limits(PARTITIONS)
    assert limits["gpu"] == PartitionLimits(16, 128000, "UP")
    assert limits["cpu"] == PartitionLimits() and limits["long"].state == "DOWN"
    assert limits["debug"] == PartitionLimits(state="DRAIN", max_mem_per_cpu=2000)
    with pytest.raises(ClusterQueryError, match="MaxMemPerNode=lots for partition gpu"):
        parse_partition_limits("PartitionName=gpu MaxMemPerNode=lots State=UP")


def test_a_job_above_its_partitions_per_node_limits_fits_nowhere():
    """gpu01 has 32 CPUs and 512 GB, but partition gpu lets a job use 16 and 128 GB of them."""
    cluster = Cluster(parse_nodes(NODES), *parse_time_limits(LIMITS), parse_partition_limits(PARTITIONS))
    assert report([Request("train_stage", cpus=16, mem_mb=128000, gpus=1, runtime=60, partition="gpu")], cluster) == (None, None)
    error, _ = report([Request("train_stage", cpus=24, mem_mb=64000, gpus=1, runtime=60, partition="gpu"),
                       Request("train_stage", cpus=8, mem_mb=200000, gpus=1, runtime=60, partition="gpu")], cluster)
    assert "the largest node has 16 CPUs (partition limit), 128000 MB (partition limit), 4 GPUs" in error


def test_jobs_only_a_partition_that_is_down_can_run_are_a_warning():
    cluster = Cluster(parse_nodes(NODES), *parse_time_limits(LIMITS), parse_partition_limits(PARTITIONS))
    error, warning = report([Request("slow_rule", cpus=2, mem_mb=1000, runtime=10000)], cluster)  # only long has no limit
    assert error is None
    assert warning.splitlines()[1].strip() == "slow_rule: only cpu01 (mixed) in partition long (DOWN) can run its jobs"


def test_per_cpu_memory_limits_and_partitions_that_refuse_jobs():
    """MaxMemPerCPU bounds a job's memory by the CPUs it may use; sbatch refuses jobs in a DRAIN or
    INACTIVE partition, so nothing fits there (a DOWN one queues them: a warning, above)."""
    nodes = "n1|debug|8|64000|(null)|idle\nn1|cpu|8|64000|(null)|idle\n"
    limits = "PartitionName=debug State=UP MaxMemPerCPU=2000\nPartitionName=cpu State=UP MaxMemPerNode=UNLIMITED\n"
    cluster = Cluster(parse_nodes(nodes), *parse_time_limits("debug|infinite\ncpu*|infinite\n"),
                      parse_partition_limits(limits))
    assert report([Request("score_video", cpus=8, mem_mb=16000, partition="debug")], cluster) == (None, None)
    error, _ = report([Request("score_video", cpus=8, mem_mb=20000, partition="debug")], cluster)
    assert "the largest node has 8 CPUs, 16000 MB (partition limit)" in error
    drained = Cluster(cluster.nodes, cluster.time_limits, None, parse_partition_limits(limits.replace("UP", "DRAIN", 1)))
    error, _ = report([Request("score_video", cpus=1, mem_mb=1000, partition="debug")], drained)
    assert "partition debug is DRAIN: sbatch refuses new jobs there" in error
    assert report([Request("score_video", cpus=1, mem_mb=1000, partition="debug,cpu")], drained) == (None, None)


def test_without_readable_partition_limits_the_rest_is_still_checked(monkeypatch, capsys):
    """sinfo's answers as on the lab cluster above; scontrol failing (an older client, a permission)
    leaves the partition limits out, says so, and keeps the node and time checks."""
    from pipelines import slurm_fit

    def scontrol_fails():
        raise ClusterQueryError("scontrol show partition failed: Access denied")

    answers = {"--Node": NODES, "--format=%P|%l": LIMITS}
    monkeypatch.setattr(slurm_fit, "_sinfo", lambda *args: answers[args[0]])
    monkeypatch.setattr(slurm_fit, "_scontrol_partitions", scontrol_fails)
    cluster = slurm_fit.read_cluster()
    assert cluster.limits == {} and len(cluster.nodes) == 3
    assert "partition limits not checked: scontrol show partition failed: Access denied" in capsys.readouterr().err
    error, _ = report([Request("score_video", cpus=2, mem_mb=600000, runtime=60)], cluster)
    assert "score_video asks for 2 CPUs, 600000 MB" in error
