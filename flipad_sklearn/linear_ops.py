"""A generator's final layer as a linear operator on flat vectors.

The lasso solvers only see ``W`` through :class:`LayerOperator`: ``matvec``
(``W z``), ``rmatvec`` (``Wᵀ r``), a dense matrix for small problems and the
Lipschitz constant of ``WᵀW``.  The operator stores the layer's weight as a
plain tensor (never the ``nn.Module``), so it pickles and moves between devices.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def check_layer(layer):
    """Raise a clear error unless ``layer`` is a supported final layer."""
    if not isinstance(layer, SUPPORTED_LAYERS):
        raise TypeError(
            f"Unsupported final layer type {type(layer).__name__!r}: FinalLayerInverter "
            "handles torch.nn.Linear, torch.nn.Conv2d and torch.nn.ConvTranspose2d."
        )
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} is not "
                "supported: only zero padding is a linear map handled here."
            )
    return layer


class LayerOperator:
    """``W`` of a final layer acting on flat vectors: the interface every solver uses.

    ``LayerOperator(kind, weight, input_shape, conv_kwargs)`` (or
    :meth:`from_layer`) returns the subclass for the layer type:
    :class:`DenseOperator` (``"linear"``), :class:`Conv2dOperator`
    (``"conv2d"``) or :class:`ConvTranspose2dOperator` (``"conv_transpose2d"``).
    Each provides ``matvec`` (``W z``), ``rmatvec`` (``Wᵀ r``), ``to_dense``,
    ``lipschitz`` (largest eigenvalue of ``WᵀW``), ``column_norms_sq`` and a
    per-operator cache for solvers' set-up (:meth:`cached`).

    Parameters
    ----------
    kind : {"linear", "conv2d", "conv_transpose2d"}
    weight : torch.Tensor
        The layer's weight (copied to CPU float64).
    input_shape : tuple of int
        Shape of one activation (``(K,)`` or ``(C, H, W)``).
    conv_kwargs : dict
        stride, padding, dilation, groups and (for transposed layers)
        output_padding, as integer pairs.
    """

    kind = None

    def __new__(cls, kind=None, *args, **kwargs):
        if cls is LayerOperator:
            if kind not in _OPERATORS:
                raise ValueError(f"Unknown operator kind {kind!r}; use one of "
                                 f"{sorted(_OPERATORS)}.")
            cls = _OPERATORS[kind]
        return super().__new__(cls)

    def __init__(self, kind, weight, input_shape, conv_kwargs=None):
        if kind != self.kind:
            raise ValueError(f"{type(self).__name__} is a {self.kind!r} operator, not {kind!r}.")
        self.weight = weight.detach().to("cpu", torch.float64).clone()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.conv_kwargs = dict(conv_kwargs or {})
        self.output_shape = self._compute_output_shape()
        self.n_inputs = int(np.prod(self.input_shape))
        self.n_outputs = int(np.prod(self.output_shape))
        self._cache = {}

    # ------------------------------------------------------------------ build
    @classmethod
    def from_layer(cls, layer, input_shape):
        check_layer(layer)
        if isinstance(layer, nn.Linear):
            if tuple(input_shape) != (layer.in_features,):
                raise ValueError(
                    f"A Linear layer with in_features={layer.in_features} cannot take "
                    f"activations of shape {tuple(input_shape)}."
                )
            return cls("linear", layer.weight, input_shape)
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
        kw = dict(
            stride=_pair(layer.stride),
            dilation=_pair(layer.dilation),
            groups=layer.groups,
        )
        if isinstance(layer, nn.ConvTranspose2d):
            kw["padding"] = _pair(layer.padding)
            kw["output_padding"] = _pair(layer.output_padding)
            return cls("conv_transpose2d", layer.weight, input_shape, kw)
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
        return cls("conv2d", layer.weight, input_shape, kw)

    # ------------------------------------------------------------- shared
    def cached(self, key, factory):
        """``factory()``, computed once per ``key`` and kept with the operator.

        Solvers keep their per-layer set-up here (cast weights, embeddings,
        factorisations); the cache is dropped when the operator is pickled.
        """
        value = self._cache.get(key)
        if value is None:
            value = factory()
            self._cache[key] = value
        return value

    def weight_as(self, device, dtype):
        """The weight on ``device`` in ``dtype`` (cached)."""
        return self.cached(("weight", str(device), dtype),
                           lambda: self.weight.to(device=device, dtype=dtype))

    def to_dense(self, max_entries=50_000_000):
        """The matrix ``W`` (``n_outputs x n_inputs``, float64 numpy)."""
        if self.n_inputs * self.n_outputs > max_entries:
            raise ValueError(
                f"The layer's matrix has {self.n_outputs} x {self.n_inputs} entries, too "
                "many to build densely; use solver='fista' for layers of this size."
            )
        cols = []
        with torch.no_grad():
            for start in range(0, self.n_inputs, 1024):
                stop = min(start + 1024, self.n_inputs)
                eye = torch.zeros((stop - start, self.n_inputs), dtype=torch.float64)
                eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                cols.append(self.matvec(eye).T)
        return torch.cat(cols, dim=1).numpy()

    def lipschitz(self, n_iter=500, tol=1e-10, seed=0):
        """Largest eigenvalue of ``WᵀW`` (the gradient's Lipschitz constant).

        Power iteration in float64, stopped when the Rayleigh quotient changes
        by less than ``tol`` relatively, then raised by 0.1 % so that the step
        ``1/L`` stays safe (exact for Linear layers).
        """
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn((1, self.n_inputs), generator=gen, dtype=torch.float64)
        v /= v.norm()
        est = 0.0
        with torch.no_grad():
            for _ in range(n_iter):
                u = self.rmatvec(self.matvec(v))
                new = float((u * v).sum())
                norm = float(u.norm())
                if norm == 0.0:
                    return 0.0
                v = u / norm
                if abs(new - est) <= tol * max(new, 1e-300):
                    est = new
                    break
                est = new
        return est * 1.001

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["weight"] = self.weight.numpy()
        return state

    def __setstate__(self, state):
        state["weight"] = torch.from_numpy(np.asarray(state["weight"], dtype=np.float64))
        self.__dict__.update(state)


class DenseOperator(LayerOperator):
    """A ``Linear`` layer's weight ``(M, K)`` as an operator."""

    kind = "linear"

    def _compute_output_shape(self):
        return (int(self.weight.shape[0]),)

    def matvec(self, z):
        """``W z`` for a batch ``z`` of shape ``(B, n_inputs)``."""
        return z @ self.weight_as(z.device, z.dtype).T

    def rmatvec(self, r):
        """``Wᵀ r`` for a batch ``r`` of shape ``(B, n_outputs)``."""
        return r @ self.weight_as(r.device, r.dtype)

    def to_dense(self, max_entries=None):
        return self.weight.numpy().copy()

    def lipschitz(self, *args, **kwargs):
        return float(torch.linalg.matrix_norm(self.weight, ord=2) ** 2)

    def column_norms_sq(self):
        """Squared column norms of ``W`` (one per input coordinate), float64."""
        return (self.weight ** 2).sum(dim=0)


class _ConvOperator(LayerOperator):
    """Shared part of the convolutions: products through ``forward4d``/``adjoint4d``."""

    def _compute_output_shape(self):
        with torch.no_grad():
            probe = torch.zeros((1,) + self.input_shape, dtype=torch.float64)
            try:
                out = self.forward4d(probe, self.weight)
            except RuntimeError as exc:
                raise ValueError(
                    f"The final layer cannot take activations of shape {self.input_shape}: "
                    f"{exc}"
                ) from exc
        return tuple(out.shape[1:])

    def matvec(self, z):
        """``W z`` for a batch ``z`` of shape ``(B, n_inputs)``."""
        out = self.forward4d(z.reshape((-1,) + self.input_shape),
                             self.weight_as(z.device, z.dtype))
        return out.reshape(z.shape[0], -1)

    def rmatvec(self, r):
        """``Wᵀ r`` for a batch ``r`` of shape ``(B, n_outputs)``."""
        out = self.adjoint4d(r.reshape((-1,) + self.output_shape),
                             self.weight_as(r.device, r.dtype))
        return out.reshape(r.shape[0], -1)

    #: activations above which ``lipschitz`` uses the spectral bound
    SPECTRAL_LIPSCHITZ_ABOVE = 50_000

    def lipschitz(self, n_iter=500, tol=1e-10, seed=0):
        """Largest eigenvalue of ``WᵀW``, or an upper bound of it.

        Large layers: the largest eigenvalue of ``F_k F_kᴴ`` over the
        frequencies of the layer's periodic embedding (``W = S T E``, so
        ``||W|| <= ||T||``), a rigorous bound that is tight for images much
        larger than the kernel and costs one FFT of the kernel (power
        iteration needs hundreds of float64 convolutions).  Small layers:
        power iteration (see :meth:`LayerOperator.lipschitz`).
        """
        if self.n_inputs <= self.SPECTRAL_LIPSCHITZ_ABOVE:
            return super().lipschitz(n_iter=n_iter, tol=tol, seed=seed)
        from .lasso.embedding import periodic_embedding

        gram = periodic_embedding(self).gram()
        return float(torch.linalg.eigvalsh(gram).max())

    def column_norms_sq(self):
        """Squared column norms of ``W``: ``||W e_j||^2 = ((W∘W)ᵀ 1)_j``, exact."""
        ones = torch.ones((1,) + self.output_shape, dtype=torch.float64)
        return self.adjoint4d(ones, self.weight ** 2).reshape(-1)


class Conv2dOperator(_ConvOperator):
    """A ``Conv2d`` (any stride, padding incl. 'same', dilation, groups)."""

    kind = "conv2d"

    def forward4d(self, z, w):
        """The convolution of ``(B, C, H, W)`` activations with weight ``w``."""
        kw = self.conv_kwargs
        if "explicit_pad" in kw:
            z = F.pad(z, kw["explicit_pad"])
        return F.conv2d(z, w, None, kw["stride"], kw["padding"], kw["dilation"],
                        kw["groups"])

    def adjoint4d(self, r, w):
        """The adjoint of :meth:`forward4d` on ``(B, C_out, Ho, Wo)`` outputs."""
        kw = self.conv_kwargs
        c, h, wd = self.input_shape
        pad = kw.get("explicit_pad", (0, 0, 0, 0))
        hp, wp = h + pad[2] + pad[3], wd + pad[0] + pad[1]
        oh, ow = self.output_shape[1:]
        op = []
        for size, o, s, p, d, k in zip((hp, wp), (oh, ow), kw["stride"], kw["padding"],
                                       kw["dilation"], w.shape[2:]):
            op.append(size - ((o - 1) * s - 2 * p + d * (k - 1) + 1))
        out = F.conv_transpose2d(r, w, None, kw["stride"], kw["padding"], tuple(op),
                                 kw["groups"], kw["dilation"])
        if "explicit_pad" in kw:
            out = out[:, :, pad[2]:pad[2] + h, pad[0]:pad[0] + wd]
        return out


class ConvTranspose2dOperator(_ConvOperator):
    """A ``ConvTranspose2d`` (any stride, padding, output_padding, dilation, groups)."""

    kind = "conv_transpose2d"

    def forward4d(self, z, w):
        """The transposed convolution of ``(B, C, H, W)`` activations."""
        kw = self.conv_kwargs
        return F.conv_transpose2d(z, w, None, kw["stride"], kw["padding"],
                                  kw["output_padding"], kw["groups"], kw["dilation"])

    def adjoint4d(self, r, w):
        """The convolution with the same weight; it may return extra rows/cols
        that no input reaches, which are cut."""
        kw = self.conv_kwargs
        _, h, wd = self.input_shape
        out = F.conv2d(r, w, None, kw["stride"], kw["padding"], kw["dilation"],
                       kw["groups"])
        return out[:, :, :h, :wd]


_OPERATORS = {c.kind: c for c in (DenseOperator, Conv2dOperator, ConvTranspose2dOperator)}


def phase_kernel(weight, stride, dilation):
    """A groups=1 transposed convolution as a stride-1 one per output phase.

    ``weight`` is a ConvTranspose2d weight ``(C_in, C_out, kh, kw)``.  Output
    pixel ``(s_h i + ph, s_w j + pw)`` of channel ``co`` is ``sum_q ker[(co, ph,
    pw), :, q] . d[:, i - q_h, j - q_w]``: the kernel tap ``(a, b)`` lands in
    phase ``(dil a mod s)`` with shift ``(dil a div s)``.

    Returns
    -------
    ker : tensor (C_out * s_h * s_w, C_in, Q_h, Q_w)
    """
    c_in, c_out, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    qh, qw = dh * (kh - 1) // sh + 1, dw * (kw - 1) // sw + 1
    ker = weight.new_zeros((c_out, sh, sw, c_in, qh, qw))
    for a in range(kh):
        oh = dh * a
        for b in range(kw):
            ow = dw * b
            ker[:, oh % sh, ow % sw, :, oh // sh, ow // sw] += weight[:, :, a, b].T
    return ker.reshape(c_out * sh * sw, c_in, qh, qw)


class ChannelsLastOperator:
    """A convolutional :class:`LayerOperator` on flat vectors in ``(H, W, C)`` order.

    On CPU, oneDNN's convolutions are faster on channels-last tensors: a
    FISTA iteration took 1.05x to 1.8x less time on this view than on the
    plain layout for four final layers, and never more
    (``benchmarks/bench_layout.py``, two runs).  Solvers that keep their iterates flat use
    this view: the vectors are permuted once per batch (``to_native_*`` /
    ``from_native_inputs``) instead of on every product.  The lasso is
    unchanged (norms and the duality gap do not depend on the order of the
    coordinates).

    Parameters
    ----------
    op : LayerOperator
        A ``conv2d`` or ``conv_transpose2d`` operator.
    """

    def __init__(self, op):
        if op.kind == "linear":
            raise ValueError("ChannelsLastOperator needs a convolutional operator.")
        self.base = op
        self.kind = op.kind
        self.input_shape, self.output_shape = op.input_shape, op.output_shape
        self.n_inputs, self.n_outputs = op.n_inputs, op.n_outputs
        kw = op.conv_kwargs
        # a groups=1 transposed convolution runs as a stride-1 convolution to
        # its output phases (oneDNN's transposed kernel is slower)
        self._phase = op.kind == "conv_transpose2d" and kw["groups"] == 1
        self._weights = {}
        if self._phase:
            self.stride = tuple(kw["stride"])
            self._ker = phase_kernel(op.weight, self.stride, tuple(kw["dilation"]))

    @staticmethod
    def _to_nhwc(v, shape):
        c, h, w = shape
        return v.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(v.shape[0], -1)

    @staticmethod
    def _from_nhwc(v, shape):
        c, h, w = shape
        return v.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(v.shape[0], -1)

    def to_native_inputs(self, d):
        """``(B, n_inputs)`` in ``(C, H, W)`` order -> ``(H, W, C)`` order."""
        return self._to_nhwc(d, self.input_shape)

    def inputs_nchw(self, d):
        """``(H, W, C)``-ordered flat inputs as a ``(B, C, H, W)`` view (no copy)."""
        c, h, w = self.input_shape
        return d.reshape(-1, h, w, c).permute(0, 3, 1, 2)

    def from_native_inputs(self, d):
        return self._from_nhwc(d, self.input_shape)

    def to_native_outputs(self, y):
        return self._to_nhwc(y, self.output_shape)

    def from_native_outputs(self, y):
        return self._from_nhwc(y, self.output_shape)

    def plain_matvec(self, z):
        """``W z`` with ``z`` and the result in the plain ``(C, H, W)`` order."""
        return self.from_native_outputs(self.matvec(self.to_native_inputs(z)))

    def plain_rmatvec(self, r):
        """``Wᵀ r`` with ``r`` and the result in the plain ``(C, H, W)`` order."""
        return self.from_native_inputs(self.rmatvec(self.to_native_outputs(r)))

    def _phase_weight(self, device, dtype):
        key = (str(device), dtype)
        w = self._weights.get(key)
        if w is None:
            w = self._ker.flip(2, 3).to(device, dtype).contiguous(
                memory_format=torch.channels_last)
            self._weights[key] = w
        return w

    def _cl_weight(self, device, dtype):
        # oneDNN takes its fast path only when the weight is channels-last too
        return self.base.cached(
            ("weight_cl", str(device), dtype),
            lambda: self.base.weight.to(device, dtype).contiguous(
                memory_format=torch.channels_last))

    def forward_nchw(self, x):
        """``W x`` for a ``(B, C, H, W)`` batch (any memory layout), as ``(B, C_out, Ho, Wo)``.

        The result is a channels-last tensor; :meth:`matvec` is this on the
        ``(H, W, C)``-ordered flat vectors.
        """
        x = x.contiguous(memory_format=torch.channels_last)
        if not self._phase:
            return self.base.forward4d(x, self._cl_weight(x.device, x.dtype))
        ker = self._phase_weight(x.device, x.dtype)
        qh, qw = ker.shape[2:]
        u = F.conv2d(x, ker, padding=(qh - 1, qw - 1))     # all phases, uncropped
        B, _, nh, nw = u.shape
        (sh, sw), (co, ho, wo) = self.stride, self.output_shape
        ph, pw = self.base.conv_kwargs["padding"]
        full = u.permute(0, 2, 3, 1).reshape(B, nh, nw, co, sh, sw)
        full = full.permute(0, 1, 4, 2, 5, 3).reshape(B, nh * sh, nw * sw, co)
        extra_h, extra_w = ph + ho - nh * sh, pw + wo - nw * sw
        if extra_h > 0 or extra_w > 0:
            # output_padding rows/columns that no input reaches
            full = F.pad(full, (0, 0, 0, max(extra_w, 0), 0, max(extra_h, 0)))
        return full[:, ph:ph + ho, pw:pw + wo].permute(0, 3, 1, 2)

    def adjoint_nchw(self, r):
        """``Wᵀ r`` for ``(B, C_out, Ho, Wo)`` outputs (any layout), as ``(B, C, H, W)``."""
        r = r.contiguous(memory_format=torch.channels_last)
        return self.base.adjoint4d(r, self._cl_weight(r.device, r.dtype))

    def matvec(self, z):
        c, h, w = self.input_shape
        x = z.reshape(-1, h, w, c).permute(0, 3, 1, 2)      # a channels-last NCHW view
        return self.forward_nchw(x).permute(0, 2, 3, 1).reshape(z.shape[0], -1)

    def rmatvec(self, r):
        c, h, w = self.output_shape
        x = r.reshape(-1, h, w, c).permute(0, 3, 1, 2)
        return self.adjoint_nchw(x).permute(0, 2, 3, 1).reshape(r.shape[0], -1)


def infer_input_shape(layer, output_shape):
    """The activation shape a ConvTranspose2d/Linear layer needs for ``output_shape``.

    Returns None when it is not determined (a strided Conv2d).
    """
    if isinstance(layer, nn.Linear):
        return (layer.in_features,)
    if isinstance(layer, nn.ConvTranspose2d):
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
    if isinstance(layer, nn.Conv2d):
        if _pair(layer.stride) != (1, 1):
            return None
        _, h_out, w_out = output_shape
        if layer.padding == "same":
            return (layer.in_channels, h_out, w_out)
        padding = (0, 0) if layer.padding == "valid" else _pair(layer.padding)
        dims = [o - 2 * p + d * (k - 1) for o, p, d, k in
                zip((h_out, w_out), padding, _pair(layer.dilation), layer.kernel_size)]
        if min(dims) <= 0:
            return None
        return (layer.in_channels, dims[0], dims[1])
    return None


def square_image_shape(n_features, channels):
    """``(C, H, W)`` with H == W for a flat vector, or None if not square."""
    if n_features % channels:
        return None
    side = math.isqrt(n_features // channels)
    if side * side * channels != n_features:
        return None
    return (channels, side, side)
