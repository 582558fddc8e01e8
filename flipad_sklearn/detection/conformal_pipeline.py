"""A pipeline whose held-out samples of G fitted none of its steps.

The conformal threshold (:mod:`flipad_sklearn.detection.conformal`) guarantees
``P(rejected) <= fnr`` for a fresh sample of G only if the held-out samples
it is set on are exchangeable with fresh ones.  In a plain
:class:`~sklearn.pipeline.Pipeline` the detector holds them out of its own
training, but the steps before it were fitted on them: FLIPAD's
:class:`~flipad_sklearn.GeneratorStandardScaler` standardises with G's
mean and spread, held-out samples included, so those look more like G than
fresh samples do and the threshold rejects too many of G's own samples
(``benchmarks/results/pipeline_calibration.md``).  :class:`ConformalPipeline`
holds the samples out before the first step.
"""

import warnings

import numpy as np
import scipy.sparse
from sklearn.pipeline import Pipeline, _final_estimator_has
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples

from .._validation import check_labels
from ..activations import check_value_range
from .conformal import ConformalDecisionMixin
from ..exceptions import InputContractWarning, LabelConventionWarning

#: Levels of an 8-bit image: ``quantize="uint8"`` rounds to ``low + k (high - low) / 255``.
UINT8_LEVELS = 255
# Fewest values for "every value on the 8-bit grid" to tell 8-bit images from floats
# (a float lands within GRID_TOL of a level with probability 2 GRID_TOL).
MIN_VALUES_GRID = 64
GRID_TOL = 1e-3


def _final_has_pvalues(pipeline):
    """``available_if`` check: the last step has ``pvalues`` (else AttributeError)."""
    getattr(pipeline._final_estimator, "pvalues")
    return True


class ConformalPipeline(Pipeline):
    """A pipeline ending in a conformal detector whose held-out samples of G fit no step.

    ``fit(X, y)`` draws the detector's held-out samples of G first (its own
    rule: ``fnr``, ``validation_size``, ``validation_fraction`` and
    ``random_state``), fits every step on the other samples (the detector
    with ``validation_size=0``, restored afterwards), then sets the
    threshold on the held-out samples passed through the fitted steps
    (:func:`~flipad_sklearn.detection.conformal.calibrate`).  The fnr guarantee then
    holds for the whole pipeline, not only for its last step.  With
    ``validation_size=0`` on the detector it fits like a plain pipeline and
    waits for :func:`~flipad_sklearn.detection.conformal.calibrate` on fresh samples.

    Everything else is :class:`~sklearn.pipeline.Pipeline`'s (steps,
    indexing, ``set_params``, ``GridSearchCV``); slices are
    ``ConformalPipeline`` too.  :func:`~flipad_sklearn.pipeline.make_flipad`,
    :func:`~flipad_sklearn.pipeline.make_flipad_tabular`,
    :func:`~flipad_sklearn.make_rawpad` and :func:`~flipad_sklearn.make_dctpad`
    return one.

    **Input contract.**  An image detector should be trained on what it will
    score: images as they are published, 8-bit files.  A pipeline fitted on
    G's float outputs rejects G's own images once they are saved as 8-bit
    PNG files (issue 27: the demo GAN's acceptance fell from 1.000 to 0.000
    at fnr 0.005), because the quantisation alone moves them out of the
    accepted region.  With ``input_range`` and ``quantize="uint8"`` every
    input, at fit and at predict, is first rounded to the 256 levels of
    ``input_range`` (what saving as an 8-bit image does), so G's float
    outputs and G's published files get the same verdict; float inputs are
    quantised without a warning, since that is their published form.  With
    ``quantize=None`` inputs are used as they are, and a pipeline fitted on
    unquantised floats warns (:class:`~flipad_sklearn.InputContractWarning`)
    when it is given 8-bit images, and one fitted on 8-bit images warns when
    given floats between the levels.  Values outside ``input_range`` warn
    (:class:`~flipad_sklearn.OutOfRangeWarning`) in both cases.  What the
    pipeline was fitted on is recorded in ``input_contract_``.  The contract
    applies to the first step's input: slices that keep the first step keep
    it, ``pipe[1:]`` (on precomputed activations) has none.

    Parameters
    ----------
    steps, memory, verbose, transform_input
        As in :class:`~sklearn.pipeline.Pipeline`.
    input_range : (float, float) or None, default=None
        The value range of the inputs (a generator's output range: ``(-1, 1)``
        for tanh, ``(0, 1)`` for sigmoid); None: no range, no contract
        (tabular data, activations).
    quantize : {"uint8"} or None, default=None
        ``"uint8"``: round every input to the 256 levels of ``input_range``
        (needs ``input_range``); None: use inputs as they are.

    Attributes
    ----------
    input_contract_ : dict
        Set by ``fit`` when ``input_range`` is given: ``"range"``,
        ``"quantize"`` and ``"quantized_input"`` (whether the training inputs
        were all on the 8-bit grid of the range; None with fewer than 64
        values, too few to tell).

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4))
    >>> pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()),
    ...                           ("det", ConformalDetector(fnr=0.05, random_state=0))])
    >>> pipe.fit(X)[-1].validation_scores_.size   # held out before the scaler
    60
    """

    def __init__(self, steps, *, input_range=None, quantize=None, transform_input=None,
                 memory=None, verbose=False):
        super().__init__(steps, transform_input=transform_input, memory=memory,
                         verbose=verbose)
        self.input_range = input_range
        self.quantize = quantize

    def __setstate__(self, state):
        # pipelines saved before the input contract existed: no contract
        state = dict(state)
        state.setdefault("input_range", None)
        state.setdefault("quantize", None)
        super().__setstate__(state)

    # ------------------------------------------------------------ contract
    def _range(self):
        rng = getattr(self, "input_range", None)     # files saved before issue 27
        quantize = getattr(self, "quantize", None)
        if quantize not in (None, "uint8"):
            raise ValueError(f"quantize must be 'uint8' or None, got {quantize!r}.")
        if rng is None:
            if quantize is not None:
                raise ValueError("quantize='uint8' needs input_range=(low, high): the "
                                 "range whose 256 levels the inputs are rounded to.")
            return None
        low, high = (float(v) for v in rng)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"input_range must be two finite numbers low < high, got "
                             f"{rng!r}.")
        return low, high

    def _contract(self, X, fitting=False):
        """Apply the input contract to ``X`` (see the class docstring)."""
        rng = self._range()
        if rng is None or scipy.sparse.issparse(X) or hasattr(X, "iloc"):
            return X
        Xa = np.asarray(X)
        if Xa.dtype.kind != "f":
            return X            # integers: the first step's own check (a clear refusal)
        low, high = rng
        finite = Xa[np.isfinite(Xa)] if not np.all(np.isfinite(Xa)) else Xa
        check_value_range(finite, low, high, what="the pipeline",
                          name="its input_range",
                          scaling="Scale the inputs to input_range (8-bit pixels p: "
                                  f"low + p * (high - low) / 255 = {low:g} + p * "
                                  f"{(high - low) / UINT8_LEVELS:.6g}).")
        on_grid = _on_grid(finite, low, high)
        quantize = getattr(self, "quantize", None)
        if fitting:
            self.input_contract_ = {"range": (low, high), "quantize": quantize,
                                    "quantized_input": on_grid}
        elif quantize is None and on_grid is not None:
            fitted = getattr(self, "input_contract_", {}).get("quantized_input")
            if fitted is False and on_grid:
                warnings.warn(
                    f"X looks like 8-bit images (every value on one of the 256 levels of "
                    f"[{low:g}, {high:g}]), but this pipeline was fitted on unquantised "
                    "float outputs: the quantisation alone can move G's own images out "
                    "of the accepted region (the fnr guarantee does not cover them). "
                    "Refit with quantize='uint8' (make_flipad's default for images), "
                    "which trains and scores on 8-bit images.",
                    InputContractWarning, stacklevel=3)
            elif fitted is True and not on_grid:
                warnings.warn(
                    f"X holds values between the 256 levels of [{low:g}, {high:g}] (float "
                    "outputs?), but this pipeline was fitted on 8-bit images: its fnr "
                    "guarantee covers 8-bit images. Quantise the inputs (np.round) or "
                    "refit with quantize='uint8'.",
                    InputContractWarning, stacklevel=3)
        if quantize == "uint8":
            step = (high - low) / UINT8_LEVELS
            # in float64: a float32 step would move 0 of [0, 1] images to level 127
            levels = np.rint((Xa.astype(np.float64) - low) * (UINT8_LEVELS / (high - low)))
            Xq = np.clip(levels, 0, UINT8_LEVELS) * step + low
            return Xq.astype(Xa.dtype, copy=False)
        return X

    def __getitem__(self, ind):
        """A step, or a sub-pipeline; a slice keeping the first step keeps the contract."""
        out = super().__getitem__(ind)
        if isinstance(ind, slice) and isinstance(out, ConformalPipeline) \
                and ind.start in (None, 0):
            out.input_range = getattr(self, "input_range", None)
            out.quantize = getattr(self, "quantize", None)
            if hasattr(self, "input_contract_"):
                out.input_contract_ = self.input_contract_
        return out

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
        X = self._contract(X, fitting=True)
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
        train_scores = det.__dict__.get("decision_scores_")
        s_val = np.asarray(det.score_samples(np.asarray(X_val)), dtype=np.float64)
        det._set_threshold(s_val)
        if train_scores is not None and train_scores.shape == (train_idx.size,):
            # PyOD's decision_scores_ of the pipeline's X, held-out samples included
            scores = np.empty(labels.size, dtype=np.float64)
            scores[train_idx], scores[val_idx] = train_scores, -s_val
            det.decision_scores_ = scores
        return self

    @property
    def decision_scores_(self):
        """The detector's PyOD outlier scores of ``fit``'s ``X`` (higher = less like G)."""
        return self._final_estimator.decision_scores_

    @property
    def labels_(self):
        """The detector's PyOD outlier labels of ``fit``'s ``X``: 1 = not made by G."""
        return self._final_estimator.labels_

    @available_if(_final_estimator_has("predict_confidence"))
    def predict_confidence(self, X):
        """The detector's ``predict_confidence`` after the steps (PyOD's API)."""
        return self._final_estimator.predict_confidence(self[:-1].transform(self._contract(X))
                                                        if len(self) > 1 else
                                                        self._contract(X))

    @property
    def offset_(self):
        """The detector's ``offset_``: ``decision_function = score_samples - offset_``."""
        return self._final_estimator.offset_

    def fit_predict(self, X, y=None, **params):
        """:meth:`fit`, then :meth:`predict` on ``X`` (+1 made by G, -1 not)."""
        return self.fit(X, y, **params).predict(X)

    @available_if(_final_has_pvalues)
    def pvalues(self, X, return_decision=False):
        """Conformal p-values of "made by G", with one pass through the steps.

        The steps transform ``X`` once (for FLIPAD: one inversion per sample)
        and the detector turns the features into p-values, and with
        ``return_decision`` into the decision as well: calling
        :meth:`decision_function` (or :meth:`predict`) and then the
        detector's ``pvalues`` on the transformed samples would invert every
        sample twice.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Input of the first step (images for a FLIPAD pipeline).
        return_decision : bool, default=False
            Also return :meth:`decision_function` of the same samples
            (negative: not made by G; ``predict`` is ``+1`` where it is >= 0).

        Returns
        -------
        p : ndarray of shape (n_samples,), float64
            ``(1 + #{held-out scores <= score(x)}) / (n_val + 1)``; for a new
            sample of G, ``P(p <= a) <= a``.
        decision : ndarray of shape (n_samples,), float64
            Only with ``return_decision=True``.
        """
        det = self._final_estimator
        Xt = self[:-1].transform(X) if len(self) > 1 else self._contract(X)
        p = det.pvalues(Xt)
        # the detector scores the features twice: cheap next to the steps
        return (p, det.decision_function(Xt)) if return_decision else p

    @available_if(_final_estimator_has("predict"))
    def predict(self, X, **params):
        """:meth:`sklearn.pipeline.Pipeline.predict` after the input contract."""
        return super().predict(self._contract(X), **params)

    @available_if(_final_estimator_has("decision_function"))
    def decision_function(self, X, **params):
        """:meth:`sklearn.pipeline.Pipeline.decision_function` after the input contract."""
        return super().decision_function(self._contract(X), **params)

    @available_if(_final_estimator_has("score_samples"))
    def score_samples(self, X):
        """:meth:`sklearn.pipeline.Pipeline.score_samples` after the input contract."""
        return super().score_samples(self._contract(X))

    @available_if(_final_estimator_has("predict_proba"))
    def predict_proba(self, X, **params):
        """:meth:`sklearn.pipeline.Pipeline.predict_proba` after the input contract."""
        return super().predict_proba(self._contract(X), **params)

    @available_if(Pipeline._can_transform)
    def transform(self, X, **params):
        """:meth:`sklearn.pipeline.Pipeline.transform` after the input contract."""
        return super().transform(self._contract(X), **params)

    @available_if(Pipeline._can_fit_transform)
    def fit_transform(self, X, y=None, **params):
        """:meth:`sklearn.pipeline.Pipeline.fit_transform` after the input contract."""
        if y is not None:
            check_labels(y, _num_samples(X))
        X = self._contract(X, fitting=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LabelConventionWarning)
            return super().fit_transform(X, y, **params)

    @available_if(_final_estimator_has("score"))
    def score(self, X, y=None, sample_weight=None, **params):
        """:meth:`sklearn.pipeline.Pipeline.score` after the input contract."""
        return super().score(self._contract(X), y, sample_weight=sample_weight, **params)


def _on_grid(X, low, high):
    """Whether every value of ``X`` is on the 8-bit grid of ``[low, high]`` (None: too few)."""
    if X.size < MIN_VALUES_GRID:
        return None
    u = (np.asarray(X, dtype=np.float64) - low) * (UINT8_LEVELS / (high - low))
    return bool(np.max(np.abs(u - np.rint(u))) < GRID_TOL)
