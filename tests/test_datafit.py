"""The weighted data term (datafit="output"): known answers, cvxpy, row drops, errors."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.activations import get_activation
from flipad_sklearn.lasso import fista, solve_batch
from flipad_sklearn.lasso.datafit import Quadratic, WeightedQuadratic, make_datafit
from flipad_sklearn.operators import LayerOperator

CONV = {
    "conv_s1": (lambda: nn.Conv2d(4, 3, 3, padding=1), (4, 5, 5)),
    "conv_s2": (lambda: nn.Conv2d(4, 3, 4, stride=2, padding=1), (4, 6, 6)),
    "convT_s2": (lambda: nn.ConvTranspose2d(4, 3, 4, 2, 1), (4, 3, 3)),
    "convT_groups_op": (lambda: nn.ConvTranspose2d(4, 2, 3, 2, 1, output_padding=1, groups=2),
                        (4, 3, 3)),
}


def _saturated_outputs(layer, shape, n=3, seed=0):
    """tanh outputs of which a good share sits near +-1 (where the weights matter)."""
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(n,) + shape), 0)
    with torch.no_grad():
        pre = layer(torch.tensor(h)).reshape(n, -1).numpy()
    return np.tanh(3.0 * pre)


def _invert(layer, shape, x, solver, **kw):
    params = dict(layer=layer, alpha=1e-2, solver=solver, activation_shape=shape,
                  anchor=np.full(shape, 0.2), datafit="output")
    params.update(kw)
    inv = FinalLayerInverter(**params).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        z = inv.transform(x)
    return inv, z


def test_identity_layer_has_the_weighted_soft_threshold():
    """W = I: per output, 1/2 D^2 (y - d)^2 + alpha |d| + ridge / 2 d^2 is solved by
    soft(D^2 y, alpha) / (D^2 + ridge) (the lasso's soft(y, alpha / D^2) at ridge 0)."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(10, 10, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(10, dtype=torch.float64))
    x = rng.uniform(-0.99, 0.99, size=(5, 10))
    y = np.arctanh(x)
    D = 1 - x ** 2
    alpha = 0.05
    lam = 1e-3                                   # ridge="auto": 1e-3 L, L = 1
    want = np.sign(y) * np.maximum(D ** 2 * np.abs(y) - alpha, 0) / (D ** 2 + lam)
    for solver in ("auto", "fista", "cd", "cvxpy"):
        inv = FinalLayerInverter(layer=layer, alpha=alpha, datafit="output", solver=solver,
                                 tol=1e-13, feature_tol=1e-10, precision="float64",
                                 max_iter=20_000, clip_eps=1e-6).fit(x)
        assert inv.ridge_ == pytest.approx(lam)
        # interior point (cvxpy) is loose where a weight is tiny (a flat objective)
        atol = 1e-5 if solver == "cvxpy" else 1e-7
        np.testing.assert_allclose(inv.transform(x), want, atol=atol, err_msg=solver)
    # the plain data term thresholds every output by alpha
    plain = FinalLayerInverter(layer=layer, alpha=alpha, solver="cd", tol=1e-13).fit(x)
    np.testing.assert_allclose(plain.transform(x),
                               np.sign(y) * np.maximum(np.abs(y) - alpha, 0) / (1 + lam),
                               atol=1e-7)


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name", sorted(CONV))
def test_weighted_lasso_matches_cvxpy(name, positive):
    """FISTA and split ADMM solve the weighted problem; the defaults are near it and certified."""
    torch.manual_seed(0)
    factory, shape = CONV[name]
    layer = factory().double()
    x = _saturated_outputs(layer, shape)
    ref, z_ref = _invert(layer, shape, x, "cvxpy", positive=positive)
    for solver in ("fista", "split_admm"):
        inv, z = _invert(layer, shape, x, solver, positive=positive, tol=1e-11,
                         max_iter=20_000, precision="float64", progress_tol=None)
        np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-8, err_msg=solver)
        np.testing.assert_allclose(z, z_ref, atol=1e-4, err_msg=solver)
    inv, _ = _invert(layer, shape, x, "auto", positive=positive)     # float32, progress stop
    sub = inv.objective_ - ref.objective_
    assert np.all(sub >= -1e-8)                          # cvxpy's own accuracy
    assert np.all(sub <= inv.duality_gap_ + 1e-9)
    assert np.all(sub <= 1e-4 * ref.objective_)
    # the weights change the problem: the plain data term has another optimum
    plain, _ = _invert(layer, shape, x, "cvxpy", positive=positive, datafit="preactivation")
    assert np.all(np.abs(plain.objective_ - ref.objective_) > 1e-3 * ref.objective_)


def test_zero_weight_is_an_unobserved_output():
    """Weight 0 on an output is the same problem with that output's row of W removed."""
    rng = np.random.default_rng(1)
    W = rng.normal(size=(12, 20))
    op = LayerOperator.from_layer(_linear(W), (20,))
    Y = rng.normal(size=(4, 12))
    weights = np.ones_like(Y)
    weights[:, [0, 5, 7]] = 0.0
    keep = [i for i in range(12) if i not in (0, 5, 7)]
    op_kept = LayerOperator.from_layer(_linear(W[keep]), (20,))
    want, p_want, *_ = solve_batch(op_kept, Y[:, keep], 0.1, solver="cvxpy")
    for solver in ("fista", "cd"):
        D, primal, gap, _ = solve_batch(op, Y, 0.1, solver=solver, weights=weights,
                                        tol=1e-12, max_iter=50_000, dtype=torch.float64)
        np.testing.assert_allclose(primal, p_want, rtol=1e-8, err_msg=solver)
        np.testing.assert_allclose(D, want, atol=1e-5, err_msg=solver)


def _linear(W):
    layer = nn.Linear(W.shape[1], W.shape[0], bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W))
    return layer


@pytest.mark.parametrize("solver", ["fista", "split_admm"])
def test_rows_that_stop_early_keep_their_own_weights(solver):
    """Samples leave the batch at different checks: each one's weights must go with it.

    The batch answer equals each sample solved alone, in a batch whose
    samples stop many checks apart (one sample with tiny weights, at the
    anchor almost at once; others far from converged)."""
    torch.manual_seed(2)
    layer = nn.ConvTranspose2d(4, 3, 4, 2, 1).double()
    op = LayerOperator.from_layer(layer, (4, 3, 3))
    x = _saturated_outputs(layer, (4, 3, 3), n=5, seed=3)
    Y = np.arctanh(np.clip(x, -1 + 1e-6, 1 - 1e-6))
    weights = 1 - x ** 2
    weights[1] *= 1e-3                         # stops first
    weights[3] = np.linspace(0.05, 1.0, weights.shape[1])
    kw = dict(solver=solver, tol=1e-9, max_iter=5000, dtype=torch.float64,
              return_reason=True)
    D, primal, gap, n_iter, reason = solve_batch(op, Y, 1e-2, weights=weights, **kw)
    assert len(set(n_iter.tolist())) > 1      # they did stop at different iterations
    for i in range(5):
        Di, pi, gi, ni, ri = solve_batch(op, Y[i:i + 1], 1e-2, weights=weights[i:i + 1], **kw)
        np.testing.assert_allclose(primal[i], pi[0], rtol=1e-8)
        assert gap[i] <= 1e-9 * 0.5 * ((weights[i] * Y[i]) ** 2).sum() + 1e-15


def test_fista_function_takes_weights_and_certifies():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(15, 25))
    op = LayerOperator.from_layer(_linear(W), (25,))
    Y = torch.tensor(rng.normal(size=(3, 15)))
    w = torch.tensor(rng.uniform(0.0, 1.0, size=(3, 15)))
    d, primal, gap, _ = fista(op, Y, 0.05, op.lipschitz(), weights=w, tol=1e-12,
                              max_iter=50_000, dtype=torch.float64)
    _, p_ref, *_ = solve_batch(op, Y.numpy(), 0.05, solver="cvxpy", weights=w.numpy())
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-9)
    assert (gap >= 0).all()


def test_auto_avoids_exact_admm_and_says_why():
    cases = [   # layer, activation shape, auto with weights, auto without
        (nn.ConvTranspose2d(64, 3, 4, 2, 1), (64, 32, 32), "split_admm", "admm"),  # 5.3 / output
        (nn.Conv2d(8, 3, 3, padding=1), (8, 32, 32), "fista", "admm"),             # 2.7 / output
        (nn.Linear(8, 3), None, "fista", "fista"),      # FISTA for the ridge too
        (nn.Conv2d(64, 3, 4, stride=2, padding=1), (64, 32, 32), "fista", "fista"),
    ]
    for layer, shape, weighted, plain in cases:
        n_out = int(np.prod(layer(torch.zeros((1,) + (shape or (8,)))).shape[1:]))
        x = np.zeros((2, n_out))
        inv = FinalLayerInverter(layer=layer, activation_shape=shape, datafit="output").fit(x)
        assert inv.solver_ == weighted, (layer, inv.solver_)
        if weighted != plain:
            assert "weight" in inv.solver_reason_
        assert FinalLayerInverter(layer=layer, activation_shape=shape).fit(x).solver_ == plain


def test_identity_activation_needs_no_weights():
    """sigma = identity has slope 1: datafit="output" is the plain problem, fastest solver kept."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(16, 1, 4, 2, 1).double()
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28))
    a = FinalLayerInverter(layer=layer, activation="identity", datafit="output").fit(x)
    b = FinalLayerInverter(layer=layer, activation="identity").fit(x)
    assert a.solver_ == b.solver_ == "admm"
    np.testing.assert_array_equal(a.transform(x), b.transform(x))


def test_unsupported_combinations_are_refused_with_the_reason():
    layer = nn.ConvTranspose2d(4, 3, 4, 2, 1)
    x = np.zeros((2, 3, 6, 6))
    with pytest.raises(ValueError, match="does not take the weighted data term"):
        FinalLayerInverter(layer=layer, datafit="output", solver="admm").fit(x)
    with pytest.raises(ValueError, match="inverse only"):
        FinalLayerInverter(layer=layer, datafit="output", activation=np.arctanh).fit(x)
    with pytest.raises(ValueError, match="datafit"):
        FinalLayerInverter(layer=layer, datafit="pixels").fit(x)
    op = LayerOperator.from_layer(layer.double(), (4, 3, 3))
    with pytest.raises(ValueError, match="does not take a weighted data term"):
        solve_batch(op, np.zeros((2, 108)), 1e-2, solver="admm", weights=np.ones((2, 108)))
    with pytest.raises(ValueError, match="shape"):
        solve_batch(op, np.zeros((2, 108)), 1e-2, solver="fista", weights=np.ones((2, 10)))
    with pytest.raises(ValueError, match="non-negative"):
        WeightedQuadratic(-np.ones((2, 3)))


def test_slopes_of_the_activations():
    x = np.array([-0.9, 0.0, 0.5, 0.999])
    np.testing.assert_allclose(get_activation("tanh").slope(x), 1 - x ** 2)
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(get_activation("sigmoid").slope(p), p * (1 - p))
    np.testing.assert_array_equal(get_activation("identity").slope(x), np.ones(4))
    # a (forward, inverse) pair is differentiated numerically
    pair = get_activation((np.tanh, np.arctanh))
    np.testing.assert_allclose(pair.slope(x[:3]), 1 - x[:3] ** 2, rtol=1e-6)
    assert isinstance(make_datafit(None), Quadratic)


def test_output_datafit_damps_changes_of_saturated_outputs():
    """A small change of saturated outputs moves the plain features far (atanh amplifies
    it) and the output-weighted ones much less: the reason for datafit="output"."""
    torch.manual_seed(5)
    layer = nn.ConvTranspose2d(8, 3, 4, 2, 1).double()
    x = _saturated_outputs(layer, (8, 4, 4), n=6, seed=6)
    rng = np.random.default_rng(7)
    x_pert = np.clip(x + 0.01 * rng.normal(size=x.shape), -1, 1)
    change = {}
    for datafit in ("preactivation", "output"):
        inv = FinalLayerInverter(layer=layer, alpha=1e-3, datafit=datafit,
                                 activation_shape=(8, 4, 4)).fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            z, zp = inv.transform(x), inv.transform(x_pert)
        change[datafit] = np.median(np.linalg.norm(zp - z, axis=1) / np.linalg.norm(z, axis=1))
    assert change["output"] < 0.5 * change["preactivation"], change


def test_weighted_inverter_round_trips_through_both_formats(tmp_path):
    import joblib

    from flipad_sklearn import persistence

    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(8, 3, 4, 2, 1)
    x = _saturated_outputs(layer.double(), (8, 4, 4), n=4).astype(np.float32)
    inv = FinalLayerInverter(layer=layer.float(), datafit="output", alpha=1e-3,
                             activation_shape=(8, 4, 4)).fit(x)
    z = inv.transform(x)
    persistence.save(inv, tmp_path / "inv.flipad")
    joblib.dump(inv, tmp_path / "inv.joblib")
    for back in (persistence.load(tmp_path / "inv.flipad"), joblib.load(tmp_path / "inv.joblib")):
        assert back.datafit == "output" and back.solver_ == inv.solver_
        np.testing.assert_array_equal(back.transform(x), z)


def test_auto_clip_floors_the_output_weights():
    """clip_eps="auto": 1e-6 for the paper's data term, 3e-2 with datafit="output",
    where the clip also floors tanh's weights at 1 - 0.97^2."""
    layer = nn.Linear(4, 4, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4, dtype=torch.float64))
    x = np.array([[-1.0, -0.5, 0.999, 0.2]])
    plain = FinalLayerInverter(layer=layer).fit(x)
    out = FinalLayerInverter(layer=layer, datafit="output").fit(x)
    given = FinalLayerInverter(layer=layer, datafit="output", clip_eps=1e-3).fit(x)
    assert (plain.clip_eps_, out.clip_eps_, given.clip_eps_) == (1e-6, 3e-2, 1e-3)
    np.testing.assert_allclose(out._weights(x), [[1 - 0.97 ** 2, 0.75, 1 - 0.97 ** 2, 0.96]])
    np.testing.assert_allclose(out._targets(x)[0, [0, 2]], [-np.arctanh(0.97), np.arctanh(0.97)])
    np.testing.assert_allclose(plain._targets(x)[0, 2], np.arctanh(0.999))
