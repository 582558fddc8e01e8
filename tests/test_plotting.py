"""Display objects of flipad_sklearn.plotting (Agg backend, no window)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from flipad_sklearn import FinalLayerInverter, FLIPADDetector
from flipad_sklearn.plotting import (
    ActivationMapDisplay,
    AttributionRocDisplay,
    ScoreHistogramDisplay,
)

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, dtype=int), np.full(40, 2), np.full(30, 3)]
    s = np.r_[rng.normal(1, 1, 60), rng.normal(-2, 1, 40), rng.normal(0.5, 1, 30)]
    return y, s


def test_score_histogram_from_predictions(scores):
    y, s = scores
    disp = ScoreHistogramDisplay.from_predictions(
        y, s, threshold=0.0, source_names={2: "real", 3: "wgan"})
    assert disp.source_names == ["G", "real", "wgan"]
    assert isinstance(disp.figure_, mpl.figure.Figure)
    assert len(disp.patches_) == 3
    assert disp.threshold_line_.get_xdata()[0] == 0.0
    labels = [t.get_text() for t in disp.ax_.get_legend().get_texts()]
    assert labels[0] == "G (n=60)" and "threshold" in labels[-1]
    # re-plot on a given axes
    fig, ax = plt.subplots()
    assert disp.plot(ax=ax, density=False).ax_ is ax
    assert ax.get_ylabel() == "count"


def test_score_histogram_symlog_separates_far_and_near_sources():
    """A far-away source must not squash the two sources near the threshold."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(50, dtype=int), np.full(50, 2), np.full(50, 3)]
    s = np.r_[rng.normal(-0.5, 0.1, 50), rng.normal(-3, 0.1, 50), rng.normal(-2000, 50, 50)]
    disp = ScoreHistogramDisplay.from_predictions(y, s, threshold=0.0, xscale="symlog")
    assert disp.ax_.get_xscale() == "symlog"
    # G (near 0) and the second source (near -3) fall in different bins
    g_bins = {i for i, p in enumerate(disp.patches_[0]) if p.get_height() > 0}
    near_bins = {i for i, p in enumerate(disp.patches_[1]) if p.get_height() > 0}
    assert g_bins.isdisjoint(near_bins)
    linear = ScoreHistogramDisplay.from_predictions(y, s, threshold=0.0)
    g_lin = {i for i, p in enumerate(linear.patches_[0]) if p.get_height() > 0}
    near_lin = {i for i, p in enumerate(linear.patches_[1]) if p.get_height() > 0}
    assert not g_lin.isdisjoint(near_lin)           # the problem symlog solves
    with pytest.raises(ValueError, match="xscale"):
        disp.plot(xscale="log")


def test_roc_from_predictions(scores):
    y, s = scores
    disp = AttributionRocDisplay.from_predictions(y, s, threshold=0.0)
    assert disp.source_names == ["2", "3"]
    assert len(disp.lines_) == 2 and disp.chance_level_ is not None
    # G vs 2 is far easier than G vs 3
    assert disp.roc_auc[0] > 0.95 > disp.roc_auc[1] > 0.5
    from sklearn.metrics import roc_auc_score

    m = np.isin(y, [1, 2])
    assert disp.roc_auc[0] == pytest.approx(roc_auc_score(y[m] == 1, s[m]))
    fpr, tpr = disp.operating_points[0]
    assert tpr == pytest.approx(np.mean(s[y == 1] >= 0))
    assert fpr == pytest.approx(np.mean(s[y == 2] >= 0))
    assert "AUC" in disp.lines_[0].get_label()


def test_roc_input_errors(scores):
    y, s = scores
    with pytest.raises(ValueError, match="no sample of G"):
        AttributionRocDisplay.from_predictions(y, s, pos_label=7)
    with pytest.raises(ValueError, match="only samples of G"):
        AttributionRocDisplay.from_predictions(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="labels"):
        ScoreHistogramDisplay.from_predictions(y[:-1], s)


def test_activation_maps_from_predictions():
    rng = np.random.default_rng(0)
    A = np.maximum(rng.normal(size=(50, 3, 4, 5)), 0)
    y = np.r_[np.ones(30), -np.ones(20)]
    A[y == -1, :, 0, 0] += 5.0
    disp = ActivationMapDisplay.from_predictions(A.reshape(50, -1), y,
                                                 activation_shape=(3, 4, 5))
    assert disp.maps.shape == (2, 4, 5)
    assert disp.source_names == ["G", "not G"]
    np.testing.assert_allclose(disp.maps[0], A[y == 1].mean(axis=(0, 1)))
    assert disp.maps[1, 0, 0] > disp.maps[0, 0, 0] + 4
    assert len(disp.images_) == 2 and disp.ax_.shape == (2,)
    assert disp.colorbar_ is not None
    # shared scale: both images use the same limits
    assert disp.images_[0].get_clim() == disp.images_[1].get_clim()
    # one channel, or a 1-D activation (Linear layer) shown as a strip
    one = ActivationMapDisplay.from_predictions(A, y, channels=2, colorbar=False)
    np.testing.assert_allclose(one.maps[0], A[y == 1, 2].mean(axis=0))
    strip = ActivationMapDisplay.from_predictions(A.reshape(50, -1)[:, :7], None)
    assert strip.maps.shape == (1, 1, 7) and strip.source_names == ["G"]
    with pytest.raises(ValueError, match="one per source"):
        disp.plot(ax=plt.subplots()[1])
    with pytest.raises(ValueError, match="activation_shape"):
        ActivationMapDisplay.from_predictions(A.reshape(50, -1), y, activation_shape=(2, 2))


@pytest.fixture(scope="module")
def fitted_pipeline():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
    rng = np.random.default_rng(0)

    def outputs(n, shift):
        h = np.maximum(rng.normal(size=(n, 4, 3, 3)) + shift, 0).astype(np.float32)
        with torch.no_grad():
            return torch.tanh(layer(torch.from_numpy(h))).numpy()

    X = np.concatenate([outputs(120, 0.0), outputs(60, 1.0)])
    y = np.r_[np.ones(120, dtype=int), -np.ones(60, dtype=int)]
    inv = FinalLayerInverter(layer=layer, alpha=1e-3, tol=1e-3, max_iter=200,
                             activation_shape=(4, 3, 3), device="cpu")
    pipe = Pipeline([("inv", inv), ("det", FLIPADDetector(n_epochs=3, fnr=0.05,
                                                          random_state=0, device="cpu"))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
    return pipe, X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_from_estimator(fitted_pipeline):
    pipe, X, y = fitted_pipeline
    hist = ScoreHistogramDisplay.from_estimator(pipe, X, y)
    assert hist.threshold == 0.0 and hist.estimator_name == "FLIPADDetector"
    raw = ScoreHistogramDisplay.from_estimator(pipe, X, y, response_method="score_samples")
    assert raw.threshold == pytest.approx(pipe[-1].offset_)
    pv = ScoreHistogramDisplay.from_estimator(pipe, X, y, response_method="pvalues")
    assert pv.threshold == 0.05
    assert all(((s > 0) & (s <= 1)).all() for s in pv.scores)
    with pytest.raises(ValueError, match="response_method"):
        ScoreHistogramDisplay.from_estimator(pipe, X, y, response_method="predict")

    roc = AttributionRocDisplay.from_estimator(pipe, X, y)
    assert roc.source_names == ["not G"] and 0 <= roc.roc_auc[0] <= 1
    roc_p = AttributionRocDisplay.from_estimator(pipe, X, y, response_method="pvalues")
    # accepted by predict <=> p-value above fnr: the operating point agrees
    pred = pipe.predict(X)
    assert roc_p.operating_points[0][1] == pytest.approx(np.mean(pred[y == 1] == 1))

    maps = ActivationMapDisplay.from_estimator(pipe, X, y)
    assert maps.maps.shape == (2, 3, 3)
    direct = pipe[0].transform(X).reshape(-1, 4, 3, 3)
    np.testing.assert_allclose(maps.maps[1], direct[y == -1].mean(axis=(0, 1)),
                               rtol=1e-5, atol=1e-6)
    fig, axes = plt.subplots(1, 2)
    maps2 = ActivationMapDisplay.from_estimator(pipe[0], X, y, ax=axes)
    assert maps2.figure_ is fig
    with pytest.raises(ValueError, match="no FinalLayerInverter"):
        ActivationMapDisplay.from_estimator(Pipeline([("det", pipe[-1])]), X, y)


def test_module_imports_without_matplotlib(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    disp = ScoreHistogramDisplay([np.zeros(3)], ["G"])
    with pytest.raises(ImportError, match="pip install matplotlib"):
        disp.plot()
