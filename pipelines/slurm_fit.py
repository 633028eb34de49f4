"""Before a Slurm run submits anything: check that every job it will submit can start somewhere.

Slurm accepts a job that asks for more CPUs, memory or GPUs than any node of its partition has, or
for more time than the partition allows (unless the site sets ``EnforcePartLimits``), and keeps it
pending for ever (reason ``PartitionConfig``, ``PartitionTimeLimit`` or ``Resources``); Snakemake
sees a pending job and waits with it. So a Slurm run first reads the cluster's nodes and time
limits (``sinfo``) and its partitions' per-node limits (``scontrol show partition``) and stops,
before any ``sbatch``, naming every rule whose jobs fit no node, what they ask for and what the
cluster has. Requests that only a retry makes too large (the
profile asks for more memory at each attempt) are reported without stopping the run: the first
attempt may well succeed.

A job fits when one node of the partition it will be sent to has its CPUs, memory and GPUs (of its
GPU model, when it names one) and the partition's time limit covers its runtime. That partition is
chosen as the plugin chooses it: the job's own ``slurm_partition``, else the best fit of the
profile's partition map, else the cluster's default partition (any, on a cluster without one). A
partition's own limits count too (``MaxCPUsPerNode``, and ``MaxMemPerNode`` or ``MaxMemPerCPU``
times the CPUs a job may use), and a partition in state ``DRAIN`` or ``INACTIVE`` refuses new jobs,
so it fits none. A job whose only fitting nodes take no new jobs now (down, drained, failing,
reserved or not responding), or sit only in partitions that are ``DOWN``, is a warning, not an
error: such nodes and partitions come back, and its jobs wait for them. Where ``scontrol`` cannot be
read, the partition limits are left out and the rest is checked. What a job asks for
is read the way snakemake-executor-plugin-slurm reads it when it writes the ``sbatch`` line
(``cpus_per_task`` or threads; ``gpu`` with ``gpu_model``, or ``gres``; ``mem_mb`` or
``mem_mb_per_cpu``; ``runtime`` in minutes). Set ``VADBENCH_SLURM_FIT_CHECK=0`` to skip the check.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

SKIP_VARIABLE = "VADBENCH_SLURM_FIT_CHECK"


class ClusterQueryError(RuntimeError):
    """``sinfo`` or ``scontrol`` could not be run or printed something this module does not understand."""


@dataclass(frozen=True)
class Node:
    """One node as ``sinfo`` describes it."""

    name: str
    partitions: frozenset[str]
    cpus: int
    mem_mb: int
    gpus: dict[str, int] = field(default_factory=dict)  # by model; "" for GPUs of no model
    state: str = "idle"  # sinfo's %T, e.g. "mixed", "drained", "down*" (* = not responding), "idle~" (powered off)

    def gpu_count(self, model: str | None) -> int:
        return sum(self.gpus.values()) if not model else self.gpus.get(model, 0)

    @property
    def takes_jobs(self) -> bool:
        """Whether Slurm starts new jobs on the node now (a powered-off cloud node wakes up for one)."""
        base = self.state.rstrip("*~#!%$@^-+").lower()
        return not set(self.state) & NO_NEW_JOBS_FLAGS and base not in NO_NEW_JOBS


# Node states in which Slurm starts no new job on a node (long and short forms of sinfo's %T / %t),
# and the flags that say so: * not responding, $ in a maintenance reservation.
NO_NEW_JOBS = frozenset({"down", "drained", "draining", "drain", "drng", "fail", "failing", "future", "futr", "inval",
                         "maint", "reserved", "resv"})
NO_NEW_JOBS_FLAGS = frozenset("*$")


@dataclass(frozen=True)
class PartitionLimits:
    """What ``scontrol show partition`` says of a partition beyond its time limit: the most CPUs
    and memory a job may use on one of its nodes, and whether it starts jobs (state ``UP``)."""

    max_cpus_per_node: float = math.inf
    max_mem_per_node: float = math.inf  # MB
    state: str = "UP"
    max_mem_per_cpu: float = math.inf  # MB; Slurm prints this or max_mem_per_node


# Partition states in which sbatch refuses new jobs (DOWN queues them until the partition is up).
REFUSING_STATES = frozenset({"DRAIN", "INACTIVE"})


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    time_limits: dict[str, float]  # minutes per partition; math.inf for none
    default_partition: str | None = None  # where a job that names none goes (sinfo's "*")
    limits: dict[str, PartitionLimits] = field(default_factory=dict)  # by partition; none: no limits

    @property
    def partitions(self) -> set[str]:
        return set(self.time_limits)

    def limit(self, partition: str) -> PartitionLimits:
        return self.limits.get(partition, PartitionLimits())


@dataclass(frozen=True)
class Request:
    """What one Slurm submission (a job or a bundle of jobs) asks for."""

    name: str  # the rule, or the bundle's rules joined by "+"
    cpus: int
    mem_mb: int  # per node, the CPUs' share included for per-CPU memory
    gpus: int = 0
    gpu_model: str | None = None
    runtime: float = 0  # minutes; 0 for none
    partition: str | None = None  # one partition, or several separated by commas (Slurm takes the first that can)
    attempt: int = 1

    @property
    def partitions(self) -> set[str]:
        return {p.strip() for p in self.partition.split(",") if p.strip()} if self.partition else set()

    def describe(self) -> str:
        parts = [f"{self.cpus} CPUs", f"{self.mem_mb} MB"]
        if self.gpus:
            parts.append(_gpus(self.gpus, self.gpu_model))
        if self.runtime:
            parts.append(_minutes(self.runtime))
        text = ", ".join(parts)
        return f"{text} in partition {self.partition}" if self.partition else text


def _gpus(count: int, model: str | None) -> str:
    return f"{count} GPU{'s' if count != 1 else ''}" + (f" of model {model}" if model else "")


def _minutes(value: float) -> str:
    return "no limit" if math.isinf(value) else f"{value:g} min"


def parse_time_limit(text: str) -> float:
    """Slurm's time format (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a"):
        return math.inf
    days, _, clock = text.rpartition("-")
    fields = [int(part) for part in clock.split(":")]
    if days:
        fields += [0] * (3 - len(fields))  # D-HH, D-HH:MM
        hours, minutes, seconds = fields
    elif len(fields) == 3:
        hours, minutes, seconds = fields
    elif len(fields) == 2:
        hours, (minutes, seconds) = 0, fields
    else:
        hours, minutes, seconds = 0, fields[0], 0
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def parse_gres(text: str) -> dict[str, int]:
    """GPUs by model in ``sinfo``'s GRES column, e.g. ``gpu:a100:4(S:0-1),gpu:2`` -> {"a100": 4, "": 2}."""
    gpus: dict[str, int] = {}
    for item in re.split(r",(?![^(]*\))", text.strip()):
        item = re.sub(r"\(.*\)$", "", item.strip())
        parts = item.split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = parts[-1].split("(")[0]
        if not count.isdigit():
            continue
        model = parts[1] if len(parts) == 3 else ""
        gpus[model] = gpus.get(model, 0) + int(count)
    return gpus


def parse_nodes(sinfo_output: str) -> tuple[Node, ...]:
    """Nodes from ``sinfo --Node --noheader --format=%N|%R|%c|%m|%G|%T``: one line per node and partition."""
    found: dict[str, dict] = {}
    for line in sinfo_output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 6:
            raise ClusterQueryError(f"sinfo printed {line!r}; expected NODE|PARTITION|CPUS|MEMORY|GRES|STATE")
        name, partition, cpus, memory, gres, state = (item.strip() for item in fields)
        try:
            node = found.setdefault(name, {"partitions": set(), "cpus": int(cpus.rstrip("+")),
                                           "mem_mb": int(memory.rstrip("+")), "gpus": parse_gres(gres),
                                           "state": state})
        except ValueError:
            raise ClusterQueryError(f"sinfo printed {line!r}: CPUs and memory are not numbers") from None
        node["partitions"].add(partition)
    return tuple(Node(name, frozenset(n["partitions"]), n["cpus"], n["mem_mb"], n["gpus"], n["state"])
                 for name, n in sorted(found.items()))


def parse_time_limits(sinfo_output: str) -> tuple[dict[str, float], str | None]:
    """Partition time limits from ``sinfo --noheader --format=%P|%l``, and the default partition
    (the one sinfo marks with ``*``)."""
    limits, default = {}, None
    for line in sinfo_output.splitlines():
        if not line.strip():
            continue
        partition, _, limit = line.partition("|")
        partition = partition.strip()
        if partition.endswith("*"):
            partition = default = partition[:-1]
        try:
            limits[partition] = parse_time_limit(limit)
        except ValueError:
            raise ClusterQueryError(f"sinfo printed {line!r}: not a time limit") from None
    return limits, default


def parse_partition_limits(scontrol_output: str) -> dict[str, PartitionLimits]:
    """Per-node CPU and memory limits and the state of each partition, from ``scontrol --all
    --oneliner show partition`` (one ``Key=Value ...`` line per partition; memory in MB)."""
    limits = {}
    for line in scontrol_output.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "PartitionName" not in fields:
            continue

        def number(key: str) -> float:
            value = fields.get(key, "UNLIMITED")
            if value.upper() == "UNLIMITED":
                return math.inf
            try:
                return float(value.rstrip("M"))
            except ValueError:
                raise ClusterQueryError(f"scontrol printed {key}={value} for partition "
                                        f"{fields['PartitionName']}: not a number") from None

        limits[fields["PartitionName"]] = PartitionLimits(number("MaxCPUsPerNode"), number("MaxMemPerNode"),
                                                          fields.get("State", "UP").upper(), number("MaxMemPerCPU"))
    return limits


def _scontrol_partitions() -> str:
    try:
        done = subprocess.run(["scontrol", "--all", "--oneliner", "show", "partition"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ClusterQueryError(f"could not run scontrol: {err}") from None
    if done.returncode != 0:
        raise ClusterQueryError(f"scontrol show partition failed: {done.stderr.strip()}")
    return done.stdout


def _sinfo(*args: str) -> str:
    try:  # --all: hidden partitions too, which a job may name
        done = subprocess.run(["sinfo", "--all", "--noheader", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ClusterQueryError(f"could not run sinfo: {err}") from None
    if done.returncode != 0:
        raise ClusterQueryError(f"sinfo {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def read_cluster() -> Cluster:
    """The nodes, partition time limits and partition limits of the cluster this machine submits to
    (without the partition limits, said on stderr, where scontrol cannot be read)."""
    nodes = parse_nodes(_sinfo("--Node", "--format=%N|%R|%c|%m|%G|%T"))
    if not nodes:
        raise ClusterQueryError("sinfo lists no nodes")
    try:
        limits = parse_partition_limits(_scontrol_partitions())
    except ClusterQueryError as err:
        print(f"partition limits not checked: {err}", file=sys.stderr, flush=True)
        limits = {}
    return Cluster(nodes, *parse_time_limits(_sinfo("--format=%P|%l")), limits)


def fits(request: Request, cluster: Cluster, *, taking_jobs: bool = False) -> bool:
    """Whether a node of the request's partition (the one it is sent to; any, where it names none)
    can run the request within the partition's limits; with ``taking_jobs``, a node that takes new
    jobs now, in a partition that is up."""
    return any(_fitting(request, cluster, taking_jobs=taking_jobs))


def _usable(node: Node, partition: str, cluster: Cluster) -> tuple[float, float]:
    """The CPUs and memory a job may use on ``node`` through ``partition``."""
    limit = cluster.limit(partition)
    cpus = min(node.cpus, limit.max_cpus_per_node)
    return cpus, min(node.mem_mb, limit.max_mem_per_node, limit.max_mem_per_cpu * cpus)


def _fitting(request: Request, cluster: Cluster, *, taking_jobs: bool = False) -> Iterator[tuple[Node, str]]:
    """The (node, partition) pairs that can run the request, one by one (``fits`` stops at the first)."""
    for node in cluster.nodes:
        if taking_jobs and not node.takes_jobs:
            continue
        for partition in sorted(node.partitions):
            if request.partition and partition not in request.partitions:
                continue
            state = cluster.limit(partition).state
            if state in REFUSING_STATES or (taking_jobs and state != "UP"):
                continue
            cpus, mem_mb = _usable(node, partition, cluster)
            if (request.cpus <= cpus and request.mem_mb <= mem_mb
                    and request.gpus <= node.gpu_count(request.gpu_model)
                    and request.runtime <= cluster.time_limits.get(partition, math.inf)):
                yield node, partition


def _largest(cluster: Cluster, request: Request) -> str:
    """What the nodes the request may use (those with its GPUs, for a GPU job, where there are
    any) have at most, to set beside what it asks for."""
    nodes = [n for n in cluster.nodes if not request.partition or request.partitions & n.partitions]
    if not nodes:
        return f"the cluster has no partition {request.partition!r} (it has {', '.join(sorted(cluster.partitions))})"
    if request.gpus:
        nodes = [n for n in nodes if n.gpu_count(request.gpu_model)] or nodes
    partitions = {p for n in nodes for p in n.partitions if not request.partition or p in request.partitions}
    refusing = {p for p in partitions if cluster.limit(p).state in REFUSING_STATES}
    if refusing == partitions:
        states = ", ".join(f"{p} is {cluster.limit(p).state}" for p in sorted(refusing))
        return f"partition {states}: sbatch refuses new jobs there"
    usable = [_usable(n, p, cluster) for n in nodes for p in n.partitions if p in partitions - refusing]
    cpus, mem_mb = max(u[0] for u in usable), max(u[1] for u in usable)
    limited = " (partition limit)"
    parts = [f"{int(cpus)} CPUs" + (limited if cpus < max(n.cpus for n in nodes) else ""),
             f"{int(mem_mb)} MB" + (limited if mem_mb < max(n.mem_mb for n in nodes) else "")]
    if request.gpus:
        parts.append(_gpus(max(n.gpu_count(request.gpu_model) for n in nodes), request.gpu_model))
    longest = max(cluster.time_limits.get(p, math.inf) for p in partitions - refusing)
    limit = "no time limit" if math.isinf(longest) else f"a time limit of at most {_minutes(longest)}"
    return f"the largest node has {', '.join(parts)}, {limit}"


def _lines(requests: Iterable[Request], cluster: Cluster) -> list[str]:
    """One line per rule (and attempt) of submissions no node can run: the largest of them beside
    what the cluster has, and how many different ones there are."""
    by_rule: dict[tuple[int, str], list[Request]] = {}
    for request in requests:
        by_rule.setdefault((request.attempt, request.name), []).append(request)
    lines = []
    for (attempt, name), found in sorted(by_rule.items()):
        largest = max(found, key=lambda r: (r.gpus, r.cpus, r.mem_mb, r.runtime))
        label = name + ("" if attempt == 1 else f" at attempt {attempt}")
        if len(found) > 1:
            label += f" ({len(found)} different requests, the largest shown)"
        lines.append(f"{label} asks for {largest.describe()}; {_largest(cluster, largest)}")
    return lines


def _waiting_lines(requests: Iterable[Request], cluster: Cluster) -> list[str]:
    """One line per rule whose requests fit only nodes that take no new jobs now, or only partitions
    that are not up, naming them."""
    by_rule: dict[str, set[str]] = {}
    for request in requests:
        places = by_rule.setdefault(request.name, set())
        for node, partition in _fitting(request, cluster):
            state = cluster.limit(partition).state
            places.add(f"{node.name} ({node.state})" if state == "UP"
                       else f"{node.name} ({node.state}) in partition {partition} ({state})")
    return [f"{name}: only {', '.join(sorted(places))} can run its jobs" for name, places in sorted(by_rule.items())]


def report(requests: Sequence[Request], cluster: Cluster) -> tuple[str | None, str | None]:
    """The error that must stop the run (a first attempt fits no node within its partition's limits)
    and the warning for jobs that only nodes taking no new jobs now, or partitions that are down,
    can run, and for retries that would ask for more than any node has (of rules whose first attempt
    fits); None for either when there is nothing to say.
    Each distinct request is checked once: a DAG repeats a few of them thousands of times."""
    distinct = set(requests)
    unrunnable = {r for r in distinct if not fits(r, cluster)}
    failing_first = {r.name for r in unrunnable if r.attempt == 1}
    error_lines = _lines((r for r in unrunnable if r.attempt == 1), cluster)
    retry_lines = _lines((r for r in unrunnable if r.attempt > 1 and r.name not in failing_first), cluster)
    waiting_lines = _waiting_lines((r for r in distinct - unrunnable
                                    if r.attempt == 1 and not fits(r, cluster, taking_jobs=True)), cluster)
    error = None
    warnings = []
    if error_lines:
        error = ("these jobs would wait in the Slurm queue for ever: no node and partition of this cluster can "
                 "run them (nothing was submitted):\n  " + "\n  ".join(error_lines)
                 + "\nLower what they ask for in the profile's set-resources and set-threads (a training job "
                 "stopped at its time limit resumes from its newest checkpoint when retried), or disable what "
                 f"needs them. {SKIP_VARIABLE}=0 skips this check.")
    if waiting_lines:
        warnings.append("these jobs will wait in the queue until a node that can run them takes jobs again: the "
                        "nodes that fit them take no new jobs now (down, drained, failing, reserved or not "
                        "responding, or in a partition that is down; ask the cluster's administrators, or lower "
                        "what they ask for):\n  "
                        + "\n  ".join(waiting_lines))
    if retry_lines:
        warnings.append("if these jobs fail and are retried, the retry asks for more than any node has and waits "
                        "in the queue for ever (cancel it with scancel):\n  " + "\n  ".join(retry_lines))
    return error, "\n".join(warnings) or None
