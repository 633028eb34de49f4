"""ShanghaiTech Campus (Liu et al., CVPR 2018) with its one-class and weakly-supervised splits.

Layout under ``root``: ``training/videos/SS_VVV.avi`` (training set, all normal) and
``testing/frames/SS_VVVV/*.jpg`` (test set). Labels: ``test_frame_mask/SS_VVVV.npy``, one
uint8 per frame, 1 = abnormal.

Weak split (Zhong et al., CVPR 2019), when ``weak_lists`` names the folder holding
``SH_Train.txt`` and ``SH_Test.txt``: ids with a 4-digit suffix come from the test set (frames,
all anomalous, labelled by their masks); ids with a 3-digit suffix come from the training set
(videos, normal).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetError,
    Video,
    check_count,
    load_npy,
    read_text,
    sorted_children,
)

_WEAK_LISTS = {"weak_train": "SH_Train.txt", "weak_test": "SH_Test.txt"}
_TEST_ID = re.compile(r"^\d\d_\d{4}$")
_VIDEO_SUFFIXES = (".avi", ".mp4")  # the training videos, as the dataset and its re-encodings ship them


@register
class ShanghaiTech(DatasetAdapter):
    name = "shanghaitech"
    expects = {
        "root": "the ShanghaiTech Campus folder holding training/videos/ and testing/frames/",
        "labels": "the test_frame_mask folder of <video>.npy frame masks",
        "weak_lists": "the folder of SH_Train.txt and SH_Test.txt (the weakly-supervised split), or null",
    }
    label_convention = "shanghaitech: test_frame_mask/<video>.npy per video, 1 = abnormal"
    folder_fps = 24.0

    def splits(self) -> tuple[str, ...]:
        weak = ("weak_train", "weak_test") if self.config.get("weak_lists") else ()
        return ("train", "test") + weak

    def _source(self, video: str) -> Video:
        root = self.path("root")
        if _TEST_ID.match(video):
            return Video(video, root / "testing" / "frames" / video)
        candidates = [root / "training" / "videos" / f"{video}{suffix}" for suffix in _VIDEO_SUFFIXES]
        found = [p for p in candidates if p.exists()]
        if len(found) > 1:
            raise DatasetError(f"{found[0].parent}: video {video} is there twice, "
                               f"{' and '.join(p.name for p in found)}; keep one")
        return Video(video, found[0] if found else candidates[0])

    def _weak_ids(self, split: str) -> list[str]:
        path = self.path("weak_lists") / _WEAK_LISTS[split]
        if not path.is_file():
            raise DatasetError(f"datasets.shanghaitech.weak_lists: {path} not found")
        ids = [line.strip() for line in read_text(path, DatasetError).splitlines() if line.strip()]
        repeated = sorted({video for video in ids if ids.count(video) > 1})
        if repeated:
            raise DatasetError(f"{path}: {', '.join(repeated[:5])} listed more than once; a video may appear once")
        return sorted(ids)

    def videos(self, split: str) -> list[Video]:
        self.check_split(split)
        root = self.path("root")
        if split == "train":
            return [Video(p.stem, p) for p in sorted_children(root / "training" / "videos", suffixes=_VIDEO_SUFFIXES)]
        if split == "test":
            folders = sorted_children(root / "testing" / "frames", dirs=True)
            odd = [p.name for p in folders if not _TEST_ID.match(p.name)]
            if odd:
                raise DatasetError(
                    f"{root / 'testing' / 'frames'}: test folder {odd[0]!r}{f' (and {len(odd) - 1} more)' if len(odd) > 1 else ''} "
                    "is not named SS_VVVV like the test videos and their masks (e.g. 01_0014); rename or remove it"
                )
            return [Video(p.name, p) for p in folders]
        return [self._source(video) for video in self._weak_ids(split)]

    def _mask(self, video: str) -> Path:
        return self.path("labels") / f"{video}.npy"

    def label_files(self, split: str) -> list[Path]:
        """The masks of the split's test-set videos and, for a weak split, the list that chose its videos."""
        if split == "train":
            return []
        masks = [self._mask(v.name) for v in self.videos(split) if _TEST_ID.match(v.name)]
        return masks if split == "test" else [self.path("weak_lists") / _WEAK_LISTS[split]] + masks

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        out = {}
        for name, n in n_frames.items():
            if split == "train" or (split != "test" and not _TEST_ID.match(name)):  # weak: training videos
                out[name] = np.zeros(n, np.uint8)
            else:
                mask = self._mask(name)
                out[name] = check_count(self.name, name, load_npy(mask), n, mask)
        return out
