"""ShanghaiTech Campus (Liu et al., CVPR 2018) with its one-class and weakly-supervised splits.

Layout under ``root``: ``training/videos/SS_VVV.avi`` (training set, all normal) and
``testing/frames/SS_VVVV/*.jpg`` (test set: the 107 published videos, or the part of them that
``test_subset`` names). Labels: ``test_frame_mask/SS_VVVV.npy``, one uint8 per frame, 1 = abnormal.

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
# The published test videos: those of the dataset's test_frame_mask folder.
TEST_VIDEOS = frozenset("""
    01_0014 01_0015 01_0016 01_0025 01_0026 01_0027 01_0028 01_0029 01_0030 01_0051 01_0052 01_0053
    01_0054 01_0055 01_0056 01_0063 01_0064 01_0073 01_0076 01_0129 01_0130 01_0131 01_0132 01_0133
    01_0134 01_0135 01_0136 01_0138 01_0139 01_0140 01_0141 01_0162 01_0163 01_0177 02_0128 02_0161
    02_0164 03_0031 03_0032 03_0033 03_0035 03_0036 03_0039 03_0041 03_0059 03_0060 03_0061 04_0001
    04_0003 04_0004 04_0010 04_0011 04_0012 04_0013 04_0046 04_0050 05_0017 05_0018 05_0019 05_0020
    05_0021 05_0022 05_0023 05_0024 06_0144 06_0145 06_0147 06_0150 06_0153 06_0155 07_0005 07_0006
    07_0007 07_0008 07_0009 07_0047 07_0048 07_0049 08_0044 08_0058 08_0077 08_0078 08_0079 08_0080
    08_0156 08_0157 08_0158 08_0159 08_0178 08_0179 09_0057 10_0037 10_0038 10_0042 10_0074 10_0075
    11_0176 12_0142 12_0143 12_0148 12_0149 12_0151 12_0152 12_0154 12_0173 12_0174 12_0175
""".split())


@register
class ShanghaiTech(DatasetAdapter):
    name = "shanghaitech"
    expects = {
        "root": "the ShanghaiTech Campus folder holding training/videos/ and testing/frames/",
        "labels": "the test_frame_mask folder of <video>.npy frame masks",
        "weak_lists": "the folder of SH_Train.txt and SH_Test.txt (the weakly-supervised split), or null",
    }
    folder_fps = 24.0

    @property
    def label_convention(self) -> str:  # type: ignore[override]
        """The labels' convention, and the test subset when one is configured."""
        return "shanghaitech: test_frame_mask/<video>.npy per video, 1 = abnormal"

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
            return self.published_test_set(root / "testing" / "frames", [Video(p.name, p) for p in folders], TEST_VIDEOS)
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
