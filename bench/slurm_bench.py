"""Slurm submissions and wall time of the frames step for many small per-video jobs.

Renders a synthetic dataset of ``--videos`` videos once (local executor), then extracts their
frames through profiles/slurm on the local one-node cluster (profiles/slurm/local-cluster.sh,
started when needed) in two ways, each in a fresh directory:

* one Slurm job per video (the profile without its `groups`),
* bundles of ``--group-size`` videos (the profile as shipped: `groups` + `group-components`).

Job arrays (`slurm-array-jobs: extract_frames`) are not offered: with the pinned plugin (2.8.0)
every array task checks the outputs of the array's first job instead of its own, so all tasks but
one end in MissingOutputException and are resubmitted again and again
(snakemake-executor-plugin-slurm issue #447).

Submissions are the sbatch calls the plugin reports, Slurm jobs run are the jobs
of those submissions that the controller's log records as ended, and the wall time is
Snakemake's from start to end. Prints a table.

    python bench/slurm_bench.py [--videos 200] [--group-size 20] [--variants ungrouped grouped] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.datasets import get_adapter  # noqa: E402

CLUSTER_SCRIPT = REPO / "profiles" / "slurm" / "local-cluster.sh"
CONTROLLER_LOG = Path(os.environ.get("VADBENCH_SLURM_ROOT", "/tmp/vadbench-slurm")) / "log" / "slurmctld.log"
# Status polling as in the tests: the profile's pace suits a busy lab cluster, not this one.
QUICK_POLLING = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]


def bench_config(raw_root: Path, videos: int) -> dict:
    """The shipped config with a synthetic dataset of ``videos`` small videos (half train, half test)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["synthetic"].update(
        root=str(raw_root), n_train=videos // 2, n_test=videos - videos // 2, n_train_abnormal=0,
        n_frames=24, height=48, width=64,
    )
    for name, entry in config["methods"].items():
        entry["enabled"] = name == "tde"
    return config


def snakemake(workdir: Path, config: dict, targets: list[str], *options: str, timeout: float) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *options, *targets]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{(done.stdout + done.stderr)[-5000:]}")
    return done.stdout + done.stderr


VARIANTS = ("ungrouped", "grouped")


def variant_profiles(directory: Path, group_size: int, chosen: list[str]) -> dict[str, Path]:
    """Profile copies: (description -> profile directory) for the chosen ways of submitting."""
    shipped = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    shipped["slurm-partition-config"] = str(REPO / shipped["slurm-partition-config"])
    ungrouped = {k: v for k, v in shipped.items() if k not in ("groups", "group-components")}
    variants = {
        "ungrouped": ("one Slurm job per video", ungrouped),
        "grouped": (f"bundles of {group_size} (profile groups)", shipped | {"group-components": {"per_video": group_size}}),
    }
    paths = {}
    for key in chosen:
        name, profile = variants[key]
        path = directory / f"profile_{key}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(yaml.safe_dump(profile))
        paths[name] = path
    return paths


def controller_log_since(offset: int) -> str:
    with open(CONTROLLER_LOG) as log:
        log.seek(offset)
        return log.read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--group-size", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--timeout", type=float, default=5400, help="seconds allowed per variant")
    parser.add_argument("--keep", type=Path, help="work here and keep the files (default: a temporary folder)")
    args = parser.parse_args(argv)

    subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], check=True)
    base = args.keep or Path(tempfile.mkdtemp(prefix="slurm_bench_"))
    config = bench_config(base / "raw", args.videos)
    adapter = get_adapter("synthetic", config["datasets"]["synthetic"])
    sources = [str(v.source) for split in ("train", "test") for v in adapter.videos(split)]
    frames = [f"results/frames/synthetic/{split}/{v.name}.h5" for split in ("train", "test") for v in adapter.videos(split)]

    started = time.monotonic()
    snakemake(base / "render", config, sources, "--cores", str(os.cpu_count()), timeout=args.timeout)
    print(f"rendered {len(sources)} videos locally in {time.monotonic() - started:.0f} s", flush=True)

    rows = []
    for name, profile in variant_profiles(base, args.group_size, args.variants).items():
        workdir = base / re.sub(r"\W+", "_", name)
        shutil.rmtree(workdir, ignore_errors=True)
        offset = CONTROLLER_LOG.stat().st_size
        started = time.monotonic()
        output = snakemake(workdir, config, frames, "--profile", str(profile), *QUICK_POLLING, timeout=args.timeout)
        wall = time.monotonic() - started
        submissions = re.findall(r"submitted with SLURM jobid (\d+)", output)
        submitted = set(submissions)
        ended = re.findall(r"_job_complete: JobId=(\d+)\S* done", controller_log_since(offset))
        missing = [f for f in frames if not (workdir / f).is_file()]
        if missing:
            raise SystemExit(f"{name}: {len(missing)} frames files missing, e.g. {missing[0]}")
        rows.append({
            "submission": name,
            "Snakemake jobs": len(re.findall(r"^Finished jobid: \S+ \(Rule: extract_frames\)", output, flags=re.M)),
            "sbatch calls": len(submissions),
            "Slurm jobs run": sum(job in submitted for job in ended),
            "wall time (s)": round(wall),
        })
        print(rows[-1], flush=True)

    print(f"\nframes of {args.videos} synthetic videos ({config['datasets']['synthetic']['n_frames']} frames "
          f"each) through profiles/slurm on the local one-node cluster ({os.cpu_count()} CPUs)\n")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
