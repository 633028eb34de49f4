"""Snippet division and frame preprocessing of the I3D feature presets, as pure tensor functions (no video I/O).

Presets (one dataclass each, every parameter explicit):
  * `rtfm`: ResNet-50 I3D, short side 256, torchvision ten-crop 224, Caffe2 mean/std 114.75/57.375 on
    [0, 255], loop-padded last window, T = ceil(n/16). The features of RTFM (Tian et al., ICCV 2021) and the
    clip stream of SSRL (Li et al., ECCV 2022).
  * `arnet`: Inception I3D RGB + flow, 224x224 squash, one view, raw [0, 255], tail dropped, T = floor(n/16).
    The features of AR-Net (Wan et al., ICME 2020).
  * `i3d_standard`: Inception I3D RGB, short side 256, ten-crop 224, [-1, 1]: DeepMind's resize and range
    (Carreira and Zisserman, CVPR 2017); the ten crops (DeepMind tests on the centre crop) and the
    loop-padded tail, T = ceil(n/16), are this project's choice, so published "standard" features
    (full windows only) are not this preset's.
  * `ssrl_patches`: SSRL's multi-scale patch features. The authors never published how they were made: this
    preset is RECONSTRUCTED (frames to 480x840, 2x3 / 3x5 / 4x7 grids row-major, each patch cube resized to
    224x224, rtfm normalisation, one view) and its features must be marked as such.

Frames are one video's frames at their native rate, as uint8 (T, H, W, C) with C = 3 (RGB) or 2 (flow x, y
as 8-bit images, the TV-L1 jpg convention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

TEN_CROP_ORDER = (
    "top_left", "top_right", "bottom_left", "bottom_right", "center",
    "flipped_top_left", "flipped_top_right", "flipped_bottom_left", "flipped_bottom_right", "flipped_center",
)
"""torchvision TenCrop order: the five crops of the frame, then the same five of the horizontally flipped frame
(so "flipped_top_left" is the mirror image of the original's top-right corner)."""


@dataclass(frozen=True)
class SnippetRule:
    """How a video is cut into snippets: windows of `window` frames starting every `stride` frames.

    tail "loop_pad": the last, partial window is kept and filled by repeating its own frames cyclically
    (T = ceil(n/stride)); "drop": only complete windows (T = floor((n - window)/stride) + 1).
    """

    window: int
    stride: int
    tail: Literal["loop_pad", "drop"]


@dataclass(frozen=True)
class ClipPreset:
    """Whole-frame snippet features: resize, crops, normalisation, snippet rule and backbones.

    Exactly one of `short_side` (torchvision Resize(int): short side to this size, long side truncated,
    aspect kept) and `squash_hw` (straight to (height, width)) is set. `antialias` True is PIL's bilinear, which
    widens its filter when shrinking (what torchvision does on PIL images); False is OpenCV's INTER_LINEAR.
    Pixels are normalised as (value - pixel_mean) / pixel_std on the [0, 255] scale, every channel alike.
    The feature is the `rgb_backbone` feature, followed by the `flow_backbone` one where there is one.
    """

    name: str
    rgb_backbone: str
    flow_backbone: str | None
    feature_dim: int
    short_side: int | None
    squash_hw: tuple[int, int] | None
    antialias: bool
    crop: Literal["ten_crop", "center", "none"]
    crop_size: int | None
    pixel_mean: float
    pixel_std: float
    snippets: SnippetRule
    provenance: str

    def __post_init__(self) -> None:
        if (self.short_side is None) == (self.squash_hw is None):
            raise ValueError(f"preset {self.name}: set exactly one of short_side and squash_hw")
        if (self.crop == "none") != (self.crop_size is None):
            raise ValueError(f"preset {self.name}: crop_size is needed exactly when crop is not 'none'")

    @property
    def n_crops(self) -> int:
        return len(TEN_CROP_ORDER) if self.crop == "ten_crop" else 1


@dataclass(frozen=True)
class PatchPreset:
    """Patch features: frames resized to `frame_hw`, cut into `grids` (rows, cols) of patches in row-major
    order, each patch cube resized to `patch_size` squared, normalised as in ClipPreset, one view."""

    name: str
    backbone: str
    feature_dim: int
    frame_hw: tuple[int, int]
    grids: tuple[tuple[int, int], ...]
    patch_size: int
    antialias: bool
    pixel_mean: float
    pixel_std: float
    snippets: SnippetRule
    provenance: str


_SIXTEEN_LOOP_PADDED = SnippetRule(window=16, stride=16, tail="loop_pad")

RTFM = ClipPreset(
    name="rtfm",
    rgb_backbone="r50_nonlocal_k400",
    flow_backbone=None,
    feature_dim=2048,
    short_side=256,
    squash_hw=None,
    antialias=True,
    crop="ten_crop",
    crop_size=224,
    pixel_mean=114.75,
    pixel_std=57.375,
    snippets=_SIXTEEN_LOOP_PADDED,
    provenance="RTFM issue #21 and Tushar-N/pytorch-resnet3d gtransforms (Resize(256), TenCrop(224), "
               "[0, 255] pixels, LoopPad); the [0, 255] range before mean/std is inferred.",
)

ARNET = ClipPreset(
    name="arnet",
    rgb_backbone="inception_k400_rgb",
    flow_backbone="inception_k400_flow",
    feature_dim=2048,
    short_side=None,
    squash_hw=(224, 224),
    antialias=False,
    crop="none",
    crop_size=None,
    pixel_mean=0.0,
    pixel_std=1.0,
    snippets=SnippetRule(window=16, stride=16, tail="drop"),
    provenance="wanboyang/anomaly_feature@9fc5b9a: OpenCV resize to 224x224, float [0, 255] without rescaling, "
               "16-frame clips with the partial tail dropped, RGB then flow concatenated. Flow takes (x, y); "
               "the published loader's (x, x) bug is not reproduced.",
)

I3D_STANDARD = ClipPreset(
    name="i3d_standard",
    rgb_backbone="inception_k400_rgb",
    flow_backbone=None,
    feature_dim=1024,
    short_side=256,
    squash_hw=None,
    antialias=True,
    crop="ten_crop",
    crop_size=224,
    pixel_mean=127.5,
    pixel_std=127.5,
    snippets=_SIXTEEN_LOOP_PADDED,
    provenance="DeepMind kinetics-i3d README (bilinear short side 256, [-1, 1], 224 crops); ten-crop and the "
               "loop-padded tail are this project's choice so that every frame gets a snippet.",
)

SSRL_PATCHES = PatchPreset(
    name="ssrl_patches",
    backbone="r50_nonlocal_k400",
    feature_dim=2048,
    frame_hw=(480, 840),
    grids=((2, 3), (3, 5), (4, 7)),
    patch_size=224,
    antialias=True,
    pixel_mean=114.75,
    pixel_std=57.375,
    snippets=_SIXTEEN_LOOP_PADDED,
    provenance="RECONSTRUCTED, not upstream: SSRL never published its patch extraction. Grids and row-major "
               "order are from its code; 480x840 frames from a third-party summary; the 224x224 patch resize, "
               "normalisation and single view are assumptions.",
)

PRESETS: dict[str, ClipPreset | PatchPreset] = {p.name: p for p in (RTFM, ARNET, I3D_STANDARD, SSRL_PATCHES)}


def n_snippets(preset: ClipPreset | PatchPreset, n_frames: int) -> int:
    """Number of snippets T a video of `n_frames` frames yields under the preset's snippet rule."""
    rule = preset.snippets
    if rule.tail == "drop":
        return 0 if n_frames < rule.window else (n_frames - rule.window) // rule.stride + 1
    return math.ceil(n_frames / rule.stride)


def snippet_frame_indices(preset: ClipPreset | PatchPreset, n_frames: int) -> list[np.ndarray]:
    """Frame indices of each snippet, `window` long each; a loop-padded tail repeats its frames cyclically
    (frames 32 of a 33-frame video give [32] * 16; frames 0..14 give 0..14, 0)."""
    rule = preset.snippets
    snippets = []
    for index in range(n_snippets(preset, n_frames)):
        start = index * rule.stride
        frames = np.arange(start, min(start + rule.window, n_frames))
        snippets.append(frames[np.arange(rule.window) % len(frames)])
    return snippets


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after torchvision Resize(short_side): the long side is truncated, not rounded."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def five_crop_offsets(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's five crops: corners tl, tr, bl, br, then the centre, whose offset uses
    Python's round half to even, as torchvision's center_crop does."""
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the frame {height}x{width}")
    bottom, right = height - size, width - size
    centre = (int(round(bottom / 2.0)), int(round(right / 2.0)))
    return [(0, 0), (0, right), (bottom, 0), (bottom, right), centre]


def patch_boxes(grid: tuple[int, int], frame_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the cells of a rows x cols grid over a frame, row-major.

    Part of the RECONSTRUCTED SSRL patch protocol. Cell edges sit at floor(i * H / rows), so the cells tile
    the frame exactly (240x280, 160x168 and 120x120 for the SSRL grids on 480x840).
    """
    rows, cols = grid
    height, width = frame_hw
    ys = [row * height // rows for row in range(rows + 1)]
    xs = [col * width // cols for col in range(cols + 1)]
    return [(ys[r], xs[c], ys[r + 1] - ys[r], xs[c + 1] - xs[c]) for r in range(rows) for c in range(cols)]
