"""The synthetic demo dataset: rendered by ``pipelines.synthetic`` inside the DAG.

Its rule file renders the videos in shards, one job per ``videos_per_job`` consecutive videos of
a generator split: each video with its frame labels (``.npy``, 1 = abnormal) and ground-truth
skeletons in ``root/<split>/shard_<k>/`` (``<name>.mp4``, ``<name>.npy``,
``<name>_alphapose_tracked_person.json``). The shard folder is the rule's output, so the steps
that read a video depend on its folder (``rule_output``). The video list is a pure function of
the generator parameters, so the DAG is known before anything is rendered.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import DatasetAdapter, DatasetError, Video, check_count, load_npy
from pipelines.synthetic.params import SyntheticParams, shard_file, shard_name, video_names

#: Videos rendered by one job unless the config says otherwise (the schema's default).
DEFAULT_VIDEOS_PER_JOB = 25

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

    def __init__(self, config: dict):
        super().__init__(config)
        self._parts: dict[str, list[tuple[str, str, Path]]] = {}
        self._shard_contents: dict[Path, frozenset[str] | None] = {}

    @functools.cached_property
    def root(self) -> Path:
        return Path(self.config.get("root", "results/raw/synthetic"))

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "weak_train", "weak_test")

    @property
    def videos_per_job(self) -> int:
        return int(self.config.get("videos_per_job", DEFAULT_VIDEOS_PER_JOB))

    def parts(self, split: str) -> list[tuple[str, str, Path]]:
        """(generator split, video name, shard folder) of each video of a canonical split; computed once
        per split, since the workflow asks for thousands of these paths while it builds the DAG."""
        if split not in self._parts:
            self.check_split(split)
            names = video_names(params_from_config(self.config))
            folders: dict[tuple[str, str], Path] = {}
            rows = []
            for part in _PARTS[split]:
                for index, name in enumerate(names[part]):
                    shard = shard_name(index, self.videos_per_job)
                    if (part, shard) not in folders:
                        folders[part, shard] = self.root / part / shard
                    rows.append((part, name, folders[part, shard]))
            self._parts[split] = rows
        return self._parts[split]

    def videos(self, split: str) -> list[Video]:
        return [Video(name, shard_file(folder, name, "video")) for _, name, folder in self.parts(split)]

    def label_files(self, split: str) -> list[Path]:
        return [shard_file(folder, name, "labels") for _, name, folder in self.parts(split)]

    def pose_files(self, split: str) -> dict[str, Path]:
        """Ground-truth skeletons (AlphaPose tracked-person JSON) of each video of a split."""
        return {name: shard_file(folder, name, "poses") for _, name, folder in self.parts(split)}

    def rule_output(self, path: Path) -> Path:
        """A rendered file's shard folder, which the rendering rule outputs; any other path itself.

        A shard folder that exists without the file (deleted by hand) is refused by name: the DAG
        sees the folder, not what is inside it, so it would never render that file again."""
        path = Path(path)
        folder = path.parent
        if folder.parent.parent != self.root:
            return path
        if folder not in self._shard_contents:  # one listing per shard folder, not a stat per file
            self._shard_contents[folder] = frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else None
        present = self._shard_contents[folder]
        if present is not None and path.name not in present:
            raise DatasetError(f"{path} is missing from its rendered shard folder {folder}: "
                               f"delete {folder} to render its videos again")
        return folder

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        files = {path.stem: path for path in self.label_files(split)}
        return {name: check_count(self.name, name, load_npy(files[name]), n, files[name]) for name, n in n_frames.items()}
