"""The estimators that invert a generator's final layer (thin: the math is in the engine).

* :class:`FinalLayerInverter`: FLIPAD's lasso inversion of one final layer;
  its problem of a batch of images is public (:meth:`~FinalLayerInverter.lasso_problem`)
  and solved through :func:`flipad_sklearn.lasso.solve`.
* :class:`SkipInverter`: the same with an upsampled skip image projected out
  (StyleGAN2): two hooks on :class:`FinalLayerInverter`, the operator and the
  targets.
"""

from .final_layer import (
    DEFAULT_FEATURE_TOL, DEFAULT_PROGRESS_TOL, OUTPUT_CLIP_EPS, RIDGE_SCALE, FinalLayerInverter,
)
from .skip import SkipInverter

__all__ = ["DEFAULT_FEATURE_TOL", "DEFAULT_PROGRESS_TOL", "FinalLayerInverter",
           "OUTPUT_CLIP_EPS", "RIDGE_SCALE", "SkipInverter"]
