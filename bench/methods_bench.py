"""Throughput and memory of the learned frame methods (LGN-Net, STD) on this machine.

A benchmark, not a test. For each method at the ``cpu_budget`` and ``paper`` resolutions:

- training throughput, clips/s: optimisation steps as the training stage runs them (random
  clips read from a frames file, converted, one step; STD's joint step = autoencoder step +
  cluster step), after one warm-up step;
- scoring throughput, frames/s: the video's frames over ``score_video``'s time, the checkpoint's
  loading taken out (and, at the memory preset, the marginal rate between the two memory videos);
- memory while scoring a short video and one ten times longer, each in a fresh process: the
  peak resident memory (Linux VmHWM) of each, which moves by tens of MiB from run to run, and
  the growth that decides: the C heap in use (glibc mallinfo2) each time the scorer asks for its
  next batch, against the frame reached, as a slope in MiB per 1,000 frames beside what keeping
  one converted frame per frame would add ("flat" under a quarter of that). ``--leak-check``
  scores the long video again keeping every converted frame, to show that the bench sees it.

Videos are random frames at UCSD Ped2's size (240 x 360) and networks are untrained: neither
changes the cost. Run: ``python bench/methods_bench.py [--threads 1] [--train-steps 2] [--presets ...]
[--methods ...] [--memory-frames 60 600] [--leak-check] [--size 32]``.
"""
from __future__ import annotations

import argparse
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
from process_memory import heap_in_use_mib, peak_resident_mib  # noqa: E402
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
    """Frames of the video per second of ``score_video``, the checkpoint's loading (timed alone,
    once warm) taken out: what one more frame of video costs."""
    method.load(checkpoint)
    started = time.perf_counter()
    method.load(checkpoint)
    loading = time.perf_counter() - started
    started = time.perf_counter()
    result = method.score_video(checkpoint, video)
    return len(result.scores) / (time.perf_counter() - started - loading)


def memory_child(method_name: str, preset: str, checkpoint: Path, video: Path, threads: int, leak: bool) -> None:
    """Score one video and print JSON: the peak resident memory, the scoring time, and the heap in
    use each time the scorer asks for its next batch of clips, with the frame it has reached (the
    same point of every iteration, so the series is flat when nothing is kept). ``leak`` keeps every
    converted frame (what a scorer that did not stream would hold), to show that the bench sees it."""
    import json

    from pipelines import frame_clips

    torch.set_num_threads(threads)
    if leak:
        kept, convert = [], frame_clips.convert

        def leaking_convert(*args, **kwargs):
            converted = convert(*args, **kwargs)
            kept.append(converted.clone())
            return converted

        frame_clips.convert = leaking_convert
    method = get_method(method_name, {"preset": preset})
    module = sys.modules[type(method).__module__]
    samples, stream = [], module.sliding_clips

    def observed_stream(*args, **kwargs):
        for start, clips in stream(*args, **kwargs):
            samples.append((start, heap_in_use_mib()))
            yield start, clips

    module.sliding_clips = observed_stream
    started = time.perf_counter()
    method.score_video(checkpoint, video)
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_mib": peak_resident_mib(), "seconds": seconds, "samples": samples}))


def memory_run(method_name: str, preset: str, checkpoint: Path, video: Path, threads: int, leak: bool = False) -> dict:
    import json

    command = [sys.executable, __file__, "--memory-child", method_name, preset, str(checkpoint), str(video),
               "--threads", str(threads)] + (["--leak"] if leak else [])
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def growth_per_1000_frames(run: dict, n_frames: int) -> float:
    """Slope of the heap in use against the frame reached, from a quarter to four fifths of the
    video (a least-squares line), in MiB per 1,000 frames: start-up allocations are over by then and
    the last, shorter batches not yet come, so a scorer that streams stays near 0 and one that keeps
    its frames climbs."""
    samples = np.array([s for s in run["samples"] if n_frames / 4 <= s[0] <= 0.8 * n_frames], dtype=float)
    if len(samples) < 4 or np.isnan(samples[:, 1]).any():
        return float("nan")
    return float(np.polyfit(samples[:, 0], samples[:, 1], 1)[0] * 1000)


def converted_frame_mib(method) -> float:
    """MiB of one frame as the network reads it (float32), the scale of a per-frame leak."""
    fmt = method.frame_format
    return 3 * fmt.size * fmt.size * 4 / 2**20


def memory_columns(method, preset: str, checkpoint: Path, videos: dict[int, Path], threads: int,
                   leak_check: bool) -> dict:
    """Peak memory scoring the short and the long video (fresh processes), the marginal scoring
    rate between them, the memory's growth over the long run and the verdict."""
    (short, short_video), (long, long_video) = sorted(videos.items())
    runs = {n: memory_run(method.name, preset, checkpoint, path, threads) for n, path in videos.items()}
    growth = growth_per_1000_frames(runs[long], long)
    leak_scale = converted_frame_mib(method) * 1000  # MiB per 1,000 frames if every frame were kept
    columns = {
        f"peak MiB {short} fr": runs[short]["peak_mib"],
        f"peak MiB {long} fr": runs[long]["peak_mib"],
        "marginal score frames/s": (long - short) / (runs[long]["seconds"] - runs[short]["seconds"]),
        "growth MiB/1000 fr": growth,
        "one kept frame, MiB/1000 fr": leak_scale,
    }
    if leak_check:
        columns["growth with kept frames"] = growth_per_1000_frames(
            memory_run(method.name, preset, checkpoint, long_video, threads, leak=True), long)
    columns["memory"] = ("too few batches for a slope: score a longer video" if np.isnan(growth)
                         else "flat" if abs(growth) < 0.25 * leak_scale else "GROWS")
    return columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Snakemake gives a job one by default)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training iterations after a warm-up")
    parser.add_argument("--score-frames", type=int, nargs=2, default=(48, 24), metavar=("CPU", "PAPER"),
                        help="frames of the video scored for throughput, at each preset")
    parser.add_argument("--memory-frames", type=int, nargs=2, default=(60, 600), metavar=("SHORT", "LONG"),
                        help="frames of the two videos scored for memory (at --memory-preset)")
    parser.add_argument("--memory-preset", default="cpu_budget", choices=PRESETS)
    parser.add_argument("--leak-check", action="store_true",
                        help="also score the long video keeping every converted frame, to show the growth the bench sees")
    parser.add_argument("--size", type=int, help="frame side for every preset instead of its own (e.g. 32)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--memory-child", nargs=4, metavar=("METHOD", "PRESET", "CHECKPOINT", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--leak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        method_name, preset, checkpoint, video = args.memory_child
        memory_child(method_name, preset, Path(checkpoint), Path(video), args.threads, args.leak)
        return 0

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), frames {HEIGHT}x{WIDTH}, untrained networks")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        memory_videos = {n: write_video(tmp / f"memory_{n}.h5", n, seed=i) for i, n in enumerate(args.memory_frames)}
        for method_name in args.methods:
            for preset, score_frames in zip(PRESETS, args.score_frames):
                if preset not in args.presets:
                    continue
                method = get_method(method_name, {"preset": preset} | ({"image_size": args.size} if args.size else {}))
                video = write_video(tmp / f"score_{score_frames}.h5", score_frames)
                checkpoint = write_checkpoint(method, tmp / f"{method_name}_{preset}.pt")
                row = {
                    "method": method_name,
                    "preset": preset,
                    "size": method.cfg.image_size,
                    "train clips/s": training_throughput(method, video, args.train_steps),
                    "score frames/s": scoring_throughput(method, checkpoint, video),
                }
                if preset == args.memory_preset and not args.size:
                    row |= memory_columns(method, preset, checkpoint, memory_videos, args.threads, args.leak_check)
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
