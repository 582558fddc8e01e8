"""Detectors and the one conformal rule they share.

* :mod:`.conformal`: the held-out split, the ``(1 - fnr)`` threshold, p-values
  and :class:`~.conformal.ConformalDecisionMixin`, which every detector of the
  package (and any new one) inherits;
* :mod:`.deepsad`: :class:`~flipad_sklearn.FLIPADDetector` (Deep SAD);
* :mod:`.conformal_detector`: :class:`~flipad_sklearn.ConformalDetector`, any
  scikit-learn outlier detector behind the conformal rule;
* :mod:`.baselines`: the paper's baselines as detectors (fingerprint
  correlation, latent inversion, reconstruction distance);
* :mod:`.conformal_pipeline`: :class:`~flipad_sklearn.ConformalPipeline`, a
  pipeline with the input contract and p-values;
* :mod:`.multi`: :class:`~flipad_sklearn.OwnedModelsAttributor`, one
  detector per owned model;
* :mod:`.union`: :class:`~flipad_sklearn.ConformalUnion`, several detectors
  of one model, made by G only if every one accepts;
* :mod:`.gaussian_density`: :class:`~flipad_sklearn.GaussianDensity`,
  the shrunk Gaussian behind :func:`~flipad_sklearn.make_pixel_guard`.

A new detector is one class: ``ConformalDecisionMixin`` + ``OutlierMixin`` +
``BaseEstimator`` with ``fit`` (``_validation_split`` for the held-out
samples of G, ``_fit_threshold`` on them) and ``score_samples``; ``make_flipad(detector=...)`` takes
it unchanged (``tests/test_extension_points.py``; see
``docs/user_guide/extending.rst``).
"""

from .baselines import FingerprintCorrelation, LatentInversionDistance, ReconstructionDistance
from .conformal import (
    ConformalDecisionMixin, ThresholdWarning, calibrate, calibration_size, conformal_pvalues,
    conformal_threshold, fnr_interval, required_validation_size, union_calibration_size,
    union_fnr_interval,
)
from .conformal_detector import ConformalDetector
from .conformal_pipeline import ConformalPipeline
from .deepsad import FLIPADDetector
from .gaussian_density import GaussianDensity
from .multi import OwnedModelsAttributor
from .union import ConformalUnion

__all__ = [
    "ConformalDecisionMixin", "ConformalDetector", "ConformalPipeline", "ConformalUnion",
    "FLIPADDetector", "FingerprintCorrelation", "GaussianDensity", "LatentInversionDistance",
    "OwnedModelsAttributor",
    "ReconstructionDistance", "ThresholdWarning", "calibrate", "calibration_size",
    "conformal_pvalues", "conformal_threshold", "fnr_interval", "required_validation_size",
    "union_calibration_size", "union_fnr_interval",
]
