"""Tests of the STD network, deep K-means, staged losses and test-time scoring."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.training import check_finite
from models.std import (
    STDConfig,
    STDNet,
    STDOutputs,
    VarianceAttention,
    gradient_difference_loss,
    init_centres,
    kmeans_codes,
    make_optimizers,
    std_ae_loss,
    std_cluster_loss,
    std_optimiser_step,
    std_regularity,
    std_schedule,
    std_video_score,
)

SMALL = 32


def _clip(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 5, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model(cfg: STDConfig | None = None, seed: int = 0) -> STDNet:
    torch.manual_seed(seed)
    return STDNet(cfg or STDConfig())


def test_paper_resolution_shapes_and_code_normalisation():
    model = _model().eval()
    with torch.no_grad():
        out = model(_clip(1, 256))
    assert out.appearance_recon.shape == (1, 3, 256, 256)
    assert out.motion_pred.shape == (1, 3, 256, 256)
    assert out.appearance_code.shape == out.motion_code.shape == (1, 256, 32, 32)
    assert out.distances.shape == out.assignments.shape == (1, 32, 32, 32)
    for code in (out.appearance_code, out.motion_code):
        assert torch.allclose(code.abs().sum(dim=1), torch.ones(1, 32, 32), atol=1e-5)
    assert torch.allclose(out.assignments.sum(dim=-1), torch.ones(1, 32, 32), atol=1e-5)


def test_rejects_sizes_the_attention_pools_cannot_tile():
    with pytest.raises(ValueError, match="divisible by 16"):
        _model()(_clip(1, 24))


def test_same_seed_same_output():
    clip = _clip(1, SMALL)
    outputs = [_model(seed=5).eval()(clip).motion_pred for _ in range(2)]
    assert torch.equal(outputs[0], outputs[1])


def test_appearance_sees_only_first_frame_and_motion_not_last():
    model = _model().eval()
    clip = _clip(1, SMALL)
    changed = clip.clone()
    changed[:, 4] = 1 - changed[:, 4]  # F4 is only a target
    with torch.no_grad():
        a, b = model(clip), model(changed)
        assert torch.equal(a.appearance_recon, b.appearance_recon)
        assert torch.equal(a.motion_pred, b.motion_pred)
        changed[:, 2] = 1 - changed[:, 2]  # F2 feeds motion, not appearance
        c = model(changed)
    assert torch.equal(a.appearance_recon, c.appearance_recon)
    assert not torch.allclose(a.motion_pred, c.motion_pred)


def test_variance_attention_shape_and_response_to_variance():
    torch.manual_seed(0)
    attention = VarianceAttention(8, pool=4)
    flat = torch.ones(1, 8, 16, 16) * torch.linspace(-1, 1, 8).reshape(1, 8, 1, 1)
    uniform = attention.weights(flat)
    assert uniform.shape == (1, 1, 16, 16)
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / 16))
    assert torch.allclose(attention(flat), flat * torch.exp(uniform))
    varied = flat.clone()
    varied[:, :, 4:8, 8:12] += 3 * torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    weights = attention.weights(varied)
    assert attention(varied).shape == varied.shape
    assert weights[0, 0, 4:8, 8:12].min() > weights[0, 0, :4].max()
    assert torch.allclose(weights[0, 0, ::4, ::4].sum(), torch.tensor(1.0))


def test_kmeans_init_gives_k_centres_of_code_width():
    model = _model(replace(STDConfig(), clusters=4)).eval()
    with torch.no_grad():
        codes = kmeans_codes(model(_clip(2, SMALL)), l2_normalised=False)
    assert codes.shape == (2 * 4 * 4, 512)
    centres = init_centres(codes, k=4, seed=0, n_init=1)
    assert centres.shape == (4, 512) and centres.dtype == torch.float32
    model.set_centres(centres)
    assert torch.equal(model.clustering.centres.detach(), centres)
    with pytest.raises(ValueError, match="centres must have shape"):
        model.set_centres(centres[:3])


def test_kmeans_init_recovers_separated_blobs():
    generator = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 5.0]])
    codes = (means.repeat_interleave(50, dim=0) + 0.1 * torch.randn(150, 3, generator=generator)).numpy()
    centres = init_centres(codes, k=3, seed=7)
    for mean in means:
        assert (centres - mean).norm(dim=1).min() < 0.1
    assert torch.equal(centres, init_centres(codes, k=3, seed=7))


def test_schedule_is_ordered_and_uses_known_optimisers():
    cfg = STDConfig()
    stages = std_schedule(cfg)
    assert [s.name for s in stages] == ["pretrain_ae", "init_centres", "joint"]
    assert [s.iterations for s in stages] == [5_000, 500, 100_000]
    assert [s.optimisers for s in stages] == [("ae",), (), ("ae", "cluster")]
    optimisers = make_optimizers(_model(), cfg)
    assert {name for s in stages for name in s.optimisers} <= optimisers.keys()
    assert optimisers["ae"].param_groups[0]["lr"] == 1e-5
    assert optimisers["cluster"].param_groups[0]["lr"] == 1e-6


def test_cluster_optimiser_holds_centres_and_two_shared_convs():
    model = _model()
    cluster = {id(p) for p in model.cluster_parameters()}
    ae = {id(p) for p in model.ae_parameters()}
    shared = {id(model.appearance.proj[0].weight), id(model.motion.last_layer.weight)}
    assert cluster == shared | {id(model.clustering.centres)}
    assert cluster & ae == shared


@pytest.mark.parametrize("name", ["ae", "cluster"])
def test_one_optimiser_step_lowers_its_loss(name):
    # larger learning rates than the defaults so one step moves the loss well above float noise
    cfg = replace(STDConfig(), ae_lr=1e-3, cluster_lr=1e-3)
    model = _model(cfg)
    clip = _clip(2, SMALL)
    optimisers = make_optimizers(model, cfg)
    before, parts = std_optimiser_step(model, optimisers, name, clip, cfg)
    check_finite(before, f"std {name} step")
    after, _ = [std_ae_loss, std_cluster_loss][name == "cluster"](model(clip), clip, cfg)
    assert after.item() < before.item()
    assert set(parts) == ({"appearance", "motion", "gdl", "recon"} if name == "ae" else {"cluster"})


def test_ae_loss_does_not_reach_centres_and_cluster_loss_does():
    cfg = STDConfig()
    model = _model().train()
    clip = _clip(1, SMALL)
    out = model(clip)
    ae_loss, _ = std_ae_loss(out, clip, cfg)
    cluster_loss, _ = std_cluster_loss(out, clip, cfg)
    (centre_grad,) = torch.autograd.grad(ae_loss, [model.clustering.centres], allow_unused=True, retain_graph=True)
    assert centre_grad is None
    grads = torch.autograd.grad(cluster_loss, model.cluster_parameters())
    assert all(g.abs().sum() > 0 for g in grads)


def test_ae_loss_terms():
    cfg = STDConfig()
    clip = _clip(1, SMALL)
    delta = clip[:, 4] - clip[:, 0]
    perfect = STDOutputs(clip[:, 0], delta, *(torch.zeros(1),) * 4)
    total, parts = std_ae_loss(perfect, clip, cfg)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["recon"].item() == pytest.approx(0.0, abs=1e-6)
    shifted = STDOutputs(clip[:, 0] + 0.1, delta + 0.2, *(torch.zeros(1),) * 4)
    total, parts = std_ae_loss(shifted, clip, cfg)
    # a constant offset changes no gradient, so GDL stays 0 while the MSE terms see it
    assert parts["appearance"].item() == pytest.approx(0.01, rel=1e-4)
    assert parts["motion"].item() == pytest.approx(0.04, rel=1e-4)
    assert parts["gdl"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["recon"].item() == pytest.approx(0.09, rel=1e-4)
    assert total.item() == pytest.approx(0.05, rel=1e-4)


def test_gradient_difference_loss_value():
    target = torch.zeros(1, 1, 2, 3)
    prediction = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]])
    # |dx| = [[1, 0, 0], [0, 0, 0]], |dy| = [[0, 1, 1], [0, 0, 0]] over 6 elements
    assert gradient_difference_loss(prediction, target).item() == pytest.approx(3 / 6)


def test_cluster_loss_sums_over_the_batch():
    cfg = STDConfig()
    model = _model().eval()
    single = _clip(1, SMALL)
    with torch.no_grad():
        one, _ = std_cluster_loss(model(single), single, cfg)
        two, _ = std_cluster_loss(model(single.repeat(2, 1, 1, 1, 1)), single, cfg)
    assert two.item() == pytest.approx(2 * one.item(), rel=1e-5)


def test_regularity_weights_error_by_cluster_energy():
    clip = torch.zeros(2, 5, 3, 16, 16)
    recon = torch.zeros(2, 3, 16, 16)
    delta = torch.full((2, 3, 16, 16), 0.1)  # squared error 0.01 everywhere
    delta[1, :, :8, :8] = 0.3  # more error in one quarter for the second clip
    k = 4
    distances = torch.ones(2, 2, 2, k)
    assignments = torch.full((2, 2, 2, k), 1 / k)  # energy mean_k(d * q) = 1 / k
    out = STDOutputs(recon, delta, torch.zeros(1), torch.zeros(1), distances, assignments)
    regularity = std_regularity(out, clip)
    assert regularity[0].item() == pytest.approx(1 / (0.01 / k), rel=1e-4)
    assert regularity[1] < regularity[0]
    # raising the energy only under the erroneous quarter (upsampled 8x) lowers regularity further
    distances[1, 0, 0] = 3.0
    assert std_regularity(out, clip)[1] < regularity[1]


def test_video_score_is_one_minus_minmaxed_reciprocal():
    assert torch.allclose(std_video_score([1.0, 2.0, 4.0]), torch.tensor([1.0, 2 / 3, 0.0], dtype=torch.float64))
    # a constant video: 0 throughout, as the pipeline's per-video min-max of its stored scores gives
    assert torch.equal(std_video_score([3.0, 3.0]), torch.zeros(2, dtype=torch.float64))
    from pipelines.metrics import minmax_per_video
    assert np.array_equal(minmax_per_video(-1 / np.array([3.0, 3.0])), std_video_score([3.0, 3.0]).numpy())
    with pytest.raises(ValueError, match="1-D"):
        std_video_score([[1.0, 2.0]])


def test_nan_loss_is_detected():
    cfg = STDConfig()
    model = _model().train()
    clip = _clip(1, SMALL)
    clip[0, 4, 0, 0, 0] = float("nan")
    loss, _ = std_ae_loss(model(clip), clip, cfg)
    with pytest.raises(FloatingPointError, match="std ae"):
        check_finite(loss, "std ae")
    # In a training step the check comes before backward: the weights stay as they were.
    optimisers = {"ae": torch.optim.Adam(model.parameters(), lr=1e-3)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="std step 1"):
        std_optimiser_step(model, optimisers, "ae", clip, cfg, "std step 1")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) or "running" in key or "num_batches" in key, key
