"""TV-L1 optical flow of a video's frames, quantised to two 8-bit channels the TSN / denseflow way.

I3D's flow stream (Carreira and Zisserman, CVPR 2017) reads TV-L1 flow (Zach, Pock and Bischof, DAGM 2007;
OpenCV's implementation follows Sanchez, Meinhardt-Llopis and Facciolo, IPOL 2013) of grayscale frames,
clipped to [-20, 20]. TSN, denseflow and mmaction store that flow as 8-bit images, uint8 =
(clip(f, -20, 20) + 20) * 255/40, one per axis, and AR-Net's extractor reads those images; the ``arnet``
preset then treats the (x, y) pair like an RGB frame. This module makes the same uint8 (T, H, W, 2) arrays
in memory (rounded to the nearest level), with OpenCV's default TV-L1 parameters.

Frame count: flow frame i is the flow from frame i to frame i + 1. The last frame has no successor, so its
flow repeats the previous one: a video of n frames gives n flow frames, and the snippet rule cuts the flow
stream exactly as it cuts the RGB one (denseflow writes n - 1 images, one per pair, which would give a video
of a multiple of 16 frames one flow snippet fewer than RGB ones). A one-frame video has no flow.

Streaming: `block_flow` takes one batch's frames plus the frame after it (when the video has one), so each
flow is computed once and memory does not grow with the video's length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV ``cv2.optflow.DualTVL1OpticalFlow`` parameters (its defaults) and the clipping bound in pixels."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    n_scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    bound: float = 20.0

    def describe(self) -> str:
        """One line for a features file: the algorithm, its parameters, the storage and the frame-count rule."""
        params = ", ".join(f"{name} {value}" for name, value in dataclasses.asdict(self).items() if name != "bound")
        return (f"TV-L1 optical flow (OpenCV {cv2.__version__} cv2.optflow.DualTVL1OpticalFlow: {params}) on "
                f"grayscale frames, clipped to [-{self.bound:g}, {self.bound:g}] and stored as uint8 "
                f"(f + {self.bound:g}) * 255/{2 * self.bound:g} (x, y); flow frame i is frame i -> i + 1, the last "
                "frame repeats the previous flow (n frames, n flow frames)")


def quantise(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """Float flow in pixels -> uint8, (clip(f, -bound, bound) + bound) * 255 / (2 * bound), rounded (0 -> 128)."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame[..., 0] if frame.shape[-1] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def block_flow(frames: np.ndarray, ends_video: bool, params: TVL1Params = TVL1Params()) -> np.ndarray:
    """Quantised TV-L1 flow, uint8 (T, H, W, 2), of a block of consecutive uint8 frames (m, H, W, C), C = 3 (RGB)
    or 1 (gray).

    Unless ``ends_video``, the block's last frame is the frame after the block, read only to give the flow of
    the one before it: T = m - 1. With ``ends_video`` the block ends with the video's last frame, whose flow
    repeats the previous one: T = m.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 frames (T, H, W, 1 or 3), found {frames.dtype} of shape {frames.shape}")
    if len(frames) < 2:
        raise ValueError(f"TV-L1 flow needs two consecutive frames, found {len(frames)}: a one-frame video has "
                         "no optical flow")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        params.tau, params.lambda_, params.theta, params.n_scales, params.warps, params.epsilon,
        params.inner_iterations, params.outer_iterations, params.scale_step, params.gamma,
        params.median_filtering, False,
    )
    gray = [_gray(frame) for frame in frames]
    flows = [quantise(tvl1.calc(before, after, None), params.bound) for before, after in zip(gray, gray[1:])]
    if ends_video:
        flows.append(flows[-1])
    return np.stack(flows)
