"""FinalLayerInverter: recover a generator's penultimate activations from its outputs."""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from sklearn.utils._param_validation import HasMethods
from torch import nn

from .._device import check_finite_parameters, check_materialised, resolve_device
from ..activations import BUILTIN_ACTIVATIONS, DEFAULT_CLIP_EPS, get_activation
from ..lasso import (
    STOP_REASONS, BatchLasso, StopRule, choose_solver, make_solver, solve, solver_names,
)
from ..lasso.solvers import auto_batch_size
from ..operators import (
    build_layer, check_layer, describe_layer, is_describable, is_layer_description,
    layer_adapter, operator_for,
)

#: ``progress_tol`` of earlier releases (now off by default: a stop on progress
#: certifies nothing about the features; ``benchmarks/results/bench_reproducibility.md``).
DEFAULT_PROGRESS_TOL = 2e-7
#: ``ridge="auto"``: ``RIDGE_SCALE * lipschitz_``.  Small enough that the
#: features stay those of the paper's lasso up to the flat directions of a
#: near-basis-pursuit problem (which the ridge resolves), large enough that
#: the exact-resolvent ADMM certifies ``feature_tol`` in about as many
#: iterations as the former progress stop (``benchmarks/results/bench_inversion_ridge.md``).
RIDGE_SCALE = 1e-3
#: ``feature_tol`` default: two solves that each certify 5e-4 agree within 1e-3.
DEFAULT_FEATURE_TOL = 5e-4
#: ``clip_eps="auto"`` with ``datafit="output"``: the weights ``1 - x^2`` of
#: tanh then have a floor of 0.059 and ``atanh`` a cap of 2.09.  On 8 zoo
#: generators (``benchmarks/results/weighted_datafit_package.md``) it kept the clean
#: accuracy of the default, where 1e-6 lost 0.05 at fnr 0.005 (the most
#: saturated samples of G became outliers), and it was the most robust
#: variant under JPEG and noise.
OUTPUT_CLIP_EPS = 3e-2
#: the solvers that run on CPU whatever ``device`` says
_CPU_SOLVERS = ("cd", "cvxpy", "scipy")


def _progress(total, verbose, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample")


class FinalLayerInverter(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Invert a generator's final layer with a convex lasso, sample by sample.

    A generator ends in ``x = sigma(W h + b)``.  For each sample ``x`` this
    transformer returns the activation ``z`` that solves::

        min_z 1/2 ||sigma^-1(clip(x)) - b - W z||^2 + alpha ||z - anchor||_1
              + ridge / 2 ||z - anchor||^2

    (with ``z >= 0`` if ``positive=True``), i.e. FLIPAD's final-layer inversion
    with a small ridge term.  The recovered activations are the features
    FLIPAD's detector works on, so they are defined by this problem, not by a
    solver: the ridge makes its solution unique (at FLIPAD's penalties the
    plain lasso is close to basis pursuit and flat in many directions, so
    different solvers, batches or devices stop at different activations),
    and each sample stops once its certified distance to that solution is at
    most ``feature_tol`` (``feature_error_``), relative to ``max(||z*||,
    ||y'|| / sqrt(lipschitz_))`` (the second, ``feature_scale_``, is the least
    norm of an activation that reproduces the target ``y'``; it only counts
    for samples whose solution the penalty shrinks to (near) the anchor's
    zero, which a bound relative to ``||z*||`` could never certify).  Any solver, batch size,
    thread count or device then returns the same features within
    ``2 * feature_tol``.
    With ``datafit="output"`` the data term is weighted by sigma's slope, so
    that it measures the fit in output space (see ``datafit``).

    Parameters
    ----------
    layer : torch.nn.Linear, torch.nn.Conv2d or torch.nn.ConvTranspose2d
        The generator's final linear layer (any stride, padding,
        output_padding, dilation and groups; zero padding only).  Its weight
        and bias are copied to CPU float64 at ``fit``.
    activation : {"tanh", "sigmoid", "identity"}, callable or (callable, callable), \
            default="tanh"
        The output activation ``sigma``.  A callable is taken as the inverse
        ``sigma^-1`` (applied without clipping); a pair as ``(sigma, sigma^-1)``,
        which ``inverse_transform`` needs.  Callables must be importable
        functions for the estimator to pickle.  torch's ``nn.Tanh()``,
        ``torch.tanh``, ``nn.Sigmoid()``, ``torch.sigmoid``, ``nn.Identity()``
        mean the builtin ones; a forward map given as the inverse
        (``np.tanh``) is refused.  For tanh and sigmoid, integer ``X`` is
        refused and more than 1% of values outside the range warn
        (:class:`~flipad_sklearn.OutOfRangeWarning`).
    alpha : float, default=5e-4
        Lasso penalty, on the sum over the sample (FLIPAD uses 5e-4 on 64x64
        DCGAN outputs).
    ridge : float or "auto", default="auto"
        Ridge penalty ``ridge / 2 ||z - anchor||^2`` (an elastic net), part of
        the features' definition.  ``"auto"``: ``1e-3 * lipschitz_``
        (``ridge_`` holds the value).  0: the paper's plain lasso, whose
        solution need not be unique; then ``feature_tol`` must be None and
        ``tol`` set.
    anchor : "zeros" or array-like, default="zeros"
        ``anchor`` in the penalty: typically the mean penultimate activation
        of the generator (see :func:`flipad_sklearn.mean_activation`).  An
        array of the activation's shape also fixes that shape.
    positive : bool, default=False
        Constrain the activations to be non-negative (true when the
        penultimate layer is a ReLU).  The proximal step becomes
        shrink-then-clamp.
    datafit : {"preactivation", "output"}, default="preactivation"
        The data term.  ``"preactivation"``: FLIPAD's
        ``1/2 ||sigma^-1(x) - b - W z||^2``.  ``"output"``: the same residual
        weighted per output by sigma's slope there,
        ``1/2 ||D (sigma^-1(x) - b - W z)||^2`` with ``D = sigma'(sigma^-1(x))``
        (tanh: ``1 - x^2``; sigmoid: ``x (1 - x)``; identity: no weights), the
        first-order (Gauss-Newton) form of the output error
        ``1/2 ||x - sigma(W z + b)||^2``, still a convex lasso.  Near
        saturation ``sigma^-1`` amplifies every change of ``x`` (JPEG, noise):
        there the weights are small, so a perturbation moves the features
        about as much as it moves the output.  Exact-resolvent ADMM takes no
        weights: ``"auto"`` then picks split ADMM or FISTA.  ``objective_``
        and ``duality_gap_`` are the weighted problem's.  For a custom
        ``(forward, inverse)`` activation the slope is taken numerically and
        the step from the batch's largest one.
    solver : {"auto", "fista", "admm", "split_admm", "cd", "cvxpy", "scipy"}, \
            default="auto"
        ``"auto"``: the fastest method that supports the layer (recorded with
        the reason in ``solver_`` and ``solver_reason_``): for conv layers
        with a thin unobserved boundary (stride 1, or transposed) ``"admm"``
        from 1 activation per output (groups=1 ConvTranspose2d) or 2 (other
        layers), ``"split_admm"`` from 4 when that boundary is too large for
        exact ADMM (over 1000 outputs); ``"fista"`` for strided Conv2d layers
        and better-posed conv layers; for Linear layers ``"fista"`` with a
        ridge (the default) or a shifted bound, else ``"cd"`` on CPU and
        ``"fista"`` on CUDA (the rule's measurements:
        ``benchmarks/results/bench_inversion_defaults.md`` and ``bench_auto_solver.md``).
        ``"fista"``: batched accelerated proximal gradient in torch (CPU or
        CUDA), any layer.  ``"admm"``: ADMM with exact FFT solves of the layer's
        normal equations and a continuation on its penalty (Conv2d and
        ConvTranspose2d layers with at most 8000 unobserved outputs on their
        periodic grid; the first transform builds per-layer factorisations).
        ``"split_admm"``: ADMM with two splits and FFT solves of ``m x m``
        per-frequency systems (every Conv2d and ConvTranspose2d; nothing
        scales with the image border).  Both ADMM variants hand the samples
        not done after 400 iterations to FISTA.  ``"cd"``: coordinate descent,
        Linear layers.  ``"cvxpy"`` and ``"scipy"``: exact/independent CPU
        solvers to verify small problems.
    feature_tol : float or None, default=5e-4
        Each sample stops once its certified relative distance to the
        solution, ``||z - z*|| / max(||z*||, s) <= e / max(||z|| - e, s)``
        with ``e = sqrt(2 gap / ridge)`` (strong convexity;
        ``feature_error_``) and ``s = ||y'|| / sqrt(lipschitz_)``
        (``feature_scale_``), is at most ``feature_tol`` (stop reason
        ``"feature"``).  Needs ``ridge > 0``.
    tol : float or None, default=None
        A relative duality gap: a sample also needs ``gap <= tol * 1/2
        ||y'||^2`` (the objective at the anchor, scikit-learn's Lasso
        convention), which guarantees ``P - P* <= tol * 1/2 ||y'||^2``.
        With ``feature_tol=None`` it is the only criterion (stop reason
        ``"gap"``).  Samples that miss the criteria within ``max_iter``
        raise a ``ConvergenceWarning`` naming them; ``duality_gap_`` and
        ``feature_error_`` hold each sample's certificate.
    progress_tol : float or None, default=None
        If set, also stop a sample once, over each of 2 consecutive checks,
        its objective has changed by less than ``progress_tol * 1/2 ||y'||^2``
        per iteration (stop reason ``"progress"``): faster, but it certifies
        nothing about the features, which then depend on the solver and the
        batch.  Iterative torch solvers only.
    max_iter : int, default=1000
        Iterations (FISTA; ADMM and FISTA together for ``"admm"``) or epochs
        (coordinate descent) per sample at most.
    continuation : bool, default=True
        FISTA only: warm-start from larger penalties (``alpha * 100``,
        ``alpha * 10``), which reaches low objectives in fewer iterations.
    activation_shape : tuple of int, default=None
        Shape of one penultimate activation, e.g. ``(64, 32, 32)``.  Needed
        for a strided Conv2d, whose input size its output size does not
        determine; otherwise taken from ``anchor`` or inferred.
    clip_eps : float or "auto", default="auto"
        Outputs are clipped into ``(low + clip_eps, high - clip_eps)`` of
        sigma's range before inversion (tanh: ``(-1, 1)``; sigmoid: ``(0, 1)``).
        ``"auto"``: 1e-6 with ``datafit="preactivation"`` (the inversion as
        exact as float64 allows), 3e-2 with ``datafit="output"``, where the
        clip also floors the weights (0.059 for tanh) so that the most
        saturated samples keep a data term (``clip_eps_`` holds the value).
    batch_size : int or "auto", default="auto"
        Samples solved together.  ``"auto"``: as many as fit in
        ``memory_budget`` bytes of solver state (at most 256), so that
        large layers (a 512x512 Stable Diffusion decoder has 33.5M
        activations per image) run one sample at a time; on CPU also at
        most ``flipad_sklearn.lasso.solvers.CPU_BATCH_BYTES`` (192 MiB),
        beyond which larger batches run slower per sample.
    memory_budget : int, default=2**31
        Bytes of solver state per batch that ``batch_size="auto"`` aims at.
    n_jobs : int, default=None
        Batches solved in parallel with joblib (threads by default; any joblib
        backend, e.g. Dask's, applies when set with ``joblib.parallel_backend``).
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where FISTA and ADMM run; ``"auto"`` uses CUDA when available.
    precision : {"float32", "float64"}, default="float32"
        Arithmetic of the FISTA and ADMM iterations; the certificate is always float64.
    verbose : int, default=0
        Show a progress bar over samples when positive.

    Attributes
    ----------
    anchor_ : ndarray of shape (n_activations,)
        The anchor, flattened.
    activation_shape_ : tuple of int
        Shape of one activation.
    output_shape_ : tuple of int
        Shape of one generator output (``(M,)`` or ``(C, H, W)``).
    ridge_ : float
        The ridge in use (``ridge``, or what ``"auto"`` chose).
    bias_ : ndarray of shape (n_features_in_,)
        The layer's bias on each output entry (zeros without a bias).
    lipschitz_ : float
        Largest eigenvalue of ``WᵀW``, or a proven upper bound of it for large
        convolutions (``Operator.lipschitz``); FISTA's step is its inverse.
    clip_eps_ : float
        The clip of the outputs in use (``clip_eps``, or what ``"auto"`` chose).
    solver_ : str
        The solver ``transform`` runs (``solver`` itself, or what ``"auto"`` chose).
    solver_reason_ : str
        Why (for ``"auto"``), or ``"given"``.
    batch_size_ : int
        Samples per batch (``batch_size``, or what ``"auto"`` chose) at the
        last ``fit`` or ``transform``: ``transform`` resolves ``batch_size``,
        ``n_jobs`` and ``device`` from the current parameters, so
        ``set_params`` on a fitted inverter takes effect on the next call.
    operator_ : LayerOperator
        The layer as a CPU float64 linear operator.
    n_features_in_ : int
        Number of output entries per sample.
    n_iter_ : ndarray of shape (n_samples,)
        Iterations per sample in the last ``transform``.
    duality_gap_ : ndarray of shape (n_samples,)
        Duality gap per sample in the last ``transform``: an upper bound on
        the distance of its objective to the optimum.
    objective_ : ndarray of shape (n_samples,)
        Objective per sample in the last ``transform``.
    feature_error_ : ndarray of shape (n_samples,)
        Certified bound on each sample's relative distance ``||z - z*|| /
        max(||z*||, feature_scale_)`` to the exact solution in the last
        ``transform`` (inf with ``ridge=0``).
    feature_scale_ : ndarray of shape (n_samples,)
        Each sample's ``||y'|| / sqrt(lipschitz_)`` (weighted target and
        weighted ``lipschitz_`` with ``datafit="output"``): the norm below
        which ``feature_error_`` is relative to this scale instead of
        ``||z*||``.
    stop_reason_ : ndarray of str, shape (n_samples,)
        What ended each sample in the last ``transform``: ``"feature"``
        (``feature_error_`` reached ``feature_tol``), ``"gap"`` (the relative
        gap reached ``tol``, with ``feature_tol=None``), ``"progress"`` (see
        ``progress_tol``), ``"max_iter"`` or ``"stalled"``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from flipad_sklearn import FinalLayerInverter
    >>> layer = torch.nn.Linear(30, 8)
    >>> h = np.maximum(np.random.default_rng(0).normal(size=(5, 30)), 0)
    >>> x = np.tanh(layer(torch.tensor(h, dtype=torch.float32)).detach().numpy())
    >>> inv = FinalLayerInverter(layer=layer, alpha=1e-3, solver="cd").fit(x)
    >>> inv.transform(x).shape
    (5, 30)
    """

    _parameter_constraints = {
        "layer": "no_validation",
        "activation": [StrOptions(set(BUILTIN_ACTIVATIONS)), callable, tuple],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "ridge": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "feature_tol": [Interval(Real, 0, None, closed="neither"), None],
        "anchor": [StrOptions({"zeros"}), "array-like"],
        "positive": ["boolean"],
        "datafit": [StrOptions({"preactivation", "output"})],
        "solver": [str, HasMethods(["supports"])],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "progress_tol": [Interval(Real, 0, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "continuation": ["boolean"],
        "activation_shape": [tuple, list, None],
        "clip_eps": [Interval(Real, 0, 0.5, closed="neither"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "memory_budget": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [str, torch.device],
        "precision": [StrOptions({"float32", "float64"})],
        "verbose": ["verbose"],
    }

    def __init__(self, layer=None, *, activation="tanh", alpha=5e-4, ridge="auto",
                 anchor="zeros", positive=False, datafit="preactivation", solver="auto",
                 feature_tol=DEFAULT_FEATURE_TOL, tol=None, progress_tol=None,
                 max_iter=1000, continuation=True, activation_shape=None,
                 clip_eps="auto", batch_size="auto", memory_budget=2**31,
                 n_jobs=None, device="auto", precision="float32", verbose=0):
        self.layer = layer
        self.activation = activation
        self.alpha = alpha
        self.ridge = ridge
        self.anchor = anchor
        self.positive = positive
        self.datafit = datafit
        self.solver = solver
        self.feature_tol = feature_tol
        self.tol = tol
        self.progress_tol = progress_tol
        self.max_iter = max_iter
        self.continuation = continuation
        self.activation_shape = activation_shape
        self.clip_eps = clip_eps
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.n_jobs = n_jobs
        self.device = device
        self.precision = precision
        self.verbose = verbose

    # ----------------------------------------------------------- validation
    def _check_X(self, X, reset):
        """2-D or 4-D finite X → (2-D float array, image shape or None)."""
        get_activation(self.activation).check_dtype(X)   # before float conversion
        X = check_array(X, allow_nd=True, dtype=[np.float64, np.float32],
                        ensure_all_finite=False, ensure_2d=False,
                        input_name="X")
        image_shape = None
        if X.ndim < 2:
            check_array(X, input_name="X")          # scikit-learn's "Reshape your data"
        if X.ndim == 4:
            image_shape = tuple(X.shape[1:])
            X = X.reshape(X.shape[0], -1)
        elif X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (n_samples, n_features) or 4-D (n_samples, C, H, W); "
                f"got an array of shape {X.shape}."
            )
        if image_shape is not None and not reset and hasattr(self, "output_shape_"):
            if len(self.output_shape_) == 3 and image_shape != self.output_shape_:
                if image_shape[0] != self.output_shape_[0]:
                    raise ValueError(
                        f"X has {image_shape[0]} channels, but the final layer outputs "
                        f"{self.output_shape_[0]} channels."
                    )
                raise ValueError(
                    f"X has images of shape {image_shape}, but the final layer outputs "
                    f"{self.output_shape_}."
                )
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
        return X, image_shape

    def _resolve_shapes(self, n_features, image_shape):
        layer = self.layer
        adapter = layer_adapter(layer)
        anchor = None
        if not (isinstance(self.anchor, str) and self.anchor == "zeros"):
            anchor = np.asarray(self.anchor, dtype=np.float64)
            if not np.all(np.isfinite(anchor)):
                raise ValueError("anchor contains NaN or infinity.")
        shape = None
        if self.activation_shape is not None:
            shape = tuple(int(s) for s in self.activation_shape)
        elif anchor is not None:
            shape = adapter.anchor_shape(anchor)
        if shape is None:
            out_shape = image_shape or adapter.output_shape_guess(layer, n_features)
            if out_shape is None:
                raise ValueError(
                    f"Cannot tell the output image shape from {n_features} features "
                    f"for this {type(layer).__name__}; pass X as (n, C, H, W) or set "
                    "activation_shape."
                )
            shape = adapter.infer_input_shape(layer, out_shape)
            if shape is None:
                raise ValueError(
                    f"The activation shape of this {type(layer).__name__} is not "
                    f"determined by its output shape {out_shape} (e.g. a strided "
                    "Conv2d); set activation_shape=(C, H, W) or pass an anchor array."
                )
        if anchor is None:
            anchor = np.zeros(int(np.prod(shape)))
        elif anchor.size != int(np.prod(shape)):
            raise ValueError(
                f"anchor has {anchor.size} entries but an activation of shape {shape} "
                f"has {int(np.prod(shape))}."
            )
        return tuple(shape), anchor.reshape(-1)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Check that ``X`` matches the layer and store the layer as CPU tensors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Generator outputs (only their shape is used).
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        if self.layer is None:
            raise ValueError(f"{type(self).__name__} needs layer=<the generator's final "
                             "layer>.")
        check_layer(self.layer)
        check_materialised(self.layer)
        check_finite_parameters(self.layer)
        self._check_solver_name()
        if self._device_resolved_at_fit():
            resolve_device(self.device)  # an unsupported device fails here, not after fit
        act = get_activation(self.activation)
        if self._weighted() and act.slope_of_output is None and act.forward is None:
            raise ValueError(
                f"datafit='output' weighs the data term by the activation's slope, but "
                f"activation {act.name!r} was given as an inverse only; pass "
                "activation=(forward, inverse)."
            )
        X, image_shape = self._check_X(X, reset=True)
        self.activation_shape_, self.anchor_ = self._resolve_shapes(X.shape[1], image_shape)
        layer_op = operator_for(self.layer, self.activation_shape_)
        if layer_op.n_outputs != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} feature(s) per sample, but the final layer maps "
                f"activations of shape {self.activation_shape_} to outputs of shape "
                f"{layer_op.output_shape} ({layer_op.n_outputs} values)."
            )
        if image_shape is not None and len(layer_op.output_shape) == 3 \
                and image_shape != layer_op.output_shape:
            raise ValueError(
                f"X has images of shape {image_shape}, but the final layer outputs "
                f"{layer_op.output_shape}."
            )
        op = self._operator(layer_op)
        self.clip_eps_ = None
        self.clip_eps_ = self._clip_eps()
        # the ridge is part of the problem "auto" chooses for
        self.lipschitz_ = op.lipschitz()
        self.ridge_ = self._resolve_ridge()
        self.solver_, self.solver_reason_ = self._choose_solver(op)
        self.batch_size_ = (self.batch_size if self.batch_size != "auto"
                            else auto_batch_size(op, self.precision, self.memory_budget,
                                                 device=self._device()))
        self.operator_ = op
        self.output_shape_ = op.output_shape
        self.bias_ = layer_adapter(self.layer).bias_per_output(self.layer, op.output_shape)
        with torch.no_grad():
            self._anchor_image = op.matvec(torch.from_numpy(self.anchor_)[None])[0].numpy()
        return self

    # ------------------------------------------------- hooks for subclasses
    def _operator(self, layer_op):
        """The lasso's operator from the layer's (:class:`SkipInverter`: ``P⊥ W``)."""
        return layer_op

    def _project(self, y):
        """The lasso's targets from ``sigma^-1(x) - b`` (:class:`SkipInverter`: ``P⊥ y``)."""
        return y

    def _resolve_ridge(self):
        """``ridge_`` from ``ridge`` and ``lipschitz_``; checks the stop is well posed."""
        ridge = RIDGE_SCALE * self.lipschitz_ if self.ridge == "auto" else float(self.ridge)
        if self.feature_tol is not None and not ridge > 0:
            raise ValueError(
                f"feature_tol={self.feature_tol:g} certifies the distance to a unique "
                "solution, which needs ridge > 0; with ridge=0 (the plain lasso) set "
                "feature_tol=None and a relative duality gap tol (e.g. tol=1e-6).")
        if self.feature_tol is None and self.tol is None:
            raise ValueError("Set feature_tol, tol or both: each sample needs a "
                             "certified stop.")
        return ridge

    def _weighted(self):
        """Whether the data term has weights (``datafit="output"``, sigma not the identity)."""
        act = get_activation(self.activation)
        return self.datafit == "output" and act.name != "identity"

    def _weights(self, X):
        """``sigma'(sigma^-1(clip(x)))`` per entry (``datafit="output"``), or None."""
        if not self._weighted():
            return None
        return get_activation(self.activation).slope(X, self._clip_eps())

    def _clip_eps(self):
        """The clip in use (``clip_eps_`` once fitted; ``"auto"`` resolved)."""
        eps = getattr(self, "clip_eps_", None)
        if eps is not None:
            return eps
        if self.clip_eps != "auto":
            return float(self.clip_eps)
        return OUTPUT_CLIP_EPS if self.datafit == "output" else DEFAULT_CLIP_EPS

    def _check_solver_name(self):
        if isinstance(self.solver, str) and self.solver not in solver_names():
            raise ValueError(f"The 'solver' parameter of {type(self).__name__} must be one "
                             f"of {solver_names()} or a solver object; got {self.solver!r}.")

    def _choose_solver(self, op):
        """``(name, reason)`` of the solver for ``op``; a clear error if it cannot."""
        weighted = self._weighted()
        if isinstance(self.solver, str) and self.solver == "auto":
            empty = np.zeros((0, op.n_outputs))
            return choose_solver(self._problem(op, empty, empty if weighted else None),
                                 self._device())
        strategy = self._strategy(self.solver)
        name = getattr(strategy, "name", type(strategy).__name__)
        if weighted and not getattr(strategy, "accepts_weights", False):
            raise ValueError(
                f"solver={name!r} does not take the weighted data term of "
                "datafit='output'; use solver='auto' (the default), 'split_admm' or "
                "'fista'."
            )
        why = strategy.supports(op)
        if why is not None:
            raise ValueError(
                f"solver={name!r} {why}; use solver='auto' (the default) or "
                "solver='fista', which handle every layer."
            )
        return (self.solver if isinstance(self.solver, str) else name), "given"

    def _strategy(self, solver):
        """The solver object for a name (with this estimator's settings) or an object."""
        if isinstance(solver, str):
            return make_solver(solver, continuation=self.continuation)
        return solver

    def _runs_on_cpu(self, solver=None):
        solver = self.solver if solver is None else solver
        if isinstance(solver, str):
            return solver in _CPU_SOLVERS
        return not getattr(solver, "iterative", True)

    def _device_resolved_at_fit(self):
        return not self._runs_on_cpu() and not (
            isinstance(self.solver, str) and self.solver in ("auto", "split_admm"))

    def _device(self):
        return torch.device("cpu") if self._runs_on_cpu() else resolve_device(self.device)

    # ------------------------------------------------------------ transform
    def _resolve_batch_size(self, device):
        """Samples per batch for the current parameters: ``batch_size``, or for
        ``"auto"`` what fits ``memory_budget`` on ``device`` (a few arithmetic
        operations, so ``transform`` re-resolves it on every call)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        return auto_batch_size(self.operator_, self.precision, self.memory_budget,
                               device=device)

    def _targets(self, X):
        """``y' = sigma^-1(clip(x)) - b - W anchor`` for each row (projected by the hook)."""
        act = get_activation(self.activation)
        act.check_range(X)                                # 0-255 floats would clip
        return self._project(act.invert(X, self._clip_eps()) - self.bias_) - self._anchor_image

    def _problem(self, op, Y, weights=None):
        lower = -self.anchor_ if self.positive else None
        return BatchLasso(op, Y, self.alpha, self._ridge(), lower, self.anchor_, weights,
                          # a bound for all samples: steps that do not depend on the batch
                          max_weight=get_activation(self.activation).max_slope,
                          lipschitz=getattr(self, "lipschitz_", None))

    def _stop_rule(self):
        return StopRule(feature_tol=self.feature_tol, tol=self.tol,
                        progress_tol=self.progress_tol, max_iter=self.max_iter)

    def lasso_problem(self, X):
        """The lasso problems ``transform`` solves for ``X``, as plain data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Generator outputs.

        Returns
        -------
        problem : :class:`~flipad_sklearn.lasso.BatchLasso`
            The operator, the targets ``sigma^-1(clip(x)) - b - W anchor``
            (one row per sample), the penalties, the bound, the anchor and
            (``datafit="output"``) the data-term weights: what
            ``flipad_sklearn.lasso.solve(problem, solver, stop)`` takes, so
            that a benchmark or a second party can solve the same problems
            with any solver.  Its solution ``d`` gives the features
            ``d + anchor_``.
        """
        check_is_fitted(self, "operator_")
        X, _ = self._check_X(X, reset=False)
        return self._problem(self.operator_, self._targets(X), self._weights(X))

    def transform(self, X):
        """Recover the penultimate activations of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Generator outputs (e.g. images in tanh's range ``[-1, 1]``).

        Returns
        -------
        Z : ndarray of shape (n_samples, n_activations)
            The lasso solutions, flattened (C·H·W for convolutional layers);
            float32 if X is float32, else float64.
        """
        check_is_fitted(self, "operator_")
        X, _ = self._check_X(X, reset=False)
        out_dtype = np.float32 if X.dtype == np.float32 else np.float64
        weights = self._weights(X)
        problem = self._problem(self.operator_, self._targets(X), weights)
        n = problem.targets.shape[0]
        solver = getattr(self, "solver_", self.solver)
        if not isinstance(self.solver, str):
            solver = self.solver                  # an object: run as given
        device = torch.device("cpu") if self._runs_on_cpu(solver) else resolve_device(
            self.device)
        dtype = torch.float32 if self.precision == "float32" else torch.float64
        # batch_size, n_jobs and device are read now, not at fit: set_params
        # between fit and transform takes effect (the Dask recipe of
        # docs/user_guide/scaling.rst sets batch_size and n_jobs on a fitted inverter)
        self.batch_size_ = self._resolve_batch_size(device)
        batches = list(gen_batches(n, self.batch_size_))
        stop = self._stop_rule()

        def run(sl):
            return solve(problem.rows(sl), self._strategy(solver), stop, device=device,
                         dtype=dtype)

        bar = _progress(n, self.verbose, "final-layer inversion")
        if self.n_jobs in (None, 1) or len(batches) == 1:
            jobs = (run(sl) for sl in batches)
        else:
            # threads: torch releases the GIL; a joblib backend set by the caller
            # (e.g. Dask's) takes precedence over this hint
            jobs = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(run)(sl) for sl in batches)
        results = []
        for sl, res in zip(batches, jobs):
            results.append(res)
            if bar is not None:
                bar.update(sl.stop - sl.start)
        if bar is not None:
            bar.close()
        (D, self.objective_, self.duality_gap_, self.n_iter_, reason, self.feature_error_,
         self.feature_scale_) = (np.concatenate(parts) for parts in zip(*(
             (r.d, r.objective, r.gap, r.n_iter, r.reason, r.feature_error, r.feature_scale)
             for r in results)))
        self.stop_reason_ = np.asarray(STOP_REASONS)[reason]
        Z = D + self.anchor_
        self._warn_uncertified(problem.targets, weights, solver)
        return Z.astype(out_dtype, copy=False)

    def _ridge(self):
        """``ridge_`` (0 for an estimator fitted before the ridge existed)."""
        return getattr(self, "ridge_", 0.0)

    def _warn_uncertified(self, Y, weights, solver):
        """One ConvergenceWarning for the samples that miss the stop's criteria.

        Samples stopped on ``progress_tol`` chose to and do not warn.
        """
        if isinstance(solver, str) and solver in ("cvxpy", "scipy"):
            return
        missed = ~np.isin(self.stop_reason_, ("feature", "gap", "progress"))
        if not missed.any():
            return
        Yw = Y if weights is None else weights * Y
        rel = self.duality_gap_ / np.maximum(0.5 * (Yw * Yw).sum(axis=1), 1e-300)
        goal = []
        if self.feature_tol is not None:
            goal.append(f"feature_tol={self.feature_tol:g} (largest certified feature "
                        f"error: {self.feature_error_[missed].max():.2e})")
        if self.tol is not None:
            goal.append(f"the relative duality gap tol={self.tol:g} (largest: "
                        f"{rel[missed].max():.2e})")
        warnings.warn(
            f"{int(missed.sum())} of {len(missed)} samples did not reach "
            f"{' and '.join(goal)} within max_iter={self.max_iter}. Increase max_iter "
            "(or the tolerance); feature_error_ and duality_gap_ hold each sample's "
            "certificate.", ConvergenceWarning)

    def inverse_transform(self, X):
        """Map activations back to generator outputs: ``sigma(W z + b)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_activations)

        Returns
        -------
        outputs : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self, "operator_")
        Z = check_array(X, dtype=[np.float64, np.float32], input_name="X")
        if Z.shape[1] != self.anchor_.size:
            raise ValueError(
                f"X has {Z.shape[1]} features, but the inverter's activations have "
                f"{self.anchor_.size} (shape {self.activation_shape_})."
            )
        with torch.no_grad():
            pre = self.operator_.matvec(torch.from_numpy(Z.astype(np.float64))).numpy()
        out = get_activation(self.activation).apply(pre + self.bias_)
        return out.astype(Z.dtype, copy=False)

    # ----------------------------------------------------------- plumbing
    @property
    def _n_features_out(self):
        return self.anchor_.size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    def __getstate__(self):
        state = self.__dict__.copy()
        layer = state.get("layer")
        if is_describable(layer):
            # plain arrays + the layer's description, never the live module: the
            # state pickles device-free and saves without pickle (persistence.save)
            state["layer"] = describe_layer(layer)
            if "operator_" in state:
                state["operator_"] = None      # rebuilt from the layer on load
        elif isinstance(layer, nn.Module) and any(
                p.device.type != "cpu" for p in layer.parameters()):
            # a CUDA layer would not unpickle on a CPU-only machine
            state["layer"] = copy.deepcopy(layer).cpu()
        return state

    def __setstate__(self, state):
        state = dict(state)
        # saved before the ridge existed: the plain lasso, stopped on its gap
        state.setdefault("ridge", 0.0)
        state.setdefault("feature_tol", None)
        if is_layer_description(state.get("layer")):
            state["layer"] = build_layer(state["layer"])
            if "operator_" in state and state["operator_"] is None:
                state["operator_"] = operator_for(state["layer"], state["activation_shape_"])
        super().__setstate__(state)
