"""Resizing frames: one policy for every step that resizes (frame extraction, the networks' inputs).

Area interpolation when both sides shrink (it averages, so small sizes do not alias), bilinear
otherwise; or bilinear always, where an official loader resizes so (OpenCV's ``cv2.resize``
default). Videos and frame folders go through the same function, so the same pixels give the same
frames whichever way a dataset ships them (ShanghaiTech ships both).
"""
from __future__ import annotations

import cv2
import numpy as np


def resized(frames: np.ndarray, size: tuple[int, int] | None, *, area: bool = True) -> np.ndarray:
    """(N, H, W, C) uint8 frames at ``size`` (height, width), channels kept; unchanged for ``None``
    or their own size. ``area``: area interpolation when both sides shrink (else always bilinear)."""
    if size is None or tuple(size) == frames.shape[1:3]:
        return frames
    height, width = size
    shrinks = height < frames.shape[1] and width < frames.shape[2]
    interpolation = cv2.INTER_AREA if area and shrinks else cv2.INTER_LINEAR
    return np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in frames]).reshape(
        frames.shape[0], height, width, frames.shape[3])
