"""The features' definition (an elastic net) and its certificate: known answers,
weak duality, the bound against independent exact solutions, and a verdict
that does not depend on the solver, the batch or an explicit tolerance."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.lasso import L1Penalty
from flipad_sklearn.lasso._duality import ray_dual_value
from flipad_sklearn.lasso.certificate import feature_error
from flipad_sklearn.lasso.penalty import ElasticNetPenalty


def _outputs(layer, shape, n=4, seed=0):
    rng = np.random.default_rng(seed)
    k = layer.in_features if shape is None else int(np.prod(shape))
    h = np.maximum(rng.normal(size=(n, k)), 0)
    with torch.no_grad():
        inp = torch.tensor(h) if shape is None else torch.tensor(h).reshape((n,) + shape)
        return np.tanh(layer(inp).reshape(n, -1).numpy())


def _elastic_net_cvxpy(inv, x):
    """Each row's exact solution, stated in cvxpy from the dense matrix."""
    import cvxpy as cp

    W, Y = inv.operator_.to_dense(), inv._targets(x)
    d = cp.Variable(W.shape[1])
    y = cp.Parameter(W.shape[0])
    cons = [d >= -inv.anchor_] if inv.positive else []
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - W @ d) + inv.alpha * cp.norm1(d)
                                  + 0.5 * inv.ridge_ * cp.sum_squares(d)), cons)
    out = []
    for row in Y:
        y.value = row
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out.append(d.value + inv.anchor_)
    return np.array(out)


@pytest.mark.parametrize("lower", [False, True])
def test_elastic_net_prox_and_conjugate_have_their_closed_forms(lower):
    rng = np.random.default_rng(0)
    alpha, ridge = 0.3, 0.7
    low = torch.tensor(-np.abs(rng.normal(size=50))) if lower else None
    pen = ElasticNetPenalty(alpha, ridge, low)
    u = torch.tensor(rng.normal(size=(3, 50)) * 2)
    step = 0.4
    # prox: argmin_d g(d) + ||d - u||^2 / (2 step), brute force on a grid per entry
    grid = torch.linspace(-6, 6, 120001, dtype=torch.float64)
    for j in range(5):
        obj = alpha * grid.abs() + 0.5 * ridge * grid ** 2 + (grid - u[0, j]) ** 2 / (2 * step)
        if lower:
            obj = torch.where(grid >= low[j], obj, torch.inf)
        assert abs(float(grid[obj.argmin()] - pen.prox(u, step)[0, j])) < 2e-4
        # conjugate: sup_d s d - g(d)
        s = u[1, j]
        vals = s * grid - alpha * grid.abs() - 0.5 * ridge * grid ** 2
        if lower:
            vals = torch.where(grid >= low[j], vals, -torch.inf)
        one = ElasticNetPenalty(alpha, ridge, None if low is None else low[j:j + 1])
        assert float(one.conjugate(s.reshape(1, 1))) == pytest.approx(float(vals.max()),
                                                                      abs=1e-6)


def test_dual_values_never_exceed_the_primal():
    """Weak duality for random iterates and dual candidates (with and without a bound)."""
    torch.manual_seed(0)
    W = torch.randn(20, 40, dtype=torch.float64)
    y = torch.randn(6, 20, dtype=torch.float64)
    for low in (None, -torch.rand(40, dtype=torch.float64)):
        pen = ElasticNetPenalty(0.2, 0.5, low)
        for _ in range(5):
            d = torch.randn(6, 40, dtype=torch.float64)
            if low is not None:
                d = torch.maximum(d, low)
            r = y - d @ W.T
            primal = 0.5 * (r * r).sum(1) + pen.value(d)
            theta = torch.randn(6, 20, dtype=torch.float64)
            for cand in (r, theta):
                assert torch.all(ray_dual_value(cand, cand @ W, y, pen) <= primal + 1e-9)


LAYERS = {
    "linear (cd)": (lambda: nn.Linear(12, 8).double(), None),
    "strided conv2d (fista)": (lambda: nn.Conv2d(3, 2, 3, stride=2, padding=1).double(),
                               (3, 6, 6)),
    "conv2d (admm)": (lambda: nn.Conv2d(4, 2, 3, padding=1).double(), (4, 5, 5)),
    "convtranspose2d (admm)": (lambda: nn.ConvTranspose2d(4, 2, 4, 2, 1).double(), (4, 4, 4)),
}


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_defaults_are_within_their_bound_of_the_exact_solution(name, positive):
    torch.manual_seed(0)
    factory, shape = LAYERS[name]
    layer = factory()
    x = _outputs(layer, shape)
    anchor = np.full(int(np.prod(shape)) if shape else 12, 0.2)
    inv = FinalLayerInverter(layer, anchor=anchor, alpha=1e-2, positive=positive,
                             activation_shape=shape).fit(x)
    z = inv.transform(x)
    z_star = _elastic_net_cvxpy(inv, x)
    # cvxpy's own accuracy, by the same certificate (itself checked above by weak duality)
    ref = FinalLayerInverter(layer, anchor=anchor, alpha=1e-2, positive=positive,
                             activation_shape=shape, solver="cvxpy").fit(x)
    ref.transform(x)
    np.testing.assert_allclose(ref.transform(x), z_star, atol=1e-6)
    # relative to max(||z*||, feature_scale_), the scale the bound is stated in
    dist = np.linalg.norm(z - z_star, axis=1) / np.maximum(np.linalg.norm(z_star, axis=1),
                                                           inv.feature_scale_)
    np.testing.assert_allclose(inv.feature_scale_, ref.feature_scale_)
    assert set(inv.stop_reason_) == {"feature"}
    assert np.all(inv.feature_error_ <= 5e-4)
    assert np.all(dist <= inv.feature_error_ + ref.feature_error_ + 1e-9), \
        (dist, inv.feature_error_, ref.feature_error_)


def test_features_agree_across_solvers_and_batches():
    """Certified features: every way of computing them agrees within 2 * feature_tol."""
    torch.manual_seed(1)
    layer = nn.ConvTranspose2d(6, 1, 4, 2, 1)
    x = _outputs(layer.double(), (6, 7, 7), n=9, seed=3)
    base = dict(layer=layer, alpha=5e-4, activation_shape=(6, 7, 7),
                anchor=np.full((6, 7, 7), 0.3))
    ref = FinalLayerInverter(**base).fit(x)
    z0 = ref.transform(x)
    for params in (dict(batch_size=1), dict(batch_size=4), dict(solver="fista"),
                   dict(solver="split_admm"), dict(precision="float64")):
        inv = FinalLayerInverter(**base, **params).fit(x)
        z = inv.transform(x)
        rel = np.linalg.norm(z - z0, axis=1) / np.linalg.norm(z0, axis=1)
        assert np.all(rel <= inv.feature_error_ + ref.feature_error_ + 1e-7), params
        assert np.all(rel <= 1e-3), params


def test_explicit_tol_is_honoured_or_warns():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 2, 4, 2, 1).double()
    x = _outputs(layer, (4, 4, 4))
    inv = FinalLayerInverter(layer, activation_shape=(4, 4, 4), tol=1e-10,
                             max_iter=200_000).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        inv.transform(x)
    y = inv._targets(x)
    assert np.all(inv.duality_gap_ <= 1e-10 * 0.5 * (y ** 2).sum(axis=1))
    assert np.all(inv.feature_error_ <= 5e-4)
    # a budget too small for it: a warning that names the tolerance, never a silent stop
    inv.set_params(max_iter=30)
    with pytest.warns(ConvergenceWarning, match="tol=1e-10"):
        inv.transform(x)
    assert not np.isin(inv.stop_reason_, ("gap", "feature", "progress")).any()


def test_plain_lasso_needs_a_gap_tolerance():
    layer = nn.Linear(6, 4)
    x = _outputs(layer.double(), None) * 0 + 0.1
    with pytest.raises(ValueError, match="ridge=0.*feature_tol=None"):
        FinalLayerInverter(layer.double(), ridge=0.0).fit(x)
    with pytest.raises(ValueError, match="feature_tol, tol or both"):
        FinalLayerInverter(layer.double(), feature_tol=None).fit(x)
    inv = FinalLayerInverter(layer.double(), ridge=0.0, feature_tol=None, tol=1e-8).fit(x)
    inv.transform(x)
    assert np.all(np.isinf(inv.feature_error_)) and set(inv.stop_reason_) == {"gap"}


def test_feature_error_bounds_the_distance():
    """sqrt(2 gap / ridge) / (||z|| - e): exact on a problem with a known optimum."""
    z_star = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    gap = torch.tensor([0.5 * 0.02 * 0.25])                  # ridge 0.02: e = 0.5
    rel = feature_error(gap, z_star, 0.02)
    assert float(rel) == pytest.approx(0.5 / 4.5)
    assert torch.isinf(feature_error(gap, z_star, 0.0)).all()


def test_feature_error_has_an_absolute_floor():
    """Relative to max(||z*||, floor): a solution at zero is certified, not left at inf."""
    e = 0.01
    gap = torch.tensor([0.5 * 0.02 * e ** 2] * 2, dtype=torch.float64)  # ridge 0.02
    z = torch.tensor([[e, 0.0], [3.0, 4.0]], dtype=torch.float64)
    assert torch.isinf(feature_error(gap, z, 0.02)[0])                   # no floor: no bound
    rel = feature_error(gap, z, 0.02, floor=torch.tensor([2.0, 2.0]))
    assert float(rel[0]) == pytest.approx(e / 2.0)                       # the floor
    assert float(rel[1]) == pytest.approx(e / (5 - e))                   # ||z|| - e > floor
    # e = 0 is the solution itself, whatever its norm
    assert float(feature_error(torch.zeros(1), torch.zeros(1, 2), 0.02)) == 0.0


@pytest.mark.parametrize("case", ["alpha above the zero threshold", "image of the anchor"])
def test_a_solution_at_zero_stops_certified_and_promptly(case):
    """A sample whose solution is exactly zero (``alpha >= ||W^T y'||_inf``, or the
    image the layer makes from the zero anchor: ``y' = 0``) stops on its feature
    certificate within a few checks; before the floor it ran to ``max_iter``."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 2, 4, 2, 1).double()
    x = _outputs(layer, (4, 4, 4), n=3)
    base = dict(activation_shape=(4, 4, 4), max_iter=2000)
    if case == "image of the anchor":
        with torch.no_grad():
            bias_image = np.tanh(layer(torch.zeros(1, 4, 4, 4, dtype=torch.float64)))
        x = np.vstack([x, bias_image.reshape(1, -1).numpy()])
        inv = FinalLayerInverter(layer, **base).fit(x)
        zero = [3]
    else:
        inv = FinalLayerInverter(layer, **base).fit(x)
        problem = inv.lasso_problem(x)
        W = inv.operator_.to_dense()
        # d* = 0 exactly iff ||W^T y'||_inf <= alpha (the elastic net's zero threshold)
        inv.set_params(alpha=1.5 * np.abs(problem.targets @ W).max())
        zero = [0, 1, 2]
    z = inv.transform(x)
    assert set(inv.stop_reason_[zero]) == {"feature"}
    assert np.all(inv.n_iter_[zero] <= 200), inv.n_iter_
    assert np.all(inv.feature_error_ <= 5e-4)
    # the bound against the closed form z* = 0, on the scale it is stated in
    dist = np.linalg.norm(z[zero], axis=1)
    assert np.all(dist <= inv.feature_error_[zero] * inv.feature_scale_[zero] + 1e-12)


def test_an_inverter_pickled_before_the_ridge_loads_as_the_plain_lasso():
    layer = nn.Linear(6, 4).double()
    x = _outputs(layer, None)
    inv = FinalLayerInverter(layer, ridge=0.0, feature_tol=None, tol=1e-8).fit(x)
    state = inv.__getstate__()
    for key in ("ridge", "feature_tol", "ridge_"):
        state.pop(key)
    old = FinalLayerInverter.__new__(FinalLayerInverter)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.get_params()["ridge"] == 0.0 and old.get_params()["feature_tol"] is None
    np.testing.assert_allclose(old.transform(x), inv.transform(x), atol=1e-10)


def test_l1_penalty_has_no_ridge():
    assert L1Penalty(0.1).ridge == 0.0
    with pytest.raises(ValueError, match="ridge must be positive"):
        ElasticNetPenalty(0.1, 0.0)


@pytest.mark.parametrize("ridge", [0.0, 0.01])
def test_float32_penalty_and_ray_terms_accumulate_in_float64(ridge):
    """The fast checks' float32 iterates (a view into a padded channels-last grid,
    2M entries): the penalty's value must match float64's to far better than the
    gaps the feature stop needs (a float32 sum was 5e-5 to 1e-3 off, so every
    float32 check looked certified and paid a failing float64 finalisation)."""
    gen = torch.Generator().manual_seed(0)
    grid = (torch.randn(1, 128, 130, 130, generator=gen) * 0.05 + 0.3).contiguous(
        memory_format=torch.channels_last)
    d = grid[:, :, 1:-1, 1:-1]
    pen = ElasticNetPenalty(1e-3, ridge) if ridge else L1Penalty(1e-3)
    exact = pen.value(d.double())
    assert float((pen.value(d) - exact).abs() / exact) < 1e-10
    if ridge:
        c = torch.tensor([0.9], dtype=torch.float64)
        fast, slow = pen.ray_terms(d, c), pen.ray_terms(d.double(), c)
        for a, b in zip(fast, slow):
            assert float((a - b).abs() / b.abs()) < 1e-6
