"""The three ways to extend the engine, each walked with a real small example.

* a solver: a plain ISTA, one class and one ``register_solver`` call;
* a layer type: ``torch.nn.Conv1d``, one operator, one adapter and one
  ``register_layer`` call;
* a detector: a k-nearest-neighbour distance behind the conformal rule, one
  class; ``make_flipad(detector=...)`` takes it unchanged.

None of them edits a file of the package (docs/user_guide/extending.rst
shows them).  Each is checked against an independent reference: cvxpy for
the solver and the layer, scikit-learn's estimator checks and the fnr
guarantee for the detector.
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from flipad_sklearn import FinalLayerInverter, persistence
from flipad_sklearn._validation import check_labels
from flipad_sklearn.detection import ConformalDecisionMixin
from flipad_sklearn.lasso import (
    BatchLasso, StopRule, TorchSolver, make_solver, register_solver, solve, solver_names,
)
from flipad_sklearn.lasso import solvers as solver_registry
from flipad_sklearn.lasso.driver import check_due, checkpoint
from flipad_sklearn.operators import LayerAdapter, LayerOperator, register_layer
from flipad_sklearn.operators import base as operator_registry
from flipad_sklearn.pipeline import make_flipad


# --------------------------------------------------------------------- a solver
class ISTA(TorchSolver):
    """Proximal gradient without momentum: the smallest solver that runs on the certificate."""

    name = "ista"

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        op, pen = problem.op, problem.penalty
        y = problem.y[cert.idx].to(dtype)
        d = (torch.zeros((y.shape[0], op.n_inputs), dtype=dtype, device=y.device)
             if d0 is None else d0.to(dtype).clone())
        step = 1.0 / problem.lipschitz
        n_iter = 0
        while True:
            if check_due(n_iter, max_iter, check_every=10):
                stop, keep = checkpoint(cert, n_iter, max_iter, d, callback=callback)
                if stop:
                    break
                if keep is not None:                  # rows done: compact the state
                    d, y = d[keep], y[keep]
            grad = op.rmatvec(op.matvec(d) - y)
            d = pen.prox(d - step * grad, step)
            n_iter += 1


@pytest.fixture
def ista_registered(monkeypatch):
    monkeypatch.setattr(solver_registry, "_REGISTRY", dict(solver_registry._REGISTRY))
    register_solver("ista", lambda **settings: ISTA())
    yield


def _small_layer_problem(seed=0, n=4):
    torch.manual_seed(seed)
    layer = nn.ConvTranspose2d(4, 1, 4, 2, 1)
    h = torch.relu(torch.randn(n, 4, 3, 3))
    with torch.no_grad():
        x = torch.tanh(layer(h)).reshape(n, -1).double().numpy()
    return layer, x


def test_a_registered_solver_runs_by_name_and_agrees_with_the_default(ista_registered):
    assert "ista" in solver_names()
    layer, x = _small_layer_problem()
    kw = dict(layer=layer, alpha=1e-2, activation_shape=(4, 3, 3), max_iter=20000)
    ref = FinalLayerInverter(**kw).fit(x)
    own = FinalLayerInverter(solver="ista", **kw).fit(x)
    assert own.solver_ == "ista" and own.solver_reason_ == "given"
    z_ref, z_own = ref.transform(x), own.transform(x)
    assert set(own.stop_reason_) == {"feature"}
    # two solves that each certify feature_tol agree within 2 * feature_tol
    rel = np.linalg.norm(z_own - z_ref, axis=1) / np.linalg.norm(z_ref, axis=1)
    assert rel.max() <= 2 * ref.feature_tol
    # and the same object through the door, on the inverter's public problem
    res = solve(own.lasso_problem(x), ISTA(), StopRule(feature_tol=5e-4, max_iter=20000))
    np.testing.assert_allclose(res.d + own.anchor_, z_own, rtol=0, atol=1e-6)


def test_a_solver_object_is_taken_as_given():
    layer, x = _small_layer_problem()
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, activation_shape=(4, 3, 3),
                             solver=ISTA(), max_iter=20000).fit(x)
    assert inv.solver_ == "ista"
    inv.transform(x)
    assert set(inv.stop_reason_) == {"feature"}


def test_the_registry_refuses_what_it_cannot_run(ista_registered):
    with pytest.raises(ValueError, match="registered already"):
        register_solver("ista", lambda **s: ISTA())
    with pytest.raises(ValueError, match="other than 'auto'"):
        register_solver("auto", lambda **s: ISTA())
    with pytest.raises(ValueError, match="Unknown solver 'nope'"):
        make_solver("nope")
    layer, x = _small_layer_problem()
    with pytest.raises(ValueError, match="must be one of"):
        FinalLayerInverter(layer=layer, solver="nope", activation_shape=(4, 3, 3)).fit(x)


def test_stop_rule_is_frozen_and_needs_a_criterion():
    stop = StopRule(feature_tol=5e-4)
    with pytest.raises(AttributeError):
        stop.tol = 1e-6
    with pytest.raises(ValueError, match="set tol, feature_tol or both"):
        StopRule()


# ------------------------------------------------------------------ a layer type
class Conv1dOperator(LayerOperator):
    """``nn.Conv1d`` (stride 1, zero padding) on flat ``(C, L)`` activations."""

    layer_name = "Conv1d"

    def _conv(self, z, w):
        kw = self.conv_kwargs
        return F.conv1d(z, w, None, 1, kw["padding"], kw["dilation"], kw["groups"])

    def _compute_output_shape(self):
        with torch.no_grad():
            probe = torch.zeros((1,) + self.input_shape, dtype=torch.float64)
            return tuple(self._conv(probe, self.weight).shape[1:])

    def matvec(self, z):
        w = self.weight_as(z.device, z.dtype)
        return self._conv(z.reshape((-1,) + self.input_shape), w).reshape(z.shape[0], -1)

    def rmatvec(self, r):
        kw, w = self.conv_kwargs, self.weight_as(r.device, r.dtype)
        out = F.conv_transpose1d(r.reshape((-1,) + self.output_shape), w, None, 1,
                                 kw["padding"], 0, kw["groups"], kw["dilation"])
        return out.reshape(r.shape[0], -1)


class Conv1dAdapter(LayerAdapter):
    layer_type = nn.Conv1d
    name = "Conv1d"
    args = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
            "groups", "padding_mode")

    def check(self, layer):
        if layer.stride != (1,) or layer.padding_mode != "zeros" or isinstance(
                layer.padding, str):
            raise ValueError("this Conv1d adapter handles stride 1 and numeric zero padding")
        return layer

    def operator(self, layer, input_shape):
        kw = dict(padding=layer.padding[0], dilation=layer.dilation[0], groups=layer.groups)
        return Conv1dOperator(layer.weight, input_shape, kw)

    def infer_input_shape(self, layer, output_shape):
        c_out, length = output_shape
        return (layer.in_channels,
                length - 2 * layer.padding[0] + layer.dilation[0] * (layer.kernel_size[0] - 1))

    def output_shape_guess(self, layer, n_features):
        return (layer.out_channels, n_features // layer.out_channels)


@pytest.fixture
def conv1d_registered(monkeypatch):
    monkeypatch.setattr(operator_registry, "_ADAPTERS", list(operator_registry._ADAPTERS))
    register_layer(Conv1dAdapter())
    yield


def test_unregistered_layer_is_refused_by_name():
    with pytest.raises(TypeError, match="Unsupported final layer type 'Conv1d'"):
        FinalLayerInverter(layer=nn.Conv1d(3, 2, 3)).fit(np.zeros((2, 12)))


def test_a_registered_layer_type_inverts_to_the_exact_solution(conv1d_registered, tmp_path):
    cvxpy = pytest.importorskip("cvxpy")
    torch.manual_seed(0)
    layer = nn.Conv1d(3, 2, 3, padding=1).double()
    h = torch.relu(torch.randn(3, 3, 8, dtype=torch.float64))
    with torch.no_grad():
        x = torch.tanh(layer(h)).reshape(3, -1).numpy()
    inv = FinalLayerInverter(layer=layer, alpha=1e-3, precision="float64",
                             max_iter=50000).fit(x)
    assert inv.activation_shape_ == (3, 8) and inv.output_shape_ == (2, 8)
    assert inv.solver_ == "fista"                   # no capability: the generic solver
    z = inv.transform(x)
    # reference: cvxpy on the dense matrix of the same elastic net
    problem = inv.lasso_problem(x)
    W = inv.operator_.to_dense()
    ref = []
    for y in problem.targets:
        d = cvxpy.Variable(W.shape[1])
        cvxpy.Problem(cvxpy.Minimize(0.5 * cvxpy.sum_squares(y - W @ d)
                                     + problem.alpha * cvxpy.norm1(d)
                                     + 0.5 * problem.ridge * cvxpy.sum_squares(d))).solve()
        ref.append(d.value + inv.anchor_)
    ref = np.array(ref)
    rel = np.linalg.norm(z - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() <= 2 * inv.feature_tol + 1e-4     # + cvxpy's own tolerance
    # the adapter also describes the layer for the secure file format
    path = tmp_path / "conv1d.flipad"
    persistence.save(inv, path)
    again = persistence.load(path)
    np.testing.assert_allclose(again.transform(x), z, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------- a detector
class KNNDistanceDetector(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """Minus the mean distance to the ``n_neighbors`` nearest training samples of G."""

    _parameter_constraints = {}

    def __init__(self, n_neighbors=5, *, fnr=0.005, validation_size="auto",
                 validation_fraction=0.2, random_state=None):
        self.n_neighbors = n_neighbors
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        train, val = self._validation_split(labels, check_random_state(self.random_state))
        train = train[labels[train] != -1]            # G's samples only
        k = min(self.n_neighbors, len(train))
        self.nn_ = NearestNeighbors(n_neighbors=k).fit(X[train])
        self._fit_threshold(X[val], self.score_samples)
        return self

    def score_samples(self, X):
        check_is_fitted(self, "nn_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return -self.nn_.kneighbors(X)[0].mean(axis=1)


@parametrize_with_checks([KNNDistanceDetector(fnr=0.05)])
def test_a_new_detector_passes_scikit_learns_checks(estimator, check):
    check(estimator)


def test_make_flipad_takes_a_conformal_detector_unchanged():
    rng = np.random.default_rng(0)
    layer = nn.Linear(6, 4)
    det = KNNDistanceDetector(fnr=0.01, random_state=0)
    pipe = make_flipad(layer, "identity", np.zeros(6), detector=det, pooling=None)
    assert pipe[-1] is det                    # no wrapper that drops the others
    with torch.no_grad():
        own = layer(torch.relu(torch.tensor(rng.normal(size=(1000, 6)), dtype=torch.float32)))
    X = own.double().numpy()
    others = X + rng.normal(scale=0.5, size=X.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(np.vstack([X[:800], others[:200]]), np.r_[np.ones(800), -np.ones(200)])
        fresh = pipe.predict(X[800:])
    # the fnr guarantee holds for the new detector on fresh samples of G
    assert (fresh == -1).mean() <= 0.05


def test_bad_inputs_to_the_new_entry_points_fail_clearly():
    layer, x = _small_layer_problem()
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, activation_shape=(4, 3, 3))
    with pytest.raises(NotFittedError):
        inv.lasso_problem(x)
    inv.fit(x)
    with pytest.raises(ValueError, match="features"):
        inv.lasso_problem(x[:, :-1])                      # wrong shape
    with pytest.raises(ValueError, match="NaN|infinity"):
        inv.lasso_problem(np.full_like(x, np.nan))
    op, y = inv.operator_, inv.lasso_problem(x).targets
    with pytest.raises(TypeError, match="must be an Operator"):
        BatchLasso(np.eye(3), y, 1e-2)
    with pytest.raises(ValueError, match="targets must have shape"):
        BatchLasso(op, y[:, :-1], 1e-2)
    with pytest.raises(ValueError, match="NaN or infinity"):
        BatchLasso(op, np.where(y > 0, np.nan, y), 1e-2)
    with pytest.raises(ValueError, match="finite and >= 0"):
        BatchLasso(op, y, -1.0)
    with pytest.raises(ValueError, match="weights have shape"):
        BatchLasso(op, y, 1e-2, weights=np.ones((1, 2)))
    with pytest.raises(TypeError, match="factory must be callable"):
        register_solver("broken", ISTA())
    with pytest.raises(TypeError, match="needs a LayerAdapter"):
        register_layer(object())
