"""Tests of RTFM's blocks and loss and of the staged SSRL network."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.rtfm import (
    Aggregate,
    NonLocal1D,
    TopKSelection,
    candidate_mask,
    magnitude_loss,
    rtfm_loss,
    select_top_k,
    smoothness,
    sparsity,
)
from models.ssrl import (
    PATCH_GRIDS,
    SSRL_STAGES,
    PatchBranch,
    SSRLNetwork,
    SSRLTrainConfig,
    load_previous_stage,
    make_optimizer,
    staged_train_mode,
)
from pipelines.weak_protocol import training_segments

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FEATURES = SHARED / "data" / "features" / "shanghaitech_i3d_r50_10crop_sample"
SMALL = 64  # feature width for structural tests; the real width is 2048


# --- blocks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,count", [(1, 24_718_849), (2, 79_785_217), (3, 128_560_129), (4, 192_015_105)])
def test_parameter_counts(stage, count):
    with torch.device("meta"):
        model = SSRLNetwork(stage)
    assert sum(p.numel() for p in model.parameters()) == count


def test_aggregate_parameter_count():
    with torch.device("meta"):
        assert sum(p.numel() for p in Aggregate(2048).parameters()) == 23_603_968


def test_non_local_starts_as_identity():
    block = NonLocal1D(8)
    x = torch.randn(2, 8, 7)
    torch.testing.assert_close(block(x), x)


def test_non_local_affinity_is_scaled_not_softmaxed():
    block = NonLocal1D(4).eval()
    torch.nn.init.ones_(block.out[1].weight)
    x = torch.randn(1, 4, 6)
    theta, phi, g = block.theta(x), block.phi(x), block.g(x)
    attended = (theta.transpose(1, 2) @ phi / 6) @ g.transpose(1, 2)
    expected = block.out(attended.transpose(1, 2)) + x
    torch.testing.assert_close(block(x), expected)


def test_aggregate_receptive_field_matches_dilations():
    # At initialisation the non-local branch is the identity, so an input change at position 10 reaches
    # the outputs within 4 (largest dilation) + 1 (3-wide fusion) positions, and nowhere else.
    torch.manual_seed(0)
    block = Aggregate(SMALL).eval()
    x = torch.randn(1, 32, SMALL)
    bumped = x.clone()
    bumped[0, 10] += 1.0
    changed = (block(bumped) - block(x)).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == list(range(5, 16))


def test_patch_branch_output_sizes():
    for grid, flat in zip(PATCH_GRIDS, (6144, 3072, 10240)):
        with torch.device("meta"):
            branch = PatchBranch(grid)
        assert branch.projection.in_features == flat


def test_patch_relation_runs_along_row_major_sequence():
    # A bump on patch (row 0, col 2) of a 2x3 grid is, in row-major order, next to patch (row 1, col 0).
    torch.manual_seed(0)
    branch = PatchBranch((2, 3), SMALL).eval()
    patches = torch.randn(1, 6, 1, SMALL)
    seen = []
    hook = branch.relation.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    branch(patches)
    hook.remove()
    torch.testing.assert_close(seen[0], patches[0].transpose(0, 1))  # (T, P, F) in row-major patch order


# --- the network ---------------------------------------------------------------------------------

def test_stage_schedule_as_data():
    assert [s.grids for s in SSRL_STAGES] == [(), ((2, 3),), ((2, 3), (3, 5)), PATCH_GRIDS]
    assert [s.loads_stage for s in SSRL_STAGES] == [None, 1, 2, 3]
    assert SSRL_STAGES[3].trainable == ("patch_branches.2",)
    assert set(SSRL_STAGES[3].frozen) == {"temporal_relation", "classifier", "patch_branches.0", "patch_branches.1"}
    cfg = SSRLTrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.seed, cfg.top_k) == (1e-3, 5e-3, 10, 3)


def test_stage_input_width_is_checked():
    model = SSRLNetwork(3, SMALL)
    assert model.input_channels == 10 + 6 + 15
    with pytest.raises(ValueError, match="31"):
        model(torch.randn(1, 10, 4, SMALL))


def test_patch_vector_is_added_to_every_crop():
    torch.manual_seed(0)
    model = SSRLNetwork(2, SMALL).eval()
    clip = torch.randn(2, 10, 5, SMALL)
    patches = torch.randn(2, 6, 5, SMALL)
    out = model(torch.cat([clip, patches], dim=1))
    vector = model.patch_branches[0](patches)  # (B, T, F)
    fused = (clip + vector[:, None]).reshape(20, 5, SMALL)
    expected = model.temporal_relation(fused).reshape(2, 10, 5, SMALL)
    torch.testing.assert_close(out.features, expected)
    torch.testing.assert_close(out.scores, model.classifier(expected).mean(dim=1))
    torch.testing.assert_close(out.magnitudes, expected.norm(dim=-1).mean(dim=1))


def test_identical_crops_stay_identical_and_patches_matter():
    torch.manual_seed(0)
    model = SSRLNetwork(2, SMALL).eval()
    clip = torch.randn(1, 1, 4, SMALL).expand(1, 10, 4, SMALL)
    patches = torch.randn(1, 6, 4, SMALL)
    out = model(torch.cat([clip, patches], dim=1)).features
    torch.testing.assert_close(out[:, 0], out[:, 9])
    other = model(torch.cat([clip, patches + 1.0], dim=1)).features
    assert not torch.allclose(out, other)


# --- top-k selection and loss --------------------------------------------------------------------

def test_candidate_mask_values():
    mask = candidate_mask(torch.Size([10_000]), 0.7, torch.Generator().manual_seed(0), "cpu")
    values = torch.unique(mask).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / 0.3)]
    assert 0.27 < (mask > 0).float().mean().item() < 0.33


def test_top_k_follows_magnitude_not_score():
    # One normal, one abnormal video, 2 crops, 5 segments; without the mask top-2 is by magnitude.
    feats = torch.arange(2 * 2 * 5 * 3, dtype=torch.float32).reshape(2, 2, 5, 3)
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5]])
    mags = torch.tensor([[1.0, 2.0, 9.0, 8.0, 0.0], [7.0, 1.0, 2.0, 3.0, 6.0]])
    sel = select_top_k(feats, scores, mags, n_normal=1, k=2, drop=0.0)
    assert sel.normal_video_scores.item() == pytest.approx((0.1 + 0.2) / 2)
    assert sel.abnormal_video_scores.item() == pytest.approx((0.1 + 0.5) / 2)
    assert sel.normal_features.shape == (2, 2, 3)
    torch.testing.assert_close(sel.abnormal_features[1], feats[1, 1, [0, 4]])  # crop 1 of the abnormal video
    torch.testing.assert_close(sel.abnormal_segment_scores, scores[1:])


def test_top_k_picks_only_surviving_candidates():
    torch.manual_seed(0)
    feats = torch.randn(4, 10, 32, 8)
    scores = torch.rand(4, 32)
    mags = torch.rand(4, 32) + 1.0
    sel = select_top_k(feats, scores, mags, n_normal=2, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    normal_mask = candidate_mask(mags[:2].shape, 0.7, gen, "cpu")
    abnormal_mask = candidate_mask(mags[2:].shape, 0.7, gen, "cpu")
    idx = torch.topk(mags[2:] * abnormal_mask, 3, dim=1).indices
    assert bool((torch.gather(abnormal_mask, 1, idx) > 0).all())
    torch.testing.assert_close(sel.abnormal_video_scores, torch.gather(scores[2:], 1, idx).mean(dim=1))
    normal_idx = torch.topk(mags[:2] * normal_mask, 3, dim=1).indices
    torch.testing.assert_close(sel.normal_features[10 * 0 + 1], feats[1, 0, normal_idx[1]])  # crop 0, video 1


def test_magnitude_loss_by_hand():
    abnormal = torch.tensor([[[3.0, 0.0]]])
    normal = torch.tensor([[[0.0, 4.0]]])
    assert magnitude_loss(normal, abnormal).item() == pytest.approx((97 + 4) ** 2)
    # The selected features are averaged before the norm is taken.
    cancelling = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert magnitude_loss(cancelling, cancelling).item() == pytest.approx(100.0**2)


def test_smoothness_crosses_videos_and_sparsity_is_l2():
    scores = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert smoothness(scores).item() == pytest.approx(1.0)
    assert sparsity(torch.tensor([[0.3], [0.4]])).item() == pytest.approx(0.5)


def test_rtfm_loss_by_hand():
    sel = TopKSelection(
        normal_video_scores=torch.tensor([0.2]),
        abnormal_video_scores=torch.tensor([0.7]),
        normal_features=torch.tensor([[[0.0, 4.0]]]),
        abnormal_features=torch.tensor([[[3.0, 0.0]]]),
        abnormal_segment_scores=torch.tensor([[0.1, 0.5, 0.2]]),
    )
    cls = (-math.log(0.8) - math.log(0.7)) / 2
    expected = cls + 1e-4 * 101**2 + 8e-4 * (0.16 + 0.09) + 8e-3 * math.sqrt(0.30)
    loss = rtfm_loss(sel)
    assert loss.classification.item() == pytest.approx(cls, rel=1e-6)
    assert loss.total.item() == pytest.approx(expected, rel=1e-5)


# --- stages --------------------------------------------------------------------------------------

def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    return model


def test_load_previous_stage_loads_shared_units_and_freezes_them():
    torch.manual_seed(0)
    stage1 = _perturbed(SSRLNetwork(1, SMALL))
    stage2 = SSRLNetwork(2, SMALL)
    report = load_previous_stage(stage2, stage1.state_dict())
    assert report.loaded_units == ("classifier", "temporal_relation")
    assert report.fresh_units == ("patch_branches.0",)
    assert set(report.loaded_keys) == set(stage1.state_dict())
    for key, value in stage1.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[key], value)
    trainable = {n for n, p in stage2.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("patch_branches.0.") for n in trainable)
    assert set(report.frozen_parameters) == {n for n, _ in stage2.named_parameters()} - trainable

    stage3 = SSRLNetwork(3, SMALL)
    report3 = load_previous_stage(stage3, stage2.state_dict())
    assert report3.fresh_units == ("patch_branches.1",)
    torch.testing.assert_close(stage3.patch_branches[0].projection.weight, stage2.patch_branches[0].projection.weight)
    optimizer = make_optimizer(stage3)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in stage3.patch_branches[1].parameters()}


def test_load_previous_stage_rejects_foreign_or_partial_weights():
    stage2, stage3 = SSRLNetwork(2, SMALL), SSRLNetwork(3, SMALL)
    with pytest.raises(KeyError):
        load_previous_stage(stage2, stage3.state_dict())
    partial = {k: v for k, v in SSRLNetwork(1, SMALL).state_dict().items() if not k.startswith("classifier.layers.6")}
    with pytest.raises(ValueError, match="classifier"):
        load_previous_stage(stage2, partial)
    wider = SSRLNetwork(1, 2 * SMALL).state_dict()
    with pytest.raises(ValueError, match="shape"):
        load_previous_stage(stage2, wider)


def test_staged_train_mode_freezes_batchnorm_of_frozen_units_only():
    stage3 = SSRLNetwork(3, SMALL)
    load_previous_stage(stage3, SSRLNetwork(2, SMALL).state_dict())
    staged_train_mode(stage3)
    assert not stage3.temporal_relation.training and not stage3.patch_branches[0].training
    assert stage3.patch_branches[1].training and stage3.classifier.training and stage3.dropout.training


# --- real features -------------------------------------------------------------------------------

def _real_stage1_batch() -> torch.Tensor:
    """Two normal then two 'abnormal' real ShanghaiTech videos, divided into 32 segments per crop."""
    if not FEATURES.is_dir():
        pytest.skip(f"real I3D sample features not found under {FEATURES}")
    names = ["01_001", "01_002", "01_004", "01_005"]
    items = [training_segments(np.load(FEATURES / f"{n}_i3d.npy", allow_pickle=False)) for n in names]
    return torch.from_numpy(np.stack(items))


def _stage1_loss(model, batch, seed=0):
    torch.manual_seed(seed)  # same dropout masks for every evaluation
    out = model(batch)
    selection = select_top_k(out.features, out.scores, out.magnitudes, n_normal=2,
                             generator=torch.Generator().manual_seed(seed))
    return rtfm_loss(selection).total


def test_stage1_step_on_real_features():
    batch = _real_stage1_batch()
    assert batch.shape == (4, 10, 32, 2048) and batch.dtype == torch.float32
    torch.manual_seed(10)
    model = SSRLNetwork(1)
    staged_train_mode(model)
    optimizer = make_optimizer(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = _stage1_loss(model, batch)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert "temporal_relation.fuse.0.weight" in changed and "classifier.layers.6.weight" in changed
    assert _stage1_loss(model, batch) < loss.detach()


def test_stage2_step_trains_only_the_new_branch():
    torch.manual_seed(0)
    model = SSRLNetwork(2, SMALL)
    load_previous_stage(model, _perturbed(SSRLNetwork(1, SMALL)).state_dict())
    staged_train_mode(model)
    optimizer = make_optimizer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(torch.randn(4, 16, 32, SMALL))
    rtfm_loss(select_top_k(out.features, out.scores, out.magnitudes, n_normal=2)).total.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("patch_branches.0.") for k in changed)
    assert "patch_branches.0.to_clip.2.running_mean" in changed  # the new branch's BN still learns statistics
