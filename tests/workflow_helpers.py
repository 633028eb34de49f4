"""Running the real Snakemake workflow from tests, in a directory of the test's own."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, snakemake_env

TINY_SYNTHETIC = {"n_train": 2, "n_test": 4, "n_train_abnormal": 1, "n_frames": 48, "height": 64, "width": 80}


def base_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def merge_config(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` as Snakemake merges config files (nested mappings key by key)."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def tiny_config(**synthetic) -> dict:
    """The shipped config with a small synthetic dataset and only the baseline enabled."""
    config = base_config()
    config["datasets"]["synthetic"].update(TINY_SYNTHETIC | synthetic)
    for name, entry in config["methods"].items():
        entry["enabled"] = name == "tde"
    return config


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` with ``config`` and the local profile (as `make demo` does);
    output (stdout+stderr) in ``.stdout``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(copy.deepcopy(config)))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=snakemake_env(), timeout=timeout)
    proc.stdout = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def planned_jobs(workdir: Path, config: dict) -> dict[str, int]:
    """Job counts per rule of a dry run ({} when nothing is to be done)."""
    out = run_snakemake(workdir, config, "-n", "--quiet", "rules").stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts
