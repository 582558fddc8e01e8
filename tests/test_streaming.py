"""StreamingFeatures: the FLIPAD features batch by batch, the same numbers as a Pipeline."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.decomposition import PCA
from torch import nn

from flipad_sklearn import (
    ActivationPooling,
    ChannelSelector,
    FinalLayerInverter,
    FLIPADDetector,
    GeneratorStandardScaler,
    StreamingFeatures,
)

pytestmark = [pytest.mark.usefixtures("torch_single_thread"),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]

ACT = (6, 4, 4)


def _layer():
    torch.manual_seed(0)
    # more outputs than activations: a strongly convex lasso that FISTA solves fast
    return nn.ConvTranspose2d(6, 3, 4, stride=2, padding=1)        # (6, 4, 4) -> (3, 8, 8)


def _data(n_g=24, n_o=16, seed=0):
    """Outputs of the layer: G's activations are ReLU'd normals, the others'
    have other channel means (channels 1 and 4 shifted)."""
    rng = np.random.default_rng(seed)
    layer = _layer()
    H_g = np.maximum(rng.normal(size=(n_g,) + ACT), 0)
    H_o = np.maximum(rng.normal(size=(n_o,) + ACT), 0)
    H_o[:, [1, 4]] += 1.5
    with torch.no_grad():
        X = torch.tanh(0.5 * layer(torch.tensor(np.vstack([H_g, H_o]), dtype=torch.float32)))
    y = np.r_[np.ones(n_g, dtype=int), -np.ones(n_o, dtype=int)]
    perm = rng.permutation(n_g + n_o)                 # classes mixed across batches
    return X.numpy()[perm].astype(np.float64), y[perm], H_g.mean(axis=0)


def _inverter(anchor, cls=FinalLayerInverter):
    # converged solves: a sample's activation then does not depend on its batch
    return cls(layer=_layer(), anchor=anchor, alpha=1e-2, tol=1e-10, max_iter=2000,
               precision="float64", device="cpu")


def _steps():
    return [("pool", ActivationPooling(ACT, method="max", kernel_size=2)),
            ("select", ChannelSelector(2, input_shape=(6, 2, 2))),
            ("scaler", GeneratorStandardScaler())]


transform_rows = []


class SpyInverter(FinalLayerInverter):
    """Records how many rows each transform call gets."""

    def transform(self, X):
        transform_rows.append(np.asarray(X).shape[0])
        return super().transform(X)


@pytest.mark.parametrize("steps", [_steps, lambda: _steps()[:2], lambda: _steps()[2:],
                                   lambda: [_steps()[0], _steps()[2]]])
def test_streamed_features_equal_the_pipeline(steps):
    X, y, anchor = _data()
    pipe = Pipeline([("inv", _inverter(anchor))] + steps())
    F_ref = pipe.fit_transform(X, y)
    stream = StreamingFeatures(_inverter(anchor), steps(), batch_size=7)
    F = stream.fit(X, y).transform(X)
    assert F.shape == F_ref.shape
    np.testing.assert_allclose(F, F_ref, rtol=1e-9, atol=1e-9)
    if "select" in stream.get_params():
        np.testing.assert_array_equal(stream.steps_[1][1].channels_, pipe["select"].channels_)
        assert set(pipe["select"].channels_) == {1, 4}        # the shifted channels
    # one inversion pass fits pool -> select -> scaler
    assert stream.n_passes_ == 1
    assert stream.n_iter_.shape == (X.shape[0],) and stream.duality_gap_.shape == (X.shape[0],)
    X_new, _, _ = _data(seed=1)
    np.testing.assert_allclose(stream.transform(X_new), pipe.transform(X_new),
                               rtol=1e-9, atol=1e-9)


def test_at_most_one_batch_is_inverted_at_a_time():
    X, y, anchor = _data()
    transform_rows.clear()
    stream = StreamingFeatures(_inverter(anchor, SpyInverter), _steps(), batch_size=5)
    stream.fit_transform(X, y)
    assert max(transform_rows) == 5
    assert sum(transform_rows) == 2 * X.shape[0]         # fit pass + transform pass
    # a memmap is read batch by batch and gives the same features
    transform_rows.clear()
    assert stream.transform(X[:3]).shape == (3, 2 * 2 * 2)
    assert transform_rows == [3]


def test_memmap_input(tmp_path):
    X, y, anchor = _data()
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    mm[:] = X
    mm.flush()
    stream = StreamingFeatures(_inverter(anchor), _steps(), batch_size=8)
    F_mm = stream.fit(np.load(tmp_path / "x.npy", mmap_mode="r"), y).transform(
        np.load(tmp_path / "x.npy", mmap_mode="r"))
    np.testing.assert_allclose(F_mm, stream.transform(X), rtol=1e-12)


def test_steps_with_partial_fit_and_passes():
    X, y, anchor = _data()
    steps = [("select", ChannelSelector(3, input_shape=ACT)), ("std", StandardScaler())]
    pipe = Pipeline([("inv", _inverter(anchor))] + steps)
    stream = StreamingFeatures(_inverter(anchor), [(n, s) for n, s in steps], batch_size=9)
    F = stream.fit(X, y).transform(X)
    np.testing.assert_allclose(F, pipe.fit_transform(X, y), rtol=1e-7, atol=1e-9)
    assert stream.n_passes_ == 2                     # the StandardScaler needs its own pass
    with pytest.raises(TypeError, match="cannot be fitted batch by batch"):
        StreamingFeatures(_inverter(anchor), [("pca", PCA(2))]).fit(X, y)
    with pytest.raises(TypeError, match="list of \\(name, estimator\\)"):
        StreamingFeatures(_inverter(anchor), [ChannelSelector()]).fit(X, y)
    with pytest.raises(ValueError, match="0 samples"):
        StreamingFeatures(_inverter(anchor)).fit(X[:0])
    # without steps: the inversion alone, streamed
    Z = StreamingFeatures(_inverter(anchor), batch_size=11).fit(X).transform(X)
    np.testing.assert_allclose(Z, _inverter(anchor).fit(X).transform(X), rtol=1e-9, atol=1e-9)


def test_grid_search_and_pickle():
    X, y, anchor = _data(n_g=30, n_o=30)
    pipe = Pipeline([
        ("feat", StreamingFeatures(_inverter(anchor), _steps(), batch_size=16)),
        ("det", FLIPADDetector(hidden_sizes=(16,), rep_dim=4, n_epochs=5, batch_size=16,
                               fnr=0.1, device="cpu", random_state=0)),
    ])
    assert pipe.get_params()["feat__inverter__alpha"] == 1e-2
    assert pipe.get_params()["feat__select__n_channels"] == 2
    search = GridSearchCV(pipe, {"feat__inverter__alpha": [1e-2, 3e-2],
                                 "feat__select__n_channels": [2]},
                          scoring="roc_auc", cv=StratifiedKFold(2, shuffle=True,
                                                                random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    best = search.best_estimator_
    assert best["feat"].inverter_.alpha == search.best_params_["feat__inverter__alpha"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    clone_back = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(clone_back.decision_function(X), best.decision_function(X))
    with pytest.raises(ValueError, match="0 samples|features"):
        best.decision_function(X.reshape(len(X), -1)[:, :5])


def test_scaler_partial_fit_matches_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(50, 4))
    y = np.where(rng.random(50) < 0.6, 1, -1)
    ref = GeneratorStandardScaler().fit(X, y)
    inc = GeneratorStandardScaler()
    for start in range(0, 50, 7):
        inc.partial_fit(X[start:start + 7], y[start:start + 7])
    assert inc.n_samples_seen_ == ref.n_samples_seen_ == int((y == 1).sum())
    np.testing.assert_allclose(inc.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(inc.scale_, ref.scale_, rtol=1e-12)
    with pytest.raises(ValueError, match="features"):
        inc.partial_fit(X[:3, :2])


def test_each_batch_is_validated():
    """Bad input gets a clear error from StreamingFeatures itself, whatever the inverter
    (a FunctionTransformer passes anything on: NaN, strings, a wrong width)."""
    from scipy import sparse
    from sklearn.preprocessing import FunctionTransformer

    X = np.random.default_rng(0).normal(size=(12, 4))
    stream = StreamingFeatures(FunctionTransformer(), batch_size=5).fit(X)
    with pytest.raises(ValueError, match="StreamingFeatures is expecting 4 features"):
        stream.transform(X[:, :3])
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StreamingFeatures(FunctionTransformer(), batch_size=5).fit(bad)
    bad[1, 2], bad[11, 2] = 0.0, np.nan      # in the last batch only
    with pytest.raises(ValueError, match="NaN"):
        stream.transform(bad)
    with pytest.raises(ValueError, match="infinity"):
        stream.transform(np.where(bad == bad, bad, np.inf))
    obj = X.astype(object)
    obj[0, 0] = {"not": "a number"}
    with pytest.raises(TypeError, match="number"):
        stream.transform(obj)
    with pytest.raises(TypeError, match="sparse"):
        stream.transform(sparse.csr_matrix(X))
    with pytest.raises(ValueError, match="Reshape your data"):
        stream.transform(X[0])
    # float32 stays float32; 4-D input reaches the inverter as 4-D
    assert stream.transform(X.astype(np.float32)).dtype == np.float32
    shapes = []
    spy = FunctionTransformer(lambda Z: shapes.append(Z.shape) or Z.reshape(len(Z), -1))
    StreamingFeatures(spy, batch_size=5).fit(X.reshape(12, 1, 2, 2)).transform(
        X.reshape(12, 1, 2, 2))
    assert set(shapes) == {(5, 1, 2, 2), (2, 1, 2, 2)}
