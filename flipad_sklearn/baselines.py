"""Deprecated: the baselines' detectors moved to :mod:`flipad_sklearn.detection`,
their recipes to :mod:`flipad_sklearn.pipeline` (removed in the next release)."""

from ._deprecated import forward, moved

moved(__name__, "flipad_sklearn.detection.baselines, flipad_sklearn.detection."
                "conformal_detector and flipad_sklearn.pipeline")
__getattr__ = forward(__name__, {
    "FingerprintCorrelation": "flipad_sklearn.detection.baselines",
    "LatentInversionDistance": "flipad_sklearn.detection.baselines",
    "ReconstructionDistance": "flipad_sklearn.detection.baselines",
    "ConformalDetector": "flipad_sklearn.detection.conformal_detector",
    "make_flipad": "flipad_sklearn.pipeline",
    "make_rawpad": "flipad_sklearn.pipeline",
    "make_dctpad": "flipad_sklearn.pipeline",
})
