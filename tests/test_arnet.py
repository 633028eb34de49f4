"""Tests of AR-Net: the scorers, the dynamic MIL and center losses, and a real-feature training step."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.arnet import (
    ARNetConfig,
    arnet_loss,
    build_arnet,
    center_loss,
    dynamic_mil_loss,
    make_optimizer,
    trim_batch,
    valid_lengths,
)
from pipelines.weak_protocol import arnet_fit_length

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FEATURES = SHARED / "data" / "features" / "shanghaitech_i3d_r50_10crop_sample"


def test_config_matches_reference_settings():
    cfg = ARNetConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.k_divisor, cfg.center_weight, cfg.max_seqlen) == (1e-4, 5e-4, 4, 20.0, 300)
    opt = make_optimizer(build_arnet(feature_dim=8), cfg)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["weight_decay"] == 5e-4


def test_single_variant_parameter_count_and_init():
    model = build_arnet("single", 2048)
    assert sum(p.numel() for p in model.parameters()) == 4_198_401
    assert not model.embed.bias.any() and not model.classifier.bias.any()
    bound = math.sqrt(6 / (2048 + 2048))
    assert model.embed.weight.abs().max() <= bound


@pytest.mark.parametrize("variant", ["single", "mean", "sequence"])
def test_variants_score_every_snippet(variant):
    model = build_arnet(variant, 16).eval()
    scores = model(torch.randn(3, 11, 16))
    assert scores.shape == (3, 11) and torch.all((scores > 0) & (scores < 1))


def test_dropout_only_in_training():
    model = build_arnet("single", 16)
    x = torch.randn(2, 5, 16)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(x), model(x))


def test_unknown_variant_rejected():
    with pytest.raises(ValueError):
        build_arnet("lstm")


def test_valid_lengths_and_trim():
    x = torch.zeros(3, 6, 4)
    x[0, :4] = 1.0
    x[1, :2, 1] = -2.0
    x[2, :5, 3] = 0.5
    trimmed, lengths = trim_batch(x)
    assert lengths.tolist() == [4, 2, 5] and trimmed.shape == (3, 5, 4)
    assert valid_lengths(trimmed).tolist() == [4, 2, 5]


# Anomalous video of length 5 (k = 2) and a normal one of length 3 (k = 1) padded to 5; the padded
# positions score 0.95 so a loss that looked past the valid length would pick them.
SCORES = torch.tensor([[0.9, 0.2, 0.8, 0.1, 0.5], [0.3, 0.6, 0.1, 0.95, 0.95]])
LENGTHS = torch.tensor([5, 3])
LABELS = torch.tensor([1.0, 0.0])


def test_dynamic_mil_loss_by_hand():
    expected = (-math.log(0.9) - math.log(0.8) - math.log(1 - 0.6)) / 3
    assert dynamic_mil_loss(SCORES, LENGTHS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_dynamic_mil_pools_instances_not_videos():
    # k = ceil(9/4) = 3 instances for the long video vs 1 for the short one.
    scores = torch.tensor([[0.5] * 9, [0.2] + [0.0] * 8])
    loss = dynamic_mil_loss(scores, torch.tensor([9, 1]), torch.tensor([1.0, 0.0]))
    expected = (3 * -math.log(0.5) - math.log(0.8)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_center_loss_is_unbiased_variance_over_all_positions():
    # Normal video [0.3, 0.6, 0.1, 0.95, 0.95]: mean 0.58, squared deviations sum 0.583, / 4.
    assert center_loss(SCORES, LABELS).item() == pytest.approx(0.583 / 4, rel=1e-5)
    with pytest.raises(ValueError):
        center_loss(SCORES, torch.ones(2))


def test_total_loss_weights():
    loss = arnet_loss(SCORES, LENGTHS, LABELS)
    assert loss.total.item() == pytest.approx(loss.mil.item() + 20 * loss.center.item(), rel=1e-6)


def _real_batch(length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 'anomalous' and two normal real videos (centre crop of the 10-crop features) at ``length``."""
    if not FEATURES.is_dir():
        pytest.skip(f"real I3D sample features not found under {FEATURES}")
    rng = np.random.default_rng(0)
    load = lambda name: np.load(FEATURES / f"{name}_i3d.npy", allow_pickle=False)[:, 4]
    # 01_001 (48 snippets) is jitter-sampled, 01_002 (31) padded, 01_003 (49) cropped, 01_006 (32) padded.
    videos = [
        arnet_fit_length(load("01_001"), True, rng, length),
        arnet_fit_length(load("01_002"), True, rng, length),
        arnet_fit_length(load("01_003"), False, rng, length),
        arnet_fit_length(load("01_006"), False, rng, length),
    ]
    return torch.from_numpy(np.stack(videos)), torch.tensor([1.0, 1.0, 0.0, 0.0])


def _loss_at(model, features, lengths, labels, seed=0):
    torch.manual_seed(seed)  # same dropout mask for every evaluation
    return arnet_loss(model(features), lengths, labels).total


def test_one_step_on_real_features():
    features, labels = _real_batch()
    features, lengths = trim_batch(features)
    assert lengths.tolist() == [40, 31, 40, 32] and features.shape == (4, 40, 2048)
    torch.manual_seed(1)
    model = build_arnet("single", 2048)
    optimizer = make_optimizer(model)
    before = [p.detach().clone() for p in model.parameters()]
    loss = _loss_at(model, features, lengths, labels)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert _loss_at(model, features, lengths, labels) < loss.detach()
