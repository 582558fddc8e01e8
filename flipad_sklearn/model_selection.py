"""Cross-validation with FLIPAD's labels: 1 = made by G, -1 = known others, 0 = unlabelled.

:class:`~sklearn.model_selection.GridSearchCV` with ``scoring="roc_auc"`` goes
wrong in two silent ways on a FLIPAD pipeline:

* the detector is not a classifier, so the default ``cv`` is a plain
  :class:`~sklearn.model_selection.KFold`: with ``y`` sorted (G's samples
  first) some test folds hold no sample of G or no other sample, and their
  ROC AUC is ``nan``;
* ``roc_auc`` compares the scores with ``y`` itself, so an unlabelled sample
  (``y = 0``) is a third class and every fold fails.

:class:`LabelStratifiedKFold` puts samples of G and known others in every
test fold, and :func:`labelled_roc_auc` scores the labelled samples of a fold
only (unlabelled ones still train the detector)::

    search = GridSearchCV(pipe, {"inv__alpha": [1e-4, 5e-4, 1e-3]},
                          scoring=labelled_roc_auc, cv=LabelStratifiedKFold(3))
"""

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import column_or_1d

__all__ = ["LabelStratifiedKFold", "labelled_roc_auc"]

_CONVENTION = "1 = made by G, -1 = known not made by G, 0 = unlabelled"


def _check_flipad_labels(y, what):
    if y is None:
        raise ValueError(f"{what} needs the labels y ({_CONVENTION}).")
    y = column_or_1d(y)
    if y.dtype.kind not in "biuf" or not np.all(np.isin(y, (-1, 0, 1))):
        bad = np.unique(y[~np.isin(y, (-1, 0, 1))])[:5] if y.dtype.kind in "biuf" else y.dtype
        raise ValueError(f"{what}: y must hold only 1, -1 and 0 ({_CONVENTION}); found {bad}.")
    return y.astype(np.int64)


class LabelStratifiedKFold(StratifiedKFold):
    """Stratified K-fold over FLIPAD's labels 1 / -1 / 0.

    Each test fold gets its share of G's samples (``y = 1``), of the known
    others (``y = -1``) and of the unlabelled samples (``y = 0``), so that
    the ROC AUC of every fold is defined.  It refuses ``y`` with fewer than
    ``n_splits`` samples of G or of known others, which would leave a fold
    without one of them.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Shuffle each label's samples before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle (with ``shuffle=True``).

    See Also
    --------
    labelled_roc_auc : the matching scorer.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.model_selection import LabelStratifiedKFold
    >>> y = np.r_[np.ones(6), -np.ones(6)]            # sorted: G first
    >>> [sorted(set(y[test])) for _, test in LabelStratifiedKFold(3).split(y, y)]
    [[-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]]
    """

    def split(self, X, y, groups=None):
        """Indices of the training and test samples of each fold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            1 = made by G, -1 = known not made by G, 0 = unlabelled.
        groups : None
            Ignored.

        Yields
        ------
        train : ndarray
        test : ndarray
        """
        labels = _check_flipad_labels(y, "LabelStratifiedKFold")
        for value, name in ((1, "samples of G (y=1)"), (-1, "known others (y=-1)")):
            count = int(np.sum(labels == value))
            if count < self.n_splits:
                raise ValueError(
                    f"LabelStratifiedKFold(n_splits={self.n_splits}): y has {count} "
                    f"{name}; every test fold needs one, so at least {self.n_splits} "
                    "are needed (use fewer splits or more labelled samples)."
                )
        return super().split(X, labels, groups)


def labelled_roc_auc(estimator, X, y):
    """ROC AUC of ``decision_function`` on the labelled samples: a scorer.

    Use as ``scoring=labelled_roc_auc`` in
    :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_val_score`.  G's samples
    (``y = 1``) are the positives, known others (``y = -1``) the negatives;
    unlabelled samples (``y = 0``) are left out of the score (their source is
    unknown) but may still be in the training folds.

    Parameters
    ----------
    estimator : fitted estimator with ``decision_function``
        E.g. a pipeline ending in :class:`~flipad_sklearn.FLIPADDetector`.
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
        1 = made by G, -1 = known not made by G, 0 = unlabelled.

    Returns
    -------
    auc : float

    Raises
    ------
    ValueError
        If the labelled samples of the fold lack G's samples or known others
        (use :class:`LabelStratifiedKFold`).
    """
    labels = _check_flipad_labels(y, "labelled_roc_auc")
    labelled = labels != 0
    positives = int(np.sum(labels == 1))
    negatives = int(np.sum(labels == -1))
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"labelled_roc_auc: this test fold has {positives} samples of G (y=1) and "
            f"{negatives} known others (y=-1); ROC AUC needs both. Use "
            "cv=LabelStratifiedKFold(...) so that every fold has them."
        )
    scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
    return float(roc_auc_score(labels[labelled] == 1, scores[labelled]))
