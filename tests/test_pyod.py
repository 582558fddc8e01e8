"""PyOD both ways (issue 30).

* PyOD detectors in the package: ``ConformalDetector(<PyOD detector>)`` and
  ``make_flipad(detector=IForest())`` score with minus PyOD's
  ``decision_function`` (higher = more outlying there) and threshold at the
  conformal fnr rule.
* The package's detectors where PyOD's API is expected: ``decision_scores_``,
  ``labels_``, ``threshold_``, ``predict_proba``, ``predict_confidence`` on
  every conformal detector (``ConformalDecisionMixin``).

PyOD is an optional extra (it pulls numba): the tests run on a minimal
stand-in that follows PyOD's documented ``BaseDetector`` contract, and again
on PyOD's ``IForest`` and ``KNN`` when pyod is installed.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from flipad_sklearn import FLIPADDetector, persistence
from flipad_sklearn.detection import (
    ConformalDetector, FingerprintCorrelation, ReconstructionDistance, calibrate,
)
from flipad_sklearn.pipeline import make_flipad

pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ------------------------------------------------------------ a PyOD stand-in
class PyODLikeKNN:
    """PyOD's ``BaseDetector`` contract, minimal: the mean distance to the k nearest.

    As documented by PyOD: ``fit(X, y=None)`` (``y`` ignored) sets
    ``decision_scores_`` (outlier scores of the training data, higher = more
    abnormal), ``threshold_`` (the ``1 - contamination`` percentile of them)
    and ``labels_`` (0 inlier / 1 outlier); ``decision_function(X)`` is
    higher for outliers; ``predict`` returns 0/1; ``get_params`` /
    ``set_params`` of its own (no scikit-learn base class, no
    ``score_samples``).
    """

    def __init__(self, n_neighbors=5, contamination=0.1):
        self.n_neighbors = n_neighbors
        self.contamination = contamination

    def get_params(self, deep=True):
        return {"n_neighbors": self.n_neighbors, "contamination": self.contamination}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _mean_knn(self, X, skip_self):
        d = np.sqrt(((X[:, None, :] - self.X_train_[None, :, :]) ** 2).sum(-1))
        d.sort(axis=1)
        start = 1 if skip_self else 0
        return d[:, start:start + self.n_neighbors].mean(axis=1)

    def fit(self, X, y=None):
        self.X_train_ = np.asarray(X, dtype=np.float64)
        self.decision_scores_ = self._mean_knn(self.X_train_, skip_self=True)
        self.threshold_ = np.percentile(self.decision_scores_, 100 * (1 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X):
        return self._mean_knn(np.asarray(X, dtype=np.float64), skip_self=False)

    def predict(self, X):
        return (self.decision_function(X) > self.threshold_).astype(int)


def _pyod(name):
    pytest.importorskip("pyod")
    if name == "IForest":
        from pyod.models.iforest import IForest
        return IForest(n_estimators=50, random_state=0)
    from pyod.models.knn import KNN
    return KNN(n_neighbors=5)


PYOD_DETECTORS = {
    "stand-in": lambda: PyODLikeKNN(),
    "pyod.IForest": lambda: _pyod("IForest"),
    "pyod.KNN": lambda: _pyod("KNN"),
}


@pytest.fixture(params=list(PYOD_DETECTORS))
def pyod_detector(request):
    return PYOD_DETECTORS[request.param]()


def _gaussians(seed=0, n=600, shift=3.0, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(200, d)) + shift


# ------------------------------------------------- PyOD detectors in the package
def test_conformal_detector_takes_a_pyod_detector(pyod_detector):
    # before: InvalidParameterError (the estimator had to have score_samples)
    X, fresh, others = _gaussians()
    det = ConformalDetector(pyod_detector, fnr=0.01, random_state=0).fit(X)
    assert det.score_response_ == "-decision_function"
    # PyOD's decision_function is higher for outliers: the score is minus it
    np.testing.assert_allclose(det.score_samples(others),
                               -det.estimator_.decision_function(others))
    assert roc_auc_score(np.r_[np.ones(len(fresh)), -np.ones(len(others))],
                         det.decision_function(np.vstack([fresh, others]))) > 0.95
    # thresholded by the conformal rule, not by PyOD's contamination (0.1)
    assert det.threshold_ != pytest.approx(det.estimator_.threshold_)
    # one held-out draw of 120: the share of G rejected is Beta(1, 120) (mean 0.008),
    # above 0.06 with probability 6e-4
    assert (det.predict(fresh) == -1).mean() <= 0.06
    assert (det.predict(others) == -1).mean() >= 0.8


def test_pyod_detector_fnr_guarantee_on_average():
    # the conformal guarantee is on average over the held-out draw: E[rejected] <= fnr
    rejected = []
    for seed in range(8):
        X, fresh, _ = _gaussians(seed, n=400)
        det = ConformalDetector(PyODLikeKNN(), fnr=0.05, random_state=seed).fit(X)
        rejected.append((det.predict(fresh) == -1).mean())
    assert np.mean(rejected) <= 0.05 + 0.02


def test_make_flipad_takes_a_pyod_detector(pyod_detector):
    rng = np.random.default_rng(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)                  # the same layer on every run
        layer = nn.Linear(6, 4)
    pipe = make_flipad(layer, "identity", np.zeros(6), detector=pyod_detector, pooling=None,
                       fnr=0.01, random_state=0)
    assert isinstance(pipe[-1], ConformalDetector)
    with torch.no_grad():
        own = layer(torch.relu(torch.tensor(rng.normal(size=(1000, 6)), dtype=torch.float32)))
    X = own.double().numpy()
    others = X + rng.normal(scale=0.5, size=X.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(np.vstack([X[:800], others[:200]]), np.r_[np.ones(800), -np.ones(200)])
        fresh, other = pipe.predict(X[800:]), pipe.predict(others[200:400])
        proba = pipe.predict_proba(others[200:210])
    assert pipe[-1].score_response_ == "-decision_function"
    assert (fresh == -1).mean() <= 0.05
    assert (other == -1).mean() >= 0.3       # chance: 0.01 (IForest 0.55, kNN 0.75)
    assert proba.shape == (10, 2)


class _FitOnly:
    def get_params(self, deep=True):
        return {}

    def fit(self, X, y=None):
        return self


class _UnsignedDecision(_FitOnly):
    """A decision_function with no stated direction: neither scikit-learn's nor PyOD's."""

    def decision_function(self, X):
        return np.asarray(X)[:, 0]


def test_estimator_without_a_score_is_refused_clearly():
    X, _, _ = _gaussians()
    with pytest.raises(InvalidParameterError, match="score_samples.*decision_function"):
        ConformalDetector(_FitOnly()).fit(X)
    # make_flipad refuses it when the recipe is built (before: only at fit)
    with pytest.raises(InvalidParameterError, match="decision_function"):
        make_flipad(nn.Linear(6, 4), "identity", np.zeros(6), detector=_FitOnly(),
                    pooling=None)


def test_decision_function_of_unknown_direction_is_refused():
    # not PyOD (no decision_scores_ after fit), not scikit-learn (no score_samples):
    # guessing the sign could invert every verdict
    X, _, _ = _gaussians()
    with pytest.raises(TypeError, match="direction of its decision_function is unknown"):
        ConformalDetector(_UnsignedDecision()).fit(X)


def test_scikit_learn_detectors_keep_score_samples():
    X, _, _ = _gaussians()
    det = ConformalDetector("iforest", random_state=0).fit(X)
    assert det.score_response_ == "score_samples"
    np.testing.assert_array_equal(det.score_samples(X), det.estimator_.score_samples(X))


def test_conformal_detector_pickled_before_pyod_support_still_scores():
    X, _, _ = _gaussians()
    det = ConformalDetector("iforest", random_state=0).fit(X)
    expected = det.score_samples(X)
    del det.score_response_
    np.testing.assert_array_equal(det.score_samples(X), expected)


# ------------------------------------------- the package's detectors, PyOD's API
def _flipad():
    return FLIPADDetector(hidden_sizes=(8,), rep_dim=4, n_epochs=3, batch_size=32,
                          fnr=0.05, device="cpu", random_state=0)


def _fingerprint():
    return FingerprintCorrelation(fnr=0.05, input_shape=(1, 1, 3), random_state=0)


DETECTORS = {
    "FLIPADDetector": _flipad,
    "ConformalDetector": lambda: ConformalDetector(fnr=0.05, random_state=0),
    "ConformalDetector(PyOD)": lambda: ConformalDetector(PyODLikeKNN(), fnr=0.05,
                                                         random_state=0),
    "FingerprintCorrelation": _fingerprint,
}


@pytest.fixture(scope="module", params=list(DETECTORS))
def fitted(request):
    X, fresh, others = _gaussians(1, n=500)
    Xy = np.vstack([X, others[:100]])
    y = np.r_[np.ones(len(X)), -np.ones(100)]
    return DETECTORS[request.param]().fit(Xy, y), Xy, np.vstack([fresh[:200], others[100:]])


def test_decision_scores_and_labels_of_the_training_data(fitted):
    det, X_fit, _ = fitted
    # PyOD: outlier scores of fit's X in its order, higher = more outlying
    assert det.decision_scores_.shape == (X_fit.shape[0],)
    assert det.decision_scores_.dtype == np.float64
    np.testing.assert_allclose(det.decision_scores_, -det.score_samples(X_fit),
                               rtol=1e-9, atol=1e-12)
    # labels_: 0 inlier / 1 outlier, from threshold_ on decision_scores_ (PyOD's rule)
    np.testing.assert_array_equal(det.labels_,
                                  (det.decision_scores_ > det.threshold_).astype(int))
    assert set(np.unique(det.labels_)) <= {0, 1}
    np.testing.assert_array_equal(det.labels_, (det.predict(X_fit) == -1).astype(int))


def test_threshold_is_on_the_scale_of_decision_scores(fitted):
    det, _, X_new = fitted
    # one threshold_ for both APIs: outlier score above it = rejected = predict -1
    outlier_scores = -det.score_samples(X_new)
    np.testing.assert_array_equal(outlier_scores > det.threshold_, det.predict(X_new) == -1)


def test_predict_proba_is_the_conformal_pvalue(fitted):
    det, _, X_new = fitted
    proba = det.predict_proba(X_new)
    assert proba.shape == (X_new.shape[0], 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 0], det.pvalues(X_new))   # P(inlier) = p
    # rejected => p <= fnr, i.e. P(outlier) >= 1 - fnr
    rejected = det.predict(X_new) == -1
    assert rejected.any()
    assert np.all(proba[rejected, 1] >= 1 - det.fnr - 1e-12)
    with pytest.raises(ValueError, match="conformal"):
        det.predict_proba(X_new, method="linear")


def _confidence_reference(det, x_score, rejected):
    """PyOD's ExCeeD on the conformal threshold, with math.comb."""
    v = det.validation_scores_
    n = v.size
    k = min(math.ceil((n + 1) * (1 - det.fnr) - 1e-12), n)
    q = (1 + np.sum(v >= x_score)) / (n + 2)
    p_reject = sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k, n + 1))
    return p_reject if rejected else 1 - p_reject


def test_predict_confidence(fitted):
    det, _, X_new = fitted
    conf = det.predict_confidence(X_new)
    assert conf.shape == (X_new.shape[0],) and conf.dtype == np.float64
    assert np.all((conf >= 0) & (conf <= 1))
    scores, labels = det.score_samples(X_new), det.predict(X_new)
    for i in range(0, X_new.shape[0], 37):
        assert conf[i] == pytest.approx(_confidence_reference(det, scores[i], labels[i] == -1),
                                        abs=1e-9)
    # G's typical samples: the acceptance would stand on any draw of the held-out set
    assert np.median(conf[labels == 1]) > 0.9
    labels2, conf2 = det.predict(X_new, return_confidence=True)
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_array_equal(conf2, conf)
    proba, conf3 = det.predict_proba(X_new, return_confidence=True)
    np.testing.assert_array_equal(conf3, conf)
    np.testing.assert_array_equal(proba, det.predict_proba(X_new))


def test_labels_follow_recalibration():
    X, fresh, _ = _gaussians(2, n=400)
    det = ConformalDetector(fnr=0.01, random_state=0).fit(X)
    before = det.labels_.sum()
    calibrate(det, fresh, fnr=0.2)
    np.testing.assert_array_equal(det.labels_,
                                  (det.decision_scores_ > det.threshold_).astype(int))
    assert det.labels_.sum() > before


def test_pyod_api_before_fit_and_without_threshold():
    det = ConformalDetector(fnr=0.05, random_state=0)
    assert not hasattr(det, "labels_") and not hasattr(det, "decision_scores_")
    X, fresh, _ = _gaussians(3, n=300)
    with pytest.raises(NotFittedError):
        det.predict_proba(X)
    det.set_params(validation_size=0).fit(X)       # no threshold yet
    assert det.decision_scores_.shape == (300,)
    assert not hasattr(det, "labels_")
    with pytest.raises(NotFittedError, match="calibrate"):
        det.predict_confidence(X)
    det.recalibrate(fresh)
    assert det.labels_.shape == (300,)


class _ShrinkAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, x):
        return torch.tanh(self.scale * x)

    def decode(self, z):
        return z


def test_costly_baselines_skip_training_scores_but_keep_the_rest():
    # ReconstructionDistance scores only the held-out samples at fit (each score is an
    # encoding and a decoding): no decision_scores_ / labels_, the rest of the API stays
    X, fresh, others = _gaussians(4, n=300)
    det = ReconstructionDistance(_ShrinkAutoencoder(), batch_size=64, fnr=0.05,
                                 random_state=0).fit(X)
    assert not hasattr(det, "decision_scores_")
    with pytest.raises(AttributeError, match=r"predict\(X\) == -1"):
        det.labels_
    assert det.predict_proba(others).shape == (200, 2)
    assert det.predict_confidence(others).shape == (200,)


def test_pyod_attributes_survive_the_secure_format(tmp_path):
    X, _, _ = _gaussians(5, n=300)
    det = _flipad().fit(X)
    path = tmp_path / "det.flipad"
    persistence.save(det, path)
    loaded = persistence.load(path)
    np.testing.assert_array_equal(loaded.decision_scores_, det.decision_scores_)
    np.testing.assert_array_equal(loaded.labels_, det.labels_)
    np.testing.assert_array_equal(loaded.predict_proba(X[:20]), det.predict_proba(X[:20]))


def test_api_matches_pyods_base_detector():
    # the names and arguments PyOD's BaseDetector documents, on our detectors
    pytest.importorskip("pyod")
    import inspect

    from pyod.models.base import BaseDetector
    from pyod.models.knn import KNN

    X, fresh, others = _gaussians(6, n=300)
    ours = ConformalDetector(fnr=0.05, random_state=0).fit(X)
    theirs = KNN().fit(X)
    for attr in ("decision_scores_", "labels_", "threshold_"):
        assert np.shape(getattr(ours, attr)) == np.shape(getattr(theirs, attr)), attr
    for method in ("predict_proba", "predict_confidence"):
        theirs_params = set(inspect.signature(getattr(BaseDetector, method)).parameters)
        assert theirs_params <= set(inspect.signature(getattr(type(ours), method)).parameters)
    assert "return_confidence" in inspect.signature(type(ours).predict).parameters
    # same direction as PyOD: the outliers get the higher decision_scores_ / P(outlier)
    Xo = np.vstack([X, others[:30]])
    ours_o = ConformalDetector(fnr=0.05, random_state=0).fit(Xo)
    theirs_o = KNN().fit(Xo)
    truth = np.r_[np.zeros(len(X)), np.ones(30)]
    assert roc_auc_score(truth, ours_o.decision_scores_) > 0.95
    assert roc_auc_score(truth, theirs_o.decision_scores_) > 0.95
    assert roc_auc_score(np.r_[np.zeros(200), np.ones(200)],
                         ours.predict_proba(np.vstack([fresh[:200], others]))[:, 1]) > 0.95


def test_predict_proba_and_confidence_do_not_depend_on_the_batch():
    # a held-out sample scored again sits on its own held-out score: float noise of
    # another batch must not move its p-value by 1/(n+1) (check_methods_subset_invariance
    # failed on FingerprintCorrelation before the tie margin)
    X, _, _ = _gaussians(7, n=300)
    det = ConformalDetector(fnr=0.05, random_state=0).fit(X)
    v = det.validation_scores_
    exact = det.predict_proba(X)                       # includes the held-out samples
    real = det.score_samples
    for noise in (1 - 1e-13, 1 + 1e-13):
        det.score_samples = lambda Z, f=noise: real(Z) - 1e-13 * np.abs(real(Z)) * np.sign(f - 1)
        np.testing.assert_array_equal(det.predict_proba(X), exact)
        conf = det.predict_confidence(X)
        del det.score_samples
        np.testing.assert_array_equal(conf, det.predict_confidence(X))
    assert np.isin(real(X), v).sum() == v.size            # the ties were there


def test_conformal_pipeline_has_pyods_api_over_its_own_X():
    # the pipeline holds the detector's held-out samples of G out of every step: the
    # detector's decision_scores_ must still cover all of the pipeline's X, in order
    from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler

    X, fresh, others = _gaussians(8, n=400)
    Xy = np.vstack([X, others[:50]])
    y = np.r_[np.ones(400), -np.ones(50)]
    pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()),
                              ("det", ConformalDetector(fnr=0.05, random_state=0))])
    pipe.fit(Xy, y)
    assert pipe.decision_scores_.shape == (450,)
    np.testing.assert_allclose(pipe.decision_scores_, -pipe.score_samples(Xy), rtol=1e-9)
    np.testing.assert_array_equal(pipe.labels_, (pipe.predict(Xy) == -1).astype(int))
    X_new = np.vstack([fresh[:50], others[50:100]])
    np.testing.assert_array_equal(pipe.predict_confidence(X_new),
                                  pipe[-1].predict_confidence(pipe[:-1].transform(X_new)))
    labels, conf = pipe.predict(X_new, return_confidence=True)
    np.testing.assert_array_equal(conf, pipe.predict_confidence(X_new))


def test_secure_format_refuses_a_pyod_detector_early_and_says_what_to_do(
        pyod_detector, tmp_path, monkeypatch):
    # before: the encoder met it after the inverter's arrays, with a message that
    # listed the allow-list and named joblib only
    X, _, _ = _gaussians(7, n=300)
    pipe = make_flipad(nn.Linear(6, 3), "identity", np.zeros(6), detector=pyod_detector,
                       pooling=None, fnr=0.05, random_state=0)
    name = type(pyod_detector).__name__

    class _NoEncoding:
        def __init__(self):
            raise AssertionError("the refusal must come before anything is encoded")

    monkeypatch.setattr(persistence, "_Encoder", _NoEncoding)
    path = tmp_path / "pipe.flipad"
    for est in (pipe, ConformalDetector(pyod_detector, fnr=0.05, random_state=0).fit(X)):
        with pytest.raises(TypeError) as info:
            persistence.save(est, path)
        msg = str(info.value)
        assert f"{name} (a PyOD detector) cannot be saved in the secure format" in msg
        assert "estimator" in msg.split(":")[0]       # where it is
        assert "joblib.dump" in msg and "format='skops'" in msg and "trusted" in msg
        assert not path.exists()
