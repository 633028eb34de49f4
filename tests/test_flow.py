"""TV-L1 flow of the arnet preset's flow stream: denseflow quantisation, direction, frame count, streaming."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.features.flow import TVL1Params, block_flow, quantise

LEVEL = 40 / 255  # pixels per uint8 level


def _texture(height, width, seed=0):
    """A smooth random gray texture with strong gradients, which TV-L1 tracks well."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 3 - 255, 0, 255).astype(np.uint8)


def _pixels(flow):
    return flow.astype(np.float64) * LEVEL - 20


def test_quantisation_is_denseflows_and_clips():
    values = np.array([-100.0, -20.0, -10.0, 0.0, 10.0, 20.0, 35.0])
    assert quantise(values).tolist() == [0, 0, 64, 128, 191, 255, 255]  # 63.75 -> 64, 127.5 -> 128, 191.25 -> 191
    assert quantise(values).dtype == np.uint8
    assert np.abs(_pixels(quantise(np.linspace(-20, 20, 101))) - np.linspace(-20, 20, 101)).max() <= LEVEL / 2


@pytest.mark.parametrize("axis", [0, 1])
def test_a_two_pixel_shift_is_recovered_in_its_channel(axis):
    texture = _texture(40, 48)
    before = texture[4:36, 4:44]
    # The content moves by +2 px along x (axis 0 of the flow) or y (axis 1): frame 2 at p is frame 1 at p - 2.
    after = texture[4:36, 2:42] if axis == 0 else texture[2:34, 4:44]
    flow = _pixels(block_flow(np.stack([before, after])[..., None], ends_video=True))
    interior = flow[0, 6:-6, 6:-6]
    assert abs(interior[..., axis].mean() - 2) < 0.25 and np.abs(interior[..., axis] - 2).max() < 1
    assert np.abs(interior[..., 1 - axis]).mean() < 0.25


def test_n_frames_give_n_flow_frames_the_last_repeating_the_previous():
    frames = np.stack([np.roll(_texture(24, 32), shift, axis=1) for shift in (0, 1, 3, 3, 6)])
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    flow = block_flow(rgb, ends_video=True)
    assert flow.shape == (5, 24, 32, 2) and flow.dtype == np.uint8
    assert np.array_equal(flow[4], flow[3])
    # Gray and RGB frames of the same picture give the same flow.
    assert np.array_equal(flow, block_flow(frames[..., None], ends_video=True))
    # Batches (each with the frame after it) give the flow of the whole video, each flow computed once.
    parts = [block_flow(rgb[0:3], ends_video=False), block_flow(rgb[2:5], ends_video=True)]
    assert [len(part) for part in parts] == [2, 3] and np.array_equal(np.concatenate(parts), flow)
    # A still pair: zero flow, level 128 in both channels.
    assert (block_flow(rgb[2:4], ends_video=False) == 128).all()


def test_one_frame_has_no_flow():
    with pytest.raises(ValueError, match="one-frame video has no optical flow"):
        block_flow(np.zeros((1, 8, 8, 3), np.uint8), ends_video=True)
    with pytest.raises(ValueError, match="expected uint8 frames"):
        block_flow(np.zeros((2, 8, 8, 2), np.uint8), ends_video=True)


def test_parameters_are_opencvs_defaults_and_described():
    defaults = cv2.optflow.DualTVL1OpticalFlow_create()
    params = TVL1Params()
    assert (params.tau, params.lambda_, params.theta, params.n_scales, params.warps, params.epsilon) == (
        defaults.getTau(), defaults.getLambda(), defaults.getTheta(), defaults.getScalesNumber(),
        defaults.getWarpingsNumber(), defaults.getEpsilon())
    assert (params.inner_iterations, params.outer_iterations, params.scale_step, params.gamma,
            params.median_filtering) == (defaults.getInnerIterations(), defaults.getOuterIterations(),
                                         defaults.getScaleStep(), defaults.getGamma(), defaults.getMedianFiltering())
    text = params.describe()
    assert "TV-L1" in text and "tau 0.25" in text and "[-20, 20]" in text and "last frame repeats" in text
