"""Deprecated: moved to :mod:`flipad_sklearn.operators.skip`."""

from ._deprecated import moved
from .operators.skip import (  # noqa: F401
    UPSAMPLINGS, SkipProjectedOperator, upsample2d, upsampling_matrix,
)

moved("flipad_sklearn.skip_operator", "flipad_sklearn.operators.skip")
