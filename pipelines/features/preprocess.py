"""Preprocessing of the feature presets in torch: resize, ten-crop or centre crop, normalisation, patches.

Separate from `presets` (plain data the workflow reads while it builds the DAG) so that only the jobs
that extract features pay for importing torch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.features.presets import ClipPreset, PatchPreset, five_crop_offsets, patch_boxes, short_side_size


def resize_frames(frames: torch.Tensor, size_hw: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bilinear resize of float frames (..., C, H, W) holding 0..255, rounded back to 8-bit levels.

    Rounding emulates the uint8 images that PIL and OpenCV return, which is what the reference extractors fed
    on; it agrees with them to within one grey level.
    """
    if tuple(frames.shape[-2:]) == tuple(size_hw):
        return frames
    leading = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    resized = F.interpolate(flat, size=size_hw, mode="bilinear", align_corners=False, antialias=antialias)
    return resized.round().clamp(0, 255).reshape(*leading, *resized.shape[-3:])


def ten_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (10, ..., size, size) in TEN_CROP_ORDER; one crop box for all frames of a clip."""
    offsets = five_crop_offsets(frames.shape[-2], frames.shape[-1], size)
    flipped = frames.flip(-1)
    return torch.stack([image[..., top:top + size, left:left + size]
                        for image in (frames, flipped) for top, left in offsets])


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (1, ..., size, size), torchvision's centre crop."""
    top, left = five_crop_offsets(frames.shape[-2], frames.shape[-1], size)[4]
    return frames[None, ..., top:top + size, left:left + size]


def _frames_to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (T, C, H, W) on the 0..255 scale."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), found {frames.dtype} of shape {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2).float()


def preprocess_clip(preset: ClipPreset, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (crops, C, T, h, w), the backbone input of one snippet.

    C = 3 is an RGB clip for `rgb_backbone`; C = 2 a flow clip (x, y) for `flow_backbone`.
    """
    clip = _frames_to_float(frames)
    channels = clip.shape[1]
    if channels == 2 and preset.flow_backbone is None:
        raise ValueError(f"preset {preset.name} has no flow stream; expected 3-channel RGB frames, found 2 channels")
    if channels not in (2, 3):
        raise ValueError(f"expected 3 (RGB) or 2 (flow) channels, found {channels}")
    if preset.short_side is not None:
        size_hw = short_side_size(clip.shape[2], clip.shape[3], preset.short_side)
    else:
        size_hw = preset.squash_hw
    clip = resize_frames(clip, size_hw, preset.antialias)
    if preset.crop == "ten_crop":
        crops = ten_crop(clip, preset.crop_size)
    elif preset.crop == "center":
        crops = center_crop(clip, preset.crop_size)
    else:
        crops = clip[None]
    crops = (crops - preset.pixel_mean) / preset.pixel_std
    return crops.permute(0, 2, 1, 3, 4).contiguous()


def preprocess_patch_clip(preset: PatchPreset, frames: np.ndarray | torch.Tensor,
                          grid: tuple[int, int]) -> torch.Tensor:
    """uint8 RGB (T, H, W, 3) -> float32 (rows*cols, 3, T, patch, patch), patches row-major (RECONSTRUCTED)."""
    if grid not in preset.grids:
        raise ValueError(f"grid {grid} is not one of preset {preset.name}'s grids {preset.grids}")
    clip = _frames_to_float(frames)
    if clip.shape[1] != 3:
        raise ValueError(f"expected RGB frames, found {clip.shape[1]} channels")
    clip = resize_frames(clip, preset.frame_hw, preset.antialias)
    size = (preset.patch_size, preset.patch_size)
    patches = torch.stack([resize_frames(clip[..., top:top + h, left:left + w], size, preset.antialias)
                           for top, left, h, w in patch_boxes(grid, preset.frame_hw)])
    patches = (patches - preset.pixel_mean) / preset.pixel_std
    return patches.permute(0, 2, 1, 3, 4).contiguous()
