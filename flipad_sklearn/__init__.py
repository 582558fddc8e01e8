"""flipad_sklearn: was this sample made by my generator?

Single-model attribution of generative models with FLIPAD (final-layer
inversion + Deep SAD), as scikit-learn estimators.

The public names below are imported on first use (PEP 562), not when the
package is imported: ``import flipad_sklearn`` and the ``flipad`` command's
``--help`` then cost milliseconds instead of the seconds torch and
scikit-learn take to import.  ``from flipad_sklearn import FinalLayerInverter``
and ``flipad_sklearn.FinalLayerInverter`` work as with eager imports.
"""

import importlib
import importlib.util

from ._version import __version__  # noqa: F401 (the package's version)

# public name -> the submodule that defines it, by role (a name listed here
# must be importable from that submodule; tests/test_lazy_import.py checks
# every one).  The map of the package, lowest role first (imports only go
# down: tests/test_import_rules.py):
#   base        _device, _validation, exceptions
#   engine      activations, operators/ (the final layer as an operator),
#               lasso/ (solvers, certificate, the solve door)
#   generators  generator_utils, generators/, datasets/
#   estimators  inversion/, features, perturbations, streaming
#   detection   detection/ (conformal rule, Deep SAD, baselines, pipelines),
#               model_selection
#   recipes     pipeline (every make_*)
#   I/O         persistence, verdicts (the verdict table of files and a fitted pipeline)
#   apps        cli, demo, plotting
_EXPORTS = {
    # generators and data: reaching into a generator
    ".generator_utils": ["FinalLayer", "find_final_layer", "mean_activation",
                         "sample_activations"],
    # estimators: inversion, features, perturbations, streaming
    ".inversion": ["FinalLayerInverter", "SkipInverter"],
    ".features": ["ActivationPooling", "ChannelSelector", "DCTFeatures",
                  "GeneratorStandardScaler"],
    ".perturbations": ["GaussianBlur", "GaussianNoise", "JPEGCompression", "JPEGQuality",
                       "RandomPerturbation", "Resize", "ResizedCrop", "jpeg_quality"],
    ".streaming": ["StreamingFeatures"],
    # detection: detectors, the conformal rule, pipelines, several owned models
    ".detection": ["ConformalDetector", "ConformalPipeline", "ConformalUnion",
                   "FLIPADDetector", "FingerprintCorrelation", "GaussianDensity",
                   "LatentInversionDistance", "OwnedModelsAttributor",
                   "ReconstructionDistance", "ThresholdWarning",
                   "calibrate", "calibration_size", "fnr_interval",
                   "required_validation_size", "union_calibration_size"],
    ".model_selection": ["LabelStratifiedKFold", "labelled_roc_auc"],
    # recipes
    ".pipeline": ["make_dctpad", "make_flipad", "make_open_world_union", "make_pixel_guard",
                  "make_rawpad"],
    # input checks: warnings
    ".exceptions": ["InputContractWarning", "LabelConventionWarning", "OutOfRangeWarning"],
    # I/O: the verdict table (what `flipad score` writes)
    ".verdicts": ["VerdictTable", "verdict_table"],
    # apps: plots (matplotlib is imported only when a plot is drawn)
    ".plotting": ["ActivationMapDisplay", "AttributionRocDisplay",
                  "PredictionSetDisplay", "ScoreHistogramDisplay"],
}
# public submodules, reachable as attributes (flipad_sklearn.plotting, ...)
_SUBMODULES = ["datasets", "detection", "generators", "inversion", "lasso", "model_selection",
               "operators", "persistence", "pipeline", "plotting", "streaming", "verdicts"]
# old paths kept for one release (they warn when imported; flipad_sklearn._deprecated)
_DEPRECATED_MODULES = ["baselines", "conformal", "conformal_pipeline", "deepsad",
                       "lasso.embedding", "lasso.spectral", "linear_ops", "multi",
                       "skip_inversion", "skip_operator"]

_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(["__version__", *_WHERE, *_SUBMODULES])


def __getattr__(name):
    """Import a public name's submodule on first access (PEP 562)."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    elif name in _SUBMODULES or (not name.startswith("__") and importlib.util.find_spec(
            f"{__name__}.{name}") is not None):
        # any submodule, as eager imports made them attributes
        # (flipad_sklearn.features, flipad_sklearn.lasso, ...)
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value            # later accesses skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
