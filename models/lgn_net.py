"""LGN-Net: a local-global normality network for frame-prediction video anomaly detection.

Implements Zhao et al., "LGN-Net: Local-Global Normality Network for Video Anomaly Detection"
(arXiv:2211.07454). A global branch encodes four frames into queries that read a memory of
normal prototypes (the memory of Park et al., "Learning Memory-guided Normality for Anomaly
Detection", CVPR 2020); a local branch runs four stacked ST-LSTM cells (Wang et al., PredRNN,
NeurIPS 2017) over the same frames; a decoder fuses the memory read-out with the local features
and predicts the fifth frame.

Behaviour that decides the numbers (kept from the official code):
- The decoder sees only the read-out, built from detached attention weights over a memory that
  carries no gradient, so the prediction loss never reaches the global encoder; that encoder
  learns from the compactness and separateness losses alone.
- The memory is written by a rule, not by gradients: in training mode every forward writes the
  update after the read (the read and both losses use the pre-update memory). At test time
  ``gated_memory_update`` writes it only when the frame's point score is below gamma, and the
  caller carries the memory across test videos without resetting it.
- The local branch's frame encoder runs once per input frame, as the official predictor calls it
  in its time loop: in training its batch norms normalise each frame's batch on its own and update
  their running statistics four times a step.
- Frames are expected as the data loader of the official code makes them: BGR, resized to the
  configured size, scaled to [-1, 1]; the decoder ends in tanh.
- The first ``first_scored_frame`` (= 4) frames of every video have no prediction; the caller
  drops their labels before pooling scores.

Choices where the sources are silent, broken or unverified (the tunable ones are
``LGNNetConfig`` fields):
- Loss weights 10 (compactness) and 5 (separateness) are the code defaults; the paper's values
  are unverified.
- lambda = 0.6 and gamma = 0.009 are the evaluation defaults; the paper tunes them per dataset
  and its values are unverified.
- The memory is a buffer of the module, so checkpoints hold it with the weights.
- The official encoder defines a BatchNorm and a ReLU after its last convolution that it never
  calls; they are left out (they change no output).
- A video whose PSNR or feature distance is constant min-max normalises to 0 instead of the NaN
  the official code would produce; a non-finite PSNR or distance (diverged weights) stops scoring.
- Training batches are drawn at random from all clips (distinct within a batch), each batch on its
  own, not as the official loader's shuffled passes: an epoch has the official number of batches
  (training clips // batch size), but need not see every clip once. One seeded stream gives the
  same batches after a resume without storing a permutation.

The last section registers the pipeline's method ``lgn_net``: presets of these settings, the
training stage (random clips from the frames files, resumable), streamed scoring of one video
with the gated memory update, and the paper's protocol. As in the official evaluation, the test
memory is carried from one video to the next in name order (``test_memory: carried``, both
presets): the scoring jobs of a split form a chain, each reading the memory the previous one
stored in its score file; ``per_video`` starts every video from the trained memory instead, so
its jobs are independent. Frames are resized as the official loader does, bilinear without
antialiasing (``resize: bilinear``, the paper preset); the cpu_budget preset shrinks them with
area interpolation (``area``), which does not alias at its 64 px.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import Method, TrainInputs, VideoScore
from pipelines.frame_clips import ClipSampler, FrameFormat, clip_starts, sliding_clips, video_length
from pipelines.metrics import Protocol
from pipelines.presets import resolve_preset
from pipelines.training import check_finite, load_checkpoint, torch_device


@dataclass
class LGNNetConfig:
    """Hyper-parameters of LGN-Net; defaults are the official code's."""

    image_size: int = 256  # frames are resized to image_size x image_size
    channels: int = 3  # BGR, scaled to [-1, 1]
    input_frames: int = 4  # a clip is input_frames frames plus the target frame
    memory_size: int = 10  # number of prototype items
    feature_dim: int = 512  # width of the queries and of each memory item
    st_hidden: int = 128  # ST-LSTM hidden width
    st_layers: int = 4  # stacked ST-LSTM cells
    forget_bias: float = 1.0  # added to both ST-LSTM forget gates
    loss_compact: float = 10.0  # weight of the compactness loss
    loss_separate: float = 5.0  # weight of the separateness (triplet) loss
    separate_margin: float = 1.0  # triplet margin
    lr: float = 2e-4  # Adam learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas (PyTorch defaults, as in the code)
    epochs: int = 60  # also the cosine-annealing period, stepped once per epoch
    batch_size: int = 6  # training batch (drop_last, shuffled)
    test_lambda: float = 0.6  # weight of PSNR against feature distance in the score
    test_gamma: float = 0.009  # point-score threshold below which the test memory is updated
    first_scored_frame: int = 4  # frames 0..3 of each video are unscored


@dataclass
class LGNOutputs:
    """What one forward pass produces."""

    prediction: torch.Tensor  # (B, C, H, W) predicted next frame in [-1, 1]
    queries: torch.Tensor  # (B, D, H/8, W/8) L2-normalised global-encoder features
    read_out: torch.Tensor  # (B, D, H/8, W/8) memory read-out fed to the decoder
    memory: torch.Tensor  # (M, D) memory the read used (before this forward's update)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU()]


def _upsample_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def _positions(features: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B*h*w, D), one row per spatial position."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


class GlobalEncoder(nn.Sequential):
    """Three conv-conv-pool stages and a last conv pair: (B, t*C, H, W) -> (B, D, H/8, W/8)."""

    def __init__(self, in_channels: int, feature_dim: int):
        super().__init__(
            *_conv_bn_relu(in_channels, 64), *_conv_bn_relu(64, 64), nn.MaxPool2d(2),
            *_conv_bn_relu(64, 128), *_conv_bn_relu(128, 128), nn.MaxPool2d(2),
            *_conv_bn_relu(128, 256), *_conv_bn_relu(256, 256), nn.MaxPool2d(2),
            *_conv_bn_relu(256, feature_dim),
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1),
        )


def updated_memory_items(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """MNAD's write rule: each item adds the queries nearest to it, weighted by their
    softmax-over-queries score divided by the largest such score over all queries, then is
    re-normalised. Items no query is nearest to stay as they are."""
    flat = _positions(queries.detach())
    similarity = flat @ items.T
    weight_over_queries = torch.softmax(similarity, dim=0)
    nearest = F.one_hot(similarity.argmax(dim=1), items.shape[0]).to(flat.dtype)
    weights = nearest * weight_over_queries / weight_over_queries.amax(dim=0, keepdim=True)
    return F.normalize(items + weights.T @ flat, dim=1)


class PrototypeMemory(nn.Module):
    """Unit-norm prototype items, read by attention and written by ``updated_memory_items``."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("items", F.normalize(torch.rand(size, dim), dim=1))

    def read(self, queries: torch.Tensor) -> torch.Tensor:
        """Attention read-out (B, D, h, w); the weights are detached as in the official code."""
        b, d, h, w = queries.shape
        weights = torch.softmax(_positions(queries) @ self.items.T, dim=1).detach()
        return (weights @ self.items).reshape(b, h, w, d).permute(0, 3, 1, 2)

    def update(self, queries: torch.Tensor) -> None:
        self.items = updated_memory_items(queries, self.items)


def _nearest_items(queries: torch.Tensor, memory: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, k) of the k most similar items for every query position."""
    return (_positions(queries) @ memory.T).topk(k, dim=1).indices


def compactness_loss(queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Mean squared distance from each query to its nearest item (the item is a constant)."""
    nearest = memory.detach()[_nearest_items(queries, memory, 1)[:, 0]]
    return F.mse_loss(_positions(queries), nearest)


def separateness_loss(queries: torch.Tensor, memory: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss: each query nearer its first item than its second by ``margin``."""
    order = _nearest_items(queries, memory, 2)
    items = memory.detach()
    return F.triplet_margin_loss(
        _positions(queries), items[order[:, 0]], items[order[:, 1]], margin=margin
    )


class STLSTMCell(nn.Module):
    """PredRNN spatio-temporal LSTM cell: 3x3 bias-free gates, no layer norm."""

    def __init__(self, in_channels: int, hidden: int, forget_bias: float):
        super().__init__()
        self.hidden = hidden
        self.forget_bias = forget_bias
        self.conv_x = nn.Conv2d(in_channels, 7 * hidden, 3, padding=1, bias=False)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, 3, padding=1, bias=False)
        self.conv_m = nn.Conv2d(hidden, 3 * hidden, 3, padding=1, bias=False)
        self.conv_o = nn.Conv2d(2 * hidden, hidden, 3, padding=1, bias=False)
        self.conv_out = nn.Conv2d(2 * hidden, hidden, 1, bias=False)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = self.conv_x(x).split(self.hidden, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).split(self.hidden, dim=1)
        i_m, f_m, g_m = self.conv_m(m).split(self.hidden, dim=1)
        c_new = torch.sigmoid(f_x + f_h + self.forget_bias) * c + torch.sigmoid(
            i_x + i_h
        ) * torch.tanh(g_x + g_h)
        m_new = torch.sigmoid(f_xm + f_m + self.forget_bias) * m + torch.sigmoid(
            i_xm + i_m
        ) * torch.tanh(g_xm + g_m)
        both = torch.cat((c_new, m_new), dim=1)
        gate_out = torch.sigmoid(o_x + o_h + self.conv_o(both))
        return gate_out * torch.tanh(self.conv_out(both)), c_new, m_new


class LocalBranch(nn.Module):
    """Per-frame encoder, stacked ST-LSTM over the input frames, up-sampling decoder.

    One spatio-temporal memory zig-zags through the stack: up the layers within a time step, then
    from the top layer to the bottom layer of the next step. Output: (B, 64, H, W).
    """

    def __init__(self, channels: int, hidden: int, layers: int, forget_bias: float):
        super().__init__()
        self.hidden = hidden
        self.frame_encoder = nn.Sequential(
            *_conv_bn_relu(channels, 64, stride=2), *_conv_bn_relu(64, 64),
            *_conv_bn_relu(64, hidden, stride=2), *_conv_bn_relu(hidden, hidden),
        )
        self.cells = nn.ModuleList(STLSTMCell(hidden, hidden, forget_bias) for _ in range(layers))
        self.decoder = nn.Sequential(*_upsample_bn_relu(2 * hidden, 128), *_upsample_bn_relu(128, 64))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        # One encoder call per time step, as the official predictor does: in training its batch
        # norms take each step's statistics and update their running ones t times.
        encoded = torch.stack([self.frame_encoder(frames[:, step]) for step in range(t)], dim=1)
        zeros = encoded.new_zeros(b, self.hidden, *encoded.shape[-2:])
        hidden = [zeros] * len(self.cells)
        cell = [zeros] * len(self.cells)
        memory = zeros
        for step in range(t):
            layer_input = encoded[:, step]
            for layer, st_cell in enumerate(self.cells):
                hidden[layer], cell[layer], memory = st_cell(layer_input, hidden[layer], cell[layer], memory)
                layer_input = hidden[layer]
        return self.decoder(torch.cat((hidden[-1], memory), dim=1))


class Decoder(nn.Module):
    """Up-samples the read-out x8 and fuses it with the local features into the predicted frame."""

    def __init__(self, feature_dim: int, local_channels: int, out_channels: int):
        super().__init__()
        self.upsample = nn.Sequential(
            *_conv_bn_relu(feature_dim, 512), *_conv_bn_relu(512, 512), *_upsample_bn_relu(512, 256),
            *_conv_bn_relu(256, 256), *_conv_bn_relu(256, 256), *_upsample_bn_relu(256, 128),
            *_conv_bn_relu(128, 128), *_conv_bn_relu(128, 128), *_upsample_bn_relu(128, 64),
        )
        self.head = nn.Sequential(
            *_conv_bn_relu(64 + local_channels, 64), *_conv_bn_relu(64, 64),
            nn.Conv2d(64, out_channels, 3, padding=1), nn.Tanh(),
        )

    def forward(self, read_out: torch.Tensor, local_features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((self.upsample(read_out), local_features), dim=1))


class LGNNet(nn.Module):
    """LGN-Net: predicts frame t+1 from frames t-3..t, shape (B, 4, C, H, W) -> (B, C, H, W)."""

    def __init__(self, cfg: LGNNetConfig | None = None):
        super().__init__()
        self.cfg = cfg or LGNNetConfig()
        c = self.cfg
        self.global_encoder = GlobalEncoder(c.channels * c.input_frames, c.feature_dim)
        self.memory = PrototypeMemory(c.memory_size, c.feature_dim)
        self.local_branch = LocalBranch(c.channels, c.st_hidden, c.st_layers, c.forget_bias)
        self.decoder = Decoder(c.feature_dim, 64, c.channels)

    def forward(self, frames: torch.Tensor, update_memory: bool | None = None) -> LGNOutputs:
        """Predict the next frame. ``update_memory`` defaults to ``self.training``: the update
        is written after the read, so this forward's outputs use the memory as it was."""
        b, t, c, h, w = frames.shape
        if t != self.cfg.input_frames or c != self.cfg.channels or h % 8 or w % 8:
            raise ValueError(
                f"LGNNet expects frames (B, {self.cfg.input_frames}, {self.cfg.channels}, H, W) "
                f"with H and W divisible by 8, got {tuple(frames.shape)}"
            )
        queries = F.normalize(self.global_encoder(frames.reshape(b, t * c, h, w)), dim=1)
        memory = self.memory.items
        read_out = self.memory.read(queries)
        prediction = self.decoder(read_out, self.local_branch(frames))
        if self.training if update_memory is None else update_memory:
            self.memory.update(queries)
        return LGNOutputs(prediction=prediction, queries=queries, read_out=read_out, memory=memory)


def lgn_loss(
    outputs: LGNOutputs, target: torch.Tensor, cfg: LGNNetConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total training loss MSE + w_c * compactness + w_s * separateness, and its detached parts."""
    parts = {
        "prediction": F.mse_loss(outputs.prediction, target),
        "compactness": compactness_loss(outputs.queries, outputs.memory),
        "separateness": separateness_loss(outputs.queries, outputs.memory, cfg.separate_margin),
    }
    total = (
        parts["prediction"]
        + cfg.loss_compact * parts["compactness"]
        + cfg.loss_separate * parts["separateness"]
    )
    return total, {name: value.detach() for name, value in parts.items()}


def make_optimizer(model: LGNNet, cfg: LGNNetConfig) -> torch.optim.Adam:
    """Adam over all weights; the memory is a buffer and is not optimised."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)


def cosine_lr(cfg: LGNNetConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based) under cosine annealing over ``cfg.epochs`` epochs to 0,
    stepped once per epoch. Closed form, so a resumed run sets the same rate as one that never
    stopped."""
    return cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs)) / 2


def _squared_error_01(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise squared error after mapping both from [-1, 1] to [0, 1]."""
    return ((prediction + 1) / 2 - (target + 1) / 2) ** 2


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR (B,) in dB of [-1, 1] frames, taken on their [0, 1] rescaling."""
    mse = _squared_error_01(prediction, target).flatten(1).mean(dim=1)
    return 10 * torch.log10(1 / mse)


def feature_distance(queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared distance (B,) of the queries to their nearest memory items."""
    b, d, h, w = queries.shape
    nearest = memory[_nearest_items(queries, memory, 1)[:, 0]]
    return ((_positions(queries) - nearest) ** 2).reshape(b, h * w * d).mean(dim=1)


def point_score(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample error (B,) weighted by w = 1 - exp(-e): sum(w * e) / sum(w), e on [0, 1] frames.
    This is the quantity compared with gamma to gate the test-time memory update."""
    error = _squared_error_01(prediction, target).flatten(1)
    weight = 1 - torch.exp(-error)
    return (weight * error).sum(dim=1) / weight.sum(dim=1)


def gated_memory_update(
    model: LGNNet, queries: torch.Tensor, error: float | torch.Tensor, gamma: float
) -> bool:
    """Write ``queries`` into the model's memory only when ``error < gamma``; say whether it did."""
    if float(error) < gamma:
        model.memory.update(queries)
        return True
    return False


def _minmax(values: torch.Tensor) -> torch.Tensor:
    """[0, 1] rescaling over the video; a constant video gives zeros, a NaN anywhere NaN everywhere
    (never a constant that would pass for a score)."""
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 or span.isnan() else torch.zeros_like(values)


def lgn_video_score(psnrs, distances, lam: float) -> torch.Tensor:
    """Anomaly score (higher = more abnormal) of the scored frames of ONE video.

    The official normality score is lam * minmax(PSNR) + (1 - lam) * (1 - minmax(distance)),
    min-max taken over this video; this returns 1 minus it, so ROC-AUC against labels with
    1 = abnormal equals the official AUC against 1 - label. Inputs cover frames
    ``first_scored_frame`` onwards; the caller drops the labels of the unscored first frames.
    """
    psnrs = torch.as_tensor(psnrs, dtype=torch.float64)
    distances = torch.as_tensor(distances, dtype=torch.float64)
    if psnrs.shape != distances.shape or psnrs.ndim != 1:
        raise ValueError(
            f"psnrs and distances must be 1-D and equally long, got {tuple(psnrs.shape)} and "
            f"{tuple(distances.shape)}"
        )
    normality = lam * _minmax(psnrs) + (1 - lam) * (1 - _minmax(distances))
    return 1 - normality


# ----------------------------------------------------------------------------------------------
# The pipeline's method: presets, the training stage, streamed scoring and the paper protocol.

PRESETS = {
    # The official code's values (identical for every dataset in the code).
    "paper": {
        "image_size": 256, "epochs": 60, "steps_per_epoch": None, "batch_size": 6, "lr": 2e-4,
        "loss_compact": 10.0, "loss_separate": 5.0, "test_lambda": 0.6, "test_gamma": 0.009,
        "test_memory": "carried", "resize": "bilinear", "checkpoint_every": 1000,
    },
    # 12 to 38 minutes of training on two CPU cores by the day: 64 px frames, 6 short epochs of 100 steps. At
    # 32 px a step costs a third as much, but a copy of the last input frame already scores
    # lower there (README, "What resolution allows").
    # Its frames are shrunk with area interpolation: bilinear without antialiasing, as the official
    # loader resizes, would alias 240x360 Ped2 frames at 64 px.
    "cpu_budget": {
        "image_size": 64, "epochs": 6, "steps_per_epoch": 100, "batch_size": 6, "lr": 2e-4,
        "loss_compact": 10.0, "loss_separate": 5.0, "test_lambda": 0.6, "test_gamma": 0.009,
        "test_memory": "carried", "resize": "area", "checkpoint_every": 100,
    },
}

LOG_EVERY = 10  # training steps between progress lines
TEST_MEMORY = ("carried", "per_video")


@register
class LGNNetMethod(Method):
    """LGN-Net as a pipeline method: one training stage, then one scoring job per test video. With
    ``test_memory: carried`` (the official evaluation) a video starts from the memory the previous
    video of its split (in name order) left, so its jobs run one after the other; with
    ``per_video`` each starts from the trained memory and they run side by side."""

    name = "lgn_net"
    input_kind = "frames"
    supervision = "one_class"
    stages = ("train",)
    uses_gpu = True
    scoring_params = ("test_lambda", "test_gamma", "test_memory")
    runtime_params = ("checkpoint_every",)

    def __init__(self, params: dict[str, Any], seed: int = 0):
        super().__init__(params, seed)
        self.settings = resolve_preset(self.name, PRESETS, params)
        keys = ("image_size", "epochs", "batch_size", "lr", "loss_compact", "loss_separate", "test_lambda", "test_gamma")
        self.cfg = LGNNetConfig(**{key: self.settings[key] for key in keys})
        if self.settings["test_memory"] not in TEST_MEMORY:
            raise ValueError(f"{self.name} test_memory {self.settings['test_memory']!r}: expected one of {TEST_MEMORY}")
        # The official loader: OpenCV's BGR frames scaled to [-1, 1] (FrameFormat checks the resize).
        self.frame_format = FrameFormat(self.cfg.image_size, "bgr", -1.0, 1.0, self.settings["resize"])
        self.identity = {"image_size": self.cfg.image_size}

    def carries_state(self) -> bool:
        return self.settings["test_memory"] == "carried"

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        if stage not in self.stages:
            raise ValueError(f"{self.name}: unknown stage {stage!r}; stages: {self.stages}")
        cfg, device = self.cfg, torch_device()
        with ClipSampler(inputs.files, cfg.input_frames + 1, self.frame_format) as sampler:
            steps_per_epoch = self.settings["steps_per_epoch"] or sampler.n_clips // cfg.batch_size
            if steps_per_epoch < 1:
                raise ValueError(f"{self.name}: {sampler.n_clips} training clips, fewer than one batch of {cfg.batch_size}")
            total = cfg.epochs * steps_per_epoch
            run = self.stage_run(checkpoint_out, stage, self.identity, self.settings,
                                 self.settings["checkpoint_every"], inputs.sources(previous))
            model = LGNNet(cfg).to(device).train()  # built after StageRun seeded torch
            optimizers = {"adam": make_optimizer(model, cfg)}
            if run.resume(model, optimizers):
                print(f"resumed at step {run.step} of {total}", flush=True)
            started = time.monotonic()
            while run.step < total:
                for group in optimizers["adam"].param_groups:
                    group["lr"] = cosine_lr(cfg, run.step // steps_per_epoch)
                clips = sampler.sample(run.rng, cfg.batch_size).to(device)
                loss, parts = lgn_loss(model(clips[:, :-1]), clips[:, -1], cfg)
                check_finite(loss, f"{self.name} stage {stage} step {run.step + 1}")
                optimizers["adam"].zero_grad(set_to_none=True)
                loss.backward()
                optimizers["adam"].step()
                run.advance(model, optimizers)
                if run.step % LOG_EVERY == 0 or run.step == total:
                    losses = " ".join(f"{k} {float(v):.5f}" for k, v in parts.items())
                    print(f"step {run.step}/{total} loss {loss.item():.5f} ({losses}) "
                          f"{time.monotonic() - started:.0f} s", flush=True)
            run.finish(model, optimizers, {"steps_per_epoch": steps_per_epoch, "training_clips": sampler.n_clips})

    def load(self, checkpoint: Path | None) -> LGNNet:
        """The trained network from the final checkpoint, in evaluation mode on the device."""
        if checkpoint is None:
            raise ValueError(f"{self.name}: scoring needs the checkpoint of stage {self.stages[-1]!r}")
        payload = load_checkpoint(checkpoint, self.name, self.identity)
        model = LGNNet(self.cfg)
        model.load_state_dict(payload["model"])
        return model.to(torch_device()).eval()

    @torch.no_grad()
    def score_video(self, checkpoint: Path | None, video: Path, state: dict[str, np.ndarray] | None = None) -> VideoScore:
        """Frame by frame, in order: PSNR and feature distance of each predicted frame, then the
        memory update when the point score is below gamma; the per-video score mixes both.

        ``state``: the memory the previous video of the split left (``test_memory: carried``; None
        for the first video, which starts from the trained memory)."""
        model, device = self.load(checkpoint), torch_device()
        if state is not None:
            if not self.carries_state():
                raise ValueError(f"{self.name}: test_memory per_video starts every video from the trained memory; "
                                 "a previous video's memory was given")
            items = torch.as_tensor(state["memory"], dtype=model.memory.items.dtype)
            if items.shape != model.memory.items.shape:
                raise ValueError(f"{self.name}: the previous video's memory has shape {tuple(items.shape)}, this "
                                 f"network's {tuple(model.memory.items.shape)}")
            model.memory.items = items.to(device)
        length, first = self.cfg.input_frames + 1, self.cfg.first_scored_frame
        n_frames = video_length(video)
        psnrs = np.zeros(clip_starts(n_frames, length, 0, video))
        distances = np.zeros_like(psnrs)
        for start, clips in sliding_clips(video, length, self.frame_format, batch=1):
            clips = clips.to(device)
            outputs = model(clips[:, :-1], update_memory=False)
            psnrs[start] = float(psnr(outputs.prediction, clips[:, -1]))
            distances[start] = float(feature_distance(outputs.queries, outputs.memory))
            gated_memory_update(model, outputs.queries, point_score(outputs.prediction, clips[:, -1]), self.cfg.test_gamma)
        broken = ~(np.isfinite(psnrs) & np.isfinite(distances))
        if broken.any():
            raise ValueError(f"{video}: the PSNR or feature distance of {int(broken.sum())} frames is not finite "
                             f"(first: frame {first + int(np.argmax(broken))}); the weights of {checkpoint} diverged")
        scores = np.zeros(n_frames, np.float32)
        scores[first:] = lgn_video_score(psnrs, distances, self.cfg.test_lambda).numpy()
        scored = np.zeros(n_frames, bool)
        scored[first:] = True
        carried = {"memory": model.memory.items.cpu().numpy()} if self.carries_state() else None
        return VideoScore(scores, scored, state=carried)

    def protocol(self, label_convention: str) -> Protocol:
        """Micro AUC of the per-video score over frames 4 onwards, no smoothing.

        The per-video min-max is inside the stored score (score_video sees the whole video): it
        mixes two separately min-maxed quantities, which no single min-max of one score can
        reproduce, so the evaluation applies none on top.
        """
        cfg = self.cfg
        return Protocol(
            pooling="micro",
            normalisation="none",
            label_convention=(
                f"{label_convention}; lgn_net score per video = 1 - (lambda * minmax(PSNR) + (1 - lambda) * "
                f"(1 - minmax(feature distance))) with lambda={cfg.test_lambda}, test memory updated when the "
                f"point score < gamma={cfg.test_gamma}, " + (
                    "memory carried from each video to the next in name order (the official evaluation) "
                    if self.carries_state() else "memory reset to the trained one at every video ")
                + "(the per-video min-max is inside this score: the evaluation adds none)"
            ),
            skipped_start_frames=cfg.first_scored_frame,
        )
