"""Deprecated alias of :mod:`flipad_sklearn.inversion.skip` (removed in the next release)."""

from ._deprecated import alias

alias(__name__, "flipad_sklearn.inversion.skip")
