"""A final layer as plain data: its type, constructor arguments, weight and bias.

:class:`~flipad_sklearn.FinalLayerInverter` stores its layer this way when it
is pickled or saved with :mod:`flipad_sklearn.persistence`, so that a saved
inverter holds numpy arrays and JSON values only, and the live
``torch.nn`` layer is rebuilt from them on load (never unpickled).
"""

import numpy as np
import torch
from torch import nn

# the three layer types an inverter handles, by the name stored in a description
_LAYER_TYPES = {"Linear": nn.Linear, "Conv2d": nn.Conv2d,
                "ConvTranspose2d": nn.ConvTranspose2d}
_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
              "dilation", "groups", "padding_mode")
_ARGS = {
    "Linear": ("in_features", "out_features"),
    "Conv2d": _CONV_ARGS,
    "ConvTranspose2d": _CONV_ARGS + ("output_padding",),
}
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def is_describable(layer):
    """True for the layers :func:`describe_layer` handles."""
    return isinstance(layer, tuple(_LAYER_TYPES.values()))


def _layer_type(layer):
    for name, cls in _LAYER_TYPES.items():
        if isinstance(layer, cls):
            return name
    raise TypeError(f"Cannot describe a {type(layer).__name__}: only torch.nn.Linear, "
                    "Conv2d and ConvTranspose2d layers.")


def _to_numpy(tensor, what):
    t = tensor.detach()
    if t.device.type == "meta":
        raise ValueError(f"The layer's {what} is on the 'meta' device (it has no values): "
                         "load the generator's weights before saving the inverter.")
    if t.dtype not in _NUMPY_DTYPES:
        t = t.to(torch.float32)
    return t.cpu().numpy().copy()


def _plain(v):
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else v


def describe_layer(layer):
    """``{"layer_type", "kwargs", "weight", "bias"}`` of a Linear/Conv2d/ConvTranspose2d.

    The weight is the layer's effective weight (a parametrisation such as
    spectral norm is evaluated); subclasses are described as their base type.
    """
    name = _layer_type(layer)
    kwargs = {arg: _plain(getattr(layer, arg)) for arg in _ARGS[name]}
    kwargs["bias"] = layer.bias is not None
    return {
        "layer_type": name,
        "kwargs": kwargs,
        "weight": _to_numpy(layer.weight, "weight"),
        "bias": None if layer.bias is None else _to_numpy(layer.bias, "bias"),
    }


def is_layer_description(obj):
    return isinstance(obj, dict) and set(obj) == {"layer_type", "kwargs", "weight", "bias"}


def build_layer(desc):
    """Rebuild the CPU layer of a :func:`describe_layer` description.

    Raises a ValueError on anything that is not such a description: an
    unknown layer type, unknown arguments or weights of the wrong shape.
    """
    if not is_layer_description(desc):
        raise ValueError("Not a layer description.")
    name = desc["layer_type"]
    if name not in _LAYER_TYPES:
        raise ValueError(f"Unknown layer type {name!r} in a layer description; expected "
                         f"one of {sorted(_LAYER_TYPES)}.")
    kwargs = dict(desc["kwargs"])
    allowed = set(_ARGS[name]) | {"bias"}
    if not set(kwargs) <= allowed:
        raise ValueError(f"Unknown arguments {sorted(set(kwargs) - allowed)} for a {name}.")
    weight = np.asarray(desc["weight"])
    if weight.dtype.kind != "f":
        raise ValueError(f"The weight of a {name} must be floating point, got {weight.dtype}.")
    # on the meta device: no initialisation, so the global torch RNG is untouched
    try:
        layer = _LAYER_TYPES[name](**kwargs, device="meta",
                                   dtype=torch.from_numpy(weight[:0]).dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"Invalid {name} arguments {kwargs}: {exc}") from exc
    bias = None
    if kwargs.get("bias", True):
        if desc["bias"] is None:
            raise ValueError(f"The {name} description has bias=True but no bias array.")
        bias = np.asarray(desc["bias"])
        if bias.dtype.kind != "f":
            raise ValueError(f"The bias of a {name} must be floating point, got {bias.dtype}.")
    # shapes checked on the meta device, before anything is allocated: arguments such
    # as in_channels=10**6 must not allocate what the stored weight does not hold
    for what, array, param in (("weight", weight, layer.weight), ("bias", bias, layer.bias)):
        if array is not None and tuple(array.shape) != tuple(param.shape):
            raise ValueError(f"The weights do not fit a {name} with arguments {kwargs}: "
                             f"its {what} has shape {tuple(array.shape)}, the layer needs "
                             f"{tuple(param.shape)}.")
    layer = layer.to_empty(device="cpu")
    state = {"weight": torch.from_numpy(weight.copy())}
    if bias is not None:
        state["bias"] = torch.from_numpy(bias.astype(weight.dtype))
    try:
        layer.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"The weights do not fit a {name} with arguments {kwargs}: "
                         f"{exc}") from exc
    return layer
