"""Invertible element-wise output activations of a generator's last layer.

``x = sigma(W h + b)``: the inverter needs ``sigma^-1`` to recover the
pre-activation ``W h + b``.  Outputs at the edge of sigma's range (a saturated
tanh returns exactly +-1 in float32) have no finite inverse, so they are first
clipped into the open range by ``clip_eps``: for tanh into
``[-1 + eps, 1 - eps]``, for sigmoid into ``[eps, 1 - eps]``.
"""

from dataclasses import dataclass

import numpy as np

DEFAULT_CLIP_EPS = 1e-6


@dataclass(frozen=True)
class OutputActivation:
    """Forward map, inverse map and the open range of an output activation."""

    name: str
    forward: object
    inverse: object
    low: float = -np.inf
    high: float = np.inf

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


BUILTIN_ACTIVATIONS = {
    "tanh": OutputActivation("tanh", np.tanh, np.arctanh, -1.0, 1.0),
    "sigmoid": OutputActivation("sigmoid", _sigmoid, _logit, 0.0, 1.0),
    "identity": OutputActivation("identity", _identity, _identity),
}


def get_activation(activation):
    """Resolve the ``activation`` parameter of :class:`FinalLayerInverter`.

    ``"tanh"``, ``"sigmoid"``, ``"identity"``, a callable (the inverse, applied
    to the raw outputs with no clipping) or a ``(forward, inverse)`` pair.
    Callables must be importable functions for the inverter to pickle.
    """
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
        name = getattr(activation, "__name__", "custom")
        return OutputActivation(name, None, activation)
    if (isinstance(activation, tuple) and len(activation) == 2
            and all(callable(f) for f in activation)):
        name = getattr(activation[1], "__name__", "custom")
        return OutputActivation(name, activation[0], activation[1])
    raise ValueError(
        f"activation must be a name, a callable inverse or a (forward, inverse) pair; "
        f"got {activation!r}."
    )
