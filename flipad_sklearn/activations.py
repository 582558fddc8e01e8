"""Invertible element-wise output activations of a generator's last layer.

``x = sigma(W h + b)``: the inverter needs ``sigma^-1`` to recover the
pre-activation ``W h + b``.  Outputs at the edge of sigma's range (a saturated
tanh returns exactly +-1 in float32) have no finite inverse, so they are first
clipped into the open range by ``clip_eps``: for tanh into
``[-1 + eps, 1 - eps]``, for sigmoid into ``[eps, 1 - eps]``.

Clipping is right for the few saturated outputs of a generator, and wrong
for inputs on another scale (``uint8`` images, floats in ``[0, 255]``): they
would all be clipped to the edge of the range and lose their content.  So
:meth:`OutputActivation.check_dtype` refuses integer inputs of a bounded
activation and :meth:`OutputActivation.check_range` warns
(:class:`~flipad_sklearn.exceptions.OutOfRangeWarning`) when more than
``OUT_OF_RANGE_SHARE`` of the values lie outside the range.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .exceptions import OutOfRangeWarning

DEFAULT_CLIP_EPS = 1e-6
# Above this share of values outside sigma's range, the input is on another
# scale (a generator's own outputs sit inside it, up to float rounding).
OUT_OF_RANGE_SHARE = 0.01
# Values this far (relative to the range's width) beyond an edge count as outside.
RANGE_TOLERANCE = 1e-4
# Fewest samples for which "no value below 0" means images in [0, 1] given to tanh.
MIN_SAMPLES_HALF_RANGE = 2
# "Below 0" for that check: rounding [0, 1] images to the 8-bit grid of [-1, 1] can
# move 0 to -1/255, and a tanh generator's dark pixels are far below -0.02.
HALF_RANGE_SLACK = 0.02


def _dtype_kinds(X):
    """The numpy dtype kinds of ``X`` (several for a DataFrame), without copying."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and not hasattr(X, "dtype"):        # a DataFrame
        return {getattr(d, "kind", "O") for d in dtypes}
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(X).dtype
        except (TypeError, ValueError):
            return set()                                      # validation reports it
    return {getattr(dtype, "kind", "O")}


def check_value_range(X, low, high, *, what="X", name="", scaling=""):
    """Warn with :class:`OutOfRangeWarning` when many values of ``X`` are outside.

    Parameters
    ----------
    X : ndarray
        Validated float input.
    low, high : float
        The expected closed range (``-inf``/``inf`` for an open side).
    what : str
        Who received ``X`` (for the message).
    name : str
        Name of the range (e.g. ``"tanh"``), for the message.
    scaling : str
        How to scale inputs into the range, for the message.

    Returns
    -------
    share : float
        The share of values outside ``[low, high]``.
    """
    X = np.asarray(X)
    if X.size == 0 or not (np.isfinite(low) or np.isfinite(high)):
        return 0.0
    width = (high - low) if np.isfinite(high - low) else 1.0
    tol = RANGE_TOLERANCE * width
    outside = (X < low - tol) | (X > high + tol)
    share = float(outside.mean())
    if share > OUT_OF_RANGE_SHARE:
        rng = f"[{low:g}, {high:g}]"
        warnings.warn(
            f"{share:.1%} of the values of X given to {what} lie outside {rng}"
            f"{f', the range of {name}' if name else ''} (min {float(X.min()):.4g}, "
            f"max {float(X.max()):.4g}). They are clipped into it, so they lose their "
            f"content: the input is probably on another scale. {scaling}",
            OutOfRangeWarning,
            stacklevel=3,
        )
    return share


def check_unused_lower_half(X, *, what="X"):
    """Warn when inputs of a tanh model never go below 0: images scaled to ``[0, 1]``.

    ``[0, 1]`` images lie inside tanh's range ``[-1, 1]``, so the out-of-range
    check says nothing, yet they are not G's samples on G's scale: a tanh
    generator's samples use both signs (dark pixels are negative), and read
    on the wrong scale every image looks alike to the detector (issue 27:
    acceptance of an unseen generator rose from 0.48 to 0.84).  Only a batch
    decides: at least ``MIN_SAMPLES_HALF_RANGE`` samples, none below 0 (up to
    ``HALF_RANGE_SLACK``, for an 8-bit rounding of 0) and
    some value above 0.5; a single bright image of G does not warn.

    Returns
    -------
    warned : bool
    """
    X = np.asarray(X)
    n = X.shape[0] if X.ndim >= 2 else 1
    if n < MIN_SAMPLES_HALF_RANGE or X.size == 0:
        return False
    lo, hi = float(X.min()), float(X.max())
    if lo < -HALF_RANGE_SLACK or hi <= 0.5:
        return False
    warnings.warn(
        f"No value of the {n} samples of X given to {what} is below 0 (min {lo:.4g}, "
        f"max {hi:.4g}), but the generator's tanh outputs lie in [-1, 1] and its "
        "samples use both signs: these look like images scaled to [0, 1] (x / 255). "
        "Scale images to tanh's range: x / 127.5 - 1 for 8-bit pixels, 2 * x - 1 for "
        "[0, 1] floats; read on the wrong scale, images of other sources look like G's.",
        OutOfRangeWarning,
        stacklevel=4,
    )
    return True


@dataclass(frozen=True)
class OutputActivation:
    """Forward map, inverse map and the open range of an output activation."""

    name: str
    forward: object
    inverse: object
    low: float = -np.inf
    high: float = np.inf
    scaling: str = ""
    #: ``sigma'(sigma^-1(x))`` as a function of the output ``x`` (builtins), or None
    slope_of_output: object = None
    #: the largest slope (builtins), or None
    max_slope: object = None

    @property
    def bounded(self):
        return bool(np.isfinite(self.low) or np.isfinite(self.high))

    def check_dtype(self, X, what="FinalLayerInverter"):
        """Refuse integer (and boolean) ``X`` for a bounded activation.

        Integer images (``uint8`` pixels in ``[0, 255]``) are not in the range
        of tanh or sigmoid; converted to float they would be clipped into it.
        Called on the raw input, before its conversion to float.
        """
        if not self.bounded:
            return
        kinds = _dtype_kinds(X)
        if kinds & set("biu"):
            dtype = getattr(X, "dtype", None) or "integer"
            raise ValueError(
                f"X given to {what} has {dtype} dtype, but the {self.name} activation "
                f"outputs floats in [{self.low:g}, {self.high:g}]: integer images would "
                f"be clipped into that range and lose their content. {self.scaling}"
            )

    def check_range(self, X, what="FinalLayerInverter"):
        """Warn (:class:`OutOfRangeWarning`) when more than 1% of ``X`` is out of range.

        Returns the share of values outside ``[low, high]``.
        """
        share = check_value_range(X, self.low, self.high, what=what, name=self.name,
                                  scaling=self.scaling)
        if self.name == "tanh" and share <= OUT_OF_RANGE_SHARE:
            check_unused_lower_half(X, what=what)
        return share

    def invert(self, x, clip_eps=DEFAULT_CLIP_EPS):
        """``sigma^-1(clip(x))`` as float64."""
        x = np.asarray(x, dtype=np.float64)
        if np.isfinite(self.low) or np.isfinite(self.high):
            x = np.clip(x, self.low + clip_eps, self.high - clip_eps)
        out = np.asarray(self.inverse(x), dtype=np.float64)
        if out.shape != x.shape:
            raise ValueError(
                f"The inverse of activation {self.name!r} changed the shape "
                f"{x.shape} into {out.shape}; it must act element-wise."
            )
        if not np.all(np.isfinite(out)):
            raise ValueError(
                f"The inverse of activation {self.name!r} gave non-finite values: "
                "the inputs are outside its range."
            )
        return out

    def slope(self, x, clip_eps=DEFAULT_CLIP_EPS):
        """``sigma'(sigma^-1(clip(x)))``: how far an output moves per unit of its pre-activation.

        The weights of the output-space data term (``datafit="output"``):
        tanh gives ``1 - x^2``, sigmoid ``x (1 - x)``, identity 1.  A custom
        ``(forward, inverse)`` pair is differentiated numerically (central
        difference at the inverted value); an inverse alone cannot be.
        """
        x = np.asarray(x, dtype=np.float64)
        if self.bounded:
            x = np.clip(x, self.low + clip_eps, self.high - clip_eps)
        if self.slope_of_output is not None:
            return np.asarray(self.slope_of_output(x), dtype=np.float64)
        if self.forward is None:
            raise ValueError(
                f"Activation {self.name!r} was given as an inverse only, so its slope is "
                "unknown; pass activation=(forward, inverse) to use datafit='output'."
            )
        u = self.invert(x, clip_eps)
        h = 1e-4 * np.maximum(1.0, np.abs(u))
        out = (self.apply(u + h) - self.apply(u - h)) / (2 * h)
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise ValueError(
                f"The slope of activation {self.name!r} is not finite and non-negative "
                "on these outputs; datafit='output' needs an increasing activation."
            )
        return out

    def apply(self, u):
        if self.forward is None:
            raise ValueError(
                f"Activation {self.name!r} was given as an inverse only; pass "
                "activation=(forward, inverse) to use inverse_transform."
            )
        return np.asarray(self.forward(np.asarray(u, dtype=np.float64)), dtype=np.float64)


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _logit(x):
    return np.log(x) - np.log1p(-x)


def _identity(x):
    return x


TANH_SCALING = "Scale 8-bit images in [0, 255] with X / 127.5 - 1 for a tanh generator."
SIGMOID_SCALING = "Scale 8-bit images in [0, 255] with X / 255 for a sigmoid generator."


def _tanh_slope(x):
    return 1.0 - x * x


def _sigmoid_slope(x):
    return x * (1.0 - x)


def _identity_slope(x):
    return np.ones_like(x)


BUILTIN_ACTIVATIONS = {
    "tanh": OutputActivation("tanh", np.tanh, np.arctanh, -1.0, 1.0, TANH_SCALING,
                             _tanh_slope, 1.0),
    "sigmoid": OutputActivation("sigmoid", _sigmoid, _logit, 0.0, 1.0, SIGMOID_SCALING,
                                _sigmoid_slope, 0.25),
    "identity": OutputActivation("identity", _identity, _identity,
                                 slope_of_output=_identity_slope, max_slope=1.0),
}

# torch spellings of the builtin activations: the forward module or function
# (how a generator is written) and the torch inverse.  Compared by identity.
_TORCH_MODULES = ((nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.Identity, "identity"))
_TORCH_FUNCTIONS = (
    (torch.tanh, "tanh"), (F.tanh, "tanh"), (torch.Tensor.tanh, "tanh"),
    (torch.atanh, "tanh"), (torch.arctanh, "tanh"), (torch.Tensor.atanh, "tanh"),
    (torch.sigmoid, "sigmoid"), (F.sigmoid, "sigmoid"), (torch.special.expit, "sigmoid"),
    (torch.Tensor.sigmoid, "sigmoid"), (torch.logit, "sigmoid"),
    (torch.special.logit, "sigmoid"), (torch.Tensor.logit, "sigmoid"),
)


def _torch_builtin(activation):
    """The builtin name of a torch activation, None if ``activation`` is not torch's."""
    module_cls = activation if isinstance(activation, type) else type(activation)
    if isinstance(activation, nn.Module) or (
            isinstance(activation, type) and issubclass(activation, nn.Module)):
        for cls, name in _TORCH_MODULES:
            if issubclass(module_cls, cls):
                return name
        raise ValueError(
            f"activation={module_cls.__name__} is not an invertible output activation "
            f"FinalLayerInverter knows ({', '.join(c.__name__ for c, _ in _TORCH_MODULES)}"
            "); pass activation=(forward, inverse) with numpy functions for another one."
        )
    for fn, name in _TORCH_FUNCTIONS:
        if activation is fn:
            return name
    return None


# Probe inside the ranges of tanh, sigmoid and identity (and the domains of
# their inverses), to recognise a forward map given where an inverse is expected.
_PROBE = np.linspace(0.05, 0.95, 19)
_FORWARDS = (("tanh", np.tanh), ("sigmoid", _sigmoid))


def _probe(f, role):
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(f(_PROBE.copy()), dtype=np.float64)
    except Exception as exc:
        raise TypeError(
            f"The activation's {role} {getattr(f, '__name__', f)!r} failed on a float64 "
            f"numpy array ({type(exc).__name__}: {exc}); a callable activation must "
            "accept and return numpy arrays, element-wise."
        ) from exc
    return out if out.shape == _PROBE.shape else None


def _is_forward_of(values):
    """Name of the builtin whose forward map ``values`` reproduces on the probe."""
    if values is None:
        return None
    for name, forward in _FORWARDS:
        if np.allclose(values, forward(_PROBE), rtol=1e-6, atol=1e-8):
            return name
    return None


def _callable_name(f):
    name = getattr(f, "__name__", None)
    if name is None:
        return repr(f)
    module = getattr(f, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else name


def _check_inverse(inverse):
    name = _is_forward_of(_probe(inverse, "inverse"))
    if name is not None:
        raise ValueError(
            f"activation={_callable_name(inverse)} computes {name} itself "
            f"(the forward map), but a callable activation is taken as the inverse "
            f"sigma^-1 of the generator's output activation. Use activation={name!r} "
            "(or the pair (forward, inverse))."
        )


def _check_pair(forward, inverse):
    if _is_forward_of(_probe(inverse, "inverse")) is not None \
            and _is_forward_of(_probe(forward, "forward")) is None:
        raise ValueError(
            "activation=(forward, inverse): the second function is a forward map "
            "(tanh or sigmoid); the pair looks swapped. Pass (forward, inverse), "
            "e.g. (np.tanh, np.arctanh), or simply activation='tanh'."
        )
    # inverse(forward(u)) must give u back where both are defined
    u = np.linspace(-2.0, 2.0, 17)
    with np.errstate(all="ignore"):
        try:
            back = np.asarray(inverse(np.asarray(forward(u), dtype=np.float64)),
                              dtype=np.float64)
        except Exception:
            return                       # reported on use, with the real input
    if back.shape != u.shape:
        return
    ok = np.isfinite(back)
    if ok.any() and not np.allclose(back[ok], u[ok], rtol=1e-5, atol=1e-6):
        i = int(np.argmax(np.where(ok, np.abs(back - u), -1.0)))
        raise ValueError(
            "activation=(forward, inverse): the two functions are not inverse to each "
            f"other: inverse(forward({u[i]:g})) = {back[i]:.6g}."
        )


def get_activation(activation):
    """Resolve the ``activation`` parameter of :class:`FinalLayerInverter`.

    ``"tanh"``, ``"sigmoid"``, ``"identity"``, a callable (the inverse, applied
    to the raw outputs with no clipping) or a ``(forward, inverse)`` pair.
    Callables must be importable functions for the inverter to pickle.

    torch's spellings of the builtin activations are read as the builtin one:
    modules (``nn.Tanh()``, ``nn.Sigmoid()``, ``nn.Identity()`` or their
    classes) and functions (``torch.tanh``, ``F.sigmoid``, ``torch.atanh``,
    ``torch.logit``, ...), whether the forward map or the inverse is given.
    A numpy callable that computes tanh or sigmoid itself (``np.tanh``, the
    forward map where the inverse is expected) is refused, as is a pair whose
    functions are swapped or not inverse to each other.
    """
    name = _torch_builtin(activation)
    if name is not None:
        return BUILTIN_ACTIVATIONS[name]
    if isinstance(activation, str):
        try:
            return BUILTIN_ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"Unknown activation {activation!r}; use one of "
                f"{sorted(BUILTIN_ACTIVATIONS)}, a callable inverse or a "
                "(forward, inverse) pair."
            ) from None
    if callable(activation):
        _check_inverse(activation)
        name = getattr(activation, "__name__", "custom")
        return OutputActivation(name, None, activation)
    if (isinstance(activation, tuple) and len(activation) == 2
            and all(callable(f) for f in activation)):
        forward, inverse = (_torch_as_numpy(f) for f in activation)
        _check_pair(forward, inverse)
        name = getattr(activation[1], "__name__", "custom")
        return OutputActivation(name, forward, inverse)
    raise ValueError(
        f"activation must be a name, a callable inverse or a (forward, inverse) pair; "
        f"got {activation!r}."
    )


def _torch_as_numpy(f):
    """A torch activation inside a pair is replaced by the builtin numpy one."""
    name = _torch_builtin(f)
    if name is None:
        return f
    act = BUILTIN_ACTIVATIONS[name]
    # a forward function stays a forward; an inverse (atanh, logit) maps to the inverse
    return act.inverse if f in (torch.atanh, torch.arctanh, torch.Tensor.atanh,
                                torch.logit, torch.special.logit,
                                torch.Tensor.logit) else act.forward
