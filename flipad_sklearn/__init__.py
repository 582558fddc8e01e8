"""flipad_sklearn: was this sample made by my generator?

Single-model attribution of generative models with FLIPAD (final-layer
inversion + Deep SAD), as scikit-learn estimators.
"""

from ._version import __version__
from .inversion import FinalLayerInverter

__all__ = ["FinalLayerInverter", "__version__"]

# --- detector and feature steps (issue 3) are exported below ---
