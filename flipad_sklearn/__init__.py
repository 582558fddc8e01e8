"""flipad_sklearn: was this sample made by my generator?

Single-model attribution of generative models with FLIPAD (final-layer
inversion + Deep SAD), as scikit-learn estimators.
"""

from ._version import __version__
from .generator_utils import (
    FinalLayer, find_final_layer, mean_activation, sample_activations,
)
from .inversion import FinalLayerInverter

__all__ = [
    "FinalLayer", "FinalLayerInverter", "__version__", "find_final_layer",
    "mean_activation", "sample_activations",
]

# --- input checks (issue 11): warnings and cross-validation helpers ---
from . import model_selection
from .exceptions import InputContractWarning, LabelConventionWarning, OutOfRangeWarning
from .model_selection import LabelStratifiedKFold, labelled_roc_auc

__all__ += ["InputContractWarning", "LabelConventionWarning", "LabelStratifiedKFold",
            "OutOfRangeWarning", "labelled_roc_auc",
            "model_selection"]

# --- detector and feature steps (issue 3) are exported below ---
from .deepsad import FLIPADDetector, ThresholdWarning
from .features import (
    ActivationPooling,
    ChannelSelector,
    DCTFeatures,
    GeneratorStandardScaler,
)

__all__ += [
    "ActivationPooling",
    "ChannelSelector",
    "DCTFeatures",
    "FLIPADDetector",
    "GeneratorStandardScaler",
    "ThresholdWarning",
]

# --- offline data, perturbations and the generator zoo (issue 4) are exported below ---
from . import datasets, generators
from .perturbations import GaussianBlur, GaussianNoise, JPEGCompression, ResizedCrop

__all__ += [
    "GaussianBlur",
    "GaussianNoise",
    "JPEGCompression",
    "ResizedCrop",
    "datasets",
    "generators",
]

# --- baselines (issue 4) are exported below ---
from . import baselines
from .baselines import (
    ConformalDetector,
    FingerprintCorrelation,
    LatentInversionDistance,
    ReconstructionDistance,
    make_dctpad,
    make_flipad,
    make_rawpad,
)

__all__ += [
    "ConformalDetector",
    "FingerprintCorrelation",
    "LatentInversionDistance",
    "ReconstructionDistance",
    "baselines",
    "make_dctpad",
    "make_flipad",
    "make_rawpad",
]

# --- plots (issue 5; matplotlib is imported only when a plot is drawn) ---
from . import plotting
from .plotting import ActivationMapDisplay, AttributionRocDisplay, ScoreHistogramDisplay

__all__ += [
    "ActivationMapDisplay",
    "AttributionRocDisplay",
    "ScoreHistogramDisplay",
    "plotting",
]

# --- the conformal split, threshold and p-values of every detector (issues 11, 13) ---
from . import conformal
from .conformal import calibrate, required_validation_size
from .conformal_pipeline import ConformalPipeline

__all__ += ["ConformalPipeline", "calibrate", "conformal", "required_validation_size"]

# --- attribution over several owned models (issue 13) ---
from . import multi
from .multi import OwnedModelsAttributor
from .plotting import PredictionSetDisplay

__all__ += ["OwnedModelsAttributor", "PredictionSetDisplay", "multi"]

# --- streaming inversion and reduction (issue 12) ---
from . import streaming
from .streaming import StreamingFeatures

__all__ += ["StreamingFeatures", "streaming"]

# --- the FLIPAD recipe and secure persistence (issue 11) ---
from . import persistence, pipeline

__all__ += ["persistence", "pipeline"]

# --- StyleGAN-style final operations: toRGB + an upsampled skip (issue 12) ---
from .skip_inversion import SkipInverter

__all__ += ["SkipInverter"]
