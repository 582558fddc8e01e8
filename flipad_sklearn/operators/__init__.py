"""A generator's final layer as a linear operator: the engine's only view of ``torch.nn``.

* :mod:`.base`: the :class:`Operator` protocol (products, shapes, Lipschitz
  constant, a cache) with optional capabilities that solvers ask for, and the
  registry of layer adapters;
* :mod:`.layers`: one adapter per ``torch.nn`` layer type (operator, shapes,
  bias layout, describe/build for persistence), registered in one place;
* :mod:`.dense`, :mod:`.conv`: the operators of the built-in layer types;
* capabilities: :mod:`.embedding` (``W = S T E``, for the FFT methods),
  :mod:`.channels_last`, :mod:`.spectral` (exact float64 products by FFT);
* :mod:`.skip`: a final layer with an upsampled skip image projected out
  (StyleGAN2).
"""

from .base import (
    LayerOperator, Operator, adapter_named, find_layer_adapter, layer_adapter,
    register_layer, registered_layers,
)
from .channels_last import ChannelsLastOperator
from .conv import Conv2dOperator, ConvTranspose2dOperator
from .dense import DenseOperator
from .embedding import PeriodicEmbedding, periodic_embedding, phase_kernel
from .layers import (
    Conv2dAdapter, ConvTranspose2dAdapter, LayerAdapter, LinearAdapter, build_layer,
    check_layer, describe_layer, infer_input_shape, is_describable, is_layer_description,
    is_supported_layer, operator_for, square_image_shape,
)
from .skip import UPSAMPLINGS, SkipProjectedOperator, upsampling_matrix
from .spectral import SpectralProducts

__all__ = [
    "ChannelsLastOperator", "Conv2dAdapter", "Conv2dOperator", "ConvTranspose2dAdapter",
    "ConvTranspose2dOperator", "DenseOperator", "LayerAdapter", "LayerOperator",
    "LinearAdapter", "Operator", "PeriodicEmbedding", "SkipProjectedOperator",
    "SpectralProducts", "UPSAMPLINGS", "adapter_named", "build_layer", "check_layer",
    "describe_layer", "find_layer_adapter", "infer_input_shape", "is_describable",
    "is_layer_description", "is_supported_layer", "layer_adapter", "operator_for",
    "periodic_embedding", "phase_kernel", "register_layer", "registered_layers",
    "square_image_shape", "upsampling_matrix",
]
