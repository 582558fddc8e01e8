"""Attribution over a set of owned generators: conformal prediction sets.

An owner rarely has one model.  :class:`OwnedModelsAttributor` keeps one
conformal detector per owned generator (a FLIPAD pipeline, or any detector
or pipeline of the package ending in one) and answers, for each sample,
with a *set* of models: ``{"G2"}`` ("made by G2"), ``{"G1", "G2"}`` ("by G1
or G2"), or the empty set ("by none of mine").

The guarantee is split-conformal and per model: each detector's threshold is
the conformal ``(1 - fnr)`` quantile of held-out samples of its own model
(:mod:`flipad_sklearn.detection.conformal`), so for a new sample of model ``j``,
``P(j in set) >= 1 - fnr_j``, whatever the other models are.  The set is
not a multi-class classifier's argmax: a sample may be in no set (an
unknown source) or in several (models that look alike).
"""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils import _safe_indexing, metadata_routing
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _num_samples, check_is_fitted, column_or_1d

from ._named import NamedEstimatorsMixin
from .conformal import ConformalDecisionMixin, _head_transform, _unwrap, calibrate
from .union import ConformalUnion

__all__ = ["OwnedModelsAttributor"]


class OwnedModelsAttributor(NamedEstimatorsMixin, ClassifierMixin, MetaEstimatorMixin,
                            BaseEstimator):
    """Which of my generators made this sample?  One conformal detector per model.

    Each owned model ``name`` gets its own detector (a clone of
    ``estimators[name]``), fitted with that model's samples as G (``y = 1``)
    and, as labelled others (``y = -1``), the known other sources and (with
    ``owned_as_negatives``) the samples of the other owned models.  Each
    detector's conformal p-value of "made by model j" is then combined into a
    prediction set: model ``j`` is in the set of ``x`` when its detector
    accepts ``x`` (at its own ``fnr``), or, with ``alpha``, when its p-value
    exceeds ``alpha``.  For a new sample of model ``j``,
    ``P(j in set) >= 1 - fnr_j`` (split-conformal, per model; at least
    ``1/fnr - 1`` held-out samples of model ``j`` are needed for it, see
    :func:`~flipad_sklearn.detection.conformal.required_validation_size`).

    Parameters
    ----------
    estimators : dict {name: estimator} or list of (name, estimator)
        One detector per owned model: a conformal detector of the package
        (:class:`~flipad_sklearn.FLIPADDetector`,
        :class:`~flipad_sklearn.ConformalDetector`, ...), a pipeline ending
        in one, or a :class:`~flipad_sklearn.ConformalUnion` (e.g. the
        open-world union of :func:`~flipad_sklearn.make_open_world_union`,
        whose Bonferroni p-value is the model's); each model's own
        detector (its own final layer).
        Cloned at :meth:`fit`.  To combine detectors fitted elsewhere, use
        :meth:`from_fitted` (or wrap them in
        :class:`sklearn.frozen.FrozenEstimator`).
    fnr : float or None, default=None
        Tolerated false-negative rate of every model's detector (set on the
        clones); None keeps each detector's own ``fnr``.
    owned_as_negatives : bool, default=True
        Use the samples of the other owned models as labelled others of each
        model's detector (they help to tell the owned models apart).  False:
        each detector sees only its model's samples and the known others.
    none_label : str, default="none"
        The label of known other sources in ``y`` and of "none of my models"
        in :meth:`predict`.

    Attributes
    ----------
    estimators_ : dict {name: estimator}
        The fitted detectors.
    classes_ : ndarray of shape (n_models,)
        The model names, in the column order of :meth:`pvalues` and
        :meth:`predict_set`.
    n_features_in_ : int
        Number of features of ``X`` (that of the first model's estimator).

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> from flipad_sklearn.detection.multi import OwnedModelsAttributor
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))])
    >>> y = np.array(["G1"] * 300 + ["G2"] * 300)
    >>> det = ConformalDetector(fnr=0.05, random_state=0)
    >>> attr = OwnedModelsAttributor({"G1": det, "G2": det}).fit(X, y)
    >>> attr.predict([[0.0, 0.0], [6.0, 6.0], [30.0, -30.0]]).tolist()
    ['G1', 'G2', 'none']
    """

    # no set_score_request (score's sample_weight is not routed anywhere)
    __metadata_request__score = {"sample_weight": metadata_routing.UNUSED}

    _parameter_constraints = {
        "estimators": [dict, list],
        "fnr": [None, Interval(Real, 0, 1, closed="neither")],
        "owned_as_negatives": ["boolean"],
        "none_label": [str],
    }

    def __init__(self, estimators, *, fnr=None, owned_as_negatives=True, none_label="none"):
        self.estimators = estimators
        self.fnr = fnr
        self.owned_as_negatives = owned_as_negatives
        self.none_label = none_label

    # ----------------------------------------------------------------- fit
    @staticmethod
    def _model_detector(name, est):
        """The conformal detector of one model: a union (frozen or not) is its own; a
        pipeline ending in a union is refused (its steps would be skipped)."""
        det, head = _unwrap(est)
        if not isinstance(det, (ConformalDecisionMixin, ConformalUnion)):
            raise TypeError(f"Model {name!r}: {type(det).__name__} is not a conformal "
                            "detector of flipad_sklearn (a pipeline ending in one, or a "
                            "ConformalUnion).")
        if isinstance(det, ConformalUnion) and head is not None:
            raise TypeError(f"Model {name!r}: a pipeline ending in a ConformalUnion; put its "
                            "steps inside each of the union's detectors instead.")
        return det

    def _check_names(self):
        return super()._check_names(reserved={self.none_label})

    def fit(self, X, y):
        """Fit one detector per owned model.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples of the owned models and of known other sources, in the
            estimators' input space (images for FLIPAD pipelines).
        y : array-like of shape (n_samples,)
            The source of each sample: the name of the owned model that made
            it, or ``none_label`` (``"none"``) for a known other source (real
            data, someone else's generator).  Any other value is an error.

        Returns
        -------
        self : OwnedModelsAttributor
        """
        self._validate_params()
        pairs = self._check_names()
        names = [n for n, _ in pairs]
        if type_of_target(y) == "continuous":
            raise ValueError(
                "Unknown label type: continuous. y names the source of each sample: "
                f"an owned model ({names}) or none_label={self.none_label!r}.")
        y = column_or_1d(np.asarray(y, dtype=object), warn=True)
        if len(y) != _num_samples(X):
            raise ValueError(f"X has {_num_samples(X)} samples but y has {len(y)} labels.")
        known = set(names) | {self.none_label}
        unknown = sorted({str(v) for v in y if v not in known})
        if unknown:
            raise ValueError(
                f"y contains labels that are neither a model name nor none_label="
                f"{self.none_label!r}: {unknown[:5]}. Label each sample with the owned "
                f"model that made it ({names}) or with {self.none_label!r} for a known "
                "other source.")
        for name, est in pairs:
            self._model_detector(name, est)
        self.estimators_ = {}
        for name, est in pairs:
            own = y == name
            if own.sum() < 2:
                raise ValueError(f"Model {name!r} has {int(own.sum())} samples in y; at "
                                 "least 2 are needed (several hundred recommended).")
            keep = np.ones(len(y), bool) if self.owned_as_negatives \
                else own | (y == self.none_label)
            y_m = np.where(own, 1, -1)[keep]
            fitted = clone(est)
            if self.fnr is not None and isinstance(fitted, ConformalUnion):
                fitted.set_params(fnr=self.fnr)     # the union shares it among its detectors
            elif self.fnr is not None and not isinstance(fitted, FrozenEstimator):
                det, _ = _unwrap(fitted)
                det.set_params(fnr=self.fnr)
            X_m = X if keep.all() else _safe_indexing(X, np.flatnonzero(keep))
            self.estimators_[name] = fitted.fit(X_m, y_m)
        self._set_classes(names)
        return self

    @classmethod
    def from_fitted(cls, estimators, **params):
        """An attributor over detectors already fitted (e.g. loaded from files); no refit.

        Parameters
        ----------
        estimators : dict {name: fitted estimator} or list of (name, estimator)
        **params
            Further parameters (``owned_as_negatives`` has no effect).

        Returns
        -------
        attributor : OwnedModelsAttributor
            Fitted: ``estimators_`` are the given estimators themselves.
        """
        self = cls(estimators, **params)
        self._validate_params()
        pairs = self._check_names()
        for name, est in pairs:
            check_is_fitted(self._model_detector(name, est))
            if self.fnr is not None:
                raise ValueError("from_fitted keeps each detector's own fnr (pass fnr=None);"
                                 " recalibrate with OwnedModelsAttributor.calibrate.")
        self.estimators_ = dict(pairs)
        self._set_classes([n for n, _ in pairs])
        return self

    def _set_classes(self, names):
        self.classes_ = np.array(names, dtype=object)

    @property
    def n_features_in_(self):
        """Number of features the detectors were fitted on (that of the first model's)."""
        check_is_fitted(self, "estimators_")
        return next(iter(self.estimators_.values())).n_features_in_

    def calibrate(self, samples, *, n_samples="auto", fnr=None, each_kind=False):
        """Set the models' thresholds on fresh samples of each, without refitting.

        Parameters
        ----------
        samples : dict {name: array-like or callable}
            Fresh samples of each model (or a sampler ``f(n) -> n samples``),
            see :func:`flipad_sklearn.detection.conformal.calibrate`.  Models not in
            the dict keep their threshold.
        n_samples : "auto" or int, default="auto"
        fnr : float in (0, 1) or None, default=None
            A new fnr for the calibrated models (None: each keeps its own); a
            union's detectors each get their share of it.
        each_kind : bool, default=False
            Models trained on a mixture of perturbations: the fnr under each
            kind of it, see :func:`flipad_sklearn.detection.conformal.calibrate`.

        Returns
        -------
        self
        """
        check_is_fitted(self)
        if fnr is not None and (isinstance(fnr, bool) or not isinstance(fnr, Real)
                                or not 0 < fnr < 1):
            raise ValueError(f"fnr must be None or a number in (0, 1), got {fnr!r}.")
        if not isinstance(each_kind, (bool, np.bool_)):
            raise TypeError(f"each_kind must be True or False, got {each_kind!r}.")
        unknown = [name for name in samples if name not in self.estimators_]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not one of the models {list(self.classes_)}.")
        for name, X in samples.items():
            det, _ = _unwrap(self.estimators_[name])
            if isinstance(det, ConformalUnion):
                if fnr is not None:
                    det.set_params(fnr=fnr)         # each detector at its share of it
                det.calibrate(X, n_samples=n_samples, each_kind=each_kind)
            else:
                calibrate(self.estimators_[name], X, n_samples=n_samples, fnr=fnr,
                          each_kind=each_kind)
        return self

    # ------------------------------------------------------------- predict
    def _verdicts(self, X):
        """Per model: the p-values of ``X``, whether its detector accepts each sample and
        the value that ranks the models of a set (one pass through each model's steps:
        for FLIPAD, one inversion per sample)."""
        check_is_fitted(self)
        out = []
        for name in self.classes_:
            det, head = _unwrap(self.estimators_[name])
            if isinstance(det, ConformalUnion):
                P, decision = det.pvalues(X, per_detector=True, return_decision=True)
                # the union's p-value is capped at 1, where many of G's samples lie: the
                # uncapped ratio min_j p_j / w_j ranks them
                ratio = (P / np.asarray(det.weights_, dtype=np.float64)).min(axis=1)
                out.append((det.combine_pvalues(P), decision >= 0, ratio))
                continue
            det._check_calibrated()
            s = det.score_samples(_head_transform(head, X))
            p = det._pvalues_of_scores(s)
            out.append((p, s - det.offset_ >= 0, p))
        return out

    def pvalues(self, X):
        """Conformal p-value of "made by model j", for every model.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        p : ndarray of shape (n_samples, n_models)
            Column ``j`` for ``classes_[j]``; for a new sample of model ``j``,
            ``P(p[:, j] <= a) <= a``.
        """
        return np.column_stack([v[0] for v in self._verdicts(X)])

    @staticmethod
    def _check_alpha(alpha):
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, Real)
                                  or not 0 <= alpha < 1):
            raise ValueError(f"alpha must be None or a number in [0, 1), got {alpha!r}.")

    @staticmethod
    def _sets(verdicts, alpha):
        if alpha is None:
            return np.column_stack([accepted for _, accepted, _ in verdicts])
        return np.column_stack([p > alpha for p, _, _ in verdicts])

    def predict_set(self, X, alpha=None, *, as_sets=False):
        """Prediction sets: which of my models may have made each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        alpha : float in [0, 1) or None, default=None
            None: model ``j`` is in the set when its detector accepts the
            sample (its own ``fnr`` and threshold; coverage >= 1 - fnr_j).
            A number: when its p-value exceeds ``alpha`` (coverage >=
            1 - alpha for each model).
        as_sets : bool, default=False
            Return a list of sets of names instead of the boolean matrix.

        Returns
        -------
        sets : ndarray of shape (n_samples, n_models), bool, or list of set
            ``sets[i, j]``: model ``classes_[j]`` is in the set of sample
            ``i``.  An empty row: "made by none of my models".
        """
        self._check_alpha(alpha)
        member = self._sets(self._verdicts(X), alpha)
        if as_sets:
            return [set(self.classes_[row].tolist()) for row in member]
        return member

    def predict(self, X):
        """The most likely owned model of each sample, or ``none_label``.

        Among the models of the prediction set (``alpha=None``), the one with
        the largest p-value (a union's: see :meth:`attribute`);
        ``none_label`` when the set is empty.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        labels : ndarray of shape (n_samples,), object
        """
        return self.attribute(X).labels

    def attribute(self, X, alpha=None):
        """p-values, prediction sets and labels from one pass over ``X``.

        Each model's pipeline transforms ``X`` once (the inversion is the
        costly part); :meth:`pvalues`, :meth:`predict_set` and
        :meth:`predict` each make that pass.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        alpha : float in [0, 1) or None, default=None
            As in :meth:`predict_set`; the labels are taken from these sets.

        Returns
        -------
        result : sklearn.utils.Bunch
            ``pvalues`` (n_samples, n_models), ``sets`` (n_samples, n_models)
            bool and ``labels`` (n_samples,): the model of the set with the
            largest p-value, or ``none_label`` for an empty set.  A union's
            p-value is capped at 1: its models are ranked by the uncapped
            ``min_j p_j / w_j``; equal values go to the model listed first.
        """
        from sklearn.utils import Bunch

        self._check_alpha(alpha)
        verdicts = self._verdicts(X)
        member = self._sets(verdicts, alpha)
        p = np.column_stack([v[0] for v in verdicts])
        rank = np.column_stack([v[2] for v in verdicts])
        best = np.argmax(np.where(member, rank, -1.0), axis=1)
        labels = np.array(self.classes_[best], dtype=object)
        labels[~member.any(axis=1)] = self.none_label
        return Bunch(pvalues=p, sets=member, labels=labels)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags
