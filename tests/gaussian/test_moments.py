"""The sampling-free moment rules (``linearize``, ``unscented``, ``cubature``, ``propagate``).

What is pinned down:

* every rule is exact on affine maps (any output dimension, batched, any unscented parameters);
* on smooth nonlinear maps with small covariances each rule agrees with a seeded Monte Carlo
  estimate within a few standard errors plus the rule's own (known-order) approximation error;
* the sigma-point rules integrate quadratics (and cubics) exactly, the linearisation does not;
* ``inputs`` are handed to ``fn`` row by row; gradients flow to mean, covariance and the
  parameters ``fn`` closes over; bad arguments raise; results are symmetric PSD, also under
  ``torch.no_grad()``.
"""

from __future__ import annotations

import pytest
import torch

from ldmfilter.gaussian import cubature, linearize, propagate, unscented

DTYPE = torch.float64
EXACT = dict(rtol=1e-12, atol=1e-12)
METHODS = ["linearize", "unscented", "cubature"]
RULES = {"linearize": linearize, "unscented": unscented, "cubature": cubature}
# (alpha, beta, kappa): the defaults, a shrunk spread with negative centre weight, a kappa > 0,
# Julier's "S + kappa = 3" choice for S = 4, and beta = 0
UT_SETTINGS = [(1.0, 2.0, 0.0), (0.5, 2.0, 0.0), (0.7, 2.0, 1.0), (1.0, 2.0, -1.0), (1.0, 0.0, 0.0)]

# every (rule, options) pair: the three rules plus the non-default unscented settings
RULE_CASES = [("linearize", {}), ("cubature", {})] + [
    ("unscented", dict(alpha=a, beta=b, kappa=k)) for a, b, k in UT_SETTINGS
]
RULE_IDS = [m if not o else f"unscented-a{o['alpha']}-b{o['beta']}-k{o['kappa']}" for m, o in RULE_CASES]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(*shape, n: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Random well-conditioned SPD matrices of shape (*shape, n, n)."""
    a = torch.randn(*shape, n, n, generator=gen, dtype=DTYPE)
    return scale * (a @ a.mT / n + 0.5 * torch.eye(n, dtype=DTYPE))


def _affine_fn(M: torch.Tensor, b: torch.Tensor):
    return lambda x: x @ M.T + b


def _assert_sym_psd(cov: torch.Tensor, tol: float = 1e-12) -> None:
    assert torch.equal(cov, cov.mT), "covariance is not exactly symmetric"
    eig = torch.linalg.eigvalsh(cov)
    scale = cov.abs().amax(dim=(-2, -1), keepdim=False).clamp_min(1.0)
    assert (eig[..., 0] >= -tol * scale).all(), f"covariance not PSD, smallest eigenvalue {eig[..., 0].min()}"


# --------------------------------------------------------------------------------------------
# exactness on affine maps
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", RULE_CASES, ids=RULE_IDS)
@pytest.mark.parametrize(
    "mean_batch,cov_batch",
    [((), ()), ((5,), (5,)), ((2, 3), (3,)), ((), (4,)), ((4, 1), (1, 3))],
    ids=["unbatched", "batched", "mean-broadcast", "cov-only-batched", "outer-broadcast"],
)
@pytest.mark.parametrize("S,D", [(4, 4), (4, 2), (2, 5)], ids=["square", "D<S", "D>S"])
def test_affine_map_is_exact(method, options, mean_batch, cov_batch, S, D):
    """f(x) = M x + b: mean M m + b, cov M P Mᵀ, cross P Mᵀ to 1e-12, batched and non-square."""
    gen = _gen(S * 100 + D)
    M = torch.randn(D, S, generator=gen, dtype=DTYPE)
    b = torch.randn(D, generator=gen, dtype=DTYPE)
    mean = torch.randn(*mean_batch, S, generator=gen, dtype=DTYPE)
    cov = _spd(*cov_batch, n=S, gen=gen)
    pm = propagate(_affine_fn(M, b), mean, cov, method, **options)
    batch = torch.broadcast_shapes(mean_batch, cov_batch)
    assert pm.mean.shape == batch + (D,)
    assert pm.cov.shape == batch + (D, D)
    assert pm.cross_cov.shape == batch + (S, D)
    torch.testing.assert_close(pm.mean, (mean @ M.T + b).expand(batch + (D,)), **EXACT)
    torch.testing.assert_close(pm.cov, (M @ cov @ M.T).expand(batch + (D, D)), **EXACT)
    torch.testing.assert_close(pm.cross_cov, (cov @ M.T).expand(batch + (S, D)), **EXACT)


@pytest.mark.parametrize("method", METHODS)
def test_identity_map_returns_the_input_belief(method):
    """f(x) = x reproduces (m, P) and cross_cov = P."""
    gen = _gen(7)
    mean = torch.randn(3, 4, generator=gen, dtype=DTYPE)
    cov = _spd(3, n=4, gen=gen)
    pm = propagate(lambda x: x, mean, cov, method)
    torch.testing.assert_close(pm.mean, mean, **EXACT)
    torch.testing.assert_close(pm.cov, cov, **EXACT)
    torch.testing.assert_close(pm.cross_cov, cov, **EXACT)


@pytest.mark.parametrize("method", METHODS)
def test_propagate_dispatches_to_the_named_rule(method):
    """propagate(..., method=name, **options) is the named rule called with those options."""
    gen = _gen(8)
    mean = torch.randn(2, 3, generator=gen, dtype=DTYPE)
    cov = _spd(2, n=3, gen=gen, scale=0.1)
    fn = lambda x: torch.sin(x) * x.sum(-1, keepdim=True)  # noqa: E731
    options = dict(alpha=0.8, beta=1.0, kappa=0.5) if method == "unscented" else {}
    a = propagate(fn, mean, cov, method, **options)
    b = RULES[method](fn, mean, cov, **options)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# nonlinear maps against Monte Carlo
# --------------------------------------------------------------------------------------------

MC_SAMPLES = 200_000
MC_SIGMA = 0.1  # scale of the standard deviations of x


def _smooth_fn(x: torch.Tensor) -> torch.Tensor:
    """A smooth R³ -> R³ map mixing sin, tanh, exp and products."""
    return torch.stack(
        [
            torch.sin(x[:, 0]) + x[:, 1] * x[:, 2],
            torch.tanh(x[:, 1] - 0.5 * x[:, 0]),
            torch.exp(0.3 * x[:, 2]) * torch.cos(x[:, 0]),
        ],
        -1,
    )


@pytest.fixture(scope="module")
def monte_carlo():
    """Seeded MC estimates (and their standard errors) of E[f], Cov[f], Cov[x, f] for x ~ N(m, P)."""
    mean = torch.tensor([0.3, -0.2, 0.5], dtype=DTYPE)
    chol = MC_SIGMA * torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.8, 0.0], [-0.3, 0.2, 0.9]], dtype=DTYPE)
    cov = chol @ chol.T
    x = mean + torch.randn(MC_SAMPLES, 3, generator=_gen(2024), dtype=DTYPE) @ chol.T
    y = _smooth_fn(x)
    n = MC_SAMPLES
    y_mean = y.mean(0)
    dy, dx = y - y_mean, x - mean  # the input mean is known exactly
    cov_terms = dy[:, :, None] * dy[:, None, :]
    cross_terms = dx[:, :, None] * dy[:, None, :]
    return dict(
        mean=mean, cov=cov,
        y_mean=y_mean, se_mean=y.std(0) / n**0.5,
        y_cov=cov_terms.mean(0), se_cov=cov_terms.std(0) / n**0.5,
        cross=cross_terms.mean(0), se_cross=cross_terms.std(0) / n**0.5,
    )


# Allowed approximation error of each rule on top of 5 MC standard errors, in units of σ = 0.1.
# The sigma-point rules are exact to third order, so their errors are O(σ⁴) (mean, cross) and
# O(σ⁴) (cov); the linearisation misses ½ tr(∇²f P) in the mean, an O(σ²) bias (here ≈ 0.5 σ²),
# and its covariances are O(σ⁴) off.  (Measured against a 30³-node Gauss–Hermite rule: sigma
# points mean 2e-6, cov 6e-5, cross 1.3e-5; linearize mean 4.8e-3, cov 8.4e-5, cross 4.8e-5.)
SIGMA2, SIGMA4 = MC_SIGMA**2, MC_SIGMA**4
BUDGET = {
    "linearize": dict(mean=SIGMA2, cov=2 * SIGMA4, cross=SIGMA4),
    "unscented": dict(mean=SIGMA4, cov=2 * SIGMA4, cross=SIGMA4),
    "cubature": dict(mean=SIGMA4, cov=2 * SIGMA4, cross=SIGMA4),
}


@pytest.mark.parametrize("method", METHODS)
def test_smooth_map_against_monte_carlo(method, monte_carlo):
    """Mean, cov and cross-cov of a smooth map agree with 2e5-sample MC within 5 SE + the rule's error."""
    mc = monte_carlo
    pm = propagate(_smooth_fn, mc["mean"], mc["cov"], method)
    budget = BUDGET[method]
    for got, want, se, key in [
        (pm.mean, mc["y_mean"], mc["se_mean"], "mean"),
        (pm.cov, mc["y_cov"], mc["se_cov"], "cov"),
        (pm.cross_cov, mc["cross"], mc["se_cross"], "cross"),
    ]:
        excess = (got - want).abs() - (5 * se + budget[key])
        assert (excess <= 0).all(), f"{method} {key}: |rule - MC| exceeds 5 SE + {budget[key]:g} by {excess.max():.3g}"


def test_linearize_mean_is_biased_where_sigma_points_are_not(monte_carlo):
    """Documents the difference: the EKF mean is many SE off the MC mean, the sigma-point means are not."""
    mc = monte_carlo
    z = {m: ((propagate(_smooth_fn, mc["mean"], mc["cov"], m).mean - mc["y_mean"]) / mc["se_mean"]).abs().max()
         for m in METHODS}
    assert z["linearize"] > 8.0
    assert z["unscented"] < 4.0 and z["cubature"] < 4.0


@pytest.mark.parametrize("method,options", [c for c in RULE_CASES if c[0] != "linearize"], ids=RULE_IDS[1:])
def test_sigma_points_integrate_quadratics_and_cubics_exactly(method, options):
    """E[x⊙x] = m² + diag P, E[x xᵀ] = m mᵀ + P and E[x⊙x⊙x] = m³ + 3 m diag P exactly (any α, β, κ)."""
    gen = _gen(11)
    S = 4
    mean = torch.randn(3, S, generator=gen, dtype=DTYPE)
    cov = _spd(3, n=S, gen=gen)
    var = cov.diagonal(dim1=-2, dim2=-1)
    pm = propagate(lambda x: x * x, mean, cov, method, **options)
    torch.testing.assert_close(pm.mean, mean**2 + var, **EXACT)
    outer = lambda x: (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)  # noqa: E731
    pm = propagate(outer, mean, cov, method, **options)
    want = (mean[..., :, None] * mean[..., None, :] + cov).reshape(3, -1)
    torch.testing.assert_close(pm.mean, want, **EXACT)
    pm = propagate(lambda x: x**3, mean, cov, method, **options)
    torch.testing.assert_close(pm.mean, mean**3 + 3 * mean * var, rtol=1e-12, atol=1e-11)


def test_linearize_does_not_integrate_quadratics():
    """The first-order rule returns f(m) = m² for f(x) = x⊙x, missing the diag P term."""
    gen = _gen(12)
    mean = torch.randn(3, 4, generator=gen, dtype=DTYPE)
    cov = _spd(3, n=4, gen=gen)
    pm = linearize(lambda x: x * x, mean, cov)
    torch.testing.assert_close(pm.mean, mean**2, **EXACT)
    assert ((pm.mean - (mean**2 + cov.diagonal(dim1=-2, dim2=-1))).abs() > 0.1).all()
    # its covariance is J P Jᵀ with J = 2 diag(m)
    J = torch.diag_embed(2 * mean)
    torch.testing.assert_close(pm.cov, J @ cov @ J.mT, **EXACT)


@pytest.mark.parametrize("method", METHODS)
def test_scalar_sine_matches_closed_form_to_leading_order(method):
    """1-D check with known answer: E[sin x] = sin(m) e^{-σ²/2}; rules agree to their order in σ²."""
    m, var = 0.7, 0.01
    pm = propagate(torch.sin, torch.tensor([m], dtype=DTYPE), torch.tensor([[var]], dtype=DTYPE), method)
    exact = torch.sin(torch.tensor(m, dtype=DTYPE)) * torch.exp(torch.tensor(-var / 2, dtype=DTYPE))
    err = (pm.mean[0] - exact).abs().item()
    if method == "linearize":
        assert 0.3 * var < err / abs(exact.item()) * 2 < 3 * var  # relative bias ≈ σ²/2
    else:
        assert err < var**2  # exact up to the fourth-moment term


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

def _controlled(W: torch.Tensor, B: torch.Tensor):
    return lambda x, u: torch.tanh(x @ W.T + u @ B.T) + 0.1 * u.sum(-1, keepdim=True) * x[:, :1]


@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_passed_per_row(method):
    """A batched ``inputs`` row u_b reaches fn together with the points of belief b (same as a closure)."""
    gen = _gen(21)
    S, D, U, nb = 3, 2, 2, 4
    W = torch.randn(D, S, generator=gen, dtype=DTYPE)
    B = torch.randn(D, U, generator=gen, dtype=DTYPE)
    fn = _controlled(W, B)
    mean = torch.randn(nb, S, generator=gen, dtype=DTYPE)
    cov = _spd(nb, n=S, gen=gen, scale=0.2)
    u = torch.randn(nb, U, generator=gen, dtype=DTYPE)
    got = propagate(fn, mean, cov, method, inputs=u)
    for i in range(nb):
        ui = u[i]
        want = propagate(lambda x: fn(x, ui.expand(x.shape[0], U)), mean[i], cov[i], method)
        for g, w in zip(got, want):
            torch.testing.assert_close(g[i], w, **EXACT)


@pytest.mark.parametrize("method", METHODS)
def test_unbatched_inputs_broadcast_over_beliefs(method):
    """A single input vector (U,) is shared by every belief of the batch."""
    gen = _gen(22)
    S, D, U = 3, 3, 2
    fn = _controlled(torch.randn(D, S, generator=gen, dtype=DTYPE), torch.randn(D, U, generator=gen, dtype=DTYPE))
    mean = torch.randn(5, S, generator=gen, dtype=DTYPE)
    cov = _spd(5, n=S, gen=gen, scale=0.2)
    u = torch.randn(U, generator=gen, dtype=DTYPE)
    got = propagate(fn, mean, cov, method, inputs=u)
    want = propagate(lambda x: fn(x, u.expand(x.shape[0], U)), mean, cov, method)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **EXACT)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", [
    ("linearize", {}), ("cubature", {}), ("unscented", {}), ("unscented", dict(alpha=0.7, beta=1.0, kappa=1.0)),
], ids=["linearize", "cubature", "unscented", "unscented-custom"])
def test_gradcheck_mean_cov_and_captured_parameter(method, options):
    """gradcheck of (mean, cov, cross_cov) w.r.t. the mean, a PSD-parametrised cov and fn's weight."""
    gen = _gen(31)
    S, D = 2, 2
    mean = torch.randn(S, generator=gen, dtype=DTYPE).mul(0.5).requires_grad_()
    raw = torch.randn(S, S, generator=gen, dtype=DTYPE).mul(0.5).requires_grad_()
    weight = torch.randn(D, S, generator=gen, dtype=DTYPE).requires_grad_()

    def run(mean, raw, weight):
        cov = raw @ raw.mT + 0.3 * torch.eye(S, dtype=DTYPE)
        pm = propagate(lambda x: torch.tanh(x @ weight.T) * x[:, :1], mean, cov, method, **options)
        return pm.mean, pm.cov, pm.cross_cov

    assert torch.autograd.gradcheck(run, (mean, raw, weight))


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_batched_with_inputs(method):
    """gradcheck through a batched belief with per-row inputs (including w.r.t. the inputs)."""
    gen = _gen(32)
    mean = torch.randn(2, 2, generator=gen, dtype=DTYPE).mul(0.5).requires_grad_()
    raw = torch.randn(2, 2, 2, generator=gen, dtype=DTYPE).mul(0.5).requires_grad_()
    u = torch.randn(2, 1, generator=gen, dtype=DTYPE).requires_grad_()

    def run(mean, raw, u):
        cov = raw @ raw.mT + 0.3 * torch.eye(2, dtype=DTYPE)
        pm = propagate(lambda x, v: torch.sin(x * v) + x.prod(-1, keepdim=True), mean, cov, method, inputs=u)
        return pm.mean, pm.cov, pm.cross_cov

    assert torch.autograd.gradcheck(run, (mean, raw, u))


def test_linearize_gradient_reaches_parameters_when_mean_is_constant():
    """With a constant mean, linearize's Jacobian is still differentiable w.r.t. fn's parameters."""
    w = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    mean = torch.tensor([0.4], dtype=DTYPE)
    cov = torch.tensor([[0.2]], dtype=DTYPE)
    pm = linearize(lambda x: torch.sin(w * x), mean, cov)
    (grad,) = torch.autograd.grad(pm.cov.sum(), w)
    # cov = (w cos(w m))² P  =>  d/dw = 2 w cos(wm) (cos(wm) - w m sin(wm)) P
    c, s = torch.cos(w * 0.4), torch.sin(w * 0.4)
    torch.testing.assert_close(grad, (2 * w * c * (c - w * 0.4 * s) * 0.2).detach(), **EXACT)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

def _belief(S=2):
    return torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE)


def test_unknown_method_raises():
    """propagate with an unknown rule name -> ValueError."""
    mean, cov = _belief()
    with pytest.raises(ValueError, match="method"):
        propagate(lambda x: x, mean, cov, "sampling")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "bad_fn",
    [
        lambda x: x.sum(-1),  # (N,) instead of (N, D)
        lambda x: x[:-1],  # wrong number of rows
        lambda x: x.unsqueeze(0),  # 3-D
        lambda x: x.tolist(),  # not a tensor
    ],
    ids=["1d", "rows", "3d", "list"],
)
def test_fn_with_wrong_output_shape_raises(method, bad_fn):
    """fn not mapping (N, S) -> (N, D) -> ValueError, for every rule."""
    mean, cov = _belief()
    with pytest.raises(ValueError, match="fn must map"):
        propagate(bad_fn, mean, cov, method)


@pytest.mark.parametrize("alpha,kappa", [(0.0, 0.0), (1.0, -2.0), (1.0, -3.5), (0.5, -2.0)])
def test_unscented_nonpositive_spread_raises(alpha, kappa):
    """alpha² (S + kappa) ≤ 0 (S + λ ≤ 0, S = 2) -> ValueError."""
    mean, cov = _belief(2)
    with pytest.raises(ValueError, match="unscented"):
        unscented(lambda x: x, mean, cov, alpha=alpha, kappa=kappa)


# --------------------------------------------------------------------------------------------
# no_grad, symmetry, PSD
# --------------------------------------------------------------------------------------------

def _nonlinear_problem(seed=41):
    gen = _gen(seed)
    W = torch.randn(3, 3, generator=gen, dtype=DTYPE)
    mean = torch.randn(4, 3, generator=gen, dtype=DTYPE)
    cov = _spd(4, n=3, gen=gen, scale=0.3)
    return (lambda x: torch.tanh(x @ W.T) + x[:, :1] * x), W, mean, cov


@pytest.mark.parametrize("method", METHODS)
def test_no_grad_gives_the_same_values_and_no_graph(method):
    """Under torch.no_grad() every rule (linearize uses autograd inside) returns the same detached values."""
    fn, _, mean, cov = _nonlinear_problem()
    ref = propagate(fn, mean, cov, method)
    leaf = mean.clone().requires_grad_()
    with torch.no_grad():
        got = propagate(fn, leaf, cov, method)
    for g, r in zip(got, ref):
        assert not g.requires_grad
        torch.testing.assert_close(g, r, **EXACT)


def test_linearize_no_grad_jacobian_is_correct():
    """The Jacobian computed under no_grad equals the analytic one (f(x) = tanh(W x))."""
    fn, W, mean, cov = _nonlinear_problem()
    with torch.no_grad():
        pm = linearize(lambda x: torch.tanh(x @ W.T), mean, cov)
    J = (1 - torch.tanh(mean @ W.T) ** 2).unsqueeze(-1) * W
    torch.testing.assert_close(pm.mean, torch.tanh(mean @ W.T), **EXACT)
    torch.testing.assert_close(pm.cross_cov, cov @ J.mT, **EXACT)
    torch.testing.assert_close(pm.cov, J @ cov @ J.mT, **EXACT)


@pytest.mark.parametrize("method,options", [("linearize", {}), ("cubature", {}), ("unscented", {}),
                                            ("unscented", dict(alpha=1.0, beta=2.0, kappa=1.0))],
                         ids=["linearize", "cubature", "unscented", "unscented-k1"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_outputs_are_symmetric_psd(method, options, grad):
    """cov is exactly symmetric and PSD (rules with non-negative weights), in both grad modes."""
    fn, _, mean, cov = _nonlinear_problem(42)
    with torch.set_grad_enabled(grad):
        pm = propagate(fn, mean, cov, method, **options)
    _assert_sym_psd(pm.cov)
    # the joint covariance of (x, f(x)) implied by the rule is PSD too for sigma-point rules
    if method != "linearize":
        joint = torch.cat([torch.cat([cov, pm.cross_cov], -1), torch.cat([pm.cross_cov.mT, pm.cov], -1)], -2)
        assert (torch.linalg.eigvalsh(joint)[..., 0] > -1e-12).all()


def test_linearize_state_independent_map():
    """A map that ignores x (constant output) has mean f(m), zero cov and cross-cov — as the sigma rules give."""
    mean, cov = _belief(2)
    const = torch.tensor([1.0, -2.0, 3.0], dtype=DTYPE)
    for method in ("cubature", "unscented"):
        pm = propagate(lambda x: const.expand(x.shape[0], 3), mean, cov, method)
        torch.testing.assert_close(pm.cov, torch.zeros(3, 3, dtype=DTYPE), **EXACT)
    pm = linearize(lambda x: const.expand(x.shape[0], 3), mean, cov)
    torch.testing.assert_close(pm.mean, const, **EXACT)
    torch.testing.assert_close(pm.cov, torch.zeros(3, 3, dtype=DTYPE), **EXACT)
    torch.testing.assert_close(pm.cross_cov, torch.zeros(2, 3, dtype=DTYPE), **EXACT)


def test_linearize_output_does_not_require_grad_without_differentiable_inputs():
    """Like the sigma-point rules, linearize returns plain tensors when neither mean, cov nor fn needs grad."""
    fn, _, mean, cov = _nonlinear_problem()
    for method in ("cubature", "unscented"):
        assert not any(t.requires_grad for t in propagate(fn, mean, cov, method))
    assert not any(t.requires_grad for t in linearize(fn, mean, cov))
