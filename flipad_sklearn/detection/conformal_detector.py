"""Any scikit-learn or PyOD outlier detector behind the package's conformal rule.

:class:`ConformalDetector` fits a classic detector (IsolationForest,
OneClassSVM, LocalOutlierFactor with ``novelty=True``, a shrunk Gaussian, any estimator with
``fit`` and ``score_samples``, or a PyOD detector: ``fit`` and
``decision_function``, higher = more outlying) on G's samples and thresholds
its scores at a false-negative rate on held-out samples of G, like
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
from .gaussian_density import GaussianDensity

__all__ = ["ConformalDetector"]

_FLOATS = [np.float64, np.float32]
_CONFORMAL_CONSTRAINTS = {**CONFORMAL_CONSTRAINTS, "random_state": ["random_state"]}


# ------------------------------------------------------------------ classic detectors
_CLASSIC = {
    "iforest": lambda rs: IsolationForest(n_estimators=100, random_state=rs),
    "ocsvm": lambda rs: OneClassSVM(kernel="rbf", gamma="scale", nu=0.1),
    "lof": lambda rs: LocalOutlierFactor(n_neighbors=20, novelty=True),
    "gaussian": lambda rs: GaussianDensity(),
}


def _score_response(est):
    """How to read a fitted detector's score (higher = more like G).

    ``"score_samples"``: scikit-learn's convention (higher = more normal).
    ``"-decision_function"``: PyOD's ``BaseDetector`` contract, whose
    ``decision_function`` is higher for more outlying samples (and which has
    no ``score_samples``); recognised by PyOD's fitted ``decision_scores_``.
    """
    if callable(getattr(est, "score_samples", None)):
        return "score_samples"
    if callable(getattr(est, "decision_function", None)) \
            and getattr(est, "decision_scores_", None) is not None:
        return "-decision_function"
    raise TypeError(
        f"{type(est).__name__} has no score_samples (scikit-learn's convention: higher "
        "= more normal) and is not a PyOD detector (decision_function higher = more "
        "outlying, with decision_scores_ after fit): the direction of its "
        "decision_function is unknown. Give it a score_samples method (higher = more "
        "like G), or wrap it so that it follows one of the two conventions.")


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
    estimator : estimator with ``fit`` and ``score_samples``, PyOD detector or \
            {"iforest", "ocsvm", "lof", "gaussian"}, default="iforest"
        Cloned at ``fit``.  Strings: ``IsolationForest()`` (seeded with
        ``random_state``), ``OneClassSVM(gamma="scale", nu=0.1)``,
        ``LocalOutlierFactor(novelty=True)``,
        :class:`~flipad_sklearn.GaussianDensity` (a Gaussian with a
        Ledoit-Wolf covariance, scored by its log-density).  A scikit-learn detector is
        scored with ``score_samples`` (higher = more normal).  A PyOD detector
        (``pyod.models``: ``fit`` and ``decision_function``, no
        ``score_samples``, ``decision_scores_`` after fit) is scored with
        ``-decision_function`` (PyOD's is higher = more outlying); its
        ``contamination`` and ``threshold_`` are ignored: the conformal
        threshold at ``fnr`` replaces them.  Its own ``random_state`` is kept
        as given (seed it for reproducible scores).
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
    score_response_ : {"score_samples", "-decision_function"}
        How ``estimator_`` is scored: its ``score_samples`` (scikit-learn) or
        minus its ``decision_function`` (PyOD).
    threshold_, offset_, fnr_bound_, validation_scores_, n_calibration_kinds_, \
            n_features_in_, decision_scores_
        As in :class:`FingerprintCorrelation` (``decision_scores_`` and
        ``labels_``: PyOD's outlier scores and 0/1 labels of ``fit``'s ``X``).

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> det = ConformalDetector("iforest", fnr=0.05, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])
    array([ 1, -1])

    A PyOD detector (``pip install flipad_sklearn[pyod]``)::

        from pyod.models.iforest import IForest
        det = ConformalDetector(IForest(random_state=0), fnr=0.005).fit(X_G)
    """

    _parameter_constraints = {
        "estimator": [StrOptions(set(_CLASSIC)), HasMethods(["fit", "score_samples"]),
                      HasMethods(["fit", "decision_function"])],
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
        self.score_response_ = _score_response(self.estimator_)
        self._fit_threshold(X[val_idx], self._score, X_fit=X, val_idx=val_idx)
        return self

    def _score(self, X):
        # detectors fitted before PyOD support always used score_samples
        if getattr(self, "score_response_", "score_samples") == "-decision_function":
            s = -np.asarray(self.estimator_.decision_function(X), dtype=np.float64)
        else:
            s = np.asarray(self.estimator_.score_samples(X), dtype=np.float64)
        return s.ravel()

    def score_samples(self, X):
        """The wrapped detector's score (higher = more like G).

        ``estimator_.score_samples(X)``, or ``-estimator_.decision_function(X)``
        for a PyOD detector (see ``score_response_``).

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
        return self._score(X)
