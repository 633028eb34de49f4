"""UCSD Ped2 (Mahadevan et al., CVPR 2010): frame folders and one concatenated label file.

Layout under ``root``: ``training/frames/NN/*.jpg`` and ``testing/frames/NN/*.jpg``. Labels:
``frame_labels_ped2.npy`` (as shipped with LGN-Net/MNAD), the 12 test videos end to end in
folder order, 1 = abnormal.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import DatasetAdapter, Video, load_npy, sorted_children, split_concatenated

_FOLDERS = {"train": "training", "test": "testing"}
# Frames of each test video as UCSD publishes them, which frame_labels_ped2.npy runs through end to end.
TEST_LENGTHS = dict(zip((f"{i:02d}" for i in range(1, 13)), (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)))


@register
class Ped2(DatasetAdapter):
    name = "ped2"
    expects = {
        "root": "the UCSD Ped2 folder holding training/frames/ and testing/frames/",
        "labels": "frame_labels_ped2.npy (the frame labels MNAD and LGN-Net ship, test videos end to end)",
    }
    label_convention = "ped2: frame_labels_ped2.npy (LGN-Net/MNAD), test videos concatenated, 1 = abnormal"
    folder_fps = 10.0

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def videos(self, split: str) -> list[Video]:
        self.check_split(split)
        frames = self.path("root") / _FOLDERS[split] / "frames"
        return [Video(p.name, p) for p in sorted_children(frames, dirs=True)]

    def label_files(self, split: str) -> list[Path]:
        return [self.path("labels")] if split == "test" else []

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        if split == "train":
            return {name: np.zeros(n, np.uint8) for name, n in n_frames.items()}
        source = self.path("labels")
        return split_concatenated(self.name, load_npy(source), n_frames, source, TEST_LENGTHS)
