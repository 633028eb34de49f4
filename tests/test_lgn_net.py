"""Tests of the LGN-Net network, its losses, memory rules and test-time scoring."""

import math

import pytest
import torch

from models.lgn_net import (
    LGNNet,
    LGNNetConfig,
    cosine_lr,
    feature_distance,
    gated_memory_update,
    lgn_loss,
    lgn_video_score,
    make_optimizer,
    point_score,
    psnr,
    updated_memory_items,
)
from pipelines.training import check_finite

SMALL = 32  # smallest size with an ST-LSTM grid (8x8) and a query grid (4x4) worth testing


def _clip(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 5, 3, size, size, generator=generator) * 2 - 1
    return frames[:, :4], frames[:, 4]


def _model(seed: int = 0) -> LGNNet:
    torch.manual_seed(seed)
    return LGNNet(LGNNetConfig())


def test_paper_resolution_shapes():
    model = _model().eval()
    inputs, _ = _clip(1, 256)
    with torch.no_grad():
        out = model(inputs)
    assert out.prediction.shape == (1, 3, 256, 256)
    assert out.queries.shape == (1, 512, 32, 32)
    assert out.read_out.shape == (1, 512, 32, 32)
    assert out.memory.shape == (10, 512)
    assert out.prediction.abs().max() <= 1
    assert torch.allclose(out.queries.norm(dim=1), torch.ones(1, 32, 32), atol=1e-5)


def test_rejects_wrong_clip_length():
    inputs, _ = _clip(1, SMALL)
    with pytest.raises(ValueError, match="expects frames"):
        _model()(inputs[:, :3])


def test_same_seed_same_output():
    inputs, _ = _clip(1, SMALL)
    outputs = [_model(seed=3).eval()(inputs).prediction for _ in range(2)]
    assert torch.equal(outputs[0], outputs[1])


def test_one_optimiser_step_lowers_loss():
    cfg = LGNNetConfig()
    model = _model().train()
    inputs, target = _clip(2, SMALL)
    optimizer = make_optimizer(model, cfg)
    before, _ = lgn_loss(model(inputs, update_memory=False), target, cfg)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after, _ = lgn_loss(model(inputs, update_memory=False), target, cfg)
    assert after.item() < before.item()


def test_optimizer_and_schedule_follow_config():
    cfg = LGNNetConfig()
    model = _model()
    optimizer = make_optimizer(model, cfg)
    assert optimizer.param_groups[0]["lr"] == 2e-4
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    optimised = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert id(model.memory.items) not in optimised
    assert math.isclose(cosine_lr(cfg, cfg.epochs // 2), 1e-4, rel_tol=1e-9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    for epoch in range(cfg.epochs):
        assert math.isclose(cosine_lr(cfg, epoch), optimizer.param_groups[0]["lr"], rel_tol=1e-6, abs_tol=1e-12)
        optimizer.step()
        scheduler.step()


def test_training_forward_updates_memory_after_the_read():
    model = _model().train()
    inputs, _ = _clip(1, SMALL)
    before = model.memory.items.clone()
    out = model(inputs)
    assert torch.equal(out.memory, before)
    assert not torch.equal(model.memory.items, before)
    model.eval()
    settled = model.memory.items.clone()
    model(inputs)
    assert torch.equal(model.memory.items, settled)


def test_memory_rows_stay_unit_norm_after_update():
    generator = torch.Generator().manual_seed(1)
    items = torch.nn.functional.normalize(torch.rand(10, 512, generator=generator), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(2, 512, 4, 4, generator=generator), dim=1)
    updated = updated_memory_items(queries, items)
    assert torch.allclose(updated.norm(dim=1), torch.ones(10), atol=1e-6)
    nearest = (queries.permute(0, 2, 3, 1).reshape(-1, 512) @ items.T).argmax(dim=1).unique()
    untouched = [i for i in range(10) if i not in nearest.tolist()]
    assert not torch.allclose(updated[nearest], items[nearest])
    assert torch.allclose(updated[untouched], items[untouched], atol=1e-6)


def test_memory_update_matches_rule_for_single_query():
    # one query: its softmax over queries is 1, so its weight is 1 and item i <- norm(m_i + q)
    items = torch.eye(3, 4)
    query = torch.nn.functional.normalize(torch.tensor([0.9, 0.1, 0.0, 0.3]), dim=0)
    updated = updated_memory_items(query.reshape(1, 4, 1, 1), items)
    expected = torch.nn.functional.normalize(items[0] + query, dim=0)
    assert torch.allclose(updated[0], expected, atol=1e-6)
    assert torch.equal(updated[1:], items[1:])


@pytest.mark.parametrize(
    "error, fires", [(0.0089, True), (torch.tensor(0.0089), True), (0.009, False), (0.05, False)]
)
def test_gated_update_fires_only_below_gamma(error, fires):
    model = _model().eval()
    inputs, _ = _clip(1, SMALL)
    with torch.no_grad():
        queries = model(inputs).queries
    before = model.memory.items.clone()
    assert gated_memory_update(model, queries, error, gamma=0.009) is fires
    assert torch.equal(model.memory.items, before) is not fires
    assert torch.allclose(model.memory.items.norm(dim=1), torch.ones(10), atol=1e-6)


def test_only_memory_losses_train_the_global_encoder():
    cfg = LGNNetConfig()
    model = _model().train()
    inputs, target = _clip(1, SMALL)
    out = model(inputs, update_memory=False)
    prediction_loss = torch.nn.functional.mse_loss(out.prediction, target)
    encoder = list(model.global_encoder.parameters())
    assert out.read_out.grad_fn is None
    prediction_grads = torch.autograd.grad(prediction_loss, encoder, allow_unused=True, retain_graph=True)
    assert all(g is None for g in prediction_grads)
    decoder_grads = torch.autograd.grad(prediction_loss, list(model.local_branch.parameters()), retain_graph=True)
    assert any(g.abs().sum() > 0 for g in decoder_grads)
    total, parts = lgn_loss(out, target, cfg)
    memory_loss = total - parts["prediction"]
    memory_grads = torch.autograd.grad(memory_loss, encoder)
    assert all(g is not None for g in memory_grads)
    assert sum(g.abs().sum() for g in memory_grads) > 0


def test_local_branch_carries_earlier_frames_forward():
    model = _model().eval()
    inputs, _ = _clip(1, SMALL)
    changed = inputs.clone()
    changed[:, 0] = -changed[:, 0]
    with torch.no_grad():
        assert not torch.allclose(model.local_branch(inputs), model.local_branch(changed))


def test_psnr_and_point_score_values():
    target = torch.zeros(2, 3, 8, 8)
    prediction = target + 0.2  # 0.1 on the [0, 1] scale, squared error 0.01
    assert torch.allclose(psnr(prediction, target), torch.full((2,), 20.0))
    assert torch.allclose(point_score(prediction, target), torch.full((2,), 0.01))
    prediction[1, :, :4] = 1.0  # a bright region: weighted error exceeds the plain mean
    plain_mse = ((prediction[1] + 1) / 2 - 0.5).pow(2).mean()
    assert point_score(prediction, target)[1] > plain_mse


def test_feature_distance_is_zero_on_items_and_grows_off_them():
    items = torch.nn.functional.normalize(torch.rand(10, 16), dim=1)
    on_items = items[[0, 3, 5, 7]].T.reshape(1, 16, 2, 2)
    assert feature_distance(on_items, items).item() == pytest.approx(0.0, abs=1e-12)
    off_items = torch.nn.functional.normalize(on_items + 0.3 * torch.randn(1, 16, 2, 2), dim=1)
    assert feature_distance(off_items, items).item() > 1e-4


def test_video_score_mixes_minmaxed_psnr_and_distance():
    scores = lgn_video_score([10.0, 30.0, 20.0], [0.1, 0.2, 0.3], lam=0.6)
    # normality 0.6 * [0, 1, .5] + 0.4 * [1, .5, 0] = [.4, .8, .3]
    assert torch.allclose(scores, torch.tensor([0.6, 0.2, 0.7], dtype=torch.float64))
    assert torch.allclose(lgn_video_score([5.0, 5.0], [1.0, 1.0], lam=0.6), torch.full((2,), 0.6, dtype=torch.float64))
    with pytest.raises(ValueError, match="equally long"):
        lgn_video_score([1.0, 2.0], [1.0], lam=0.6)


def test_a_nan_in_a_video_leaves_no_finite_score_behind():
    """A NaN must not turn its term into a constant that passes for a score (the scores file refuses
    non-finite scores; a constant would be evaluated as chance)."""
    scores = lgn_video_score([30.0, float("nan"), 20.0, 25.0], [0.1, 0.2, 0.3, 0.4], lam=0.6)
    assert torch.isnan(scores).all()


def test_the_frame_encoder_normalises_each_time_step_on_its_own():
    """As the official predictor, one encoder call per input frame: in training each call's batch
    norms use that frame's statistics and update their running ones (4 updates a forward)."""
    model = _model().train()
    inputs, _ = _clip(2, SMALL)
    model.local_branch(inputs)
    norms = [m for m in model.local_branch.frame_encoder if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) == inputs.shape[1] for m in norms)


def test_check_finite_names_the_place():
    check_finite(torch.tensor(1.0), "fine")
    with pytest.raises(FloatingPointError, match="epoch 3"):
        check_finite(torch.tensor(float("nan")), "epoch 3")
    cfg = LGNNetConfig()
    model = _model().train()
    inputs, target = _clip(1, SMALL)
    target[0, 0, 0, 0] = float("nan")
    loss, _ = lgn_loss(model(inputs, update_memory=False), target, cfg)
    with pytest.raises(FloatingPointError):
        check_finite(loss, "lgn step")
