"""Convolutional layers (``Conv2d``, ``ConvTranspose2d``) as operators.

Products run through torch's convolutions (``forward4d`` / ``adjoint4d``);
the capabilities the fast solvers ask for (a periodic embedding, a
channels-last view, exact float64 products by FFT) are built on demand and
cached on the operator.
"""

import torch
import torch.nn.functional as F

from .base import LayerOperator
from .channels_last import ChannelsLastOperator
from .embedding import Conv2dEmbedding, ConvTranspose2dEmbedding
from . import spectral


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

    def lipschitz(self, n_iter=500, tol=1e-10, seed=0):
        """Largest eigenvalue of ``WᵀW``, or a proven upper bound of it.

        Exact (:meth:`~.base.Operator.exact_lipschitz`) where the smaller
        side of ``W`` is small; otherwise the largest eigenvalue of ``F_k
        F_kᴴ`` over the frequencies of the layer's periodic embedding (``W = S
        T E``, so ``||W|| <= ||T||``), a rigorous bound that costs one FFT of
        the kernel and is tight for images much larger than the kernel (0.3 %
        above the exact value on DCGAN's layer at 16x16).  Power iteration
        approaches the value from below (0.5 % low on LSGAN's layer at 8x8):
        FISTA's step ``1/L`` would then be too long.
        """
        exact = self.exact_lipschitz()
        if exact is not None:
            return exact
        gram = self.periodic_embedding().gram()
        return float(torch.linalg.eigvalsh(gram).max()) * (1.0 + self.EIGENVALUE_SAFETY)

    def column_norms_sq(self):
        """Squared column norms of ``W``: ``||W e_j||^2 = ((W∘W)ᵀ 1)_j``, exact."""
        ones = torch.ones((1,) + self.output_shape, dtype=torch.float64)
        return self.adjoint4d(ones, self.weight ** 2).reshape(-1)

    # --------------------------------------------------------- capabilities
    #: float64 convolutions run far slower than float32 ones on CPU (no oneDNN
    #: kernel): checks of float32 iterates use float32 products first
    fast_float32_checks = True

    def periodic_embedding(self):
        """``W = S T E`` (cached on the operator)."""
        return self.cached("periodic_embedding", lambda: self._embedding_class(self))

    def channels_last(self):
        """The channels-last view (cached on the operator)."""
        return self.cached("channels_last", lambda: ChannelsLastOperator(self))


class Conv2dOperator(_ConvOperator):
    """A ``Conv2d`` (any stride, padding incl. 'same', dilation, groups)."""

    layer_name = "Conv2d"
    _embedding_class = Conv2dEmbedding

    def forward4d(self, z, w):
        """The convolution of ``(B, C, H, W)`` activations with weight ``w``."""
        kw = self.conv_kwargs
        if "explicit_pad" in kw:
            z = F.pad(z, kw["explicit_pad"])
        return F.conv2d(z, w, None, kw["stride"], kw["padding"], kw["dilation"],
                        kw["groups"])

    def exact_products(self, device):
        """:class:`~.spectral.SpectralProducts` where they beat the direct product.

        A stride-1 Conv2d with a kernel larger than 1x1 on CPU, whose kernel
        spectrum fits in ``SPECTRAL_MAX_BYTES``: there torch's float64
        fallback unfolds ``C_in * kh * kw`` values per output pixel, and the
        FFTs win (the LSGAN and SD decoder layers of
        ``benchmarks/results/bench_inversion_defaults.md``).  A transposed convolution unfolds
        only its few output channels, so its direct product stays faster; CUDA
        has fast float64 convolutions.
        """
        if torch.device(device).type != "cpu":
            return self
        if tuple(self.conv_kwargs["stride"]) != (1, 1) or tuple(self.weight.shape[2:]) == (1, 1):
            return self
        if spectral.spectrum_bytes(self) > spectral.SPECTRAL_MAX_BYTES:
            return self
        return self.cached("spectral_products", lambda: spectral.SpectralProducts(self))

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

    layer_name = "ConvTranspose2d"
    _embedding_class = ConvTranspose2dEmbedding

    @property
    def phase_convolution(self):
        """A groups=1 transposed convolution: one stride-1 convolution to its phases."""
        return self.conv_kwargs["groups"] == 1

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
