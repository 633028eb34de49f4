"""Benchmark (not a test) of the skeleton steps on this machine's CPU.

1. Pose extraction: frames per second of the offline BlazePose backend (``pipelines.poses.blazepose``:
   tiled detection, landmarks, tracking) on the first frames of the real ``vtest.avi`` (768x576, three to
   five people), for a few tile sizes, with the people found per frame and the number of tracks.
2. STG-NF training: segments per second of the flow's training step (forward, backward, clipping,
   Adamax) at the released geometry (ShanghaiTech: 24 frames x 18 joints, K = 8) and UBnormal's 16
   frames, at batch 256, on normalised segments of walking skeletons.

    python bench/poses_bench.py [--frames 40] [--tiles 224 160] [--threads 1] [--steps 20] [--torch-threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.stg_nf import STGNF, STGNFTrainingConfig  # noqa: E402
from pipelines.poses.blazepose import (  # noqa: E402
    DETECTOR,
    LANDMARK_LITE,
    BlazePose,
    BlazePoseSettings,
    fetch_model,
    track_video,
)

SHARED = REPO.parent / "shared"
VTEST = SHARED / "data" / "videos" / "vtest.avi"
WEIGHTS = SHARED / "weights" / "blazepose"


def vtest_frames(n: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < n:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


def bench_blazepose(n_frames: int, tiles: list[int], threads: int) -> None:
    frames = vtest_frames(n_frames)
    detector, landmark = fetch_model(DETECTOR, None, WEIGHTS), fetch_model(LANDMARK_LITE, None, WEIGHTS)
    height, width = frames[0].shape[:2]
    print(f"BlazePose on {len(frames)} frames of {VTEST.name} ({width}x{height}), {threads} thread(s)")
    for tile in tiles:
        model = BlazePose(detector, landmark, BlazePoseSettings(tile_size=tile), num_threads=threads)
        started = time.perf_counter()
        tracks = track_video(frames, model, len(frames), (width, height))
        elapsed = time.perf_counter() - started
        per_frame = np.bincount(tracks.frames, minlength=len(frames))
        lengths = sorted((rows.stop - rows.start for _, rows in tracks.tracks()), reverse=True)
        print(f"  tile {tile}: {len(frames) / elapsed:.2f} frames/s; {per_frame.mean():.2f} people/frame, "
              f"{np.mean(per_frame > 0):.0%} of frames with people; {len(lengths)} tracks, longest {lengths[:4]}")


def bench_stg_nf(steps: int, batch: int) -> None:
    for seg_len in (24, 16):
        rng = np.random.default_rng(0)
        t = np.arange(seg_len)[None, :, None]
        base = rng.normal(size=(batch, 2, 1, 18))
        segments = base + 0.1 * np.sin(0.5 * t + rng.uniform(0, 6, (batch, 1, 1, 1)))
        x = torch.from_numpy(((segments - segments.mean((2, 3), keepdims=True))
                              / segments[:, 1:].std((2, 3), keepdims=True)).astype(np.float32))
        model = STGNF(seg_len=seg_len).train()
        config = STGNFTrainingConfig()
        optimizer = config.make_optimizer(model.parameters())
        for step in range(steps + 2):  # two warm-up steps (ActNorm initialisation, allocator)
            if step == 2:
                started = time.perf_counter()
            loss = model(x)[1].mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            optimizer.step()
        elapsed = time.perf_counter() - started
        print(f"STG-NF training, {seg_len} frames, batch {batch}: {steps * batch / elapsed:,.0f} segments/s "
              f"({torch.get_num_threads()} torch threads)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--tiles", type=int, nargs="+", default=[224])
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for the STG-NF step")
    parser.add_argument("--skip-blazepose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    if not args.skip_blazepose:
        if VTEST.is_file() and (WEIGHTS / DETECTOR.name).is_file():
            bench_blazepose(args.frames, args.tiles, args.threads)
        else:
            print(f"skipping BlazePose: {VTEST} or {WEIGHTS} not found")
    bench_stg_nf(args.steps, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
