"""Deprecated alias of :mod:`flipad_sklearn.detection.conformal_pipeline`.

Removed in the next release.
"""

from ._deprecated import alias

alias(__name__, "flipad_sklearn.detection.conformal_pipeline")
