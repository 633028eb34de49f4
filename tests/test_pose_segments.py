"""Tests of pose segment preparation and of the per-person -> per-frame score aggregation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from pipelines.poses.frame_scores import (
    ClipSegmentScores,
    clip_frame_scores,
    dataset_frame_scores,
    fill_non_finite,
    smooth,
)
from pipelines.poses.segments import (
    OPENPOSE18_JOINTS,
    OPENPOSE18_MIRROR,
    coco17_to_openpose18,
    continuous_window_starts,
    hflip,
    model_input,
    normalize,
    segment_track,
    with_flips,
)

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def _track(frame_ids: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0, 400, size=(len(frame_ids), 17, 3))
    keypoints[..., 2] = rng.uniform(0, 1, size=(len(frame_ids), 17))
    return keypoints, rng.uniform(0, 1, size=len(frame_ids))


# ---- joint layout ---------------------------------------------------------------------------

def test_openpose18_layout_reorders_coco_and_adds_the_neck():
    coco = np.arange(17 * 3, dtype=float).reshape(17, 3)
    openpose = coco17_to_openpose18(coco)
    assert openpose.shape == (18, 3)
    for index, name in enumerate(OPENPOSE18_JOINTS):
        if name == "neck":
            expected = (coco[COCO17.index("left_shoulder")] + coco[COCO17.index("right_shoulder")]) / 2
        else:
            expected = coco[COCO17.index(name)]
        np.testing.assert_array_equal(openpose[index], expected)


def test_mirror_table_pairs_left_and_right_joints():
    for index, name in enumerate(OPENPOSE18_JOINTS):
        partner = OPENPOSE18_JOINTS[OPENPOSE18_MIRROR[index]]
        swapped = name.replace("left", "@").replace("right", "left").replace("@", "right")
        assert partner == swapped


# ---- windows and the continuity rule --------------------------------------------------------

def test_window_candidates_follow_the_stride_and_skip_the_last_window():
    frames = np.arange(30)
    np.testing.assert_array_equal(continuous_window_starts(frames, 24, 1), np.arange(6))  # not 6
    np.testing.assert_array_equal(continuous_window_starts(np.arange(40), 24, 6), [0, 6, 12])
    assert continuous_window_starts(np.arange(24), 24, 1).size == 0


def test_a_gap_longer_than_the_tolerance_splits_the_track():
    frames = np.concatenate([np.arange(0, 40), np.arange(45, 100)])  # frames 40..44 missing
    keypoints, scores = _track(frames)
    segments = segment_track(frames, keypoints, scores, seg_len=24, stride=1)
    windows = [frames[(frames >= f0)][:24] for f0 in segments.start_frames]
    assert all(w[-1] < 40 or w[0] >= 45 for w in windows)  # nothing bridges the gap
    assert all(w[-1] - w[0] == 23 for w in windows)
    assert segments.start_frames[0] == 0 and 45 in segments.start_frames
    np.testing.assert_array_equal(segments.start_frames, np.r_[0:17, 45:76])


def test_up_to_two_missing_frames_are_tolerated():
    two_missing = np.concatenate([np.arange(0, 10), np.arange(12, 40)])
    three_missing = np.concatenate([np.arange(0, 10), np.arange(13, 40)])
    assert 0 in continuous_window_starts(two_missing, 24, 1)
    assert 0 not in continuous_window_starts(three_missing, 24, 1)


def test_released_rule_bridges_a_long_gap_with_trailing_detections():
    frames = np.concatenate([np.arange(0, 40), np.arange(45, 100)])
    released = continuous_window_starts(frames, 24, 1, released_rule=True)
    strict = continuous_window_starts(frames, 24, 1)
    # Starts 17 and 18 hold 23 and 22 detections before the gap plus 1 and 2 after it.
    np.testing.assert_array_equal(np.setdiff1d(released, strict), [17, 18])


def test_segment_track_sorts_detections_and_keeps_scores_and_layout():
    frames = np.arange(50)
    keypoints, scores = _track(frames, seed=1)
    order = np.random.default_rng(2).permutation(50)
    segments = segment_track(frames[order], keypoints[order], scores[order], seg_len=16, stride=6)
    np.testing.assert_array_equal(segments.start_frames, [0, 6, 12, 18, 24, 30])
    assert segments.poses.shape == (6, 3, 16, 18) and segments.poses.dtype == np.float32
    np.testing.assert_allclose(segments.poses[1].transpose(1, 2, 0), coco17_to_openpose18(keypoints[6:22]), rtol=1e-6)
    np.testing.assert_array_equal(segments.scores[2], scores[12:28])


def test_duplicate_frames_in_a_track_are_rejected():
    keypoints, scores = _track(np.arange(3))
    with pytest.raises(ValueError, match="same frame"):
        segment_track(np.array([0, 1, 1]), keypoints, scores, seg_len=2, stride=1)


# ---- normalisation and flips ----------------------------------------------------------------

def test_normalize_matches_a_hand_computed_segment():
    segment = np.zeros((3, 2, 2))
    segment[0] = [[0, 856], [428, 428]]  # x pixels, (T=2, V=2)
    segment[1] = [[0, 480], [0, 480]]  # y pixels
    segment[2] = [[0.1, 0.2], [0.3, 0.4]]
    result = normalize(segment)
    # x/856 = [[0,1],[.5,.5]] -> centred [[-.5,.5],[0,0]]; y/480 -> [[-.5,.5],[-.5,.5]], std 0.5.
    np.testing.assert_allclose(result[0], [[-1, 1], [0, 0]])
    np.testing.assert_allclose(result[1], [[-1, 1], [-1, 1]])
    np.testing.assert_array_equal(result[2], segment[2])


def test_normalize_statistics_and_invariances():
    keypoints, scores = _track(np.arange(30), seed=3)
    poses = segment_track(np.arange(30), keypoints, scores, seg_len=24, stride=1).poses
    result = normalize(poses)
    np.testing.assert_allclose(result[:, :2].mean(axis=(2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(result[:, 1].std(axis=(1, 2)), 1)
    # Translation and uniform scaling of the pixels leave the normalised pose unchanged.
    moved = poses.astype(np.float64)
    moved[:, :2] = moved[:, :2] * 1.7 + np.array([120.0, -40.0])[None, :, None, None]
    np.testing.assert_allclose(normalize(moved), result, atol=1e-9)
    inputs = model_input(poses)
    assert inputs.shape == (6, 2, 24, 18) and inputs.dtype == np.float32


def test_flat_segment_is_centred_without_nans():
    segment = np.ones((3, 4, 18)) * 100.0
    assert np.isfinite(normalize(segment)).all()


def test_flip_negates_x_and_exchanges_left_and_right_joints():
    rng = np.random.default_rng(4)
    segment = rng.uniform(0, 500, size=(3, 5, 18))
    flipped = hflip(segment)
    left_shoulder, right_shoulder = OPENPOSE18_JOINTS.index("left_shoulder"), OPENPOSE18_JOINTS.index("right_shoulder")
    left_ankle, right_ankle = OPENPOSE18_JOINTS.index("left_ankle"), OPENPOSE18_JOINTS.index("right_ankle")
    np.testing.assert_array_equal(flipped[0, :, left_shoulder], -segment[0, :, right_shoulder])
    np.testing.assert_array_equal(flipped[1, :, right_ankle], segment[1, :, left_ankle])
    np.testing.assert_array_equal(flipped[2, :, right_ankle], segment[2, :, left_ankle])
    for centre_joint in ("nose", "neck"):
        j = OPENPOSE18_JOINTS.index(centre_joint)
        np.testing.assert_array_equal(flipped[:, :, j], segment[:, :, j] * np.array([-1, 1, 1])[:, None])
    np.testing.assert_array_equal(hflip(flipped), segment)


def test_flip_without_swap_only_negates_x():
    segment = np.random.default_rng(5).uniform(0, 500, size=(2, 3, 5, 18))
    flipped = hflip(segment, swap_left_right=False)
    np.testing.assert_array_equal(flipped[:, 0], -segment[:, 0])
    np.testing.assert_array_equal(flipped[:, 1:], segment[:, 1:])


def test_flip_augmentation_doubles_the_set_with_mirrored_copies():
    segments = np.random.default_rng(6).uniform(0, 500, size=(4, 3, 6, 18))
    augmented = with_flips(segments)
    assert augmented.shape == (8, 3, 6, 18)
    np.testing.assert_array_equal(augmented[:4], segments)
    np.testing.assert_array_equal(augmented[4:], hflip(segments))
    # After normalisation a flip is a mirror about the segment's own mean x.
    np.testing.assert_allclose(normalize(augmented[4:])[:, 0], -normalize(segments)[:, 0][..., OPENPOSE18_MIRROR])


# ---- per-person -> per-frame scores ---------------------------------------------------------

def _hand_example() -> list[ClipSegmentScores]:
    return [
        ClipSegmentScores(
            num_frames=10,
            person_ids=np.array([1, 1, 1, 2, 2]),
            start_frames=np.array([0, 1, 2, 1, 5]),
            scores=np.array([-1.0, -2.0, -0.5, -3.0, -0.25]),
        ),
        ClipSegmentScores(num_frames=5, person_ids=np.array([]), start_frames=np.array([]), scores=np.array([])),
        ClipSegmentScores(
            num_frames=6, person_ids=np.array([7, 7]), start_frames=np.array([0, 1]), scores=np.array([-np.inf, 0.5])
        ),
    ]


def test_frame_scores_take_the_centre_frame_and_the_most_abnormal_person():
    clips = _hand_example()
    inf = np.inf
    # seg_len 4: a segment starting at f0 scores frame f0 + 2 only.
    np.testing.assert_array_equal(clip_frame_scores(clips[0], 4), [inf, inf, -1, -3, -0.5, inf, inf, -0.25, inf, inf])
    np.testing.assert_array_equal(clip_frame_scores(clips[1], 4), [inf] * 5)
    np.testing.assert_array_equal(clip_frame_scores(clips[2], 4), [inf, inf, -inf, 0.5, inf, inf])


def test_empty_frames_get_the_global_maximum_and_minus_inf_the_global_minimum():
    filled = fill_non_finite([clip_frame_scores(clip, 4) for clip in _hand_example()])
    np.testing.assert_array_equal(filled[0], [0.5, 0.5, -1, -3, -0.5, 0.5, 0.5, -0.25, 0.5, 0.5])
    np.testing.assert_array_equal(filled[1], [0.5] * 5)
    np.testing.assert_array_equal(filled[2], [0.5, 0.5, -3, 0.5, 0.5, 0.5])


def test_dataset_frame_scores_smooth_each_filled_clip():
    filled = fill_non_finite([clip_frame_scores(clip, 4) for clip in _hand_example()])
    result = dataset_frame_scores(_hand_example(), seg_len=4)
    for got, clip in zip(result, filled):
        expected = clip
        for sigma in (1, 2, 3, 4, 5, 6):
            expected = gaussian_filter1d(expected, sigma)
        np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(result[1], 0.5)  # a constant clip stays constant


def _reference_gaussian_pass(signal: np.ndarray, sigma: float) -> np.ndarray:
    """Explicit convolution: sampled Gaussian cut at 4 sigma, half-sample symmetric boundary."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(signal, radius, mode="symmetric")
    return np.convolve(padded, kernel, mode="valid")


def test_smoothing_is_six_gaussian_passes_with_reflecting_boundaries():
    signal = np.random.default_rng(7).normal(size=60)
    expected = signal
    for sigma in range(1, 7):
        expected = _reference_gaussian_pass(expected, sigma)
    np.testing.assert_allclose(smooth(signal), expected, atol=1e-12)


def test_smoothing_has_an_effective_sigma_of_sqrt_91():
    impulse = np.zeros(301)
    impulse[150] = 1.0
    response = smooth(impulse)
    offsets = np.arange(301) - 150
    assert response.sum() == pytest.approx(1.0)
    assert (response * offsets**2).sum() == pytest.approx(91.0, rel=0.01)


def test_frame_scores_reject_inconsistent_input():
    with pytest.raises(ValueError, match="clip has 5 frames"):
        clip_frame_scores(ClipSegmentScores(5, np.array([0]), np.array([3]), np.array([1.0])), seg_len=4)
    with pytest.raises(ValueError, match="same start frame"):
        clip_frame_scores(ClipSegmentScores(9, np.array([0, 0]), np.array([1, 1]), np.array([1.0, 2.0])), seg_len=4)
    with pytest.raises(ValueError, match="no finite"):
        fill_non_finite([np.full(3, np.inf)])
