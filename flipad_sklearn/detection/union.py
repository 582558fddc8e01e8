"""Several conformal detectors of one generator: made by G only if every one accepts.

FLIPAD's Deep SAD, trained with labelled others, sharpens the boundary
between G and the sources it was shown; a one-class model of G's pixels
(:func:`~flipad_sklearn.make_pixel_guard`) rejects what is far from all of
G's images, whatever the others were (issue 32: another image domain,
accepted by FLIPAD on the published face DCGAN).  Neither does the other's
job, and their scores live on different scales, so they are not averaged.
:class:`ConformalUnion` keeps each detector's own conformal threshold, at a
share of the tolerated false-negative rate, and rejects a sample when any
one of them rejects it.  By the union bound a fresh sample of G is rejected
with probability at most the sum of the detectors' bounds, ``fnr_bound_``:
``fnr`` when each has the held-out samples of G its share needs.
"""

import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OutlierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._named import NamedEstimatorsMixin
from .conformal import (
    ConformalDecisionMixin, ThresholdWarning, _head_transform, _unwrap, calibrate,
    _check_n_samples, union_calibration_size, union_fnr_interval,
)

__all__ = ["ConformalUnion"]


def _spread(scores):
    """A robust unit of a detector's held-out scores (interquartile range, else std, else 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size >= 2:
        q1, q3 = np.quantile(scores, [0.25, 0.75])
        for unit in (q3 - q1, scores.std()):
            if np.isfinite(unit) and unit > 0:
                return float(unit)
    return 1.0


class ConformalUnion(NamedEstimatorsMixin, MetaEstimatorMixin, OutlierMixin, BaseEstimator):
    """Accept a sample as G's only when every detector accepts it (union of rejections).

    Each detector (a clone of ``estimators[name]``: a conformal detector of
    the package or a pipeline ending in one, e.g.
    :func:`~flipad_sklearn.pipeline.make_flipad` and
    :func:`~flipad_sklearn.make_pixel_guard`) is fitted on the same ``X, y``
    with its false-negative rate set to its share of ``fnr``,
    ``fnr * weights[name] / sum(weights)``, and keeps its own conformal
    threshold.  A sample is rejected ("not made by G") when any detector
    rejects it, so a fresh sample of G is rejected with probability at most
    the sum of the detectors' guarantees (the union bound), recorded in
    ``fnr_bound_``.  Each detector needs the held-out samples of G its own
    share needs (:func:`~flipad_sklearn.calibration_size`): a cheap detector
    given a small share can be calibrated on many fresh samples of G with
    :meth:`calibrate`.

    ``fit`` sets every detector's ``fnr`` (on its clone) to its share: an
    ``fnr`` set on a detector, by hand or by a grid search over
    ``<name>__fnr`` (or ``<name>__det__fnr``), has no effect; the shares
    are set by ``fnr`` and ``weights`` (search over ``weights`` instead).
    A :class:`~sklearn.frozen.FrozenEstimator` is neither refitted nor
    changed: it keeps its own threshold, ``fnr_bound_`` counts it, and a
    ``ThresholdWarning`` says when
    that is more than its share.

    Parameters
    ----------
    estimators : dict {name: estimator} or list of (name, estimator)
        Conformal detectors (or pipelines ending in one) of the same inputs.
    fnr : float in (0, 1), default=0.005
        The tolerated false-negative rate of the union, shared among the
        detectors.
    weights : dict {name: float} or None, default=None
        Each detector's share of ``fnr`` (normalised to sum 1); None: equal
        shares.

    Attributes
    ----------
    estimators_ : list of (name, estimator)
        The fitted detectors.
    weights_ : ndarray of shape (n_estimators,)
        The normalised shares, in the order of ``estimators_``.
    scales_ : ndarray of shape (n_estimators,)
        Each detector's unit of score (the interquartile range of the
        held-out scores of G its threshold stands on: at fit, or at
        :meth:`calibrate`), which puts the decision functions on one scale
        for :meth:`decision_function`.
    offset_ : float
        0: ``decision_function = score_samples``.
    fnr_bound_ : float
        Sum of the detectors' ``fnr_bound_``: the probability that a fresh
        sample of G is rejected is at most this.
    fnr_interval_ : tuple of float
        A 90 % interval of the share of G's samples that these thresholds
        reject (:func:`~flipad_sklearn.detection.conformal.union_fnr_interval`,
        from each detector's calibration size): the bound is an average over
        calibration draws, this is the spread of one draw.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import ConformalDetector, ConformalUnion
    >>> X = np.random.default_rng(0).normal(size=(400, 3))
    >>> union = ConformalUnion([("forest", ConformalDetector("iforest", random_state=0)),
    ...                         ("gauss", ConformalDetector("gaussian", random_state=0))],
    ...                        fnr=0.05).fit(X)
    >>> union.predict([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])
    array([ 1, -1])
    >>> [round(float(d.fnr), 3) for d in (e for _, e in union.estimators_)]
    [0.025, 0.025]
    """

    _parameter_constraints = {
        "estimators": [dict, list],
        "fnr": [Interval(Real, 0, 1, closed="neither")],
        "weights": [None, dict],
    }

    def __init__(self, estimators, *, fnr=0.005, weights=None):
        self.estimators = estimators
        self.fnr = fnr
        self.weights = weights

    def _shares(self, names):
        if self.weights is None:
            w = np.ones(len(names))
        else:
            unknown = sorted(set(self.weights) - set(names))
            missing = [n for n in names if n not in self.weights]
            if unknown or missing:
                raise ValueError(f"weights must give a share to each detector {names}; "
                                 f"unknown: {unknown}, missing: {missing}.")
            w = np.array([self.weights[n] for n in names], dtype=np.float64)
            if not (np.isfinite(w).all() and (w > 0).all()):
                raise ValueError(f"weights must be positive and finite, got {self.weights}.")
        return w / w.sum()

    def fit(self, X, y=None):
        """Fit every detector on ``X, y`` at its share of ``fnr``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            In the detectors' input space (images for FLIPAD pipelines).
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled; passed
            to every detector (a one-class detector drops the -1 samples).

        Returns
        -------
        self : ConformalUnion
        """
        self._validate_params()
        pairs = self._check_names()
        w = self._shares([n for n, _ in pairs])
        fitted = []
        for (name, est), share in zip(pairs, w):
            est = clone(est)
            det, _ = _unwrap(est)
            if not isinstance(det, ConformalDecisionMixin):
                raise TypeError(f"Detector {name!r}: {type(det).__name__} is not a conformal "
                                "detector of flipad_sklearn (or a pipeline ending in one).")
            if isinstance(est, FrozenEstimator):
                # clone keeps a frozen detector itself: never change its fnr under its
                # threshold (the caller's object); it keeps its own threshold
                bound = getattr(det, "fnr_bound_", None)
                if bound is None or bound > self.fnr * share * (1 + 1e-9):
                    warnings.warn(
                        f"Detector {name!r} is frozen: it keeps its own threshold "
                        f"(fnr_bound_={bound}), not its share {self.fnr * share:.4g} of "
                        f"fnr={self.fnr}, so the union's fnr_bound_ exceeds fnr. Set its "
                        f"threshold with union.calibrate(X_of_G, detectors=[{name!r}]).",
                        ThresholdWarning, stacklevel=2)
            else:
                det.set_params(fnr=float(self.fnr * share))
            fitted.append((name, est.fit(X, y)))
        self.estimators_ = fitted
        self.weights_ = w
        self.scales_ = np.array([_spread(det.validation_scores_)
                                 for det in self._detectors()])
        self.offset_ = 0.0
        return self

    def fit_predict(self, X, y=None):
        """Fit on ``X, y`` (``y`` forwarded, unlike ``OutlierMixin``'s), then predict ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X, y).predict(X)

    @property
    def n_features_in_(self):
        """Number of features the detectors were fitted on (the first detector's)."""
        check_is_fitted(self, "estimators_")
        return self.estimators_[0][1].n_features_in_

    @property
    def fnr_bound_(self):
        """Sum of the detectors' ``fnr_bound_`` (the union bound)."""
        self._check_calibrated()
        return float(sum(det.fnr_bound_ for det in self._detectors()))

    @property
    def fnr_interval_(self):
        """90 % interval of the share of G's samples these thresholds reject."""
        self._check_calibrated()
        dets = self._detectors()
        return union_fnr_interval([det.validation_scores_.size for det in dets],
                                  [det.fnr for det in dets])

    def _detectors(self):
        """The conformal detector at the end of each fitted member, in order."""
        return [_unwrap(est)[0] for _, est in self.estimators_]

    def _check_calibrated(self):
        """Fitted, and every detector has a threshold (before any detector's steps run)."""
        check_is_fitted(self, "estimators_")
        waiting = [name for (name, _), det in zip(self.estimators_, self._detectors())
                   if not hasattr(det, "offset_")]
        if waiting:
            raise NotFittedError(
                f"Detectors {waiting} were fitted with validation_size=0 and have no "
                "threshold yet: set them on fresh samples of G with "
                "union.calibrate(sampler_of_G) (or union.calibrate(X_of_G)).")

    def calibrate(self, X, *, n_samples="auto", detectors=None, max_fnr=None,
                  each_kind=False):
        """Set the detectors' thresholds on fresh samples of G, without refitting.

        Parameters
        ----------
        X : array-like or callable
            Fresh samples of G (or a sampler ``X(n) -> n samples``), see
            :func:`~flipad_sklearn.calibrate`.  Every detector is calibrated
            on the whole array; from a sampler each draws its own samples.
        n_samples : "auto", int or dict {name: int}, default="auto"
            Drawn from a sampler: ``"auto"``, the fewest each detector's
            share of ``fnr`` needs; an int, that many for each detector; a
            dict, per detector.
        detectors : list of str or None, default=None
            The detectors to calibrate (e.g. only a cheap pixel guard on
            many fresh samples); None: all.
        max_fnr : float or None, default=None
            Draw as many samples per detector as keep this calibration from
            rejecting more than ``max_fnr`` of G's samples in 19 draws of 20
            (:func:`~flipad_sklearn.detection.conformal.union_calibration_size`:
            the upper end of ``fnr_interval_`` at most ``max_fnr``), instead
            of ``n_samples``.  Needs a sampler, or an array of at least the
            largest of those sizes, and every detector (``detectors=None``):
            the bound is on the union.  None: ``n_samples`` decides.
        each_kind : bool, default=False
            True: each detector trained on a mixture of perturbations is
            calibrated on the lowest score of each fresh sample over the
            mixture's kinds, so that its share of ``fnr`` holds under each kind
            (see :func:`~flipad_sklearn.calibrate`); the others as with False,
            their shares promised on ``G``'s images as they come only (the
            union's bound under a kind holds when they are not moved by it).

        Returns
        -------
        self
        """
        check_is_fitted(self)
        names = [n for n, _ in self.estimators_]
        chosen = names if detectors is None else list(detectors)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"Unknown detectors {unknown}; the union has {names}.")
        if max_fnr is not None and set(chosen) != set(names):
            # the bound is on the union: the detectors left out keep their own spread
            raise ValueError(f"max_fnr bounds the whole union: calibrate every detector "
                             f"(detectors=None), not {list(chosen)}; for some of them "
                             "give n_samples.")
        sizes = self._calibration_sizes(X, n_samples, max_fnr, names)
        scales = np.array(self.scales_, dtype=np.float64)
        try:
            for i, ((name, est), share) in enumerate(zip(self.estimators_, self.weights_)):
                if name in chosen:
                    calibrate(est, X, n_samples=sizes[name], fnr=float(self.fnr * share),
                              each_kind=each_kind)
                    # the unit follows the held-out scores the threshold now stands on
                    scales[i] = _spread(_unwrap(est)[0].validation_scores_)
        finally:
            # also after an error midway: the units of the thresholds that did move
            self.scales_ = scales
        return self

    def _calibration_sizes(self, X, n_samples, max_fnr, names):
        """Samples per detector for :meth:`calibrate`, checked before any threshold moves."""
        if max_fnr is not None:
            if n_samples != "auto":
                raise ValueError("Give max_fnr or n_samples, not both.")
            needed = union_calibration_size(self.fnr * self.weights_, max_fnr)
            if not callable(X) and len(X) < max(needed):
                raise ValueError(
                    f"max_fnr={max_fnr} needs {max(needed)} fresh samples of G (per "
                    f"detector: {dict(zip(names, needed))}), got {len(X)}; pass a "
                    "sampler or more samples.")
            # a detector at fnr 0 rejects nothing: its threshold needs no spread
            return {name: n or "auto" for name, n in zip(names, needed)}
        if isinstance(n_samples, dict):
            unknown = sorted(set(n_samples) - set(names))
            if unknown:
                raise ValueError(f"n_samples names unknown detectors {unknown}; the union "
                                 f"has {names}.")
            sizes = {name: n_samples.get(name, "auto") for name in names}
        else:
            sizes = dict.fromkeys(names, n_samples)
        for name, n in sizes.items():
            _check_n_samples(n, what=f"n_samples of detector {name!r}")
        return sizes

    def decision_function(self, X):
        """The lowest decision of the detectors, each in units of its held-out scores.

        Negative exactly when some detector rejects the sample; for ranking
        (ROC curves) the units put the detectors on one scale.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        self._check_calibrated()
        return self._combine_decisions([est.decision_function(X)
                                        for _, est in self.estimators_])

    def _combine_decisions(self, decisions):
        """:meth:`decision_function` from the detectors' own decisions (one column each)."""
        out = None
        for d, unit in zip(decisions, self.scales_):
            d = np.asarray(d, dtype=np.float64) / unit
            out = d if out is None else np.minimum(out, d)
        return out

    def score_samples(self, X):
        """Same as :meth:`decision_function` (``offset_`` is 0); higher = more like G.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return self.decision_function(X) + self.offset_

    def predict(self, X):
        """+1 when every detector accepts the sample ("made by G"), else -1.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        labels : ndarray of shape (n_samples,), int
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def pvalues(self, X, per_detector=False, return_decision=False):
        """Conformal p-values of "made by G", combined by Bonferroni's rule.

        The union's p-value is ``min(1, min_j p_j / w_j)`` with ``p_j`` the
        p-value of detector ``j`` and ``w_j`` its share: for a fresh sample
        of G, ``P(p <= a) <= a``.  When every detector's ``fnr_bound_`` is
        within its share (enough held-out samples of G), :meth:`predict`
        rejects exactly the samples with ``p <= fnr`` (a rejection whose
        ``p_j / w_j`` rounds a hair above ``fnr`` is kept at ``fnr``);
        with too few, a detector also rejects at ``p_j = 1/(n_j + 1)``,
        above its share.

        Each detector's steps transform ``X`` once (for FLIPAD: one
        inversion per sample), also with ``return_decision``: calling
        :meth:`pvalues` and then :meth:`predict` would invert every sample
        twice.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        per_detector : bool, default=False
            Return the detectors' own p-values, one column each (the order
            of ``estimators_``), instead; :meth:`combine_pvalues` turns them
            into the union's.
        return_decision : bool, default=False
            Also return :meth:`decision_function` of the same samples
            (negative: some detector rejects; :meth:`predict` is ``+1``
            where it is >= 0), from the same pass through the detectors.

        Returns
        -------
        p : ndarray of shape (n_samples,) or (n_samples, n_estimators)
        decision : ndarray of shape (n_samples,)
            Only with ``return_decision=True``.
        """
        self._check_calibrated()
        pvals, decisions = [], []
        for name, est in self.estimators_:
            det, head = _unwrap(est)
            if not hasattr(det, "pvalues"):
                raise TypeError(f"Detector {name!r}: {type(det).__name__} has no pvalues: a "
                                "conformal detector of flipad_sklearn (or a pipeline ending "
                                "in one) is needed.")
            # one pass through the detector's steps for both (FLIPAD: one inversion)
            Xt = _head_transform(head, X)
            pvals.append(det.pvalues(Xt))
            if return_decision:
                decisions.append(det.decision_function(Xt))
        P = np.column_stack(pvals)
        p = P if per_detector else self.combine_pvalues(P)
        return (p, self._combine_decisions(decisions)) if return_decision else p

    def combine_pvalues(self, P):
        """The union's p-values from its detectors' own (Bonferroni's rule).

        Parameters
        ----------
        P : array-like of shape (n_samples, n_estimators)
            The detectors' p-values, one column each in the order of
            ``estimators_``: ``pvalues(X, per_detector=True)``.

        Returns
        -------
        p : ndarray of shape (n_samples,)
            ``pvalues(X)`` (see :meth:`pvalues`).
        """
        check_is_fitted(self)
        P = np.asarray(P, dtype=np.float64)
        if P.ndim != 2 or P.shape[1] != len(self.estimators_):
            raise ValueError(f"P must have one column per detector ({len(self.estimators_)}), "
                             f"got shape {P.shape}.")
        w = np.asarray(self.weights_, dtype=np.float64)
        Q = P / w
        # A detector rejects exactly where p_j <= its fnr_bound_, which is at most its
        # share fnr * w_j when it has enough held-out samples; p_j / w_j can round a
        # hair above fnr there (1/100 / (1/3)): keep such a rejection at fnr.
        bounds = np.array([det._fnr_bound() for det in self._detectors()])
        exact = bounds <= self.fnr * w * (1 + 1e-9)
        Q = np.where((P <= bounds) & exact, np.minimum(Q, self.fnr), Q)
        return np.minimum(1.0, Q.min(axis=1))
