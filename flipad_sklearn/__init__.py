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

from ._version import __version__

# public name -> the submodule that defines it, grouped as the issues that
# added them (a name listed here must be importable from that submodule;
# tests/test_lazy_import.py checks every one)
_EXPORTS = {
    ".generator_utils": ["FinalLayer", "find_final_layer", "mean_activation",
                         "sample_activations"],
    ".inversion": ["FinalLayerInverter"],
    # input checks (issue 11): warnings and cross-validation helpers
    ".exceptions": ["InputContractWarning", "LabelConventionWarning", "OutOfRangeWarning"],
    ".model_selection": ["LabelStratifiedKFold", "labelled_roc_auc"],
    # detector and feature steps (issue 3)
    ".deepsad": ["FLIPADDetector", "ThresholdWarning"],
    ".features": ["ActivationPooling", "ChannelSelector", "DCTFeatures",
                  "GeneratorStandardScaler"],
    # perturbations (issue 4)
    ".perturbations": ["GaussianBlur", "GaussianNoise", "JPEGCompression", "ResizedCrop"],
    # baselines (issue 4)
    ".baselines": ["ConformalDetector", "FingerprintCorrelation",
                   "LatentInversionDistance", "ReconstructionDistance", "make_dctpad",
                   "make_flipad", "make_rawpad"],
    # plots (issue 5; matplotlib is imported only when a plot is drawn)
    ".plotting": ["ActivationMapDisplay", "AttributionRocDisplay",
                  "PredictionSetDisplay", "ScoreHistogramDisplay"],
    # the conformal split, threshold and p-values of every detector (issues 11, 13)
    ".conformal": ["calibrate", "required_validation_size"],
    ".conformal_pipeline": ["ConformalPipeline"],
    # attribution over several owned models (issue 13)
    ".multi": ["OwnedModelsAttributor"],
    # streaming inversion and reduction (issue 12)
    ".streaming": ["StreamingFeatures"],
    # StyleGAN-style final operations: toRGB + an upsampled skip (issue 12)
    ".skip_inversion": ["SkipInverter"],
}
# public submodules, reachable as attributes (flipad_sklearn.plotting, ...)
_SUBMODULES = ["baselines", "conformal", "datasets", "generators", "model_selection",
               "multi", "persistence", "pipeline", "plotting", "streaming"]

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
