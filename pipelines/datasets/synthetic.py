"""The synthetic demo dataset: rendered by ``pipelines.synthetic`` inside the DAG.

Its rule file renders each video with its frame labels (``.npy``, 1 = abnormal) and
ground-truth skeletons under ``root`` (``videos/<split>/<name>.mp4``,
``labels/<split>/<name>.npy``, ``poses/...``); the video list is a pure function of the
generator parameters, so the DAG is known before anything is rendered.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import DatasetAdapter, Video, check_count, load_npy
from pipelines.synthetic.generate import SyntheticParams, video_names

# Canonical split -> generator splits it is made of.
_PARTS = {"train": ("train",), "test": ("test",), "weak_train": ("train", "train_abnormal"), "weak_test": ("test",)}


def params_from_config(config: dict) -> SyntheticParams:
    """Generator parameters from the dataset's config entry (keys the generator does not know are ignored)."""
    fields = SyntheticParams.__dataclass_fields__
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return SyntheticParams(**values)


@register
class Synthetic(DatasetAdapter):
    name = "synthetic"
    label_convention = "synthetic: generator frame labels, 1 = anomalous actor visible"
    generated_by_workflow = True

    @property
    def root(self) -> Path:
        return Path(self.config.get("root", "results/raw/synthetic"))

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "weak_train", "weak_test")

    def parts(self, split: str) -> list[tuple[str, str]]:
        """(generator split, video name) pairs of a canonical split."""
        self.check_split(split)
        names = video_names(params_from_config(self.config))
        return [(part, name) for part in _PARTS[split] for name in names[part]]

    def videos(self, split: str) -> list[Video]:
        return [Video(name, self.root / "videos" / part / f"{name}.mp4") for part, name in self.parts(split)]

    def label_files(self, split: str) -> list[Path]:
        return [self.root / "labels" / part / f"{name}.npy" for part, name in self.parts(split)]

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        files = {path.stem: path for path in self.label_files(split)}
        return {name: check_count(self.name, name, load_npy(files[name]), n, files[name]) for name, n in n_frames.items()}
