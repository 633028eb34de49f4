"""Feature presets: snippet counts and indices, resize, ten-crop order, normalisation and SSRL patch grids."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from pipelines.features import presets as P
from pipelines.features import preprocess as PP
from pipelines.features.feature_sets import backbones_needed, missing_streams
from pipelines.features.weights import REGISTRY


@pytest.mark.parametrize("preset, expected", [
    (P.RTFM, [1, 1, 2, 3]),           # ceil(n/16)
    (P.I3D_STANDARD, [1, 1, 2, 3]),   # ceil(n/16)
    (P.SSRL_PATCHES, [1, 1, 2, 3]),   # must equal the rtfm clip T
    (P.ARNET, [0, 1, 1, 2]),          # floor(n/16)
])
def test_snippet_counts(preset, expected):
    counts = [P.n_snippets(preset, n) for n in (15, 16, 17, 33)]
    assert counts == expected
    assert [len(P.snippet_frame_indices(preset, n)) for n in (15, 16, 17, 33)] == expected
    assert P.n_snippets(preset, 0) == 0


def test_loop_padded_indices():
    assert P.snippet_frame_indices(P.RTFM, 15)[0].tolist() == list(range(15)) + [0]
    last_of_17 = P.snippet_frame_indices(P.RTFM, 17)
    assert last_of_17[0].tolist() == list(range(16)) and last_of_17[1].tolist() == [16] * 16
    assert P.snippet_frame_indices(P.RTFM, 33)[2].tolist() == [32] * 16
    assert P.snippet_frame_indices(P.RTFM, 21)[1].tolist() == [16, 17, 18, 19, 20] * 3 + [16]


def test_dropped_tail_indices():
    windows = P.snippet_frame_indices(P.ARNET, 33)
    assert [w.tolist() for w in windows] == [list(range(16)), list(range(16, 32))]


def _position_frame(height: int, width: int) -> np.ndarray:
    """R = row, G = column // 2, B = 7: every pixel says where it came from."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols // 2, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def test_ten_crop_order_and_normalisation():
    frame = _position_frame(256, 320)    # short side already 256: resize leaves it alone
    clip = np.stack([frame, frame])
    crops = PP.preprocess_clip(P.RTFM, clip)
    assert crops.shape == (10, 3, 2, 224, 224)

    raw = crops * 57.375 + 114.75
    offsets = [(0, 0), (0, 96), (32, 0), (32, 96), (16, 48)]    # tl, tr, bl, br, centre of 256x320
    flipped = frame[:, ::-1]
    for index, (top, left) in enumerate(offsets * 2):
        source = frame if index < 5 else flipped
        expected = torch.from_numpy(source[top:top + 224, left:left + 224].copy()).permute(2, 0, 1).float()
        torch.testing.assert_close(raw[index, :, 1], expected, rtol=0, atol=1e-4, msg=P.TEN_CROP_ORDER[index])
    # The flipped top-left crop starts at the original's right edge (column 319 -> G = 159).
    assert round(float(raw[5, 1, 0, 0, 0])) == 159 and round(float(raw[0, 1, 0, 0, 0])) == 0


def test_ten_crop_regions_of_distinct_colours():
    # Five 16x16 patches of distinct colours, each inside exactly one crop of the 5 (rtfm centre is at 16, 48).
    frame = np.zeros((256, 320, 3), np.uint8)
    colours = {(0, 0): 10, (0, 304): 20, (240, 0): 30, (240, 304): 40}
    for (top, left), value in colours.items():
        frame[top:top + 16, left:left + 16] = value
    crops = PP.ten_crop(torch.from_numpy(frame).permute(2, 0, 1), 224)
    assert crops.shape == (10, 3, 224, 224)
    corners = [int(crop[0, 0, 0]) for crop in crops[:2]] + [int(crop[0, -1, 0]) for crop in crops[2:4]]
    assert corners == [10, 0, 30, 0]
    assert [int(crops[1, 0, 0, -1]), int(crops[3, 0, -1, -1])] == [20, 40]
    assert int(crops[4].max()) == 0, "the centre crop reaches no corner"
    # Flipped half: tl of the mirror image holds the original top-right colour.
    assert [int(crops[5, 0, 0, 0]), int(crops[6, 0, 0, -1]), int(crops[7, 0, -1, 0])] == [20, 10, 40]


def test_center_offset_rounds_half_to_even_like_torchvision():
    assert P.five_crop_offsets(256, 455, 224)[4] == (16, 116)    # 115.5 -> 116
    assert P.five_crop_offsets(256, 457, 224)[4] == (16, 116)    # 116.5 -> 116
    assert P.five_crop_offsets(259, 300, 224)[4] == (18, 38)     # 17.5 -> 18, 38 exact
    with pytest.raises(ValueError, match="larger than the frame"):
        P.five_crop_offsets(200, 300, 224)


def test_short_side_resize_follows_torchvision():
    assert P.short_side_size(480, 856, 256) == (256, 456)        # ShanghaiTech: 456.53 truncated
    assert P.short_side_size(240, 320, 256) == (256, 341)
    assert P.short_side_size(400, 300, 256) == (341, 256)


def test_short_side_resize_matches_pil_bilinear():
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur((rng.random((120, 214, 3)) * 255).astype(np.uint8), (0, 0), 2)
    reference = np.asarray(image.fromarray(frame).resize((143, 80), image.BILINEAR)).astype(int)
    ours = PP.resize_frames(torch.from_numpy(frame).permute(2, 0, 1).float(), (80, 143), antialias=True)
    assert np.abs(ours.permute(1, 2, 0).numpy().astype(int) - reference).max() <= 1


def test_arnet_squash_matches_opencv_and_keeps_raw_pixels():
    rng = np.random.default_rng(1)
    frames = (rng.random((3, 240, 360, 3)) * 255).astype(np.uint8)
    clip = PP.preprocess_clip(P.ARNET, frames)
    assert clip.shape == (1, 3, 3, 224, 224)
    reference = cv2.resize(frames[2], (224, 224)).astype(int)
    assert np.abs(clip[0, :, 2].permute(1, 2, 0).numpy().astype(int) - reference).max() <= 1
    assert torch.equal(clip, clip.round()) and clip.min() >= 0 and clip.max() <= 255


@pytest.mark.parametrize("preset, low, high", [
    (P.RTFM, -2.0, (255 - 114.75) / 57.375), (P.I3D_STANDARD, -1.0, 1.0), (P.ARNET, 0.0, 255.0),
])
def test_normalisation_range(preset, low, high):
    frames = np.zeros((2, 300, 400, 3), np.uint8)
    frames[1] = 255
    clip = PP.preprocess_clip(preset, frames)
    assert clip.shape == (preset.n_crops, 3, 2, 224, 224)
    torch.testing.assert_close(clip[:, :, 0], torch.full_like(clip[:, :, 0], low))
    torch.testing.assert_close(clip[:, :, 1], torch.full_like(clip[:, :, 1], high))


def test_flow_clips():
    flow = np.full((4, 240, 320, 2), 128, np.uint8)
    clip = PP.preprocess_clip(P.ARNET, flow)
    assert clip.shape == (1, 2, 4, 224, 224) and float(clip[0, 0, 0, 0, 0]) == 128.0
    with pytest.raises(ValueError, match="no flow stream"):
        PP.preprocess_clip(P.RTFM, flow)


def test_centre_crop_variant():
    centre_only = dataclasses.replace(P.I3D_STANDARD, crop="center")
    frame = _position_frame(256, 455)
    clip = PP.preprocess_clip(centre_only, frame[None])
    assert clip.shape == (1, 3, 1, 224, 224)
    assert round(float(clip[0, 1, 0, 0, 0]) * 127.5 + 127.5) == 116 // 2


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="expected uint8 frames"):
        PP.preprocess_clip(P.RTFM, np.zeros((2, 256, 256, 3), np.float32))
    with pytest.raises(ValueError, match="set exactly one"):
        dataclasses.replace(P.RTFM, squash_hw=(224, 224))


def test_flow_backbone_and_missing_stream_follow_the_flow_flag():
    assert backbones_needed("arnet") == ["inception_k400_rgb"] and missing_streams("arnet") == ("flow",)
    assert backbones_needed("arnet", flow=True) == ["inception_k400_flow", "inception_k400_rgb"]
    assert missing_streams("arnet", flow=True) == ()
    assert backbones_needed("arnet_ssrl_patches", published_clip=True, flow=True) == ["r50_nonlocal_k400"]
    assert backbones_needed("rtfm", flow=True) == ["r50_nonlocal_k400"] and missing_streams("rtfm") == ()


def test_presets_agree_with_weights_registry():
    for preset in (P.RTFM, P.ARNET, P.I3D_STANDARD):
        streams = [preset.rgb_backbone] + ([preset.flow_backbone] if preset.flow_backbone else [])
        assert preset.feature_dim == sum(REGISTRY[name].feature_dim for name in streams)
        assert REGISTRY[preset.rgb_backbone].in_channels == 3
    assert REGISTRY[P.ARNET.flow_backbone].in_channels == 2
    assert REGISTRY[P.SSRL_PATCHES.backbone].feature_dim == P.SSRL_PATCHES.feature_dim
    assert all(record.preset in P.PRESETS for record in REGISTRY.values())
    assert "RECONSTRUCTED" in P.SSRL_PATCHES.provenance


@pytest.mark.parametrize("grid, cell", [((2, 3), (240, 280)), ((3, 5), (160, 168)), ((4, 7), (120, 120))])
def test_ssrl_patch_boxes_tile_the_frame_row_major(grid, cell):
    boxes = P.patch_boxes(grid, (480, 840))
    rows, cols = grid
    assert len(boxes) == rows * cols
    assert {(h, w) for _, _, h, w in boxes} == {cell}
    assert boxes[1] == (0, cell[1], *cell) and boxes[cols] == (cell[0], 0, *cell)
    cover = np.zeros((480, 840), int)
    for top, left, h, w in boxes:
        cover[top:top + h, left:left + w] += 1
    assert (cover == 1).all()


def test_ssrl_patches_keep_row_major_order():
    rows, cols = 3, 5
    frame = np.zeros((480, 840, 3), np.uint8)
    for index, (top, left, h, w) in enumerate(P.patch_boxes((rows, cols), (480, 840))):
        frame[top:top + h, left:left + w] = 10 * (index + 1)
    patches = PP.preprocess_patch_clip(P.SSRL_PATCHES, np.stack([frame] * 2), (rows, cols))
    assert patches.shape == (15, 3, 2, 224, 224)
    raw = patches * 57.375 + 114.75
    for index in range(15):
        torch.testing.assert_close(raw[index], torch.full_like(raw[index], 10.0 * (index + 1)), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="not one of"):
        PP.preprocess_patch_clip(P.SSRL_PATCHES, frame[None], (2, 2))
