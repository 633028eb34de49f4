"""Dataset adapters against the real label files, and the contract every adapter keeps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets import DatasetError, LabelError, adapter_names, get_adapter
from pipelines.datasets.base import SPLITS
from pipelines.datasets.ucf_crime import read_temporal_annotation


def test_every_dataset_has_an_adapter_and_a_rule_file():
    from tests.conftest import REPO

    rule_files = {p.stem for p in (REPO / "workflow" / "rules" / "datasets").glob("*.smk")}
    assert set(adapter_names()) == rule_files
    assert {"avenue", "ped2", "shanghaitech", "synthetic", "ubnormal", "ucf_crime"} <= rule_files


@pytest.mark.parametrize("name", adapter_names())  # every registered adapter, a newly added one too
def test_adapter_contract(name):
    adapter = get_adapter(name, {})
    assert set(adapter.splits()) <= set(SPLITS) and "test" in adapter.splits()
    assert adapter.label_convention.startswith(name)
    with pytest.raises(DatasetError):
        adapter.check_split("nonsense")


def test_synthetic_videos_live_in_the_shard_folder_their_rule_outputs():
    adapter = get_adapter("synthetic", {"root": "raw", "n_train": 3, "n_test": 5, "n_train_abnormal": 1,
                                        "videos_per_job": 2})
    sources = [video.source for video in adapter.videos("test")]
    assert [str(adapter.rule_output(s)) for s in sources] == ["raw/test/shard_000"] * 2 + ["raw/test/shard_001"] * 2 + [
        "raw/test/shard_002"]
    assert adapter.label_files("test")[4] == Path("raw/test/shard_002/test_004.npy")
    assert adapter.pose_files("test")["test_004"].parent == Path("raw/test/shard_002")
    assert adapter.rule_output(Path("results/alphapose/synthetic/test/test_004/alphapose-results.json")).name == (
        "alphapose-results.json")  # made by another rule, depended on directly
    shards = sorted({(part, folder.name) for split in adapter.splits() for part, _, folder in adapter.parts(split)})
    assert shards == [("test", "shard_000"), ("test", "shard_001"), ("test", "shard_002"),
                      ("train", "shard_000"), ("train", "shard_001"), ("train_abnormal", "shard_000")]
    # Data found on disk is depended on directly.
    assert get_adapter("ped2", {"root": "x", "labels": "y"}).rule_output(Path("x/01")) == Path("x/01")


def test_a_file_deleted_from_a_rendered_shard_is_refused_by_name(tmp_path):
    adapter = get_adapter("synthetic", {"root": str(tmp_path), "n_test": 3, "videos_per_job": 2})
    sources = [video.source for video in adapter.videos("test")]
    folder = sources[0].parent
    folder.mkdir(parents=True)
    (folder / "shard.json").write_text(json.dumps({"videos": ["test_000", "test_001"]}))
    sources[0].touch()  # the shard rendered test_000 and test_001; test_001 is gone
    assert adapter.rule_output(sources[0]) == folder
    assert adapter.rule_output(sources[2]) == sources[2].parent  # its shard is not rendered yet
    with pytest.raises(DatasetError, match=r"test_001.mp4 is missing from its rendered shard folder .*shard_000: delete"):
        adapter.rule_output(sources[1])


def test_a_shard_rendered_under_other_settings_is_left_to_its_rule(tmp_path):
    """One video per job before, two now: the old shard_000 never held test_001, so the DAG goes on
    (the rendering rule reruns on its changed params) instead of calling the file deleted."""
    adapter = get_adapter("synthetic", {"root": str(tmp_path), "n_test": 3, "videos_per_job": 2})
    sources = [video.source for video in adapter.videos("test")]
    folder = sources[0].parent
    folder.mkdir(parents=True)
    (folder / "shard.json").write_text(json.dumps({"videos": ["test_000"]}))
    sources[0].touch()
    assert adapter.rule_output(sources[1]) == folder
    broken = get_adapter("synthetic", {"root": str(tmp_path), "n_test": 3, "videos_per_job": 2})
    (folder / "shard.json").write_text("{")
    with pytest.raises(DatasetError, match=r"shard.json: not a shard record .* delete .*shard_000"):
        broken.rule_output(sources[1])


def test_unknown_dataset_is_refused_with_the_known_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'mydata'; known datasets: avenue, ped2, shanghaitech"):
        get_adapter("mydata", {})


def test_a_missing_path_says_what_it_must_name(tmp_path):
    with pytest.raises(DatasetError, match=r"datasets.ped2.labels: not set; set it to frame_labels_ped2.npy"):
        get_adapter("ped2", {"root": str(tmp_path)}).frame_labels("test", {"01": 180})
    with pytest.raises(DatasetError, match=r"datasets.ucf_crime.lists: .*nowhere does not exist; set it to the folder of Anomaly_Train"):
        get_adapter("ucf_crime", {"root": str(tmp_path), "lists": str(tmp_path / "nowhere")}).videos("train")


def _ped2_counts(data):
    return {p.name: len(list(p.glob("*.jpg"))) for p in sorted((data / "ped2" / "testing" / "frames").iterdir())}


def test_ped2_real_labels(shared_data):
    adapter = get_adapter("ped2", {"root": str(shared_data / "ped2"), "labels": str(shared_data / "ped2" / "frame_labels_ped2.npy")})
    assert [v.name for v in adapter.videos("test")] == [f"{i:02d}" for i in range(1, 13)]
    assert len(adapter.videos("train")) == 16
    labels = adapter.frame_labels("test", _ped2_counts(shared_data))
    assert sum(v.size for v in labels.values()) == 2010
    assert sum(int(v.sum()) for v in labels.values()) == 1648


def test_ped2_count_mismatch_names_both_counts(shared_data):
    adapter = get_adapter("ped2", {"root": str(shared_data / "ped2"), "labels": str(shared_data / "ped2" / "frame_labels_ped2.npy")})
    counts = _ped2_counts(shared_data)
    counts["05"] -= 1
    with pytest.raises(LabelError, match=r"ped2/05: the video has 149 frames, but .*frame_labels_ped2.npy holds labels for 150"):
        adapter.frame_labels("test", counts)
    counts["06"] += 1  # the total is right again, but every label from video 05 on would shift by a frame
    with pytest.raises(LabelError, match=r"ped2/05: the video has 149 frames"):
        adapter.frame_labels("test", counts)
    with pytest.raises(LabelError, match=r"published test videos 01 \.\. 12 end to end, in that order, but the test "
                                         r"videos here are 13 .*; not published: 13"):
        adapter.frame_labels("test", _ped2_counts(shared_data) | {"13": 1})


def test_concatenated_labels_need_the_published_video_names(shared_data):
    """Folders named 1 .. 12 sort as 1, 10, 11, 12, 2: cutting the labels end to end in that order
    handed 476 of Ped2's 2,010 labels to the wrong frames, and the table showed 68.86 for 73.0."""
    adapter = get_adapter("ped2", {"root": str(shared_data / "ped2"), "labels": str(shared_data / "ped2" / "frame_labels_ped2.npy")})
    unpadded = {str(int(name)): n for name, n in _ped2_counts(shared_data).items()}
    with pytest.raises(LabelError, match=r"frame_labels_ped2.npy holds the labels of the 12 published test videos 01 \.\. 12 "
                                         r"end to end, .* not found: 01, 02, .*; not published: 1, 2, .* Name the test videos"):
        adapter.frame_labels("test", unpadded)
    some = dict(list(_ped2_counts(shared_data).items())[:3])
    with pytest.raises(LabelError, match=r"the test videos here are 3 \(01, 02, 03\); not found: 04"):
        adapter.frame_labels("test", some)


@pytest.mark.parametrize("value, found", [(np.nan, "nan"), (-1, "-1.0"), (0.3, "0.3"), (2, "2.0")])
def test_labels_other_than_0_and_1_are_refused_not_read_as_abnormal(shared_data, tmp_path, value, found):
    """NaN, an "ignore" mark, soft labels: each was counted as abnormal (NaN != 0) and moved the AUC."""
    real = np.load(shared_data / "ped2" / "frame_labels_ped2.npy").astype(np.float64)
    real[0, 700:730] = value
    np.save(tmp_path / "labels.npy", real)
    adapter = get_adapter("ped2", {"root": str(shared_data / "ped2"), "labels": str(tmp_path / "labels.npy")})
    with pytest.raises(LabelError, match=rf"ped2: .*labels.npy: frame labels must be 0 \(normal\) or 1 \(abnormal\); "
                                         rf"30 are not \({found}\), the first at position 700"):
        adapter.frame_labels("test", _ped2_counts(shared_data))
    np.save(tmp_path / "text.npy", np.array(["0", "1"]))
    masks = get_adapter("shanghaitech", {"labels": str(tmp_path)})
    (tmp_path / "text.npy").rename(tmp_path / "01_0014.npy")
    with pytest.raises(LabelError, match=r"shanghaitech/01_0014: .*01_0014.npy: holds <U1 values, not 0/1 frame labels"):
        masks.frame_labels("test", {"01_0014": 2})


def test_shanghaitech_masks_and_mismatch_names_the_video(shared_data):
    masks = shared_data / "gt" / "shanghaitech" / "test_frame_mask"
    adapter = get_adapter("shanghaitech", {"labels": str(masks)})
    counts = {p.stem: np.load(p).size for p in sorted(masks.glob("*.npy"))}
    labels = adapter.frame_labels("test", counts)
    assert len(labels) == 107 and sum(v.size for v in labels.values()) == 40791
    assert sum(int(v.sum()) for v in labels.values()) == 17326
    counts["01_0014"] += 3
    with pytest.raises(LabelError, match=r"shanghaitech/01_0014: (\d+) labels .* has \d+ frames"):
        adapter.frame_labels("test", counts)


def test_shanghaitech_weak_split_sources(shared_data, tmp_path):
    adapter = get_adapter("shanghaitech", {
        "root": str(tmp_path), "labels": str(shared_data / "gt" / "shanghaitech" / "test_frame_mask"),
        "weak_lists": str(shared_data / "lists" / "shanghaitech_weak"),
    })
    train = adapter.videos("weak_train")
    test = adapter.videos("weak_test")
    assert (len(train), len(test)) == (238, 199)
    anomalous = [v for v in train if v.source.parent.name == "frames"]
    assert len(anomalous) == 63 and all(v.source.suffix == ".avi" for v in train if v not in anomalous)
    # Training videos re-encoded as .mp4 (the one-class split accepts both) are found by the weak split too.
    normal = [v for v in train if v not in anomalous]
    (tmp_path / "training" / "videos").mkdir(parents=True)
    (tmp_path / "training" / "videos" / f"{normal[0].name}.mp4").touch()
    found = {v.name: v.source for v in adapter.videos("weak_train")}
    assert found[normal[0].name].suffix == ".mp4" and found[normal[1].name].suffix == ".avi"
    # The lists choose the videos, so they are label files too (recorded, and the labels rule's inputs).
    lists = shared_data / "lists" / "shanghaitech_weak"
    assert adapter.label_files("weak_test")[0] == lists / "SH_Test.txt" and len(adapter.label_files("weak_test")) == 45
    assert adapter.label_files("weak_train")[0] == lists / "SH_Train.txt" and len(adapter.label_files("weak_train")) == 64
    # Both encodings of one video: each split picked another file of the two.
    (tmp_path / "training" / "videos" / f"{normal[0].name}.avi").touch()
    for split in ("weak_train", "train"):
        with pytest.raises(DatasetError, match=rf"video {normal[0].name} is there twice, {normal[0].name}\.(avi|mp4) and "):
            adapter.videos(split)


def test_an_avenue_video_in_two_encodings_is_refused(tmp_path):
    (tmp_path / "testing_videos").mkdir()
    for name in ("01.avi", "01.mp4", "02.avi"):
        (tmp_path / "testing_videos" / name).touch()
    adapter = get_adapter("avenue", {"root": str(tmp_path)})
    with pytest.raises(DatasetError, match=r"testing_videos: video 01 is there twice, 01\.avi and 01\.mp4; keep one"):
        adapter.videos("test")


def test_avenue_both_conventions(shared_data):
    gt = shared_data / "gt" / "avenue"
    masks = get_adapter("avenue", {"labels": str(gt / "testing_label_mask")})
    from pipelines.datasets.avenue import read_mask_labels

    # Each .mat file takes up to a second to read: every mask is read once, and the adapter is
    # checked on a few of them (it calls the same reader for each video it is given).
    labels = {f"{i:02d}": read_mask_labels(gt / "testing_label_mask" / f"{i}_label.mat") for i in range(1, 22)}
    counts = {name: v.size for name, v in labels.items()}
    assert sum(counts.values()) == 15324
    assert sum(int(v.sum()) for v in labels.values()) == 3712
    few = {name: counts[name] for name in ("02", "08", "15")}
    through_adapter = masks.frame_labels("test", few)
    assert list(through_adapter) == list(few)
    assert all(np.array_equal(through_adapter[name], labels[name]) for name in few)
    liu = get_adapter("avenue", {"labels": str(gt / "frame_labels_avenue.npy"), "label_convention": "liu2018"})
    other = liu.frame_labels("test", counts)
    assert sum(int(v.sum()) for v in other.values()) == 3867
    assert sum(not np.array_equal(labels[n], other[n]) for n in counts) == 15
    assert masks.label_convention.startswith("avenue: masks,") and liu.label_convention.startswith("avenue: liu2018,")
    with pytest.raises(LabelError, match=r"avenue/08: the video has 37 frames, but .*holds labels for 36"):
        liu.frame_labels("test", counts | {"08": 37, "09": 1174})
    with pytest.raises(LabelError, match=r"avenue/03: 923 labels in .*testing_label_mask/3_label.mat but the video has 924"):
        masks.frame_labels("test", {"02": counts["02"], "03": 924})


def test_avenue_labels_that_do_not_fit_the_convention_say_what_to_name(shared_data, tmp_path):
    """Checked where the label files are named too (what validation asks), not only in the labels job."""
    gt = shared_data / "gt" / "avenue"
    (tmp_path / "testing_videos").mkdir()
    (tmp_path / "testing_videos" / "01.avi").touch()
    folder_as_liu = get_adapter("avenue", {"root": str(tmp_path), "labels": str(gt / "testing_label_mask"),
                                           "label_convention": "liu2018"})
    file_as_masks = get_adapter("avenue", {"root": str(tmp_path), "labels": str(gt / "frame_labels_avenue.npy")})
    for adapter, problem in (
        (folder_as_liu, r"testing_label_mask is a folder, but label_convention liu2018 reads .*frame_labels_avenue.npy"),
        (file_as_masks, r"frame_labels_avenue.npy is not a folder, but label_convention masks reads"),
    ):
        with pytest.raises(LabelError, match=problem):
            adapter.frame_labels("test", {"01": 1439})
        with pytest.raises(LabelError, match=problem):
            adapter.label_files("test")


def test_avenue_unknown_convention(shared_data):
    adapter = get_adapter("avenue", {"labels": "x", "label_convention": "mine"})
    with pytest.raises(DatasetError, match="label_convention"):
        adapter.frame_labels("test", {"01": 3})


def test_ubnormal_labels_are_inverted(shared_data, tmp_path):
    labels_dir = shared_data / "gt" / "ubnormal"
    adapter = get_adapter("ubnormal", {"root": str(tmp_path), "labels": str(labels_dir)})
    test_names = adapter._test_names()
    assert len(test_names) == 211
    name = "abnormal_scene_1_scenario_1"
    normal = np.load(labels_dir / f"{name}_tracks.txt")
    labels = adapter.frame_labels("test", {name: normal.size})[name]
    assert np.array_equal(labels, (normal == 0).astype(np.uint8)) and 0 < labels.sum() < labels.size
    with pytest.raises(DatasetError, match="Scene"):
        adapter.videos("test")


def test_ucf_crime_annotation(shared_data):
    events = read_temporal_annotation(shared_data / "gt" / "ucf_crime" / "Temporal_Anomaly_Annotation.txt")
    assert len(events) == 290 and sum(bool(e) for e in events.values()) == 140
    assert events["Abuse028_x264"] == [(165, 240)]
    adapter = get_adapter("ucf_crime", {"labels": str(shared_data / "gt" / "ucf_crime" / "Temporal_Anomaly_Annotation.txt")})
    labels = adapter.frame_labels("test", {"Abuse028_x264": 1000, "Normal_Videos_003_x264": 50})
    assert labels["Abuse028_x264"].sum() == 76 and labels["Abuse028_x264"][165] == 1 and labels["Abuse028_x264"][241] == 0
    assert labels["Normal_Videos_003_x264"].sum() == 0
    with pytest.raises(LabelError, match="Abuse028_x264.*ends past the video's 200 frames"):
        adapter.frame_labels("test", {"Abuse028_x264": 200})


def test_ucf_crime_weak_video_labels(shared_data, tmp_path):
    adapter = get_adapter("ucf_crime", {"root": str(tmp_path), "lists": str(shared_data / "gt" / "ucf_crime")})
    train = adapter.videos("weak_train")
    assert len(train) == 1610 and len(adapter.videos("train")) == 800
    labels = adapter.video_labels("weak_train", {})
    assert sum(labels.values()) == 810
    train_list = shared_data / "gt" / "ucf_crime" / "Anomaly_Train.txt"
    assert adapter.label_files("weak_train") == adapter.label_files("train") == [train_list]


def test_malformed_and_missing_label_files(tmp_path):
    bad = tmp_path / "ann.txt"
    bad.write_text("Abuse028_x264  Abuse  165  240\n")
    with pytest.raises(LabelError, match="ann.txt:1: expected 6 fields"):
        read_temporal_annotation(bad)
    adapter = get_adapter("shanghaitech", {"labels": str(tmp_path)})
    with pytest.raises(LabelError, match="01_0014.npy: label file not found"):
        adapter.frame_labels("test", {"01_0014": 10})
    (tmp_path / "01_0014.npy").write_bytes(b"not numpy")
    with pytest.raises(LabelError, match="01_0014.npy: not a readable"):
        adapter.frame_labels("test", {"01_0014": 10})


def test_ubnormal_training_normals_follow_the_official_lists_when_given(tmp_path):
    root, labels = tmp_path / "ubnormal", tmp_path / "gt"
    (root / "Scene1").mkdir(parents=True)
    labels.mkdir()
    for n in (1, 2, 3):
        (root / "Scene1" / f"normal_scene_1_scenario_{n}.mp4").touch()
    np.save(labels / "test.npy", np.ones(5))
    (labels / "test.npy").rename(labels / "normal_scene_1_scenario_3_tracks.txt")  # a test video's labels
    (labels / "abnormal_test_video_names.txt").write_text("")
    (labels / "normal_test_video_names.txt").write_text("normal_scene_1_scenario_3\n")
    adapter = get_adapter("ubnormal", {"root": str(root), "labels": str(labels)})

    def train():
        return [v.name for v in adapter.videos("train")]

    assert train() == ["normal_scene_1_scenario_1", "normal_scene_1_scenario_2"]
    assert adapter.label_convention.endswith("(no normal_*_video_names.txt: validation normals included)")
    (labels / "normal_validation_video_names.txt").write_text("normal_scene_1_scenario_2\n")
    assert train() == ["normal_scene_1_scenario_1"]
    (labels / "normal_training_video_names.txt").write_text("normal_scene_1_scenario_2\n")
    assert train() == ["normal_scene_1_scenario_2"]
    assert adapter.label_convention.endswith("training normals: normal_training_video_names.txt")
    # The lists that chose the videos are the split's label files, recorded and depended on.
    (labels / "abnormal_training_video_names.txt").write_text("")
    assert [p.name for p in adapter.label_files("weak_train")] == [
        "abnormal_test_video_names.txt", "normal_test_video_names.txt", "normal_training_video_names.txt",
        "abnormal_training_video_names.txt"]
    (labels / "normal_training_video_names.txt").unlink()
    assert [p.name for p in adapter.label_files("train")] == [
        "abnormal_test_video_names.txt", "normal_test_video_names.txt", "normal_validation_video_names.txt"]
    assert [p.name for p in adapter.label_files("test")] == [
        "abnormal_test_video_names.txt", "normal_test_video_names.txt", "normal_scene_1_scenario_3_tracks.txt"]


def test_a_ubnormal_video_in_two_scene_folders_is_refused(tmp_path):
    """Videos are found by name across the scene folders; a second copy would be picked at random."""
    root = tmp_path / "ubnormal"
    for scene in ("Scene1", "Scene2"):
        (root / scene).mkdir(parents=True)
        (root / scene / "normal_scene_1_scenario_1.mp4").touch()
    adapter = get_adapter("ubnormal", {"root": str(root), "labels": str(tmp_path)})
    with pytest.raises(DatasetError, match=r"video normal_scene_1_scenario_1 is in two places, .*Scene1.* and .*Scene2"):
        adapter.videos("train")


@pytest.mark.parametrize(("line", "problem"), [
    ("Abuse028_x264 Abuse 240 165 -1 -1", r":1: event 240\.\.165 ends before it starts"),
    ("Abuse028_x264 Abuse 165 -1 -1 -1", r":1: event 165\.\.-1: both bounds must be frame numbers, or both -1"),
    ("Abuse028_x264 Abuse -1 240 -1 -1", r":1: event -1\.\.240: both bounds"),
    ("Abuse028_x264 Abuse -5 240 -1 -1", r":1: event -5\.\.240: both bounds"),
    ("Abuse028_x264 Abuse 165 240 -1 -1\nAbuse028_x264 Abuse 300 400 -1 -1", r":2: a second line for video Abuse028_x264"),
])
def test_ucf_crime_annotation_bounds_that_would_unlabel_an_event_are_refused(tmp_path, line, problem):
    """Such a line used to drop the event: an abnormal video scored as normal, and no error."""
    annotation = tmp_path / "Temporal_Anomaly_Annotation.txt"
    annotation.write_text(line + "\n")
    with pytest.raises(LabelError, match="Temporal_Anomaly_Annotation.txt" + problem):
        read_temporal_annotation(annotation)


def test_a_ucf_crime_video_name_listed_twice_is_refused(tmp_path):
    """Two list entries with one file name would be one video in the DAG: the second silently won."""
    (tmp_path / "Anomaly_Test.txt").write_text("Abuse/Abuse001_x264.mp4\nArrest/Abuse001_x264.mp4\n")
    adapter = get_adapter("ucf_crime", {"root": str(tmp_path), "lists": str(tmp_path)})
    with pytest.raises(DatasetError, match=r"Anomaly_Test.txt: Abuse/Abuse001_x264.mp4 and Arrest/Abuse001_x264.mp4 are both video Abuse001_x264"):
        adapter.videos("test")


def _ubnormal_copy(shared_data, tmp_path):
    """The real UBnormal labels folder, copied, and a root with every labelled video (empty files)."""
    import shutil

    labels = tmp_path / "gt"
    shutil.copytree(shared_data / "gt" / "ubnormal", labels)
    for label in labels.glob("*_tracks.txt"):
        name = label.name.removesuffix("_tracks.txt")
        video = tmp_path / "root" / f"Scene{name.split('_')[2]}" / f"{name}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.touch()
    return get_adapter("ubnormal", {"root": str(tmp_path / "root"), "labels": str(labels)}), labels


@pytest.mark.parametrize("victim", ["normal_scene_10_scenario_2", "abnormal_scene_1_scenario_1"])
@pytest.mark.parametrize("damage", ["as_text", "empty"])
def test_a_damaged_ubnormal_test_label_file_is_refused_not_moved_out_of_the_test_set(shared_data, tmp_path, victim, damage):
    """Test videos were recognised by their files' .npy header: a damaged normal one went into the
    training split, an abnormal one vanished from the test split, and the DAG ran on."""
    adapter, labels = _ubnormal_copy(shared_data, tmp_path)
    assert len(adapter.videos("test")) == 211 and "normal_scene_10_scenario_2" not in {v.name for v in adapter.videos("train")}
    path = labels / f"{victim}_tracks.txt"
    if damage == "as_text":
        np.savetxt(path, np.load(path))
    else:
        path.write_bytes(b"")
    for split in ("test", "train"):
        with pytest.raises(LabelError, match=rf"{victim}_tracks.txt: not a .npy label array, as every test video's label file is"):
            adapter.videos(split)


def test_ubnormal_test_labels_must_match_the_test_list(shared_data, tmp_path):
    adapter, labels = _ubnormal_copy(shared_data, tmp_path)
    (labels / "abnormal_scene_1_scenario_1_tracks.txt").unlink()
    with pytest.raises(LabelError, match=r"gt: no label file for 1 test videos of abnormal_test_video_names.txt: abnormal_scene_1_scenario_1 "):
        adapter.videos("test")
    listed = (labels / "abnormal_test_video_names.txt").read_text().split()
    (labels / "abnormal_test_video_names.txt").write_text("\n".join(n for n in listed if n != "abnormal_scene_1_scenario_2"))
    with pytest.raises(LabelError, match=r"abnormal_scene_1_scenario_2_tracks.txt: a .npy label array, but abnormal_scene_1_scenario_2 is not in"):
        adapter.videos("test")


def test_a_shanghaitech_test_folder_not_named_like_its_mask_is_refused(shared_data, tmp_path):
    """Such a folder was labelled all normal (no mask read) and its video scored as a normal one."""
    frames = tmp_path / "testing" / "frames"
    for name in ("01_0014", "01_0015 copy"):
        (frames / name).mkdir(parents=True)
    adapter = get_adapter("shanghaitech", {"root": str(tmp_path), "labels": str(shared_data / "gt" / "shanghaitech" / "test_frame_mask")})
    with pytest.raises(DatasetError, match=r"test folder '01_0015 copy' is not named SS_VVVV like the test videos and their masks"):
        adapter.videos("test")
    with pytest.raises(LabelError, match=r"01_0015 copy.npy: label file not found"):
        adapter.frame_labels("test", {"01_0015 copy": 10})


def test_a_video_listed_twice_in_a_shanghaitech_weak_list_is_refused(tmp_path):
    (tmp_path / "SH_Train.txt").write_text("01_001\n01_0014\n01_001\n")
    adapter = get_adapter("shanghaitech", {"root": str(tmp_path), "labels": str(tmp_path), "weak_lists": str(tmp_path)})
    with pytest.raises(DatasetError, match=r"SH_Train.txt: 01_001 listed more than once"):
        adapter.videos("weak_train")


def test_pixel_masks_and_empty_label_files_are_named(shared_data, tmp_path):
    """A per-pixel mask was flattened and blamed on its length; an empty file raised EOFError with no name."""
    np.save(tmp_path / "01_0014.npy", np.zeros((265, 8, 8), np.uint8))
    adapter = get_adapter("shanghaitech", {"labels": str(tmp_path)})
    with pytest.raises(LabelError, match=r"01_0014.npy: an array of shape \(265, 8, 8\), not one label per frame"):
        adapter.frame_labels("test", {"01_0014": 265})
    np.save(tmp_path / "01_0014.npy", np.zeros((1, 265), np.uint8))  # a row of labels is fine
    assert adapter.frame_labels("test", {"01_0014": 265})["01_0014"].shape == (265,)
    (tmp_path / "01_0014.npy").write_bytes(b"")
    with pytest.raises(LabelError, match=r"01_0014.npy: not a readable .npy label array \(EOFError"):
        adapter.frame_labels("test", {"01_0014": 265})
    ped2 = get_adapter("ped2", {"root": str(shared_data / "ped2"), "labels": str(shared_data / "ped2")})
    with pytest.raises(LabelError, match=r"data/ped2: a folder, where a .npy label file belongs"):
        ped2.frame_labels("test", _ped2_counts(shared_data))
    from pipelines.datasets.avenue import read_mask_labels

    (tmp_path / "21_label.mat").write_bytes(b"")
    with pytest.raises(LabelError, match=r"21_label.mat: not a MATLAB file with a volLabel variable"):
        read_mask_labels(tmp_path / "21_label.mat")


def test_a_missing_ubnormal_test_video_names_its_label_file(shared_data, tmp_path):
    adapter, labels = _ubnormal_copy(shared_data, tmp_path)
    (tmp_path / "root" / "Scene10" / "normal_scene_10_scenario_2.mp4").unlink()
    with pytest.raises(DatasetError, match=r"1 listed videos not found, e.g. normal_scene_10_scenario_2.mp4 "
                                           r"\(its labels: .*normal_scene_10_scenario_2_tracks.txt\)"):
        adapter.videos("test")


def test_label_and_list_text_with_a_byte_order_mark_or_bytes_not_utf8(tmp_path):
    """A byte-order mark stuck to the first name (then 'no annotation line' for a video that has one);
    a byte that is not UTF-8 raised UnicodeDecodeError naming no file."""
    lists, annotation = tmp_path / "lists", tmp_path / "Temporal_Anomaly_Annotation.txt"
    lists.mkdir()
    (lists / "Anomaly_Test.txt").write_text("\ufeffAbuse/Abuse028_x264.mp4\n", encoding="utf-8")
    annotation.write_text("\ufeffAbuse028_x264.mp4  Abuse  165  240  -1  -1\n", encoding="utf-8")
    adapter = get_adapter("ucf_crime", {"root": str(tmp_path), "lists": str(lists), "labels": str(annotation)})
    assert [v.name for v in adapter.videos("test")] == ["Abuse028_x264"]
    assert adapter.frame_labels("test", {"Abuse028_x264": 300})["Abuse028_x264"].sum() == 76
    (tmp_path / "SH_Test.txt").write_text("\ufeff01_0014\n", encoding="utf-8")
    shanghaitech = get_adapter("shanghaitech", {"root": str(tmp_path), "labels": str(tmp_path), "weak_lists": str(tmp_path)})
    assert [v.source.parent.name for v in shanghaitech.videos("weak_test")] == ["frames"]  # a test video, by its id
    annotation.write_bytes(b"Abuse028_x264.mp4  Abuse  165  240  -1  -1\nArrest001_x264.mp4  Arrest \xe9  -1  -1  -1\n")
    with pytest.raises(LabelError, match=r"Temporal_Anomaly_Annotation.txt: not UTF-8 text \(byte 0xe9 at offset 70\)"):
        adapter.frame_labels("test", {"Abuse028_x264": 300})
    (lists / "Anomaly_Test.txt").write_bytes(b"Abuse/Abuse\xff028_x264.mp4\n")
    with pytest.raises(DatasetError, match=r"Anomaly_Test.txt: not UTF-8 text \(byte 0xff at offset 11\)"):
        adapter.videos("test")
    (tmp_path / "SH_Test.txt").write_bytes(b"01_0014\x80\n")
    with pytest.raises(DatasetError, match=r"SH_Test.txt: not UTF-8 text"):
        shanghaitech.videos("weak_test")


def test_ubnormal_normal_test_videos_follow_the_official_list_not_the_label_files_present(shared_data, tmp_path):
    """A normal video was a test video because its label file was there: with the file missing, it
    moved into the training split without a word."""
    from pipelines.datasets.ubnormal import NORMAL_TEST_VIDEOS

    real = {p.name.removesuffix("_tracks.txt") for p in (shared_data / "gt" / "ubnormal").glob("normal_*_tracks.txt")}
    assert NORMAL_TEST_VIDEOS == real and len(real) == 53
    adapter, labels = _ubnormal_copy(shared_data, tmp_path)
    for name in ("normal_scene_10_scenario_2", "normal_scene_29_scenario_6"):
        (labels / f"{name}_tracks.txt").unlink()
    for split in ("test", "train"):
        with pytest.raises(LabelError, match=r"gt: no label file for 2 test videos of normal_test_video_names.txt \(UBnormal's, "
                                             r"kept as NORMAL_TEST_VIDEOS\): normal_scene_10_scenario_2, normal_scene_29_scenario_6 "):
            adapter.videos(split)
    # The list the dataset ships is read when the labels folder holds it; a normal label file outside it is refused.
    listed = sorted(NORMAL_TEST_VIDEOS - {"normal_scene_10_scenario_2", "normal_scene_29_scenario_6", "normal_scene_3_scenario_1"})
    (labels / "normal_test_video_names.txt").write_text("\n".join(listed) + "\n")
    with pytest.raises(LabelError, match=r"normal_scene_3_scenario_1_tracks.txt: a label file for normal video "
                                         r"normal_scene_3_scenario_1, which is not a test video of normal_test_video_names.txt"):
        adapter.videos("test")
    (labels / "normal_scene_3_scenario_1_tracks.txt").unlink()
    assert len(adapter.videos("test")) == 208 and "normal_scene_3_scenario_1" in {v.name for v in adapter.videos("train")}
    assert labels / "normal_test_video_names.txt" in adapter.label_files("test")


def test_a_shanghaitech_test_set_with_videos_missing_is_refused_unless_a_subset_is_named(shared_data, tmp_path):
    """The one-class test split was whatever folders testing/frames held: part of the test set was
    scored, and set beside the paper's number, without a word."""
    from pipelines.datasets.shanghaitech import TEST_VIDEOS

    masks = shared_data / "gt" / "shanghaitech" / "test_frame_mask"
    assert TEST_VIDEOS == {p.stem for p in masks.glob("*.npy")} and len(TEST_VIDEOS) == 107
    frames = tmp_path / "testing" / "frames"
    for name in sorted(TEST_VIDEOS - {"01_0014", "12_0175"}) + ["13_0001"]:
        (frames / name).mkdir(parents=True)
    config = {"root": str(tmp_path), "labels": str(masks)}
    with pytest.raises(DatasetError, match=rf"datasets.shanghaitech.root: {frames} does not hold the 107 published test videos "
                                           r"\(01_0014 \.\. 12_0175\); missing 2: 01_0014, 12_0175; not published: 13_0001; "
                                           r"to score part of the test set, name it in datasets.shanghaitech.test_subset"):
        get_adapter("shanghaitech", config).videos("test")
    (frames / "13_0001").rmdir()
    subset = get_adapter("shanghaitech", config | {"test_subset": ["01_0015", "05_0017"]})
    assert [v.name for v in subset.videos("test")] == ["01_0015", "05_0017"]
    assert subset.split_label_convention("test").endswith("; one-class test split: only 2 published videos (01_0015, 05_0017)")
    assert subset.split_label_convention("weak_test") == subset.label_convention, "the weak splits are whole"
    assert [p.name for p in subset.label_files("test")] == ["01_0015.npy", "05_0017.npy"]
    with pytest.raises(DatasetError, match=r"does not hold the videos test_subset names; missing 1: 01_0014$"):
        get_adapter("shanghaitech", config | {"test_subset": ["01_0014", "01_0015"]}).videos("test")
    with pytest.raises(DatasetError, match=r"datasets.shanghaitech.test_subset: 01_014 not among the 107 published test videos"):
        get_adapter("shanghaitech", config | {"test_subset": ["01_014"]}).videos("test")


def test_an_avenue_test_set_with_videos_missing_is_refused_unless_a_subset_is_named(shared_data, tmp_path):
    gt = shared_data / "gt" / "avenue"
    (tmp_path / "testing_videos").mkdir()
    for i in (*range(1, 8), *range(9, 22)):
        (tmp_path / "testing_videos" / f"{i:02d}.avi").touch()
    masks = {"root": str(tmp_path), "labels": str(gt / "testing_label_mask")}
    for config in (masks, masks | {"labels": str(gt / "frame_labels_avenue.npy"), "label_convention": "liu2018"}):
        with pytest.raises(DatasetError, match=r"datasets.avenue.root: .*testing_videos does not hold the 21 published test "
                                               r"videos \(01 \.\. 21\); missing 1: 08; to score part"):
            get_adapter("avenue", config).videos("test")
    (tmp_path / "testing_videos" / "22.avi").touch()
    with pytest.raises(DatasetError, match=r"missing 1: 08; not published: 22;"):
        get_adapter("avenue", masks).videos("test")
    subset = get_adapter("avenue", masks | {"test_subset": ["21", "03"]})
    with pytest.raises(DatasetError, match=r"does not hold the videos test_subset names; not published: 22$"):
        subset.videos("test")
    (tmp_path / "testing_videos" / "22.avi").unlink()
    assert [v.name for v in subset.videos("test")] == ["03", "21"]
    assert [p.name for p in subset.label_files("test")] == ["3_label.mat", "21_label.mat"]
    convention = subset.split_label_convention("test")
    assert convention.startswith("avenue: masks,") and convention.endswith("only 2 published videos (03, 21)")
    # liu2018's file holds all 21 videos end to end: a subset's labels are cut from it at the published lengths.
    liu = {"labels": str(gt / "frame_labels_avenue.npy"), "label_convention": "liu2018"}
    from pipelines.datasets.avenue import TEST_LENGTHS

    every = get_adapter("avenue", liu).frame_labels("test", dict(TEST_LENGTHS))
    few = get_adapter("avenue", liu | {"test_subset": ["03", "21"]}).frame_labels("test", {"03": 923, "21": 76})
    assert list(few) == ["03", "21"] and all(np.array_equal(few[name], every[name]) for name in few)
    assert few["03"].any()
    with pytest.raises(LabelError, match=r"avenue/21: the video has 77 frames, but .*frame_labels_avenue.npy holds labels for 76"):
        get_adapter("avenue", liu | {"test_subset": ["21"]}).frame_labels("test", {"21": 77})
