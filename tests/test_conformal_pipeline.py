"""ConformalPipeline: the detector's held-out samples of G fit none of the steps."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler, make_dctpad, make_rawpad
from flipad_sklearn.detection import ConformalDetector
from flipad_sklearn.pipeline import make_flipad


def _sparse(rng, n, d=40):
    """Sparse non-negative features, as FLIPAD's activations are."""
    return (rng.random((n, d)) < 0.1) * rng.exponential(size=(n, d))


def _pipe(cls, seed, n_val=50):
    return cls([("scaler", GeneratorStandardScaler()),
                ("det", ConformalDetector("ocsvm", fnr=0.1, validation_size=n_val,
                                          random_state=seed))])


def test_fnr_holds_for_the_whole_pipeline():
    # The scaler standardises with G's spread: fitted on the held-out samples
    # too (a plain Pipeline), those look more like G than fresh samples do, and
    # far more than fnr = 0.1 of G's fresh samples are rejected.
    plain, conformal = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X, fresh = _sparse(rng, 100), _sparse(rng, 3000)
        plain.append(np.mean(_pipe(Pipeline, seed).fit(X).predict(fresh) == -1))
        conformal.append(np.mean(_pipe(ConformalPipeline, seed).fit(X).predict(fresh) == -1))
    assert np.mean(plain) > 0.15                 # measured 0.19: the guarantee is broken
    assert np.mean(conformal) <= 0.12            # measured 0.084 (expected <= 0.1)


def test_held_out_samples_fit_no_step_and_params_are_restored():
    rng = np.random.default_rng(0)
    X = _sparse(rng, 100) + 0.01 * rng.random((100, 40))     # no two rows alike
    y = np.r_[np.ones(90), -np.ones(10)].astype(int)
    pipe = _pipe(ConformalPipeline, 0, n_val=30).fit(X, y)
    scaler, det = pipe["scaler"], pipe["det"]
    # 30 of G's 90 samples held out before the scaler; the 10 others train it too
    assert scaler.n_samples_seen_ == 60 and det.validation_scores_.size == 30
    assert det.get_params()["validation_size"] == 30
    # the held-out rows (those whose scores are the validation scores) are
    # exactly the rows of G the scaler did not see
    scores = det.score_samples(scaler.transform(X[:90]))
    held = np.isin(scores, det.validation_scores_)
    assert held.sum() == 30
    np.testing.assert_allclose(scaler.mean_, X[:90][~held].mean(axis=0))
    # same seed, same fit; slices and clones stay ConformalPipeline
    again = _pipe(ConformalPipeline, 0, n_val=30).fit(X, y)
    np.testing.assert_array_equal(again.decision_function(X), pipe.decision_function(X))
    assert type(pipe[:-1]) is ConformalPipeline and type(clone(pipe)) is ConformalPipeline


def test_validation_size_zero_fits_like_a_plain_pipeline():
    rng = np.random.default_rng(1)
    X = _sparse(rng, 80)
    pipe = _pipe(ConformalPipeline, 0, n_val=0).fit(X)
    assert pipe["scaler"].n_samples_seen_ == 80
    assert pipe["det"].validation_scores_.size == 0     # waits for calibrate


def test_bad_input_and_fit_params_are_refused_clearly():
    rng = np.random.default_rng(2)
    X = _sparse(rng, 20)
    with pytest.raises(ValueError, match="Too few samples of G"):
        _pipe(ConformalPipeline, 0, n_val=20).fit(X)
    with pytest.raises(TypeError, match="takes no fit parameters"):
        _pipe(ConformalPipeline, 0, n_val=5).fit(X, det__sample_weight=np.ones(20))


def test_grid_search_and_recipes():
    rng = np.random.default_rng(3)
    X = np.r_[_sparse(rng, 120), _sparse(rng, 60) + 0.5]
    y = np.r_[np.ones(120), -np.ones(60)].astype(int)
    search = GridSearchCV(_pipe(ConformalPipeline, 0, n_val=20),
                          {"scaler__eps": [0.05, 0.5]}, cv=2, refit=True,
                          scoring=lambda est, X, y: float(np.mean(est.predict(X) == y)))
    search.fit(X, y)
    assert isinstance(search.best_estimator_, ConformalPipeline)
    assert isinstance(make_rawpad(), ConformalPipeline)
    assert isinstance(make_dctpad(), ConformalPipeline)
    import torch

    assert isinstance(make_flipad(torch.nn.Linear(4, 3)), ConformalPipeline)


_FITS_ITS_STEPS = (
    "a pipeline fits the estimators of its steps in place (scikit-learn's "
    "Pipeline does too): the steps parameter holds fitted estimators after fit")


@parametrize_with_checks([
    ConformalPipeline([("scaler", GeneratorStandardScaler()),
                       ("det", ConformalDetector(fnr=0.1, random_state=0))]),
], expected_failed_checks=lambda est: {
    "check_estimators_overwrite_params": _FITS_ITS_STEPS,
    "check_dont_overwrite_parameters": _FITS_ITS_STEPS,
})
@pytest.mark.filterwarnings("ignore::flipad_sklearn.ThresholdWarning")
@pytest.mark.filterwarnings("ignore:.*labels are not in:UserWarning")
@pytest.mark.filterwarnings("ignore:All validation samples:RuntimeWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)
