"""Any scikit-learn outlier detector behind the package's conformal rule.

:class:`ConformalDetector` fits a classic detector (IsolationForest,
OneClassSVM, LocalOutlierFactor with ``novelty=True``, or any estimator with
``fit`` and ``score_samples``) on G's samples and thresholds its scores at a
false-negative rate on held-out samples of G, like
:class:`~flipad_sklearn.FLIPADDetector`.
"""

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_labels, flatten_images
from .conformal import CONFORMAL_CONSTRAINTS, ConformalDecisionMixin

__all__ = ["ConformalDetector"]

_FLOATS = [np.float64, np.float32]
_CONFORMAL_CONSTRAINTS = {**CONFORMAL_CONSTRAINTS, "random_state": ["random_state"]}


# ------------------------------------------------------------------ classic detectors
_CLASSIC = {
    "iforest": lambda rs: IsolationForest(n_estimators=100, random_state=rs),
    "ocsvm": lambda rs: OneClassSVM(kernel="rbf", gamma="scale", nu=0.1),
    "lof": lambda rs: LocalOutlierFactor(n_neighbors=20, novelty=True),
}


class ConformalDetector(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """A scikit-learn outlier detector fitted on G's samples, thresholded by fnr.

    Classic detectors are unsupervised and set their own threshold from a
    contamination guess.  Here the wrapped detector is fitted on G's training
    samples only (labelled others, ``y == -1``, are dropped) and its
    ``score_samples`` is thresholded at the conformal ``(1 - fnr)`` rule on
    held-out samples of G, so that all detectors of a benchmark reject the
    same share of G's own samples.

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score_samples`` or \
            {"iforest", "ocsvm", "lof"}, default="iforest"
        Cloned at ``fit``.  Strings: ``IsolationForest()`` (seeded with
        ``random_state``), ``OneClassSVM(gamma="scale", nu=0.1)``,
        ``LocalOutlierFactor(novelty=True)``.
    fnr : float, default=0.005
    validation_size : "auto", int or None, default="auto"
        Samples of G held out for the threshold
        (:func:`flipad_sklearn.detection.conformal.validation_split`): ``"auto"`` as
        many as ``fnr`` needs (at most half of G's samples), an int that many
        (0: none; set the threshold with
        :func:`~flipad_sklearn.detection.conformal.calibrate`), None
        ``validation_fraction`` of them.
    validation_fraction : float, default=0.2
    random_state : int, RandomState instance or None, default=None
        Seeds the split (and the string estimators that take a seed).

    Attributes
    ----------
    estimator_ : estimator
        The fitted detector.
    threshold_, offset_, validation_scores_, n_features_in_
        As in :class:`FingerprintCorrelation`.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> det = ConformalDetector("iforest", fnr=0.05, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])
    array([ 1, -1])
    """

    _parameter_constraints = {
        "estimator": [StrOptions(set(_CLASSIC)), HasMethods(["fit", "score_samples"])],
        **_CONFORMAL_CONSTRAINTS,
    }

    def __init__(self, estimator="iforest", *, fnr=0.005, validation_size="auto",
                 validation_fraction=0.2, random_state=None):
        self.estimator = estimator
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the detector on G's training samples and set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G (dropped), 0 = unlabelled.

        Returns
        -------
        self : ConformalDetector
        """
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        rng = check_random_state(self.random_state)
        train_idx, val_idx = self._validation_split(labels, rng)
        train_idx = train_idx[labels[train_idx] != -1]  # G's (and unlabelled) samples
        if isinstance(self.estimator, str):
            est = _CLASSIC[self.estimator](int(rng.randint(np.iinfo(np.int32).max)))
        else:
            est = clone(self.estimator)
        if isinstance(est, LocalOutlierFactor):
            est.set_params(n_neighbors=min(est.n_neighbors, max(train_idx.size - 1, 1)))
        self.estimator_ = est.fit(X[train_idx])
        self._fit_threshold(X[val_idx], self.estimator_.score_samples)
        return self

    def score_samples(self, X):
        """The wrapped detector's ``score_samples`` (higher = more like G).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64
        """
        check_is_fitted(self)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return np.asarray(self.estimator_.score_samples(X), dtype=np.float64)
