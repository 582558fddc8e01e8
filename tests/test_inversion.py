"""FinalLayerInverter: solutions checked against cvxpy, certificates, shapes, errors."""

import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.activations import get_activation

# (layer factory, activation shape or None for Linear)
LAYERS = {
    "linear": (lambda: nn.Linear(24, 10), None),
    "linear_nobias": (lambda: nn.Linear(24, 10, bias=False), None),
    "convT_s2": (lambda: nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), (4, 4, 4)),
    "convT_op_dil_groups": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1,
                                   groups=2, dilation=1), (4, 3, 3)),
    "conv_s2": (lambda: nn.Conv2d(3, 2, 3, stride=2, padding=1), (3, 6, 6)),
    "conv_dil_nobias": (lambda: nn.Conv2d(2, 2, 3, padding=2, dilation=2, bias=False),
                        (2, 5, 5)),
}


def make_problem(name, activation="tanh", n=3, seed=0, scale=1.0):
    """A small layer and generator-like outputs of ReLU activations."""
    torch.manual_seed(seed)
    factory, shape = LAYERS[name]
    layer = factory().double()
    k = layer.in_features if shape is None else int(np.prod(shape))
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(n, k)), 0) * scale
    with torch.no_grad():
        inp = torch.tensor(h)
        if shape is not None:
            inp = inp.reshape((n,) + shape)
        pre = layer(inp).reshape(n, -1).numpy()
    x = get_activation(activation).apply(pre)
    return layer, shape, h, x


def solve(layer, shape, x, solver, **kw):
    params = dict(layer=layer, alpha=1e-2, solver=solver, activation_shape=shape, tol=1e-9,
                  feature_tol=1e-8,
                  max_iter=20_000, precision="float64", progress_tol=None)
    params.update(kw)
    inv = FinalLayerInverter(**params).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        z = inv.transform(x)
    return inv, z


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_fista_and_cd_match_cvxpy(name, activation):
    layer, shape, _, x = make_problem(name, activation)
    ref, z_ref = solve(layer, shape, x, "cvxpy", activation=activation)
    solvers = ["fista"] + (["cd"] if shape is None else [])
    for solver in solvers:
        inv, z = solve(layer, shape, x, solver, activation=activation)
        np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-6)
        np.testing.assert_allclose(z, z_ref, atol=1e-4)
        # the certificate is a valid bound: never negative, never below the
        # true suboptimality (cvxpy's objective is within 1e-12 of optimal)
        assert np.all(inv.duality_gap_ >= 0)
        assert np.all(inv.objective_ - ref.objective_ <= inv.duality_gap_ + 1e-9)


@pytest.mark.parametrize("name", ["linear", "convT_s2", "conv_s2"])
def test_positive_matches_cvxpy_and_is_nonnegative(name):
    layer, shape, h, x = make_problem(name)
    anchor = np.full(h.shape[1], 0.3)
    if shape is not None:
        anchor = anchor.reshape(shape)
    ref, z_ref = solve(layer, shape, x, "cvxpy", positive=True, anchor=anchor)
    for solver in ["fista", "scipy"] + (["cd"] if shape is None else []):
        inv, z = solve(layer, shape, x, solver, positive=True, anchor=anchor)
        assert z.min() >= -1e-12
        rtol = 1e-5 if solver == "scipy" else 1e-6
        np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=rtol)
        assert np.all(inv.objective_ - ref.objective_ <= inv.duality_gap_ + 1e-9)
    # without the constraint the solution has negative entries: it binds
    _, z_free = solve(layer, shape, x, "cvxpy", anchor=anchor)
    assert z_free.min() < -1e-3


@pytest.mark.parametrize("name", ["linear", "convT_s2"])
def test_scipy_agrees_with_cvxpy(name):
    layer, shape, _, x = make_problem(name)
    ref, z_ref = solve(layer, shape, x, "cvxpy")
    inv, z = solve(layer, shape, x, "scipy")
    np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-5)
    np.testing.assert_allclose(z, z_ref, atol=2e-3)


def test_gap_bounds_suboptimality_along_the_way():
    """Stopped early, FISTA's gap still bounds its distance to the optimum."""
    layer, shape, _, x = make_problem("convT_s2", n=4)
    ref, _ = solve(layer, shape, x, "cvxpy")
    for max_iter in (1, 5, 20, 80):
        inv, _ = solve(layer, shape, x, "fista", max_iter=max_iter, continuation=False)
        sub = inv.objective_ - ref.objective_
        assert np.all(sub >= -1e-9)
        assert np.all(sub <= inv.duality_gap_ + 1e-9)


def test_anchor_shifts_the_penalty_centre():
    """With a huge alpha the solution is the anchor itself."""
    layer, shape, h, x = make_problem("convT_s2")
    anchor = np.random.default_rng(1).random(shape)
    # the gap alone: a solution at 0 has no relative feature error to certify
    inv, z = solve(layer, shape, x, "fista", alpha=1e6, feature_tol=None)
    np.testing.assert_allclose(z, 0.0, atol=1e-12)
    inv, z = solve(layer, shape, x, "fista", alpha=1e6, anchor=anchor)
    np.testing.assert_allclose(z, np.tile(anchor.reshape(-1), (len(x), 1)), atol=1e-12)
    assert inv.activation_shape_ == shape


def test_inverse_transform_is_the_generator_forward():
    layer, shape, h, x = make_problem("convT_s2")
    inv = FinalLayerInverter(layer=layer, activation_shape=shape).fit(x)
    np.testing.assert_allclose(inv.inverse_transform(h), x, atol=1e-10)
    # small alpha, the plain lasso: the recovered activations reproduce the outputs
    inv, z = solve(layer, shape, x, "cvxpy", alpha=1e-6, ridge=0.0, feature_tol=None)
    np.testing.assert_allclose(inv.inverse_transform(z), x, atol=1e-4)


def test_four_d_input_and_shape_inference():
    layer, shape, h, x = make_problem("convT_s2")
    x4 = x.reshape((len(x),) + (3, 8, 8))
    inv4 = FinalLayerInverter(layer=layer, alpha=1e-2, tol=1e-8, precision="float64").fit(x4)
    inv2 = FinalLayerInverter(layer=layer, alpha=1e-2, tol=1e-8, precision="float64").fit(x)
    assert inv4.activation_shape_ == inv2.activation_shape_ == shape
    assert inv4.output_shape_ == (3, 8, 8)
    np.testing.assert_allclose(inv4.transform(x4), inv2.transform(x))
    assert inv4.transform(x4).shape == (len(x), int(np.prod(shape)))


def test_float32_input_gives_float32_output_and_same_solution():
    layer, shape, h, x = make_problem("linear")
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, tol=1e-8, solver="cd").fit(x)
    z64 = inv.transform(x)
    z32 = inv.transform(x.astype(np.float32))
    assert z64.dtype == np.float64 and z32.dtype == np.float32
    np.testing.assert_allclose(z32, z64, atol=1e-4)


def test_batches_and_threads_do_not_change_results():
    layer, shape, h, x = make_problem("convT_s2", n=7)
    base = dict(layer=layer, alpha=1e-2, tol=1e-9, precision="float64", max_iter=5000)
    z1 = FinalLayerInverter(**base, batch_size=7).fit(x).transform(x)
    z2 = FinalLayerInverter(**base, batch_size=2, n_jobs=2).fit(x).transform(x)
    np.testing.assert_allclose(z1, z2, atol=1e-7)


def test_convergence_warning_and_per_sample_diagnostics():
    layer, shape, h, x = make_problem("convT_s2", n=5)
    inv = FinalLayerInverter(layer=layer, alpha=1e-3, max_iter=2, tol=1e-12,
                             continuation=False, progress_tol=None).fit(x)
    with pytest.warns(ConvergenceWarning, match="did not reach feature_tol=.* and the relative "
                                                "duality gap tol=1e-12"):
        inv.transform(x)
    assert inv.n_iter_.shape == inv.duality_gap_.shape == inv.objective_.shape == (5,)
    assert np.all(inv.n_iter_ == 2)
    inv.set_params(max_iter=20_000, tol=1e-6, alpha=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        inv.transform(x)
    y = inv._targets(x)
    assert np.all(inv.duality_gap_ <= 1e-6 * 0.5 * (y ** 2).sum(axis=1))


def test_clipping_saturated_outputs():
    layer, shape, h, x = make_problem("linear")
    x = x.copy()
    x[0, :3] = [1.0, -1.0, 1.0]                  # a saturated tanh
    z = FinalLayerInverter(layer=layer, solver="cd", alpha=1e-2).fit(x).transform(x)
    assert np.all(np.isfinite(z))
    xs = x * 0.5 + 0.5
    xs[0, 0] = 0.0
    z = FinalLayerInverter(layer=layer, activation="sigmoid", solver="cd",
                           alpha=1e-2).fit(xs).transform(xs)
    assert np.all(np.isfinite(z))


def _inv_tanh(x):
    return np.arctanh(np.clip(x, -0.999, 0.999))


def test_custom_activation():
    layer, shape, h, x = make_problem("linear")
    kw = dict(layer=layer, solver="cd", tol=1e-10, alpha=1e-2)
    z_builtin = FinalLayerInverter(**kw).fit(x).transform(x)
    inv = FinalLayerInverter(**kw, activation=_inv_tanh).fit(x)
    np.testing.assert_allclose(inv.transform(x), z_builtin, atol=1e-6)
    with pytest.raises(ValueError, match="inverse only"):
        inv.inverse_transform(z_builtin)
    pair = FinalLayerInverter(layer=layer, solver="cd", activation=(np.tanh, _inv_tanh)).fit(x)
    np.testing.assert_allclose(pair.inverse_transform(h), x, atol=1e-10)


# ------------------------------------------------------------------ errors
def test_errors_on_bad_input():
    layer, shape, h, x = make_problem("convT_s2")
    inv = FinalLayerInverter(layer=layer)
    with pytest.raises(NotFittedError):
        inv.transform(x)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        inv.fit(bad)
    inv.fit(x)
    with pytest.raises(ValueError, match="NaN"):
        inv.transform(bad)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        inv.transform(bad)
    with pytest.raises(ValueError, match="features"):
        inv.transform(x[:, :-3])
    with pytest.raises(ValueError, match="channels"):
        inv.transform(np.zeros((2, 4, 8, 8)))
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        inv.transform(x.reshape(len(x), 3, -1))
    with pytest.raises(ValueError, match="features"):
        inv.inverse_transform(np.zeros((2, 5)))


def test_errors_on_bad_configuration():
    layer, shape, h, x = make_problem("linear")
    with pytest.raises(TypeError, match="Unsupported final layer type 'BatchNorm1d'"):
        FinalLayerInverter(layer=nn.BatchNorm1d(10)).fit(x)
    with pytest.raises(ValueError, match="needs layer"):
        FinalLayerInverter().fit(x)
    with pytest.raises(ValueError, match=r"feature\(s\) per sample"):
        FinalLayerInverter(layer=nn.Linear(24, 11)).fit(x)
    with pytest.raises(ValueError, match="anchor has 5 entries"):
        FinalLayerInverter(layer=layer, anchor=np.zeros(5)).fit(x)
    with pytest.raises(ValueError, match="NaN"):
        FinalLayerInverter(layer=layer, anchor=np.full(24, np.nan)).fit(x)
    with pytest.raises(ValueError, match="solver"):
        FinalLayerInverter(layer=layer, solver="newton").fit(x)
    with pytest.raises(ValueError, match="activation"):
        FinalLayerInverter(layer=layer, activation="relu").fit(x)
    with pytest.raises(ValueError, match="padding_mode"):
        FinalLayerInverter(layer=nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")).fit(
            np.zeros((2, 2, 5, 5)))
    conv_layer, conv_shape, _, xc = make_problem("conv_s2")
    with pytest.raises(ValueError, match="activation_shape"):
        FinalLayerInverter(layer=conv_layer).fit(xc)
    with pytest.raises(ValueError, match="solver='cd' handles fully connected"):
        FinalLayerInverter(layer=conv_layer, solver="cd", activation_shape=conv_shape).fit(xc)
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        FinalLayerInverter(layer=layer, device="cuda").fit(x).transform(x)


# ------------------------------------------------------------ persistence
def test_pickle_and_joblib_round_trip(tmp_path):
    layer, shape, h, x = make_problem("convT_s2")
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, tol=1e-8).fit(x)
    z = inv.transform(x)
    again = pickle.loads(pickle.dumps(inv))
    np.testing.assert_array_equal(again.transform(x), z)
    path = tmp_path / "inv.joblib"
    joblib.dump(inv, path)
    np.save(tmp_path / "x.npy", x)
    code = (
        # float32 sums depend on the thread count: use the parent's
        f"import torch; torch.set_num_threads({torch.get_num_threads()});"
        "import joblib, numpy as np, sys;"
        f"inv = joblib.load({str(path)!r});"
        f"z = inv.transform(np.load({str(tmp_path / 'x.npy')!r}));"
        f"np.save({str(tmp_path / 'z.npy')!r}, z)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), z)


def test_pipeline_and_set_output():
    layer, shape, h, x = make_problem("linear", n=6)
    pipe = Pipeline([("inv", FinalLayerInverter(layer=layer, solver="cd")),
                     ("scale", StandardScaler())])
    out = pipe.fit_transform(x)
    assert out.shape == (6, 24)
    inv = FinalLayerInverter(layer=layer, solver="cd").set_output(transform="pandas")
    pd = pytest.importorskip("pandas")
    df = inv.fit(x).transform(x)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns)[:2] == ["finallayerinverter0", "finallayerinverter1"]


# -------------------------------------------------------------- devices
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_pickles_to_cpu():
    layer, shape, h, x = make_problem("convT_s2", n=5)
    kw = dict(alpha=1e-2, tol=1e-9, precision="float64", max_iter=20_000)
    z_cpu = FinalLayerInverter(layer=layer, device="cpu", **kw).fit(x).transform(x)
    inv = FinalLayerInverter(layer=layer.cuda(), device="cuda", **kw).fit(x)
    z_gpu = inv.transform(x)
    np.testing.assert_allclose(z_gpu, z_cpu, atol=1e-6)
    state = pickle.loads(pickle.dumps(inv))
    assert all(p.device.type == "cpu" for p in state.layer.parameters())
    np.testing.assert_allclose(state.set_params(device="cpu").transform(x), z_cpu, atol=1e-6)


# ----------------------------------------------------------------- dask
def test_dask_backend_on_local_cluster():
    distributed = pytest.importorskip("distributed")
    layer, shape, h, x = make_problem("convT_s2", n=6)
    kw = dict(layer=layer, alpha=1e-2, tol=1e-9, precision="float64", batch_size=2)
    z_ref = FinalLayerInverter(**kw).fit(x).transform(x)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        inv = FinalLayerInverter(**kw, n_jobs=-1).fit(x)
        with joblib.parallel_backend("dask"):
            z = inv.transform(x)
    np.testing.assert_allclose(z, z_ref, atol=1e-10)
