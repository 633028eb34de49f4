"""Clips of consecutive frames for the learned frame methods (LGN-Net, STD).

Frames come from the frames HDF5 files (``pipelines.frame_store``) and are converted on the
fly to a network's input convention (square size, RGB or BGR, value range): training draws
random clips with a seeded generator, scoring streams every clip of one video in order while
holding a bounded number of frames, whatever the video's length.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.frame_store import FrameReader
from pipelines.resize import resized

COLOURS = ("rgb", "bgr")
RESIZES = ("area", "bilinear")


@dataclass(frozen=True)
class FrameFormat:
    """A network's frame convention: ``size`` x ``size`` pixels, channel order, value range."""

    size: int
    colour: str  # "rgb" or "bgr"; grey frames are repeated to three channels
    low: float  # value of a 0 pixel
    high: float  # value of a 255 pixel
    # "area": area interpolation when both sides shrink (no aliasing), else bilinear; "bilinear":
    # always OpenCV's default bilinear (what LGN-Net's official loader does, aliasing included)
    resize: str = "area"

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"colour {self.colour!r}: expected one of {COLOURS}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize {self.resize!r}: expected one of {RESIZES}")


def convert(frames: np.ndarray, fmt: FrameFormat) -> torch.Tensor:
    """(T, H, W, C) uint8 frames -> (T, 3, size, size) float32 in [low, high].

    Resized as 8-bit images before scaling, as the official loaders do, with the format's
    ``resize``: area interpolation when both sides shrink, or always bilinear (``pipelines.resize``).
    """
    shown = resized(frames, (fmt.size, fmt.size), area=fmt.resize == "area")
    if frames.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    elif fmt.colour == "bgr":
        shown = shown[..., ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(shown)).permute(0, 3, 1, 2).float()
    return tensor * ((fmt.high - fmt.low) / 255.0) + fmt.low


def clip_starts(n_frames: int, length: int, tail: int, path: Path) -> int:
    """How many clips of ``length`` frames a video of ``n_frames`` offers when its last ``tail``
    starts are left out; a video without one is an error naming the file."""
    count = n_frames - length + 1 - tail
    if count < 1:
        raise ValueError(
            f"{path}: {n_frames} frames, fewer than the {length + tail} needed for one {length}-frame clip"
        )
    return count


class ClipSampler:
    """Random training clips from a set of frames files, uniform over every clip start.

    ``tail`` leaves the last starts of each video out (STD's loader skips the last full clip).
    """

    def __init__(self, files: Sequence[Path], length: int, fmt: FrameFormat, tail: int = 0):
        if not files:
            raise ValueError("no training videos")
        self.length = length
        self.fmt = fmt
        self._readers: list[FrameReader] = []
        try:
            for path in files:
                self._readers.append(FrameReader(path))
            counts = [clip_starts(len(r), length, tail, r.path) for r in self._readers]
        except Exception:
            self.close()
            raise
        self._ends = np.cumsum(counts)

    @property
    def n_clips(self) -> int:
        return int(self._ends[-1])

    def sample(self, rng: np.random.Generator, batch: int) -> torch.Tensor:
        """``batch`` distinct clips drawn with ``rng``, as (B, length, 3, size, size)."""
        picks = rng.choice(self.n_clips, size=batch, replace=batch > self.n_clips)
        clips = []
        for pick in picks:
            video = int(np.searchsorted(self._ends, pick, side="right"))
            start = int(pick - (self._ends[video - 1] if video else 0))
            clips.append(convert(self._readers[video].clip(start, self.length), self.fmt))
        return torch.stack(clips)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> "ClipSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def video_length(path: Path) -> int:
    with FrameReader(path) as reader:
        return len(reader)


def sliding_clips(
    path: Path, length: int, fmt: FrameFormat, batch: int, tail: int = 0, block: int = 32
) -> Iterator[tuple[int, torch.Tensor]]:
    """Every clip of one video in order, ``batch`` at a time: (first start, (b, length, 3, S, S)).

    Holds at most ``block + batch + length`` converted frames, so memory does not grow with the
    video's length.
    """
    with FrameReader(path) as reader:
        n_starts = clip_starts(len(reader), length, tail, reader.path)
        window: torch.Tensor | None = None  # converted frames from start ``first`` on
        first = 0
        for _, frames in reader.blocks(block):
            converted = convert(frames, fmt)
            window = converted if window is None else torch.cat((window, converted))
            while first < n_starts:
                count = min(batch, n_starts - first)
                if window.shape[0] < count + length - 1:
                    break
                yield first, torch.stack([window[i : i + length] for i in range(count)])
                window = window[count:]
                first += count
