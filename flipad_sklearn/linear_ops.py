"""Deprecated: the operators moved to :mod:`flipad_sklearn.operators`."""

from ._deprecated import moved
from .operators import (  # noqa: F401
    ChannelsLastOperator, Conv2dOperator, ConvTranspose2dOperator, DenseOperator,
    LayerOperator, check_layer, infer_input_shape, phase_kernel, registered_layers,
    square_image_shape,
)

moved("flipad_sklearn.linear_ops", "flipad_sklearn.operators")
SUPPORTED_LAYERS = registered_layers()
