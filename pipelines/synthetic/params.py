"""Parameters, video names and seeds of the synthetic surveillance dataset.

Everything here is pure and instant, because the pipeline lists the videos before rendering any.
Every video draws its randomness from a seed derived from (seed, split, index) alone, so a video never
depends on which other videos are rendered, or in which order.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

# Bump whenever a change alters any rendered byte, label or pose: it is recorded in every manifest.
GENERATOR_VERSION = "vadbench-synthetic/2"  # 2: visibility counts what is drawn around the points

ANOMALY_TYPES = ("running", "vehicle", "cyclist", "against_flow", "loitering")
SPLITS = ("train", "test", "train_abnormal")
_NAME_PREFIX = {"train": "train", "test": "test", "train_abnormal": "trainabn"}
_SCENE_STREAM = 0  # seed stream of the static scene; videos use 1 + the split's position in SPLITS


class ParamsError(ValueError):
    """A synthetic-dataset parameter that is missing, unknown or out of range."""


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines the generated dataset; defaults give a demo that renders in seconds."""

    seed: int = 0
    n_train: int = 8
    n_test: int = 8
    n_train_abnormal: int = 4
    n_frames: int = 120
    height: int = 120
    width: int = 160
    fps: int = 25
    anomaly_types: tuple[str, ...] = ANOMALY_TYPES
    walkers: tuple[int, int] = (2, 5)

    def __post_init__(self) -> None:
        # Config files and JSON give lists; the frozen dataclass must stay hashable and comparable.
        object.__setattr__(self, "anomaly_types", tuple(self.anomaly_types))
        object.__setattr__(self, "walkers", tuple(self.walkers))
        for name in ("seed", "n_train", "n_test", "n_train_abnormal"):
            _require(name, getattr(self, name), isinstance(getattr(self, name), int) and getattr(self, name) >= 0,
                     "an integer >= 0")
        _require("n_frames", self.n_frames, isinstance(self.n_frames, int) and self.n_frames >= 16, "an integer >= 16")
        for name in ("height", "width"):
            value = getattr(self, name)
            # yuv420p halves both chroma dimensions, so libx264 needs even sizes.
            _require(name, value, isinstance(value, int) and value >= 32 and value % 2 == 0, "an even integer >= 32")
        _require("fps", self.fps, isinstance(self.fps, int) and 1 <= self.fps <= 120, "an integer in 1..120")
        _require("anomaly_types", self.anomaly_types,
                 len(self.anomaly_types) > 0 and all(t in ANOMALY_TYPES for t in self.anomaly_types),
                 f"a non-empty list drawn from {list(ANOMALY_TYPES)}")
        _require("walkers", self.walkers,
                 len(self.walkers) == 2 and all(isinstance(w, int) for w in self.walkers)
                 and 0 <= self.walkers[0] <= self.walkers[1] <= 30,
                 "[min, max] with 0 <= min <= max <= 30")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SyntheticParams:
        """Params from a config mapping; unknown keys are an error rather than silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamsError(f"synthetic params: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def count(self, split: str) -> int:
        """Number of videos in ``split``."""
        check_split(split)
        return {"train": self.n_train, "test": self.n_test, "train_abnormal": self.n_train_abnormal}[split]


def _require(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ParamsError(f"synthetic params: {name} must be {expected}, found {value!r}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ParamsError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def video_names(params: SyntheticParams) -> dict[str, list[str]]:
    """Names of every video per split, e.g. ``{"train": ["train_000", ...], ...}``; renders nothing."""
    names = {}
    for split in SPLITS:
        count = params.count(split)
        digits = max(3, len(str(count - 1)))
        names[split] = [f"{_NAME_PREFIX[split]}_{index:0{digits}d}" for index in range(count)]
    return names


def shard_name(index: int, videos_per_job: int) -> str:
    """The shard (one rendering job's folder) holding the video at ``index`` of its split."""
    if videos_per_job < 1:
        raise ParamsError(f"videos_per_job must be at least 1, got {videos_per_job}")
    return f"shard_{index // videos_per_job:03d}"


#: File name endings of a video's three files in its shard folder.
SHARD_SUFFIXES = {"video": ".mp4", "labels": ".npy", "poses": "_alphapose_tracked_person.json"}


#: The file in a shard folder that lists the videos its job rendered (JSON: ``{"videos": [...]}``).
SHARD_RECORD = "shard.json"


def shard_file(folder: Path, name: str, kind: str) -> Path:
    """The ``kind`` file (video, labels or poses) of video ``name`` inside its shard folder."""
    return Path(folder) / f"{name}{SHARD_SUFFIXES[kind]}"


def shard_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """(video, frame labels, poses) of video ``name`` inside its shard folder."""
    return tuple(shard_file(folder, name, kind) for kind in SHARD_SUFFIXES)


def shard_videos(params: SyntheticParams, split: str, shard: str, videos_per_job: int) -> list[str]:
    """Names of the videos of ``split`` that shard ``shard`` renders; an error names the valid shards."""
    check_split(split)
    names = video_names(params)[split]
    chosen = [name for index, name in enumerate(names) if shard_name(index, videos_per_job) == shard]
    if not chosen:
        last = shard_name(len(names) - 1, videos_per_job) if names else "none"
        raise ParamsError(f"split {split!r} has no shard {shard!r} at {videos_per_job} videos per job "
                          f"(shards: shard_000 .. {last})")
    return chosen


def video_index(params: SyntheticParams, split: str, name: str) -> int:
    """Position of video ``name`` in ``split``; an error names the split's valid range."""
    check_split(split)
    names = video_names(params)[split]
    try:
        return names.index(name)
    except ValueError:
        listed = f"{names[0]} .. {names[-1]}" if names else "none"
        raise ParamsError(f"video {name!r} is not in split {split!r} (videos: {listed})") from None


def scene_seed(params: SyntheticParams) -> np.random.SeedSequence:
    """Seed of the static scene (camera, walkways, background) shared by all videos of one dataset."""
    return np.random.SeedSequence([params.seed, _SCENE_STREAM])


def video_seed(params: SyntheticParams, split: str, index: int) -> np.random.SeedSequence:
    """Seed of one video, a function of (seed, split, index) only."""
    check_split(split)
    return np.random.SeedSequence([params.seed, 1 + SPLITS.index(split), index])
