"""GENet's exploration network and its pairing with the frozen STG-NF guidance.

Yang et al., "Multilevel Guidance-Exploration Network and Behavior-Scene Matching Method for Human
Behavior Anomaly Detection", ACM MM 2024 (GENet / MGENet), level 1 as its public code has it: a 3D CNN
reads the I3D Mixed_5c feature map of a person tube, (1024, T/8, 3, 3) for a T-frame pose segment, and
regresses the latent z (2, T, 18) that the frozen STG-NF flow (Hirschorn & Avidan, ICCV 2023) gives the
same segment's skeleton. The 32 output channels times T/8 x 3 x 3 positions equal 2 x T x 18, so both
flatten to one vector of the same length; the pairing of elements is the fixed memory order of each.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.i3d_inception import FEATURE_DIM
from models.stg_nf import STGNF

OUT_CHANNELS = 32
_SLOPE = 0.01


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)


class ResidualBlock3d(nn.Module):
    """[Conv3d 3^3 -> BN -> LeakyReLU] x 2, plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3), nn.BatchNorm3d(channels), nn.LeakyReLU(_SLOPE),
            _conv(channels, channels, 3), nn.BatchNorm3d(channels), nn.LeakyReLU(_SLOPE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ExplorationNet(nn.Module):
    """(B, 1024, T', 3, 3) person-tube features -> (B, 32, T', 3, 3), all convolutions 'same'-padded.

    Two 3^3 reductions without activation (1024 -> 512 -> 256), a 1^3 projection to 128 with batch norm
    and LeakyReLU, four residual blocks, and two 1^3 projections to 64 and 32 channels.
    """

    def __init__(self, in_channels: int = FEATURE_DIM):
        super().__init__()
        self.reduce = nn.Sequential(_conv(in_channels, 512, 3), _conv(512, 256, 3))
        self.project = nn.Sequential(_conv(256, 128, 1), nn.BatchNorm3d(128), nn.LeakyReLU(_SLOPE))
        self.blocks = nn.Sequential(*(ResidualBlock3d(128) for _ in range(4)))
        self.head = nn.Sequential(_conv(128, 64, 1), _conv(64, OUT_CHANNELS, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.project(self.reduce(features))))


class GuidedExploration(nn.Module):
    """The frozen guidance flow and the exploration network it teaches.

    ``forward(poses, features)`` gives the flattened teacher latent and student output, each (B, 2 T 18);
    the teacher never trains: it stays in eval mode and its parameters take no gradient.
    """

    def __init__(self, teacher: STGNF, student: ExplorationNet):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student

    def train(self, mode: bool = True) -> "GuidedExploration":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, poses: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target = self.teacher(poses)[0].flatten(1)
        output = self.student(features).flatten(1)
        if output.shape != target.shape:
            raise ValueError(
                f"student output {tuple(output.shape)} does not match the teacher latent {tuple(target.shape)}: "
                "features must be (1024, seg_len / 8, 3, 3)"
            )
        return target, output

    def normality(self, poses: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Per-segment normality, -mean squared difference between teacher and student, (B,)."""
        target, output = self(poses, features)
        return -((target - output) ** 2).mean(dim=1)
