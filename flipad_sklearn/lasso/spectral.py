"""Deprecated: moved to :mod:`flipad_sklearn.operators.spectral` (a capability of the operator)."""

from .._deprecated import moved
from ..operators.spectral import SPECTRAL_MAX_BYTES, SpectralProducts, spectrum_bytes  # noqa: F401

moved("flipad_sklearn.lasso.spectral", "flipad_sklearn.operators.spectral")


def exact_products(op, device):
    """``op.exact_products(device)`` (deprecated spelling)."""
    return op.exact_products(device)
