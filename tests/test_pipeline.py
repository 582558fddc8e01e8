"""The feature steps and the detector inside scikit-learn's tooling, and FLIPAD end to end."""

import warnings

import numpy as np
import pytest
import torch
from conftest import make_activations
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM
from torch import nn

from flipad_sklearn import (
    ActivationPooling,
    ChannelSelector,
    FinalLayerInverter,
    FLIPADDetector,
    GeneratorStandardScaler,
    ThresholdWarning,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SHAPE = (4, 6, 6)


def features(detector):
    return Pipeline([
        ("pool", ActivationPooling(SHAPE, method="max", kernel_size=2)),
        ("select", ChannelSelector(3, input_shape=(4, 3, 3))),
        ("scale", GeneratorStandardScaler()),
        ("det", detector),
    ])


def detector(**kw):
    params = dict(hidden_sizes=(32,), rep_dim=8, n_epochs=10, batch_size=32, fnr=0.05,
                  device="cpu", random_state=0)
    return FLIPADDetector(**{**params, **kw})


@pytest.fixture(scope="module")
def test_set():
    X = np.vstack([make_activations(200, seed=21), make_activations(200, shift=1.0, seed=22)])
    return X, np.r_[np.ones(200), -np.ones(200)]


def test_pipeline_fit_with_labels(toy_labelled, test_set):
    X, y, _ = toy_labelled
    pipe = features(detector()).fit(X, y)
    assert pipe["select"].scores_ is not None and 0 in pipe["select"].channels_
    X_test, y_test = test_set
    assert roc_auc_score(y_test, pipe.decision_function(X_test)) > 0.95
    assert set(np.unique(pipe.predict(X_test))) == {-1, 1}
    # One-class: Pipeline.fit(X_gen) works end to end and passes channels through.
    pipe1 = features(detector()).fit(X[y == 1])
    assert pipe1["select"].scores_ is None
    assert roc_auc_score(y_test, pipe1.decision_function(X_test)) > 0.7


@pytest.mark.parametrize("scoring", ["roc_auc", "accuracy"])
def test_grid_search(toy_labelled, scoring):
    X, y, _ = toy_labelled
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    gs = GridSearchCV(features(detector(n_epochs=4)),
                      {"det__eta": [0.5, 2.0], "select__n_channels": [1, 4]},
                      scoring=scoring, cv=cv).fit(X, y)
    assert np.all(np.isfinite(gs.cv_results_["mean_test_score"]))
    assert gs.best_score_ > (0.9 if scoring == "roc_auc" else 0.75)
    assert gs.best_estimator_.predict(X[:5]).shape == (5,)


def test_pipeline_memory_caches_feature_steps(toy_labelled, tmp_path):
    X, y, _ = toy_labelled
    pipe = features(detector(n_epochs=2))
    pipe.set_params(memory=str(tmp_path))
    a = clone(pipe).fit(X, y).decision_function(X)
    cached = list(tmp_path.rglob("output.pkl"))
    assert len(cached) == 3  # one per transformer
    mtimes = [p.stat().st_mtime_ns for p in cached]
    b = clone(pipe).fit(X, y).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # reused, not refitted


@pytest.mark.parametrize("classic", [
    IsolationForest(n_estimators=50, random_state=0),
    OneClassSVM(gamma="scale", nu=0.05),
    LocalOutlierFactor(novelty=True, n_neighbors=20),
])
def test_classic_detectors_on_same_features(toy_labelled, test_set, classic):
    X, y, _ = toy_labelled
    # Classic detectors are unsupervised: fit them on G's samples only.
    pipe = features(classic).fit(X[y == 1])
    X_test, y_test = test_set
    assert roc_auc_score(y_test, pipe.decision_function(X_test)) > 0.9
    assert set(np.unique(pipe.predict(X_test))) <= {-1, 1}


# ---------------------------------------------------------------- FLIPAD end to end
def _random_generator(seed):
    """DCGAN-like toy generator: 8x1x1 latent -> 16x4x4 ReLU -> ConvTranspose2d -> tanh 3x8x8."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.ReLU(),
                             nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh()).eval()


def _sample(G, n, seed):
    """Outputs (n, 192) and penultimate activations (n, 16, 4, 4) of G."""
    z = torch.randn(n, 8, 1, 1, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        h = G[:2](z)
        return G[2:](h).reshape(n, -1).numpy().astype(np.float64), h.numpy()


def test_flipad_separates_same_architecture_generators():
    """Final-layer inversion + Deep SAD tells G from a copy with other weights.

    One-class training on G's outputs only; the test set holds fresh samples
    of G and of the other generator.  A 50% validation split leaves 200
    held-out samples, enough for the fnr = 0.005 guarantee.
    """
    G, other = _random_generator(1), _random_generator(2)
    X_g, _ = _sample(G, 800, seed=0)
    X_other, _ = _sample(other, 400, seed=1)
    _, H = _sample(G, 1000, seed=2)
    anchor = H.mean(axis=0)  # mean penultimate activation of G

    pipe = Pipeline([
        ("inv", FinalLayerInverter(layer=G[2], activation="tanh", alpha=5e-4, anchor=anchor,
                                   max_iter=100, tol=1e-3, device="cpu")),
        ("scale", GeneratorStandardScaler()),
        ("det", FLIPADDetector(hidden_sizes=(64,), rep_dim=16, n_epochs=20, batch_size=64,
                               fnr=0.005, validation_fraction=0.5, device="cpu",
                               random_state=0)),
    ])
    with warnings.catch_warnings():
        # A few hundred lasso iterations suffice for the features; the solver
        # warns about the exact tolerance (mostly on the other generator).
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", ThresholdWarning)
        pipe.fit(X_g[:400])
        X_test = np.vstack([X_g[400:], X_other])
        y_test = np.r_[np.ones(400), -np.ones(400)]
        scores, pred = pipe.decision_function(X_test), pipe.predict(X_test)
    assert roc_auc_score(y_test, scores) >= 0.99
    assert accuracy_score(y_test, pred) >= 0.95
    assert np.mean(pred[y_test == 1] == -1) <= 0.02  # G's own samples kept
