"""ResNet-50 I3D with frozen batch norm: the 2048-d backbone of RTFM and SSRL features.

The I3D ResNet-50 baseline of the non-local networks paper (Wang, Girshick, Gupta, He, "Non-local Neural
Networks", CVPR 2018), in the layout of the PyTorch port that RTFM's features were extracted with
(Tushar-N/pytorch-resnet3d): conv1 5x7x7 with stride 2 in time and space, a 2x3x3 max pool, a 2x1x1 temporal
max pool after res2, and bottlenecks whose first 1x1 conv is inflated to 3x1x1 in the blocks the
"32x2, ImageNet-pretrained, 400k" Kinetics-400 checkpoint was trained with. Module names follow the converted
checkpoint (`conv1`, `bn1`, `layer1..4.N.{conv,bn}{1,2,3}`, `layerK.0.downsample.{0,1}`, `fc`) so that it loads
with `strict=True`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 2048
KINETICS_CLASSES = 400

# Per stage: (bottleneck width, number of blocks, spatial stride, which blocks inflate conv1 to 3x1x1).
_STAGES = (
    (64, 3, 1, (1, 1, 1)),
    (128, 4, 2, (1, 0, 1, 0)),
    (256, 6, 2, (1, 0, 1, 0, 1, 0)),
    (512, 3, 2, (0, 1, 0)),
)
_EXPANSION = 4


class FrozenBatchNorm3d(nn.Module):
    """Batch norm with fixed statistics and affine terms, all stored as buffers.

    Used for feature extraction: the output never depends on the batch or on train/eval mode, and the state
    holds exactly `weight`, `bias`, `running_mean`, `running_var` as published checkpoints do.
    """

    def __init__(self, num_features: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Files re-saved from an nn.BatchNorm3d model carry a step counter that frozen statistics never use.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def _bn(channels: int) -> FrozenBatchNorm3d:
    # The converted Caffe2 model runs with PyTorch's default epsilon.
    return FrozenBatchNorm3d(channels, eps=1e-5)


class Bottleneck3d(nn.Module):
    """1x1 (or 3x1x1) -> 1x3x3 -> 1x1 residual bottleneck; the spatial stride sits on the 1x3x3 conv."""

    def __init__(self, in_channels: int, width: int, spatial_stride: int, inflate: bool) -> None:
        super().__init__()
        out_channels = width * _EXPANSION
        temporal_kernel = 3 if inflate else 1
        self.conv1 = nn.Conv3d(in_channels, width, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0),
                               bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv3d(width, width, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                               padding=(0, 1, 1), bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = _bn(out_channels)
        self.downsample = None
        if spatial_stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, spatial_stride, spatial_stride), bias=False),
                _bn(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50I3d(nn.Module):
    """ResNet-50 I3D (RGB, 3 channels). `forward` gives the 2048-d globally averaged res5 feature."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, (5, 7, 7), stride=(2, 2, 2), padding=(2, 3, 3), bias=False)
        self.bn1 = _bn(64)
        self.maxpool1 = nn.MaxPool3d((2, 3, 3), stride=(2, 2, 2))
        self.maxpool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        in_channels = 64
        for index, (width, blocks, stride, inflate) in enumerate(_STAGES, start=1):
            stage = []
            for block in range(blocks):
                stage.append(Bottleneck3d(in_channels, width, stride if block == 0 else 1, bool(inflate[block])))
                in_channels = width * _EXPANSION
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        # Kept so the published checkpoint loads strictly and its Kinetics predictions can be checked.
        self.fc = nn.Linear(FEATURE_DIM, KINETICS_CLASSES)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> res5 map (B, 2048, T/8, H/32, W/32); (B, 2048, 2, 7, 7) for 16x224x224."""
        x = self.maxpool1(F.relu(self.bn1(self.conv1(x))))
        x = self.maxpool2(self.layer1(x))
        return self.layer4(self.layer3(self.layer2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 2048): the global average of the res5 map, taken before the classifier."""
        return self.feature_map(x).mean(dim=(2, 3, 4))

    def kinetics_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 400) Kinetics-400 class scores (dropout is inactive at test time)."""
        return self.fc(self.forward(x))
