"""Periodic embeddings of convolutional layers: ``W = S T E``.

Every convolutional final layer (``Conv2d`` with any stride, padding,
dilation and groups; ``ConvTranspose2d`` with any stride, padding,
output_padding, dilation and groups) is written as

* ``E``: the activation grid ``H x W`` placed inside a periodic grid
  ``Nh x Nw`` (the rest of the grid is zero);
* ``T``: a *stride-1* circular convolution on that grid from the ``C_in``
  activation channels to ``m`` channels, i.e. per 2-D frequency a ``m x C_in``
  complex matrix ``F_k``;
* ``S``: the selection of the observed outputs among the ``m x Nh x Nw``
  values of ``T E d`` (a crop, and a subsampling for a strided Conv2d).

For a Conv2d, ``m = C_out`` and the grid is the zero-padded input: output
``o`` is ``T``'s value at ``o * stride``.  For a ConvTranspose2d, ``m = C_out *
s_h * s_w``: the layer's output split into its stride phases is a stride-1
convolution (see :func:`phase_kernel`).

Splitting methods (:mod:`flipad_sklearn.lasso.split_admm`) use only ``T``, ``Tᴴ`` (spatial
convolutions), ``S`` and the ``m x m`` per-frequency matrices ``F_k F_kᴴ``:
with ``C_out = 3`` those are 3x3, and nothing scales with the size of the
unobserved boundary.
"""

import torch
import torch.nn.functional as F


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


#: Input channels per FFT chunk when accumulating ``F_k F_kᴴ`` (bounds memory).
_CHUNK = 16


class PeriodicEmbedding:
    """Common part: grid bookkeeping, ``F_k F_kᴴ`` and cached weights.

    Subclasses set ``cin``, ``m``, ``N``, ``in_hw``, ``offset`` (the top-left
    corner of the activations in the grid), ``out_shape`` and implement
    ``_kernel_grid``, ``observe``, ``crop`` and the two weights.
    """

    def _finish(self):
        self.Nw2 = self.N[1] // 2 + 1
        self._weights = {}
        self._solves = {}          # per-frequency inverses, keyed by the solver
        self._gram = None
        self._pad_index = {}

    # ------------------------------------------------------------ layouts
    def embed(self, d):
        """``E d``: activations ``(B, C_in, H, W)`` -> grid ``(B, C_in, Nh, Nw)``."""
        (oh, ow), (H, W), (Nh, Nw) = self.offset, self.in_hw, self.N
        return F.pad(d, (ow, Nw - W - ow, oh, Nh - H - oh))

    def interior(self, x):
        """``Eᵀ x``: grid -> activations (a view)."""
        (oh, ow), (H, W) = self.offset, self.in_hw
        return x[:, :, oh:oh + H, ow:ow + W]

    def free_mask(self, device=None):
        """Bool ``(1, 1, Nh, Nw)``: True on the activation grid, False on the padding."""
        mask = torch.zeros((1, 1) + self.N, dtype=torch.bool, device=device)
        (oh, ow), (H, W) = self.offset, self.in_hw
        mask[:, :, oh:oh + H, ow:ow + W] = True
        return mask

    def zero_padding_(self, x):
        """Zero, in place, the padding of an extended-grid batch ``x``; returns it.

        The activation grid is a rectangle, so the padding (and its wrapped
        copies) is a set of whole rows and columns: two small index fills
        instead of a full pass with a mask.
        """
        key = str(x.device)
        idx = self._pad_index.get(key)
        if idx is None:
            free = self.extend(self.free_mask().to(torch.float64))[0, 0] > 0
            rows, cols = free.any(1), free.any(0)
            if not torch.equal(free, rows[:, None] & cols[None, :]):
                raise AssertionError("the activation grid is not a rectangle")
            idx = (torch.nonzero(~rows)[:, 0].to(x.device),
                   torch.nonzero(~cols)[:, 0].to(x.device))
            self._pad_index[key] = idx
        rows, cols = idx
        if rows.numel():
            x.index_fill_(2, rows, 0.0)
        if cols.numel():
            x.index_fill_(3, cols, 0.0)
        return x

    def observed_mask(self, device=None):
        """Float ``(1, m, Nh, Nw)``: 1 where ``S`` observes ``T``'s output, else 0."""
        ones = torch.ones((1,) + self.out_shape, dtype=torch.float64)
        return self.observe(ones).to(device)

    # ------------------------------------------------ extended periodic grid
    # Solvers keep their C_in-channel state on the grid extended by wrapped
    # copies (``ext_before`` rows/columns at the top/left, ``ext_after`` at the
    # bottom/right): T is then a plain valid convolution, with no circular pad
    # of the large state per step; element-wise steps keep the copies equal
    # and TH_ext writes them (it pads its small m-channel input instead).
    def extend(self, x):
        """Grid ``(B, C, Nh, Nw)`` -> extended grid."""
        (bh, bw), (ah, aw) = self.ext_before, self.ext_after
        if bh or bw or ah or aw:
            return F.pad(x, (bw, aw, bh, ah), mode="circular")
        return x

    def interior_ext(self, x):
        """Extended grid -> activations ``(B, C_in, H, W)`` (a view)."""
        (bh, bw), (oh, ow), (H, W) = self.ext_before, self.offset, self.in_hw
        return x[:, :, bh + oh:bh + oh + H, bw + ow:bw + ow + W]

    def T_ext(self, x, weight):
        """:meth:`T` of an extended-grid input."""
        return F.conv2d(x, weight, dilation=self.dilation, groups=self.groups)

    def TH_ext(self, u, weight):
        """:meth:`TH` written on the extended grid."""
        rh, rw = self.reach
        if rh or rw:
            u = F.pad(u, (rw, rw, rh, rh), mode="circular")
        return F.conv2d(u, weight, dilation=self.dilation, groups=self.groups)

    # ----------------------------------------------------------- spectra
    def gram(self):
        """``F_k F_kᴴ`` per frequency, complex128 ``(Nh * (Nw//2+1), m, m)``."""
        if self._gram is None:
            acc = torch.zeros((self.N[0] * self.Nw2, self.m, self.m),
                              dtype=torch.complex128)
            for start in range(0, self.cin, _CHUNK):
                ker = self._kernel_grid(start, min(start + _CHUNK, self.cin))
                Fk = torch.fft.rfft2(ker).permute(2, 3, 0, 1).reshape(-1, self.m, ker.shape[1])
                acc += Fk @ Fk.mH
            self._gram = acc
        return self._gram

    def weights(self, device, dtype):
        """``(forward, adjoint)`` conv weights of ``T`` and ``Tᴴ`` (cached)."""
        key = (str(device), dtype)
        w = self._weights.get(key)
        if w is None:
            w = (self._forward_weight().to(device, dtype).contiguous(),
                 self._adjoint_weight().to(device, dtype).contiguous())
            self._weights[key] = w
        return w

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_weights"], state["_solves"], state["_pad_index"] = {}, {}, {}
        return state


class Conv2dEmbedding(PeriodicEmbedding):
    """``W = S T E`` of a Conv2d operator (any stride, padding, dilation, groups).

    The grid is the zero-padded input (``Hp = H + pad_top + pad_bottom``); ``T``
    is the stride-1 circular cross-correlation with the layer's (dilated)
    kernel; output ``o`` of the layer is ``T``'s value at ``o * stride``, which
    never wraps around.
    """

    def __init__(self, op):
        kw = op.conv_kwargs
        w = op.weight                                    # (C_out, C_in/g, kh, kw)
        self.groups = int(kw["groups"])
        self.cout, self.cin = int(w.shape[0]), int(op.input_shape[0])
        self.m = self.cout
        self.kernel = w
        self.dilation = tuple(kw["dilation"])
        self.stride = tuple(kw["stride"])
        left, right, top, bottom = kw.get("explicit_pad", (0, 0, 0, 0))
        ph, pw = kw["padding"]
        self.offset = (top + ph, left + pw)
        self.in_hw = tuple(op.input_shape[1:])
        self.N = (self.in_hw[0] + top + bottom + 2 * ph, self.in_hw[1] + left + right + 2 * pw)
        self.out_shape = tuple(op.output_shape)
        self.reach = tuple(d * (k - 1) for d, k in zip(self.dilation, w.shape[2:]))
        self.ext_before, self.ext_after = (0, 0), self.reach
        self._finish()

    def _full_weight(self, start, stop):
        """Dense ``(C_out, stop - start, kh, kw)`` weight (zeros across groups)."""
        w = self.kernel
        cpg, opg = self.cin // self.groups, self.cout // self.groups
        out = w.new_zeros((self.cout, stop - start) + tuple(w.shape[2:]))
        for ci in range(start, stop):
            grp = ci // cpg
            out[grp * opg:(grp + 1) * opg, ci - start] = w[grp * opg:(grp + 1) * opg, ci % cpg]
        return out

    def _kernel_grid(self, start, stop):
        # u[p] = sum_t w[t] x[p + t d]  is the circular convolution with K[-t d] = w[t]
        w = self._full_weight(start, stop)
        kh, kw = w.shape[2:]
        (dh, dw), (Nh, Nw) = self.dilation, self.N
        grid = torch.zeros((self.m, stop - start, Nh, Nw), dtype=torch.float64)
        for a in range(kh):
            for b in range(kw):
                grid[:, :, (-a * dh) % Nh, (-b * dw) % Nw] += w[:, :, a, b]
        return grid

    def _forward_weight(self):
        return self.kernel

    def _adjoint_weight(self):
        w = self.kernel
        g = self.groups
        opg, cpg = self.cout // g, self.cin // g
        wt = w.reshape(g, opg, cpg, *w.shape[2:]).transpose(1, 2)
        return wt.reshape(self.cin, opg, *w.shape[2:]).flip(2, 3)

    def T(self, x, weight):
        """``(B, C_in, Nh, Nw)`` -> ``(B, m, Nh, Nw)``; ``weight`` from :meth:`weights`."""
        rh, rw = self.reach
        if rh or rw:
            x = F.pad(x, (0, rw, 0, rh), mode="circular")
        return F.conv2d(x, weight, dilation=self.dilation, groups=self.groups)

    def TH(self, u, weight):
        """Adjoint of :meth:`T`; ``weight`` is the adjoint one from :meth:`weights`."""
        rh, rw = self.reach
        if rh or rw:
            u = F.pad(u, (rw, 0, rh, 0), mode="circular")
        return F.conv2d(u, weight, dilation=self.dilation, groups=self.groups)

    def observe(self, y):
        """``Sᵀ y``: outputs ``(B, C_out, Ho, Wo)`` -> ``(B, m, Nh, Nw)``."""
        (sh, sw), (_, Ho, Wo) = self.stride, self.out_shape
        u = y.new_zeros((y.shape[0], self.m) + self.N)
        u[:, :, 0:(Ho - 1) * sh + 1:sh, 0:(Wo - 1) * sw + 1:sw] = y
        return u

    def crop(self, u):
        """``S u``: ``(B, m, Nh, Nw)`` -> outputs ``(B, C_out, Ho, Wo)``."""
        (sh, sw), (_, Ho, Wo) = self.stride, self.out_shape
        return u[:, :, 0:(Ho - 1) * sh + 1:sh, 0:(Wo - 1) * sw + 1:sw]


class ConvTranspose2dEmbedding(PeriodicEmbedding):
    """``W = S T E`` of a ConvTranspose2d operator (any groups).

    ``T`` maps the ``C_in`` channels to the ``m = C_out * s_h * s_w`` output
    phases (a stride-1 convolution with ``Q`` shifts per phase); the grid is
    large enough that nothing wraps around.  Grouped layers use the dense
    (block-diagonal) weight.
    """

    def __init__(self, op):
        kw = op.conv_kwargs
        w = op.weight                                    # (C_in, C_out/g, kh, kw)
        g = int(kw["groups"])
        cin, opg = int(w.shape[0]), int(w.shape[1])
        if g > 1:
            cpg = cin // g
            full = w.new_zeros((cin, opg * g) + tuple(w.shape[2:]))
            for grp in range(g):
                full[grp * cpg:(grp + 1) * cpg, grp * opg:(grp + 1) * opg] = \
                    w[grp * cpg:(grp + 1) * cpg]
            w = full
        self.cin, self.cout = cin, int(w.shape[1])
        self.in_hw = tuple(op.input_shape[1:])
        self.out_shape = tuple(op.output_shape)
        self.offset = (0, 0)
        self.stride = tuple(kw["stride"])
        self.padding = tuple(kw["padding"])
        dil = tuple(kw["dilation"])
        N, Q = [], []
        for n_in, s, p, d, k, o in zip(self.in_hw, self.stride, self.padding, dil,
                                       w.shape[2:], self.out_shape[1:]):
            full_len = (n_in - 1) * s + d * (k - 1) + 1
            N.append(max(n_in, -(-full_len // s), -(-(p + o) // s)))
            Q.append(d * (k - 1) // s + 1)
        self.N, self.Q = tuple(N), tuple(Q)
        sh, sw = self.stride
        self.m = self.cout * sh * sw
        self.kernel = phase_kernel(w, self.stride, dil)  # (m, C_in, Qh, Qw)
        self.groups, self.dilation = 1, (1, 1)
        self.reach = (self.Q[0] - 1, self.Q[1] - 1)
        self.ext_before, self.ext_after = self.reach, (0, 0)
        self._finish()

    def _kernel_grid(self, start, stop):
        Qh, Qw = self.Q
        grid = torch.zeros((self.m, stop - start) + self.N, dtype=torch.float64)
        grid[:, :, :Qh, :Qw] = self.kernel[:, start:stop]
        return grid

    def _forward_weight(self):
        return self.kernel.flip(2, 3)

    def _adjoint_weight(self):
        return self.kernel.transpose(0, 1)

    def T(self, x, weight):
        qh, qw = self.Q
        if qh > 1 or qw > 1:
            x = F.pad(x, (qw - 1, 0, qh - 1, 0), mode="circular")
        return F.conv2d(x, weight)

    def TH(self, u, weight):
        qh, qw = self.Q
        if qh > 1 or qw > 1:
            u = F.pad(u, (0, qw - 1, 0, qh - 1), mode="circular")
        return F.conv2d(u, weight)

    def _to_phase(self, full):
        B = full.shape[0]
        (Nh, Nw), (sh, sw) = self.N, self.stride
        u = full.reshape(B, self.cout, Nh, sh, Nw, sw).permute(0, 1, 3, 5, 2, 4)
        return u.reshape(B, self.m, Nh, Nw)

    def observe(self, y):
        B = y.shape[0]
        (Nh, Nw), (sh, sw), (ph, pw) = self.N, self.stride, self.padding
        _, Ho, Wo = self.out_shape
        full = y.new_zeros((B, self.cout, Nh * sh, Nw * sw))
        full[:, :, ph:ph + Ho, pw:pw + Wo] = y
        return self._to_phase(full)

    def crop(self, u):
        B = u.shape[0]
        (Nh, Nw), (sh, sw), (ph, pw) = self.N, self.stride, self.padding
        _, Ho, Wo = self.out_shape
        full = u.reshape(B, self.cout, sh, sw, Nh, Nw).permute(0, 1, 4, 2, 5, 3)
        full = full.reshape(B, self.cout, Nh * sh, Nw * sw)
        return full[:, :, ph:ph + Ho, pw:pw + Wo]


def periodic_embedding(op):
    """The :class:`PeriodicEmbedding` of ``op`` (its capability); a ValueError if it has none."""
    emb = op.periodic_embedding()
    if emb is None:
        raise ValueError(f"No periodic embedding for a {op.layer_name} operator.")
    return emb
