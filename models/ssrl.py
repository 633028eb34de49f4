"""SSRL: Scale-aware Spatio-temporal Relation Learning for video anomaly detection.

Li, Cai, Zeng, Zhao, ECCV 2022. Per patch scale, RTFM's ``Aggregate`` relates the patches of each
snippet along their row-major sequence (PSR); the result is folded back to its grid, compressed by
a 3x3 convolution and a linear layer to one vector per snippet, and added to all 10 clip crops
before RTFM's temporal ``Aggregate``. Scales are added one per training stage; stage 1 is RTFM.
Unlike the released code, a stage really starts from the previous stage's weights
(``load_previous_stage``). Which weights is a config value, ``stage_init``: ``last`` (the
default) takes the previous stage's last iteration, so no test-set model selection enters the
next stage; ``best_on_test`` takes its best-on-test weights, as the released code means to
(``--last_stage_ckpt best_auc_stageN.pkl``) and as the papers' numbers were made. Each row's
protocol says which.

The ``ssrl`` Method at the end trains the four stages on a weak split's features and scores test videos.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import register
from models.base import Method, TrainInputs, VideoScore
from models.rtfm import DROPOUT, Aggregate, ScoreHead, rtfm_loss, select_top_k, xavier_init
from pipelines.features.store import FeatureReader
from pipelines.metrics import Protocol
from pipelines.training import CheckpointError, check_finite, load_checkpoint, torch_device
from pipelines.weak_methods import (
    BEST_WEIGHTS_NOTE,
    FEATURE_SOURCE_KEY,
    FEATURE_TAIL_KEY,
    EvaluationCurve,
    SegmentCache,
    frame_scores,
    protocol,
    split_by_label,
    training_features,
)
from pipelines.weak_protocol import balanced_batch_indices

CLIP_CROPS = 10
STAGE_INITS = ("last", "best_on_test")
PATCH_GRIDS: tuple[tuple[int, int], ...] = ((2, 3), (3, 5), (4, 7))
TEMPORAL_UNIT = "temporal_relation"
CLASSIFIER_UNIT = "classifier"


def patch_unit(index: int) -> str:
    """Name of the module holding the branch of the ``index``-th scale of ``PATCH_GRIDS``."""
    return f"patch_branches.{index}"


@dataclass(frozen=True)
class SSRLStage:
    """One stage of the schedule: its active grids, what it trains, what it loads and freezes."""

    number: int
    grids: tuple[tuple[int, int], ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    loads_stage: int | None


SSRL_STAGES: tuple[SSRLStage, ...] = (
    SSRLStage(1, (), (TEMPORAL_UNIT, CLASSIFIER_UNIT), (), None),
    SSRLStage(2, PATCH_GRIDS[:1], (patch_unit(0),), (TEMPORAL_UNIT, CLASSIFIER_UNIT), 1),
    SSRLStage(3, PATCH_GRIDS[:2], (patch_unit(1),), (TEMPORAL_UNIT, CLASSIFIER_UNIT, patch_unit(0)), 2),
    SSRLStage(4, PATCH_GRIDS, (patch_unit(2),), (TEMPORAL_UNIT, CLASSIFIER_UNIT, patch_unit(0), patch_unit(1)), 3),
)


@dataclass(frozen=True)
class SSRLTrainConfig:
    """Optimisation settings of the reference scripts, identical for every stage.

    ``batch_per_class`` is the global batch (8 GPUs x 4 in the reference); with one process the
    BatchNorm statistics see the whole batch instead of 8 videos per GPU.
    """

    lr: float = 1e-3
    weight_decay: float = 5e-3
    max_iterations: int = 150_000
    eval_every: int = 5
    eval_after: int = 50
    seed: int = 10
    batch_per_class: int = 32
    segments: int = 32
    top_k: int = 3


def make_optimizer(model: nn.Module, config: SSRLTrainConfig = SSRLTrainConfig()) -> torch.optim.Adam:
    """Adam over the trainable parameters (frozen ones would receive no gradient anyway)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class PatchBranch(nn.Module):
    """One scale: PSR over the row-major patches of each snippet, then compression to one vector."""

    def __init__(self, grid: tuple[int, int], features: int = 2048):
        super().__init__()
        rows, cols = grid
        self.grid = grid
        padding = 1 if grid == (2, 3) else 0
        self.relation = Aggregate(features)
        self.to_clip = nn.Sequential(
            nn.Conv2d(features, features // 2, kernel_size=3, padding=padding),
            nn.ReLU(),
            nn.BatchNorm2d(features // 2),
        )
        flat = (features // 2) * (rows + 2 * padding - 2) * (cols + 2 * padding - 2)
        self.projection = nn.Linear(flat, features)
        # The reference drops out only the finest (4x7) branch's output.
        self.output_dropout = nn.Dropout(DROPOUT) if grid == (4, 7) else nn.Identity()

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, P, T, F), row-major within each snippet -> one vector per snippet (B, T, F)."""
        batch, n_patches, steps, feats = patches.shape
        sequences = patches.transpose(1, 2).reshape(batch * steps, n_patches, feats)
        related = self.relation(sequences)
        maps = related.transpose(1, 2).reshape(batch * steps, feats, *self.grid)
        compressed = self.to_clip(maps).reshape(batch, steps, -1)
        return self.output_dropout(torch.relu(self.projection(compressed)))


@dataclass
class SSRLOutput:
    """Per-crop temporal features (B, 10, T, F); crop-averaged scores and magnitudes (B, T)."""

    features: torch.Tensor
    scores: torch.Tensor
    magnitudes: torch.Tensor


class SSRLNetwork(nn.Module):
    """The SSRL network of one stage (stage 1 = RTFM).

    Input (B, 10 + sum P, T, F): the 10 clip crops, then the patches of each active scale in the
    order of ``PATCH_GRIDS``. Every scale's vector is added to all 10 crops; the temporal relation
    module and the classifier run per crop, and scores and feature magnitudes are averaged over crops.
    """

    def __init__(self, stage: int = 1, features: int = 2048):
        super().__init__()
        if not 1 <= stage <= len(SSRL_STAGES):
            raise ValueError(f"SSRL has stages 1..{len(SSRL_STAGES)}, got {stage}")
        self.stage = SSRL_STAGES[stage - 1]
        self.patch_branches = nn.ModuleList(PatchBranch(grid, features) for grid in self.stage.grids)
        self.temporal_relation = Aggregate(features)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = ScoreHead(features)
        self.apply(xavier_init)

    @property
    def input_channels(self) -> int:
        return CLIP_CROPS + sum(branch.n_patches for branch in self.patch_branches)

    def forward(self, x: torch.Tensor) -> SSRLOutput:
        if x.shape[1] != self.input_channels:
            raise ValueError(f"stage {self.stage.number} expects {self.input_channels} crops+patches, got {x.shape[1]}")
        batch, _, steps, feats = x.shape
        clip = x[:, :CLIP_CROPS]
        patch_groups = torch.split(x[:, CLIP_CROPS:], [b.n_patches for b in self.patch_branches], dim=1)
        for branch, patches in zip(self.patch_branches, patch_groups):
            clip = clip + branch(patches).unsqueeze(1)
        related = self.temporal_relation(clip.reshape(batch * CLIP_CROPS, steps, feats))
        # Dropout before both the classifier and the magnitudes: these are RTFM's "features".
        features = self.dropout(related).reshape(batch, CLIP_CROPS, steps, feats)
        scores = self.classifier(features).mean(dim=1)
        magnitudes = torch.linalg.vector_norm(features, dim=-1).mean(dim=1)
        return SSRLOutput(features, scores, magnitudes)


def _unit_of(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "patch_branches" else parts[0]


@dataclass(frozen=True)
class StageLoadReport:
    """Which state-dict entries and which units a stage took over from its predecessor."""

    loaded_keys: tuple[str, ...]
    loaded_units: tuple[str, ...]
    fresh_units: tuple[str, ...]
    frozen_parameters: tuple[str, ...]


def load_previous_stage(
    model: SSRLNetwork, state_dict: Mapping[str, torch.Tensor], freeze: bool = True
) -> StageLoadReport:
    """Load a previous stage's weights into the units ``model`` shares with it, then freeze them.

    Strict on the shared subset: every entry of ``state_dict`` must exist in ``model`` with the same
    shape, and each unit (temporal relation, classifier, one patch branch) is loaded whole or not
    at all. With ``freeze`` every loaded parameter stops requiring gradients.
    """
    own = model.state_dict()
    unknown = [k for k in state_dict if k not in own]
    if unknown:
        raise KeyError(f"previous-stage entries missing from stage {model.stage.number}: {unknown[:5]}")
    mismatched = [k for k in state_dict if state_dict[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"shape mismatch for {mismatched[:5]}")
    units = sorted({_unit_of(k) for k in state_dict})
    partial = [u for u in units if any(_unit_of(k) == u and k not in state_dict for k in own)]
    if partial:
        raise ValueError(f"previous-stage weights cover only part of {partial}")
    own.update(state_dict)
    model.load_state_dict(own, strict=True)
    frozen = []
    if freeze:
        for name, param in model.named_parameters():
            if name in state_dict:
                param.requires_grad_(False)
                frozen.append(name)
    fresh = sorted({_unit_of(k) for k in own} - set(units))
    return StageLoadReport(tuple(state_dict), tuple(units), tuple(fresh), tuple(frozen))


def staged_train_mode(model: SSRLNetwork) -> SSRLNetwork:
    """Training mode with the BatchNorm of frozen units on running statistics.

    The temporal relation module and frozen patch branches go to eval mode; the classifier stays in
    training mode because its dropout must remain active (it has no BatchNorm).
    """
    model.train()
    units = [model.temporal_relation, *model.patch_branches]
    for unit in units:
        if not any(p.requires_grad for p in unit.parameters()):
            unit.eval()
    return model


# ---------------------------------------------------------------------------------------------
# The method in the pipeline: four training stages on a weak split's features, per-video scoring.
# ---------------------------------------------------------------------------------------------

STAGE_NAMES = tuple(f"stage{stage.number}" for stage in SSRL_STAGES)
# Snippets per block when the patch branches score a test video (they work snippet by snippet).
SCORING_BLOCK = 256


def train_config(params: Mapping[str, Any]) -> SSRLTrainConfig:
    """The reference settings with the configured values in place of the defaults."""
    names = {"lr": "lr", "weight_decay": "weight_decay", "iterations": "max_iterations",
             "batch_per_class": "batch_per_class", "test_eval_after": "eval_after"}
    configured = {field: params[key] for key, field in names.items() if key in params}
    return dataclasses.replace(SSRLTrainConfig(), **configured)


def stage_init_problem(stage_init: str, params: Mapping[str, Any], every: int, has_next: bool) -> tuple[str, str] | None:
    """(key, problem) when stages cannot start from the previous stage's best-on-test weights, else None:
    ``best_on_test`` needs the test split followed while training (``every`` > 0, test_eval_every), and a
    stage that a next one starts from must evaluate it at least once within its iterations."""
    if stage_init != "best_on_test":
        return None
    if every <= 0:
        return "stage_init", "stage_init best_on_test needs test_eval_every > 0 (the evaluation split)"
    config = train_config(params)
    if has_next and config.max_iterations < EvaluationCurve.first_due(every, config.eval_after):
        return "test_eval_after", (
            f"stage_init best_on_test: with iterations {config.max_iterations}, test_eval_every {every} "
            f"and test_eval_after {config.eval_after} no stage evaluates its test split, so there are no "
            "best-on-test weights for the next stage; lower test_eval_after or test_eval_every")
    return None


def snippet_scores(model: SSRLNetwork, reader: FeatureReader, device: str) -> np.ndarray:
    """The test-time forward pass over a whole video, the patch branches run block by block.

    The same computation as ``SSRLNetwork.forward`` in eval mode; the temporal relation module needs the whole
    clip sequence (its non-local branch relates every snippet to every other), the patch branches do not.
    """
    # a copy: the patch vectors are added into it in place, never into the reader's array
    clip = torch.tensor(reader.features(), device=device).transpose(0, 1)[None]  # (1, 10, T, F)
    steps, feats = clip.shape[2], clip.shape[3]
    for branch, grid in zip(model.patch_branches, model.stage.grids):
        for start, stop in reader.blocks(SCORING_BLOCK):
            patches = torch.from_numpy(reader.patches(grid, start, stop)).to(device).transpose(0, 1)[None]
            clip[:, :, start:stop] += branch(patches).unsqueeze(1)
    related = model.temporal_relation(clip.reshape(CLIP_CROPS, steps, feats))
    features = model.dropout(related).reshape(1, CLIP_CROPS, steps, feats)
    return model.classifier(features).mean(dim=1)[0].cpu().numpy()


def score_features(model: nn.Module, video: Path, device: str) -> VideoScore:
    """Frame scores of one video's features from a model in evaluation mode."""
    with FeatureReader(video) as reader, torch.no_grad():
        return frame_scores(snippet_scores(model, reader, device), reader.n_frames, reader.tail)


@register
class SSRL(Method):
    """SSRL on ten-crop I3D clip features plus patch features (features preset ``rtfm`` with ``ssrl_patches``).

    Stage 1 is RTFM; stages 2-4 load the previous stage's checkpoint, freeze what it trained and add one
    patch scale each. Each step draws ``batch_per_class`` normal and abnormal videos (normal first).
    """

    name = "ssrl"
    input_kind = "features"
    supervision = "weak"
    stages = STAGE_NAMES
    schedules = SSRL_STAGES
    uses_gpu = True
    # The description of the features, which the workflow adds for the report rows only.
    protocol_params = (FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY)
    runtime_params = ("checkpoint_every",)
    feature_patches = "ssrl_patches"
    paper_features = "rtfm_ssrl_patches"

    @classmethod
    def config_problem(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        every = int(params.get("test_eval_every") or 0)
        return stage_init_problem(params.get("stage_init", "last"), params, every, has_next=True)

    @property
    def stage_init(self) -> str:
        """What stages 2-4 start from: the previous stage's last weights, or (as the released code
        means to, and the papers' numbers were made) its best-on-test ones."""
        value = self.params.get("stage_init", "last")
        if value not in STAGE_INITS:
            raise ValueError(f"ssrl stage_init {value!r}: expected one of {STAGE_INITS}")
        return value

    def schedule(self, stage: str) -> SSRLStage:
        """What a training stage builds, trains, freezes and loads (``schedules``, one per stage)."""
        if stage not in self.stages:
            raise ValueError(f"{self.name}: unknown stage {stage!r}; stages: {self.stages}")
        return self.schedules[self.stages.index(stage)]

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        schedule = self.schedule(stage)
        has_next = self.stages.index(stage) < len(self.stages) - 1
        every = inputs.evaluation.every if inputs.evaluation is not None else 0
        problem = stage_init_problem(self.stage_init, self.params, every, has_next)
        if problem:
            raise ValueError(f"ssrl {problem[1]}")
        config = train_config(self.params)
        normal, abnormal = split_by_label(inputs)
        files = normal + abnormal
        described = training_features(files, schedule.grids)
        if described["n_views"] != CLIP_CROPS:
            raise ValueError(f"ssrl needs ten-crop clip features; {described['feature_set']} has "
                             f"{described['n_views']} views")
        identity = {"feature_dim": described["feature_dim"], "clip_views": CLIP_CROPS}
        device = torch_device()
        run = self.stage_run(checkpoint_out, stage, identity, self.params,
                             int(self.params.get("checkpoint_every", 1000)), inputs.sources(previous))
        model = SSRLNetwork(schedule.number, described["feature_dim"])
        loaded: dict[str, Any] = {}
        if schedule.loads_stage is not None:
            if previous is None:
                raise ValueError(f"ssrl {stage} starts from the checkpoint of stage{schedule.loads_stage}; "
                                 "none was given")
            payload = load_checkpoint(previous, self.name, identity)
            if payload["stage"] != f"stage{schedule.loads_stage}":
                raise CheckpointError(f"{previous}: checkpoint of {payload['stage']}, {stage} needs "
                                      f"stage{schedule.loads_stage}")
            weights = payload["model"]
            if self.stage_init == "best_on_test":
                weights = payload.get("notes", {}).get(BEST_WEIGHTS_NOTE)
                if weights is None:
                    raise CheckpointError(f"{previous}: no best-on-test weights (stage_init best_on_test needs the "
                                          "previous stage trained with test_eval_every > 0 and evaluated at least "
                                          "once after test_eval_after)")
            report = load_previous_stage(model, weights)
            loaded = {"units": list(report.loaded_units), "frozen_parameters": len(report.frozen_parameters)}
        model.to(device)
        optimizer = make_optimizer(model, config)
        run.resume(model, {"adam": optimizer})
        # A later stage starting from this one's best-on-test weights needs them kept.
        curve = EvaluationCurve(inputs.evaluation, self.protocol, run.notes,
                                keep_best=self.stage_init == "best_on_test" and has_next,
                                after=config.eval_after)
        batch = config.batch_per_class
        with SegmentCache(run.resume_dir / "segments.h5", files, schedule.grids) as cache:
            while run.step < config.max_iterations:
                normal_idx, abnormal_idx = balanced_batch_indices(len(normal), len(abnormal), batch, run.step + 1,
                                                                  self.seed)
                items = cache.rows([*normal_idx, *(len(normal) + abnormal_idx)])
                staged_train_mode(model)
                out = model(torch.from_numpy(items).to(device))
                selection = select_top_k(out.features, out.scores, out.magnitudes, n_normal=batch, k=config.top_k)
                loss = rtfm_loss(selection)
                check_finite(loss.total, f"ssrl {stage} step {run.step + 1}")
                optimizer.zero_grad()
                loss.total.backward()
                optimizer.step()
                if curve.due(run.step + 1):
                    curve.record(run.step + 1, model, lambda path: score_features(model, path, device))
                run.advance(model, {"adam": optimizer})
        run.finish(model, {"adam": optimizer}, extra={"training_features": described, "loaded_from_previous": loaded,
                                                      "n_normal": len(normal), "n_abnormal": len(abnormal)})

    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        if checkpoint is None:
            raise ValueError("ssrl scores with a trained checkpoint; none was given")
        payload = load_checkpoint(checkpoint, self.name)
        model = SSRLNetwork(self.schedule(payload["stage"]).number, payload["identity"]["feature_dim"])
        model.load_state_dict(payload["model"])
        device = torch_device()
        model.to(device).eval()
        return score_features(model, video, device)

    def protocol(self, label_convention: str) -> Protocol:
        if self.stage_init == "best_on_test":
            start = ("stages 2-4 started from the previous stage's best-on-test weights (selected on this test "
                     "split, as the released code means to)")
        else:
            start = "stages 2-4 started from the previous stage's last weights (no test-set selection)"
        # before the features' phrase, which ends a row's text with NOT COMPARABLE and its reasons
        return protocol(self.params, f"{label_convention}; {start}")
