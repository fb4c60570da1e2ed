"""LDM objectives (stop-gradient and the F_MI entropy-bonus form), learning-rate schedules and
linear probes."""

from __future__ import annotations

import math

import pytest
import torch

from ldmfilter.nn import LatentKalmanFilter, LatentRNNModel, LinearDynamics, MLPEncoder, RNNPredictor, make_noise
from ldmfilter.training import (
    OBJECTIVES,
    SCHEDULES,
    entropy_bonus_loss,
    fit_linear_probe,
    kde_entropy,
    knn_entropy,
    ldm_loss,
    linear_probe_r2,
    logdet_entropy,
    make_schedule,
    predict_linear_probe,
    r2_score,
    stop_gradient_loss,
)

DT = torch.float64


def make_model(noise="fixed", seed=0, state_dim=4, latent_dim=2, obs_dim=6):
    torch.manual_seed(seed)
    dyn = LinearDynamics(state_dim, latent_dim, torch.Generator().manual_seed(seed))
    enc = MLPEncoder((obs_dim,), latent_dim, hidden=(8,))
    return LatentKalmanFilter(enc, dyn, make_noise(noise, (obs_dim,), latent_dim, hidden=(5,))).to(DT)


def run(model, B=4, T=7, seed=1, mask=None):
    x = torch.randn(B, T, 6, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return model(x, mask)


def latent_grad(loss, output):
    (grad,) = torch.autograd.grad(loss, output.latents, retain_graph=True)
    return grad


# ------------------------------------------------------------------------------ stop-gradient


def test_stopgrad_detaches_the_target():
    out = run(make_model("fixed"))
    T = out.latents.shape[1]
    grad = latent_grad(ldm_loss(out, "stopgrad"), out)
    # z_{T-1} enters only as the (detached) target of the last step
    assert torch.equal(grad[:, T - 1], torch.zeros_like(grad[:, T - 1]))
    # earlier latents reach the loss through the predictions of later steps
    assert torch.all(grad[:, 0].abs().sum(-1) > 0)
    assert torch.all(grad[:, T - 2].abs().sum(-1) > 0)


@pytest.mark.parametrize("objective", ["logdet", "kde", "knn"])
def test_fmi_form_and_nll_reach_the_last_latent(objective):
    out = run(make_model("fixed"))
    T = out.latents.shape[1]
    grad = latent_grad(ldm_loss(out, objective, generator=torch.Generator().manual_seed(0)), out)
    if objective == "knn":  # a subsample of 5·B rows of B·T: only some latents get a gradient
        assert grad.abs().sum() > 0
    else:
        assert torch.all(grad[:, T - 1].abs().sum(-1) > 0)
    nll = -out.log_likelihood.mean(0).sum()
    grad = latent_grad(nll, out)
    assert torch.all(grad[:, T - 1].abs().sum(-1) > 0)


def test_stopgrad_loss_value():
    out = run(make_model("learned"))
    manual = -out.score(out.latents.detach()).mean(0).sum()
    torch.testing.assert_close(stop_gradient_loss(out), manual)
    torch.testing.assert_close(ldm_loss(out), manual)
    # the value is the negative log-likelihood: only the gradient differs
    torch.testing.assert_close(stop_gradient_loss(out), -out.log_likelihood.mean(0).sum())


def test_stopgrad_trains_encoder_through_predictions_only():
    """Encoder gradients exist (through ẑ_t), and the detached target has requires_grad False."""
    model = make_model("fixed")
    out = run(model)
    stop_gradient_loss(out).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert model.dynamics.transition.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ entropy bonus


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("method,estimator", [("logdet", logdet_entropy), ("kde", kde_entropy)])
def test_entropy_bonus_value(method, estimator, weight):
    out = run(make_model("fixed"), B=4, T=7)
    B, T, L = out.latents.shape
    manual = -out.log_likelihood.mean(0).sum() - weight * T * estimator(out.latents.reshape(B * T, L))
    torch.testing.assert_close(entropy_bonus_loss(out, method, weight), manual)
    torch.testing.assert_close(ldm_loss(out, method, entropy_weight=weight), manual)


def test_entropy_bonus_value_by_hand():
    """The same, with the log-likelihood and the log-det entropy computed from scratch."""
    out = run(make_model("fixed"), B=3, T=5)
    B, T, L = out.latents.shape
    z = out.latents.reshape(-1, L)
    cov = torch.cov(z.T) + 1e-4 * torch.eye(L, dtype=DT)
    H = 0.5 * (L * math.log(2 * math.pi * math.e) + torch.logdet(cov))
    ll = out.log_likelihood.sum() / B
    torch.testing.assert_close(entropy_bonus_loss(out, "logdet"), -ll - T * H)


def test_entropy_bonus_uses_observed_latents_only():
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[0, 1] = mask[2, 5] = False
    out = run(make_model("fixed"), mask=mask)
    T, L = out.latents.shape[1:]
    manual = -out.log_likelihood.mean(0).sum() - T * logdet_entropy(out.latents[mask].reshape(-1, L))
    torch.testing.assert_close(entropy_bonus_loss(out, "logdet"), manual)


def test_knn_bonus_subsamples_five_batch_sizes():
    out = run(make_model("fixed"), B=4, T=9)
    B, T, L = out.latents.shape
    z = out.latents.reshape(-1, L)
    ll = -out.log_likelihood.mean(0).sum()

    def bonus(seed):
        return entropy_bonus_loss(out, "knn", generator=torch.Generator().manual_seed(seed))

    first, again, other = bonus(3), bonus(3), bonus(4)
    assert torch.equal(first, again)  # seeded: reproducible
    assert not torch.equal(first, other)  # another subset
    manual = ll - T * knn_entropy(z, subsample=5 * B, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, manual)
    for size in (5 * B - 1, 5 * B + 1, None):
        wrong = ll - T * knn_entropy(z, subsample=size, generator=torch.Generator().manual_seed(3))
        assert not torch.allclose(first, wrong), f"matches subsample={size}"
    # through the dispatcher, with the same generator state
    torch.testing.assert_close(ldm_loss(out, "knn", generator=torch.Generator().manual_seed(3)), first)


def test_knn_bonus_uses_all_latents_when_fewer_than_five_batches():
    out = run(make_model("fixed"), B=4, T=3)  # B·T = 12 < 5·B = 20
    T, L = out.latents.shape[1:]
    manual = -out.log_likelihood.mean(0).sum() - T * knn_entropy(out.latents.reshape(-1, L))
    torch.testing.assert_close(entropy_bonus_loss(out, "knn", generator=torch.Generator().manual_seed(0)), manual)


def test_entropy_bonus_options_are_passed_on():
    out = run(make_model("fixed"))
    T, L = out.latents.shape[1:]
    z = out.latents.reshape(-1, L)
    manual = -out.log_likelihood.mean(0).sum() - T * kde_entropy(z, bandwidth=0.5)
    torch.testing.assert_close(entropy_bonus_loss(out, "kde", bandwidth=0.5), manual)


def test_entropy_bonus_with_rnn_model():
    torch.manual_seed(0)
    model = LatentRNNModel(MLPEncoder((6,), 2, hidden=(5,)), RNNPredictor(2, 4, (5,))).to(DT)
    out = run(model)
    B, T, L = out.latents.shape
    manual = -out.log_likelihood.mean(0).sum() - T * logdet_entropy(out.latents.reshape(-1, L))
    torch.testing.assert_close(ldm_loss(out, "logdet"), manual)


def test_objectives_names_and_unknown_objective():
    assert set(OBJECTIVES) == {"stopgrad", "knn", "kde", "logdet"}
    out = run(make_model("fixed"))
    with pytest.raises(ValueError, match="objective"):
        ldm_loss(out, "foo")
    with pytest.raises(ValueError):
        entropy_bonus_loss(out, "foo")


# ------------------------------------------------------------------------------ schedules


def test_step_schedule_halves_at_thirds():
    f = make_schedule("step", 9)
    assert [f(k) for k in range(10)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    f = make_schedule("step", 300)
    assert f(0) == 1.0 and f(99) == 1.0 and f(100) == 0.5 and f(199) == 0.5 and f(200) == 0.25 and f(299) == 0.25
    f = make_schedule("step", 10)  # thirds at 3.33 and 6.67
    assert [f(k) for k in (3, 4, 6, 7)] == [1.0, 0.5, 0.5, 0.25]


def test_linear_schedule():
    f = make_schedule("linear", 8)
    assert [f(k) for k in range(10)] == pytest.approx([1 - k / 8 for k in range(9)] + [0.0])


def test_cosine_schedule_with_warmup():
    f = make_schedule("cosine", 100, warmup_fraction=0.1)
    assert [f(k) for k in range(10)] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(10 + 90 / 3) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert f(150) == pytest.approx(0.0, abs=1e-12)
    values = [f(k) for k in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    g = make_schedule("cosine", 100)  # default: 5% warm-up
    assert g(0) == pytest.approx(0.2) and g(4) == pytest.approx(1.0)
    h = make_schedule("cosine", 10, warmup_fraction=0.0)  # at least one warm-up step
    assert h(0) == pytest.approx(1.0)


def test_constant_schedule_and_tiny_totals():
    f = make_schedule("constant", 5)
    assert all(f(k) == 1.0 for k in range(10))
    for kind in SCHEDULES:
        g = make_schedule(kind, 0)
        assert math.isfinite(g(0)) and g(0) > 0


def test_unknown_schedule():
    assert set(SCHEDULES) == {"step", "linear", "cosine", "constant"}
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("foo", 10)


def test_schedule_with_lambda_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, make_schedule("step", 6))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])


# ------------------------------------------------------------------------------ probes


def test_r2_score_matches_manual():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 20, 2, generator=g, dtype=DT)
    p = y + 0.5 * torch.randn(3, 20, 2, generator=g, dtype=DT)
    yy, pp = y.reshape(-1, 2), p.reshape(-1, 2)
    per_dim = 1 - ((yy - pp) ** 2).sum(0) / ((yy - yy.mean(0)) ** 2).sum(0)
    assert r2_score(p, y) == pytest.approx(float(per_dim.mean()), rel=1e-12)
    assert r2_score(y, y) == 1.0
    assert r2_score(torch.full_like(y, 0.0) + y.reshape(-1, 2).mean(0), y) == pytest.approx(0.0, abs=1e-12)
    assert isinstance(r2_score(p.float(), y.float()), float)


def test_linear_probe_is_exact_on_affine_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, 5, generator=g, dtype=DT)
    W = torch.randn(5, 3, generator=g, dtype=DT)
    c = torch.randn(3, generator=g, dtype=DT)
    y = x @ W + c
    weights = fit_linear_probe(x, y)
    assert weights.shape == (6, 3) and weights.dtype == DT
    torch.testing.assert_close(weights[:-1], W)
    torch.testing.assert_close(weights[-1], c)
    x_test = torch.randn(2, 10, 5, generator=g, dtype=DT)
    assert predict_linear_probe(weights, x_test).shape == (2, 10, 3)
    assert linear_probe_r2(x, y, x_test, x_test @ W + c) == pytest.approx(1.0, abs=1e-10)
    # float32 inputs and gradients do not matter
    assert linear_probe_r2(x.float().requires_grad_(), y.float(), x_test.float(), (x_test @ W + c).float()) == pytest.approx(1.0, abs=1e-5)


def test_linear_probe_fits_on_train_and_scores_on_test():
    g = torch.Generator().manual_seed(1)
    x_train = torch.randn(200, 3, generator=g, dtype=DT)
    x_test = torch.randn(100, 3, generator=g, dtype=DT)
    W_train = torch.tensor([[1.0], [2.0], [-1.0]], dtype=DT)
    W_test = torch.tensor([[1.0], [2.0], [1.0]], dtype=DT)  # a different map on the test set
    y_train, y_test = x_train @ W_train, x_test @ W_test
    r2 = linear_probe_r2(x_train, y_train, x_test, y_test)
    expected = r2_score(x_test @ W_train, y_test)
    assert r2 == pytest.approx(expected, abs=1e-10)
    assert r2 < 0.9  # fitted on the test set it would be 1
    assert linear_probe_r2(x_test, y_test, x_test, y_test) == pytest.approx(1.0, abs=1e-10)
