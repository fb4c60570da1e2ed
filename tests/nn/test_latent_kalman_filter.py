"""``LatentKalmanFilter`` and ``LatentRNNModel``: forward against the maths layer, missing frames,
parameter groups and the causality of the RNN predictor."""

from __future__ import annotations

import math

import pytest
import torch

from ldmfilter.gaussian import kalman_filter
from ldmfilter.nn import (
    LatentKalmanFilter,
    LatentRNNModel,
    LinearDynamics,
    MLPEncoder,
    RNNPredictor,
    make_noise,
)
from ldmfilter.nn.latent_filter import fill_missing_frames

DT = torch.float64
OBS = (3, 4)  # frames of shape (H, W): flattened by the MLP encoder


def make_model(noise: str = "fixed", state_dim: int = 4, latent_dim: int = 2, seed: int = 0) -> LatentKalmanFilter:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dyn = LinearDynamics(state_dim, latent_dim, g)
    with torch.no_grad():  # move off the all-zero initial values so that b, q, s matter
        dyn.offset.copy_(0.3 * torch.randn(state_dim, generator=g))
        dyn.log_process_noise.copy_(0.2 * torch.randn(state_dim, generator=g))
        dyn.log_scale.fill_(-0.5)
    model = LatentKalmanFilter(
        MLPEncoder(OBS, latent_dim, hidden=(8,)), dyn, make_noise(noise, OBS, latent_dim, hidden=(6,))
    )
    if noise == "learned":
        with torch.no_grad():
            model.noise.log_variance.copy_(0.3 * torch.randn(latent_dim, generator=g))
    return model.to(DT)


def frames(B=3, T=6, seed=1):
    return torch.randn((B, T) + OBS, generator=torch.Generator().manual_seed(seed), dtype=DT)


def direct_filter(model: LatentKalmanFilter, x: torch.Tensor, mask=None):
    """The same filter run by hand through ``ldmfilter.gaussian.kalman_filter``."""
    dyn = model.dynamics
    S, L = dyn.state_dim, dyn.latent_dim
    x_in = x if mask is None else torch.where(mask[..., None, None], x, torch.zeros((), dtype=DT))
    z = model.encoder(x_in)
    A = dyn.transition
    b = dyn.offset
    Q = torch.exp(dyn.log_scale) * torch.diag(torch.exp(dyn.log_process_noise))
    D = torch.cat([torch.eye(L, dtype=DT), torch.zeros(L, S - L, dtype=DT)], 1)
    R = model.noise(x_in, dyn.log_scale)
    c = b - A @ b
    result = kalman_filter(z, A, Q, D, R, torch.zeros(S, dtype=DT), torch.eye(S, dtype=DT), transition_offset=c, mask=mask)
    return z, R, result


FIELDS = ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood")


def assert_same_result(a, b, atol=1e-10):
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=atol, msg=name)


@pytest.mark.parametrize("noise", ["fixed", "learned"])
def test_forward_equals_direct_kalman_filter(noise):
    model = make_model(noise)
    x = frames()
    out = model(x)
    z, R, ref = direct_filter(model, x)
    torch.testing.assert_close(out.latents, z)
    assert R.shape == (2, 2)
    torch.testing.assert_close(out.observation_cov, R)
    assert_same_result(out.filtered, ref)
    torch.testing.assert_close(out.log_likelihood, ref.log_likelihood)
    assert out.log_likelihood.shape == (3, 6)
    assert out.mask is None
    assert out.features is out.filtered.filtered_mean
    # the score of the latents themselves is the filter's log-likelihood
    torch.testing.assert_close(out.score(out.latents), out.log_likelihood, rtol=1e-9, atol=1e-10)


def test_forward_uses_prior_and_update_at_first_step():
    """At t = 0 the belief is the N(0, I) prior updated with z_0: ℓ_0 = log N(z_0; 0, I + R)."""
    model = make_model("fixed")
    out = model(frames())
    L = 2
    R = out.observation_cov
    cov0 = torch.eye(L, dtype=DT) + R
    expected = torch.distributions.MultivariateNormal(torch.zeros(L, dtype=DT), cov0).log_prob(out.latents[:, 0])
    torch.testing.assert_close(out.log_likelihood[:, 0], expected)
    torch.testing.assert_close(out.filtered.predicted_mean[:, 0], torch.zeros(3, 4, dtype=DT))


@pytest.mark.parametrize("noise", ["input", "input_full"])
def test_forward_with_input_dependent_noise_uses_per_step_R(noise):
    model = make_model(noise)
    x = frames()
    out = model(x)
    z, R, ref = direct_filter(model, x)
    assert out.observation_cov.shape == (3, 6, 2, 2)
    off_diagonal = R[..., 0, 1].abs()
    assert torch.all(off_diagonal > 0) if noise == "input_full" else torch.all(off_diagonal == 0)
    torch.testing.assert_close(out.observation_cov, R)
    assert not out.filtered.shared_covariance  # one covariance per series: nothing to share
    assert_same_result(out.filtered, ref)
    if hasattr(model, "parallel"):  # both the sequential and the associative-scan path
        model.parallel = not model.parallel
        assert_same_result(model(x).filtered, ref)
        model.parallel = not model.parallel
    # and the per-step R matters: a constant R (its batch mean) gives another result
    const = kalman_filter(
        z, model.dynamics.transition, model.dynamics.transition_cov(), model.dynamics.observation_matrix,
        R.mean((0, 1)), *model.dynamics.initial_belief(), transition_offset=model.dynamics.transition_offset(),
    )
    assert not torch.allclose(const.log_likelihood, out.log_likelihood)
    # per-series covariances differ, since R_t differs between series
    assert not torch.allclose(out.filtered.filtered_cov[0], out.filtered.filtered_cov[1])
    torch.testing.assert_close(out.score(out.latents), out.log_likelihood, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("noise", ["fixed", "learned", "input", "input_absolute", "input_full"])
def test_missing_frames(noise):
    model = make_model(noise)
    x = frames(B=3, T=7)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 2] = mask[0, 3] = mask[1, 6] = mask[2, 0] = False
    x_nan = x.clone()
    x_nan[~mask] = math.nan
    out = model(x_nan, mask)
    for name in FIELDS:
        assert torch.isfinite(getattr(out.filtered, name)).all(), name
    assert torch.isfinite(out.latents).all() and torch.isfinite(out.observation_cov).all()
    assert torch.equal(out.log_likelihood[~mask], torch.zeros(4, dtype=DT))
    assert torch.all(out.log_likelihood[mask] != 0)
    # a missing step is predict-only
    f = out.filtered
    torch.testing.assert_close(f.filtered_mean[~mask], f.predicted_mean[~mask])
    torch.testing.assert_close(f.filtered_cov[~mask], f.predicted_cov[~mask])
    # what was in the missing frames does not matter
    other = x.clone()
    other[~mask] = 1e3
    out2 = model(other, mask)
    assert_same_result(out.filtered, out2.filtered)
    # and it matches the direct call (same mask, frames zero-filled before encoding)
    _, _, ref = direct_filter(model, x_nan, mask)
    assert_same_result(out.filtered, ref)
    if hasattr(model, "parallel"):
        model.parallel = not model.parallel
        assert_same_result(model(x_nan, mask).filtered, ref)
        model.parallel = not model.parallel
    # the stop-gradient score is 0 at missing steps too, and finite
    score = out.score(out.latents.detach())
    assert torch.isfinite(score).all() and torch.equal(score[~mask], torch.zeros(4, dtype=DT))
    # gradients stay finite
    out.log_likelihood.sum().backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_fill_missing_frames():
    x = frames(B=2, T=3)
    assert torch.equal(fill_missing_frames(x, None, 2), x)
    x[1, 2] = math.nan
    x[0, 1, 0, 0] = math.nan  # one missing pixel of an observed frame
    mask = torch.tensor([[True, True, True], [True, True, False]])
    filled = fill_missing_frames(x, mask, 2)
    assert torch.equal(filled[1, 2], torch.zeros(OBS, dtype=DT)) and filled[0, 1, 0, 0] == 0
    assert torch.equal(filled[0, 0], x[0, 0]) and torch.equal(filled[0, 1, 1:], x[0, 1, 1:])


# ------------------------------------------------------------------------------ parameter groups


def assert_partition(model, groups):
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)), "a parameter appears in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is missing"


@pytest.mark.parametrize("noise", ["fixed", "learned", "input", "input_absolute", "input_full"])
def test_parameter_groups_partition(noise):
    model = make_model(noise)
    groups = model.parameter_groups()
    assert set(groups) == {"encoder", "predictor", "residual", "noise_head", "observation"}
    assert groups["residual"] == [] and groups["observation"] == []  # linear dynamics, linear observation
    assert_partition(model, groups)
    enc = {id(p) for p in model.encoder.parameters()}
    dyn = {id(p) for p in model.dynamics.parameters()}
    noise_ids = {id(p) for p in model.noise.parameters()}
    assert {id(p) for p in groups["encoder"]} == enc
    if noise.startswith("input"):
        assert {id(p) for p in groups["predictor"]} == dyn
        assert {id(p) for p in groups["noise_head"]} == noise_ids and noise_ids
    else:  # a constant R learns with the predictor
        assert {id(p) for p in groups["predictor"]} == dyn | noise_ids
        assert groups["noise_head"] == []


def test_parameter_groups_partition_rnn():
    torch.manual_seed(0)
    model = LatentRNNModel(MLPEncoder(OBS, 2, hidden=(5,)), RNNPredictor(2, hidden_size=4, head=(6,)))
    groups = model.parameter_groups()
    assert_partition(model, groups)
    assert {id(p) for p in groups["encoder"]} == {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups["predictor"]} == {id(p) for p in model.predictor.parameters()}


def test_after_optimizer_step_clips_transition():
    model = make_model("fixed")
    with torch.no_grad():
        model.dynamics.transition.mul_(3.0)
    model.after_optimizer_step(1.02)
    radius = torch.linalg.eigvals(model.dynamics.transition.detach()).abs().max()
    assert float(radius) == pytest.approx(1.02, abs=1e-9)


# ------------------------------------------------------------------------------ RNN predictor


def test_rnn_predictor_is_causal():
    torch.manual_seed(0)
    pred = RNNPredictor(3, hidden_size=5, head=(7, 7)).to(DT)
    z = torch.randn(2, 8, 3, dtype=DT)
    p = pred(z)
    assert p.shape == (2, 8, 3)
    # p_0 does not depend on z at all
    torch.testing.assert_close(pred(torch.randn(2, 8, 3, dtype=DT))[:, 0], p[:, 0], rtol=0, atol=0)
    for t in range(8):
        z2 = z.clone()
        z2[:, t] += torch.randn(2, 3, dtype=DT)
        p2 = pred(z2)
        assert torch.equal(p2[:, : t + 1], p[:, : t + 1]), f"p_{{<=t}} changed when z_{t} changed"
        if t < 7:
            assert not torch.allclose(p2[:, t + 1], p[:, t + 1]), f"p_{t + 1} ignores z_{t}"


def test_rnn_predictor_gradient_is_causal():
    torch.manual_seed(0)
    pred = RNNPredictor(2, hidden_size=6, head=(20, 20)).to(DT)
    z = torch.randn(1, 6, 2, dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(pred(z)[0, 3].square().sum(), z)
    assert torch.all(grad[0, 3:] == 0) and torch.any(grad[0, :3] != 0)


def test_latent_rnn_model_output():
    torch.manual_seed(0)
    model = LatentRNNModel(MLPEncoder(OBS, 2, hidden=(5,)), RNNPredictor(2, hidden_size=4, head=(6,))).to(DT)
    x = frames(B=2, T=5)
    out = model(x)
    assert out.filtered is None and out.observation_cov is None
    assert out.features is out.latents
    means = model.predictor(out.latents)
    expected = torch.distributions.MultivariateNormal(means, torch.eye(2, dtype=DT)).log_prob(out.latents)
    torch.testing.assert_close(out.log_likelihood, expected)
    # missing frames: finite, not scored
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3] = False
    x[1, 3] = math.nan
    out = model(x, mask)
    assert torch.isfinite(out.latents).all()
    assert out.log_likelihood[1, 3] == 0 and torch.all(out.log_likelihood[mask] != 0)


@pytest.mark.parametrize("noise", ["fixed", "input"])
def test_forward_without_gradients_encodes_in_blocks_with_the_same_result(noise, monkeypatch):
    """Without gradients the frames are encoded a few series at a time (bounded memory); the
    latents, R and beliefs equal the one-pass forward's, missing frames and values included."""
    import ldmfilter.nn.latent_filter as latent_filter

    model = make_model(noise)
    x = frames(B=7, T=5)
    mask = torch.ones(7, 5, dtype=torch.bool)
    mask[2, 1], mask[6, 4] = False, False
    x[2, 1] = math.nan
    x[4, 3, 0, 1] = math.nan
    whole = model(x, mask)  # gradients on: one pass
    calls = []
    encoder_forward = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda inputs: calls.append(inputs.shape[0]) or encoder_forward(inputs))
    monkeypatch.setattr(latent_filter, "ENCODE_BLOCK_BYTES", 3 * x[0].numel() * x.element_size())  # 3 series a block
    with torch.no_grad():
        blocked = model(x, mask)
    assert calls == [3, 3, 1]
    torch.testing.assert_close(blocked.latents, whole.latents.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(blocked.observation_cov, whole.observation_cov.detach(), rtol=1e-12, atol=1e-12)
    assert blocked.observation_cov.shape == ((2, 2) if noise == "fixed" else (7, 5, 2, 2))
    assert_same_result(blocked.filtered, whole.filtered)


def test_blocked_encoding_names_the_whole_batchs_series_in_errors(monkeypatch):
    import ldmfilter.nn.latent_filter as latent_filter

    model = make_model()
    x = frames(B=5, T=4)
    x[3, 2] = math.inf  # a non-finite latent for an observed frame
    monkeypatch.setattr(latent_filter, "ENCODE_BLOCK_BYTES", 2 * x[0].numel() * x.element_size())
    with torch.no_grad(), pytest.raises(ValueError, match=r"first: series 3, step 2"):
        model(x)
