"""CUHK Avenue (Lu et al., ICCV 2013): videos and two label conventions.

Layout under ``root``: ``training_videos/NN.avi`` and ``testing_videos/NN.avi`` (or frame
folders ``training/frames/NN`` and ``testing/frames/NN``). Labels, chosen by
``label_convention``:

- ``masks``: the dataset's own ``testing_label_mask/N_label.mat`` (MATLAB v5, variable
  ``volLabel``: one pixel mask per frame; a frame is abnormal if any pixel is set).
- ``liu2018``: ``frame_labels_avenue.npy``, the test videos end to end, the convention of
  Liu et al. (CVPR 2018) used by MNAD and LGN-Net. It differs from the masks in 15 of 21 videos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from pipelines.datasets import register
from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetError,
    LabelError,
    Video,
    check_count,
    load_npy,
    sorted_children,
    split_concatenated,
)

_VIDEO_FOLDERS = {"train": "training_videos", "test": "testing_videos"}
_FRAME_FOLDERS = {"train": "training/frames", "test": "testing/frames"}
CONVENTIONS = ("masks", "liu2018")


@register
class Avenue(DatasetAdapter):
    name = "avenue"
    label_convention = "avenue: see the convention key (masks: any mask pixel set = abnormal; liu2018: npy)"
    folder_fps = 25.0

    @property
    def convention(self) -> str:
        value = self.config.get("label_convention", "masks")
        if value not in CONVENTIONS:
            raise DatasetError(f"datasets.avenue.label_convention: {value!r}, expected one of {CONVENTIONS}")
        return value

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def videos(self, split: str) -> list[Video]:
        self.check_split(split)
        root = self.path("root")
        videos = root / _VIDEO_FOLDERS[split]
        if videos.is_dir():
            return [Video(p.stem, p) for p in sorted_children(videos, suffixes=(".avi", ".mp4"))]
        return [Video(p.name, p) for p in sorted_children(root / _FRAME_FOLDERS[split], dirs=True)]

    def label_files(self, split: str) -> list[Path]:
        if split != "test":
            return []
        labels = self.path("labels")
        if self.convention == "liu2018":
            return [labels]
        return [self._mask_file(labels, v.name) for v in self.videos("test")]

    @staticmethod
    def _mask_file(folder: Path, video: str) -> Path:
        return folder / f"{int(video)}_label.mat"

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        if split == "train":
            return {name: np.zeros(n, np.uint8) for name, n in n_frames.items()}
        convention = self.convention
        labels = self.path("labels")
        if convention == "liu2018":
            return split_concatenated(self.name, load_npy(labels), n_frames, labels)
        return {
            name: check_count(self.name, name, read_mask_labels(self._mask_file(labels, name)), n, labels)
            for name, n in n_frames.items()
        }


def read_mask_labels(path: Path) -> np.ndarray:
    """Frame labels from an Avenue ``volLabel`` .mat file: 1 where a frame's mask has any pixel set."""
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        masks = scipy.io.loadmat(path, variable_names=["volLabel"])["volLabel"]
    except (ValueError, OSError, KeyError, NotImplementedError) as err:
        raise LabelError(f"{path}: not a MATLAB file with a volLabel variable ({err})") from err
    return np.array([np.asarray(mask).any() for mask in masks.reshape(-1)], dtype=np.uint8)
