"""Deprecated alias of :mod:`flipad_sklearn.detection.deepsad` (removed in the next release)."""

from .._deprecated import alias

alias(__name__, "flipad_sklearn.detection.deepsad", submodules=("detector", "networks"))
