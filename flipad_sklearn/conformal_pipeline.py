"""A pipeline whose held-out samples of G fitted none of its steps.

The conformal threshold (:mod:`flipad_sklearn.conformal`) guarantees
``P(rejected) <= fnr`` for a fresh sample of G only if the held-out samples
it is set on are exchangeable with fresh ones.  In a plain
:class:`~sklearn.pipeline.Pipeline` the detector holds them out of its own
training, but the steps before it were fitted on them: FLIPAD's
:class:`~flipad_sklearn.GeneratorStandardScaler` standardises with G's
mean and spread, held-out samples included, so those look more like G than
fresh samples do and the threshold rejects too many of G's own samples
(``benchmarks/bench_pipeline_calibration.py``).  :class:`ConformalPipeline`
holds the samples out before the first step.
"""

import warnings

import numpy as np
import scipy.sparse
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import _num_samples

from ._validation import check_labels
from .conformal import ConformalDecisionMixin
from .exceptions import LabelConventionWarning


class ConformalPipeline(Pipeline):
    """A pipeline ending in a conformal detector whose held-out samples of G fit no step.

    ``fit(X, y)`` draws the detector's held-out samples of G first (its own
    rule: ``fnr``, ``validation_size``, ``validation_fraction`` and
    ``random_state``), fits every step on the other samples (the detector
    with ``validation_size=0``, restored afterwards), then sets the
    threshold on the held-out samples passed through the fitted steps
    (:func:`~flipad_sklearn.conformal.calibrate`).  The fnr guarantee then
    holds for the whole pipeline, not only for its last step.  With
    ``validation_size=0`` on the detector it fits like a plain pipeline and
    waits for :func:`~flipad_sklearn.conformal.calibrate` on fresh samples.

    Everything else is :class:`~sklearn.pipeline.Pipeline`'s (steps,
    indexing, ``set_params``, ``GridSearchCV``); slices are
    ``ConformalPipeline`` too.  :func:`~flipad_sklearn.pipeline.make_flipad`,
    :func:`~flipad_sklearn.pipeline.make_flipad_tabular`,
    :func:`~flipad_sklearn.make_rawpad` and :func:`~flipad_sklearn.make_dctpad`
    return one.

    Parameters
    ----------
    steps, memory, verbose, transform_input
        As in :class:`~sklearn.pipeline.Pipeline`.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler
    >>> from flipad_sklearn.baselines import ConformalDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4))
    >>> pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()),
    ...                           ("det", ConformalDetector(fnr=0.05, random_state=0))])
    >>> pipe.fit(X)[-1].validation_scores_.size   # held out before the scaler
    60
    """


    def fit(self, X, y=None, **params):
        """Fit the steps on all but the detector's held-out samples of G, then calibrate.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training input of the first step.
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled; None: all G's.
        **params : dict
            Fit parameters: passed on as :meth:`sklearn.pipeline.Pipeline.fit`
            does when nothing is held out (the detector's ``validation_size=0``),
            refused otherwise (they would have to be split with the samples).

        Returns
        -------
        self : ConformalPipeline
        """
        if y is not None:
            # one LabelConventionWarning for the pipeline, not one per step reading y
            check_labels(y, _num_samples(X))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LabelConventionWarning)
            return self._fit_holding_out(X, y, **params)

    def _fit_holding_out(self, X, y=None, **params):
        det = self._final_estimator
        if not isinstance(det, ConformalDecisionMixin) or det.validation_size == 0:
            return super().fit(X, y, **params)
        if params:
            # per-sample fit parameters would have to be split with the samples
            raise TypeError("ConformalPipeline.fit takes no fit parameters; fit the steps "
                            "separately, or set the detector's validation_size=0 and "
                            "calibrate on fresh samples of G.")
        if scipy.sparse.issparse(X):
            X = X.tocsr()               # rows to index; the first step validates the rest
        elif not hasattr(X, "iloc"):
            X = np.asarray(X)
        labels = check_labels(y, _num_samples(X))
        # the detector's own rule, on a generator seeded from its random_state: the
        # same seed holds out the same samples
        seed = check_random_state(det.random_state).randint(np.iinfo(np.int32).max)
        train_idx, val_idx = det._validation_split(labels, np.random.RandomState(seed))
        size = det.validation_size
        det.set_params(validation_size=0)
        try:
            super().fit(_safe_indexing(X, train_idx),
                        None if y is None else np.asarray(y)[train_idx])
        finally:
            det.set_params(validation_size=size)
        X_val = self[:-1].transform(_safe_indexing(X, val_idx)) if len(self) > 1 \
            else _safe_indexing(X, val_idx)
        det._fit_threshold(np.asarray(X_val), det.score_samples)
        return self

    @property
    def offset_(self):
        """The detector's ``offset_``: ``decision_function = score_samples - offset_``."""
        return self._final_estimator.offset_

    def fit_predict(self, X, y=None, **params):
        """:meth:`fit`, then :meth:`predict` on ``X`` (+1 made by G, -1 not)."""
        return self.fit(X, y, **params).predict(X)
