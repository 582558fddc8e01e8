"""``ConformalPipeline.pvalues``: a p-value per sample with one pass through the steps."""
import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler
from flipad_sklearn.detection import ConformalDetector
from flipad_sklearn.detection.conformal import conformal_pvalues, detector_pvalues


class CountingTransformer(TransformerMixin, BaseEstimator):
    """Identity that counts the samples it transforms (stands for the inversion)."""

    def fit(self, X, y=None):
        self.n_transformed_ = 0
        return self

    def transform(self, X):
        self.n_transformed_ += len(X)
        return np.asarray(X, dtype=np.float64)


def _fitted(seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(size=(150, 5)), rng.normal(3.0, 1.0, size=(50, 5))]
    y = np.r_[np.ones(150), -np.ones(50)].astype(int)
    pipe = ConformalPipeline([
        ("inv", CountingTransformer()),
        ("scaler", GeneratorStandardScaler()),
        ("det", ConformalDetector(fnr=0.05, validation_size=40, random_state=seed)),
    ]).fit(X, y)
    return pipe, rng


def test_pvalues_transform_each_sample_once():
    pipe, rng = _fitted()
    X_new = np.r_[rng.normal(size=(10, 5)), rng.normal(3.0, 1.0, size=(7, 5))]
    inv = pipe.named_steps["inv"]
    inv.n_transformed_ = 0
    p = pipe.pvalues(X_new)
    assert inv.n_transformed_ == 17                       # one pass, not two
    det = pipe[-1]
    expected = conformal_pvalues(det.validation_scores_,
                                 det.score_samples(pipe[:-1].transform(X_new)))
    np.testing.assert_array_equal(p, expected)
    np.testing.assert_array_equal(p, detector_pvalues(pipe, X_new))
    assert p.shape == (17,) and p.dtype == np.float64
    assert np.all((p > 0) & (p <= 1))
    assert p[:10].mean() > p[10:].mean()                  # G's samples look like G


def test_pvalues_with_decision_in_one_pass():
    pipe, rng = _fitted(1)
    X_new = rng.normal(1.5, 1.5, size=(25, 5))
    inv = pipe.named_steps["inv"]
    inv.n_transformed_ = 0
    p, decision = pipe.pvalues(X_new, return_decision=True)
    assert inv.n_transformed_ == 25
    np.testing.assert_array_equal(decision, pipe.decision_function(X_new))
    np.testing.assert_array_equal(p, pipe.pvalues(X_new))
    # the conformal link between the two: an accepted sample (decision >= 0)
    # scores at least the k-th held-out score, so its p-value is >= fnr
    assert (decision >= 0).any() and (decision < 0).any()
    assert np.all(p[decision >= 0] >= pipe[-1].fnr)


def test_pvalues_only_when_the_detector_has_them():
    from sklearn.ensemble import IsolationForest
    rng = np.random.default_rng(0)
    pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()),
                              ("det", IsolationForest(random_state=0))])
    pipe.fit(rng.normal(size=(50, 3)))
    assert not hasattr(pipe, "pvalues")
    with pytest.raises(AttributeError):
        pipe.pvalues(rng.normal(size=(2, 3)))


def test_pvalues_of_a_one_step_pipeline_and_unfitted():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 4))
    pipe = ConformalPipeline([("det", ConformalDetector(fnr=0.1, validation_size=30,
                                                        random_state=0))])
    with pytest.raises(Exception, match="not fitted"):
        pipe.pvalues(X[:3])
    pipe.fit(X)
    np.testing.assert_array_equal(pipe.pvalues(X[:5]), pipe[-1].pvalues(X[:5]))
