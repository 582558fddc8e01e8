"""Layer adapters: the one place that knows ``torch.nn`` layer types.

An adapter tells, for one final-layer type, everything the package needs:

* ``check(layer)``: refuse what is not a linear map of the supported kind;
* ``operator(layer, input_shape)``: the layer as an :class:`~.base.Operator`;
* ``infer_input_shape(layer, output_shape)`` and ``output_shape_guess(layer,
  n_features)``: shapes, when the data does not give them;
* ``bias_per_output(layer, output_shape)``: the bias on each flat output entry;
* ``describe(layer)`` / ``build(description)``: the layer as plain data (its
  type, constructor arguments, weight and bias), so that a saved inverter
  holds numpy arrays and JSON values only and the live ``torch.nn`` layer is
  rebuilt on load (never unpickled, never initialised at random).

The built-in adapters (``Linear``, ``Conv2d``, ``ConvTranspose2d``) are
registered below with :func:`~.base.register_layer`; a new layer type is one
adapter class and one ``register_layer`` call (``tests/test_extension_points.py``
adds ``Conv1d``; see ``docs/user_guide/extending.rst``).
"""

import math

import numpy as np
import torch
from torch import nn

from .base import adapter_named, find_layer_adapter, layer_adapter, register_layer
from .conv import Conv2dOperator, ConvTranspose2dOperator
from .dense import DenseOperator

_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


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


class LayerAdapter:
    """How one ``torch.nn`` layer type becomes a lasso operator and plain data.

    Subclasses set ``layer_type`` (the ``nn.Module`` class), ``name`` (the
    type's name in a saved description), ``args`` (the constructor arguments
    a description stores) and implement :meth:`operator`.
    """

    layer_type = None
    name = None
    args = ()
    #: outputs are images ``(C, H, W)`` (a skip image can be added to them)
    image_output = False

    def check(self, layer):
        """Raise a clear error unless ``layer`` is a linear map this adapter handles."""
        return layer

    def operator(self, layer, input_shape):
        """The layer as an operator on activations of ``input_shape``."""
        raise NotImplementedError

    def infer_input_shape(self, layer, output_shape):
        """The activation shape giving ``output_shape``, or None if not determined."""
        return None

    def output_shape_guess(self, layer, n_features):
        """The output shape of ``n_features`` values, or None if ambiguous."""
        return None

    def anchor_shape(self, anchor):
        """The activation shape an anchor array fixes, or None (flat anchors fix none)."""
        return tuple(anchor.shape) if anchor.ndim > 1 else None

    def bias_per_output(self, layer, output_shape):
        """The layer's bias on each flat output entry (float64; zeros without a bias)."""
        n = int(np.prod(output_shape))
        if layer.bias is None:
            return np.zeros(n)
        b = layer.bias.detach().to("cpu", torch.float64).numpy().reshape(-1)
        return np.repeat(b, n // b.size)

    # ------------------------------------------------------------ plain data
    def describe(self, layer):
        """``{"layer_type", "kwargs", "weight", "bias"}``: the layer as plain data.

        The weight is the layer's effective weight (a parametrisation such as
        spectral norm is evaluated); subclasses are described as the base type.
        """
        kwargs = {arg: _plain(getattr(layer, arg)) for arg in self.args}
        kwargs["bias"] = layer.bias is not None
        return {"layer_type": self.name, "kwargs": kwargs,
                "weight": _to_numpy(layer.weight, "weight"),
                "bias": None if layer.bias is None else _to_numpy(layer.bias, "bias")}

    def build(self, desc):
        """The CPU layer of a description (checked before anything is allocated)."""
        name = self.name
        kwargs = dict(desc["kwargs"])
        allowed = set(self.args) | {"bias"}
        if not set(kwargs) <= allowed:
            raise ValueError(f"Unknown arguments {sorted(set(kwargs) - allowed)} for a {name}.")
        weight = np.asarray(desc["weight"])
        if weight.dtype.kind != "f":
            raise ValueError(f"The weight of a {name} must be floating point, got {weight.dtype}.")
        # on the meta device: no initialisation, so the global torch RNG is untouched
        try:
            layer = self.layer_type(**kwargs, device="meta",
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


class LinearAdapter(LayerAdapter):
    """``nn.Linear``: a dense matrix on flat activations ``(in_features,)``."""

    layer_type = nn.Linear
    name = "Linear"
    args = ("in_features", "out_features")

    def operator(self, layer, input_shape):
        if tuple(input_shape) != (layer.in_features,):
            raise ValueError(
                f"A Linear layer with in_features={layer.in_features} cannot take "
                f"activations of shape {tuple(input_shape)}."
            )
        return DenseOperator(layer.weight, input_shape)

    def infer_input_shape(self, layer, output_shape):
        return (layer.in_features,)

    def output_shape_guess(self, layer, n_features):
        return (layer.out_features,)

    def anchor_shape(self, anchor):
        return None                       # a Linear layer's activations are flat


class _Conv2dAdapterBase(LayerAdapter):
    args = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
            "dilation", "groups", "padding_mode")
    image_output = True

    def check(self, layer):
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} is not "
                "supported: only zero padding is a linear map handled here."
            )
        return layer

    def _check_input(self, layer, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(layer).__name__} needs activations of shape (C, H, W); got "
                f"{tuple(input_shape)}."
            )
        if input_shape[0] != layer.in_channels:
            raise ValueError(
                f"{type(layer).__name__} expects {layer.in_channels} input channels; "
                f"the activation shape {tuple(input_shape)} has {input_shape[0]}."
            )

    def output_shape_guess(self, layer, n_features):
        """A square image ``(C_out, H, H)``, or None if ``n_features`` is not one."""
        return square_image_shape(n_features, layer.out_channels)


class Conv2dAdapter(_Conv2dAdapterBase):
    """``nn.Conv2d``: any stride, padding (incl. ``"same"``), dilation, groups."""

    layer_type = nn.Conv2d
    name = "Conv2d"

    def operator(self, layer, input_shape):
        self._check_input(layer, input_shape)
        kw = dict(stride=_pair(layer.stride), dilation=_pair(layer.dilation),
                  groups=layer.groups)
        padding = layer.padding
        if padding == "valid":
            padding = (0, 0)
        if padding == "same":
            # torch pads 'same' asymmetrically (extra row/column at the end) when
            # dilation * (kernel - 1) is odd; keep (before, after) per side.
            pads = []
            for d, k in zip(_pair(layer.dilation), layer.kernel_size):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            kw["padding"] = (0, 0)
            kw["explicit_pad"] = (pads[1][0], pads[1][1], pads[0][0], pads[0][1])
        else:
            kw["padding"] = _pair(padding)
        return Conv2dOperator(layer.weight, input_shape, kw)

    def infer_input_shape(self, layer, output_shape):
        if _pair(layer.stride) != (1, 1):
            return None                   # a strided Conv2d's input size is not determined
        _, h_out, w_out = output_shape
        if layer.padding == "same":
            return (layer.in_channels, h_out, w_out)
        padding = (0, 0) if layer.padding == "valid" else _pair(layer.padding)
        dims = [o - 2 * p + d * (k - 1) for o, p, d, k in
                zip((h_out, w_out), padding, _pair(layer.dilation), layer.kernel_size)]
        if min(dims) <= 0:
            return None
        return (layer.in_channels, dims[0], dims[1])


class ConvTranspose2dAdapter(_Conv2dAdapterBase):
    """``nn.ConvTranspose2d``: any stride, padding, output_padding, dilation, groups."""

    layer_type = nn.ConvTranspose2d
    name = "ConvTranspose2d"
    args = _Conv2dAdapterBase.args + ("output_padding",)

    def operator(self, layer, input_shape):
        self._check_input(layer, input_shape)
        kw = dict(stride=_pair(layer.stride), dilation=_pair(layer.dilation),
                  groups=layer.groups, padding=_pair(layer.padding),
                  output_padding=_pair(layer.output_padding))
        return ConvTranspose2dOperator(layer.weight, input_shape, kw)

    def infer_input_shape(self, layer, output_shape):
        _, h_out, w_out = output_shape
        dims = []
        for o, s, p, d, k, op in zip((h_out, w_out), _pair(layer.stride),
                                     _pair(layer.padding), _pair(layer.dilation),
                                     layer.kernel_size, _pair(layer.output_padding)):
            num = o + 2 * p - d * (k - 1) - op - 1
            if num < 0 or num % s:
                return None
            dims.append(num // s + 1)
        return (layer.in_channels, dims[0], dims[1])


for _adapter in (LinearAdapter, Conv2dAdapter, ConvTranspose2dAdapter):
    register_layer(_adapter)


# ------------------------------------------------------------- module API
def check_layer(layer):
    """``layer`` if it is a supported final layer; a clear TypeError/ValueError otherwise."""
    return layer_adapter(layer).check(layer)


def is_supported_layer(layer):
    """Whether a registered adapter handles ``layer``'s type."""
    return find_layer_adapter(layer) is not None


def operator_for(layer, input_shape):
    """The operator of ``layer`` (checked) on activations of ``input_shape``."""
    adapter = layer_adapter(layer)
    adapter.check(layer)
    return adapter.operator(layer, input_shape)


def infer_input_shape(layer, output_shape):
    """The activation shape ``layer`` needs for ``output_shape``; None when not determined."""
    return layer_adapter(layer).infer_input_shape(layer, output_shape)


def square_image_shape(n_features, channels):
    """``(C, H, W)`` with H == W for a flat vector, or None if not square."""
    if n_features % channels:
        return None
    side = math.isqrt(n_features // channels)
    if side * side * channels != n_features:
        return None
    return (channels, side, side)


#: the layers :func:`describe_layer` handles: every registered type
is_describable = is_supported_layer


def describe_layer(layer):
    """``{"layer_type", "kwargs", "weight", "bias"}`` of a registered layer type."""
    return layer_adapter(layer).describe(layer)


def is_layer_description(obj):
    return isinstance(obj, dict) and set(obj) == {"layer_type", "kwargs", "weight", "bias"}


def build_layer(desc):
    """Rebuild the CPU layer of a :func:`describe_layer` description.

    Raises a ValueError on anything that is not such a description: an
    unknown layer type, unknown arguments or weights of the wrong shape.
    """
    if not is_layer_description(desc):
        raise ValueError("Not a layer description.")
    if not isinstance(desc["layer_type"], str):
        raise ValueError(f"Unknown layer type {desc['layer_type']!r} in a layer description.")
    return adapter_named(desc["layer_type"]).build(desc)
