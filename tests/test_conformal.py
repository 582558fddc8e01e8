"""flipad_sklearn.detection.conformal: one split, one threshold, one attribute for every
detector."""

import math
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from flipad_sklearn import (
    ConformalDetector,
    FingerprintCorrelation,
    FLIPADDetector,
    ThresholdWarning,
    calibrate,
    calibration_size,
    fnr_interval,
    required_validation_size,
)
from flipad_sklearn.detection.conformal import (
    conformal_pvalues,
    conformal_threshold,
    union_fnr_interval,
    validation_split,
)
from flipad_sklearn.detection.deepsad import conformal_threshold as deepsad_threshold

pytestmark = pytest.mark.usefixtures("torch_single_thread")

FAST = dict(hidden_sizes=(16,), rep_dim=8, n_epochs=3, batch_size=64, device="cpu",
            random_state=0)


def gaussian(n, d=4, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --------------------------------------------------------------- the rule
@pytest.mark.parametrize("fnr, n", [(0.005, 199), (0.05, 19), (0.1, 9), (0.01, 99),
                                    (0.3, 3), (0.5, 1), (0.9, 1)])
def test_required_validation_size_is_the_smallest_that_guarantees(fnr, n):
    assert required_validation_size(fnr) == n
    d = np.arange(float(n))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThresholdWarning)
        conformal_threshold(d, fnr)  # n samples: no warning
    if n > 1:
        with pytest.warns(ThresholdWarning, match=f"at least {n} are needed"):
            conformal_threshold(d[:-1], fnr)


@pytest.mark.parametrize("fnr", [0, 1, -0.1, True, "0.1"])
def test_required_validation_size_rejects_bad_fnr(fnr):
    with pytest.raises(ValueError, match="fnr must be a number in"):
        required_validation_size(fnr)


@pytest.mark.parametrize("n, fnr", [(199, 0.005), (1000, 0.005), (19, 0.05), (400, 0.05)])
def test_fnr_interval_is_the_law_of_one_thresholds_rejections(n, fnr):
    # closed form: threshold = k-th of n uniform distances, rejected share = 1 - U_(k)
    rng = np.random.default_rng(0)
    k = math.ceil((n + 1) * (1 - fnr) - 1e-12)
    shares = 1 - np.sort(rng.random((4000, n)), axis=1)[:, k - 1]
    assert np.mean(shares) <= fnr + 3 * np.std(shares) / np.sqrt(4000)
    lo, hi = fnr_interval(n, fnr)
    assert lo < fnr < hi
    # 90 % of the draws inside, 5 % on each side (binomial sd of 4000 draws: 0.0034)
    assert np.mean(shares < lo) == pytest.approx(0.05, abs=0.012)
    assert np.mean(shares > hi) == pytest.approx(0.05, abs=0.012)
    lo80, hi80 = fnr_interval(n, fnr, level=0.8)
    assert lo < lo80 < hi80 < hi


@pytest.mark.parametrize("dependence", ["independent", "same distance"])
def test_union_fnr_interval_holds_the_share_any_detector_rejects(dependence):
    # three thresholds on n_j uniform distances each (closed form as above); the union
    # rejects 1 - prod(1 - R_j) of G when the detectors' distances are independent,
    # max R_j when they are one and the same: the interval must hold both at >= 90 %
    rng = np.random.default_rng(1)
    sizes, fnrs = [399, 666, 999], [0.0025, 0.0015, 0.001]
    R = []
    for n, fnr in zip(sizes, fnrs):
        k = math.ceil((n + 1) * (1 - fnr) - 1e-12)
        R.append(1 - np.sort(rng.random((4000, n)), axis=1)[:, k - 1])
    R = np.array(R)
    share = 1 - np.prod(1 - R, axis=0) if dependence == "independent" else R.max(axis=0)
    lo, hi = union_fnr_interval(sizes, fnrs)
    assert lo < sum(fnrs) < hi
    assert np.mean(share < lo) <= 0.05 + 0.012
    assert np.mean(share > hi) <= 0.05 + 0.012
    # one detector: the union's interval is that detector's
    assert union_fnr_interval([199], [0.005]) == pytest.approx(fnr_interval(199, 0.005))
    assert union_fnr_interval([199, 10], [0.005, 0.0]) == pytest.approx(
        fnr_interval(199, 0.005))


def test_union_fnr_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="one value per detector"):
        union_fnr_interval([199, 199], [0.005])
    with pytest.raises(ValueError, match="level"):
        union_fnr_interval([199], [0.005], level=1.0)
    # before: a NaN or negative fnr dropped out as a detector that rejects nothing
    for bad in (np.nan, -0.01, 1.0, "0.005", None, True):
        with pytest.raises(ValueError, match="each fnr must be a number in"):
            union_fnr_interval([199, 199], [0.005, bad])
    with pytest.raises(ValueError, match="positive number of samples"):
        union_fnr_interval([0, 199], [0.005, 0.005])


def test_fnr_interval_narrows_and_calibration_size_keeps_it_below():
    widths = [np.subtract(*fnr_interval(n, 0.005)[::-1]) for n in (199, 1000, 5000)]
    assert widths[0] > widths[1] > widths[2]
    for fnr, max_fnr in [(0.005, 0.01), (0.05, 0.075), (0.01, 0.02)]:
        n = calibration_size(fnr, max_fnr)
        # every size from n on (the saw-tooth of the integer rank included) qualifies,
        # the one before does not
        assert all(fnr_interval(m, fnr)[1] <= max_fnr for m in range(n, 3 * n))
        assert n == required_validation_size(fnr) or fnr_interval(n - 1, fnr)[1] > max_fnr
    with pytest.raises(ValueError, match="max_fnr must be in"):
        calibration_size(0.05, 0.04)
    with pytest.raises(ValueError, match="n must be a positive"):
        fnr_interval(0, 0.05)
    with pytest.raises(ValueError, match="level must be in"):
        fnr_interval(10, 0.05, level=1.0)
    for n in (10.5, "10", True, None):
        with pytest.raises(ValueError, match="n must be a positive"):
            fnr_interval(n, 0.05)
    with pytest.raises(ValueError, match="fnr must be a number"):
        fnr_interval(10, float("nan"))
    with pytest.raises(ValueError, match="level must be in"):
        fnr_interval(10, 0.05, level=float("nan"))
    with pytest.raises(ValueError, match="max_fnr must be in"):
        calibration_size(0.005, float("nan"))


def test_detectors_report_their_thresholds_spread():
    det = ConformalDetector(fnr=0.05, random_state=0).fit(gaussian(300))
    assert det.fnr_interval_ == fnr_interval(det.validation_scores_.size, 0.05)
    det.recalibrate(gaussian(1000, seed=3))
    assert det.fnr_interval_ == fnr_interval(1000, 0.05)
    assert det.fnr_interval_[1] - det.fnr_interval_[0] < 0.03


def test_reexported_where_it_was():
    assert deepsad_threshold is conformal_threshold
    from flipad_sklearn.detection.deepsad import ThresholdWarning as W
    from flipad_sklearn.detection.deepsad.detector import ConformalDecisionMixin
    from flipad_sklearn.detection.conformal import ConformalDecisionMixin as M
    assert W is ThresholdWarning and ConformalDecisionMixin is M


def test_pvalues_rule():
    v = np.array([3.0, 1.0, 2.0, 2.0])  # held-out scores, higher = more like G
    p = conformal_pvalues(v, [0.5, 1.0, 2.0, 10.0])
    np.testing.assert_allclose(p, np.array([1, 2, 4, 5]) / 5.0)


@pytest.mark.parametrize("n_g, size, fraction, fnr, expected", [
    (500, "auto", 0.2, 0.005, 199),   # the fnr's need, more than the 100 of the fraction
    (2000, "auto", 0.2, 0.005, 400),  # the fraction when it gives more
    (300, "auto", 0.2, 0.005, 150),   # too few: half of G's samples
    (300, "auto", 0.6, 0.005, 180),   # a larger fraction is the user's choice
    (500, None, 0.2, 0.005, 100),     # the fraction alone
    (500, 37, 0.2, 0.005, 37),
    (500, 0, 0.2, 0.005, 0),
])
def test_validation_split_sizes(n_g, size, fraction, fnr, expected):
    labels = np.r_[np.ones(n_g, dtype=int), -np.ones(50, dtype=int), np.zeros(10, dtype=int)]
    train, val = validation_split(labels, np.random.RandomState(0), fnr=fnr,
                                  validation_size=size, validation_fraction=fraction)
    assert val.size == expected
    assert np.all(labels[val] == 1)  # held out from G's samples only
    assert np.intersect1d(train, val).size == 0
    assert train.size + val.size == labels.size


def test_validation_split_errors():
    labels = np.ones(5, dtype=int)
    with pytest.raises(ValueError, match="Too few samples of G"):
        validation_split(labels, np.random.RandomState(0), fnr=0.1, validation_size=5)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        validation_split(labels, np.random.RandomState(0), fnr=0.1, validation_size=4,
                         min_train=2)


# ------------------------------------------------- one attribute, one rule
DETECTORS = [
    FLIPADDetector(**FAST, fnr=0.05),
    ConformalDetector("iforest", fnr=0.05, random_state=0),
    FingerprintCorrelation(fnr=0.05, input_shape=(1, 2, 2), random_state=0),
]


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: type(d).__name__)
def test_every_detector_same_attributes_and_rule(det):
    X = np.vstack([gaussian(300), gaussian(100, shift=3, seed=1)])
    y = np.r_[np.ones(300), -np.ones(100)]
    det = clone(det).fit(X, y)
    v = det.validation_scores_
    assert v.size == math.ceil(0.2 * 300) and np.all(np.diff(v) >= 0)
    t = conformal_threshold(-v, det.fnr)
    assert det.threshold_ == pytest.approx(t, rel=1e-8, abs=1e-10)
    assert det.offset_ == -det.threshold_
    Xn = gaussian(200, seed=5)
    p, pred = det.pvalues(Xn), det.predict(Xn)
    n, k = v.size, math.ceil((v.size + 1) * (1 - det.fnr) - 1e-12)
    np.testing.assert_array_equal(pred == -1, p <= (1 + n - k) / (n + 1))
    # the same seed and labels hold out the same samples in every detector
    _, val = validation_split(y.astype(int), np.random.RandomState(0), fnr=0.05)
    np.testing.assert_allclose(np.sort(det.score_samples(X[val])), v, rtol=1e-12)


def test_flipad_deprecated_distances_alias_and_old_pickles():
    det = FLIPADDetector(**FAST, fnr=0.05).fit(gaussian(200))
    with pytest.warns(FutureWarning, match="validation_scores_"):
        d = det.validation_distances_
    np.testing.assert_array_equal(d, np.sort(-det.validation_scores_))
    # a detector pickled with the old attribute loads with the new one
    state = det.__getstate__()
    state["validation_distances_"] = np.sort(-state.pop("validation_scores_"))
    old = FLIPADDetector.__new__(FLIPADDetector)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.validation_scores_, det.validation_scores_)
    np.testing.assert_array_equal(old.pvalues(gaussian(20)), det.pvalues(gaussian(20)))
    assert not hasattr(FLIPADDetector(), "validation_distances_")  # unfitted: no warning


# ------------------------------------------------ the operating point (issue 13)
def test_auto_holds_out_what_the_fnr_needs():
    """500 samples of G at fnr=0.005: 199 held out, no warning (before: 100, warned)."""
    X = gaussian(500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThresholdWarning)
        det = ConformalDetector(fnr=0.005, random_state=0).fit(X)
    assert det.validation_scores_.size == 199
    with pytest.warns(ThresholdWarning, match="at least 199 are needed"):
        old = ConformalDetector(fnr=0.005, validation_size=None, random_state=0).fit(X)
    assert old.validation_scores_.size == 100
    # too few samples of G: half held out and a warning saying how many are needed
    with pytest.warns(ThresholdWarning, match="150 validation samples.*at least 199.*calibrate"):
        det = ConformalDetector(fnr=0.005, random_state=0).fit(X[:300])
    assert det.validation_scores_.size == 150


def test_validation_size_zero_then_calibrate_from_a_sampler():
    rng = np.random.default_rng(1)
    drawn = []

    def sample_G(n):
        drawn.append(n)
        return rng.normal(size=(n, 4))

    det = ConformalDetector(fnr=0.005, validation_size=0, random_state=0).fit(sample_G(300))
    assert det.estimator_.max_samples_ == 256  # all 300 trained (not 300 - held out)
    with pytest.raises(NotFittedError, match="validation_size=0.*calibrate"):
        det.predict(gaussian(3))
    with pytest.raises(NotFittedError, match="validation_size=0"):
        det.pvalues(gaussian(3))
    scores = det.score_samples(gaussian(10))  # scores need no threshold
    assert calibrate(det, sample_G) is det
    assert drawn[-1] == 199 and det.validation_scores_.size == 199
    np.testing.assert_array_equal(det.score_samples(gaussian(10)), scores)  # not refitted
    calibrate(det, sample_G, n_samples=500, fnr=0.01)
    assert det.fnr == 0.01 and det.validation_scores_.size == 500
    assert det.threshold_ == pytest.approx(
        conformal_threshold(-det.validation_scores_, 0.01), rel=1e-8)
    with pytest.raises(ValueError, match="sampler returned 3 samples, 199"):
        calibrate(det, lambda n: gaussian(3), fnr=0.005)
    with pytest.raises(ValueError, match="n_samples must be"):
        calibrate(det, sample_G, n_samples=0)
    with pytest.raises(TypeError, match="conformal detector"):
        calibrate(StandardScaler().fit(gaussian(5)), gaussian(5))


def test_calibrate_a_pipeline_transforms_first():
    X = gaussian(300) * 5 + 10
    pipe = Pipeline([("scale", StandardScaler()),
                     ("det", ConformalDetector(fnr=0.05, validation_size=0, random_state=0))])
    pipe.fit(X)
    X_val = gaussian(100, seed=3) * 5 + 10
    calibrate(pipe, X_val)
    np.testing.assert_allclose(pipe[-1].validation_scores_,
                               np.sort(pipe.score_samples(X_val)))
    assert pipe.predict(X_val[:5]).shape == (5,)


def test_calibrated_threshold_keeps_the_fnr_on_fresh_samples():
    """Statistical: fresh samples of G are rejected at about fnr after calibrate.

    Per fit the rejection rate is Beta(n + 1 - k, k) with n = 400, fnr = 0.05
    (k = 381): mean 0.0499, sd 0.011; over four fits sd 0.0054.  Bounds ~3 sd.
    """
    rates = []
    for seed in range(4):
        det = ConformalDetector(fnr=0.05, validation_size=0, random_state=seed)
        det.fit(gaussian(300, seed=seed))
        calibrate(det, gaussian(400, seed=100 + seed))
        rates.append(np.mean(det.predict(gaussian(20000, seed=200 + seed)) == -1))
    assert 0.05 - 0.017 <= np.mean(rates) <= 0.05 + 0.017


def test_flipad_recalibrate_and_pickle():
    det = FLIPADDetector(**FAST, fnr=0.05, validation_size=0).fit(gaussian(200))
    assert det.validation_scores_.size == 0
    with pytest.raises(NotFittedError, match="calibrate"):
        det.decision_function(gaussian(2))
    det.recalibrate(gaussian(100, seed=4))
    assert det.validation_scores_.size == 100
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.predict(gaussian(30, seed=5)),
                                  det.predict(gaussian(30, seed=5)))


# ------------------------------- too few held out; near-ties (issue 30)
class _FirstFeature(BaseEstimator):
    """A detector whose score is the first feature: the scores are set by hand."""

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def score_samples(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


def _hand_scored(fnr, cal):
    det = ConformalDetector(_FirstFeature(), fnr=fnr, validation_size=0, random_state=0)
    det.fit(gaussian(50, d=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        return det.recalibrate(np.asarray(cal, dtype=np.float64).reshape(-1, 1))


def test_too_few_held_out_rejects_at_the_lowest_and_says_what_holds():
    """150 held out at fnr=0.005 (199 needed): before, the lowest held-out score was
    the threshold with the sample there accepted, so nothing G-like could be
    rejected (the default FLIPADDetector's fit_predict gave only +1, failing
    scikit-learn's check_outliers_fit_predict).  Now that sample is rejected and
    the guarantee that holds, 1/(n+1), is fnr_bound_, named by the warning."""
    X = gaussian(300)
    with pytest.warns(ThresholdWarning) as record:
        det = ConformalDetector(fnr=0.005, random_state=0).fit(X)
    msg = str(record[0].message)
    assert "150 validation samples" in msg and "at least 199" in msg
    assert "fnr_bound_ = 1/(n+1) = 0.006623" in msg and "fit needs 398 samples of G" in msg
    assert det.fnr_bound_ == pytest.approx(1 / 151)
    v = det.validation_scores_
    # the held-out sample of lowest score is rejected, every other one accepted
    with pytest.warns(ThresholdWarning):
        labels = det.fit_predict(X)
    scores = det.score_samples(X)
    assert np.sum(labels == -1) >= 1
    np.testing.assert_array_equal(labels == -1, scores <= v[0])
    np.testing.assert_array_equal(det.labels_, labels == -1)
    # predict rejects exactly where the p-value is at most the bound
    np.testing.assert_array_equal(labels == -1, det.pvalues(X) <= det.fnr_bound_)
    # what 1/(n+1) means: fresh samples of G rejected at about that rate
    assert np.mean(det.predict(gaussian(20000, seed=9)) == -1) < 3 / 151
    # enough held out: the bound is the fnr asked for, and no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThresholdWarning)
        det = ConformalDetector(fnr=0.005, random_state=0).fit(gaussian(398))
    assert det.validation_scores_.size == 199 and det.fnr_bound_ == 0.005


def test_too_few_held_out_with_a_tie_at_the_lowest_accepts_it():
    # a tie at the lowest held-out score: rejecting "at" it would reject both, and
    # with ties the rejection rate is not bounded by 1/(n+1): ties accepted
    det = _hand_scored(0.005, [1.0, 1.0, 2.0, 3.0])
    assert det.fnr_bound_ == pytest.approx(1 / 5)
    np.testing.assert_array_equal(det.predict([[1.0], [0.999]]), [1, -1])


@pytest.mark.parametrize("fnr, cal, where", [
    (0.1, np.arange(1.0, 100.0), 9),     # 99 held out: k = 90, the 10th lowest score
    (0.005, np.arange(1.0, 100.0), 0),   # too few: the lowest score, rejected
    (0.1, -np.arange(1.0, 100.0), 9),    # negative scores: the margin's sign
])
def test_near_ties_get_the_same_pvalue_and_verdict_in_a_batch_and_alone(fnr, cal, where):
    """A held-out sample scored again in another batch lands within float noise of
    its score.  Before, predict counted that noise as a tie (the threshold's
    margin) but pvalues did not: the same sample got p = m/(n+1) <= fnr (reject)
    or (m+1)/(n+1) (accept) depending on the batch, while predict accepted it."""
    det = _hand_scored(fnr, cal)
    t = np.sort(cal)[where]                        # the score the threshold sits at
    noisy = t + np.array([0.0, -1, 1, -4, 4]) * np.finfo(float).eps * abs(t)
    batch = np.r_[noisy, np.sort(cal)].reshape(-1, 1)
    p, pred = det.pvalues(batch)[:5], det.predict(batch)[:5]
    assert np.unique(p).size == 1 and np.unique(pred).size == 1
    for i, x in enumerate(noisy):                   # alone
        assert det.pvalues([[x]])[0] == p[i] and det.predict([[x]])[0] == pred[i]
    np.testing.assert_array_equal(det.predict(batch) == -1,
                                  det.pvalues(batch) <= det.fnr_bound_)
    np.testing.assert_allclose(det.predict_proba(batch)[:, 0], det.pvalues(batch))
    # the attributor's p-values and sets follow the same rule
    from flipad_sklearn.detection.multi import OwnedModelsAttributor
    attr = OwnedModelsAttributor.from_fitted({"G": det})
    res = attr.attribute(batch)
    np.testing.assert_array_equal(res.pvalues[:, 0], det.pvalues(batch))
    np.testing.assert_array_equal(res.sets[:, 0], det.predict(batch) == 1)
    np.testing.assert_array_equal(attr.predict_set(batch, alpha=det.fnr_bound_)[:, 0],
                                  det.predict(batch) == 1)


def test_fnr_bound_of_detectors_saved_before_it():
    det = _hand_scored(0.1, np.arange(1.0, 100.0))
    state = det.__getstate__()
    bound = state.pop("fnr_bound_")
    old = ConformalDetector.__new__(ConformalDetector)
    old.__setstate__(state)
    assert old.fnr_bound_ == bound == pytest.approx(10 / 100)


def test_too_few_held_out_survives_save_and_load(tmp_path):
    from flipad_sklearn import persistence

    X = gaussian(300)
    with pytest.warns(ThresholdWarning, match="fnr_bound_"):
        det = FLIPADDetector(**dict(FAST, fnr=0.005)).fit(X)
    persistence.save(det, tmp_path / "det.flipad")
    loaded = persistence.load(tmp_path / "det.flipad")
    assert loaded.fnr_bound_ == det.fnr_bound_ == pytest.approx(1 / 151)
    Xn = np.vstack([X, gaussian(50, seed=3, shift=2)])
    np.testing.assert_array_equal(loaded.predict(Xn), det.predict(Xn))
    np.testing.assert_array_equal(loaded.pvalues(Xn), det.pvalues(Xn))
    assert np.sum(det.predict(X) == -1) >= 1     # the held-out sample at the threshold
    np.testing.assert_array_equal(det.predict(Xn) == -1, det.pvalues(Xn) <= det.fnr_bound_)
