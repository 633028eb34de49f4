"""Shared fixtures: where the real data lives, and small real videos made with ffmpeg."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.ffmpeg_tools import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that need it are skipped, saying why, where it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}: place the shared data folder beside the repository")
    return DATA


def encode_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode (N, H, W, 3) uint8 frames as an H.264 video with ffmpeg."""
    n, height, width, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
         "-r", str(fps), "-i", "pipe:", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10", str(path)],
        input=frames.tobytes(), check=True,
    )
    return path


def moving_square_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Frames of a bright square drifting over a noisy background: real content for a codec."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(40, 60, size=(n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        x = (2 * t) % (width - 8)
        frames[t, 10:18, x : x + 8] = 220
    return frames


def snakemake_env() -> dict:
    """Environment for a Snakemake subprocess whose jobs call this interpreter's `python`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def pytest_collection_modifyitems(config, items):
    """Run the Slurm tests last. Where they start the local cluster they stop it again at the end,
    and every later `snakemake` start on a machine with the Slurm client but no controller waits
    about 10 s (the Slurm plugin asks `scontrol show config` when it loads, with a 10 s timeout)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_slurm.py")
