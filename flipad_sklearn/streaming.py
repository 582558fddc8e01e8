"""Inversion and feature reduction batch by batch: memory bounded by one batch.

A 512x512 Stable Diffusion image has 33.5M penultimate activations (134 MB in
float32); the inverted activations of a few thousand such images do not fit in
memory, although the features FLIPAD keeps (a centre crop of a few channels)
are small.  :class:`StreamingFeatures` chains the inversion and the reduction
steps like a :class:`~sklearn.pipeline.Pipeline`, but runs them on one batch of
samples at a time and keeps only the reduced features.

Fitting the reduction steps needs statistics over all samples; they are
accumulated in streaming passes over the data:

* steps without statistics (:class:`~flipad_sklearn.ActivationPooling`,
  :class:`~flipad_sklearn.DCTFeatures`, ``FunctionTransformer``) are fitted on
  the first batch (their ``fit`` reads only the shape);
* :class:`~flipad_sklearn.ChannelSelector`: per-class sums of every feature
  (the channel means of G's samples, ``y == 1``, and of the others,
  ``y == -1``);
* :class:`~flipad_sklearn.GeneratorStandardScaler` and any step with
  ``partial_fit``: ``partial_fit`` batch by batch.  A scaler right after a
  ``ChannelSelector`` is fitted in the selector's pass: the moments of every
  feature are accumulated and the selected ones kept, so FLIPAD's
  ``pool -> select -> scale`` costs one inversion pass at ``fit``.

Each further pass inverts the data again; ``fit_transform`` (what a Pipeline
calls) is ``fit`` followed by ``transform``.
"""

from numbers import Integral

import numpy as np
from scipy.sparse import issparse
from sklearn.base import TransformerMixin, _fit_context, clone
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import check_array, check_is_fitted

from ._validation import check_labels, normal_mask
from .features import ActivationPooling, ChannelSelector, DCTFeatures, GeneratorStandardScaler

__all__ = ["StreamingFeatures"]

_STATELESS = (ActivationPooling, DCTFeatures, FunctionTransformer)


def _is_skipped(est):
    return est is None or (isinstance(est, str) and est == "passthrough")


class StreamingFeatures(TransformerMixin, _BaseComposition):
    """Invert and reduce batch by batch; keep only the reduced features.

    Equivalent to ``Pipeline([("inv", inverter), *steps])`` followed by its
    ``transform`` (the same numbers, up to the rounding of accumulated
    statistics), but at most ``batch_size`` samples are inverted at a time
    and only the reduced features of all samples are held.  Use it as the
    first step of a :class:`~sklearn.pipeline.Pipeline` ending in
    :class:`~flipad_sklearn.FLIPADDetector`; its parameters tune with
    ``GridSearchCV`` as ``<name>__inverter__alpha`` or
    ``<name>__<step>__<param>``, and it pickles like a Pipeline.

    Parameters
    ----------
    inverter : estimator with fit and transform
        Typically :class:`~flipad_sklearn.FinalLayerInverter`.  Cloned at
        ``fit`` and fitted on the first batch (the inverter's ``fit`` reads
        only shapes).
    steps : list of (str, estimator) or None, default=None
        Reduction steps applied in order to the inverter's output, e.g.
        ``[("pool", ActivationPooling(...)), ("select", ChannelSelector(3)),
        ("scaler", GeneratorStandardScaler())]``.  Supported: steps without
        statistics (``ActivationPooling``, ``DCTFeatures``,
        ``FunctionTransformer``), ``ChannelSelector`` and steps with
        ``partial_fit``.  ``"passthrough"`` or None skips a step.  Cloned at
        ``fit``.
    batch_size : int, default=256
        Samples inverted and reduced together: bounds the memory of the
        activations to one batch.
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    inverter_ : estimator
        The fitted inverter.
    steps_ : list of (str, estimator)
        The fitted reduction steps.
    n_passes_ : int
        Inversion passes over the data that ``fit`` needed.
    n_iter_ : ndarray of shape (n_samples,)
        Iterations per sample in the last ``transform`` (when the inverter
        records them).
    duality_gap_ : ndarray of shape (n_samples,)
        Certificate per sample in the last ``transform`` (when the inverter
        records them).
    n_features_in_ : int
        Number of flat input features.

    Examples
    --------
    >>> from sklearn.pipeline import Pipeline
    >>> from flipad_sklearn import (ActivationPooling, ChannelSelector, FLIPADDetector,
    ...                             FinalLayerInverter, GeneratorStandardScaler)
    >>> from flipad_sklearn.streaming import StreamingFeatures
    >>> feats = StreamingFeatures(
    ...     FinalLayerInverter(layer, anchor=anchor),
    ...     [("crop", ActivationPooling(method="center_crop", crop_size=128)),
    ...      ("select", ChannelSelector(3)), ("scaler", GeneratorStandardScaler())],
    ...     batch_size=16)  # doctest: +SKIP
    >>> pipe = Pipeline([("feat", feats), ("det", FLIPADDetector())])  # doctest: +SKIP
    >>> pipe.fit(X, y)  # doctest: +SKIP
    """

    _parameter_constraints = {
        "inverter": [HasMethods(["fit", "transform"])],
        "steps": [list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(self, inverter=None, steps=None, *, batch_size=256, verbose=0):
        self.inverter = inverter
        self.steps = steps
        self.batch_size = batch_size
        self.verbose = verbose

    # ------------------------------------------------------- parameters
    def get_params(self, deep=True):
        """Parameters, with ``<step>__<param>`` of the steps when ``deep``."""
        return self._get_params("steps", deep=deep)

    def set_params(self, **params):
        """Set parameters, including ``<step>__<param>`` and ``inverter__<param>``."""
        self._set_params("steps", **params)
        return self

    def _check_steps(self):
        steps = [] if self.steps is None else list(self.steps)
        for item in steps:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError(f"steps must be a list of (name, estimator) tuples; got "
                                f"{item!r}.")
        names = [name for name, _ in steps]
        self._validate_names(names)
        for name, est in steps:
            if _is_skipped(est):
                continue
            if not (hasattr(est, "fit") and hasattr(est, "transform")):
                raise TypeError(f"Step {name!r} ({type(est).__name__}) has no fit and "
                                "transform.")
            if not (isinstance(est, (_STATELESS, ChannelSelector))
                    or hasattr(est, "partial_fit")):
                raise TypeError(
                    f"Step {name!r} ({type(est).__name__}) cannot be fitted batch by "
                    "batch: supported are ActivationPooling, DCTFeatures, "
                    "FunctionTransformer (no statistics), ChannelSelector and steps with "
                    "partial_fit (GeneratorStandardScaler, StandardScaler, ...). Fit it "
                    "after StreamingFeatures in the Pipeline instead: the reduced "
                    "features are small.")
        return [(name, est) for name, est in steps if not _is_skipped(est)]

    @staticmethod
    def _check_X(X):
        # slicing keeps a memmap or an HDF5-like array on disk: no validation of
        # the whole array here, each batch is validated by _check_batch
        if issparse(X):
            raise TypeError("StreamingFeatures does not accept sparse input; pass a dense "
                            "array (a numpy.memmap keeps it on disk).")
        if not (hasattr(X, "shape") and hasattr(X, "__getitem__")):
            X = np.asarray(X)
        if len(X.shape) < 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features) or 4-D (n_samples, "
                             f"C, H, W); got shape {tuple(X.shape)}. Reshape your data "
                             "with X.reshape(-1, 1) for a single feature or "
                             "X.reshape(1, -1) for a single sample.")
        if X.shape[0] < 1:
            raise ValueError("X has 0 samples; at least 1 is needed.")
        return X

    def _check_batch(self, Xb):
        """One batch as finite floats with ``n_features_in_`` features, its shape kept."""
        Xb = np.asarray(Xb)
        flat = check_array(Xb.reshape(Xb.shape[0], -1), dtype=[np.float64, np.float32],
                           input_name="X")
        if flat.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {flat.shape[1]} features, but StreamingFeatures is "
                             f"expecting {self.n_features_in_} features as input.")
        return flat.reshape(Xb.shape)

    def _batches(self, n, desc):
        batches = list(gen_batches(n, self.batch_size))
        if not self.verbose:
            return batches
        from tqdm.auto import tqdm

        return tqdm(batches, desc=desc, unit="batch")

    # -------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the inverter and the reduction steps in streaming passes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Generator outputs; a ``numpy.memmap`` stays on disk (only one
            batch is read at a time).  Each batch read is checked (dense,
            finite numbers); a pass without statistics to gather reads only
            the first batch.
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled.

        Returns
        -------
        self : StreamingFeatures
        """
        steps = [(name, clone(est)) for name, est in self._check_steps()]
        X = self._check_X(X)
        n = X.shape[0]
        labels = check_labels(y, n)
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        inv = clone(self.inverter).fit(self._check_batch(X[:min(self.batch_size, n)]),
                                       None if y is None else labels[:self.batch_size])
        fitted = [False] * len(steps)
        self.n_passes_ = 0
        while not all(fitted):
            self.n_passes_ += 1
            self._fit_pass(X, labels, inv, steps, fitted)
        self.inverter_ = inv
        self.steps_ = steps
        return self

    def _fit_pass(self, X, labels, inv, steps, fitted):
        """One pass: fit the stateless steps up to the first step that needs
        statistics, accumulate those, and fit it (and a scaler right after a
        selector) at the end."""
        acc = None                      # (index of the step being accumulated, state)
        for sl in self._batches(X.shape[0], f"fit pass {self.n_passes_}"):
            Z = inv.transform(self._check_batch(X[sl]))
            lab = labels[sl]
            for j, (_, est) in enumerate(steps):
                if fitted[j]:
                    Z = est.transform(Z)
                    continue
                if isinstance(est, _STATELESS):
                    est.fit(Z, lab)
                    fitted[j] = True
                    Z = est.transform(Z)
                    continue
                if acc is None:
                    acc = (j, _Accumulator(est, steps[j + 1][1] if j + 1 < len(steps)
                                           else None, labels))
                acc[1].update(Z, lab)
                break
            if acc is None:             # every step was stateless: one batch is enough
                break
        if acc is not None:
            j, state = acc
            n_fitted = state.finish()
            for k in range(j, j + n_fitted):
                fitted[k] = True

    # -------------------------------------------------------- transform
    def transform(self, X):
        """Invert and reduce each batch; return the reduced features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Each batch is checked: dense, finite numbers, ``n_features_in_``
            features per sample.

        Returns
        -------
        X_out : ndarray of shape (n_samples, n_reduced_features)
        """
        check_is_fitted(self, "steps_")
        X = self._check_X(X)
        parts, n_iter, gaps = [], [], []
        for sl in self._batches(X.shape[0], "streaming transform"):
            Z = self.inverter_.transform(self._check_batch(X[sl]))
            for k in ("n_iter_", "duality_gap_"):
                if hasattr(self.inverter_, k):
                    (n_iter if k == "n_iter_" else gaps).append(getattr(self.inverter_, k))
            for _, est in self.steps_:
                Z = est.transform(Z)
            parts.append(Z)
        if n_iter:
            self.n_iter_ = np.concatenate(n_iter)
        if gaps:
            self.duality_gap_ = np.concatenate(gaps)
        return np.concatenate(parts)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class _Accumulator:
    """Statistics of one step (and a scaler right after a selector) over a pass."""

    def __init__(self, est, next_est, labels):
        self.est = est
        self.selector = isinstance(est, ChannelSelector)
        self.next_scaler = next_est if (self.selector and isinstance(
            next_est, GeneratorStandardScaler)) else None
        self.needs_normal = isinstance(est, GeneratorStandardScaler) \
            or self.next_scaler is not None
        # the rows that stand for G are decided over the whole data, as fit does
        self.normal = normal_mask(labels) if self.needs_normal else None
        self.offset = 0
        self.sums = {}
        self.shape = None
        self.moments = None

    def update(self, Z, lab):
        rows = slice(self.offset, self.offset + Z.shape[0])
        self.offset += Z.shape[0]
        if self.selector:
            if self.shape is None:
                self.shape = Z.shape[1:]
            flat = Z.reshape(Z.shape[0], -1)
            for cls in (1, -1):
                m = lab == cls
                if m.any():
                    s, c = self.sums.get(cls, (0.0, 0))
                    self.sums[cls] = (s + flat[m].sum(axis=0, dtype=np.float64),
                                      c + int(m.sum()))
            if self.next_scaler is not None:
                self._update_moments(flat[self.normal[rows]])
        elif isinstance(self.est, GeneratorStandardScaler):
            B = Z[self.normal[rows]]
            if B.shape[0]:
                self.est.partial_fit(B)
        else:
            self.est.partial_fit(Z, lab)

    def _update_moments(self, B):
        if self.moments is None:
            self.moments = GeneratorStandardScaler(eps=self.next_scaler.eps)
        if B.shape[0]:
            self.moments.partial_fit(B)

    def finish(self):
        """Fit from the statistics; return the number of steps fitted."""
        if not self.selector:
            if isinstance(self.est, GeneratorStandardScaler) and \
                    not hasattr(self.est, "mean_"):
                raise ValueError("No sample of G reached the scaler.")
            return 1
        # ChannelSelector scores |mean_G - mean_others| per channel over samples and
        # positions: fitting it on the per-feature means of each class (one row per
        # class) gives the same channel means, hence the same selection
        rows, ys = [], []
        for cls in (1, -1):
            if cls in self.sums:
                s, c = self.sums[cls]
                rows.append(s / c)
                ys.append(cls)
        if not rows:                      # all unlabelled: the selector keeps everything
            rows, ys = [np.zeros(int(np.prod(self.shape)))], [0]
        M = np.stack(rows).reshape((len(rows),) + tuple(self.shape))
        self.est.fit(M, np.asarray(ys))
        if self.next_scaler is None:
            return 1
        if self.moments is None or self.moments.n_samples_seen_ == 0:
            raise ValueError("No sample of G reached the scaler.")
        keep = self.est.get_support()
        self.next_scaler._set_moments(self.moments.n_samples_seen_,
                                      self.moments.mean_[keep], self.moments._m2[keep],
                                      min_n=1)
        self.next_scaler.n_features_in_ = int(keep.sum())
        return 2
