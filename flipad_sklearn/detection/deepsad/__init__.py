"""Deep SAD detector (bias-free networks, conformal threshold)."""

from .detector import FLIPADDetector, ThresholdWarning, conformal_threshold
from .networks import LeNet, MLP

__all__ = ["FLIPADDetector", "LeNet", "MLP", "ThresholdWarning", "conformal_threshold"]
