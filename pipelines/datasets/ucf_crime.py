"""UCF-Crime (Sultani et al., CVPR 2018): untrimmed videos, official split lists, temporal annotation.

Layout under ``root``: the paths of ``Anomaly_Train.txt`` / ``Anomaly_Test.txt`` (``lists``
folder), e.g. ``Abuse/Abuse028_x264.mp4`` and ``Testing_Normal_Videos_Anomaly/...``. Labels:
``Temporal_Anomaly_Annotation.txt`` (name, class, start1, end1, start2, end2; -1 = none),
frames ``start..end`` inclusive abnormal, 0-based, as the RTFM/SSRL ground-truth recipe reads it.

Splits: ``train`` = the normal training videos (one-class), ``test`` = the 290 test videos,
``weak_train`` = all 1,610 training videos with video labels (class != Normal), ``weak_test`` = test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import DatasetAdapter, DatasetError, LabelError, Video, read_text

_LISTS = {"train": "Anomaly_Train.txt", "weak_train": "Anomaly_Train.txt", "test": "Anomaly_Test.txt", "weak_test": "Anomaly_Test.txt"}


def _is_normal(relative: str) -> bool:
    return Path(relative).name.startswith("Normal_Videos")


@register
class UCFCrime(DatasetAdapter):
    name = "ucf_crime"
    expects = {
        "root": "the UCF-Crime folder holding Abuse/, ..., Testing_Normal_Videos_Anomaly/",
        "lists": "the folder of Anomaly_Train.txt and Anomaly_Test.txt",
        "labels": "Temporal_Anomaly_Annotation.txt (the official temporal annotation)",
    }
    label_convention = "ucf_crime: Temporal_Anomaly_Annotation.txt, [start, end] inclusive 0-based, 1 = abnormal"
    padded_frame_label = "normal"  # gt-ucf.npy (make_gt_ucf.py): 1 only on [start, end]

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "weak_train", "weak_test")

    def _listed(self, split: str) -> list[str]:
        path = self.path("lists") / _LISTS[split]
        if not path.is_file():
            raise DatasetError(f"datasets.ucf_crime.lists: {path} not found")
        entries = [line.strip() for line in read_text(path, DatasetError).splitlines() if line.strip()]
        return [e for e in entries if _is_normal(e)] if split == "train" else entries

    def videos(self, split: str) -> list[Video]:
        self.check_split(split)
        root = self.path("root")
        found: dict[str, str] = {}
        for entry in self._listed(split):
            name = Path(entry).stem
            if name in found:
                raise DatasetError(f"{self.path('lists') / _LISTS[split]}: {found[name]} and {entry} are both video {name}; "
                                   "a video name may appear once")
            found[name] = entry
        return sorted((Video(name, root / entry) for name, entry in found.items()), key=lambda v: v.name)

    def label_files(self, split: str) -> list[Path]:
        """The split list (it chooses the videos and, for ``weak_train``, their labels by class) and,
        for the test splits, the temporal annotation."""
        listed = [self.path("lists") / _LISTS[split]]
        return listed + [self.path("labels")] if split in ("test", "weak_test") else listed

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        if split in ("train", "weak_train"):
            # Weak training videos have video-level labels only; their frames are not labelled.
            return {name: np.zeros(n, np.uint8) for name, n in n_frames.items()}
        source = self.path("labels")
        events = read_temporal_annotation(source)
        out = {}
        for name, n in n_frames.items():
            if name not in events:
                raise LabelError(f"{source}: no annotation line for test video {name}")
            labels = np.zeros(n, np.uint8)
            for start, end in events[name]:
                if end >= n:
                    raise LabelError(f"ucf_crime/{name}: event {start}..{end} in {source} ends past the video's {n} frames")
                # The RTFM/SSRL ground-truth recipe (make_gt_ucf.py), which their AUCs were computed against,
                # reads the numbers as 0-based inclusive frame indices; Sultani et al.'s MATLAB evaluator reads
                # them 1-based.
                labels[start : end + 1] = 1
            out[name] = labels
        return out

    def video_labels(self, split: str, frame_labels: dict[str, np.ndarray]) -> dict[str, int]:
        if split == "weak_train":
            return {Path(e).stem: int(not _is_normal(e)) for e in self._listed(split)}
        return super().video_labels(split, frame_labels)


def read_temporal_annotation(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Events per video from the official annotation text: {video: [(start, end), ...]}."""
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    events: dict[str, list[tuple[int, int]]] = {}
    for number, line in enumerate(read_text(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise LabelError(f"{path}:{number}: expected 6 fields (name class s1 e1 s2 e2), found {len(fields)}")
        name, _, *bounds = fields
        try:
            s1, e1, s2, e2 = (int(b) for b in bounds)
        except ValueError as err:
            raise LabelError(f"{path}:{number}: frame bounds must be integers ({err})") from err
        video = Path(name).stem
        if video in events:
            raise LabelError(f"{path}:{number}: a second line for video {video}")
        events[video] = [_event(path, number, s, e) for s, e in ((s1, e1), (s2, e2)) if (s, e) != (-1, -1)]
    return events


def _event(path: Path, number: int, start: int, end: int) -> tuple[int, int]:
    """One event's bounds, refused unless both are frame numbers with start <= end (-1, -1 = none)."""
    if start < 0 or end < 0:
        raise LabelError(f"{path}:{number}: event {start}..{end}: both bounds must be frame numbers, or both -1 for no event")
    if end < start:
        raise LabelError(f"{path}:{number}: event {start}..{end} ends before it starts")
    return start, end
