"""STG-NF: a spatio-temporal graph normalizing flow over human pose segments.

Implements the flow of Hirschorn & Avidan, "Normalizing Flows for Human Pose Anomaly Detection"
(ICCV 2023), which is also the guidance network of GENet (Yang et al., ACM MM 2024). A segment
(x, y of 18 OpenPose joints over T frames) is mapped by K Glow-style steps (ActNorm, channel
reversal, affine coupling whose scale and shift come from an ST-GCN unit) to a latent z with a
Gaussian prior N(R, 1) for normal poses. The loss and the anomaly score are the negative
log-likelihood in bits per dimension.

Parameter and buffer names follow the released STG-NF checkpoints so that their ``state_dict``
loads with ``strict=True``.

A choice that departs from the released code (a config value): a segment window is kept only when
its L detections span at most L + 2 frames (``released_continuity_rule: false``, the default); the
released test (at least L - 2 of its detections inside the window's L frames) also keeps windows
whose last detections come after a long gap. The released rule is ``released_continuity_rule:
true`` (``pipelines/poses/segments.py``, ``continuous_window_starts``), and each row's protocol
names the rule it used.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register
from models.base import Method, TrainInputs, VideoScore
from models.safe_checkpoint import load_checkpoint as load_released_checkpoint
from pipelines.metrics import Protocol, with_dataset_note
from pipelines.poses.segment_data import (
    SegmentBank,
    WindowSettings,
    dataset_of,
    frame_anomaly_scores,
)
from pipelines.poses.store import read_poses
from pipelines.poses.source import NOT_RECORDED, POSE_SOURCE_KEY
from pipelines.presets import resolve_params
from pipelines.provenance import sha256_file
from pipelines.training import StageRun, check_finite, load_checkpoint, torch_device

NUM_JOINTS = 18
POSE_CHANNELS = 2  # x and y; the confidence channel is not modelled

# OpenPose-18 bones (ST-GCN's "openpose" layout), joint order as in pipelines.poses.segments.
SKELETON_EDGES = (
    (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5),
    (8, 2), (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
)

# The coupling scale is sigmoid(h + 2) + eps: near 0.88 at h = 0, and never exactly 0.
_SCALE_OFFSET = 2.0
_SCALE_EPS = 1e-6
_ACTNORM_EPS = 1e-6
_PRIOR_VARIANCE_EPS = 1e-6


def skeleton_adjacency(max_hop: int = 8) -> torch.Tensor:
    """(V, V) uniform-strategy adjacency: joints within ``max_hop`` bones are linked, columns sum to 1.

    The OpenPose-18 skeleton has diameter 8 (right ankle to left ankle through the shoulders),
    so the released ``max_hop = 8`` links every pair and every entry is 1/18.
    """
    step = torch.eye(NUM_JOINTS, dtype=torch.float64)
    for i, j in SKELETON_EDGES:
        step[i, j] = step[j, i] = 1.0
    reach = torch.eye(NUM_JOINTS, dtype=torch.float64)
    for _ in range(max_hop):
        reach = ((reach @ step) > 0).double()
    return (reach / reach.sum(dim=0, keepdim=True)).float()


class ActNorm(nn.Module):
    """Per-channel affine normalisation, y = (x + bias) * exp(logs), with data-dependent init.

    The first forward pass in training mode sets bias and logs so that the batch comes out with
    zero mean and unit (population) standard deviation per channel. Loading a state dict counts
    as initialisation.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.initialized = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "bias" in state_dict and prefix + "logs" in state_dict:
            self.initialized = True

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + _ACTNORM_EPS)))
        self.initialized = True

    def _require_initialized(self) -> None:
        if not self.initialized:
            raise RuntimeError(
                "ActNorm is not initialised: run one forward pass in training mode on real data "
                "or load a checkpoint before evaluating or inverting the flow"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return y and the log-determinant (a scalar shared by every sample)."""
        if not self.initialized and self.training:
            self._initialize(x)
        self._require_initialized()
        num_positions = x.shape[2] * x.shape[3]
        return (x + self.bias) * torch.exp(self.logs), self.logs.sum() * num_positions

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        self._require_initialized()
        return y * torch.exp(-self.logs) - self.bias


class GraphConv(nn.Module):
    """1x1 channel mix followed by aggregation over joints with a fixed adjacency (one partition)."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.register_buffer("adjacency", adjacency.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nctv,vw->nctw", self.conv(x), self.adjacency)


class STGCNUnit(nn.Module):
    """ST-GCN unit (Yan et al., AAAI 2018): graph conv, BN-ReLU-temporal conv-BN, residual, ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temporal_kernel: int,
        adjacency: torch.Tensor,
        residual: bool,
    ):
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, adjacency)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(
                out_channels,
                out_channels,
                kernel_size=(temporal_kernel, 1),
                padding=((temporal_kernel - 1) // 2, 0),
            ),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels))
            if residual
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tcn(self.gcn(x))
        if self.residual is not None:
            h = h + self.residual(x)
        return F.relu(h)


class FlowStep(nn.Module):
    """One step: ActNorm, channel reversal (x <-> y), affine coupling conditioned by an ST-GCN unit."""

    def __init__(self, temporal_kernel: int, adjacency: torch.Tensor, first: bool):
        super().__init__()
        half = POSE_CHANNELS // 2
        self.actnorm = ActNorm(POSE_CHANNELS)
        # A one-element list so the parameter names read "block.0.*", as in the released weights;
        # the first step of the flow has no residual branch.
        self.block = nn.ModuleList(
            [STGCNUnit(half, POSE_CHANNELS, temporal_kernel, adjacency, residual=not first)]
        )

    def _shift_and_scale(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.block[0](z1)
        shift, raw_scale = h[:, 0::2], h[:, 1::2]
        return shift, torch.sigmoid(raw_scale + _SCALE_OFFSET) + _SCALE_EPS

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return z and the per-sample log-determinant."""
        z, logdet = self.actnorm(x)
        z = z.flip(1)
        z1, z2 = z.chunk(2, dim=1)
        shift, scale = self._shift_and_scale(z1)
        z2 = (z2 + shift) * scale
        logdet = logdet + torch.log(scale).sum(dim=(1, 2, 3))
        return torch.cat((z1, z2), dim=1), logdet

    def reverse(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z.chunk(2, dim=1)
        shift, scale = self._shift_and_scale(z1)
        z2 = z2 / scale - shift
        return self.actnorm.reverse(torch.cat((z1, z2), dim=1).flip(1))


class FlowNet(nn.Module):
    """K flow steps applied in sequence (a single level: no squeeze, no split)."""

    def __init__(self, num_steps: int, temporal_kernel: int, adjacency: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList(
            FlowStep(temporal_kernel, adjacency, first=(k == 0)) for k in range(num_steps)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return z and the per-sample log-determinant of dz/dx."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, step_logdet = layer(x)
            logdet = logdet + step_logdet
        return x, logdet

    def reverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.reverse(z)
        return z


class STGNF(nn.Module):
    """The STG-NF flow with its Gaussian prior; ``forward`` gives the latent and the NLL in bits/dim.

    Labels select the prior mean: +1 (normal) N(R, 1), -1 (abnormal, supervised setting) N(-R, 1),
    0 (unlabelled) N(0, 1). Without labels every sample counts as normal, as in unsupervised
    training and in testing.
    """

    def __init__(
        self,
        seg_len: int = 24,
        num_steps: int = 8,
        prior_mean: float = 3.0,
        max_hop: int = 8,
        temporal_kernel: int | None = None,
    ):
        super().__init__()
        if temporal_kernel is None:
            temporal_kernel = seg_len // 2 + 1
        if temporal_kernel % 2 == 0:
            raise ValueError(
                f"temporal kernel must be odd for 'same' padding; got {temporal_kernel} "
                f"(seg_len {seg_len}); pass an odd temporal_kernel"
            )
        self.seg_len = seg_len
        self.temporal_kernel = temporal_kernel
        self.flow = FlowNet(num_steps, temporal_kernel, skeleton_adjacency(max_hop))
        # Each prior buffer stacks (mean, log std) along channels, the released checkpoints' layout.
        shape = (POSE_CHANNELS, seg_len, NUM_JOINTS)
        log_std = torch.zeros(shape)
        self.register_buffer("prior_h", torch.zeros(1, 2 * POSE_CHANNELS, seg_len, NUM_JOINTS))
        self.register_buffer("prior_h_normal", torch.cat((torch.full(shape, prior_mean), log_std)))
        self.register_buffer("prior_h_abnormal", torch.cat((torch.full(shape, -prior_mean), log_std)))

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], expected: Mapping[str, Any] | None = None) -> "STGNF":
        """Build the model a released checkpoint describes (its ``args``) and load its weights strictly.

        Returns the model in eval mode. Raises ValueError for settings this implementation does not
        cover (several flow levels, hidden ST-GCN layers, learned permutations, edge importance), and,
        with ``expected`` (a ``flow_identity``), for a geometry other than the configured one: checked
        before anything is built, so a crafted file cannot make it build a huge network.
        """
        if not isinstance(checkpoint, Mapping) or not {"args", "state_dict"} <= set(checkpoint):
            found = sorted(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise ValueError(f"not an STG-NF release: it needs 'args' and 'state_dict', it holds {found}")
        args = checkpoint["args"]
        if not isinstance(args, (argparse.Namespace, Mapping)):
            raise ValueError(f"not an STG-NF release: its 'args' is a {type(args).__name__}")
        settings = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        if expected is not None:
            found = {"seg_len": settings.get("seg_len"), "num_steps": settings.get("K"),
                     "prior_mean": settings.get("R"), "max_hop": settings.get("max_hop")}
            wanted = {key: expected[key] for key in found}
            if any(found[key] is None or float(found[key]) != float(wanted[key]) for key in found):
                raise ValueError(f"released checkpoint has {found}, the configuration asks for {wanted}")
        unsupported = {
            "L": settings.get("L", 1) != 1,
            "hidden_dim": settings.get("hidden_dim", 0) != 0,
            "strategy": settings.get("strategy", "uniform") != "uniform",
            "flow_permutation": settings.get("flow_permutation") in ("invconv", "shuffle"),
            "edge_importance": bool(settings.get("edge_importance", False)),
            "model_confidence": bool(settings.get("model_confidence", False)),
        }
        bad = {key: settings.get(key) for key, is_bad in unsupported.items() if is_bad}
        if bad:
            raise ValueError(f"checkpoint settings not supported by this STG-NF implementation: {bad}")
        model = cls(
            seg_len=int(settings["seg_len"]),
            num_steps=int(settings["K"]),
            prior_mean=float(settings["R"]),
            max_hop=int(settings["max_hop"]),
            temporal_kernel=settings.get("temporal_kernel"),
        )
        try:
            model.load_state_dict(checkpoint["state_dict"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:  # missing, extra or misshapen weights
            raise ValueError(f"its weights do not fit the network its 'args' describe: {err}") from None
        return model.eval()

    def _prior(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = labels.reshape(-1, 1, 1, 1)
        h = torch.where(
            labels == 1,
            self.prior_h_normal.unsqueeze(0),
            torch.where(labels == -1, self.prior_h_abnormal.unsqueeze(0), self.prior_h),
        )
        return h.chunk(2, dim=1)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 2, T, 18) normalised poses -> (z of the same shape, NLL in bits/dim of shape (N,))."""
        if labels is None:
            labels = torch.ones(x.shape[0], device=x.device)
        z, logdet = self.flow(x)
        mean, log_std = self._prior(labels.to(x.device))
        log_density = -0.5 * (
            2.0 * log_std
            + (z - mean) ** 2 / (torch.exp(2.0 * log_std) + _PRIOR_VARIANCE_EPS)
            + math.log(2.0 * math.pi)
        )
        log_likelihood = logdet + log_density.sum(dim=(1, 2, 3))
        dims = x.shape[1] * x.shape[2] * x.shape[3]
        return z, -log_likelihood / (math.log(2.0) * dims)

    def reverse(self, z: torch.Tensor) -> torch.Tensor:
        """Invert the flow: latent (N, 2, T, 18) -> poses."""
        return self.flow.reverse(z)


@dataclass(frozen=True)
class STGNFTrainingConfig:
    """The released STG-NF training recipe.

    Weight decay is 0: the official code parses a 5e-5 flag but never hands it to the optimiser,
    and the released optimiser states record 0.
    """

    epochs: int = 8
    batch_size: int = 256
    lr: float = 5e-4
    lr_decay: float = 0.99
    weight_decay: float = 0.0
    grad_clip_norm: float = 100.0
    flip_augmentation: bool = True  # doubles the training set with mirrored segments

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: after epoch e the rate becomes lr * decay**e."""
        return self.lr * self.lr_decay ** max(epoch - 1, 0)

    def make_optimizer(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Adamax:
        return torch.optim.Adamax(parameters, lr=self.lr, weight_decay=self.weight_decay)


# ---------------------------------------------------------------------------------------------
# The method in the pipeline: one training stage ("train"), scoring of a video's poses file and
# the paper protocol. GENet (models/genet.py) reuses the training loop as its guidance stage.
# ---------------------------------------------------------------------------------------------

# "paper" is the released schedule; "cpu_budget" fits two CPU cores: fewer epochs on a seeded subset.
PRESETS = {
    "paper": {"epochs": 8, "batch_size": 256, "max_train_segments": None},
    "cpu_budget": {"epochs": 4, "batch_size": 256, "max_train_segments": 20000},
}
_SCORING_BATCH = 1024


def window_settings(params: Mapping[str, Any], stride_key: str) -> WindowSettings:
    """Segment windows for training (``train_stride``) or scoring (``test_stride``)."""
    return WindowSettings(
        seg_len=int(params["seg_len"]),
        stride=int(params[stride_key]),
        max_missing=int(params["max_missing"]),
        released_rule=bool(params["released_continuity_rule"]),
        frame_size=tuple(params["frame_size"]),
    )


def flow_identity(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint must share with the configuration to be reused."""
    return {
        "seg_len": int(params["seg_len"]),
        "num_steps": int(params["num_steps"]),
        "prior_mean": float(params["prior_mean"]),
        "max_hop": int(params["max_hop"]),
        "frame_size": list(params["frame_size"]),
    }


def flow_from_params(params: Mapping[str, Any]) -> STGNF:
    return STGNF(int(params["seg_len"]), int(params["num_steps"]), float(params["prior_mean"]), int(params["max_hop"]))


def training_schedule(params: Mapping[str, Any]) -> tuple[STGNFTrainingConfig, int | None]:
    """The training recipe of the preset, with any explicitly configured value taking precedence."""
    chosen = {k: params.get(k) if params.get(k) is not None else v for k, v in PRESETS[params["preset"]].items()}
    config = STGNFTrainingConfig(epochs=int(chosen["epochs"]), batch_size=int(chosen["batch_size"]),
                                 flip_augmentation=bool(params["flip_augmentation"]))
    return config, chosen["max_train_segments"]


#: sha256 of the checkpoints STG-NF released (orhir/STG-NF@fc9e424, ``checkpoints/``); GENet's
#: ``pretrained_ShanghaiTech.tar`` and ``pretrained_UBnormal.tar`` are byte-identical to the first and third.
RELEASED_CHECKPOINTS = {
    "4950205cb5cdd3c4827e3214ac6c93dc7050c0d059c8325907cbe977360a70ca": "ShanghaiTech_85_9.tar",
    "83c1015e057324013cf77bdd8921d1dca7c81954483b5f4692bfe7317de109f4": "UBnormal_supervised_79_2.tar",
    "1e054a5172f118a0ffa03949840961a6ebc6539c7654959910b6e123bcb7ade3": "UBnormal_unsupervised_71_8.tar",
}


def verify_release(path: str | Path, setting: str = "pretrained") -> str:
    """The sha256 of ``path``, which must be one of STG-NF's released checkpoints: a download that
    is cut short, damaged or another file is refused before anything of it is read. ``setting`` is
    the method's config key that named the file."""
    digest = sha256_file(path)
    if digest not in RELEASED_CHECKPOINTS:
        known = ", ".join(f"{name} ({value[:12]}...)" for value, name in RELEASED_CHECKPOINTS.items())
        raise ValueError(f"{path}: not one of STG-NF's released checkpoints (its sha256 is {digest}; the "
                         f"releases are {known}); download it again from github.com/orhir/STG-NF/tree/"
                         f"fc9e424/checkpoints, or train the flow here by setting {setting}: null")
    return digest


def load_released_flow(path: str | Path, params: Mapping[str, Any], setting: str = "pretrained") -> tuple[STGNF, str]:
    """A released STG-NF checkpoint, its checksum verified, read by the safe loader and checked
    against the configured geometry; with its sha256."""
    digest = verify_release(path, setting)
    return flow_from_release(path, params), digest


def flow_from_release(path: str | Path, params: Mapping[str, Any]) -> STGNF:
    """The flow of a checkpoint in STG-NF's release format (``args`` and ``state_dict``), checked
    against the configured geometry; each error names the file."""
    checkpoint = load_released_checkpoint(path)  # its errors name the file
    try:
        return STGNF.from_checkpoint(checkpoint, flow_identity(params))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def fit_flow(
    model: STGNF,
    n_segments: int,
    batch_input: Callable[[np.ndarray, np.ndarray], np.ndarray],
    config: STGNFTrainingConfig,
    max_segments: int | None,
    run: StageRun,
    device: str,
) -> tuple[int, torch.optim.Optimizer]:
    """Train the flow on the mean NLL (Adamax, per-epoch decay, global-norm clipping).

    Returns the number of segments used and the optimiser (its state goes into the checkpoint).

    ``batch_input(segment_index, flipped)`` gives the normalised (B, 2, T, 18) batch. With flip
    augmentation the set is the segments followed by their mirror images, shuffled each epoch by a
    generator seeded from (seed, epoch), so a resumed run sees the batches a straight run would.
    """
    if n_segments == 0:
        raise ValueError("no training segments: every track is shorter than the segment length")
    chosen = np.arange(n_segments)
    if max_segments is not None and n_segments > max_segments:
        chosen = np.sort(np.random.default_rng([run.seed, 1]).choice(n_segments, max_segments, replace=False))
    items = 2 * chosen.size if config.flip_augmentation else chosen.size
    per_epoch = math.ceil(items / config.batch_size)
    model.to(device)
    optimizer = config.make_optimizer(model.parameters())
    start = run.resume(model, {"adamax": optimizer})
    model.train()
    for step in range(start, config.epochs * per_epoch):
        epoch, batch = divmod(step, per_epoch)
        order = np.random.default_rng([run.seed, 2, epoch]).permutation(items)
        picked = order[batch * config.batch_size : (batch + 1) * config.batch_size]
        x = torch.from_numpy(batch_input(chosen[picked % chosen.size], picked >= chosen.size)).to(device)
        for group in optimizer.param_groups:
            group["lr"] = config.lr_for_epoch(epoch)
        loss = model(x)[1].mean()
        check_finite(loss, f"STG-NF training, epoch {epoch}, batch {batch}")
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimizer.step()
        run.advance(model, {"adamax": optimizer})
    return int(chosen.size), optimizer


@torch.no_grad()
def segment_nll(model: STGNF, n_segments: int, batch_input: Callable[[np.ndarray, np.ndarray], np.ndarray],
                device: str) -> np.ndarray:
    """NLL in bits/dim of every segment (eval mode, no flips)."""
    model.to(device).eval()
    values = []
    for start in range(0, n_segments, _SCORING_BATCH):
        index = np.arange(start, min(start + _SCORING_BATCH, n_segments))
        x = torch.from_numpy(batch_input(index, np.zeros(index.size, bool))).to(device)
        values.append(model(x)[1].double().cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0)


def window_rule(params: Mapping[str, Any]) -> str:
    """Which pose windows were scored, in words: the two continuity rules give different windows."""
    length, missing = int(params["seg_len"]), int(params["max_missing"])
    if params.get("released_continuity_rule"):
        return (f"windows of {length} detections, the released code's continuity rule (at least {length - missing} "
                f"within {length} frames of the first)")
    return f"windows of {length} detections spanning at most {length + missing} frames"


def pose_protocol(params: dict[str, Any], label_convention: str) -> Protocol:
    """STG-NF's evaluation, shared by the methods built on it: micro AUC of raw frame scores after the
    gaussian passes of ``smoothing_sigmas`` (the release's 1..6), nothing skipped, frames without a
    person given the split's most normal score; labelled with where the skeletons came from (the
    workflow records it per dataset; every adapter's label convention starts ``<dataset>:``) and
    which windows were scored."""
    dataset = label_convention.partition(":")[0]
    # the skeletons' phrase last: it ends a row's text with NOT COMPARABLE and its reasons
    windows = f"{label_convention}; {window_rule(resolve_params(params, dataset))}"
    return Protocol(
        pooling="micro",
        normalisation="none",
        smoothing_sigmas=tuple(params.get("smoothing_sigmas", (1, 2, 3, 4, 5, 6))),
        label_convention=with_dataset_note(windows, params, POSE_SOURCE_KEY, NOT_RECORDED),
        skipped_start_frames=0,
        empty_frame_fill="most_normal_in_split",
    )


@register
class STGNFMethod(Method):
    """STG-NF (Hirschorn & Avidan, ICCV 2023), unsupervised: trained on the normal training poses.

    Scoring follows the paper's protocol: every test window (stride 1) gets the normality -NLL at its
    centre frame, a frame takes its most abnormal person, frames where no window is centred (nobody
    there, or the first and last L/2 frames of a track) are marked empty and the evaluation, which sees the whole test split, gives them its maximum frame
    normality (the lowest anomaly score) as the paper does, then smooths each video with Gaussian
    passes sigma 1..6 and pools all frames (micro AUC).
    """

    name = "stg_nf"
    input_kind = "poses"
    supervision = "one_class"
    stages = ("train",)
    uses_gpu = True
    protocol_params = ("smoothing_sigmas", POSE_SOURCE_KEY)
    scoring_params = ("test_stride",)
    runtime_params = ("checkpoint_every_steps",)
    released_checkpoint_params = {"train": "pretrained"}

    def resolved(self, files: list[Path]) -> dict[str, Any]:
        """Parameters for the dataset the input files belong to (``per_dataset`` overrides applied)."""
        return resolve_params(self.params, dataset_of(files))

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        params = self.resolved(inputs.files)
        device = torch_device()
        run = self.stage_run(checkpoint_out, stage, flow_identity(params), params,
                             int(params["checkpoint_every_steps"]), inputs.sources())
        bank = SegmentBank.from_files(inputs.files, window_settings(params, "train_stride"))
        extra: dict[str, Any] = {"n_train_segments": len(bank)}
        if params.get("pretrained"):
            model, extra["pretrained_sha256"] = load_released_flow(params["pretrained"], params)
            optimizers = {}
        else:
            model = flow_from_params(params)
            config, max_segments = training_schedule(params)
            used, optimizer = fit_flow(model, len(bank), bank.model_input, config, max_segments, run, device)
            extra["n_segments_used"] = used
            optimizers = {"adamax": optimizer}
        run.finish(model.cpu(), optimizers, extra)

    def load_flow(self, checkpoint: Path, params: Mapping[str, Any]) -> tuple[STGNF, dict[str, Any]]:
        payload = load_checkpoint(checkpoint, self.name, flow_identity(params))
        model = flow_from_params(params)
        model.load_state_dict(payload["model"])
        return model.eval(), payload["extra"]

    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        if checkpoint is None:
            raise ValueError("stg_nf scores with a trained checkpoint; none was given")
        params = self.resolved([video])
        model, _ = self.load_flow(checkpoint, params)
        tracks, _ = read_poses(video)
        bank = SegmentBank([tracks], window_settings(params, "test_stride"))
        normality = -segment_nll(model, len(bank), bank.model_input, torch_device())
        scores, empty = frame_anomaly_scores(tracks.n_frames, bank.track_ids, bank.start_frames, normality,
                                             int(params["seg_len"]))
        return VideoScore(scores, np.ones(scores.size, bool), empty)

    def protocol(self, label_convention: str) -> Protocol:
        return pose_protocol(self.params, label_convention)
