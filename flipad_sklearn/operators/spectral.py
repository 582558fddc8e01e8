"""Exact float64 products of a convolutional layer through FFTs.

The certificate needs ``W d`` and ``Wᵀ r`` in float64.  On CPU torch has no
oneDNN kernel for float64 convolutions: its fallback (im2col) is 20 to 50
times slower than the float32 kernel, and on the large final layers the few
float64 products of a solve (checks and the final certificate) cost as much
as a hundred float32 iterations.  With the layer written as ``W = S T E``
(:mod:`.embedding`), the same products are an FFT of the ``C_in`` input
channels, one ``m x C_in`` complex matrix per frequency and an inverse FFT
of the ``m`` output channels (or the reverse for ``Wᵀ``), all in float64:
the result equals the direct convolution to rounding (``~1e-15``
relative), so the certificate stays a float64 bound.
"""

import torch


#: Largest kernel spectrum (``f x m x C_in`` complex128) kept per operator, in
#: bytes; larger layers keep the direct float64 convolution.
SPECTRAL_MAX_BYTES = 2 ** 30
#: Samples per FFT chunk (bounds the transient spectra).
_SAMPLES_PER_CHUNK = 8


def spectrum_bytes(op):
    """Bytes of the kernel spectrum :class:`SpectralProducts` keeps for ``op``."""
    emb = op.periodic_embedding()
    return emb.N[0] * emb.Nw2 * emb.m * emb.cin * 16


class SpectralProducts:
    """``W d`` and ``Wᵀ r`` of a conv operator in float64, by FFT (CPU).

    Same interface as the operator for the certificate (``n_inputs``,
    ``matvec``, ``rmatvec`` on flat float64 batches in the plain layout).

    Parameters
    ----------
    op : Operator
        An operator with a periodic embedding (a Conv2d or ConvTranspose2d:
        any stride, padding, dilation, groups).
    """

    def __init__(self, op):
        self.op = op
        self.emb = emb = op.periodic_embedding()
        self.n_inputs, self.n_outputs = op.n_inputs, op.n_outputs
        f = emb.N[0] * emb.Nw2
        spec = torch.empty((f, emb.m, emb.cin), dtype=torch.complex128)
        for start in range(0, emb.cin, 16):
            stop = min(start + 16, emb.cin)
            ker = torch.fft.rfft2(emb._kernel_grid(start, stop))      # (m, c, Nh, Nw2)
            spec[:, :, start:stop] = ker.permute(2, 3, 0, 1).reshape(f, emb.m, stop - start)
        self.spectrum = spec                       # T = irfft(spectrum @ rfft(.))

    def _forward(self, x):
        """``(B, C_in, Nh, Nw)`` -> ``T x`` as ``(B, m, Nh, Nw)``."""
        emb = self.emb
        B, c = x.shape[:2]
        xh = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(-1, c, B)
        uh = (self.spectrum @ xh).reshape(emb.N[0], emb.Nw2, emb.m, B).permute(3, 2, 0, 1)
        return torch.fft.irfft2(uh, s=emb.N)

    def _adjoint(self, u):
        """``(B, m, Nh, Nw)`` -> ``Tᴴ u`` as ``(B, C_in, Nh, Nw)``.

        ``conj(uhᴴ F)`` instead of ``Fᴴ uh``: no conjugate-transposed copy of
        the spectrum (815 MB for SD's decoder at 512x512).
        """
        emb = self.emb
        B, m = u.shape[:2]
        uh = torch.fft.rfft2(u).permute(2, 3, 0, 1).reshape(-1, B, m).conj()
        xh = torch.matmul(uh, self.spectrum).conj()                 # (f, B, C_in)
        xh = xh.reshape(emb.N[0], emb.Nw2, B, emb.cin).permute(2, 3, 0, 1)
        return torch.fft.irfft2(xh, s=emb.N)

    def matvec(self, d):
        """``W d`` for ``d`` of shape ``(B, n_inputs)`` (float64)."""
        emb, B = self.emb, d.shape[0]
        out = []
        for s in range(0, B, _SAMPLES_PER_CHUNK):
            x = emb.embed(d[s:s + _SAMPLES_PER_CHUNK].reshape((-1,) + self.op.input_shape))
            u = self._forward(x.to(torch.float64))
            out.append(emb.crop(u).reshape(x.shape[0], -1))
        return torch.cat(out) if len(out) > 1 else out[0]

    def rmatvec(self, r):
        """``Wᵀ r`` for ``r`` of shape ``(B, n_outputs)`` (float64)."""
        emb, B = self.emb, r.shape[0]
        out = []
        for s in range(0, B, _SAMPLES_PER_CHUNK):
            u = emb.observe(r[s:s + _SAMPLES_PER_CHUNK].reshape((-1,) + self.op.output_shape))
            x = self._adjoint(u.to(torch.float64))
            out.append(emb.interior(x).reshape(u.shape[0], -1))
        return torch.cat(out) if len(out) > 1 else out[0]

    def __repr__(self):
        return f"SpectralProducts({self.op.layer_name})"
