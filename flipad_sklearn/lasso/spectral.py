"""Deprecated alias of :mod:`flipad_sklearn.operators.spectral` (removed in the next release)."""

from .._deprecated import alias

alias(__name__, "flipad_sklearn.operators.spectral")
