"""UBnormal (Acsintoae et al., CVPR 2022): synthetic scenes, inverted per-frame test labels.

Layout under ``root``: ``Scene*/<video>.mp4``. The ``labels`` folder holds, as STG-NF
distributes them, ``<video>_tracks.txt`` files that for test videos are really ``.npy`` arrays
(float64 per frame, **1 = normal**, inverted here to 1 = abnormal), the original
``obj_id,start,end`` track text files for abnormal training/validation videos, and the
``abnormal_{training,validation,test}_video_names.txt`` lists.

Splits: ``test`` = the videos of UBnormal's two test lists, ``abnormal_test_video_names.txt`` and
``normal_test_video_names.txt`` (from the dataset's repository, ``scripts/``; when the labels folder
lacks it, the same 53 names kept here as NORMAL_TEST_VIDEOS), each with its .npy label file;
``train`` = the normal training videos; ``weak_train`` = those plus the abnormal training videos
(video label 1); ``weak_test`` = test.
The normal training videos are those of UBnormal's own ``normal_training_video_names.txt``
(from the dataset's repository, ``scripts/``) when the labels folder holds it. STG-NF's
distribution ships only the abnormal lists; then every normal video that is not a test video and
not in ``normal_validation_video_names.txt`` (when present) is a training video, which, without
that list, includes the 26 normal validation videos. The split records which rule it used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets import register
from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetError,
    LabelError,
    Video,
    binary_labels,
    check_count,
    load_npy,
    read_text,
)

_NPY_MAGIC = b"\x93NUMPY"
_SUFFIX = "_tracks.txt"
# UBnormal's scripts/normal_test_video_names.txt: the normal test videos, which STG-NF's distribution
# labels (a .npy array each) but does not list.
NORMAL_TEST_VIDEOS = frozenset("""
    normal_scene_1_scenario1_10 normal_scene_3_scenario_1 normal_scene_3_scenario_5
    normal_scene_3_scenario_7 normal_scene_4_scenario_1 normal_scene_4_scenario_5
    normal_scene_4_scenario_8 normal_scene_5_scenario_8 normal_scene_7_scenario_3
    normal_scene_7_scenario_3_fog normal_scene_7_scenario_4_fog normal_scene_8_scenario_2_fog
    normal_scene_8_scenario_7 normal_scene_9_scenario_1 normal_scene_9_scenario_4_fog
    normal_scene_9_scenario_6 normal_scene_9_scenario_8 normal_scene_10_scenario_2
    normal_scene_10_scenario_3 normal_scene_10_scenario_8 normal_scene_10_scenario_9
    normal_scene_11_scenario_2_fog normal_scene_11_scenario_4_fog normal_scene_12_scenario_2
    normal_scene_13_scenario_1_fog normal_scene_14_scenario_2 normal_scene_14_scenario_4
    normal_scene_15_scenario_6 normal_scene_17_scenario_2 normal_scene_17_scenario_3_1
    normal_scene_17_scenario_4 normal_scene_18_scenario_1 normal_scene_18_scenario_4
    normal_scene_20_scenario_2 normal_scene_20_scenario_4 normal_scene_20_scenario_9
    normal_scene_21_scenario_2 normal_scene_21_scenario_3 normal_scene_21_scenario_5
    normal_scene_22_scenario_5 normal_scene_23_scenario_4 normal_scene_23_scenario_5
    normal_scene_23_scenario_7 normal_scene_24_scenario_1 normal_scene_24_scenario_6
    normal_scene_25_scenario_4 normal_scene_25_scenario_7 normal_scene_26_scenario_4
    normal_scene_26_scenario_8 normal_scene_27_scenario_4 normal_scene_28_scenario_2
    normal_scene_29_scenario_1 normal_scene_29_scenario_6
""".split())


@register
class UBnormal(DatasetAdapter):
    name = "ubnormal"
    expects = {
        "root": "the UBnormal folder holding Scene1/ ... Scene29/",
        "labels": (
            "the folder of <video>_tracks.txt label files and abnormal_*_video_names.txt "
            "lists (as STG-NF distributes them)"
        ),
    }

    @property
    def label_convention(self) -> str:  # type: ignore[override]
        """The test labels' convention, and which normal videos the training split holds."""
        text = "ubnormal: <video>_tracks.txt .npy arrays, 1 = normal in the file, inverted to 1 = abnormal"
        if self.config.get("labels") is None:  # nothing to read the split lists from yet
            return text
        return f"{text}; training normals: {self.normal_training_rule()}"

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "weak_train", "weak_test")

    def _all_videos(self) -> dict[str, Path]:
        root = self.path("root")
        found: dict[str, Path] = {}
        for path in sorted(root.glob("Scene*/*.mp4")):
            if path.stem in found:
                raise DatasetError(f"datasets.ubnormal.root: video {path.stem} is in two places, {found[path.stem]} "
                                   f"and {path}; keep one")
            found[path.stem] = path
        if not found:
            raise DatasetError(f"datasets.ubnormal.root: no Scene*/*.mp4 videos under {root}")
        return found

    def _names_path(self, kind: str, prefix: str = "abnormal") -> Path:
        return self.path("labels") / f"{prefix}_{kind}_video_names.txt"

    def _names_file(self, kind: str, prefix: str = "abnormal", required: bool = True) -> set[str] | None:
        path = self._names_path(kind, prefix)
        if not path.is_file():
            if not required:
                return None
            raise DatasetError(f"datasets.ubnormal.labels: {path} not found")
        return {line.strip() for line in read_text(path, DatasetError).splitlines() if line.strip()}

    def _normal_lists(self) -> tuple[str, set[str] | None, set[str], Path | None]:
        """(the rule choosing the normal training videos, the official training list or None, the
        normal validation videos to hold out, the list file read or None): see the module docstring."""
        listed = self._names_file("training", "normal", required=False)
        if listed is not None:
            return "normal_training_video_names.txt", listed, set(), self._names_path("training", "normal")
        validation = self._names_file("validation", "normal", required=False)
        if validation is not None:
            return ("normal videos outside the test and normal_validation lists", None, validation,
                    self._names_path("validation", "normal"))
        rule = "normal videos outside the test set (no normal_*_video_names.txt: validation normals included)"
        return rule, None, set(), None

    def normal_training_rule(self) -> str:
        """How the normal training videos were chosen."""
        return self._normal_lists()[0]

    def _normal_training(self, available: dict[str, Path], test: set[str]) -> set[str]:
        _, listed, validation, _ = self._normal_lists()
        if listed is not None:
            return listed
        return {n for n in available if n.startswith("normal_") and n not in test | validation}

    def _normal_test(self) -> tuple[set[str], str]:
        """The normal test videos and the list they come from: normal_test_video_names.txt when the
        labels folder holds it, else the same official list kept here."""
        listed = self._names_file("test", "normal", required=False)
        if listed is not None:
            return listed, self._names_path("test", "normal").name
        return set(NORMAL_TEST_VIDEOS), "normal_test_video_names.txt (UBnormal's, kept as NORMAL_TEST_VIDEOS)"

    def _test_names(self) -> set[str]:
        """The test videos: those of the normal and abnormal test lists, each of which must have a .npy
        label array (the training and validation abnormal videos' files are track text). Recognised by
        their label files alone, a test video whose file is missing, damaged or replaced would silently
        leave the test set (a normal one for training); a normal video's label file outside the list
        is refused too, since only test videos have one."""
        folder = self.path("labels")
        abnormal_test = self._names_file("test")
        normal_test, normal_list = self._normal_test()
        names = set()
        for path in sorted(folder.glob(f"*{_SUFFIX}")):
            video = path.name[: -len(_SUFFIX)]
            with open(path, "rb") as handle:
                is_array = handle.read(len(_NPY_MAGIC)) == _NPY_MAGIC
            listed_in = normal_list if video in normal_test else "abnormal_test_video_names.txt" if video in abnormal_test else None
            if listed_in is None and video.startswith("normal_"):
                raise LabelError(f"{path}: a label file for normal video {video}, which is not a test video of {normal_list}; "
                                 "only test videos have label files (remove it, or list the video)")
            if listed_in and not is_array:
                raise LabelError(f"{path}: not a .npy label array, as every test video's label file is (listed in "
                                 f"{listed_in}); the file is damaged or not the one STG-NF distributes")
            if is_array and not listed_in:
                raise LabelError(f"{path}: a .npy label array, but {video} is not in abnormal_test_video_names.txt")
            if listed_in:
                names.add(video)
        for listed, source in ((abnormal_test, "abnormal_test_video_names.txt"), (normal_test, normal_list)):
            missing = sorted(listed - names)
            if missing:
                raise LabelError(f"{folder}: no label file for {len(missing)} test videos of {source}: "
                                 f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (<video>{_SUFFIX})")
        return names

    def videos(self, split: str) -> list[Video]:
        self.check_split(split)
        available = self._all_videos()
        test = self._test_names()
        if split in ("test", "weak_test"):
            chosen = test
        else:
            chosen = self._normal_training(available, test)
            if split == "weak_train":
                chosen |= self._names_file("training")
        missing = sorted(chosen - set(available))
        if missing:
            where = (f" (its labels: {self._label_file(missing[0])})" if split in ("test", "weak_test")
                     else " (named in the split lists)")
            raise self.missing_videos([f"{name}.mp4" for name in missing], where)
        return [Video(name, available[name]) for name in sorted(chosen)]

    def _label_file(self, video: str) -> Path:
        return self.path("labels") / f"{video}{_SUFFIX}"

    def label_files(self, split: str) -> list[Path]:
        """The name lists that choose the split's videos (and ``weak_train``'s video labels), then the
        test videos' label arrays."""
        if split in ("test", "weak_test"):
            return self._lists_read(split) + [self._label_file(v.name) for v in self.videos(split)]
        return self._lists_read(split)

    def _lists_read(self, split: str) -> list[Path]:
        """The ``*_video_names.txt`` files a split's videos are chosen by: the test lists always (test
        videos are never training videos), the normal list the training rule uses, and for
        ``weak_train`` the abnormal training list."""
        lists = [self._names_path("test")]
        if self._names_path("test", "normal").is_file():
            lists.append(self._names_path("test", "normal"))
        normal_list = self._normal_lists()[3] if split in ("train", "weak_train") else None
        if normal_list is not None:
            lists.append(normal_list)
        if split == "weak_train":
            lists.append(self._names_path("training"))
        return lists

    def frame_labels(self, split: str, n_frames: dict[str, int]) -> dict[str, np.ndarray]:
        self.check_split(split)
        if split in ("train", "weak_train"):
            return {name: np.zeros(n, np.uint8) for name, n in n_frames.items()}
        out = {}
        for name, n in n_frames.items():
            source = self._label_file(name)
            normal = binary_labels(load_npy(source), f"{self.name}/{name}: {source} (1 marks a normal frame)")
            out[name] = check_count(self.name, name, 1 - normal, n, source)
        return out

    def video_labels(self, split: str, frame_labels: dict[str, np.ndarray]) -> dict[str, int]:
        if split == "weak_train":
            abnormal = self._names_file("training")
            return {name: int(name in abnormal) for name in frame_labels}
        return super().video_labels(split, frame_labels)
