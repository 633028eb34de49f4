"""Tests of the STG-NF flow, its released checkpoints and the safe checkpoint loader."""
from __future__ import annotations

import argparse
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models.safe_checkpoint import UnsafeCheckpointError, load_checkpoint
from models.stg_nf import STGNF, STGNFTrainingConfig, skeleton_adjacency
from pipelines.poses.segments import model_input, segment_track

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
WEIGHTS = SHARED / "weights" / "stg_nf"
SHANGHAITECH = WEIGHTS / "ShanghaiTech_85_9.tar"
needs_weights = pytest.mark.skipif(
    not SHANGHAITECH.exists(), reason=f"released STG-NF weights not found under {WEIGHTS}"
)


def _initialised_flow(seg_len: int, num_steps: int = 8, seed: int = 0) -> STGNF:
    """A float64 flow whose ActNorms saw data and whose BatchNorms hold non-trivial statistics."""
    generator = torch.Generator().manual_seed(seed)
    model = STGNF(seg_len=seg_len, num_steps=num_steps).double()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 2, seg_len, 18, generator=generator, dtype=torch.float64) * 2 + 1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.5, generator=generator)
    return model.eval()


def _walking_track(num_frames: int, seed: int) -> np.ndarray:
    """(n, 17, 3) COCO keypoints of a 90-pixel person walking to the right, with pixel jitter."""
    rng = np.random.default_rng(seed)
    standing = np.array([
        [0.0, 0.0], [-0.03, -0.02], [0.03, -0.02], [-0.06, 0.0], [0.06, 0.0],
        [-0.12, 0.18], [0.12, 0.18], [-0.15, 0.38], [0.15, 0.38], [-0.15, 0.55], [0.15, 0.55],
        [-0.08, 0.55], [0.08, 0.55], [-0.08, 0.78], [0.08, 0.78], [-0.08, 1.0], [0.08, 1.0],
    ])
    frames = []
    for t in range(num_frames):
        pose = standing.copy()
        swing = np.sin(2 * np.pi * t / 16)
        pose[[13, 15, 10], 0] += np.array([0.05, 0.1, 0.05]) * swing
        pose[[14, 16, 9], 0] -= np.array([0.05, 0.1, 0.05]) * swing
        xy = pose * 90 + np.array([300 + 2.0 * t, 200]) + rng.normal(0, 0.7, pose.shape)
        frames.append(np.concatenate([xy, np.full((17, 1), 0.9)], axis=1))
    return np.stack(frames)


def test_max_hop_8_links_every_joint_pair():
    assert torch.allclose(skeleton_adjacency(8), torch.full((18, 18), 1 / 18))
    # Right ankle (10) to left ankle (13) is the skeleton's longest path: 8 bones.
    one_short = skeleton_adjacency(7)
    assert one_short[10, 13] == 0 and one_short[13, 10] == 0
    assert torch.allclose(one_short.sum(dim=0), torch.ones(18))


def test_actnorm_data_dependent_init_standardises_first_batch():
    model = STGNF(seg_len=8)
    x = torch.randn(32, 2, 8, 18, generator=torch.Generator().manual_seed(1)) * torch.tensor(
        [3.0, 0.5]
    ).view(1, 2, 1, 1) + torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    model.train()
    model(x)
    actnorm = model.flow.layers[0].actnorm
    y, logdet = actnorm(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)
    assert torch.isclose(logdet, actnorm.logs.sum() * 8 * 18)


def test_uninitialised_flow_refuses_to_evaluate():
    with pytest.raises(RuntimeError, match="ActNorm is not initialised"):
        STGNF(seg_len=8).eval()(torch.zeros(1, 2, 8, 18))


def test_flow_is_invertible():
    model = _initialised_flow(seg_len=24)
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(4, 2, 24, 18, generator=generator, dtype=torch.float64) + 3.0
    with torch.no_grad():
        x = model.reverse(z)
        z_again, _ = model(x)
        x_again = model.reverse(model(x)[0])
    assert (z_again - z).abs().max() < 1e-5
    assert (x_again - x).abs().max() < 1e-5


def test_logdet_matches_numerical_jacobian():
    # Three steps cover the residual-free first step and the residual ones, at a fraction of the cost.
    model = _initialised_flow(seg_len=4, num_steps=3)
    x = torch.randn(1, 2, 4, 18, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(
        lambda inp: model.flow(inp)[0], x, vectorize=True
    )
    sign, log_abs_det = torch.linalg.slogdet(jacobian.reshape(x.numel(), x.numel()))
    _, logdet = model.flow(x)
    assert sign > 0
    assert torch.isclose(logdet[0], log_abs_det, rtol=1e-8, atol=1e-8)


def test_nll_is_bits_per_dim_of_the_change_of_variables():
    model = _initialised_flow(seg_len=8)
    x = torch.randn(3, 2, 8, 18, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    labels = torch.tensor([1, -1, 0])
    z, nll = model(x, labels)
    _, logdet = model.flow(x)
    mean = torch.tensor([3.0, -3.0, 0.0], dtype=torch.float64).view(3, 1, 1, 1)
    log_prior = (-0.5 * ((z - mean) ** 2 / (1 + 1e-6) + math.log(2 * math.pi))).sum(dim=(1, 2, 3))
    expected = -(logdet + log_prior) / (math.log(2) * 2 * 8 * 18)
    assert torch.allclose(nll, expected)
    assert torch.equal(model(x)[1][0], nll[0])  # no labels: every sample is normal


def test_flow_is_equivariant_to_joint_permutation():
    # The all-pairs graph treats joints alike, so relabelling joints relabels z and keeps the NLL.
    model = _initialised_flow(seg_len=8)
    x = torch.randn(2, 2, 8, 18, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    permutation = torch.randperm(18, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        z, nll = model(x)
        z_permuted, nll_permuted = model(x[..., permutation])
    assert torch.allclose(z_permuted, z[..., permutation])
    assert torch.allclose(nll_permuted, nll)


def test_parameter_count_matches_the_released_model_size():
    assert sum(p.numel() for p in STGNF(seg_len=24).parameters()) == 616


def test_even_temporal_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        STGNF(seg_len=26)


@needs_weights
@pytest.mark.parametrize(
    "name, seg_len, prior_mean",
    [
        ("ShanghaiTech_85_9", 24, 3.0),
        ("UBnormal_unsupervised_71_8", 16, 3.0),
        ("UBnormal_supervised_79_2", 16, 10.0),
    ],
)
def test_released_checkpoints_load_strictly(name, seg_len, prior_mean):
    checkpoint = load_checkpoint(WEIGHTS / f"{name}.tar")
    assert isinstance(checkpoint["args"], argparse.Namespace)
    model = STGNF.from_checkpoint(checkpoint)  # load_state_dict(strict=True) inside
    assert model.seg_len == seg_len and model.temporal_kernel == seg_len // 2 + 1
    assert torch.all(model.prior_h_normal[:2] == prior_mean)
    assert set(model.state_dict()) == set(checkpoint["state_dict"])
    assert all(step.actnorm.initialized for step in model.flow.layers)


@needs_weights
def test_shanghaitech_checkpoint_nll_is_finite_deterministic_and_prefers_real_motion():
    checkpoint = load_checkpoint(SHANGHAITECH)
    noise = torch.randn(4, 2, 24, 18, generator=torch.Generator().manual_seed(0))
    nlls = []
    for _ in range(2):
        model = STGNF.from_checkpoint(checkpoint)
        with torch.no_grad():
            nlls.append(model(noise)[1])
    assert torch.isfinite(nlls[0]).all()
    assert torch.equal(nlls[0], nlls[1])
    # Regression pin of this implementation on the seeded input (bits/dim).
    assert torch.allclose(nlls[0], torch.tensor([7.4241, 7.9359, 6.1837, 6.7723]), atol=1e-3)

    track = _walking_track(60, seed=0)
    segments = segment_track(np.arange(60), track, np.full(60, 0.9), seg_len=24, stride=6)
    scrambled = segments.poses.copy()
    scrambled[:, :2] = np.random.default_rng(1).uniform(200, 400, scrambled[:, :2].shape)
    with torch.no_grad():
        walk_nll = model(torch.from_numpy(model_input(segments.poses)))[1]
        scrambled_nll = model(torch.from_numpy(model_input(scrambled)))[1]
    assert walk_nll.max() < 1.5 < 2.5 < scrambled_nll.min()


def test_checkpoint_with_unsupported_settings_is_rejected():
    model = STGNF(seg_len=8)
    args = argparse.Namespace(seg_len=8, K=8, R=3.0, max_hop=8, L=1, hidden_dim=8)
    with pytest.raises(ValueError, match="hidden_dim"):
        STGNF.from_checkpoint({"args": args, "state_dict": model.state_dict()})


class _Payload:
    """Stands for arbitrary pickled content: unpickling it runs code (it writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text("unpickled")
        self.__dict__.update(state)


def test_checkpoint_with_a_disallowed_object_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "bad.tar"
    torch.save({"state_dict": {}, "args": argparse.Namespace(K=8), "extra": _Payload(marker)}, path)

    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the unrestricted loader does run the payload
    assert marker.exists()


def test_safe_loader_round_trips_allowed_content(tmp_path):
    path = tmp_path / "good.tar"
    torch.save({"epoch": 3, "args": argparse.Namespace(seg_len=16), "w": torch.arange(3.0)}, path)
    loaded = load_checkpoint(path)
    assert loaded["args"].seg_len == 16 and torch.equal(loaded["w"], torch.arange(3.0))


def test_training_config_holds_the_released_recipe():
    config = STGNFTrainingConfig()
    assert (config.epochs, config.batch_size, config.lr, config.weight_decay) == (8, 256, 5e-4, 0.0)
    assert config.grad_clip_norm == 100.0
    assert [config.lr_for_epoch(e) for e in range(4)] == pytest.approx(
        [5e-4, 5e-4, 5e-4 * 0.99, 5e-4 * 0.99**2]
    )
    optimizer = config.make_optimizer(STGNF(seg_len=8).parameters())
    assert isinstance(optimizer, torch.optim.Adamax)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


@needs_weights
def test_training_config_schedule_matches_released_optimizer_state():
    checkpoint = load_checkpoint(SHANGHAITECH)
    group = checkpoint["optimizer"]["param_groups"][0]
    last_epoch = checkpoint["epoch"] - 1  # saved during its last (0-based) epoch
    assert group["lr"] == pytest.approx(STGNFTrainingConfig().lr_for_epoch(last_epoch), rel=1e-9)
    assert group["weight_decay"] == STGNFTrainingConfig().weight_decay


def test_a_released_checkpoint_of_another_geometry_is_refused_before_anything_is_built():
    """A crafted or mismatched `args` (here a million-frame window, or another graph reach) stops at
    the comparison with the configuration: nothing of its size is allocated."""
    expected = {"seg_len": 24, "num_steps": 8, "prior_mean": 3.0, "max_hop": 8, "frame_size": [856, 480]}
    huge = {"args": argparse.Namespace(seg_len=10**6, K=8, R=3.0, max_hop=8, L=1, hidden_dim=0), "state_dict": {}}
    with pytest.raises(ValueError, match=r"released checkpoint has .*'seg_len': 1000000"):
        STGNF.from_checkpoint(huge, expected)
    other_reach = {"args": argparse.Namespace(seg_len=24, K=8, R=3.0, max_hop=1, L=1, hidden_dim=0), "state_dict": {}}
    with pytest.raises(ValueError, match=r"'max_hop': 1"):
        STGNF.from_checkpoint(other_reach, expected)


@needs_weights
def test_a_damaged_or_foreign_release_is_refused_by_name(tmp_path):
    """What a user's download can turn out to be: empty, cut short, the bare weights, or weights of
    another network. Each error names the file (they were torch's own, naming none)."""
    from models.stg_nf import flow_from_release, load_released_flow

    release = load_checkpoint(SHANGHAITECH)
    args = release["args"]
    params = {"seg_len": args.seg_len, "num_steps": args.K, "prior_mean": args.R, "max_hop": args.max_hop,
              "frame_size": [856, 480]}
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(SHANGHAITECH.read_bytes()[: SHANGHAITECH.stat().st_size // 2])
    bare = tmp_path / "bare.tar"
    torch.save(release["state_dict"], bare)
    short = tmp_path / "short.tar"
    torch.save({"args": args, "state_dict": {k: v for k, v in list(release["state_dict"].items())[1:]}}, short)
    for path, problem in ((empty, "not a complete torch checkpoint"), (cut, "not a complete torch checkpoint"),
                          (bare, "not an STG-NF release: it needs 'args' and 'state_dict'"),
                          (short, "its weights do not fit the network its 'args' describe")):
        with pytest.raises(ValueError, match=re.escape(f"{path}: {problem}")):
            flow_from_release(path, params)
        with pytest.raises(ValueError, match=re.escape(f"{path}: not one of STG-NF's released checkpoints")):
            load_released_flow(path, params)
    flow, digest = load_released_flow(SHANGHAITECH, params)
    assert isinstance(flow, STGNF) and digest == hashlib.sha256(SHANGHAITECH.read_bytes()).hexdigest()


@needs_weights
def test_the_released_checkpoints_are_pinned():
    from models.stg_nf import RELEASED_CHECKPOINTS, verify_release

    for path in SHANGHAITECH.parent.glob("*.tar"):
        assert RELEASED_CHECKPOINTS[verify_release(path)] == path.name
