# Before a Slurm run submits anything, every job it will submit must fit a node of the cluster
# (pipelines/slurm_fit.py says why). Called from the Snakefile's `onstart`, which Snakemake runs
# once the DAG is built and before the first job, and not for a dry run.
from pipelines import slurm_fit


def _slurm_submissions():
    """What the run will submit: each bundle (group job) once, and each job outside a bundle."""
    dag = workflow.dag
    found = {}
    for job in dag.needrun_jobs():
        submission = dag.get_job_group(job) or job
        found.setdefault(id(submission), submission)
    return [submission for submission in found.values() if not submission.is_local]


class _Quiet:
    """A logger for the plugin's partition choice, which would log a line per job."""

    def debug(self, *args, **kwargs):
        pass

    info = warning = debug


def _partition_map():
    """The profile's partition map (slurm-partition-config, or SNAKEMAKE_SLURM_PARTITIONS), as the
    plugin reads it; None without one."""
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    path = workflow.executor_settings.partition_config or os.environ.get("SNAKEMAKE_SLURM_PARTITIONS")
    return read_partition_file(Path(path)) if path else None


def _slurm_partition(submission, partitions, default):
    """The partition the plugin sends a submission to: its own slurm_partition, else the partition
    map's best fit, else the cluster's default (None: none, and then any may take it)."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition

    named = submission.resources.get("slurm_partition")
    if named:
        return str(named)
    chosen = get_best_partition(partitions, submission, _Quiet()) if partitions else None
    return chosen or default


def _slurm_request(submission, attempt, partitions, default):
    """What one submission asks Slurm for at an attempt, read as the Slurm plugin reads it."""
    from snakemake_executor_plugin_slurm.partitions import get_job_cpu_requirement, parse_gpu_requirements

    if submission.attempt != attempt:
        submission.attempt = attempt  # resets the evaluated resources
    resources = submission.resources
    cpus, kind = get_job_cpu_requirement(submission)
    gpus, gpu_model = parse_gpu_requirements(submission)
    if kind == "gpu":  # --cpus-per-gpu
        cpus *= max(gpus, 1)
    per_cpu = int(resources.get("mem_mb_per_cpu") or 0)
    rule_names = sorted({job.rule.name for job in getattr(submission, "jobs", [submission])})
    return slurm_fit.Request(
        name="+".join(rule_names),
        cpus=max(cpus, 1),
        mem_mb=per_cpu * max(cpus, 1) if per_cpu else int(resources.get("mem_mb") or 0),
        gpus=gpus,
        gpu_model=gpu_model or None,
        runtime=float(resources.get("runtime") or 0),
        partition=_slurm_partition(submission, partitions, default),
        attempt=attempt,
    )


def _names_a_cluster(submission):
    """Whether a job goes to another cluster of a multi-cluster site (the plugin's resource names)."""
    return any(submission.resources.get(name) for name in ("slurm_cluster", "cluster", "clusters"))


def check_jobs_fit_the_cluster():
    """Stop a Slurm run whose jobs no node can run, before it submits any; warn about retries
    that would ask for more than any node has."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm" or os.environ.get(slurm_fit.SKIP_VARIABLE) == "0":
        return
    try:
        cluster = slurm_fit.read_cluster()
    except slurm_fit.ClusterQueryError as err:
        print(f"not checked whether the jobs fit the cluster's nodes: {err}", file=sys.stderr, flush=True)
        return

    submissions = _slurm_submissions()
    if any(_names_a_cluster(submission) for submission in submissions):
        print("not checked whether the jobs fit the cluster's nodes: jobs name Slurm clusters (slurm_cluster), "
              "which sinfo alone does not show", file=sys.stderr, flush=True)
        return
    partitions = _partition_map()
    requests = []
    retried = set()  # retries are evaluated once per distinct first request: jobs alike grow alike
    for submission in submissions:
        first = _slurm_request(submission, 1, partitions, cluster.default_partition)
        requests.append(first)
        if first in retried:
            continue
        retried.add(first)
        try:
            for attempt in range(2, submission.restart_times + 2):
                requests.append(_slurm_request(submission, attempt, partitions, cluster.default_partition))
        finally:
            submission.attempt = 1
    error, warning = slurm_fit.report(requests, cluster)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if error:
        raise WorkflowError(error)
