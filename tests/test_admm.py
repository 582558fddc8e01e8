"""solver="admm": the periodic embedding, the exact solve and the lasso against cvxpy.

ConvTranspose2d layers (DCGAN-style) and Conv2d layers (LSGAN- and SD-style
final layers), any stride, padding, dilation and groups.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.activations import get_activation
from flipad_sklearn.lasso import admm, solve_batch
from flipad_sklearn.lasso.admm import capacitance, get_resolvent, unobserved_outputs
from flipad_sklearn.operators.embedding import periodic_embedding
from flipad_sklearn.operators import LayerOperator

# (in, out, kernel, stride, padding, output_padding, dilation, bias, (H, W)[, groups])
LAYERS = {
    "k4s2p1": (4, 3, 4, 2, 1, 0, 1, True, (4, 4)),
    "k3s2p0_op1": (3, 2, 3, 2, 0, 1, 1, False, (4, 3)),
    "k5s3p2_op2": (3, 2, 5, 3, 2, 2, 1, True, (3, 4)),
    "k3s1p1": (3, 2, 3, 1, 1, 0, 1, True, (4, 4)),
    "k3s2p1_dil2": (3, 2, 3, 2, 1, 1, 2, False, (4, 3)),
    "k3s2p3": (2, 2, 3, 2, 3, 0, 1, True, (5, 5)),
    "k4s2p1_g2": (4, 2, 4, 2, 1, 0, 1, True, (3, 4), 2),
}
# Conv2d: (in, out, kernel, stride, padding, dilation, bias, (H, W), groups)
CONV2D = {
    "conv_k3s1p1": (6, 3, 3, 1, 1, 1, True, (5, 6), 1),
    "conv_k3s1p2_dil2_g2": (4, 2, 3, 1, 2, 2, False, (5, 5), 2),
    "conv_k3s2p1": (6, 2, 3, 2, 1, 1, True, (6, 5), 1),
    "conv_k2s1p0": (5, 3, 2, 1, 0, 1, True, (4, 5), 1),
}
FAST = ["k4s2p1", "k3s2p0_op1", "k5s3p2_op2", "k3s2p1_dil2", "k4s2p1_g2",
        "conv_k3s1p1", "conv_k3s1p2_dil2_g2", "conv_k3s2p1"]


def make_layer(name, seed=0):
    torch.manual_seed(seed)
    if name in CONV2D:
        cin, cout, k, s, p, dil, bias, hw, g = CONV2D[name]
        layer = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=dil, bias=bias,
                          groups=g).double()
        return layer, (cin,) + hw
    cin, cout, k, s, p, op, dil, bias, hw, *g = LAYERS[name]
    layer = nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op,
                               dilation=dil, bias=bias, groups=g[0] if g else 1).double()
    return layer, (cin,) + hw


def make_outputs(layer, shape, n=3, seed=0):
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(n,) + shape), 0)
    with torch.no_grad():
        pre = layer(torch.tensor(h)).reshape(n, -1).numpy()
    return get_activation("tanh").apply(pre)


@pytest.mark.parametrize("name", sorted(LAYERS) + sorted(CONV2D))
def test_embedding_is_exact(name):
    """S T E equals the layer, T's adjoint is TH, and the d-update solves its equations."""
    layer, shape = make_layer(name)
    op = LayerOperator.from_layer(layer, shape)
    emb = periodic_embedding(op)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn((2,) + shape, generator=gen, dtype=torch.float64)
    wf, wa = emb.weights(torch.device("cpu"), torch.float64)
    ref = op.matvec(d.reshape(2, -1)).reshape((2,) + op.output_shape)
    np.testing.assert_allclose(emb.crop(emb.T(emb.embed(d), wf)), ref, atol=1e-13)

    v = torch.randn((2, emb.cin) + emb.N, generator=gen, dtype=torch.float64)
    u = torch.randn((2, emb.m) + emb.N, generator=gen, dtype=torch.float64)
    lhs, rhs = (emb.T(v, wf) * u).sum(), (v * emb.TH(u, wa)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(abs(lhs))

    rho = 0.05
    res = get_resolvent(op, rho, torch.device("cpu"), torch.float64)
    y = torch.randn((2,) + op.output_shape, generator=gen, dtype=torch.float64)
    c0, t0 = res.targets(y)
    dt = res.resolvent(v, c0, t0)

    def normal(z):                  # (W~ᵀ W~ + rho I) z with W~ = S T on the periodic grid
        return emb.TH(emb.observe(emb.crop(emb.T(z, wf))), wa) + rho * z

    want = emb.TH(emb.observe(y), wa) + rho * v
    np.testing.assert_allclose(normal(dt), want, atol=1e-11 * float(want.abs().max()))


@pytest.mark.parametrize("name", ["k4s2p1", "conv_k3s1p1", "conv_k3s2p1"])
def test_capacitance_gather_matches_columns(name):
    """The gathered C = rho P G Pᵀ equals G applied to each unit boundary vector."""
    layer, shape = make_layer(name)
    emb = periodic_embedding(LayerOperator.from_layer(layer, shape))
    rho, m = 0.3, emb.m
    G = torch.linalg.inv(rho * torch.eye(m, dtype=torch.complex128) + emb.gram())
    idx = unobserved_outputs(emb)
    assert 0 < len(idx) < m * emb.N[0] * emb.N[1]
    e = torch.zeros((len(idx), m * emb.N[0] * emb.N[1]), dtype=torch.float64)
    e[torch.arange(len(idx)), idx] = 1.0
    eh = torch.fft.rfft2(e.reshape((-1, m) + emb.N)).permute(2, 3, 1, 0).reshape(-1, m, len(idx))
    ge = (G @ eh).reshape(emb.N[0], emb.Nw2, m, len(idx)).permute(3, 2, 0, 1)
    cols = torch.fft.irfft2(ge, s=emb.N).reshape(len(idx), -1)[:, idx]
    np.testing.assert_allclose(capacitance(emb, G, rho, rows=7), rho * cols, atol=1e-13)


def _cvxpy_and_admm(name, positive, **kw):
    layer, shape = make_layer(name)
    x = make_outputs(layer, shape)
    anchor = np.full(shape, 0.3)
    common = dict(layer=layer, alpha=1e-2, activation_shape=shape, anchor=anchor,
                  positive=positive)
    ref = FinalLayerInverter(solver="cvxpy", **common).fit(x)
    z_ref = ref.transform(x)
    params = dict(solver="admm", tol=1e-9, progress_tol=None, max_iter=20_000,
                  precision="float64")
    params.update(kw)
    inv = FinalLayerInverter(**common, **params).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        z = inv.transform(x)
    return ref, z_ref, inv, z


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name", FAST)
def test_admm_matches_cvxpy(name, positive):
    ref, z_ref, inv, z = _cvxpy_and_admm(name, positive)
    np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-6)
    assert np.all(inv.duality_gap_ >= 0)
    # the certificate bounds the distance to the optimum
    assert np.all(inv.objective_ - ref.objective_ <= inv.duality_gap_ + 1e-9)
    assert inv.n_iter_.shape == (3,) and np.all(inv.n_iter_ >= 1)
    if positive:
        assert z.min() >= -1e-12


def test_admm_float32_iterations_reach_tol():
    """float32 ADMM/FISTA with the float64 finish, as FinalLayerInverter runs it."""
    ref, z_ref, inv, z = _cvxpy_and_admm("k4s2p1", False, precision="float32")
    np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-6)
    assert np.all(inv.duality_gap_ >= 0)


@pytest.mark.parametrize("positive", [False, True])
def test_admm_alone_converges(positive):
    """The ADMM iterations on their own (no FISTA finish) reach the optimum."""
    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    x = make_outputs(layer, shape)
    y = torch.from_numpy(get_activation("tanh").invert(x, 1e-6)
                         - layer.bias.detach().numpy().repeat(op.n_outputs // 3))
    lower = torch.full((op.n_inputs,), -0.3, dtype=torch.float64) if positive else None
    low_np = None if lower is None else lower.numpy()
    _, p_ref, _, _ = solve_batch(op, y.numpy(), 1e-2, solver="cvxpy", lower=low_np)
    L = op.lipschitz()
    d, primal, gap, n_iter = admm(op, y, 1e-2, L, lower=lower, rho=0.02 * L, tol=0.0,
                                  max_iter=600, dtype=torch.float64)
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-6)
    assert np.all(gap.numpy() >= 0)
    assert np.all(primal.numpy() - p_ref <= gap.numpy() + 1e-9)
    assert torch.equal(n_iter, torch.full((3,), 600))
    if positive:
        assert float((d - lower).min()) >= 0


def test_admm_warm_start_from_solution_is_certified():
    layer, shape = make_layer("k3s2p0_op1")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape))
    D, p, _, _ = solve_batch(op, y.numpy(), 1e-2, solver="cvxpy")
    _, primal, gap, n_iter = admm(op, y, 1e-2, op.lipschitz(), d0=torch.from_numpy(D),
                                  tol=1e-8, max_iter=50, dtype=torch.float64)
    np.testing.assert_allclose(primal.numpy(), p, rtol=1e-9)
    assert int(n_iter.max()) < 50


def test_admm_rejects_unsupported_layers():
    x = np.zeros((2, 8))
    with pytest.raises(ValueError, match="Conv2d and ConvTranspose2d layers only"):
        FinalLayerInverter(layer=nn.Linear(5, 8), solver="admm").fit(x)
    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.zeros((1, op.n_outputs), dtype=torch.float64)
    with pytest.raises(ValueError, match="relax"):
        admm(op, y, 1e-2, 1.0, relax=2.0)


def test_admm_inverter_pickles_without_its_factorisation():
    """The per-layer factorisation is a cache: not pickled, rebuilt identically."""
    import pickle

    layer, shape = make_layer("k4s2p1")
    x = make_outputs(layer, shape)
    inv = FinalLayerInverter(layer=layer, activation="tanh", activation_shape=shape,
                             solver="admm", alpha=1e-2, tol=1e-8, max_iter=3000,
                             device="cpu").fit(x)
    Z = inv.transform(x)
    assert inv.operator_._cache                      # built by the first transform
    inv2 = pickle.loads(pickle.dumps(inv))
    assert not inv2.operator_._cache
    np.testing.assert_allclose(inv2.transform(x), Z, rtol=1e-6, atol=1e-8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_admm_cuda_matches_cpu():
    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    Y = make_outputs(layer, shape)
    kw = dict(solver="admm", tol=1e-9, max_iter=5000, dtype=torch.float64)
    _, p_cpu, g_cpu, _ = solve_batch(op, Y, 1e-2, device="cpu", **kw)
    _, p_gpu, g_gpu, _ = solve_batch(op, Y, 1e-2, device="cuda", **kw)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-7)
    assert np.all(g_gpu >= 0)


@pytest.mark.parametrize("positive", [False, True])
def test_admm_rho_stages_reach_the_optimum(positive):
    """A continuation on rho (the switch keeps x and the dual) still converges."""
    layer, shape = make_layer("k5s3p2_op2")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape))
    lower = torch.full((op.n_inputs,), -0.3, dtype=torch.float64) if positive else None
    low_np = None if lower is None else lower.numpy()
    _, p_ref, _, _ = solve_batch(op, y.numpy(), 1e-2, solver="cvxpy", lower=low_np)
    L = op.lipschitz()
    stages = [(0.005 * L, 7), (0.02 * L, 13), (0.05 * L, None)]
    d, primal, gap, n_iter = admm(op, y, 1e-2, L, lower=lower, rho=stages, tol=0.0,
                                  max_iter=800, dtype=torch.float64)
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-6)
    assert np.all(primal.numpy() - p_ref <= gap.numpy() + 1e-9)
    if positive:
        assert float((d - lower).min()) >= 0


def test_admm_stage_switch_keeps_a_fixed_point():
    """Started at the solution, switching rho (every iteration) stays there."""
    layer, shape = make_layer("k3s2p1_dil2")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape))
    L = op.lipschitz()
    d_ref, p_ref, _, _ = solve_batch(op, y.numpy(), 1e-2, solver="fista", tol=1e-12,
                                     max_iter=50_000, dtype=torch.float64)
    # a long run at one rho gives the matching dual state; then switch often
    stages = [(0.05 * L, 400)] + [(r * L, 1) for r in (0.1, 0.02, 0.3)] + [(0.05 * L, None)]
    _, primal, _, _ = admm(op, y, 1e-2, L, d0=torch.from_numpy(d_ref), rho=stages,
                           tol=0.0, max_iter=404, dtype=torch.float64)
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-7)


@pytest.mark.parametrize("rho, match", [
    ([], "must not be empty"),
    ([(0.0, 3), (1.0, None)], "rho must be positive"),
    (-1.0, "rho must be positive"),
    ([(1.0, 0), (2.0, None)], "at least one iteration"),
])
def test_admm_rejects_bad_rho(rho, match):
    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape))
    with pytest.raises(ValueError, match=match):
        admm(op, y, 1e-2, 1.0, rho=rho)


@pytest.mark.parametrize("ratio, factor", [
    (0.0, 1.0), (3e-4, 1.0), (3.9e-3, 1.0), (4e-3, 10.0), (0.039, 10.0), (0.04, 100.0),
    (0.5, 100.0), (2.0, 100.0),
])
def test_rho_alpha_factor_thresholds(ratio, factor):
    from flipad_sklearn.lasso.admm import rho_alpha_factor

    assert rho_alpha_factor(ratio) == factor


def test_penalty_ratio_is_alpha_over_the_zero_threshold():
    from flipad_sklearn.lasso.admm import penalty_ratio
    from flipad_sklearn.lasso.penalty import L1Penalty

    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape, n=1))
    lam_max = float(op.rmatvec(y).abs().max())
    assert penalty_ratio(op, y, L1Penalty(0.5 * lam_max), torch.float64) == pytest.approx(0.5)
    # at the threshold the lasso answer is d = 0
    d, _, _, _ = admm(op, y, lam_max, op.lipschitz(), tol=1e-10, max_iter=200,
                      dtype=torch.float64)
    assert float(d.abs().max()) < 1e-8
    assert penalty_ratio(op, y[:0], L1Penalty(1.0)) == 0.0
    assert penalty_ratio(op, y, L1Penalty(0.0)) == 0.0


@pytest.mark.parametrize("positive", [False, True])
def test_admm_default_stages_at_a_large_penalty(positive):
    """At alpha near ||Wᵀy||_inf the default stages are scaled up and still converge."""
    from flipad_sklearn.lasso.admm import DEFAULT_RHO_STAGES, penalty_ratio, rho_alpha_factor
    from flipad_sklearn.lasso.penalty import L1Penalty

    layer, shape = make_layer("k4s2p1")
    op = LayerOperator.from_layer(layer, shape)
    y = torch.from_numpy(make_outputs(layer, shape))
    lower = torch.full((op.n_inputs,), -0.3, dtype=torch.float64) if positive else None
    lam_max = float(op.rmatvec(y).abs().amax(dim=1).median())
    alpha = 0.2 * lam_max
    ratio = penalty_ratio(op, y, L1Penalty(alpha, lower))
    assert rho_alpha_factor(ratio) == 100.0
    low_np = None if lower is None else lower.numpy()
    _, p_ref, _, _ = solve_batch(op, y.numpy(), alpha, solver="cvxpy", lower=low_np)
    L = op.lipschitz()
    kw = dict(lower=lower, tol=0.0, max_iter=400, dtype=torch.float64)
    d, primal, gap, _ = admm(op, y, alpha, L, **kw)
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-7)
    assert np.all(primal.numpy() - p_ref <= gap.numpy() + 1e-9)
    # the default is exactly the scaled stages (not the unscaled ones)
    scaled = [(r * L * 100.0, n) for r, n in DEFAULT_RHO_STAGES]
    d_scaled, _, _, _ = admm(op, y, alpha, L, rho=scaled, **kw)
    torch.testing.assert_close(d, d_scaled, rtol=0, atol=0)
