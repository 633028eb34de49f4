"""Tests of the weakly-supervised data protocol: 32-segment division, frame ground truth, sampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.weak_protocol import (
    arnet_fit_length,
    arnet_item_videos,
    balanced_batch_indices,
    contiguous_crop_start,
    divide_32,
    divide_into_segments,
    expand_scores_to_frames,
    frame_gt_from_snippets,
    is_shanghaitech_anomalous,
    jittered_uniform_indices,
    shanghaitech_weak_order,
    snippet_count,
    training_segments,
    weak_test_ground_truth,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
WEAK_LISTS = SHARED / "data" / "lists" / "shanghaitech_weak"
MASKS = SHARED / "data" / "gt" / "shanghaitech" / "test_frame_mask"


def ramp(n_snippets: int, dim: int = 3) -> np.ndarray:
    """Snippet t has value t in every channel, so segment values reveal which snippets were averaged."""
    return np.repeat(np.arange(n_snippets, dtype=np.float32)[:, None], dim, axis=1)


# --- 32-segment division -------------------------------------------------------------------------

def test_divide_short_video_repeats_snippets():
    # T = 5: segment i takes snippet floor(5i/32): 0 for i<=6, 1 for 7..12, 2 for 13..19, 3 for 20..25, 4 for 26..31.
    expected = [0] * 7 + [1] * 6 + [2] * 7 + [3] * 6 + [4] * 6
    out = divide_32(ramp(5))
    assert out.shape == (32, 3)
    np.testing.assert_array_equal(out[:, 0], expected)


def test_divide_exact_length_is_identity():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(divide_32(x), x)


def test_divide_33_averages_the_last_two():
    out = divide_32(ramp(33))[:, 0]
    np.testing.assert_array_equal(out[:31], np.arange(31))
    assert out[31] == pytest.approx((31 + 32) / 2)


def test_divide_100_uses_truncated_linspace_bounds():
    # Bounds floor(100i/32) = floor(25i/8): 0,3,6,9,12,15,18,21,25 per block of 8 segments, +25 per block.
    block = [0, 3, 6, 9, 12, 15, 18, 21]
    bounds = [b + 25 * j for j in range(4) for b in block] + [100]
    expected = [np.mean(np.arange(bounds[i], bounds[i + 1])) for i in range(32)]
    out = divide_32(ramp(100))[:, 0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert out[7] == pytest.approx((21 + 22 + 23 + 24) / 4)


@pytest.mark.parametrize("n_snippets", [1, 5, 31, 32, 33, 47, 100, 999, 4321])
def test_divide_bounds_match_integer_linspace(n_snippets):
    bounds = np.linspace(0, n_snippets, 33).astype(int)
    np.testing.assert_array_equal(bounds, (np.arange(33) * n_snippets) // 32)
    out = divide_32(ramp(n_snippets, dim=1))[:, 0]
    for i in range(32):
        lo, hi = bounds[i], bounds[i + 1]
        want = np.arange(lo, hi).mean() if hi > lo else lo
        assert out[i] == pytest.approx(want)


def test_divide_is_per_crop_and_keeps_trailing_axes():
    x = np.random.default_rng(1).normal(size=(45, 10, 8)).astype(np.float32)
    out = divide_32(x)
    assert out.shape == (32, 10, 8) and out.dtype == np.float32
    for crop in range(10):
        np.testing.assert_allclose(out[:, crop], divide_32(x[:, crop]), rtol=1e-6)


def test_divide_rejects_empty():
    with pytest.raises(ValueError):
        divide_into_segments(np.zeros((0, 4)))


def test_training_segments_stacks_crops_then_patches_crop_first():
    rng = np.random.default_rng(2)
    clip = rng.normal(size=(40, 10, 8)).astype(np.float32)
    patches = rng.normal(size=(40, 6, 8)).astype(np.float32)
    item = training_segments(clip, patches)
    assert item.shape == (16, 32, 8)
    np.testing.assert_allclose(item[3], divide_32(clip[:, 3]), rtol=1e-6)
    np.testing.assert_allclose(item[10 + 5], divide_32(patches[:, 5]), rtol=1e-6)
    with pytest.raises(ValueError, match="snippets"):
        training_segments(clip, patches[:39])


# --- frame ground truth --------------------------------------------------------------------------

def test_snippet_count_rules():
    assert [snippet_count(n, "pad_last") for n in (1, 16, 17, 32, 33)] == [1, 1, 2, 2, 3]
    assert [snippet_count(n, "truncate") for n in (15, 16, 17, 32, 33)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        snippet_count(10, "round")


def test_pad_last_repeats_final_label():
    labels = np.zeros(33, dtype=np.uint8)
    labels[30:] = 1
    gt = frame_gt_from_snippets(labels, 3, "pad_last")
    assert gt.dtype == np.float64 and gt.shape == (48,)
    np.testing.assert_array_equal(gt[:33], labels)
    assert gt[33:].sum() == 15 and gt.sum() == 18


def test_pad_last_keeps_a_zero_tail_zero_and_exact_lengths_untouched():
    labels = np.r_[np.ones(10), np.zeros(23)]
    assert frame_gt_from_snippets(labels, 3, "pad_last").sum() == 10
    exact = np.r_[np.zeros(16), np.ones(16)]
    np.testing.assert_array_equal(frame_gt_from_snippets(exact, 2, "pad_last"), exact)


def test_truncate_cuts_partial_window():
    labels = np.r_[np.zeros(30), np.ones(5)]
    gt = frame_gt_from_snippets(labels, 2, "truncate")
    assert gt.shape == (32,)
    np.testing.assert_array_equal(gt, labels[:32])


@pytest.mark.parametrize("rule,n_snippets", [("pad_last", 2), ("truncate", 3)])
def test_snippet_count_mismatch_is_an_error(rule, n_snippets):
    with pytest.raises(ValueError, match="snippets"):
        frame_gt_from_snippets(np.zeros(33), n_snippets, rule)


@pytest.mark.parametrize("n_snippets", [5, 32, 33, 100])
def test_expand_scores_lines_up_with_ground_truth(n_snippets):
    scores = np.linspace(0, 1, n_snippets)
    frames = expand_scores_to_frames(scores)
    assert frames.shape == (16 * n_snippets,)
    np.testing.assert_array_equal(frames[16 * 3 : 16 * 4], scores[3])
    np.testing.assert_array_equal(frames.reshape(n_snippets, 16), np.repeat(scores[:, None], 16, axis=1))
    n_frames = 16 * n_snippets - 7
    assert frame_gt_from_snippets(np.zeros(n_frames), n_snippets, "pad_last").shape == frames.shape
    assert frame_gt_from_snippets(np.zeros(16 * n_snippets + 9), n_snippets, "truncate").shape == frames.shape


def test_expand_scores_concatenates_videos_in_order():
    frames = expand_scores_to_frames([np.array([0.1, 0.2]), np.array([0.9])])
    np.testing.assert_allclose(frames, [0.1] * 16 + [0.2] * 16 + [0.9] * 16)


def test_weak_test_ground_truth_on_a_tiny_list():
    labels = {"a": np.r_[np.zeros(20), np.ones(5)]}
    gt = weak_test_ground_truth(["a", "n"], labels, {"a": 2, "n": 3}, "pad_last")
    assert gt.shape == (32 + 48,)
    np.testing.assert_array_equal(gt[:32], np.r_[np.zeros(20), np.ones(12)])
    assert gt[32:].sum() == 0


# --- ShanghaiTech weak split and gt-sh.npy -------------------------------------------------------

def test_shanghaitech_id_rule():
    assert is_shanghaitech_anomalous("01_0014") and not is_shanghaitech_anomalous("01_014")


def _load_test_split():
    if not (WEAK_LISTS / "SH_Test.txt").exists() or not MASKS.is_dir():
        pytest.skip(f"ShanghaiTech weak split or masks not found under {SHARED / 'data'}")
    ids = (WEAK_LISTS / "SH_Test.txt").read_text().split()
    gt = np.load(WEAK_LISTS / "gt-sh.npy", allow_pickle=False)
    return ids, gt


def test_shanghaitech_weak_order_on_real_list():
    ids, _ = _load_test_split()
    order = shanghaitech_weak_order(ids)
    assert len(order) == 199 and sorted(order) == sorted(ids)
    assert all(is_shanghaitech_anomalous(v) for v in order[:44])
    assert not any(is_shanghaitech_anomalous(v) for v in order[44:])
    assert order[:44] == sorted(order[:44]) and order[44:] == sorted(order[44:])
    assert all((MASKS / f"{v}.npy").exists() for v in order[:44])
    assert not any((MASKS / f"{v}.npy").exists() for v in order[44:])


def test_gt_sh_rebuilt_from_masks_and_ceil_snippet_counts():
    """gt-sh.npy = the 44 anomalous masks padded to 16*ceil(n/16) by their last label, then zeros.

    The normal tail is all zeros, so only its total length (not each normal video's) is checkable.
    """
    ids, gt = _load_test_split()
    assert gt.shape == (142_912,) and gt.dtype == np.float64 and gt.sum() == 8028
    anomalous = shanghaitech_weak_order(ids)[:44]
    masks = {v: np.load(MASKS / f"{v}.npy", allow_pickle=False) for v in anomalous}
    assert sum(m.size for m in masks.values()) == 17_472
    assert sum(int(m.sum()) for m in masks.values()) == 7_962

    counts = {v: snippet_count(m.size, "pad_last") for v, m in masks.items()}
    rebuilt = weak_test_ground_truth(anomalous, masks, counts, "pad_last")
    assert rebuilt.shape == (17_968,)
    np.testing.assert_array_equal(gt[: rebuilt.size], rebuilt)
    assert rebuilt.sum() == 8028  # 66 positives come from last-label padding
    # What the evaluation counts with loop-padded features (Protocol.pad_to_multiple_of 16) is this file.
    from pipelines.metrics import VideoScores, padded_to_multiple
    evaluated = [padded_to_multiple(VideoScores(v, m, np.zeros(m.size)), 16).labels for v, m in masks.items()]
    np.testing.assert_array_equal(np.concatenate(evaluated), rebuilt)

    normal_tail = gt[rebuilt.size :]
    assert normal_tail.size == 124_944 == 16 * 7_809 and not normal_tail.any()

    # The other rule (AR-Net's floor truncation) cannot produce this file.
    floor_counts = {v: snippet_count(m.size, "truncate") for v, m in masks.items()}
    truncated = weak_test_ground_truth(anomalous, masks, floor_counts, "truncate")
    assert truncated.size != rebuilt.size
    assert not np.array_equal(gt[: truncated.size], truncated)


# --- sampling ------------------------------------------------------------------------------------

def test_balanced_batches_cycle_each_class_through_epochs():
    n_normal, n_abnormal, batch = 10, 7, 3  # 3 normal batches, 2 abnormal batches per epoch
    normal = [balanced_batch_indices(n_normal, n_abnormal, batch, s, seed=10)[0] for s in range(1, 4)]
    abnormal = [balanced_batch_indices(n_normal, n_abnormal, batch, s, seed=10)[1] for s in range(1, 5)]
    assert len(set(np.concatenate(normal).tolist())) == 9
    assert len(set(np.concatenate(abnormal[:2]).tolist())) == 6
    assert len(set(np.concatenate(abnormal[2:]).tolist())) == 6
    assert all(max(a) < n_abnormal for a in abnormal)
    again = balanced_batch_indices(n_normal, n_abnormal, batch, 2, seed=10)
    np.testing.assert_array_equal(again[0], normal[1])
    with pytest.raises(ValueError):
        balanced_batch_indices(2, 7, 3, 1, seed=0)


def test_arnet_item_draws_without_replacement():
    anomalous, normal = arnet_item_videos(63, 175, np.random.default_rng(0))
    assert anomalous.size == normal.size == 30
    assert len(set(anomalous.tolist())) == 30 and max(anomalous) < 63
    assert len(set(normal.tolist())) == 30 and max(normal) < 175


@pytest.mark.parametrize("n_snippets", [301, 450, 600, 1234])
def test_jittered_indices_stay_in_their_bins(n_snippets):
    idx = jittered_uniform_indices(n_snippets, 300, np.random.default_rng(3))
    starts = (np.arange(301) * n_snippets) // 300
    assert idx.shape == (300,)
    assert np.all(idx[:-1] >= starts[:-2]) and np.all(idx[:-1] <= starts[1:-1])
    assert idx[-1] == (299 * n_snippets) // 300
    assert np.all(np.diff(idx) >= 0) and idx.max() < n_snippets


def test_jittered_indices_include_the_next_bin_start():
    # T = 600: bin i spans {2i, 2i+1, 2i+2}; all three must be reachable.
    draws = np.stack([jittered_uniform_indices(600, 300, np.random.default_rng(s)) for s in range(20)])
    offsets = draws[:, :-1] - 2 * np.arange(299)
    assert set(np.unique(offsets).tolist()) == {0, 1, 2}


def test_contiguous_crop_excludes_the_last_window():
    starts = {contiguous_crop_start(302, 300, np.random.default_rng(s)) for s in range(50)}
    assert starts == {0, 1}


def test_fit_length_crops_samples_or_pads():
    rng = np.random.default_rng(4)
    short = ramp(5)
    padded = arnet_fit_length(short, anomalous=True, rng=rng, length=8)
    np.testing.assert_array_equal(padded[:5], short)
    assert not padded[5:].any()
    normal = arnet_fit_length(ramp(20), anomalous=False, rng=rng, length=8)[:, 0]
    np.testing.assert_array_equal(np.diff(normal), 1)  # contiguous
    assert 0 <= normal[0] < 12
    anomalous = arnet_fit_length(ramp(20), anomalous=True, rng=rng, length=8)[:, 0]
    assert anomalous[0] <= 2 and anomalous[-1] == (7 * 20) // 8  # spans the whole video
