"""Throughput and memory of the learned frame methods (LGN-Net, STD) on this machine.

A benchmark, not a test. For each method at the ``cpu_budget`` and ``paper`` resolutions:

- training throughput, clips/s: optimisation steps as the training stage runs them (random
  clips read from a frames file, converted, one step; STD's joint step = autoencoder step +
  cluster step), after one warm-up step;
- scoring throughput, frames/s: ``score_video`` on a stored video, checkpoint loading included;
- peak resident memory while scoring a short video and one four times longer, each in a fresh
  process (peak RSS, Linux VmHWM): streaming keeps it flat.

Videos are random frames at UCSD Ped2's size (240 x 360) and networks are untrained: neither
changes the cost. Run: ``python bench/methods_bench.py [--threads 1] [--train-steps 2] [--presets ...] [--methods ...]``.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import get_method  # noqa: E402
from models.lgn_net import LGNNet, lgn_loss, make_optimizer  # noqa: E402
from models.std import STDNet, make_optimizers, std_optimiser_step  # noqa: E402
from pipelines.frame_clips import ClipSampler  # noqa: E402
from pipelines.frame_store import FrameWriter  # noqa: E402
from pipelines.training import StageRun  # noqa: E402

METHODS = ("lgn_net", "std")
PRESETS = ("cpu_budget", "paper")
HEIGHT, WIDTH = 240, 360


def write_video(path: Path, n_frames: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with FrameWriter(path, HEIGHT, WIDTH, 3, "lz4") as writer:
        for start in range(0, n_frames, 32):
            writer.append(rng.integers(0, 256, size=(min(32, n_frames - start), HEIGHT, WIDTH, 3), dtype=np.uint8))
    return path


def network_and_optimisers(method) -> tuple[torch.nn.Module, dict]:
    if method.name == "lgn_net":
        model = LGNNet(method.cfg)
        return model, {"adam": make_optimizer(model, method.cfg)}
    model = STDNet(method.cfg)
    return model, make_optimizers(model, method.cfg)


def train_step(method, model, optimisers, clips: torch.Tensor) -> None:
    """One training iteration as the method's last training stage runs it."""
    if method.name == "lgn_net":
        loss, _ = lgn_loss(model(clips[:, :-1]), clips[:, -1], method.cfg)
        optimisers["adam"].zero_grad(set_to_none=True)
        loss.backward()
        optimisers["adam"].step()
    else:
        for name in ("ae", "cluster"):
            std_optimiser_step(model, optimisers, name, clips, method.cfg)


def training_throughput(method, video: Path, steps: int) -> float:
    """Clips per second over ``steps`` iterations after a warm-up one."""
    model, optimisers = network_and_optimisers(method)
    model.train()
    rng = np.random.default_rng(0)
    batch = method.cfg.batch_size
    length = 5
    with ClipSampler([video], length, method.frame_format) as sampler:
        train_step(method, model, optimisers, sampler.sample(rng, batch))
        started = time.perf_counter()
        for _ in range(steps):
            train_step(method, model, optimisers, sampler.sample(rng, batch))
        return steps * batch / (time.perf_counter() - started)


def write_checkpoint(method, out: Path) -> Path:
    """An untrained final-stage checkpoint that ``score_video`` accepts."""
    run = StageRun(out, method.name, method.stages[-1], method.identity, method.settings, 0, 0)
    model, optimisers = network_and_optimisers(method)
    run.finish(model, optimisers)
    return out


def scoring_throughput(method, checkpoint: Path, video: Path) -> float:
    started = time.perf_counter()
    result = method.score_video(checkpoint, video)
    return int(result.scored.sum()) / (time.perf_counter() - started)


def peak_resident_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process image, unlike
    ru_maxrss, which a child started by fork and exec inherits from its (larger) parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(method_name: str, preset: str, checkpoint: Path, video: Path, threads: int) -> None:
    """Score one video and print the process's peak resident memory in MiB."""
    torch.set_num_threads(threads)
    get_method(method_name, {"preset": preset}).score_video(checkpoint, video)
    print(peak_resident_mib())


def peak_memory(method_name: str, preset: str, checkpoint: Path, video: Path, threads: int) -> float:
    command = [sys.executable, __file__, "--memory-child", method_name, preset, str(checkpoint), str(video),
               "--threads", str(threads)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Snakemake gives a job one by default)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training iterations after a warm-up")
    parser.add_argument("--score-frames", type=int, nargs=2, default=(16, 24), metavar=("CPU", "PAPER"),
                        help="frames of the video scored for throughput, at each preset")
    parser.add_argument("--memory-frames", type=int, default=48, help="frames of the short video; the long has 4x")
    parser.add_argument("--memory-preset", default="cpu_budget", choices=PRESETS)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--memory-child", nargs=4, metavar=("METHOD", "PRESET", "CHECKPOINT", "VIDEO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        method_name, preset, checkpoint, video = args.memory_child
        peak_memory_child(method_name, preset, Path(checkpoint), Path(video), args.threads)
        return 0

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), frames {HEIGHT}x{WIDTH}, untrained networks")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = write_video(tmp / "short.h5", args.memory_frames)
        long = write_video(tmp / "long.h5", 4 * args.memory_frames, seed=1)
        for method_name in args.methods:
            for preset, score_frames in zip(PRESETS, args.score_frames):
                if preset not in args.presets:
                    continue
                method = get_method(method_name, {"preset": preset})
                video = write_video(tmp / f"score_{score_frames}.h5", score_frames)
                checkpoint = write_checkpoint(method, tmp / f"{method_name}_{preset}.pt")
                row = {
                    "method": method_name,
                    "preset": preset,
                    "size": method.cfg.image_size,
                    "train clips/s": training_throughput(method, video, args.train_steps),
                    "score frames/s": scoring_throughput(method, checkpoint, video),
                }
                if preset == args.memory_preset:
                    row[f"peak MiB {args.memory_frames} fr"] = peak_memory(method_name, preset, checkpoint, short, args.threads)
                    row[f"peak MiB {4 * args.memory_frames} fr"] = peak_memory(method_name, preset, checkpoint, long, args.threads)
                rows.append(row)
                print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print()
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
