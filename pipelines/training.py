"""Resumable, deterministic training stages: the checkpoint format and the loop's bookkeeping.

A stage writes periodic checkpoints into ``<out>.resume/`` (every ``every_steps`` steps) and,
when it finishes, the final checkpoint ``<out>`` atomically. A restarted job (a preempted
Slurm job, a killed process) resumes from the newest periodic checkpoint: model, optimisers,
the step counter and every random generator state come back, so a stopped-and-resumed run
ends with the same weights as one that ran straight through. Periodic checkpoints left by a run
of other settings (another config or seed, other training files or previous stage: a stage rerun
after an edit) are discarded, not resumed from.

Checkpoints are plain ``torch.save`` dicts of tensors and JSON-like values, loaded with
``weights_only=True``; they record the method, the stage, the config and the versions, and
loading one made by another method or with another input geometry is an error.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.atomic import atomic_path
from pipelines.provenance import versions

FORMAT = "vadbench-checkpoint-1"


def resume_dir_of(out: str | Path) -> Path:
    """The folder of a stage's resume points (and its kept log): ``<out>.resume``."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


#: The stage's notes key listing resumes on another host or thread count (step, both machines).
RESUMED_ELSEWHERE_NOTE = "resumed_on_another_host"


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or belongs to another method, stage set-up or geometry."""


def torch_device() -> str:
    """Where a method trains and scores: the GPU its job was given, else the CPU (every stage runs
    on either; on a CPU slowly)."""
    if torch.cuda.is_available():
        return "cuda"
    _warn_of_an_unusable_gpu()
    return "cpu"


@functools.cache
def _warn_of_an_unusable_gpu() -> None:
    """Say it, once a process, when the job was given a GPU (Slurm's or CUDA's variables name one)
    that torch cannot use (a CPU-only torch build, a driver that does not match): the job would
    otherwise run a GPU-sized stage on the CPU, holding the GPU, without a word."""
    given = {name: os.environ[name] for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
             if os.environ.get(name, "").strip() not in ("", "-1", "NoDevFiles")}
    if given:
        build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU-only build)'}"
        print(f"WARNING: this job was given a GPU ({', '.join(f'{k}={v}' for k, v in given.items())}) but {build} "
              "cannot use it; running on the CPU", file=sys.stderr, flush=True)


def deterministic_gpu_kernels() -> None:
    """Make CUDA training repeatable: cuDNN's default convolution backward and cuBLAS's split
    reductions may sum in another order on each run, so a requeued job would not continue into the
    weights of a straight run. Deterministic cuDNN algorithms, no autotuning, a fixed cuBLAS
    workspace (read when cuBLAS starts, so set before the first GPU step) and torch's deterministic
    mode, warning where an operation has no deterministic kernel. On the CPU nothing changes."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch and choose deterministic GPU kernels; return the NumPy generator
    that drives data sampling."""
    deterministic_gpu_kernels()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Stop on a NaN or infinite loss, naming where it appeared."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"{where}: loss is {loss.detach().cpu().tolist()}; stopping before it spreads")


@functools.cache
def compute_host() -> dict[str, str]:
    """What decides, beside the versions and the thread count, the bits of weights trained on a CPU:
    the vector instructions PyTorch's kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's convolutions
    (``ONEDNN_MAX_CPU_ISA``) use, which each default to the best the host has, and the CPU model;
    the GPU's name where one is used. Read once per process: every periodic checkpoint records it."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    host = {"cpu_model": model, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "host default"))}
    if torch_device() == "cuda":
        host["gpu"] = torch.cuda.get_device_name()
    return host


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically and durably: a killed job never leaves one that looks valid, and
    one that replaced the previous resume point survives a crash of the node. It records torch's
    thread count and the compute host beside the versions: CPU training sums in another order on
    another count, and with other instructions on another CPU, so the weights' bits depend on them."""
    record = {"format": FORMAT, "versions": versions(), "torch_threads": torch.get_num_threads(), "host": compute_host()}
    with atomic_path(path, durable=True) as tmp:
        torch.save(record | payload, tmp)


def load_checkpoint(path: Path, method: str, identity: dict[str, Any] | None = None, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint of ``method``; ``identity`` values (e.g. resolution) must match the file's.
    ``mmap`` maps the tensors instead of reading them: for a look at the record alone."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vadbench checkpoint")
    if payload.get("method") != method:
        raise CheckpointError(f"{path}: checkpoint of method {payload.get('method')!r}, expected {method!r}")
    for key, expected in (identity or {}).items():
        found = payload.get("identity", {}).get(key)
        if found != expected:
            raise CheckpointError(f"{path}: checkpoint has {key}={found!r}, this run needs {key}={expected!r}")
    return payload


@dataclass
class StageRun:
    """Bookkeeping of one training stage: resume, periodic checkpoints, the final checkpoint."""

    out: Path
    method: str
    stage: str
    identity: dict[str, Any]  # what must match to reuse weights (resolution, channels, ...)
    config: dict[str, Any]
    seed: int
    every_steps: int
    step: int = 0
    rng: np.random.Generator = field(init=False)
    #: What the stage records as it goes (e.g. its test curve): saved with every periodic
    #: checkpoint, restored on resume, and kept in the final checkpoint.
    notes: dict[str, Any] = field(default_factory=dict)
    #: The files the stage trains from (its inputs, the previous stage's checkpoint): a resume point
    #: made from other files, or under another config or seed, is not resumed from.
    sources: Sequence[Path] = ()
    #: Config keys that change how the job runs, not its weights (Method.runtime_params, e.g. the
    #: resume-point interval): a resume point made under other values of them is still resumed.
    runtime_keys: Sequence[str] = ()

    def __post_init__(self):
        self.out = Path(self.out)
        self.rng = seed_everything(self.seed)

    @property
    def resume_dir(self) -> Path:
        return resume_dir_of(self.out)

    def _periodic(self) -> list[Path]:
        if not self.resume_dir.is_dir():
            return []
        return sorted(self.resume_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))

    @property
    def recorded_config(self) -> dict[str, Any]:
        """The config a checkpoint records and a resume point must match: without the runtime keys,
        so that neither a checkpoint's bytes (and the scores' digests of it) nor a resume depend on them."""
        return {key: value for key, value in self.config.items() if key not in self.runtime_keys}

    @functools.cached_property
    def fingerprint(self) -> str:
        """What a resume point must have been made under: the config, seed and identity, and each
        source file's path, size and modification time (unchanged while a job is requeued). Taken
        once: the sources do not change while the stage runs."""
        files = []
        for path in self.sources:
            stat = Path(path).stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
        record = {"config": self.recorded_config, "seed": self.seed, "identity": self.identity, "sources": files}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()

    def _state(self, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """What a checkpoint holds; refused (FloatingPointError) when a weight is NaN or infinite, so a
        step that diverged after its loss was checked leaves no checkpoint that looks valid."""
        state = model.state_dict()
        broken = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
        if broken:
            raise FloatingPointError(f"{self.method} stage {self.stage!r}, step {self.step}: non-finite weights in "
                                     f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}; no checkpoint written")
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": self.rng.bit_generator.state,
            "python": list(random.getstate()[1]),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "method": self.method,
            "stage": self.stage,
            "step": self.step,
            "identity": self.identity,
            "config": self.recorded_config,
            "seed": self.seed,
            "model": state,
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "notes": self.notes,
            "fingerprint": self.fingerprint,
            "rng": rng,
        }

    def resume(self, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> int:
        """Restore the newest periodic checkpoint if there is one; return the step to continue from."""
        found = self._periodic()
        if not found:
            return 0
        try:
            payload = load_checkpoint(found[-1], self.method)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; delete {self.resume_dir} to train this stage from the start") from None
        if payload["stage"] != self.stage:
            raise CheckpointError(f"{found[-1]}: checkpoint of stage {payload['stage']!r}, expected {self.stage!r}")
        if payload.get("fingerprint") != self.fingerprint:
            print(f"{self.resume_dir}: resume point of step {payload['step']} was made under other settings, "
                  "training files or previous stage; discarded, training from the start", flush=True)
            for stale in found:
                stale.unlink()
            return 0
        model.load_state_dict(payload["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        self._restore_streams(payload["rng"])
        self.step = payload["step"]
        self.notes = payload.get("notes", {})
        self._note_host_change(payload, found[-1])
        return self.step

    def _note_host_change(self, payload: dict[str, Any], path: Path) -> None:
        """Say so, and keep it in the checkpoint's notes, when a stage resumes on another compute host
        or thread count than the one that made its resume point: the weights' bits depend on both,
        so such a stage's final weights are not those of a straight run on either machine."""
        made_on = {"host": payload.get("host"), "torch_threads": payload.get("torch_threads")}
        here = {"host": compute_host(), "torch_threads": torch.get_num_threads()}
        if made_on != here:
            print(f"{path}: made on {made_on}, resumed on {here}; the final weights will differ in their last "
                  "bits from a straight run's", flush=True)
            self.notes.setdefault(RESUMED_ELSEWHERE_NOTE, []).append({"step": self.step, "made_on": made_on,
                                                                      "resumed_on": here})

    def continue_streams(self, previous: dict[str, Any]) -> None:
        """Continue every random stream where ``previous`` (a loaded checkpoint of the stage before)
        left it, instead of from the seed: for methods whose stages are one script run in a row (STD's
        three phases share one data loader), so a stage draws new batches rather than replaying the
        previous stage's. Call it before ``resume``, whose resume point, if any, takes precedence."""
        self._restore_streams(previous["rng"])

    def _restore_streams(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.rng.bit_generator.state = rng["numpy"]
        random.setstate((3, tuple(rng["python"]), None))

    def advance(self, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Count one finished step; write a periodic checkpoint when the interval is reached."""
        self.step += 1
        if self.every_steps and self.step % self.every_steps == 0:
            save_checkpoint(self.resume_dir / f"step_{self.step}.pt", self._state(model, optimizers))
            for old in self._periodic()[:-1]:
                old.unlink()

    def finish(self, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], extra: dict | None = None) -> None:
        """Write the final checkpoint atomically, then drop the periodic ones. The resume fingerprint
        (it holds the source files' modification times) is left out, so that two runs of one config
        write byte-identical final checkpoints and the scores' checkpoint digests agree."""
        state = self._state(model, optimizers)
        del state["fingerprint"]
        save_checkpoint(self.out, state | {"extra": extra or {}})
        shutil.rmtree(self.resume_dir, ignore_errors=True)
