"""The dataset adapter interface: raw data and label files in, canonical listings and labels out.

An adapter knows one dataset's on-disk layout and label format. It lists the videos of each
split (a video file or a frame folder each), names the label files a split depends on, and
turns them into per-video frame labels (uint8, 1 = abnormal) for given frame counts. It never
trims or pads: a count that differs is a ``LabelError`` naming the video and both counts.

Canonical splits: ``train`` (normal videos for one-class training), ``test`` (frame labels),
``weak_train`` (video-level labels) and ``weak_test`` (frame labels, weak protocol).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SPLITS = ("train", "test", "weak_train", "weak_test")


class DatasetError(ValueError):
    """Raw data that is missing or laid out differently than the adapter expects."""


class LabelError(ValueError):
    """A label file that is missing, malformed, or disagrees with the frame counts."""


@dataclass(frozen=True)
class Video:
    name: str  # unique within its split; used in file names
    source: Path  # a video file or a folder of frame images


class DatasetAdapter(ABC):
    """One dataset's layout and label format. Subclasses register with ``@register``."""

    name: ClassVar[str]
    #: Which label file and which convention (what 1 means, where it comes from) the labels follow.
    label_convention: ClassVar[str]
    #: What each configured path must name, for the message when it is missing.
    expects: ClassVar[dict[str, str]] = {}
    #: Frame rate to record for frame folders, which carry none.
    folder_fps: ClassVar[float | None] = None
    #: True when the workflow itself renders the raw data (nothing to find on disk beforehand).
    generated_by_workflow: ClassVar[bool] = False
    #: The label of the frames the weak protocol pads a video with to whole snippets: "last" repeats its
    #: last label (ShanghaiTech's gt-sh.npy), "normal" labels them 0 (UCF-Crime's gt-ucf.npy).
    padded_frame_label: ClassVar[str] = "last"

    def __init__(self, config: dict[str, Any]):
        self.config = config

    @abstractmethod
    def splits(self) -> tuple[str, ...]:
        """The canonical splits this dataset provides."""

    @abstractmethod
    def videos(self, split: str) -> list[Video]:
        """Videos of a split, sorted by name."""

    @abstractmethod
    def label_files(self, split: str) -> list[Path]:
        """The dataset's own files that the split's labels are read from."""

    @abstractmethod
    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        """Frame labels (uint8, 1 = abnormal) per video, checked against ``n_frames``."""

    def rule_output(self, path: Path) -> Path:
        """What a rule must depend on to read ``path``: the path itself for data found on disk; for
        data the workflow renders, the rule's output that holds it (a folder)."""
        return Path(path)

    def video_labels(self, split: str, frame_labels: dict[str, np.ndarray]) -> dict[str, int]:
        """Video-level labels: 1 when any frame is abnormal. Weak splits may override."""
        return {name: int(labels.any()) for name, labels in frame_labels.items()}

    # Shared helpers for subclasses -------------------------------------------------------

    def path(self, key: str) -> Path:
        """A configured path, which must exist."""
        value = self.config.get(key)
        hint = f"; set it to {self.expects[key]}" if key in self.expects else ""
        if value is None:
            raise DatasetError(f"datasets.{self.name}.{key}: not set{hint}")
        path = Path(value)
        if not path.exists():
            raise DatasetError(f"datasets.{self.name}.{key}: {path} does not exist{hint}")
        return path

    def check_split(self, split: str) -> None:
        if split not in self.splits():
            raise DatasetError(f"{self.name}: no split {split!r}; it has {', '.join(self.splits())}")

    def missing_videos(self, missing: list[str], note: str = "") -> DatasetError:
        """One error for the listed videos not found under ``root``: the key, how many, the first
        (with ``note``) and what the folder must hold. A wrong root otherwise surfaced as Snakemake's
        MissingInputException, naming no config key."""
        hint = f"; expected: {self.expects['root']}" if "root" in self.expects else ""
        return DatasetError(f"datasets.{self.name}.root: {len(missing)} listed videos not found, e.g. {missing[0]}{note}{hint}")

    def published_test_set(self, folder: Path, found: list[Video], published: Collection[str]) -> list[Video]:
        """The test videos ``found`` in ``folder``, checked to be the dataset's published test set or the
        part of it that the config key ``test_subset`` names (a smoke run's few videos). A test set
        with videos missing was scored, and set beside the paper's number, without a word."""
        published = set(published)
        span = f"{min(published)} .. {max(published)}"
        subset = self.config.get("test_subset")
        unknown = sorted(set(subset or ()) - published)
        if unknown:
            raise DatasetError(f"datasets.{self.name}.test_subset: {_some(unknown)} not among the {len(published)} "
                               f"published test videos ({span})")
        wanted = set(subset) if subset else published
        names = {video.name for video in found}
        missing, extra = sorted(wanted - names), sorted(names - published)
        if missing or extra:
            what = "the videos test_subset names" if subset else f"the {len(published)} published test videos ({span})"
            raise DatasetError(
                f"datasets.{self.name}.root: {folder} does not hold {what}"
                + (f"; missing {len(missing)}: {_some(missing)}" if missing else "")
                + (f"; not published: {_some(extra)}" if extra else "")
                + ("" if subset else f"; to score part of the test set, name it in datasets.{self.name}.test_subset")
            )
        return [video for video in found if video.name in wanted]

    def split_label_convention(self, split: str) -> str:
        """The label convention a split's labels file records: the one-class test split's with what a
        configured ``test_subset`` leaves in (the other splits, e.g. the weak ones, are whole)."""
        return self.label_convention + (self.test_subset_note() if split == "test" else "")

    def test_subset_note(self) -> str:
        """What the label convention records of a configured ``test_subset`` (empty without one)."""
        subset = self.config.get("test_subset")
        return f"; one-class test split: only {len(subset)} published videos ({', '.join(sorted(subset))})" if subset else ""


def _some(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")


def binary_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Frame labels as uint8, after checking that each is 0 (normal) or 1 (abnormal).

    Anything else is refused rather than read as abnormal: NaN, -1 (an "ignore" mark in some
    conventions), soft scores or text would each change the AUC without a word.
    """
    labels = np.asarray(labels)
    if labels.ndim > 1 and sorted(labels.shape)[-2] > 1:
        raise LabelError(f"{where}: an array of shape {labels.shape}, not one label per frame (a pixel mask?)")
    labels = labels.reshape(-1)
    if not (labels.dtype == bool or np.issubdtype(labels.dtype, np.number)):
        raise LabelError(f"{where}: holds {labels.dtype} values, not 0/1 frame labels")
    bad = np.flatnonzero(~((labels == 0) | (labels == 1)))
    if bad.size:
        found = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
        raise LabelError(
            f"{where}: frame labels must be 0 (normal) or 1 (abnormal); {bad.size} are not ({found}), "
            f"the first at position {bad[0]}"
        )
    return labels.astype(np.uint8)


def check_count(dataset: str, video: str, labels: np.ndarray, n_frames: int, source: Path | str) -> np.ndarray:
    """Labels of one video as uint8 0/1, after checking their values and their count against the
    frame count."""
    labels = binary_labels(labels, f"{dataset}/{video}: {source}")
    if labels.shape[0] != n_frames:
        raise LabelError(
            f"{dataset}/{video}: {labels.shape[0]} labels in {source} but the video has {n_frames} frames"
        )
    return labels


def split_concatenated(
    dataset: str, labels: np.ndarray, n_frames: dict[str, int], source: Path, lengths: dict[str, int]
) -> dict[str, np.ndarray]:
    """Cut labels stored for all test videos end to end into per-video arrays.

    ``lengths``: the frame count of each video the file was made for (the dataset's published
    test videos, by the names the file's order follows). The videos must be exactly those: under
    other names (``1 .. 12`` sort as ``1, 10, 11, 12, 2``) or with a video missing, the cut would
    hand each video another's labels. A file of labels end to end only knows its total, so each
    video's length is checked too: one video a frame short beside one a frame long would otherwise
    shift every label between them unnoticed.
    """
    labels = binary_labels(labels, f"{dataset}: {source}")
    names = sorted(lengths)
    if set(n_frames) != set(lengths):
        missing, extra = sorted(set(lengths) - set(n_frames)), sorted(set(n_frames) - set(lengths))
        found = ", ".join(sorted(n_frames)[:6]) + (", ..." if len(n_frames) > 6 else "")
        raise LabelError(
            f"{dataset}: {source} holds the labels of the {len(names)} published test videos {names[0]} .. {names[-1]} "
            f"end to end, in that order, but the test videos here are {len(n_frames)} ({found})"
            + (f"; not found: {', '.join(missing[:6])}" if missing else "")
            + (f"; not published: {', '.join(extra[:6])}" if extra else "")
            + f". Name the test videos (files or frame folders) {names[0]} .. {names[-1]}, all of them"
        )
    for name in names:
        if n_frames[name] != lengths[name]:
            raise LabelError(
                f"{dataset}/{name}: the video has {n_frames[name]} frames, but {source} holds labels for "
                f"{lengths[name]} frames of it (the dataset's published length)"
            )
    if labels.shape[0] != sum(lengths.values()):
        raise LabelError(
            f"{dataset}: {source} holds {labels.shape[0]} labels but the {len(names)} published test videos "
            f"have {sum(lengths.values())} frames"
        )
    out, start = {}, 0
    for name in names:
        out[name] = labels[start : start + n_frames[name]]
        start += n_frames[name]
    return out


def sorted_children(folder: Path, *, dirs: bool = False, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Sub-folders or files with the given suffixes of ``folder``, sorted by name."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    if dirs:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    by_stem: dict[str, Path] = {}
    for path in files:  # 01.avi beside 01.mp4 would be one video read from either file, unsaid
        if path.stem in by_stem:
            raise DatasetError(f"{folder}: video {path.stem} is there twice, {by_stem[path.stem].name} and "
                               f"{path.name}; keep one")
        by_stem[path.stem] = path
    return files


def read_text(path: Path, error: type[ValueError] = LabelError) -> str:
    """A label or list text file's content, read as UTF-8. A byte-order mark (some editors write one)
    is dropped, since it would stick to the first name and make it match nothing; a file that is not
    UTF-8 is an ``error`` naming it, where Python's UnicodeDecodeError names no file."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                    "save it as UTF-8") from err


def load_npy(path: Path) -> np.ndarray:
    """A label array from a .npy file (never unpickled), with a clear error when unreadable."""
    if Path(path).is_dir():
        raise LabelError(f"{path}: a folder, where a .npy label file belongs")
    if not Path(path).is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # EOFError: an empty file
        raise LabelError(f"{path}: not a readable .npy label array ({type(err).__name__}: {err})") from err
