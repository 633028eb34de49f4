"""The synthetic demo dataset: rendered by ``pipelines.synthetic`` inside the DAG.

Its rule file renders the videos in shards, one job per ``videos_per_job`` consecutive videos of
a generator split: each video with its frame labels (``.npy``, 1 = abnormal) and ground-truth
skeletons in ``root/<split>/shard_<k>/`` (``<name>.mp4``, ``<name>.npy``,
``<name>_alphapose_tracked_person.json``, and ``shard.json`` listing the videos). The shard folder
is the rule's output, so the steps
that read a video depend on its folder (``rule_output``). The video list is a pure function of
the generator parameters, so the DAG is known before anything is rendered.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import DatasetAdapter, DatasetError, Video, check_count, load_npy
from pipelines.synthetic.params import SHARD_RECORD, SHARD_SUFFIXES, ParamsError, SyntheticParams, shard_file, shard_name, video_names

#: Videos rendered by one job unless the config says otherwise (the schema's default).
DEFAULT_VIDEOS_PER_JOB = 25

# Canonical split -> generator splits it is made of.
_PARTS = {"train": ("train",), "test": ("test",), "weak_train": ("train", "train_abnormal"), "weak_test": ("test",)}


def params_from_config(config: dict) -> SyntheticParams:
    """Generator parameters from the dataset's config entry (keys the generator does not know are ignored)."""
    fields = SyntheticParams.__dataclass_fields__
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    try:
        return SyntheticParams(**values)
    except ParamsError as err:  # named as the config key, like every other bad setting
        key, _, problem = str(err).removeprefix("synthetic params: ").partition(" ")
        raise DatasetError(f"datasets.synthetic.{key}: {problem}") from None


@register
class Synthetic(DatasetAdapter):
    name = "synthetic"
    label_convention = "synthetic: generator frame labels, 1 = anomalous actor visible"
    generated_by_workflow = True

    def __init__(self, config: dict):
        super().__init__(config)
        self._parts: dict[str, list[tuple[str, str, Path]]] = {}
        self._shard_contents: dict[Path, tuple[frozenset[str], frozenset[str]]] = {}

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

        A file that its shard's job rendered (its record says so) but that is gone from the folder was
        deleted by hand: it is refused by name, because the DAG sees the folder, not what is inside it,
        and would never render the file again. A shard rendered under other settings (another
        ``videos_per_job`` or split size) does not list the video; its rule reruns on the changed params.
        """
        path = Path(path)
        folder = path.parent
        if folder.parent.parent != self.root:
            return path
        present, rendered = self._shard_state(folder)
        video = next((path.name[: -len(s)] for s in SHARD_SUFFIXES.values() if path.name.endswith(s)), None)
        if video in rendered and path.name not in present:
            raise DatasetError(f"{path} is missing from its rendered shard folder {folder}: "
                               f"delete {folder} to render its videos again")
        return folder

    def _shard_state(self, folder: Path) -> tuple[frozenset[str], frozenset[str]]:
        """(files present, videos its job rendered) of a shard folder; read once per folder, since the
        workflow asks about thousands of files while it builds the DAG. Empty while not rendered."""
        if folder not in self._shard_contents:
            present = frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else frozenset()
            rendered = frozenset()
            if SHARD_RECORD in present:
                try:
                    rendered = frozenset(json.loads((folder / SHARD_RECORD).read_text())["videos"])
                except (ValueError, KeyError, TypeError) as err:
                    raise DatasetError(f"{folder / SHARD_RECORD}: not a shard record ({err}); delete {folder} "
                                       "to render its videos again") from None
            self._shard_contents[folder] = (present, rendered)
        return self._shard_contents[folder]

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        files = {path.stem: path for path in self.label_files(split)}
        return {name: check_count(self.name, name, load_npy(files[name]), n, files[name]) for name, n in n_frames.items()}
