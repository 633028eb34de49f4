"""Frame-level metrics: hand-computed post-processing, and agreement with scikit-learn on the
real ShanghaiTech and Avenue test labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.metrics import (
    Protocol,
    VideoScores,
    evaluate,
    fill_empty_frames,
    expand_snippets,
    minmax_per_video,
    padded_to_multiple,
    postprocess,
    smooth,
)

GT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gt"
needs_gt = pytest.mark.skipif(not GT.is_dir(), reason=f"ground-truth labels not found at {GT}")


def informative_scores(labels: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Labels plus unit Gaussian noise: better than chance, far from perfect."""
    rng = np.random.default_rng(seed)
    return [label + rng.normal(size=label.size) for label in labels]


def sklearn_reference(labels: list[np.ndarray], scores: list[np.ndarray]) -> dict:
    pooled_labels, pooled_scores = np.concatenate(labels), np.concatenate(scores)
    two_class = [(l, s) for l, s in zip(labels, scores) if np.unique(l).size == 2]
    return {
        "auc_micro": roc_auc_score(pooled_labels, pooled_scores),
        "auc_macro": np.mean([roc_auc_score(l, s) for l, s in two_class]),
        "ap": average_precision_score(pooled_labels, pooled_scores),
        "n_macro_skipped": len(labels) - len(two_class),
    }


def assert_matches_sklearn(names, labels, scores, protocol=Protocol()) -> dict:
    result = evaluate(
        [VideoScores(n, l, s) for n, l, s in zip(names, labels, scores)], protocol
    )
    expected = sklearn_reference(labels, scores)
    assert result["auc_micro"] == pytest.approx(expected["auc_micro"], abs=1e-12)
    assert result["auc_macro"] == pytest.approx(expected["auc_macro"], abs=1e-12)
    assert result["ap"] == pytest.approx(expected["ap"], abs=1e-12)
    assert result["n_macro_skipped"] == expected["n_macro_skipped"]
    assert result["n_macro_videos"] + result["n_macro_skipped"] == len(names)
    assert result["n_frames"] == sum(l.size for l in labels)
    assert result["n_frames_unscored"] == 0
    return result


# --- ShanghaiTech -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shanghaitech() -> tuple[list[str], list[np.ndarray]]:
    paths = sorted((GT / "shanghaitech" / "test_frame_mask").glob("*.npy"))
    return [p.stem for p in paths], [np.load(p) for p in paths]


@needs_gt
def test_shanghaitech_masks_add_up_to_the_pooled_label_file(shanghaitech):
    names, labels = shanghaitech
    pooled = np.concatenate(labels)
    assert len(names) == 107
    assert pooled.size == 40_791
    assert int(pooled.sum()) == 17_326
    reference = np.load(GT / "shanghaitech" / "frame_labels_shanghai.npy").ravel()
    np.testing.assert_array_equal(pooled, reference)


@needs_gt
def test_shanghaitech_evaluate_agrees_with_sklearn(shanghaitech):
    names, labels = shanghaitech
    result = assert_matches_sklearn(names, labels, informative_scores(labels, seed=0))
    one_class = sum(np.unique(l).size < 2 for l in labels)
    assert one_class == 1
    assert result["n_macro_skipped"] == one_class
    assert result["n_videos"] == 107
    assert 0.6 < result["auc_micro"] < 0.9


@needs_gt
def test_shanghaitech_postprocessing_is_per_video_before_pooling(shanghaitech):
    names, labels = shanghaitech
    scores = informative_scores(labels, seed=1)
    sigmas = (1, 2, 3, 4, 5, 6)
    protocol = Protocol(normalisation="minmax_per_video", smoothing_sigmas=sigmas)

    processed = []
    for video in scores:
        x = (video - video.min()) / (video.max() - video.min())
        for sigma in sigmas:
            x = gaussian_filter1d(x, sigma, mode="reflect")
        processed.append(x)
    result = evaluate([VideoScores(n, l, s) for n, l, s in zip(names, labels, scores)], protocol)
    expected = sklearn_reference(labels, processed)
    assert result["auc_micro"] == pytest.approx(expected["auc_micro"], abs=1e-12)
    assert result["auc_macro"] == pytest.approx(expected["auc_macro"], abs=1e-12)
    # Smoothing label-correlated noise helps; pooling the raw scores would give another number.
    raw = sklearn_reference(labels, scores)
    assert result["auc_micro"] > raw["auc_micro"] + 0.05


# --- Avenue -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def avenue() -> tuple[list[str], list[np.ndarray]]:
    """Frame labels from the pixel masks: a frame is abnormal if any pixel is set."""
    paths = sorted(
        (GT / "avenue" / "testing_label_mask").glob("*_label.mat"),
        key=lambda p: int(p.name.split("_")[0]),
    )
    labels = []
    for path in paths:
        masks = scipy.io.loadmat(path)["volLabel"].ravel()
        labels.append(np.array([mask.any() for mask in masks], dtype=np.int8))
    return [p.name.split("_")[0] for p in paths], labels


@needs_gt
def test_avenue_masks_counts_and_sklearn_agreement(avenue):
    names, labels = avenue
    pooled = np.concatenate(labels)
    assert len(names) == 21
    assert pooled.size == 15_324
    assert int(pooled.sum()) == 3_712
    result = assert_matches_sklearn(names, labels, informative_scores(labels, seed=2))
    assert result["n_macro_skipped"] == sum(np.unique(l).size < 2 for l in labels)


@needs_gt
def test_avenue_pooled_file_follows_another_convention(avenue):
    _, labels = avenue
    other = np.load(GT / "avenue" / "frame_labels_avenue.npy").ravel()
    assert other.size == sum(l.size for l in labels)
    assert int(other.sum()) == 3_867
    bounds = np.cumsum([0] + [l.size for l in labels])
    differing = sum(
        not np.array_equal(label, other[start:end])
        for label, start, end in zip(labels, bounds[:-1], bounds[1:])
    )
    assert differing == 15


# --- Post-processing, by hand -------------------------------------------------------------


def test_minmax_per_video_by_hand():
    rescaled = minmax_per_video(np.array([2.0, 4.0, 6.0, 3.0]))
    np.testing.assert_array_equal(rescaled, [0, 0.5, 1, 0.25])
    constant = minmax_per_video(np.full(5, 7.0))
    np.testing.assert_array_equal(constant, np.zeros(5))
    assert constant.dtype == np.float64


def test_smooth_passes_compose_like_one_wider_gaussian():
    delta = np.zeros(301)
    delta[150] = 1.0
    np.testing.assert_allclose(
        smooth(delta, (1, 2)), gaussian_filter1d(delta, np.sqrt(5)), atol=2e-5
    )
    six_passes = smooth(delta, (1, 2, 3, 4, 5, 6))
    np.testing.assert_allclose(six_passes, gaussian_filter1d(delta, np.sqrt(91)), atol=2e-5)
    assert six_passes.sum() == pytest.approx(1.0)
    # Peak of a Gaussian with sigma sqrt(91): 1 / sqrt(2 pi 91).
    assert six_passes[150] == pytest.approx(1 / np.sqrt(2 * np.pi * 91), rel=1e-3)


def test_smooth_reflects_at_borders_and_copies_without_sigmas():
    np.testing.assert_allclose(smooth(np.ones(10), (3.0,)), np.ones(10))
    ramp = np.arange(5.0)
    unchanged = smooth(ramp, ())
    np.testing.assert_array_equal(unchanged, ramp)
    unchanged[0] = 99.0
    assert ramp[0] == 0.0
    with pytest.raises(ValueError, match="positive"):
        smooth(ramp, (1.0, 0.0))


def test_postprocess_normalises_then_smooths():
    scores = np.array([10.0, 20.0, 30.0, 20.0, 10.0])
    protocol = Protocol(normalisation="minmax_per_video", smoothing_sigmas=(1.0,))
    expected = gaussian_filter1d(np.array([0.0, 0.5, 1.0, 0.5, 0.0]), 1.0, mode="reflect")
    np.testing.assert_allclose(postprocess(scores, protocol), expected)
    np.testing.assert_array_equal(postprocess(scores, Protocol()), scores)


@pytest.mark.parametrize(
    ("n_frames", "expected"),
    [
        (15, [1.0] * 15),
        (16, [1.0] * 16),
        (17, [1.0] * 16 + [2.0]),
        (33, [1.0] * 16 + [2.0] * 16 + [3.0]),
    ],
)
def test_expand_snippets_by_hand(n_frames, expected):
    snippets = np.array([1.0, 2.0, 3.0])[: -(-n_frames // 16)]
    np.testing.assert_array_equal(expand_snippets(snippets, n_frames), expected)


def test_expand_snippets_never_pads_or_guesses():
    too_few = r"1 snippets of 16 frames cover 16 frames, but the video has 17"
    with pytest.raises(ValueError, match=too_few):
        expand_snippets(np.array([0.5]), 17)
    too_many = r"2 snippets of 16 frames cover 32 frames, more than one snippet beyond the video's 16"
    with pytest.raises(ValueError, match=too_many):
        expand_snippets(np.array([0.5, 0.7]), 16)


# --- evaluate: masks and errors -----------------------------------------------------------


def test_unscored_frames_are_excluded_everywhere():
    labels = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    scores = np.array([np.nan, -50.0, 0.1, 0.2, 0.9, 0.3, 0.8, 1e6])
    scored = np.array([False, False, True, True, True, True, True, False])
    protocol = Protocol(normalisation="minmax_per_video", smoothing_sigmas=(0.5,))
    result = evaluate([VideoScores("v", labels, scores, scored)], protocol)
    assert result["auc_micro"] == 1.0
    assert result["n_frames"] == 5
    assert result["n_frames_unscored"] == 3
    # The unscored extremes would have squashed the min-max of the scored frames.
    assert result["ap"] == average_precision_score(
        labels[scored], postprocess(scores[scored], protocol)
    )

    skip_start = Protocol(skipped_start_frames=2)
    unmasked = evaluate([VideoScores("v", labels[:7], scores[:7])], skip_start)
    assert unmasked["auc_micro"] == 1.0
    assert unmasked["n_frames_unscored"] == 2
    assert unmasked["protocol"]["skipped_start_frames"] == 2


def test_macro_is_nan_when_no_video_has_both_classes():
    videos = [
        VideoScores("all_normal", np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4])),
        VideoScores("all_abnormal", np.ones(3), np.array([0.5, 0.6, 0.7])),
    ]
    result = evaluate(videos, Protocol())
    assert result["auc_micro"] == 1.0
    assert np.isnan(result["auc_macro"])
    assert result["n_macro_videos"] == 0
    assert result["n_macro_skipped"] == 2


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (
            VideoScores("Test017", np.zeros(5), np.zeros(4)),
            r"video 'Test017': 5 labels but 4 scores",
        ),
        (
            VideoScores("Test018", np.array([0, 1, 0]), np.array([0.1, np.nan, 0.3])),
            r"video 'Test018': 1 scored frames have NaN or inf scores \(first at frame 1\)",
        ),
        (
            VideoScores("Test019", np.array([0, 1, 0]), np.array([0.1, 0.2, np.inf])),
            r"video 'Test019': 1 scored frames have NaN or inf scores \(first at frame 2\)",
        ),
        (
            VideoScores("Test020", np.array([0, 2, 0]), np.zeros(3)),
            r"video 'Test020': labels must be 0 \(normal\) or 1 \(abnormal\), found values \[0, 2\]",
        ),
        (
            VideoScores("Test021", np.array([0, 1]), np.zeros(2), np.array([True])),
            r"video 'Test021': scored mask has 1 entries for 2 frames",
        ),
    ],
)
def test_evaluate_rejects_bad_videos_by_name(video, message):
    good = VideoScores("good", np.array([0, 1]), np.array([0.1, 0.9]))
    with pytest.raises(ValueError, match=message):
        evaluate([good, video], Protocol())


def test_evaluate_rejects_one_class_pools_and_bad_lists():
    normal_only = [
        VideoScores("a", np.zeros(3), np.arange(3.0)),
        VideoScores("b", np.zeros(2), np.arange(2.0)),
    ]
    one_class = r"micro AUC undefined: the 5 scored frames of 2 videos have only label\(s\) \[0\]"
    with pytest.raises(ValueError, match=one_class):
        evaluate(normal_only, Protocol())
    with pytest.raises(ValueError, match="no videos"):
        evaluate([], Protocol())
    twice = VideoScores("a", np.array([0, 1]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"videos listed more than once: \['a'\]"):
        evaluate([twice, twice], Protocol())


def test_protocol_is_recorded_and_validated():
    protocol = Protocol(
        normalisation="minmax_per_video",
        smoothing_sigmas=[1, 2],
        label_convention="avenue: testing_label_mask, any pixel, 1 = abnormal",
        snippet_length=16,
    )
    assert protocol.smoothing_sigmas == (1.0, 2.0)
    recorded = json.loads(json.dumps(protocol.as_dict()))
    assert recorded == {
        "pooling": "micro",
        "normalisation": "minmax_per_video",
        "smoothing_sigmas": [1.0, 2.0],
        "label_convention": "avenue: testing_label_mask, any pixel, 1 = abnormal",
        "skipped_start_frames": 0,
        "snippet_length": 16,
        "empty_frame_fill": "none",
        "false_alarm_threshold": None,
        "pad_to_multiple_of": 0,
        "padded_frame_label": "last",
    }
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 0"):
        Protocol(pad_to_multiple_of=-16)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        Protocol(normalisation="zscore")
    with pytest.raises(ValueError, match="pooling must be one of"):
        Protocol(pooling="weighted")
    with pytest.raises(ValueError, match="smoothing_sigmas must all be positive"):
        Protocol(smoothing_sigmas=(1.0, -2.0))


def test_empty_frames_take_the_most_normal_score_of_the_whole_split_before_smoothing():
    """STG-NF / GENet: a frame without a person counts as the test set's most normal frame; a
    per-video scoring job cannot know that value, so the evaluation fills it from every video."""
    protocol = Protocol(smoothing_sigmas=(1.0,), empty_frame_fill="most_normal_in_split")
    a = VideoScores("a", np.array([0, 0, 1, 1]), np.array([0.0, 0.5, 3.0, 4.0]), empty=np.array([True, False, False, False]))
    b = VideoScores("b", np.array([0, 1, 0]), np.array([-2.0, 5.0, 0.0]), scored=np.array([False, True, True]),
                    empty=np.array([False, False, True]))
    filled = fill_empty_frames([a, b], protocol)
    # b's frame 0 (-2) is not scored, so the split's most normal scored score is a's 0.5
    np.testing.assert_array_equal(filled[0].scores, [0.5, 0.5, 3.0, 4.0])
    np.testing.assert_array_equal(filled[1].scores, [-2.0, 5.0, 0.5])
    record = evaluate([a, b], protocol)
    by_hand = evaluate([filled[0], filled[1]], Protocol(smoothing_sigmas=(1.0,)))
    assert record["auc_micro"] == by_hand["auc_micro"] and record["ap"] == by_hand["ap"]
    assert record["protocol"]["empty_frame_fill"] == "most_normal_in_split"
    # the fill comes from the whole split: with b alone its empty frame takes b's own lowest, 5.0
    np.testing.assert_array_equal(fill_empty_frames([b], protocol)[0].scores, [-2.0, 5.0, 5.0])


def test_empty_frames_need_a_protocol_that_fills_them():
    marked = VideoScores("a", np.array([0, 1]), np.array([0.0, 1.0]), empty=np.array([True, False]))
    with pytest.raises(ValueError, match="'a': has frames marked empty, but the protocol fills none"):
        evaluate([marked], Protocol())
    nothing = VideoScores("a", np.array([0, 1]), np.array([0.0, 0.0]), empty=np.array([True, True]))
    with pytest.raises(ValueError, match="no frame of the 1 videos holds a score"):
        evaluate([nothing], Protocol(empty_frame_fill="most_normal_in_split"))
    with pytest.raises(ValueError, match="empty_frame_fill must be one of"):
        Protocol(empty_frame_fill="training_max")


def test_false_alarm_rate_is_the_share_of_normal_videos_frames_at_or_above_the_threshold():
    """AR-Net's FAR (ano_false_alarm_normal_video): frames of videos with no abnormal frame only."""
    protocol = Protocol(false_alarm_threshold=0.5)
    normal = VideoScores("normal", np.zeros(4, int), np.array([0.1, 0.5, 0.7, 0.2]))
    quiet = VideoScores("quiet", np.zeros(2, int), np.array([0.0, 0.4]))
    abnormal = VideoScores("abnormal", np.array([0, 1, 1]), np.array([0.9, 0.9, 0.9]))  # its 0.9 normal frame is not counted
    record = evaluate([normal, quiet, abnormal], protocol)
    assert record["far"] == 2 / 6 and record["n_far_videos"] == 2
    assert record["protocol"]["false_alarm_threshold"] == 0.5
    assert "far" not in evaluate([normal, abnormal], Protocol())
    # a video is normal by all its labels: one whose abnormal frames all fall unscored is not
    tail = VideoScores("tail", np.array([0, 0, 1]), np.array([0.9, 0.9, 0.0]), scored=np.array([True, True, False]))
    assert evaluate([normal, quiet, abnormal, tail], protocol)["n_far_videos"] == 2


def test_padding_to_whole_snippets_repeats_each_videos_last_frame():
    """RTFM's and SSRL's ground truth with loop-padded features: 16 * ceil(n/16) frames, the last
    label (and score) repeated. Two 20-frame videos: the abnormal one's last 4 frames are abnormal."""
    normal = VideoScores("n", np.zeros(20, int), np.r_[np.full(16, 0.5), np.full(4, 0.7)])
    abnormal = VideoScores("a", np.r_[np.zeros(16, int), np.ones(4, int)], np.r_[np.full(16, 0.2), np.full(4, 0.6)])
    own = evaluate([normal, abnormal], Protocol())
    padded = evaluate([normal, abnormal], Protocol(pad_to_multiple_of=16))
    assert (own["n_frames"], padded["n_frames"]) == (40, 64)
    assert own["auc_micro"] == pytest.approx(32 / 36)  # the 4 positives beat 32 of 36 negatives
    assert padded["auc_micro"] == pytest.approx(32 / 48)  # 16 positives at 0.6; 16 negatives at 0.7 now
    whole = VideoScores("w", np.r_[np.zeros(8, int), np.ones(8, int)], np.linspace(0, 1, 16))
    assert evaluate([whole], Protocol(pad_to_multiple_of=16))["n_frames"] == 16  # already whole: unchanged


def test_padded_frames_take_the_label_the_protocol_says():
    """UCF-Crime's gt-ucf.npy labels the frames beyond a video normal (1 only on [start, end]);
    ShanghaiTech's gt-sh.npy repeats the last label. The scores repeat the last frame's either way."""
    video = VideoScores("a", np.r_[np.zeros(10, int), np.ones(10, int)], np.linspace(0, 1, 20))
    last = padded_to_multiple(video, 16)
    normal = padded_to_multiple(video, 16, "normal")
    assert last.labels.tolist() == [0] * 10 + [1] * 22 and normal.labels.tolist() == [0] * 10 + [1] * 10 + [0] * 12
    assert normal.scores.tolist() == last.scores.tolist() == np.r_[np.linspace(0, 1, 20), np.ones(12)].tolist()
    record = evaluate([video], Protocol(pad_to_multiple_of=16, padded_frame_label="normal"))
    assert record["protocol"]["padded_frame_label"] == "normal"
    assert record["auc_micro"] < evaluate([video], Protocol(pad_to_multiple_of=16))["auc_micro"]
    with pytest.raises(ValueError, match="padded_frame_label must be one of"):
        Protocol(padded_frame_label="abnormal")
