"""Benchmark (not a test) of I3D feature extraction on this machine: throughput and peak memory.

Throughput: ten-crop snippets per second of the extraction step (``pipelines.features.extract``) at full
preset geometry for both backbones, ResNet-50 I3D (preset ``rtfm``) and Inception I3D (``i3d_standard``),
at a few batch sizes; the fastest is reported. Memory: peak resident memory of the step on a short video
and on one four times longer, which must stay flat because frames are read one batch at a time.

Every measurement runs in its own process (its own peak resident memory, Linux VmHWM, which a child
does not inherit from this parent as it would ru_maxrss), after one untimed batch of the same size
(the first forward pass allocates and picks kernels), with a randomly initialised backbone (the speed
does not depend on the weights) on 240x320 noise frames (UCF-Crime's size).

    python bench/features_bench.py [--batch-sizes 1 2 4] [--snippets 4] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.features.extract import extract  # noqa: E402
from pipelines.frame_store import FrameWriter  # noqa: E402
from process_memory import peak_resident_mib  # noqa: E402

BACKBONES = {"ResNet-50 I3D (rtfm)": "rtfm", "Inception I3D (i3d_standard)": "i3d_standard"}
HEIGHT, WIDTH = 240, 320


def write_frames(path: Path, n_frames: int) -> Path:
    rng = np.random.default_rng(0)
    with FrameWriter(path, HEIGHT, WIDTH, 3, "lz4") as writer:
        for start in range(0, n_frames, 64):
            writer.append(rng.integers(0, 256, (min(64, n_frames - start), HEIGHT, WIDTH, 3), dtype=np.uint8))
        writer.set_attrs({"source": "noise"})
    return path


def child(feature_set: str, frames: Path, batch_size: int, device: str, warm_up: Path | None) -> None:
    """One extraction, after an untimed one of ``warm_up`` (one batch); prints its timing and this
    process's peak memory as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        if warm_up is not None:
            extract(warm_up, Path(folder) / "w.h5", feature_set, allow_random_weights=True,
                    batch_size=batch_size, device=device)
        attrs = extract(frames, Path(folder) / "f.h5", feature_set, allow_random_weights=True,
                        batch_size=batch_size, device=device)
    peak_mb = peak_resident_mib()
    print(json.dumps({"snippets": attrs["n_snippets"], "seconds": attrs["seconds"], "peak_mb": round(peak_mb)}))


def measure(feature_set: str, frames: Path, batch_size: int, device: str, warm_up: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--child", feature_set, str(frames), str(batch_size), "--device", device]
    command += ["--warm-up", str(warm_up)] if warm_up else []
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--snippets", type=int, default=4, help="snippets per throughput measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("FEATURE_SET", "FRAMES", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]), args.device, args.warm_up)
        return 0
    if args.snippets < max(args.batch_sizes):
        parser.error(f"--snippets {args.snippets}: give at least the largest batch size, so every batch size is timed on full batches")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{HEIGHT}x{WIDTH} frames, full preset geometry, ten crops per snippet")
    with tempfile.TemporaryDirectory() as folder:
        frames = write_frames(Path(folder) / "frames.h5", 16 * args.snippets)
        for label, feature_set in BACKBONES.items():
            rates = {}
            for batch in args.batch_sizes:
                warm_up = write_frames(Path(folder) / f"warm_up_{batch}.h5", 16 * batch)
                found = measure(feature_set, frames, batch, args.device, warm_up)
                rates[batch] = found["snippets"] / found["seconds"]
                print(f"{label}: batch {batch} snippets: {rates[batch]:.3f} snippets/s "
                      f"({10 * rates[batch]:.2f} clips/s), peak {found['peak_mb']} MB")
            best = max(rates, key=rates.get)
            print(f"{label}: fastest {rates[best]:.3f} snippets/s at batch {best}")
        short, long = 2, 8
        for n_snippets in (short, long):
            path = write_frames(Path(folder) / f"video_{n_snippets}.h5", 16 * n_snippets)
            found = measure("rtfm", path, 2, args.device)
            print(f"peak memory, rtfm, batch 2, {16 * n_snippets} frames ({n_snippets} snippets): "
                  f"{found['peak_mb']} MB ({found['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
