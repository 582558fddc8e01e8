"""Checks of the state that :func:`flipad_sklearn.persistence.load` reads from a file.

A detector file is what an owner receives from, or sends to, someone they do
not trust.  Allow-listed classes alone do not make it safe: arrays that
disagree with each other reach libsvm (which reads out of bounds), torch
(which allocates what the description asks for) or silently change every
score.  So every estimator's state is checked here against the estimator's
own invariants (shapes consistent with each other and with the spec, dtypes,
finite values) before the estimator receives it, and the memory scoring will
need is estimated from the spec and compared with the budget the *caller*
gave (never one read from the file).
"""

import functools
import inspect
import math
import warnings

import numpy as np

from .detection.conformal import ConformalDecisionMixin, _rank, _unwrap, fnr_bound
from .features import n_tile_features
from .lasso.solvers import make_solver, solver_names
from .operators import is_layer_description, layer_adapter

__all__ = ["FileVersionWarning", "UnsafeFileError"]


class UnsafeFileError(ValueError):
    """A file :func:`~flipad_sklearn.persistence.load` will not load.

    The one exception ``load`` raises for a file: not in the secure format (a
    pickle or joblib file), a class outside the allow-list, a corrupt,
    truncated or inconsistent file, one whose decompressed arrays or scoring
    memory exceed ``max_bytes``, one of a newer format, or state this version
    cannot use.  A ``ValueError``; the message says what is wrong.
    """


class FileVersionWarning(UserWarning):
    """The file was written by another flipad_sklearn version (or was migrated)."""


class Context:
    """What one :func:`load` call knows: the caller's budget and what to warn about."""

    def __init__(self, max_bytes, version, archive=None):
        self.max_bytes = max_bytes
        self.version = version
        self.archive = archive
        self.notes = []
        self.scoring = 0        # bytes scoring one batch needs, by the estimates

    @property
    def used(self):
        """Bytes of arrays decompressed so far."""
        return 0 if self.archive is None else self.archive.used

    def note(self, msg):
        self.notes.append(msg)

    def warn(self, path):
        if self.notes:
            warnings.warn(f"{path!r}: " + "; ".join(self.notes) + ". Check its scores, or "
                          "re-fit with this version.", FileVersionWarning, stacklevel=3)


def fail(msg):
    raise UnsafeFileError(msg)


def need(ok, msg):
    if not ok:
        fail(msg)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, (bool, np.bool_))


def shape_tuple(v, what, ndim=None):
    need(isinstance(v, (tuple, list)) and len(v) >= 1 and all(_is_int(s) and s >= 1 for s in v)
         and (ndim is None or len(v) in ndim),
         f"{what} must be a shape (positive integers), got {str(v)[:80]}")
    return tuple(int(s) for s in v)


def array(v, what, *, kind="f", shape=None, finite=True, ndim=None):
    """``v`` as a checked ndarray: dtype kind in ``kind``, ``shape``, finite values."""
    need(isinstance(v, np.ndarray), f"{what} must be an array, got {type(v).__name__}")
    need(v.dtype.kind in kind, f"{what} has dtype {v.dtype}")
    if shape is not None:
        need(v.shape == tuple(shape), f"{what} has shape {v.shape}, expected {tuple(shape)}")
    if ndim is not None:
        need(v.ndim == ndim, f"{what} has {v.ndim} dimensions, expected {ndim}")
    if finite and v.dtype.kind in "fc":
        need(bool(np.isfinite(v).all()), f"{what} holds NaN or infinite values")
    return v


def real(v, what, low=-math.inf, high=math.inf):
    need(_is_real(v) and math.isfinite(float(v)) and low <= float(v) <= high,
         f"{what} must be a finite number in [{low}, {high}], got {str(v)[:40]}")
    return float(v)


def _prod(shape):
    return math.prod(int(s) for s in shape)


def gib(n):
    return f"{n / 2 ** 30:.2f} GiB"


# ------------------------------------------------------------------ rebuild
def rebuild(cls, name, state, ctx):
    """The estimator of class ``cls`` from ``state``, checked before and after."""
    _migrate_params(cls, name, state, ctx)
    for base in cls.__mro__:
        pre = _PRE.get(base.__name__)
        if pre is not None:
            pre(state, ctx)
            break
    est = cls.__new__(cls)
    est.__setstate__(state)
    if hasattr(est, "_validate_params"):
        try:
            est._validate_params()      # scikit-learn's parameter constraints
        except (TypeError, ValueError) as exc:
            fail(f"a {name} with invalid parameters ({str(exc)[:200]})")
    for base in cls.__mro__:
        required = _FITTED.get(base.__name__)
        if required is not None:
            _check_complete(est, name, required, ctx)
            break
    for base in cls.__mro__:
        post = _POST.get(base.__name__)
        if post is not None:
            post(est, ctx)
            break
    _finite_fitted_arrays(est, name)
    return est


def _migrate_params(cls, name, state, ctx):
    """Constructor parameters a file from an older version lacks get their defaults."""
    params = _init_params(cls)
    missing = []
    for p in params:
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) \
                or p.name in state:
            continue
        if p.default is inspect.Parameter.empty:
            fail(f"the {name} lacks its required parameter {p.name!r}: it was written by "
                 f"another version ({ctx.version!r}); re-fit with this version")
        state[p.name] = p.default
        missing.append(p.name)
    if missing:
        ctx.note(f"its {name} had no {', '.join(map(repr, missing))} (written before "
                 "the parameter existed): set to the default")


def _check_complete(est, name, required, ctx):
    """A fitted estimator has every fitted attribute its methods read."""
    fitted = [k for k in vars(est) if k.endswith("_") and not k.startswith("__")]
    if not fitted:
        return                          # an unfitted estimator: parameters only
    missing = [k for k in required if not hasattr(est, k)]
    if missing:
        fail(f"the fitted {name} lacks {', '.join(missing)} (the file is incomplete, or "
             f"was written by another version, {ctx.version!r}): re-fit with this version")


@functools.lru_cache(maxsize=None)
def _init_params(cls):
    return tuple(inspect.signature(cls.__init__).parameters.values())


def _finite_fitted_arrays(est, name):
    """No NaN or infinity in any fitted float array: it would reach every score."""
    for key, value in vars(est).items():
        if key.endswith("_") and not key.startswith("__") and isinstance(value, np.ndarray) \
                and value.dtype.kind in "fc" and not np.isfinite(value).all():
            fail(f"{name}.{key} holds NaN or infinite values")


def _fitted(state, key):
    return key in state


# ----------------------------------------------------------- our estimators
def _pre_inverter(state, ctx):
    layer = state.get("layer")
    need(is_layer_description(layer), "the inverter's layer is not a layer description "
                                      "(a registered layer type: Linear, Conv2d, "
                                      "ConvTranspose2d, ...)")
    kwargs = layer["kwargs"]
    need(isinstance(kwargs, dict) and all(_is_int(v) or isinstance(v, (bool, str, tuple))
                                          for v in kwargs.values()),
         "the inverter's layer arguments are not plain values")
    need(isinstance(layer["weight"], np.ndarray), "the inverter's layer has no weight array")
    if not _fitted(state, "anchor_"):
        return
    if "operator_" in state:
        need(state["operator_"] is None, "the inverter's operator_ is not rebuilt from "
                                         "its layer (a stored operator is refused)")
    # any registered layer type's shapes ((K,), (C, L), (C, H, W), (C, D, H, W)); after
    # the build the layer's operator must map one to the other (_post_inverter)
    act = shape_tuple(state.get("activation_shape_"), "activation_shape_", ndim=(1, 2, 3, 4))
    out = shape_tuple(state.get("output_shape_"), "output_shape_", ndim=(1, 2, 3, 4))
    n_in, n_out = _prod(act), _prod(out)
    array(state.get("anchor_"), "anchor_", shape=(n_in,))
    for key in ("bias_", "_anchor_image"):
        if key in state:
            array(state[key], key, shape=(n_out,))
    need(state.get("n_features_in_") == n_out,
         f"n_features_in_ {str(state.get('n_features_in_'))[:20]} differs from the "
         f"{n_out} outputs of output_shape_ {out}")
    precision = state.get("precision")
    need(precision in ("float32", "float64"), f"precision {str(precision)[:20]!r}")
    solver = state.get("solver_")
    need(isinstance(solver, str) and solver in solver_names() and solver != "auto",
         f"solver_ {str(solver)[:20]!r} is not one of {solver_names()[1:]}")
    batch = state.get("batch_size_")
    need(_is_int(batch) and batch >= 1, f"batch_size_ {str(batch)[:20]} is not a positive "
                                        "integer")
    real(state.get("lipschitz_"), "lipschitz_", 0, math.inf)
    need(state["lipschitz_"] > 0, "lipschitz_ must be positive")
    eps = state.get("clip_eps_")
    if eps is not None:                 # None: the clip_eps parameter's (checked later)
        real(eps, "clip_eps_", 0, 0.5)
        need(0 < eps < 0.5, "clip_eps_ must lie in (0, 0.5)")
    # the memory scoring needs, from the spec, against the caller's budget
    weight = layer["weight"]
    fixed, per_sample = scoring_bytes(n_in, n_out, precision, solver, weight, act)
    budget = ctx.max_bytes
    left = budget - ctx.used            # the file's arrays count against it too
    need(fixed + per_sample <= left,
         f"scoring one sample with it needs about {gib(fixed + per_sample)} "
         f"({n_in} activations per {n_out}-value output, solver {solver!r}) besides its "
         f"{gib(ctx.used)} of arrays, more than max_bytes={budget} ({gib(budget)}) in all; "
         "load it with a larger max_bytes (flipad: --max-memory) only if you expect a "
         "generator this large")
    # the stored batch size and budget are the writer's: lower them to the caller's
    fits = int((left - fixed) // per_sample)
    if batch > fits:
        state["batch_size_"] = batch = fits
    if _is_int(state.get("memory_budget")) and state["memory_budget"] > left:
        state["memory_budget"] = int(left)
    ctx.scoring += fixed + per_sample * batch


def scoring_bytes(n_in, n_out, precision, solver, weight, act_shape):
    """``(fixed, per_sample)`` bytes the inversion of a batch needs (an upper estimate).

    ``per_sample``: :func:`~flipad_sklearn.lasso.solvers.bytes_per_sample` (the
    solver's iterates) plus the features of the later steps and the float64
    copies of the inputs; ``fixed``: the layer's weight as operator copies,
    the spectra of the FFT solvers, the dense matrix of the verification
    solvers.
    """
    isz = 4 if precision == "float32" else 8
    per_sample = n_in * (8 * isz + 3 * 8) + n_out * (16 * isz + 10 * 8)
    per_sample += 4 * 8 * (n_in + n_out)      # result, features, targets, weights
    fixed = 4 * weight.size * 8 + 8 * 8 * (n_in + n_out)
    if solver in ("admm", "split_admm") and weight.ndim == 4 and len(act_shape) == 3:
        m = weight.shape[1] if weight.shape[0] == act_shape[0] else weight.shape[0]
        grid = n_in // max(act_shape[0], 1) * 4        # the (extended) FFT grid
        fixed += grid * (m * m + 2 * m + 2 * act_shape[0]) * 16
    if solver in ("cd", "scipy", "cvxpy"):
        fixed += n_in * n_out * 8 * (8 if solver == "cvxpy" else 3)
    return fixed, per_sample


def _post_inverter(est, ctx):
    if not hasattr(est, "anchor_"):
        return
    op = getattr(est, "operator_", None)
    need(op is not None and tuple(op.output_shape) == tuple(est.output_shape_),
         f"the layer maps activations of shape {tuple(est.activation_shape_)} to "
         f"{None if op is None else tuple(op.output_shape)}, not to output_shape_ "
         f"{tuple(est.output_shape_)}")
    if type(est).__name__ == "FinalLayerInverter":
        # (a SkipInverter's operator adds the skip image: its own checks are its fit's)
        why = make_solver(est.solver_).supports(op)
        need(why is None, f"solver_ {est.solver_!r} {why}")
        _check_derived(est, op)


def _check_derived(est, op):
    """What the inverter derives from its layer agrees with the layer.

    ``lipschitz_`` sets the solvers' steps (too small: FISTA diverges; not
    positive: ADMM's factorisation fails) and ``bias_`` and ``_anchor_image``
    shift every target: edited, they would change every score.
    """
    import torch

    weight = op.weight
    upper = float(weight.abs().sum()) ** 2        # ||W||_2 <= sum |w| (Young)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        v = torch.randn((1, op.n_inputs), generator=gen, dtype=torch.float64)
        lower = 0.0
        for _ in range(3):                        # Rayleigh quotients <= lambda_max
            v = v / max(float(v.norm()), 1e-300)
            u = op.rmatvec(op.matvec(v))
            lower = max(lower, float((u * v).sum()))
            v = u
        anchor_image = op.matvec(torch.from_numpy(
            np.asarray(est.anchor_, dtype=np.float64))[None])[0].numpy()
    lip = float(est.lipschitz_)
    need(upper > 0 and lower * (1 - 1e-6) <= lip <= upper * (1 + 1e-6) + 1e-300,
         f"lipschitz_ {lip:.6g} is not the layer's (between {lower:.6g} and {upper:.6g})")
    bias = layer_adapter(est.layer).bias_per_output(est.layer, op.output_shape)
    if getattr(est, "bias_", None) is not None:
        need(bias.shape == est.bias_.shape and np.allclose(est.bias_, bias, rtol=1e-6,
                                                           atol=1e-6),
             "bias_ is not the layer's bias")
    if getattr(est, "_anchor_image", None) is not None:
        scale = max(float(np.abs(anchor_image).max(initial=0.0)), 1.0)
        need(np.allclose(est._anchor_image, anchor_image, rtol=1e-5, atol=1e-6 * scale),
             "_anchor_image is not the layer applied to anchor_")


def _post_ensemble(est, rep):
    """The networks after the first: as many as ``n_networks`` says, as many centres,
    and one distance scale each, in the range a fit gives."""
    extra = getattr(est, "extra_networks_", [])
    need(isinstance(extra, list), "extra_networks_ is not a list")
    # n_networks is checked against MAX_NETWORKS with the other parameters
    need(est.n_networks == len(extra) + 1, f"n_networks is {est.n_networks} but the "
         f"detector holds {len(extra) + 1} networks")
    centers = getattr(est, "extra_centers_", None)
    if centers is not None:
        centers = array(centers, "extra_centers_", ndim=2)
        need(centers.shape == (len(extra), rep), f"extra_centers_ has shape "
             f"{centers.shape}, for {len(extra)} further networks of {rep} outputs")
    else:
        need(not extra, "the detector has further networks but no extra_centers_")
    scales = getattr(est, "distance_scales_", None)
    if scales is None:
        need(not extra, "the detector has further networks but no distance_scales_")
        return
    need(bool(extra), "distance_scales_ is set for a single network (its distance is "
                      "used as it is)")
    scales = array(scales, "distance_scales_", ndim=1)
    # a median squared distance of float32 networks: a scale near a float's ends
    # turns every score infinite or every sample into G's
    need(scales.shape == (len(extra) + 1,) and bool((scales >= 1e-30).all())
         and bool((scales <= 1e30).all()),
         f"distance_scales_ must hold one scale in [1e-30, 1e30] per network "
         f"({len(extra) + 1})")
    need(float(scales.max() / scales.min()) <= 1e6,
         "distance_scales_ differ by more than 1e6 between networks of one ensemble")


def _pre_detector(state, ctx):
    spec = state.get("_network_spec")
    if spec is not None:
        need(isinstance(spec, dict) and spec.get("kind") in ("mlp", "lenet")
             and isinstance(spec.get("kwargs"), dict),
             "the detector's network description is not a built-in network's")
        net_state = state.get("_network_state")
        _check_network_state(net_state, "network")
        extra = state.get("_extra_network_states")
        if extra is not None:
            need(isinstance(extra, list), "the detector's further networks are not a list")
            for i, other in enumerate(extra):
                _check_network_state(other, f"network {i + 2}")
                # every network of an ensemble is built from the one spec
                need({k: v.shape for k, v in other.items()}
                     == {k: v.shape for k, v in net_state.items()},
                     f"the detector's network {i + 2} has other weights than its first")
    else:
        need("_network_state" not in state and "_extra_network_states" not in state,
             "the detector has network weights but no network description")
    need("_network_module" not in state and "_extra_network_modules" not in state,
         "the detector holds a torch module")


def _check_network_state(net_state, what):
    need(isinstance(net_state, dict) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "fiu"
        and (v.dtype.kind != "f" or np.isfinite(v).all())
        for k, v in net_state.items()),
        f"the detector's {what} state is not a dict of finite arrays")
    # batch norm divides by sqrt(running_var + eps): a negative variance scores NaN
    need(all(bool((v >= 0).all()) for k, v in net_state.items()
             if k.endswith("running_var")),
         f"the detector's {what} has a negative batch-norm running_var")


def _post_detector(est, ctx):
    if not hasattr(est, "center_"):
        return
    net = getattr(est, "network_", None)
    need(net is not None, "the fitted detector has no network")
    n = est.n_features_in_
    need(_is_int(n) and n >= 1, "n_features_in_ is not a positive integer")
    spec = est._network_spec
    kw = spec["kwargs"]
    if spec["kind"] == "mlp":
        need(kw.get("n_features") == n, f"the network takes {kw.get('n_features')} "
                                        f"features, the detector {n}")
    else:
        need(_prod(shape_tuple(kw.get("input_shape"), "the network's input_shape")) == n,
             "the network's input_shape does not match n_features_in_")
    rep = kw.get("rep_dim")
    center = array(est.center_, "center_", ndim=1)
    need(center.shape == (rep,), f"center_ has shape {center.shape}, the network outputs "
                                 f"{rep} values")
    _post_ensemble(est, rep)
    _post_conformal(est, ctx)
    scale = getattr(est, "score_scale_", None)
    if scale is not None:
        s = np.asarray(scale, dtype=float)
        need(s.ndim == 2 and s.shape[1] == 2 and np.isfinite(s).all()
             and (s[:, 1] > 0).all(), "score_scale_ must be finite (location, scale>0) pairs")
    one = getattr(est, "one_class_", None)
    if one is not None:
        need(getattr(one, "n_features_in_", None) == n,
             f"one_class_ takes {getattr(one, 'n_features_in_', None)} features, the "
             f"detector {n}")


def _post_pooling(est, ctx):
    if not hasattr(est, "output_shape_"):
        return
    c, h, w = shape_tuple(est.input_shape_, "input_shape_", ndim=(3,))
    need(est.n_features_in_ == c * h * w, "input_shape_ does not match n_features_in_")
    if est.method == "center_crop":
        oc, oh, ow = shape_tuple(est.output_shape_, "output_shape_", ndim=(3,))
        need(oc == c and oh <= h and ow <= w, "output_shape_ is not a crop of input_shape_")
    else:
        kh, kw = shape_tuple(est._kernel, "_kernel", ndim=(2,))
        need(kh <= h and kw <= w and tuple(est.output_shape_) == (c, h // kh, w // kw),
             "output_shape_ does not follow from input_shape_ and the kernel")
    need(est._n_features_out == _prod(est.output_shape_),
         "_n_features_out does not match output_shape_")


def _post_dct(est, ctx):
    need(est.block_size is None or _is_int(est.block_size),
         f"block_size must be a positive integer or None, got {str(est.block_size)[:40]}")
    if not hasattr(est, "input_shape_"):
        return
    c, h, w = shape_tuple(est.input_shape_, "input_shape_", ndim=(3,))
    need(est.n_features_in_ == c * h * w, "input_shape_ does not match n_features_in_")


def _post_selector(est, ctx):
    if not hasattr(est, "channels_"):
        return
    c, h, w = shape_tuple(est.input_shape_, "input_shape_", ndim=(3,))
    need(est.n_features_in_ == c * h * w, "input_shape_ does not match n_features_in_")
    ch = array(est.channels_, "channels_", kind="iu", ndim=1)
    need(ch.size >= 1 and (ch >= 0).all() and (ch < c).all()
         and np.unique(ch).size == ch.size, f"channels_ must be distinct channels of {c}")


def _post_scaler(est, ctx):
    if not hasattr(est, "scale_"):
        return
    n = est.n_features_in_
    need(_is_int(n) and n >= 1, "n_features_in_ is not a positive integer")
    for key in ("mean_", "scale_"):
        v = getattr(est, key)
        if v is None:
            continue
        array(v, key, shape=(n,))
    if est.scale_ is not None:
        need((est.scale_ > 0).all(), "scale_ must be positive")
    _float32_standardisation(est)


def _float32_standardisation(est):
    """The detector scores the standardised features in float32: a ``mean_`` or
    ``1 / scale_`` beyond 1e30 (never fitted on float32 activations) would overflow
    them to infinity and fail the detector's input check."""
    mean = getattr(est, "mean_", None)
    scale = getattr(est, "scale_", None)
    scale = np.ones(1) if scale is None else np.asarray(scale, dtype=np.float64)
    limit = 1e30
    need((1.0 / scale <= limit).all() and (mean is None or (
        np.abs(np.asarray(mean, dtype=np.float64)) / scale <= limit).all()),
         "mean_ and scale_ would standardise features beyond float32's range")


def _post_svm(est, ctx):
    """Everything libsvm reads (it trusts the shapes: a mismatch reads out of bounds)."""
    if not hasattr(est, "support_vectors_"):
        return
    need(est._sparse is False, "a sparse OneClassSVM is not supported in files")
    sv = array(est.support_vectors_, "support_vectors_", kind="f", ndim=2)
    n_sv, d = sv.shape
    need(sv.dtype == np.float64 and sv.flags.c_contiguous,
         "support_vectors_ must be C-contiguous float64")
    need(est.n_features_in_ == d, f"support_vectors_ has {d} features, n_features_in_ "
                                  f"{est.n_features_in_}")
    array(est.support_, "support_", kind="i", shape=(n_sv,))
    need(est.support_.dtype == np.int32, "support_ must be int32")
    ns = array(est._n_support, "_n_support", kind="i", shape=(2,))
    need(ns.dtype == np.int32 and int(ns[0]) == n_sv and 0 <= int(ns[1]) <= n_sv,
         f"_n_support {ns.tolist()} does not count the {n_sv} support vectors")
    for key in ("_dual_coef_", "dual_coef_"):
        v = array(getattr(est, key), key, shape=(1, n_sv))
        need(v.dtype == np.float64 and v.flags.c_contiguous, f"{key} must be float64")
    for key in ("_intercept_", "intercept_", "offset_"):
        v = array(np.atleast_1d(getattr(est, key)), key, shape=(1,))
        need(v.dtype == np.float64, f"{key} must be float64")
    for key in ("_probA", "_probB"):
        array(getattr(est, key), key, shape=(0,))
    need(est.kernel in ("linear", "poly", "rbf", "sigmoid"),
         f"kernel {str(est.kernel)[:20]!r} is not supported in files")
    real(est._gamma, "_gamma", 0, math.inf)
    need(_is_int(est.degree) and 0 <= est.degree <= 100, "degree must be in [0, 100]")
    real(est.coef0, "coef0")
    shape = est.shape_fit_
    need(isinstance(shape, tuple) and len(shape) == 2 and shape[1] == d,
         "shape_fit_ does not match support_vectors_")
    need(est.fit_status_ == 0, "fit_status_ is not 0 (the fit failed)")


def _post_gaussian(est, ctx):
    if not hasattr(est, "precision_"):
        return
    n = est.n_features_in_
    need(_is_int(n) and n >= 1, "n_features_in_ is not a positive integer")
    array(est.location_, "location_", shape=(n,))
    P = array(est.precision_, "precision_", shape=(n, n))
    need(P.dtype == np.float64 and np.array_equal(P, P.T),
         "precision_ must be a symmetric float64 matrix")
    log_det = real(est.log_det_, "log_det_")
    real(est.shrinkage_, "shrinkage_", 0.0, 1.0)
    # a precision with a negative eigenvalue scores far samples as typical (a negative
    # distance), and log_det_ shifts every score: both must be the fitted covariance's
    eig = np.linalg.eigvalsh(P)
    need(eig[0] > 0, "precision_ must be positive definite")
    need(abs(log_det + float(np.sum(np.log(eig)))) <= 1e-8 * n * (1.0 + abs(log_det)),
         "log_det_ is not the log-determinant of the covariance precision_ inverts")


def _check_threshold(det, what, *, bound_required=True):
    """The threshold, ``offset_`` and ``fnr_bound_`` follow from the held-out scores and
    ``fnr`` (the union's ``fnr_bound_`` is the sum of its detectors').

    A verdict is evidence: a file whose threshold was edited would accept (or
    reject) whatever its author chose while reporting the conformal guarantee.
    ``bound_required=False``: files written before ``fnr_bound_`` existed.
    """
    v = array(det.validation_scores_, f"{what}'s validation_scores_", ndim=1)
    need(v.size >= 1 and bool(np.all(v[:-1] <= v[1:])),
         f"{what}'s validation_scores_ must be sorted held-out scores")
    fnr = real(det.fnr, f"{what}'s fnr", 0.0, 1.0)
    t = real(det.threshold_, f"{what}'s threshold_")
    need(real(det.offset_, f"{what}'s offset_") == -t, f"{what}'s offset_ is not -threshold_")
    if bound_required or hasattr(det, "fnr_bound_"):
        need(real(det.fnr_bound_, f"{what}'s fnr_bound_") == fnr_bound(v.size, fnr),
             f"{what}'s fnr_bound_ does not follow from its fnr and held-out scores")
    k = min(_rank(v.size, fnr), v.size)
    # the detector moves its threshold by a relative float margin (1e-5 for float32
    # scores, _threshold_margin) so that the sample at the quantile keeps its verdict
    try:
        m = float(det._threshold_margin())
    except (AttributeError, StopIteration):     # no network (parameters) to read the dtype
        m = 1e-5
    q = -float(v[v.size - k])
    need(abs(t - q) <= max(1e-9, 1.01 * m) * max(abs(q), 1e-12),
         f"{what}'s threshold_ is not the conformal quantile of its held-out scores")


def _post_conformal(est, ctx):
    """A conformal detector's threshold is the quantile of its held-out scores."""
    for key in ("threshold_", "offset_"):
        if hasattr(est, key):
            real(getattr(est, key), key)
    scores = getattr(est, "validation_scores_", None)
    if scores is not None:
        array(scores, "validation_scores_", ndim=1)
        need(scores.size >= 1 or not (hasattr(est, "threshold_") or hasattr(est, "offset_")),
             "validation_scores_ is empty but the detector has a threshold")
    kinds = getattr(est, "n_calibration_kinds_", 1)     # absent in older files: 1
    need(_is_int(kinds) and 1 <= kinds <= 10_000,
         "n_calibration_kinds_ must be a positive integer (the kinds of perturbation "
         "the threshold's held-out scores were the lowest over)")
    if hasattr(est, "threshold_") or hasattr(est, "offset_"):
        # predict reads offset_: a threshold without the held-out scores it is the
        # quantile of (or an offset_ without threshold_) cannot be checked
        need(hasattr(est, "threshold_") and hasattr(est, "offset_") and scores is not None,
             "the detector's threshold_, offset_ and validation_scores_ go together")
        _check_threshold(est, "the detector", bound_required=False)
    elif hasattr(est, "network_") or hasattr(est, "estimator_"):
        need(scores is not None and scores.size == 0,
             "the fitted detector has neither a threshold nor empty held-out scores")


def _post_union(est, ctx):
    if not hasattr(est, "estimators_"):
        return
    pairs = est.estimators_
    need(isinstance(pairs, list) and len(pairs) >= 1 and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in pairs),
        "the union's estimators_ are not (name, estimator) pairs")
    m = len(pairs)
    for name, member in pairs:
        det, _ = _unwrap(member)
        need(isinstance(det, ConformalDecisionMixin) and hasattr(det, "threshold_"),
             f"the union's detector {name[:40]!r} is not a fitted conformal detector")
        _check_threshold(det, f"the union's detector {name[:40]!r}")
    w = array(est.weights_, "weights_", shape=(m,))
    need((w > 0).all() and abs(float(w.sum()) - 1.0) <= 1e-9,
         "weights_ must be positive shares that sum to 1")
    s = array(est.scales_, "scales_", shape=(m,))
    need((s > 0).all(), "scales_ must be positive")
    real(est.offset_, "offset_")
    ins = {getattr(member, "n_features_in_", None) for _, member in pairs}
    need(len(ins) == 1, "the union's detectors take different numbers of features")


def _post_standard_scaler(est, ctx):
    if not hasattr(est, "n_features_in_"):
        return
    n = est.n_features_in_
    need(_is_int(n) and n >= 1, "n_features_in_ is not a positive integer")
    for key in ("mean_", "var_", "scale_"):
        v = getattr(est, key, None)
        if v is not None:
            array(v, key, shape=(n,))
    if getattr(est, "scale_", None) is not None:
        need((est.scale_ > 0).all(), "scale_ must be positive")


def _post_pipeline(est, ctx):
    steps = est.steps
    need(isinstance(steps, list) and len(steps) >= 1 and all(
        isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) for s in steps),
        "the pipeline's steps are not (name, estimator) pairs")
    est._validate_steps()
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    fitted = []
    for _, step in steps:
        try:
            check_is_fitted(step)
            fitted.append(True)
        except NotFittedError:
            fitted.append(False)
        except TypeError:               # "passthrough" or None
            fitted.append(None)
    if any(fitted):
        need(all(f is not False for f in fitted), "some of the pipeline's steps are fitted "
                                                  "and others are not")
    # the features each fitted step makes are the ones the next one takes
    for (a, first), (b, then) in zip(steps, steps[1:]):
        made = _n_out(first)
        takes = getattr(then, "n_features_in_", None)
        if made is not None and takes is not None:
            need(made == takes, f"step {a!r} makes {made} features, step {b!r} takes "
                                f"{takes}")


def _n_out(est):
    name = type(est).__name__
    if name in ("FinalLayerInverter", "SkipInverter") and hasattr(est, "anchor_"):
        return est.anchor_.size
    if name == "ActivationPooling" and hasattr(est, "_n_features_out"):
        return est._n_features_out
    if name == "ChannelSelector" and hasattr(est, "channels_"):
        c, h, w = est.input_shape_
        return len(est.channels_) * h * w
    if name == "DCTFeatures" and hasattr(est, "input_shape_"):
        return est.n_features_in_ + (0 if est.block_size is None else
                                     n_tile_features(est.input_shape_, est.block_size))
    if name in ("GeneratorStandardScaler", "StandardScaler") \
            and hasattr(est, "n_features_in_"):
        return est.n_features_in_
    return None


def check_root(est, ctx):
    """The file's arrays and the scoring memory of its inverters, within the budget."""
    need(ctx.used + ctx.scoring <= ctx.max_bytes,
         f"its arrays ({gib(ctx.used)}) and the memory scoring one batch needs (about "
         f"{gib(ctx.scoring)}) exceed max_bytes={ctx.max_bytes} ({gib(ctx.max_bytes)}); "
         "load it with a larger max_bytes (flipad: --max-memory) only if you trust it")
    return est


#: The fitted attributes each estimator's scoring reads.
_FITTED = {
    "FinalLayerInverter": ("n_features_in_", "activation_shape_", "anchor_", "output_shape_",
                           "bias_", "_anchor_image", "lipschitz_", "solver_",
                           "batch_size_", "operator_"),
    "ActivationPooling": ("n_features_in_", "input_shape_", "output_shape_",
                          "_n_features_out"),
    "ChannelSelector": ("n_features_in_", "input_shape_", "channels_"),
    "DCTFeatures": ("n_features_in_", "input_shape_"),
    "GeneratorStandardScaler": ("n_features_in_", "mean_", "scale_"),
    # threshold_ and offset_: absent when uncalibrated (validation_size=0), _post_conformal
    "FLIPADDetector": ("n_features_in_", "center_", "network_", "_network_spec"),
    "OneClassSVM": ("n_features_in_", "support_", "support_vectors_", "_n_support",
                    "dual_coef_", "_dual_coef_", "intercept_", "_intercept_", "offset_",
                    "_probA", "_probB", "_gamma", "_sparse", "shape_fit_", "fit_status_"),
    "StandardScaler": ("n_features_in_", "mean_", "scale_"),
    "GaussianDensity": ("n_features_in_", "location_", "precision_", "log_det_",
                        "shrinkage_"),
    "ConformalUnion": ("estimators_", "weights_", "scales_", "offset_"),
}

_PRE = {"FinalLayerInverter": _pre_inverter, "FLIPADDetector": _pre_detector}
_POST = {
    "FinalLayerInverter": _post_inverter,
    "FLIPADDetector": _post_detector,
    "ConformalDetector": _post_conformal,
    "ActivationPooling": _post_pooling,
    "ChannelSelector": _post_selector,
    "DCTFeatures": _post_dct,
    "GeneratorStandardScaler": _post_scaler,
    "OneClassSVM": _post_svm,
    "StandardScaler": _post_standard_scaler,
    "GaussianDensity": _post_gaussian,
    "ConformalUnion": _post_union,
    "Pipeline": _post_pipeline,
}
