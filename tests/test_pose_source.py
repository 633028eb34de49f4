"""The phrase the pose methods' report rows carry about their skeletons, and what it changes."""
from __future__ import annotations

import pytest

from models import get_method
from pipelines.poses.source import NOT_RECORDED, POSE_SOURCE_KEY, describe_pose_source

BLAZEPOSE = {"tile_size": 224, "detection_threshold": 0.5, "cache_dir": "results/weights/blazepose"}


def test_each_backend_says_whether_its_numbers_compare_with_the_papers():
    released = describe_pose_source("precomputed", precomputed_dir="data/stg_nf_poses/ShanghaiTech")
    assert "data/stg_nf_poses/ShanghaiTech" in released and "NOT COMPARABLE" not in released
    blaze = describe_pose_source("blazepose", BLAZEPOSE)
    assert blaze.startswith("skeletons extracted here with BlazePose") and "NOT COMPARABLE to the paper: BlazePose" in blaze
    alpha = describe_pose_source("alphapose", {"detector": "yolox-x", "tracker": "pose_flow", "checkout": "/opt/AlphaPose"})
    assert "yolox-x, pose_flow" in alpha and "NOT COMPARABLE" in alpha and "STG-NF issue #12" in alpha
    truth = describe_pose_source("ground_truth")
    assert "rendered ground truth" in truth and "NOT COMPARABLE" not in truth
    random_tubes = describe_pose_source("ground_truth", random_tube_backbone=True)
    assert "NOT COMPARABLE to the paper: person tubes from a random-init I3D" in random_tubes
    with pytest.raises(ValueError, match="unknown pose backend 'openpose'"):
        describe_pose_source("openpose")


def test_the_phrase_changes_with_what_makes_the_skeletons_not_with_where_files_live():
    base = describe_pose_source("blazepose", BLAZEPOSE)
    assert describe_pose_source("blazepose", BLAZEPOSE | {"detection_threshold": 0.4}) != base
    assert describe_pose_source("blazepose", BLAZEPOSE | {"cache_dir": "/scratch/weights"}) == base


@pytest.mark.parametrize("method", ["stg_nf", "genet"])
def test_the_pose_methods_protocol_names_the_skeletons_of_its_dataset(method):
    from tests.test_pose_methods import _defaults

    params = _defaults(method) | {POSE_SOURCE_KEY: {"shanghaitech": describe_pose_source("blazepose", BLAZEPOSE)}}
    protocol = get_method(method, params).protocol("shanghaitech: test_frame_mask")
    assert protocol.label_convention.startswith("shanghaitech: test_frame_mask; windows of 24 detections")
    assert "; skeletons extracted here with BlazePose" in protocol.label_convention
    unrecorded = get_method(method, _defaults(method)).protocol("ubnormal: npy").label_convention
    assert unrecorded.endswith(NOT_RECORDED) and "windows of 16 detections" in unrecorded  # UBnormal's per_dataset length
    assert POSE_SOURCE_KEY in get_method(method, params).protocol_params
