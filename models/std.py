"""STD: video anomaly detection with spatio-temporal dissociation.

Implements Chang, Tu, Xie, Luo, Zhang, Sui and Yuan, "Video anomaly detection with
spatio-temporal dissociation", Pattern Recognition 122:108213 (2022). Two autoencoders split a
5-frame clip F0..F4 (RGB in [0, 1]): an appearance autoencoder reconstructs the FIRST frame F0,
and a motion U-Net with variance attention maps F0..F3 to the RGB difference F4 - F0. A deep
K-means module clusters the joint per-position code of both encoders; the test score is the
error of recon(F0) + predicted difference against F4, weighted by the soft cluster distance.

Behaviour that decides the numbers (kept from the official code):
- Training is staged (``std_schedule``): 5,000 autoencoder steps, K-means on 500 batches of
  per-position codes to set the centres, then 100,000 iterations of one autoencoder step and one
  cluster step on the same batch, each with its own fresh forward (``std_optimiser_step``).
  The K-means forwards run in training mode (batch statistics in the BatchNorms), as there.
- The K-means codes are concat(z_s, z_m) WITHOUT the per-position L2 normalisation that the
  cluster distances use (``kmeans_on_l2_normalised`` = False reproduces this quirk).
- The cluster optimiser shares two convolutions with the autoencoder optimiser (the appearance
  projection and the last motion-encoder conv), so all gradients are cleared before every step.
- The score uses the reconstructed F0, not the real one; per video it is 1 / error, then
  1 - min-max, reciprocal first (not equivalent to min-max of the error under pooled AUC).
- Label offset: test clips start at i = 0..n-6 and clip i predicts frame i+4, but the official
  evaluation pairs it with the label of frame i+5. The first ``first_scored_frame`` (= 5) frames
  of every video are unscored and the scores of a video align with its labels [5, n).

Choices where the sources are silent:
- K-means runs with k-means++ and ``STDConfig.kmeans_n_init`` = 10 restarts, the scikit-learn
  default when the code was written (current scikit-learn would use 1).
- A video whose reciprocal error is constant scores anomaly 0 throughout instead of NaN (no frame
  stands out), as the per-video min-max of ``pipelines.metrics`` treats any constant video.

The last section registers the pipeline's method ``std``: presets of these settings, the three
stages as three resumable training jobs (each continuing from the previous stage's checkpoint,
optimiser states and random streams included, as the official single run does), streamed scoring of one video, and
the paper's protocol (the stored score is -regularity; the evaluation's per-video min-max turns
it into 1 - minmax(regularity)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from models import register
from models.base import Method, TrainInputs, VideoScore
from pipelines.frame_clips import ClipSampler, FrameFormat, clip_starts, sliding_clips, video_length
from pipelines.metrics import Protocol
from pipelines.presets import resolve_preset
from pipelines.training import CheckpointError, StageRun, check_finite, load_checkpoint, torch_device


@dataclass
class STDConfig:
    """Hyper-parameters of STD; defaults are the official code's (identical for all datasets)."""

    image_size: int = 256  # frames are resized to image_size x image_size, RGB in [0, 1]
    channels: int = 3
    clip_length: int = 5  # F0..F4; motion input F0..F3, target F4 - F0
    base_width: int = 32  # stem width; the three down-stages double it to 8x
    clusters: int = 32  # K of the deep K-means module
    soft_assign_alpha: float = 25.0  # sharpness of the soft cluster assignment
    leaky_slope: float = 0.01  # LeakyReLU slope inside the residual blocks
    gdl_weight: float = 0.01  # weight of the gradient-difference loss on the predicted F4
    cluster_loss_weight: float = 0.1
    ae_lr: float = 1e-5  # Adam on every autoencoder weight
    cluster_lr: float = 1e-6  # Adam on centres, appearance projection, last motion conv
    batch_size: int = 4
    pretrain_iterations: int = 5_000
    kmeans_batches: int = 500  # batches whose per-position codes K-means clusters
    kmeans_n_init: int = 10
    kmeans_on_l2_normalised: bool = False  # the official code clusters un-normalised codes
    joint_iterations: int = 100_000
    checkpoint_every: int = 5_000  # joint-stage iterations between checkpoints
    first_scored_frame: int = 5  # see the label offset in the module docstring


@dataclass(frozen=True)
class STDStage:
    """One training stage: ``iterations`` batches, each stepping ``optimisers`` in order.
    A stage without optimisers is the K-means initialisation of the centres."""

    name: str
    iterations: int
    optimisers: tuple[str, ...]


def std_schedule(cfg: STDConfig) -> tuple[STDStage, ...]:
    """The three training stages in order."""
    return (
        STDStage("pretrain_ae", cfg.pretrain_iterations, ("ae",)),
        STDStage("init_centres", cfg.kmeans_batches, ()),
        STDStage("joint", cfg.joint_iterations, ("ae", "cluster")),
    )


@dataclass
class STDOutputs:
    """What one forward pass produces; h, w = H/8, W/8."""

    appearance_recon: torch.Tensor  # (B, C, H, W) reconstruction of F0
    motion_pred: torch.Tensor  # (B, C, H, W) prediction of F4 - F0
    appearance_code: torch.Tensor  # (B, 8w, h, w) z_s, L1-normalised over channels
    motion_code: torch.Tensor  # (B, 8w, h, w) z_m, L1-normalised over channels
    distances: torch.Tensor  # (B, h, w, K) distance of each L2-normalised code to each centre
    assignments: torch.Tensor  # (B, h, w, K) soft assignment, sums to 1 over K


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class DownBlock(nn.Module):
    """Residual block that halves the resolution; its shortcut is a strided 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, slope: float):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride=2)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = _conv3x3(c_in, c_out, stride=2)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class UpBlock(nn.Module):
    """Residual block that doubles the resolution by pixel shuffle (c_in -> c_in / 4 channels)."""

    def __init__(self, c_in: int, c_out: int, slope: float):
        super().__init__()
        self.shuffle = nn.PixelShuffle(2)
        self.conv1 = _conv3x3(c_in // 4, c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = _conv3x3(c_in // 4, c_out)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shuffled = self.shuffle(x)
        return self.act(self.conv2(self.act(self.conv1(shuffled))) + self.shortcut(shuffled))


class VarianceAttention(nn.Module):
    """Re-weights positions by exp(a), a = softmax over positions of the channel variance
    (a sum of squares, not a mean) of an average-pooled 1x1 projection; a is in (0, 1], so the
    re-weighting lies in (1, e]."""

    def __init__(self, channels: int, pool: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = pool

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention a (B, 1, H, W), nearest-upsampled from the pooled grid."""
        projected = F.avg_pool2d(self.proj(x), self.pool)
        variance = ((projected - projected.mean(dim=1, keepdim=True)) ** 2).sum(dim=1, keepdim=True)
        attention = torch.softmax(variance.flatten(1), dim=1).reshape(variance.shape)
        return F.interpolate(attention, size=x.shape[-2:], mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(self.weights(x))


class AppearanceAE(nn.Module):
    """Residual autoencoder of a single frame: (B, C, H, W) -> code (B, 8w, H/8, W/8), frame."""

    def __init__(self, channels: int, width: int, slope: float):
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(channels, width), nn.ReLU())
        self.down = nn.Sequential(
            nn.BatchNorm2d(width), DownBlock(width, 2 * width, slope),
            nn.BatchNorm2d(2 * width), DownBlock(2 * width, 4 * width, slope),
            nn.BatchNorm2d(4 * width), DownBlock(4 * width, 8 * width, slope),
        )
        self.proj = nn.Sequential(_conv3x3(8 * width, 8 * width), nn.ReLU())
        self.decoder = nn.Sequential(
            UpBlock(8 * width, 8 * width, slope),
            UpBlock(8 * width, 4 * width, slope),
            UpBlock(4 * width, 2 * width, slope),
            _conv3x3(2 * width, channels),
        )

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = F.normalize(self.proj(self.down(self.stem(frame))), p=1, dim=1)
        return code, self.decoder(code)


class MotionAE(nn.Module):
    """U-Net from stacked frames to a frame difference, variance attention after each down-stage."""

    def __init__(self, in_channels: int, out_channels: int, width: int, slope: float):
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.ReLU())
        self.stage1 = nn.Sequential(DownBlock(width, 2 * width, slope), VarianceAttention(2 * width, 8))
        self.stage2 = nn.Sequential(DownBlock(2 * width, 4 * width, slope), VarianceAttention(4 * width, 4))
        self.stage3 = nn.Sequential(DownBlock(4 * width, 8 * width, slope), VarianceAttention(8 * width, 2))
        self.last_layer = _conv3x3(8 * width, 8 * width)
        self.up1 = UpBlock(8 * width, 4 * width, slope)
        self.up2 = UpBlock(8 * width, 2 * width, slope)
        self.up3 = UpBlock(4 * width, 2 * width, slope)
        self.out = _conv3x3(2 * width, out_channels)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip1 = self.stage1(self.stem(frames))
        skip2 = self.stage2(skip1)
        code = F.normalize(self.last_layer(self.stage3(skip2)), p=1, dim=1)
        decoded = self.up2(torch.cat((self.up1(code), skip2), dim=1))
        decoded = self.up3(torch.cat((decoded, skip1), dim=1))
        return code, self.out(decoded)


class DeepKMeans(nn.Module):
    """Learnable centres; per position, Euclidean distances of the L2-normalised code to every
    centre and the soft assignment softmax(-alpha * d) over centres."""

    def __init__(self, dim: int, clusters: int, alpha: float):
        super().__init__()
        self.centres = nn.Parameter(torch.rand(clusters, dim))
        self.alpha = alpha

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = codes.shape
        unit = F.normalize(codes, dim=1).permute(0, 2, 3, 1).reshape(b, h * w, d)
        distances = torch.cdist(unit, self.centres.unsqueeze(0)).reshape(b, h, w, -1)
        # softmax is shift-invariant, so this equals the official softmax(-alpha * (d - min d))
        return distances, torch.softmax(-self.alpha * distances, dim=-1)


class STDNet(nn.Module):
    """STD: clip (B, 5, C, H, W) in [0, 1] -> ``STDOutputs``; H and W divisible by 16."""

    def __init__(self, cfg: STDConfig | None = None):
        super().__init__()
        self.cfg = cfg or STDConfig()
        c = self.cfg
        self.appearance = AppearanceAE(c.channels, c.base_width, c.leaky_slope)
        self.motion = MotionAE(c.channels * (c.clip_length - 1), c.channels, c.base_width, c.leaky_slope)
        self.clustering = DeepKMeans(16 * c.base_width, c.clusters, c.soft_assign_alpha)

    def forward(self, clip: torch.Tensor) -> STDOutputs:
        b, t, c, h, w = clip.shape
        # 16, not 8: the first variance attention pools the H/2 map by 8
        if t != self.cfg.clip_length or c != self.cfg.channels or h % 16 or w % 16:
            raise ValueError(
                f"STDNet expects clips (B, {self.cfg.clip_length}, {self.cfg.channels}, H, W) "
                f"with H and W divisible by 16, got {tuple(clip.shape)}"
            )
        appearance_code, appearance_recon = self.appearance(clip[:, 0])
        motion_code, motion_pred = self.motion(clip[:, :-1].reshape(b, (t - 1) * c, h, w))
        distances, assignments = self.clustering(torch.cat((appearance_code, motion_code), dim=1))
        return STDOutputs(
            appearance_recon=appearance_recon,
            motion_pred=motion_pred,
            appearance_code=appearance_code,
            motion_code=motion_code,
            distances=distances,
            assignments=assignments,
        )

    def ae_parameters(self) -> list[nn.Parameter]:
        return [*self.appearance.parameters(), *self.motion.parameters()]

    def cluster_parameters(self) -> list[nn.Parameter]:
        return [
            self.clustering.centres,
            *self.motion.last_layer.parameters(),
            *self.appearance.proj.parameters(),
        ]

    def set_centres(self, centres: torch.Tensor) -> None:
        """Replace the cluster centres, e.g. with ``init_centres`` output."""
        if centres.shape != self.clustering.centres.shape:
            raise ValueError(
                f"centres must have shape {tuple(self.clustering.centres.shape)}, got {tuple(centres.shape)}"
            )
        with torch.no_grad():
            self.clustering.centres.copy_(centres)


def kmeans_codes(outputs: STDOutputs, l2_normalised: bool) -> torch.Tensor:
    """Detached per-position codes (B*h*w, 16w) = concat(z_s, z_m), the K-means input."""
    codes = torch.cat((outputs.appearance_code, outputs.motion_code), dim=1).detach()
    if l2_normalised:
        codes = F.normalize(codes, dim=1)
    return codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])


def init_centres(codes: torch.Tensor | np.ndarray, k: int, seed: int, n_init: int = 10) -> torch.Tensor:
    """K-means (k-means++, scikit-learn) centres (k, D) of codes (N, D), as float32."""
    data = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(data)
    return torch.from_numpy(model.cluster_centers_).float()


def gradient_difference_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of |(|dx gt| - |dx pred|)| + |(|dy gt| - |dy pred|)|, forward differences whose last
    column / row is zero (so the mean runs over the full frame)."""

    def abs_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs(), (0, 1, 0, 0))
        dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs(), (0, 0, 0, 1))
        return dx, dy

    pred_dx, pred_dy = abs_gradients(prediction)
    gt_dx, gt_dy = abs_gradients(target)
    return ((gt_dx - pred_dx).abs() + (gt_dy - pred_dy).abs()).mean()


def std_ae_loss(
    outputs: STDOutputs, clip: torch.Tensor, cfg: STDConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE(recon, F0) + MSE(F0 + delta, F4) + gdl_weight * GDL(F0 + delta, F4); parts detached.
    "recon" (MSE of recon + delta against F4) is reported but not optimised."""
    first, last = clip[:, 0], clip[:, -1]
    predicted_last = first + outputs.motion_pred
    parts = {
        "appearance": F.mse_loss(outputs.appearance_recon, first),
        "motion": F.mse_loss(predicted_last, last),
        "gdl": gradient_difference_loss(predicted_last, last),
    }
    total = parts["appearance"] + parts["motion"] + cfg.gdl_weight * parts["gdl"]
    parts["recon"] = F.mse_loss(outputs.appearance_recon + outputs.motion_pred, last)
    return total, {name: value.detach() for name, value in parts.items()}


def std_cluster_loss(
    outputs: STDOutputs, clip: torch.Tensor, cfg: STDConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """cluster_loss_weight * sum over the batch of mean over (h, w, K) of d * q.
    ``clip`` is unused; it keeps the signature of ``std_ae_loss``."""
    per_clip = (outputs.distances * outputs.assignments).flatten(1).mean(dim=1)
    total = cfg.cluster_loss_weight * per_clip.sum()
    return total, {"cluster": per_clip.mean().detach()}


STD_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {
    "ae": std_ae_loss,
    "cluster": std_cluster_loss,
}


def make_optimizers(model: STDNet, cfg: STDConfig) -> dict[str, torch.optim.Adam]:
    """The two Adam optimisers, keyed as in ``std_schedule`` and ``STD_LOSSES``."""
    return {
        "ae": torch.optim.Adam(model.ae_parameters(), lr=cfg.ae_lr),
        "cluster": torch.optim.Adam(model.cluster_parameters(), lr=cfg.cluster_lr),
    }


def std_optimiser_step(
    model: STDNet,
    optimisers: dict[str, torch.optim.Optimizer],
    name: str,
    clip: torch.Tensor,
    cfg: STDConfig,
    where: str = "",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step of optimiser ``name`` on ``clip``: clear all gradients, fresh forward in training
    mode, the matching loss, backward, step. Returns the loss and its parts. With ``where`` (the step
    named for the message), a NaN or infinite loss stops before its gradients reach the weights."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss, parts = STD_LOSSES[name](model(clip), clip, cfg)
    if where:
        check_finite(loss, where)
    loss.backward()
    optimisers[name].step()
    return loss.detach(), parts


def std_regularity(outputs: STDOutputs, clip: torch.Tensor) -> torch.Tensor:
    """Per-clip regularity (B,) = 1 / mean(e * m): e is the RGB-mean squared error of
    recon(F0) + delta against F4, m the per-position cluster energy mean_K(d * q),
    nearest-upsampled to the frame size. Higher = more normal."""
    error = ((outputs.appearance_recon + outputs.motion_pred - clip[:, -1]) ** 2).mean(dim=1, keepdim=True)
    energy = (outputs.distances * outputs.assignments).mean(dim=-1).unsqueeze(1)
    energy = F.interpolate(energy, size=error.shape[-2:], mode="nearest")
    return 1 / (error * energy).flatten(1).mean(dim=1)


def std_video_score(regularities) -> torch.Tensor:
    """Anomaly score (higher = more abnormal) of ONE video: 1 - minmax(regularity).

    Entry j belongs to the clip starting at frame j and is compared with the label of frame
    j + 5 (``first_scored_frame``), as the official evaluation does.
    """
    values = torch.as_tensor(regularities, dtype=torch.float64)
    if values.ndim != 1:
        raise ValueError(f"regularities must be 1-D, got shape {tuple(values.shape)}")
    span = values.max() - values.min()
    # A constant video scores 0; a NaN anywhere stays NaN, for the score writer to refuse.
    normalised = (values - values.min()) / span if span > 0 or span.isnan() else torch.ones_like(values)
    return 1 - normalised


# ----------------------------------------------------------------------------------------------
# The pipeline's method: presets, the three training stages, streamed scoring, paper protocol.

PRESETS = {
    # The official code's values (identical for every dataset); scoring batch is ours.
    "paper": {
        "image_size": 256, "batch_size": 4, "pretrain_iterations": 5_000, "kmeans_batches": 500,
        "kmeans_n_init": 10, "joint_iterations": 100_000, "ae_lr": 1e-5, "cluster_lr": 1e-6,
        "gdl_weight": 0.01, "cluster_loss_weight": 0.1, "checkpoint_every": 5_000, "score_batch": 32,
    },
    # 15 to 43 minutes of training on two CPU cores by the day (on Ped2: 0.18-0.62 s per autoencoder
    # step, 0.30-0.89 s per joint iteration): 64 px frames, far fewer iterations, so the learning rates are ten times
    # the paper's. Measured on Ped2 it beat 32 px with 5,000 + 7,500 iterations (README).
    "cpu_budget": {
        "image_size": 64, "batch_size": 4, "pretrain_iterations": 2_000, "kmeans_batches": 100,
        "kmeans_n_init": 10, "joint_iterations": 1_500, "ae_lr": 1e-4, "cluster_lr": 1e-5,
        "gdl_weight": 0.01, "cluster_loss_weight": 0.1, "checkpoint_every": 500, "score_batch": 32,
    },
}

LOG_EVERY = 50  # training steps between progress lines


@register
class STDMethod(Method):
    """STD as a pipeline method: its three training stages as three jobs, then one scoring job
    per test video."""

    name = "std"
    input_kind = "frames"
    supervision = "one_class"
    stages = tuple(stage.name for stage in std_schedule(STDConfig()))
    uses_gpu = True
    # Scoring runs in evaluation mode (BatchNorm on its running statistics), clip by clip: a
    # scoring batch changes no score beyond rounding.
    runtime_params = ("checkpoint_every", "score_batch")
    # Every stage saves both optimisers (so both learning rates) and the random streams its batches
    # drew, which the next stage continues: the preset, frame size, batch and learning rates belong
    # to each.
    stage_params = {
        "pretrain_ae": ("preset", "image_size", "batch_size", "ae_lr", "cluster_lr", "pretrain_iterations",
                        "gdl_weight"),
        "init_centres": ("preset", "image_size", "batch_size", "ae_lr", "cluster_lr", "kmeans_batches",
                         "kmeans_n_init"),
        "joint": ("preset", "image_size", "batch_size", "ae_lr", "cluster_lr", "joint_iterations", "gdl_weight",
                  "cluster_loss_weight"),
    }

    def __init__(self, params: dict[str, Any], seed: int = 0):
        super().__init__(params, seed)
        self.settings = resolve_preset(self.name, PRESETS, params)
        keys = ("image_size", "batch_size", "pretrain_iterations", "kmeans_batches", "kmeans_n_init",
                "joint_iterations", "ae_lr", "cluster_lr", "gdl_weight", "cluster_loss_weight", "checkpoint_every")
        self.cfg = STDConfig(**{key: self.settings[key] for key in keys})
        # The official loader: PIL's RGB frames scaled to [0, 1].
        self.frame_format = FrameFormat(self.cfg.image_size, "rgb", 0.0, 1.0)
        self.identity = {"image_size": self.cfg.image_size}

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        schedule = {each.name: each for each in std_schedule(self.cfg)}
        if stage not in schedule:
            raise ValueError(f"{self.name}: unknown stage {stage!r}; stages: {self.stages}")
        spec, cfg = schedule[stage], self.cfg
        # The official loader skips the last full clip of every training video.
        with ClipSampler(inputs.files, cfg.clip_length, self.frame_format, tail=1) as sampler:
            every = cfg.checkpoint_every if spec.optimisers else 0  # K-means keeps its codes in memory
            run = self.stage_run(checkpoint_out, stage, self.identity, self.settings, every, inputs.sources(previous))
            model = STDNet(cfg).to(torch_device())  # built after StageRun seeded torch
            optimisers = make_optimizers(model, cfg)
            index = self.stages.index(stage)
            if index:
                self._load_previous(previous, self.stages[index - 1], model, optimisers, run)
            if run.resume(model, optimisers):
                print(f"resumed at step {run.step} of {spec.iterations}", flush=True)
            if spec.optimisers:
                self._optimise(run, spec, sampler, model, optimisers)
            else:
                self._init_centres(run, spec, sampler, model)
            run.finish(model, optimisers, {"training_clips": sampler.n_clips})

    def _load_previous(self, previous: Path | None, expected: str, model: STDNet, optimisers: dict,
                       run: StageRun) -> None:
        """Weights, optimiser states and random streams of the stage before, which must be
        ``expected``: the official script runs the three phases in one process from one shuffling
        loader, so each stage continues the previous stage's draws instead of replaying them."""
        if previous is None:
            raise ValueError(f"{self.name}: this stage continues from the checkpoint of stage {expected!r}")
        payload = load_checkpoint(previous, self.name, self.identity)
        if payload["stage"] != expected:
            raise CheckpointError(f"{previous}: checkpoint of stage {payload['stage']!r}, expected {expected!r}")
        model.load_state_dict(payload["model"])
        for name, optimiser in optimisers.items():
            optimiser.load_state_dict(payload["optimizers"][name])
        run.continue_streams(payload)

    def _optimise(self, run: StageRun, spec: STDStage, sampler: ClipSampler, model: STDNet, optimisers: dict) -> None:
        started = time.monotonic()
        while run.step < spec.iterations:
            clips = sampler.sample(run.rng, self.cfg.batch_size).to(torch_device())
            losses = {}
            for name in spec.optimisers:
                loss, parts = std_optimiser_step(model, optimisers, name, clips, self.cfg,
                                                 f"{self.name} stage {spec.name} step {run.step + 1} ({name} loss)")
                losses |= parts
            run.advance(model, optimisers)
            if run.step % LOG_EVERY == 0 or run.step == spec.iterations:
                text = " ".join(f"{k} {float(v):.6f}" for k, v in losses.items())
                print(f"step {run.step}/{spec.iterations} {text} {time.monotonic() - started:.0f} s", flush=True)

    @torch.no_grad()
    def _init_centres(self, run: StageRun, spec: STDStage, sampler: ClipSampler, model: STDNet) -> None:
        """K-means centres from the codes of ``spec.iterations`` batches, forwarded in training
        mode as the official code does."""
        model.train()
        codes = []
        while run.step < spec.iterations:
            clips = sampler.sample(run.rng, self.cfg.batch_size).to(torch_device())
            codes.append(kmeans_codes(model(clips), self.cfg.kmeans_on_l2_normalised).cpu())
            run.advance(model, {})
        codes = torch.cat(codes)
        print(f"k-means of {codes.shape[0]} codes of width {codes.shape[1]}", flush=True)
        model.set_centres(init_centres(codes, self.cfg.clusters, self.seed, self.cfg.kmeans_n_init).to(torch_device()))

    def load(self, checkpoint: Path | None) -> STDNet:
        """The trained network from the last stage's checkpoint, in evaluation mode on the device."""
        if checkpoint is None:
            raise ValueError(f"{self.name}: scoring needs the checkpoint of stage {self.stages[-1]!r}")
        payload = load_checkpoint(checkpoint, self.name, self.identity)
        if payload["stage"] != self.stages[-1]:
            raise CheckpointError(f"{checkpoint}: checkpoint of stage {payload['stage']!r}, scoring needs {self.stages[-1]!r}")
        model = STDNet(self.cfg)
        model.load_state_dict(payload["model"])
        return model.to(torch_device()).eval()

    @torch.no_grad()
    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        """Negative regularity -1 / mean(error * cluster energy) of every clip, written at the
        frame the official evaluation pairs it with (clip start + 5)."""
        model = self.load(checkpoint)
        n_frames = video_length(video)
        clip_starts(n_frames, self.cfg.clip_length, 1, video)  # a video too short for one clip stops here
        first = self.cfg.first_scored_frame
        scores = np.zeros(n_frames, np.float32)
        stream = sliding_clips(video, self.cfg.clip_length, self.frame_format, self.settings["score_batch"], tail=1)
        for start, clips in stream:
            clips = clips.to(torch_device())
            regularity = std_regularity(model(clips), clips)
            scores[first + start : first + start + len(clips)] = -regularity.cpu().numpy()
        scored = np.zeros(n_frames, bool)
        scored[first:] = True
        return VideoScore(scores, scored)

    def protocol(self, label_convention: str) -> Protocol:
        """Micro AUC after per-video min-max of the stored -regularity, which equals the official
        1 - minmax(regularity) (reciprocal first, then min-max); no smoothing."""
        first = self.cfg.first_scored_frame
        return Protocol(
            pooling="micro",
            normalisation="minmax_per_video",
            label_convention=(
                f"{label_convention}; std score = -1 / mean(error * cluster energy) of the clip starting at "
                f"frame t-{first} (it predicts frame t-1; paired with frame t as the official evaluation does), "
                f"per-video min-max; the first {first} frames of each video unscored"
            ),
            skipped_start_frames=first,
        )
