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
  the official code would produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise FloatingPointError naming ``where`` when ``loss`` holds a NaN or an infinity."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise FloatingPointError(f"non-finite loss at {where}: {loss.detach().cpu().tolist()}")


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
        b, t, c, height, width = frames.shape
        encoded = self.frame_encoder(frames.reshape(b * t, c, height, width))
        encoded = encoded.reshape(b, t, *encoded.shape[1:])
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


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: LGNNetConfig
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine annealing over ``cfg.epochs``; step it once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)


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
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else torch.zeros_like(values)


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
