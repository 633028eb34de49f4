"""RTFM building blocks: the multi-scale temporal network, the score head, top-k selection and loss.

Tian et al., "Weakly-supervised Video Anomaly Detection with Robust Temporal Feature Magnitude
Learning", ICCV 2021. SSRL (Li et al., ECCV 2022) reuses every piece: its stage 1 is RTFM and its
patch-relation module is the same ``Aggregate`` run along the patch axis. Behaviour follows the
authors' code where it differs from the paper: L2 (not L1) sparsity, smoothness across video
boundaries, and the ``(|m - ||a||| + ||n||)^2`` magnitude term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DROPOUT = 0.7
TOP_K = 3  # 32 segments // 10
MAGNITUDE_MARGIN = 100.0
MAGNITUDE_WEIGHT = 1e-4
SMOOTHNESS_WEIGHT = 8e-4
SPARSITY_WEIGHT = 8e-3


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv and linear layer (BN untouched)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class NonLocal1D(nn.Module):
    """Embedded dot-product non-local block over a 1-D sequence, without softmax or sub-sampling.

    The affinity is divided by the sequence length instead of softmaxed; the output BN starts at
    zero weight and bias so the block starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv1d(channels, inner, kernel_size=1)
        self.phi = nn.Conv1d(channels, inner, kernel_size=1)
        self.g = nn.Conv1d(channels, inner, kernel_size=1)
        self.out = nn.Sequential(nn.Conv1d(inner, channels, kernel_size=1), nn.BatchNorm1d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, L) -> (N, C, L)."""
        theta = self.theta(x).transpose(1, 2)
        affinity = theta @ self.phi(x) / x.shape[-1]
        attended = (affinity @ self.g(x).transpose(1, 2)).transpose(1, 2)
        return self.out(attended) + x


def _conv_relu_bn(in_ch: int, out_ch: int, kernel: int, dilation: int = 1, bias: bool = True) -> nn.Sequential:
    # The reference normalises after the activation.
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv1d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=bias),
        nn.ReLU(),
        nn.BatchNorm1d(out_ch),
    )


class Aggregate(nn.Module):
    """RTFM's multi-scale temporal network (MTN), also SSRL's patch-relation module (PSR).

    Three dilated convolutions (dilation 1, 2, 4) and a non-local branch, each to F/4 channels,
    are fused by a 3-wide convolution back to F channels and added to the input.
    Input and output are (N, L, F) with L the sequence axis (snippets or patches).
    """

    def __init__(self, features: int = 2048):
        super().__init__()
        quarter = features // 4
        self.dilated = nn.ModuleList(_conv_relu_bn(features, quarter, 3, dilation=d) for d in (1, 2, 4))
        self.reduce = nn.Sequential(nn.Conv1d(features, quarter, kernel_size=1, bias=False), nn.ReLU())
        self.non_local = NonLocal1D(quarter)
        self.fuse = _conv_relu_bn(features, features, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.transpose(1, 2)
        branches = [conv(channels_first) for conv in self.dilated]
        branches.append(self.non_local(self.reduce(channels_first)))
        fused = self.fuse(torch.cat(branches, dim=1))
        return (fused + channels_first).transpose(1, 2)


class ScoreHead(nn.Module):
    """Snippet classifier: 2048 -> 512 -> 128 -> 1 with ReLU, dropout 0.7 and a sigmoid."""

    def __init__(self, features: int = 2048, dropout: float = DROPOUT):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(features, 512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 128), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(128, 1), nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


@dataclass
class TopKSelection:
    """What RTFM's loss consumes for a batch of B normal then B abnormal videos."""

    normal_video_scores: torch.Tensor  # (B,)
    abnormal_video_scores: torch.Tensor  # (B,)
    normal_features: torch.Tensor  # (crops*B, k, F), crop-major
    abnormal_features: torch.Tensor  # (crops*B, k, F), crop-major
    abnormal_segment_scores: torch.Tensor  # (B, T), crop-averaged


def candidate_mask(shape: torch.Size, drop: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """Inverted-dropout mask on ones: 0 with probability ``drop``, else ``1/(1-drop)``."""
    keep = torch.rand(shape, generator=generator, device=device) >= drop
    return keep.float() / (1.0 - drop)


def select_top_k(
    features: torch.Tensor,
    scores: torch.Tensor,
    magnitudes: torch.Tensor,
    n_normal: int,
    k: int = TOP_K,
    drop: float = DROPOUT,
    generator: torch.Generator | None = None,
) -> TopKSelection:
    """RTFM's top-k by feature magnitude, after a random dropout mask on the candidate segments.

    features (V, crops, T, F), scores (V, T) and magnitudes (V, T) for V = 2B videos, normal first.
    Each class gets its own mask, so every step only about 30 % of segments can be selected; the
    video score is the mean snippet score at the selected positions, and the selected features of
    every crop are gathered crop-major (all videos of crop 0, then crop 1, ...).
    """
    normal, abnormal = slice(0, n_normal), slice(n_normal, None)
    picked = []
    for part in (normal, abnormal):
        mags = magnitudes[part]
        mask = candidate_mask(mags.shape, drop, generator, mags.device)
        idx = torch.topk(mags * mask, k, dim=1).indices  # (B, k)
        video_scores = torch.gather(scores[part], 1, idx).mean(dim=1)
        feats = features[part].transpose(0, 1)  # (crops, B, T, F)
        gather_idx = idx[None, :, :, None].expand(feats.shape[0], -1, -1, feats.shape[-1])
        selected = torch.gather(feats, 2, gather_idx).flatten(0, 1)  # (crops*B, k, F)
        picked.append((video_scores, selected))
    (n_scores, n_feats), (a_scores, a_feats) = picked
    return TopKSelection(n_scores, a_scores, n_feats, a_feats, scores[abnormal])


def smoothness(segment_scores: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of consecutive scores of the flattened batch.

    Flattened, so it crosses video boundaries; the last element is paired with itself.
    """
    flat = segment_scores.reshape(-1)
    return ((flat[1:] - flat[:-1]) ** 2).sum()


def sparsity(segment_scores: torch.Tensor) -> torch.Tensor:
    """L2 norm of the flattened scores (the reference uses L2, not the paper's L1)."""
    return torch.linalg.vector_norm(segment_scores.reshape(-1))


def magnitude_loss(
    normal_features: torch.Tensor, abnormal_features: torch.Tensor, margin: float = MAGNITUDE_MARGIN
) -> torch.Tensor:
    """mean_j (|m - ||mean_k a_j||| + ||mean_k n_j||)^2 over the aligned (crop, video) pairs j."""
    abnormal_norm = torch.linalg.vector_norm(abnormal_features.mean(dim=1), dim=-1)
    normal_norm = torch.linalg.vector_norm(normal_features.mean(dim=1), dim=-1)
    return (((margin - abnormal_norm).abs() + normal_norm) ** 2).mean()


@dataclass
class RTFMLoss:
    """Total loss and its four terms (unweighted)."""

    total: torch.Tensor
    classification: torch.Tensor
    magnitude: torch.Tensor
    smoothness: torch.Tensor
    sparsity: torch.Tensor


def rtfm_loss(
    selection: TopKSelection,
    margin: float = MAGNITUDE_MARGIN,
    magnitude_weight: float = MAGNITUDE_WEIGHT,
    smoothness_weight: float = SMOOTHNESS_WEIGHT,
    sparsity_weight: float = SPARSITY_WEIGHT,
) -> RTFMLoss:
    """L = BCE(video scores) + 1e-4 L_mag + 8e-4 L_smooth + 8e-3 L_sparse (abnormal scores only)."""
    video_scores = torch.cat([selection.normal_video_scores, selection.abnormal_video_scores])
    targets = torch.cat([
        torch.zeros_like(selection.normal_video_scores),
        torch.ones_like(selection.abnormal_video_scores),
    ])
    classification = F.binary_cross_entropy(video_scores, targets)
    magnitude = magnitude_loss(selection.normal_features, selection.abnormal_features, margin)
    smooth = smoothness(selection.abnormal_segment_scores)
    sparse = sparsity(selection.abnormal_segment_scores)
    total = classification + magnitude_weight * magnitude + smoothness_weight * smooth + sparsity_weight * sparse
    return RTFMLoss(total, classification, magnitude, smooth, sparse)
