"""AR-Net: weakly supervised video anomaly detection via center-guided discriminative learning.

Wan, Fang, Xia, Mei, ICME 2020. A snippet scorer trained with the dynamic MIL loss (per video, the
top ceil(len/4) scores take the video's label, normal videos included) and the "center" loss (the
variance of a normal video's scores, pulling them towards their own mean). The reference numbers
come from the single-layer variant (``model_single``); the two convolutional variants of the
authors' code that run are kept as options.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Variant = Literal["single", "mean", "sequence"]


@dataclass(frozen=True)
class ARNetConfig:
    """The reference ShanghaiTech settings (the only configuration with a published number)."""

    feature_dim: int = 2048  # I3D RGB (+) flow
    variant: Variant = "single"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    videos_per_class: int = 30
    max_seqlen: int = 300
    k_divisor: int = 4
    mil_weight: float = 1.0
    center_weight: float = 20.0
    max_epoch: int = 20  # one epoch = len(train split) items
    eval_every: int = 200
    seed: int = 1


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class ARNetSingle(nn.Module):
    """``model_single``: ReLU(Linear D->D), dropout 0.7 in training, Linear D->1, sigmoid."""

    def __init__(self, feature_dim: int = 2048):
        super().__init__()
        self.embed = nn.Linear(feature_dim, feature_dim)
        self.dropout = nn.Dropout(0.7)
        self.classifier = nn.Linear(feature_dim, 1)
        self.apply(_init_weights)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, L, D) -> snippet scores (N, L) in [0, 1]."""
        hidden = self.dropout(F.relu(self.embed(features)))
        return torch.sigmoid(self.classifier(hidden)).squeeze(-1)


class _TemporalConvs(nn.Module):
    """Three parallel 'same'-padded temporal convolutions (kernel 1, 3, 5), each D->D."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(feature_dim, feature_dim, k, padding=k // 2) for k in (1, 3, 5))

    def forward(self, channels_first: torch.Tensor) -> list[torch.Tensor]:
        return [F.relu(conv(channels_first)) for conv in self.convs]


class ARNetMean(nn.Module):
    """``model_mean``: the average of the three convolution maps, dropout 0.7, Linear D->1, sigmoid."""

    def __init__(self, feature_dim: int = 2048):
        super().__init__()
        self.temporal = _TemporalConvs(feature_dim)
        self.dropout = nn.Dropout(0.7)
        self.classifier = nn.Linear(feature_dim, 1)
        self.apply(_init_weights)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.temporal(features.transpose(1, 2))
        hidden = self.dropout(torch.stack(maps).mean(dim=0).transpose(1, 2))
        return torch.sigmoid(self.classifier(hidden)).squeeze(-1)


class ARNetSequence(nn.Module):
    """``model_sequence``: y = ReLU(1x1(x5 + x3)), z = ReLU(1x1(x1 + y)), dropout, Linear, sigmoid."""

    def __init__(self, feature_dim: int = 2048):
        super().__init__()
        self.temporal = _TemporalConvs(feature_dim)
        self.merge_wide = nn.Conv1d(feature_dim, feature_dim, 1)
        self.merge_all = nn.Conv1d(feature_dim, feature_dim, 1)
        self.dropout = nn.Dropout(0.7)
        self.classifier = nn.Linear(feature_dim, 1)
        self.apply(_init_weights)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x1, x3, x5 = self.temporal(features.transpose(1, 2))
        wide = F.relu(self.merge_wide(x5 + x3))
        merged = F.relu(self.merge_all(x1 + wide))
        hidden = self.dropout(merged.transpose(1, 2))
        return torch.sigmoid(self.classifier(hidden)).squeeze(-1)


def build_arnet(variant: Variant = "single", feature_dim: int = 2048) -> nn.Module:
    """The AR-Net scorer of the named variant."""
    models = {"single": ARNetSingle, "mean": ARNetMean, "sequence": ARNetSequence}
    if variant not in models:
        raise ValueError(f"unknown AR-Net variant {variant!r}; expected one of {sorted(models)}")
    return models[variant](feature_dim)


def make_optimizer(model: nn.Module, config: ARNetConfig = ARNetConfig()) -> torch.optim.Adam:
    """Adam with the reference's constant learning rate and weight decay."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def valid_lengths(features: torch.Tensor) -> torch.Tensor:
    """Per-video count of snippets with any non-zero value, i.e. the length before zero-padding."""
    return (features.abs().amax(dim=-1) > 0).sum(dim=1)


def trim_batch(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a padded (N, L, D) batch to its longest real video; returns (features, lengths)."""
    lengths = valid_lengths(features)
    return features[:, : int(lengths.max())], lengths


def dynamic_mil_loss(
    scores: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, k_divisor: int = 4
) -> torch.Tensor:
    """BCE over the top ceil(len/k_divisor) scores of every video, each given its video's label.

    All selected instances of all videos are pooled into one mean, so longer videos weigh more;
    normal videos contribute their top-k with target 0.
    """
    selected, targets = [], []
    for video_scores, length, label in zip(scores, lengths.tolist(), labels):
        k = -(-length // k_divisor)
        top = torch.topk(video_scores[:length], k).values
        selected.append(top)
        targets.append(label.to(top.dtype).expand(k))
    return F.binary_cross_entropy(torch.cat(selected), torch.cat(targets))


def center_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over normal videos of the unbiased variance of their scores.

    Taken over all L positions of the trimmed batch, so a shorter video's padded positions, which
    receive the constant score of an all-zero input, enter its variance.
    """
    normal = scores[labels == 0]
    if normal.shape[0] == 0:
        raise ValueError("the center loss needs at least one normal video in the batch")
    return normal.var(dim=1, unbiased=True).mean()


@dataclass
class ARNetLoss:
    """Total loss and its two terms (unweighted)."""

    total: torch.Tensor
    mil: torch.Tensor
    center: torch.Tensor


def arnet_loss(
    scores: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, config: ARNetConfig = ARNetConfig()
) -> ARNetLoss:
    """L = 1 * dynamic MIL + 20 * center loss."""
    mil = dynamic_mil_loss(scores, lengths, labels, config.k_divisor)
    center = center_loss(scores, labels)
    return ARNetLoss(config.mil_weight * mil + config.center_weight * center, mil, center)
