"""Split-conformal thresholds and p-values, shared by every detector of the package.

One rule for all of them (:class:`~flipad_sklearn.FLIPADDetector` and the
baselines of :mod:`flipad_sklearn.detection.baselines`):

* **The split.**  Part of G's samples (``y == 1``; all unlabelled samples when
  there is no ``y == 1``) is held out of training: ``validation_size`` of them
  (``"auto"``: as many as the tolerated false-negative rate needs, see
  :func:`required_validation_size`) or a share ``validation_fraction``.
* **The threshold.**  With the held-out scores ``s_1 <= ... <= s_n`` (higher =
  more like G), a sample is rejected when ``-score > threshold_``, the
  ``k``-th smallest ``-s_i`` with ``k = ceil((n + 1)(1 - fnr))``
  (:func:`conformal_threshold`).  A new sample of G, exchangeable with the
  held-out ones, is then rejected with probability at most ``fnr``.
  With too few held-out samples (``k > n``: fewer than
  :func:`required_validation_size`) no finite threshold guarantees ``fnr``:
  the lowest held-out score is the threshold, the sample at it is rejected
  too (unless another held-out score ties with it), a new sample of G is
  rejected with probability up to ``1/(n+1)``, and a
  :class:`ThresholdWarning` says so and how many samples of G are needed.
  ``fnr_bound_`` is the bound that holds (:func:`fnr_bound`).
* **p-values.**  ``p(x) = (1 + #{i : s_i <= score(x)}) / (n + 1)``
  (:func:`conformal_pvalues`); for a new sample of G, ``P(p <= a) <= a``.
  A detector's ``pvalues`` count a score within the threshold's float
  margin of a held-out score as the threshold does, so ``predict`` rejects
  exactly when ``p <= fnr_bound_``, in any batch.
* **Fresh samples of G.**  The owner of G can always sample it:
  :func:`calibrate` sets the threshold of a fitted detector (or pipeline) on
  fresh samples of G, drawn from a sampler as many as the fnr needs, without
  refitting.  A detector fitted with ``validation_size=0`` trains on all of
  G's samples and waits for :func:`calibrate`.

Every detector stores the sorted held-out scores in ``validation_scores_``
(higher = more like G), ``threshold_`` (on ``-score``), ``offset_ =
-threshold_``, so that ``decision_function = score_samples - offset_``, and
``fnr_bound_``, the false-negative rate the threshold guarantees (``fnr``
or less with enough held-out samples, else ``1/(n+1)``).

**PyOD's API.**  :class:`ConformalDecisionMixin` also gives every detector
the attributes and methods of PyOD's ``BaseDetector``, in PyOD's conventions
(outlier scores: higher = *less* like G; outlier labels: 1 = not made by G):
``decision_scores_`` (``-score_samples`` of the samples given to ``fit``, in
their order), ``labels_`` (``decision_scores_ > threshold_`` as 0/1),
``predict_proba`` (``[p, 1 - p]`` with ``p`` the conformal p-value) and
``predict_confidence``.  ``threshold_`` already is on PyOD's scale: a sample
is rejected when its outlier score ``-score_samples(x)`` exceeds it.  What
stays scikit-learn's: ``predict`` returns +1 (made by G) / -1 (not),
``decision_function`` is higher for samples *more* like G (PyOD's
``decision_function(X)`` is ``-score_samples(X)`` here), and ``y`` keeps the
package's convention (1 = G, -1 = known other, 0 = unlabelled).
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.stats import beta, binom
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from .._validation import normal_mask

__all__ = [
    "ConformalDecisionMixin",
    "ThresholdWarning",
    "calibrate",
    "conformal_pvalues",
    "conformal_threshold",
    "calibration_size",
    "detector_pvalues",
    "fnr_bound",
    "fnr_interval",
    "required_validation_size",
    "samples_of_g_needed",
    "union_fnr_interval",
    "validation_split",
]

# (n + 1)(1 - fnr) may land a hair above an integer in floating point.
_RANK_TOL = 1e-12


class ThresholdWarning(UserWarning):
    """The validation set is too small for the requested false-negative rate."""


def _rank(n, fnr):
    """``k = ceil((n + 1)(1 - fnr))``: the order statistic of the conformal threshold."""
    return math.ceil((n + 1) * (1.0 - fnr) - _RANK_TOL)


def required_validation_size(fnr):
    """The fewest held-out samples of G that guarantee a false-negative rate.

    The conformal threshold is the ``k``-th smallest of ``n`` held-out
    distances with ``k = ceil((n + 1)(1 - fnr))``; it exists only for
    ``k <= n``, i.e. ``n >= 1/fnr - 1`` (199 at ``fnr=0.005``, 19 at 0.05).
    With exactly that many the threshold is the largest held-out distance;
    more samples give a steadier threshold: given the held-out set, the share
    of G's samples rejected is ``Beta(n + 1 - k, k)``-distributed, with mean at
    most ``fnr`` and a spread that shrinks like ``sqrt(fnr / n)``.

    Parameters
    ----------
    fnr : float
        Tolerated false-negative rate, in (0, 1).

    Returns
    -------
    n : int

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import required_validation_size
    >>> required_validation_size(0.005), required_validation_size(0.05)
    (199, 19)
    """
    if isinstance(fnr, bool) or not isinstance(fnr, Real) or not 0 < fnr < 1:
        raise ValueError(f"fnr must be a number in (0, 1), got {fnr!r}: fnr=0 cannot "
                         "be guaranteed by any finite number of samples.")
    n = max(1, math.ceil((1.0 - fnr) / fnr) - 1)
    while _rank(n, fnr) > n:  # the same rule (and tolerance) as conformal_threshold
        n += 1
    while n > 1 and _rank(n - 1, fnr) <= n - 1:
        n -= 1
    return n


def fnr_interval(n, fnr, level=0.9):
    """How far the share of G's samples a threshold rejects can be from ``fnr``.

    The conformal threshold set on ``n`` held-out samples of G guarantees
    ``fnr`` on average over the held-out draw; the share of G's future samples
    that *this* threshold rejects is random: ``Beta(n + 1 - k, k)`` with
    ``k = min(ceil((n + 1)(1 - fnr)), n)`` (the held-out distances' ``k``-th
    order statistic has a ``Beta(k, n + 1 - k)`` CDF value, whatever the
    scores' distribution).  With ``n = 199`` at ``fnr = 0.005`` (the fewest
    that give the guarantee) one threshold in twenty rejects more than 1.5 %
    of G's samples; more samples of G narrow the interval like
    ``sqrt(fnr / n)`` (see :func:`calibration_size`).

    Parameters
    ----------
    n : int
        Number of held-out (calibration) samples of G, at least 1.
    fnr : float
        Tolerated false-negative rate, in (0, 1).
    level : float, default=0.9
        Probability of the central interval.

    Returns
    -------
    low, high : float
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the share
        of G's samples rejected.

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import fnr_interval
    >>> [round(v, 4) for v in fnr_interval(199, 0.005)]
    [0.0003, 0.0149]
    >>> [round(v, 4) for v in fnr_interval(2000, 0.005)]
    [0.0027, 0.0078]
    """
    required_validation_size(fnr)          # validates fnr
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n!r}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    k = min(_rank(n, fnr), n)
    low, high = beta.ppf([(1 - level) / 2, (1 + level) / 2], n + 1 - k, k)
    return float(low), float(high)


def union_fnr_interval(sizes, fnrs, level=0.9):
    """:func:`fnr_interval` for detectors that reject a sample when any one rejects it.

    Each detector's threshold rejects a random share ``R_j`` of G's samples
    (:func:`fnr_interval`); the union rejects a share ``R`` with
    ``max_j R_j <= R <= sum_j R_j``, whatever the detectors' dependence.  So
    the largest of the detectors' lower ends is a lower end for ``R``, and
    the sum of their upper ends at level ``1 - (1 - level) / k`` (Bonferroni
    over the ``k`` detectors) an upper end: the interval holds ``R`` with
    probability at least ``level``.  A detector with ``fnr = 0`` rejects
    nothing and adds nothing.

    Parameters
    ----------
    sizes : sequence of int
        Each detector's number of held-out (calibration) samples of G.
    fnrs : sequence of float
        Each detector's ``fnr`` (its share of the union's), in [0, 1).
    level : float, default=0.9

    Returns
    -------
    low, high : float

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import union_fnr_interval
    >>> [round(v, 4) for v in union_fnr_interval([399, 666, 999], [0.0025, 0.0015, 0.001])]
    [0.0001, 0.0204]
    """
    sizes, fnrs = list(sizes), list(fnrs)
    if len(sizes) != len(fnrs) or not sizes:
        raise ValueError(f"sizes and fnrs must give one value per detector, got {len(sizes)} "
                         f"and {len(fnrs)}.")
    if not (isinstance(level, Real) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    for f in fnrs:
        # a NaN or negative fnr must not drop out as "rejects nothing"
        if isinstance(f, bool) or not isinstance(f, Real) or not 0 <= f < 1:
            raise ValueError(f"each fnr must be a number in [0, 1), got {f!r}.")
    pairs = [(n, f) for n, f in zip(sizes, fnrs) if f > 0]
    if not pairs:
        return 0.0, 0.0
    low = max(fnr_interval(n, f, level)[0] for n, f in pairs)
    per_detector = 1 - (1 - level) / len(pairs)
    high = sum(fnr_interval(n, f, per_detector)[1] for n, f in pairs)
    return float(low), float(min(high, 1.0))


def calibration_size(fnr, max_fnr, level=0.9, n_max=10**7):
    """How many held-out samples of G keep a threshold from rejecting more than ``max_fnr``.

    The smallest ``n`` from which on every calibration size ``n' >= n`` has
    ``fnr_interval(n', fnr, level)[1] <= max_fnr``: with at least that many
    calibration samples (``validation_size``, or fresh samples of G given to
    :func:`calibrate`), a threshold rejects more than ``max_fnr`` of G's
    samples with probability at most ``(1 - level) / 2``.  (The interval's
    upper end is a saw-tooth in ``n``, since ``k`` is an integer, under a
    falling envelope; ``n`` is the first size after which the whole
    saw-tooth stays below ``max_fnr``, checked on ``[n, 2n]``.)

    Parameters
    ----------
    fnr : float
        Tolerated false-negative rate, in (0, 1).
    max_fnr : float
        The share of G's samples rejected that should rarely be exceeded;
        greater than ``fnr``.
    level : float, default=0.9
    n_max : int, default=10**7
        Give up above this many samples.

    Returns
    -------
    n : int

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import calibration_size
    >>> calibration_size(0.005, 0.01), calibration_size(0.005, 0.0075)
    (628, 2425)
    """
    required_validation_size(fnr)
    if not fnr < max_fnr < 1:
        raise ValueError(f"max_fnr must be in (fnr, 1) = ({fnr}, 1), got {max_fnr!r}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    n = np.arange(required_validation_size(fnr), 4 * required_validation_size(fnr) + 1)
    while n[0] <= n_max:
        k = np.minimum(np.ceil((n + 1) * (1.0 - fnr) - _RANK_TOL), n)
        bad = np.flatnonzero(beta.ppf((1 + level) / 2, n + 1 - k, k) > max_fnr)
        if bad.size == 0:
            return int(n[0])
        first = int(n[bad[-1]]) + 1
        if 2 * first <= n[-1]:
            return first
        # the saw-tooth still crosses in the second half: look further
        n = np.arange(first, 4 * first + 1)
    raise ValueError(f"More than n_max={n_max} samples would be needed for "
                     f"fnr={fnr}, max_fnr={max_fnr}, level={level}.")


def union_calibration_size(fnrs, max_fnr, level=0.9, n_max=10**7):
    """:func:`calibration_size` for a union: samples of G per detector for a given spread.

    Detectors that reject a sample when any one rejects it (a
    :class:`~flipad_sklearn.ConformalUnion`, detector ``j`` at ``fnrs[j]``)
    reject a share of G's samples whose upper end is the Bonferroni sum of
    the detectors' upper ends (:func:`union_fnr_interval`).  The room above
    the union's fnr, ``max_fnr - sum(fnrs)``, is split in proportion to the
    detectors' fnrs: detector ``j`` gets :func:`calibration_size` of its fnr
    at ``max_fnr * fnrs[j] / sum(fnrs)`` and the Bonferroni level.  With at
    least these many held-out samples each, ``union_fnr_interval(sizes,
    fnrs, level)[1] <= max_fnr``: one calibration of the union rejects more
    than ``max_fnr`` of G's samples with probability at most
    ``(1 - level) / 2``, whatever the detectors' dependence.  (The split is
    simple, not the cheapest: a detector whose samples cost an inversion
    could take less of the room.)

    Parameters
    ----------
    fnrs : sequence of float
        Each detector's fnr (its share of the union's), in [0, 1); a
        detector at 0 rejects nothing and needs no samples (0).
    max_fnr : float
        The share of G's samples one calibration should rarely exceed;
        greater than ``sum(fnrs)``.
    level : float, default=0.9
    n_max : int, default=10**7

    Returns
    -------
    sizes : list of int
        Held-out samples of G per detector, in the order of ``fnrs``.

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import union_calibration_size
    >>> union_calibration_size([0.0025, 0.0015, 0.001], 0.01)
    [2460, 4102, 6155]
    """
    fnrs = list(fnrs)
    if not fnrs:
        raise ValueError("fnrs must give one fnr per detector, got none.")
    for f in fnrs:
        if isinstance(f, bool) or not isinstance(f, Real) or not 0 <= f < 1:
            raise ValueError(f"each fnr must be a number in [0, 1), got {f!r}.")
    if not (isinstance(level, Real) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    total = float(sum(fnrs))
    if isinstance(max_fnr, bool) or not isinstance(max_fnr, Real) \
            or not total < max_fnr < 1:
        raise ValueError(f"max_fnr must be in (sum of the fnrs, 1) = ({total:.6g}, 1), "
                         f"got {max_fnr!r}.")
    if total == 0:
        return [0] * len(fnrs)
    active = sum(f > 0 for f in fnrs)
    per_detector = 1 - (1 - level) / active
    return [calibration_size(f, max_fnr * f / total, per_detector, n_max) if f > 0 else 0
            for f in fnrs]


def _too_few_message(n, fnr, *, detail=None):
    need = required_validation_size(fnr) if fnr > 0 else "infinitely many"
    return (f"{n} validation samples are too few to guarantee fnr={fnr}: at least "
            f"{need} are needed. "
            + (detail or "The largest validation distance is used as threshold (so up to "
               "1/(n+1) of G's samples may be rejected). ")
            + "Give more samples of G (validation_size='auto' holds out what the fnr needs "
            "when there are enough), or set the threshold on fresh samples of G with "
            "flipad_sklearn.detection.conformal.calibrate(detector, sampler_of_G).")


def samples_of_g_needed(fnr, validation_size="auto", validation_fraction=0.2):
    """The fewest samples of G that ``fit`` needs to hold out enough for ``fnr``.

    The smallest pool of G's samples of which the split of
    :func:`validation_split` holds out at least
    :func:`required_validation_size` ``(fnr)`` (398 at ``fnr=0.005`` with
    the defaults: ``"auto"`` holds out at most half of them).  None when
    ``validation_size`` is a number (it alone sets how many are held out)
    or ``fnr`` is 0.

    Parameters
    ----------
    fnr : float
    validation_size : "auto", int or None, default="auto"
    validation_fraction : float, default=0.2

    Returns
    -------
    n : int or None
    """
    if fnr <= 0 or not (validation_size is None or isinstance(validation_size, str)):
        return None
    need = required_validation_size(fnr)
    lo, hi = need, 2 * need + math.ceil(need / validation_fraction)
    while lo < hi:          # the number held out grows with the pool
        mid = (lo + hi) // 2
        if _n_validation(mid, validation_size, validation_fraction, fnr) >= need:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _order_statistic(distances, fnr):
    """``(threshold, k, n)`` of the conformal rule, ``k`` clamped to ``n``; no warning."""
    d = np.sort(np.asarray(distances, dtype=np.float64).ravel())
    n = d.shape[0]
    if n == 0:
        raise ValueError("No validation samples: the threshold needs at least one "
                         "held-out sample of G.")
    k = min(_rank(n, fnr), n)
    return float(d[max(k, 1) - 1]), k, n


def conformal_threshold(distances, fnr):
    """Conformal ``(1 - fnr)`` quantile of held-out distances of G's samples.

    Returns the ``k``-th smallest distance with ``k = ceil((n + 1)(1 - fnr))``:
    for a new sample of G exchangeable with the ``n`` held-out ones,
    ``P(distance > threshold) <= fnr``.  When ``k > n`` (``n < 1/fnr - 1``)
    no finite order statistic gives the guarantee; the maximum is used and a
    :class:`ThresholdWarning` is raised.

    Parameters
    ----------
    distances : array-like of shape (n,)
        Held-out distances (higher = less like G), e.g. ``-score_samples``.
    fnr : float
        Tolerated false-negative rate, in [0, 1).

    Returns
    -------
    threshold : float
    """
    t, _, n = _order_statistic(distances, fnr)
    if _rank(n, fnr) > n:
        warnings.warn(_too_few_message(n, fnr), ThresholdWarning, stacklevel=3)
    return t


def fnr_bound(n, fnr):
    """The false-negative rate the conformal threshold on ``n`` held-out samples guarantees.

    ``(n + 1 - k) / (n + 1)`` with ``k = min(ceil((n + 1)(1 - fnr)), n)``:
    at most ``fnr`` when ``n >= required_validation_size(fnr)``, else
    ``1 / (n + 1)`` (the most that ``n`` held-out samples can guarantee
    with a finite threshold).

    Parameters
    ----------
    n : int
        Held-out samples of G, at least 1.
    fnr : float
        The tolerated false-negative rate asked for.

    Returns
    -------
    bound : float

    Examples
    --------
    >>> from flipad_sklearn.detection.conformal import fnr_bound
    >>> fnr_bound(199, 0.005), round(fnr_bound(150, 0.005), 4)
    (0.005, 0.0066)
    """
    k = min(_rank(n, fnr), n)
    return (n + 1 - k) / (n + 1)


def conformal_pvalues(validation_scores, scores):
    """Conformal p-values of "made by G" from held-out scores of G's samples.

    ``p = (1 + #{validation scores <= score}) / (n + 1)`` (higher score =
    more like G); for a new sample of G, ``P(p <= a) <= a``.

    Parameters
    ----------
    validation_scores : array-like of shape (n,)
        Held-out scores of G's samples.
    scores : array-like of shape (m,)
        Scores of the samples to test.

    Returns
    -------
    p : ndarray of shape (m,), float64, in ``[1/(n+1), 1]``
    """
    v = np.sort(np.asarray(validation_scores, dtype=np.float64).ravel())
    s = np.asarray(scores, dtype=np.float64)
    n_le = np.searchsorted(v, s, side="right")
    return (1.0 + n_le) / (v.size + 1.0)


def _n_validation(n_pool, validation_size, validation_fraction, fnr):
    """How many of the ``n_pool`` samples of G to hold out."""
    n_frac = math.ceil(validation_fraction * n_pool)
    if validation_size is None:
        return n_frac
    if isinstance(validation_size, str):  # "auto"
        if fnr <= 0:
            return n_frac
        # Never more than half of G's samples (unless validation_fraction asks for
        # it): the rest is needed to train.  With too few, the threshold's
        # ThresholdWarning says how many are needed.
        return max(n_frac, min(required_validation_size(fnr), n_pool // 2))
    return int(validation_size)


def validation_split(labels, rng, *, fnr, validation_size="auto", validation_fraction=0.2,
                     min_train=1):
    """Indices of the training samples and of the held-out samples of G.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        In {-1, 0, 1} (1 = made by G, -1 = known other, 0 = unlabelled).
    rng : numpy.random.RandomState
        Draws the held-out samples.
    fnr : float
        The detector's tolerated false-negative rate (for ``"auto"``).
    validation_size : "auto", int or None, default="auto"
        ``"auto"``: ``max(ceil(validation_fraction * n_G),
        required_validation_size(fnr))`` samples of G, at most half of them
        (the threshold then raises a :class:`ThresholdWarning` that says how
        many are needed).  An int: that
        many; 0 holds out nothing (the threshold is then set by
        :func:`calibrate`).  None: ``ceil(validation_fraction * n_G)``.
    validation_fraction : float, default=0.2
    min_train : int, default=1
        Training samples (G's and unlabelled) that must remain.

    Returns
    -------
    train_idx : ndarray of int
        Every sample not held out (labelled others included).
    val_idx : ndarray of int
        The held-out samples of G (sorted).
    """
    pool = np.flatnonzero(normal_mask(labels))
    n_val = _n_validation(pool.size, validation_size, validation_fraction, fnr)
    n_train_normal = int(np.sum(labels != -1)) - n_val
    if (n_val < 1 and validation_size != 0) or n_val > pool.size \
            or n_train_normal < min_train:
        raise ValueError(
            f"Too few samples of G for training and the validation split: "
            f"{pool.size} samples of G, {n_val} held out (validation_size="
            f"{validation_size!r}, validation_fraction={validation_fraction}), leaving "
            f"{n_train_normal} samples for training; at least {min_train} "
            f"{'is' if min_train == 1 else 'are'} needed.")
    val_idx = np.sort(rng.permutation(pool)[:n_val])
    train_mask = np.ones(labels.size, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


#: The conformal parameters' entries of a detector's ``_parameter_constraints``.
CONFORMAL_CONSTRAINTS = {
    "fnr": [Interval(Real, 0, 1, closed="left")],
    "validation_size": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left"),
                        None],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
}


def _check_new_fnr(fnr):
    """Refuse a new fnr outside [0, 1) before anything changes."""
    if fnr is not None and (isinstance(fnr, bool) or not isinstance(fnr, Real)
                            or not 0 <= fnr < 1):
        raise ValueError(f"fnr must be None or a number in [0, 1), got {fnr!r}.")


class ConformalDecisionMixin:
    """The conformal split, threshold, p-values and decisions of a detector.

    For detectors whose ``score_samples`` is higher for samples more like G,
    with parameters ``fnr``, ``validation_size`` and ``validation_fraction``.
    ``fit`` calls :meth:`_validation_split` then :meth:`_set_threshold` on
    the held-out scores; the mixin provides ``decision_function``,
    ``predict``, ``pvalues``, :meth:`recalibrate` and a ``fit_predict`` that
    keeps ``y`` (``OutlierMixin``'s drops it).

    It also provides PyOD's API (see the module's docstring):
    ``decision_scores_`` (stored by :meth:`_fit_threshold` when ``fit``
    passes ``X_fit``), ``labels_``, :meth:`predict_proba`,
    :meth:`predict_confidence` and ``predict(X, return_confidence=True)``.
    """

    #: Training samples (G's and unlabelled) that must remain after the split.
    _min_train_samples = 1

    def _threshold_margin(self):
        """Relative margin added to the threshold, above the scores' float noise."""
        return 1e-10

    def _validation_split(self, labels, rng):
        return validation_split(
            labels, rng, fnr=self.fnr, validation_size=self.validation_size,
            validation_fraction=self.validation_fraction,
            min_train=self._min_train_samples)

    def _fit_threshold(self, X_val, score, *, X_fit=None, val_idx=None):
        """Threshold from ``score(X_val)``; no held-out samples: uncalibrated.

        With ``X_fit`` (every sample given to ``fit``, ``X_val =
        X_fit[val_idx]``) also PyOD's ``decision_scores_``: ``-score`` of
        every sample of ``X_fit`` in its order, the held-out scores reused
        (so the other samples are scored once more).  A detector whose
        ``score`` is too costly to run on all its training samples leaves
        ``X_fit`` out: it then has no ``decision_scores_`` or ``labels_``.
        """
        s_val = (np.asarray(score(X_val), dtype=np.float64).ravel() if X_val.shape[0]
                 else np.empty(0))
        self._set_threshold(s_val)
        if X_fit is not None:
            s = np.empty(X_fit.shape[0], dtype=np.float64)
            val_idx = np.asarray(val_idx, dtype=np.intp)
            s[val_idx] = s_val
            rest = np.setdiff1d(np.arange(X_fit.shape[0]), val_idx)
            if rest.size:
                s[rest] = np.asarray(score(X_fit[rest]), dtype=np.float64).ravel()
            self.decision_scores_ = -s

    def _set_threshold(self, validation_scores, n_kinds=1):
        """Set ``validation_scores_``, ``threshold_`` and ``offset_`` (empty: uncalibrated);
        ``n_kinds``: the held-out scores are each sample's lowest over that many kinds
        of perturbation (``calibrate(each_kind=True)``), recorded in
        ``n_calibration_kinds_`` so that a saved verdict says which guarantee it has."""
        v = np.sort(np.asarray(validation_scores, dtype=np.float64).ravel())
        self.validation_scores_ = v
        if v.size == 0:
            for name in ("threshold_", "offset_", "fnr_bound_", "n_calibration_kinds_"):
                self.__dict__.pop(name, None)
            return
        self.n_calibration_kinds_ = int(n_kinds)
        if np.ptp(v) <= 1e-12 * (1.0 + np.abs(v).max()) and v.size > 1:
            warnings.warn(
                "All validation samples of G have the same score: the detector "
                "collapsed (or the features are constant). Check for bias terms or "
                "constant features.", RuntimeWarning, stacklevel=3)
        t, k, n = _order_statistic(-v, self.fnr)
        margin = self._threshold_margin() * max(abs(t), 1e-12)
        self.fnr_bound_ = fnr_bound(n, self.fnr)
        # what this one threshold may reject of G (the guarantee is an average)
        self.fnr_interval_ = fnr_interval(n, self.fnr) if self.fnr > 0 else (0.0, 0.0)
        too_few = _rank(n, self.fnr) > n
        # Too few to guarantee fnr: the threshold is the lowest held-out score, and
        # the sample there is rejected too (unless another held-out score ties with
        # it), so that fit_predict and labels_ show what the guarantee became.
        reject_at = too_few and (n == 1 or v[1] - v[0] > 2 * margin)
        if too_few:
            pool = samples_of_g_needed(
                self.fnr, getattr(self, "validation_size", "auto"),
                getattr(self, "validation_fraction", 0.2))
            warnings.warn(_too_few_message(n, self.fnr, detail=(
                "The threshold is the lowest held-out score of G, "
                + ("the sample at it rejected" if reject_at else "ties with it accepted")
                + f": a new sample of G is rejected with probability up to "
                f"fnr_bound_ = 1/(n+1) = {self.fnr_bound_:.4g}, not {self.fnr}. "
                + (f"fit needs {pool} samples of G for fnr={self.fnr} (validation_size="
                   f"{getattr(self, 'validation_size', 'auto')!r}). " if pool else ""))),
                ThresholdWarning, stacklevel=3)
        # The margin keeps the sample at the quantile accepted (rejected, in the
        # fallback above) despite float noise when it is scored again in another batch.
        self.threshold_ = t - margin if reject_at else t + margin
        self.offset_ = -self.threshold_

    def _check_calibrated(self):
        if not hasattr(self, "offset_"):
            if hasattr(self, "validation_scores_"):
                raise NotFittedError(
                    f"This {type(self).__name__} was fitted with validation_size=0 and has "
                    "no threshold yet: set it on fresh samples of G with "
                    "flipad_sklearn.detection.conformal.calibrate(detector, X_of_G) or "
                    "detector.recalibrate(X_of_G).")
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 "Call 'fit' with appropriate arguments first.")

    def recalibrate(self, X, fnr=None):
        """Set the threshold on fresh samples of G, without refitting.

        The samples must not have been used for training (fresh samples of G
        are exchangeable with G's future samples: the fnr guarantee holds).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples of G, in the detector's input space.
        fnr : float or None, default=None
            A new tolerated false-negative rate (stored in ``fnr``); None keeps it.

        Returns
        -------
        self
        """
        return self._recalibrate_on_scores(self.score_samples(X), fnr)

    def _recalibrate_on_scores(self, scores, fnr=None, n_kinds=1):
        """:meth:`recalibrate` on the scores of fresh samples of G (each one's lowest
        over ``n_kinds`` kinds of perturbation)."""
        # fnr changes only with the threshold: a failed scoring or a bad fnr leaves
        # both as they were
        _check_new_fnr(fnr)
        if fnr is not None:
            self.set_params(fnr=fnr)
        self._set_threshold(scores, n_kinds)
        return self

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative means "not made by G".

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        decision : ndarray of shape (n_samples,), float64
        """
        self._check_calibrated()
        return self.score_samples(X) - self.offset_

    def predict(self, X, return_confidence=False):
        """+1 for "made by G", -1 for "not made by G".

        scikit-learn's convention, not PyOD's (0 inlier / 1 outlier): PyOD's
        ``predict(X)`` is ``(predict(X) == -1).astype(int)`` here.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        return_confidence : bool, default=False
            Also return :meth:`predict_confidence` (as PyOD's ``predict`` does).

        Returns
        -------
        labels : ndarray of shape (n_samples,), int
        confidence : ndarray of shape (n_samples,), float64
            Only with ``return_confidence=True``.
        """
        labels = np.where(self.decision_function(X) >= 0, 1, -1)
        if return_confidence:
            return labels, self.predict_confidence(X)
        return labels

    def _tie_robust(self, scores, sign=1.0):
        """Scores moved by the threshold's margin: a near-tie with a held-out score is a tie."""
        return scores + sign * self._threshold_margin() * np.maximum(np.abs(scores), 1e-12)

    def _pvalues_of_scores(self, scores):
        """Conformal p-values of calibrated scores, near-ties counted as the threshold does.

        ``(1 + j) / (n + 1)`` with ``j`` the held-out scores at most
        ``score(x)``, a held-out score within the threshold's float margin
        counted as equal (so that a sample keeps its p-value when scored in
        another batch), and ``j`` kept on the side of the threshold that
        ``predict`` puts the sample on: with ``m / (n + 1) = fnr_bound_``, ``j
        >= m`` for an accepted sample and ``j <= m - 1`` for a rejected one.
        So ``predict`` rejects exactly the samples with ``p <= fnr_bound_``.
        """
        s = np.asarray(scores, dtype=np.float64)
        v = self.validation_scores_
        j = np.searchsorted(v, self._tie_robust(s), side="right")
        m = int(round(self._fnr_bound() * (v.size + 1)))
        j = np.where(s - self.offset_ >= 0, np.maximum(j, m), np.minimum(j, m - 1))
        return (1.0 + j) / (v.size + 1.0)

    def _fnr_bound(self):
        bound = self.__dict__.get("fnr_bound_")
        return fnr_bound(self.validation_scores_.size, self.fnr) if bound is None else bound

    def _calibrated_scores(self, X):
        self._check_calibrated()
        return np.asarray(self.score_samples(X), dtype=np.float64)

    # ------------------------------------------------------------ PyOD's API
    @property
    def labels_(self):
        """PyOD's outlier labels of the samples given to ``fit``: 1 = not made by G.

        ``(decision_scores_ > threshold_)`` as 0/1 ints, in the order of
        ``fit``'s ``X``: PyOD's convention (0 = inlier = made by G, 1 =
        outlier), not the package's ``y`` (1 = G, -1 = other) nor
        ``predict``'s (+1 / -1).  Follows the current threshold (after
        :meth:`recalibrate` too).  The held-out samples of G are included;
        the samples the detector was trained on are scored by a model that
        has seen them, so their share of 1s is not the fnr.
        """
        scores = self.__dict__.get("decision_scores_")
        if scores is None:
            raise AttributeError(
                f"This {type(self).__name__} has no labels_: it is not fitted, or it "
                "scores no training sample beyond the held-out ones of G (see "
                "decision_scores_). Use (predict(X) == -1).astype(int).")
        if "threshold_" not in self.__dict__:
            raise AttributeError(
                f"This {type(self).__name__} has no threshold yet (validation_size=0): "
                "set it with recalibrate(X_of_G) before reading labels_.")
        return (scores > self.threshold_).astype(int)

    def predict_proba(self, X, method="conformal", return_confidence=False):
        """PyOD's ``[P(inlier), P(outlier)]``, from the conformal p-value.

        Column 0 is the conformal p-value ``p`` of "made by G"
        (:meth:`pvalues`; a score within the threshold's float margin of a
        held-out score counts as equal to it, as in ``predict``, so that a
        held-out sample scored again in another batch keeps its value),
        column 1 is ``1 - p``: PyOD's column order, where
        the outlier (column 1) is "not made by G".  Not a posterior
        probability: for a new sample of G, ``P(proba[:, 1] >= 1 - a) <= a``
        for every ``a``, and ``predict`` rejects about where ``proba[:, 1] >=
        1 - fnr``.  (PyOD's default ``method="linear"`` min-max scales the
        training scores instead, which guarantees nothing.)

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        method : {"conformal"}, default="conformal"
            The only method: PyOD's ``"linear"`` and ``"unify"`` are refused.
        return_confidence : bool, default=False
            Also return :meth:`predict_confidence`.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2), float64
            Rows sum to 1.
        confidence : ndarray of shape (n_samples,), float64
            Only with ``return_confidence=True``.
        """
        if method != "conformal":
            raise ValueError(
                f"method must be 'conformal', got {method!r}: the probabilities of "
                f"{type(self).__name__} are conformal p-values (PyOD's 'linear' and "
                "'unify' scalings carry no guarantee).")
        scores = self._calibrated_scores(X)
        p = self._pvalues_of_scores(scores)
        proba = np.column_stack([p, 1.0 - p])
        if return_confidence:
            return proba, self._confidence(scores)
        return proba

    def predict_confidence(self, X):
        """How steady each decision of :meth:`predict` is, in [0, 1] (PyOD's API).

        PyOD's confidence (ExCeeD, Perini et al. 2020) on the conformal
        threshold: the threshold is the ``k``-th smallest of ``n`` held-out
        distances of G (``k = ceil((n + 1)(1 - fnr))``).  With ``q = (1 +
        #{held-out samples at least as like G as x}) / (n + 2)``, a redrawn
        held-out set would reject ``x`` with probability ``P(Binomial(n, q)
        >= k)``; the confidence is that probability for a rejected sample and
        one minus it for an accepted one.  Near 1: the decision would stand
        on another draw of G's held-out samples; near 0.5 or below: ``x`` is
        near the threshold, or the threshold itself is uncertain.  At a small
        ``fnr`` with few held-out samples the threshold is one of the largest
        held-out distances, and even a sample beyond all of them gets a
        modest confidence: with ``k = n`` (e.g. ``fnr=0.005``, 199 held-out
        samples) at most ``((n + 1) / (n + 2))**n``, about 0.37; with 400
        held-out samples (``k = n - 1``) about 0.74.  More held-out samples
        of G (``validation_size``, :func:`calibrate`) raise it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        confidence : ndarray of shape (n_samples,), float64
        """
        return self._confidence(self._calibrated_scores(X))

    def _confidence(self, scores):
        labels = np.where(scores - self.offset_ >= 0, 1, -1)  # as predict
        v = self.validation_scores_  # sorted, higher = more like G
        n = v.size
        k = min(_rank(n, self.fnr), n)
        # held-out s_i >= score, a near-tie counted as a tie (robust to the float noise
        # of scoring in another batch)
        n_ge = n - np.searchsorted(v, self._tie_robust(scores, -1.0), side="left")
        q = (1.0 + n_ge) / (n + 2.0)
        p_reject = binom.sf(k - 1, n, q)
        return np.where(labels == -1, p_reject, 1.0 - p_reject).astype(np.float64)

    def pvalues(self, X):
        """Conformal p-values of "made by G" from the held-out scores.

        ``p = (1 + #{validation scores <= score(x)}) / (n_val + 1)``; for a
        new sample of G, ``P(p <= a) <= a``.  A score within the threshold's
        float margin of a held-out score counts as the threshold counts it,
        so a sample gets the same p-value and verdict in any batch, and
        ``predict`` rejects exactly when ``p <= fnr_bound_`` (at most
        ``fnr``; ``1/(n_val + 1)`` when there are too few held-out samples
        for ``fnr``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        p : ndarray of shape (n_samples,), float64
        """
        return self._pvalues_of_scores(self._calibrated_scores(X))

    def __setstate__(self, state):
        # Detectors pickled before the conformal module stored the distances.
        if "validation_distances_" in state and "validation_scores_" not in state:
            state = dict(state)
            state["validation_scores_"] = -np.asarray(state.pop("validation_distances_"))[::-1]
        # Detectors saved before fnr_bound_: the bound of their rule (ties accepted).
        if "offset_" in state and "fnr_bound_" not in state and "fnr" in state \
                and np.size(state.get("validation_scores_", ())) >= 1:
            state = dict(state)
            state["fnr_bound_"] = fnr_bound(np.size(state["validation_scores_"]), state["fnr"])
        super().__setstate__(state)

    def fit_predict(self, X, y=None, **kwargs):
        """Fit with the labels ``y`` (``OutlierMixin`` would drop them) and predict ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,), int
        """
        return self.fit(X, y, **kwargs).predict(X)


def _frozen_inner(estimator):
    """``estimator`` without its FrozenEstimator wrappers."""
    while isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    return estimator


def _unwrap(estimator):
    """The conformal detector at the end of ``estimator``, and the steps before it."""
    est = _frozen_inner(estimator)
    steps = getattr(est, "steps", None)
    if steps:
        return steps[-1][1], est[:-1]
    return est, None


def detector_pvalues(estimator, X):
    """Conformal p-values of "made by G" of a detector or a pipeline ending in one."""
    det, head = _unwrap(estimator)
    if not hasattr(det, "pvalues"):
        raise TypeError(f"{type(det).__name__} has no pvalues: a conformal detector of "
                        "flipad_sklearn (or a pipeline ending in one) is needed.")
    return det.pvalues(_head_transform(head, X))


def _head_transform(head, X):
    """``X`` through the steps before the detector (a pipeline's input contract only,
    when the detector is its one step)."""
    if head is None:
        return X
    if not head.steps:
        contract = getattr(head, "_contract", None)
        return X if contract is None else contract(X)
    return head.transform(X)


def _check_n_samples(n_samples, what="n_samples"):
    """Refuse a number of fresh samples of G other than ``"auto"`` or a positive int."""
    ok = (n_samples == "auto" if isinstance(n_samples, str) else
          isinstance(n_samples, Integral) and not isinstance(n_samples, bool)
          and n_samples >= 1)
    if not ok:
        raise ValueError(f"{what} must be 'auto' or a positive int, got {n_samples!r}.")


def calibrate(estimator, X, *, n_samples="auto", fnr=None, each_kind=False):
    """Set a fitted detector's threshold on fresh samples of G, without refitting.

    Parameters
    ----------
    estimator : conformal detector or Pipeline ending in one
        Fitted (possibly with ``validation_size=0``).
    X : array-like or callable
        Fresh samples of G, in the pipeline's input space (images for a FLIPAD
        pipeline), not used in training; or a sampler ``X(n) -> n samples of
        G`` from which ``n_samples`` are drawn.
    n_samples : "auto" or int, default="auto"
        Samples drawn from a sampler: ``"auto"`` draws
        :func:`required_validation_size` ``(fnr)``, the fewest that give the
        guarantee (more give a steadier threshold).  Ignored for an array.
    fnr : float or None, default=None
        A new tolerated false-negative rate for the detector; None keeps its own.
    each_kind : bool, default=False
        For a pipeline trained on a mixture of perturbations
        (:class:`~flipad_sklearn.pipeline.ImmunisedPipeline` with a
        :class:`~flipad_sklearn.RandomPerturbation`): False perturbs each
        fresh sample by one draw of the mixture, as ``fit`` does, so the fnr
        holds on average over the mixture; one kind (JPEG, say) may be
        rejected more often.  True passes each fresh sample through every
        kind of the mixture (a strength drawn per kind) and sets the threshold
        on its lowest score: the fnr then holds under each kind, and for any
        choice of kinds per image, at the cost of one scoring per kind and a
        lower threshold.  Without a mixture it changes nothing.

    Returns
    -------
    estimator
        The same object, with ``threshold_``, ``offset_``,
        ``validation_scores_`` and ``n_calibration_kinds_`` (the kinds each
        fresh sample was scored in: 1, or the mixture's with ``each_kind``)
        of its detector recomputed.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> from flipad_sklearn.detection.conformal import calibrate
    >>> rng = np.random.default_rng(0)
    >>> sample_G = lambda n: rng.normal(size=(n, 3))
    >>> det = ConformalDetector(fnr=0.005, validation_size=0, random_state=0)
    >>> det = calibrate(det.fit(sample_G(300)), sample_G)
    >>> det.validation_scores_.size
    199
    """
    det, head = _unwrap(estimator)
    if not isinstance(det, ConformalDecisionMixin):
        raise TypeError(f"calibrate needs a conformal detector of flipad_sklearn (or a "
                        f"pipeline ending in one), got {type(det).__name__}.")
    if not isinstance(each_kind, (bool, np.bool_)):
        raise TypeError(f"each_kind must be True or False, got {each_kind!r}.")
    _check_new_fnr(fnr)
    new_fnr = det.fnr if fnr is None else fnr
    if callable(X):
        _check_n_samples(n_samples)
        if isinstance(n_samples, str):
            n_samples = required_validation_size(new_fnr)
        X = X(int(n_samples))
        if len(X) != n_samples:
            raise ValueError(f"The sampler returned {len(X)} samples, {n_samples} were "
                             "asked for.")
    if len(X) < 1:
        raise ValueError("calibrate needs at least one sample of G.")
    # a sample of G is rejected under kind k only if its score there is below the
    # threshold, and its lowest score over the copies is at most that: the quantile
    # of the lowest scores bounds every kind's rejections (one copy: its scores)
    copies = _calibration_copies(_frozen_inner(estimator), X, each_kind)
    scores = np.min([np.asarray(det.score_samples(_head_transform(head, c)),
                                dtype=np.float64) for c in copies], axis=0)
    # the new fnr is set with the threshold, not before a draw or transform that may fail
    det._recalibrate_on_scores(scores, fnr=fnr, n_kinds=len(copies))
    return estimator


def _calibration_copies(pipe, X, each_kind):
    """The fresh samples of G as the threshold scores them: perturbed as at fit, in
    one copy (an ImmunisedPipeline's guarantee covers its perturbations), or once per
    kind of its mixture with ``each_kind``."""
    if each_kind and hasattr(pipe, "_calibration_kinds"):
        return pipe._calibration_kinds(X)
    prepare = getattr(pipe, "_calibration_input", None)
    return [X if prepare is None else prepare(X)]
