"""AR-Net: weakly supervised video anomaly detection via center-guided discriminative learning.

Wan, Fang, Xia, Mei, ICME 2020. A snippet scorer trained with the dynamic MIL loss (per video, the
top ceil(len/4) scores take the video's label, normal videos included) and the "center" loss (the
variance of a normal video's scores, pulling them towards their own mean). The reference numbers
come from the single-layer variant (``model_single``); the two convolutional variants of the
authors' code that run are kept as options.

The ``arnet`` Method at the end trains it on a weak split's I3D features and scores test videos.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import Method, TrainInputs, VideoScore
from pipelines.features.presets import TEN_CROP_ORDER
from pipelines.features.store import FeatureReader
from pipelines.metrics import Protocol
from pipelines.training import check_finite, load_checkpoint, torch_device
from pipelines.weak_methods import (
    FEATURE_SOURCE_KEY,
    FEATURE_TAIL_KEY,
    EvaluationCurve,
    frame_scores,
    protocol,
    split_by_label,
    training_features,
)
from pipelines.weak_protocol import arnet_fit_length, arnet_item_videos

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


# ---------------------------------------------------------------------------------------------
# The method in the pipeline: one training stage on a weak split's features, per-video scoring.
# ---------------------------------------------------------------------------------------------

# Snippets scored per block; the convolutional variants see HALO neighbours on each side (kernel 5).
SCORING_BLOCK = 1024
HALO = 2
VIEWS = ("center", "mean")


@dataclass(frozen=True)
class ARNetRun:
    """A configured run: the model and loss settings plus what the pipeline adds."""

    config: ARNetConfig
    # Training items: ``iterations`` when set, else ``epochs`` x the training videos, as the
    # reference counts an epoch (max_epoch 20 x len(train split): 4,760 on ShanghaiTech's 238).
    iterations: int | None
    epochs: int
    view: str  # which view of ten-crop features the single-view scorer reads: the centre crop, or their mean
    checkpoint_every: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "ARNetRun":
        fields = {f.name for f in dataclasses.fields(ARNetConfig)} - {"feature_dim", "max_epoch", "eval_every", "seed"}
        config = ARNetConfig(**{k: params[k] for k in fields if k in params})
        view = params.get("view", "center")
        if view not in VIEWS:
            raise ValueError(f"arnet view must be one of {VIEWS}, got {view!r}")
        iterations = params.get("iterations")
        return cls(config, None if iterations is None else int(iterations), int(params.get("epochs", 20)), view,
                   int(params.get("checkpoint_every", 200)))

    def total_iterations(self, n_training_videos: int) -> int:
        return self.iterations if self.iterations is not None else self.epochs * n_training_videos


def read_view(reader: FeatureReader, view: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(n, D) single-view features of snippets ``start:stop``: the only view, the centre crop, or the mean."""
    if reader.n_views == 1:
        return reader.features(start, stop, view=0)
    if view == "center":
        if reader.n_views != len(TEN_CROP_ORDER):
            raise ValueError(f"{reader.path}: {reader.n_views} views; 'center' needs one or ten-crop features")
        return reader.features(start, stop, view=TEN_CROP_ORDER.index("center"))
    return reader.features(start, stop).mean(axis=1)


def score_features(model: nn.Module, video: Path, identity: dict[str, Any], device: str) -> VideoScore:
    """Frame scores of one video's features from a model in evaluation mode, streamed in blocks of
    snippets with a halo (the temporal convolutions see their neighbours)."""
    with FeatureReader(video) as reader:
        if reader.feature_dim != identity["feature_dim"]:
            raise ValueError(f"{video}: {reader.feature_dim}-d features, the checkpoint takes "
                             f"{identity['feature_dim']}-d")
        snippet_scores = np.zeros(reader.n_snippets, np.float32)
        for start, stop in reader.blocks(SCORING_BLOCK):
            low, high = max(0, start - HALO), min(reader.n_snippets, stop + HALO)
            features = torch.from_numpy(read_view(reader, identity["view"], low, high)).to(device)
            with torch.no_grad():
                scores = model(features[None])[0].cpu().numpy()
            snippet_scores[start:stop] = scores[start - low : stop - low]
        return frame_scores(snippet_scores, reader.n_frames, reader.tail)


@register
class ARNet(Method):
    """AR-Net on I3D snippet features of a weak split (features preset ``arnet`` unless configured otherwise)."""

    name = "arnet"
    input_kind = "features"
    supervision = "weak"
    stages = ("train",)
    uses_gpu = True
    # The description of the features, which the workflow adds for the report rows only.
    protocol_params = (FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY)
    runtime_params = ("checkpoint_every",)
    feature_patches = None
    paper_features = "arnet"

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        settings = ARNetRun.from_params(self.params)
        cfg = settings.config
        normal, abnormal = split_by_label(inputs)
        for kind, files in (("abnormal", abnormal), ("normal", normal)):
            if len(files) < cfg.videos_per_class:
                raise ValueError(f"arnet: videos_per_class is {cfg.videos_per_class} but the split has only "
                                 f"{len(files)} {kind} training videos")
        described = training_features(normal + abnormal)
        identity = {"feature_dim": described["feature_dim"], "variant": cfg.variant, "view": settings.view}
        device = torch_device()
        run = self.stage_run(checkpoint_out, stage, identity, self.params, settings.checkpoint_every,
                             inputs.sources(previous))
        model = build_arnet(cfg.variant, described["feature_dim"]).to(device)
        optimizer = make_optimizer(model, cfg)
        run.resume(model, {"adam": optimizer})
        curve = EvaluationCurve(inputs.evaluation, self.protocol, run.notes)
        model.train()
        total = settings.total_iterations(len(normal) + len(abnormal))
        while run.step < total:
            picked_abnormal, picked_normal = arnet_item_videos(len(abnormal), len(normal), run.rng,
                                                               cfg.videos_per_class)
            item = []
            for files, chosen, anomalous in ((abnormal, picked_abnormal, True), (normal, picked_normal, False)):
                for index in chosen:
                    with FeatureReader(files[index]) as reader:
                        video = read_view(reader, settings.view)
                    item.append(arnet_fit_length(video, anomalous, run.rng, cfg.max_seqlen))
            labels = torch.tensor([1.0] * cfg.videos_per_class + [0.0] * cfg.videos_per_class, device=device)
            features, lengths = trim_batch(torch.from_numpy(np.stack(item)).to(device))
            loss = arnet_loss(model(features), lengths, labels, cfg)
            check_finite(loss.total, f"arnet step {run.step + 1}")
            optimizer.zero_grad()
            loss.total.backward()
            optimizer.step()
            if curve.due(run.step + 1):
                curve.record(run.step + 1, model, lambda path: score_features(model, path, identity, device))
            run.advance(model, {"adam": optimizer})
        run.finish(model, {"adam": optimizer}, extra={"training_features": described, "iterations": total,
                                                      "n_normal": len(normal), "n_abnormal": len(abnormal)})

    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        if checkpoint is None:
            raise ValueError("arnet scores with a trained checkpoint; none was given")
        payload = load_checkpoint(checkpoint, self.name)
        identity = payload["identity"]
        device = torch_device()
        model = build_arnet(identity["variant"], identity["feature_dim"])
        model.load_state_dict(payload["model"])
        model.to(device).eval()
        return score_features(model, video, identity, device)

    def protocol(self, label_convention: str) -> Protocol:
        """The weak protocol, and AR-Net's false alarm rate: its paper reports the share of the normal
        test videos' frames scored >= 0.5 beside the AUC (spec: ``ano_false_alarm_normal_video``)."""
        return dataclasses.replace(protocol(self.params, label_convention), false_alarm_threshold=0.5)
