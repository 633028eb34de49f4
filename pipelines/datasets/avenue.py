"""CUHK Avenue (Lu et al., ICCV 2013): videos and two label conventions.

Layout under ``root``: ``training_videos/NN.avi`` and ``testing_videos/NN.avi`` (or frame
folders ``training/frames/NN`` and ``testing/frames/NN``); the test videos are the 21 published
ones, 01 .. 21, or the part of them that ``test_subset`` names. Labels, chosen by
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
# Frames of each test video as the dataset publishes them (the masks' lengths), which
# frame_labels_avenue.npy runs through end to end.
TEST_LENGTHS = dict(zip(
    (f"{i:02d}" for i in range(1, 22)),
    (1439, 1211, 923, 947, 1007, 1283, 605, 36, 1175, 841, 472, 1271, 549, 507, 1001, 740, 426, 294, 248, 273, 76),
))


@register
class Avenue(DatasetAdapter):
    name = "avenue"
    expects = {
        "root": "the CUHK Avenue folder holding training_videos/ and testing_videos/",
        "labels": (
            "the testing_label_mask folder of <N>_label.mat files (label_convention masks) or "
            "frame_labels_avenue.npy (label_convention liu2018)"
        ),
    }
    folder_fps = 25.0
    _CONVENTION_TEXT = {
        "masks": "avenue: masks, testing_label_mask/<N>_label.mat volLabel, a frame with any mask pixel set = abnormal",
        "liu2018": "avenue: liu2018, frame_labels_avenue.npy (Liu et al. 2018; MNAD, LGN-Net), test videos "
                   "concatenated, 1 = abnormal",
    }

    @property
    def label_convention(self) -> str:  # type: ignore[override]
        """The convention the labels were read with, as the reports record it."""
        return self._CONVENTION_TEXT[self.convention]

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
        folder = root / _VIDEO_FOLDERS[split]
        if folder.is_dir():
            found = [Video(p.stem, p) for p in sorted_children(folder, suffixes=(".avi", ".mp4"))]
        else:
            folder = root / _FRAME_FOLDERS[split]
            found = [Video(p.name, p) for p in sorted_children(folder, dirs=True)]
        return self.published_test_set(folder, found, TEST_LENGTHS) if split == "test" else found

    def _labels(self) -> Path:
        """The configured labels path, after checking it is the kind the convention reads (a file for
        liu2018, a folder for masks): otherwise validation passed and the labels job failed, or a mask
        was looked for inside the .npy file."""
        labels = self.path("labels")
        if self.convention == "liu2018" and labels.is_dir():
            raise LabelError(
                f"datasets.avenue.labels: {labels} is a folder, but label_convention liu2018 reads the file "
                "frame_labels_avenue.npy (Liu et al. 2018); name that file, or set label_convention: masks"
            )
        if self.convention == "masks" and not labels.is_dir():
            raise LabelError(
                f"datasets.avenue.labels: {labels} is not a folder, but label_convention masks reads the dataset's "
                "testing_label_mask/<N>_label.mat files; name that folder, or set label_convention: liu2018"
            )
        return labels

    def label_files(self, split: str) -> list[Path]:
        if split != "test":
            return []
        labels = self._labels()
        if self.convention == "liu2018":
            return [labels]
        return [self._mask_file(labels, v.name) for v in self.videos("test")]

    @staticmethod
    def _mask_file(folder: Path, video: str) -> Path:
        """The mask file of a test video: Avenue names both by number (video 01, 1_label.mat)."""
        if not video.isdigit():
            raise DatasetError(
                f"datasets.avenue: test video {video!r} is not named by its number, as Avenue's videos are "
                f"(01.avi .. 21.avi, or frame folders 01 .. 21); its mask file {folder}/<N>_label.mat "
                "cannot be found; rename the videos or folders"
            )
        return folder / f"{int(video)}_label.mat"

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        if split == "train":
            return {name: np.zeros(n, np.uint8) for name, n in n_frames.items()}
        labels = self._labels()
        if self.convention == "liu2018":
            # The file holds all 21 videos end to end: a test subset is cut from it at the published lengths.
            counts = TEST_LENGTHS | n_frames if self.config.get("test_subset") else n_frames
            cut = split_concatenated(self.name, load_npy(labels), counts, labels, TEST_LENGTHS)
            return {name: cut[name] for name in n_frames}
        out = {}
        for name, n in n_frames.items():
            mask_file = self._mask_file(labels, name)
            out[name] = check_count(self.name, name, read_mask_labels(mask_file), n, mask_file)
        return out


def read_mask_labels(path: Path) -> np.ndarray:
    """Frame labels from an Avenue ``volLabel`` .mat file: 1 where a frame's mask has any pixel set."""
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        masks = scipy.io.loadmat(path, variable_names=["volLabel"])["volLabel"]
    except (ValueError, OSError, KeyError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise LabelError(f"{path}: not a MATLAB file with a volLabel variable ({err})") from err
    return np.array([np.asarray(mask).any() for mask in masks.reshape(-1)], dtype=np.uint8)
