"""ADMM with exact FFT solves for transposed-convolution layers.

A ``ConvTranspose2d`` (groups=1) is ``W = S T E``:

* ``E`` zero-pads the input grid ``H x W`` to a periodic grid ``Nh x Nw``
  (large enough that nothing wraps around);
* ``T`` is the transposed convolution on that periodic grid: split into its
  ``sh * sw`` output phases it is a *stride-1* circular convolution from the
  ``C_in`` input channels to ``m = C_out * sh * sw`` phase channels, i.e. per
  2-D frequency of the ``Nh x Nw`` grid a ``m x C_in`` complex matrix ``F_k``;
* ``S`` keeps the observed output pixels (the crop by ``padding``).

With ``d~`` on the periodic grid the lasso becomes
``min 1/2 ||S T d~ - y||^2 + alpha ||x||_1 + [x_pad = 0]`` subject to
``x = d~``, which ADMM (Douglas-Rachford, over-relaxed) solves with

* an exact ``d~``-update ``(TᴴSᵀS T + rho I) d~ = TᴴSᵀ y + rho v``: the
  circulant part ``TᴴT + rho I`` is inverted per frequency with Woodbury
  (``G_k = (rho I + F_k F_kᴴ)^-1``, ``m x m``), the boundary (the unobserved
  output pixels ``P``) by a second Woodbury correction with the dense
  capacitance matrix ``C = rho P G Pᵀ`` (one inverse per layer and ``rho``);
* a soft-threshold ``x``-update that keeps the padding at zero (and applies
  the lower bound, if any).

The ``C_in``-channel products ``T v`` and ``Tᴴ z`` are plain convolutions
(about the cost of one FISTA iteration); only the ``m`` phase channels go
through FFTs.  On the DCGAN final layer (``benchmarks/bench_inversion.py``)
an ADMM iteration costs about two FISTA iterations, and ADMM reaches a given
objective in several times fewer iterations than FISTA.  A small ``rho``
removes the ill-conditioned error fastest but has a slow tail, a large one
the reverse, so the default is a continuation on ``rho``
(``DEFAULT_RHO_STAGES``; a switch keeps ``x`` and the dual ``rho (w - x)``).
For tight tolerances :func:`solve_batch` hands over to FISTA (warm-started)
after ``admm_iter`` iterations.  That hybrid is ``solver="admm"``.

On CPU the state is channels-last, on the periodic grid extended by ``Q - 1``
wrapped rows and columns so that ``T`` needs no circular pad of the
``C_in``-channel state (see :attr:`CirculantEmbedding.ext`).

Reference: M. Almeida and M. Figueiredo, "Deconvolving images with unknown
boundaries using the alternating direction method of multipliers", IEEE
Trans. Image Processing 22(8), 2013 (boundary-aware ADMM for deconvolution).
"""

import math

import torch
import torch.nn.functional as F

from ..linear_ops import phase_kernel
from ._duality import dual_point_value, extrapolated_dual, gap_scale, primal_objective

#: Unobserved output pixels above which the dense boundary correction is refused.
MAX_BOUNDARY = 8000

#: Default continuation on rho: ``(rho / lipschitz, iterations)`` per stage, the
#: last stage running to the end.  A small rho removes the ill-conditioned
#: error fast but has a slow tail; a larger one then converges fast (measured on
#: the DCGAN layer, benchmarks/bench_inversion.py: 140 iterations reach the
#: authors' objective, against 120 at rho=5e-4 L followed by 120 of FISTA).
DEFAULT_RHO_STAGES = ((5e-4, 80), (3e-3, 30), (2e-2, None))
#: The first stage's ``rho / lipschitz`` (the default of earlier versions).
DEFAULT_RHO_SCALE = DEFAULT_RHO_STAGES[0][0]
DEFAULT_RELAX = 1.8


def check_admm_operator(op):
    """Raise a clear ValueError unless ``op`` is a transposed convolution ADMM handles."""
    if getattr(op, "kind", None) != "conv_transpose2d":
        kind = getattr(op, "kind", type(op).__name__)
        raise ValueError(
            f"solver='admm' handles ConvTranspose2d final layers only (this layer is "
            f"{kind!r}); use solver='fista'."
        )
    if op.conv_kwargs["groups"] != 1:
        raise ValueError(
            f"solver='admm' handles ConvTranspose2d layers with groups=1 only (this one "
            f"has groups={op.conv_kwargs['groups']}); use solver='fista'."
        )


class CirculantEmbedding:
    """``W = S T E`` of a ConvTranspose2d operator (see the module docstring).

    Parameters
    ----------
    op : LayerOperator
        A ``conv_transpose2d`` operator with groups=1 (any stride, padding,
        output_padding and dilation).
    """

    def __init__(self, op):
        check_admm_operator(op)
        kw = op.conv_kwargs
        w = op.weight                                       # (C_in, C_out, kh, kw) float64
        self.cin, self.cout = int(w.shape[0]), int(w.shape[1])
        self.in_hw = tuple(op.input_shape[1:])
        self.out_hw = tuple(op.output_shape[1:])
        self.stride = tuple(kw["stride"])
        self.padding = tuple(kw["padding"])
        dil = tuple(kw["dilation"])
        ksize = tuple(w.shape[2:])
        N, Q = [], []
        for n_in, s, p, d, k, o in zip(self.in_hw, self.stride, self.padding, dil, ksize,
                                       self.out_hw):
            full = (n_in - 1) * s + d * (k - 1) + 1         # uncropped output length
            N.append(max(n_in, -(-full // s), -(-(p + o) // s)))
            Q.append(d * (k - 1) // s + 1)                  # shifts per phase
        self.N = tuple(N)
        sh, sw = self.stride
        self.m = self.cout * sh * sw
        # phase kernel ker[(co, ph, pw), ci, qh, qw] (see linear_ops.phase_kernel)
        ker = phase_kernel(w, self.stride, dil)
        self.Q = tuple(Q)
        self.kernel = ker                                    # adjoint weight (as is)
        # per-frequency matrices F_k (freq, m, C_in) of the circular convolution
        big = torch.zeros((self.m, self.cin) + self.N, dtype=torch.float64)
        big[:, :, :Q[0], :Q[1]] = ker
        self.Fk = torch.fft.rfft2(big).permute(2, 3, 0, 1).reshape(-1, self.m, self.cin)
        self.Nw2 = self.N[1] // 2 + 1
        # observed pixels in phase layout
        full = torch.zeros((1, self.cout, self.N[0] * sh, self.N[1] * sw), dtype=torch.bool)
        p = self.padding
        full[:, :, p[0]:p[0] + self.out_hw[0], p[1]:p[1] + self.out_hw[1]] = True
        self.observed = self.to_phase(full)[0]               # (m, Nh, Nw)
        self.unobserved = torch.nonzero(~self.observed.reshape(-1))[:, 0]

    # ------------------------------------------------------------ layouts
    def to_phase(self, u):
        """Full periodic output ``(B, C_out, Nh*sh, Nw*sw)`` -> phases ``(B, m, Nh, Nw)``."""
        B = u.shape[0]
        (Nh, Nw), (sh, sw) = self.N, self.stride
        u = u.reshape(B, self.cout, Nh, sh, Nw, sw).permute(0, 1, 3, 5, 2, 4)
        return u.reshape(B, self.m, Nh, Nw)

    def observe(self, y):
        """``Sᵀ y``: observed outputs ``(B, C_out, Ho, Wo)`` -> phases ``(B, m, Nh, Nw)``."""
        B = y.shape[0]
        (Nh, Nw), (sh, sw), p = self.N, self.stride, self.padding
        full = y.new_zeros((B, self.cout, Nh * sh, Nw * sw))
        full[:, :, p[0]:p[0] + self.out_hw[0], p[1]:p[1] + self.out_hw[1]] = y
        return self.to_phase(full)

    def crop(self, u):
        """``S u``: phases ``(B, m, Nh, Nw)`` -> observed outputs ``(B, C_out, Ho, Wo)``."""
        B = u.shape[0]
        (Nh, Nw), (sh, sw), p = self.N, self.stride, self.padding
        full = u.reshape(B, self.cout, sh, sw, Nh, Nw).permute(0, 1, 4, 2, 5, 3)
        full = full.reshape(B, self.cout, Nh * sh, Nw * sw)
        return full[:, :, p[0]:p[0] + self.out_hw[0], p[1]:p[1] + self.out_hw[1]]

    def embed(self, d):
        """``E d``: inputs ``(B, C_in, H, W)`` -> periodic grid ``(B, C_in, Nh, Nw)``."""
        return F.pad(d, (0, self.N[1] - self.in_hw[1], 0, self.N[0] - self.in_hw[0]))

    # ------------------------------------------------ extended periodic layout
    # The solver's loop keeps its C_in-channel state on the periodic grid
    # extended by Q-1 wrapped rows/columns at the top/left, so that T needs no
    # (C_in-channel) circular pad per iteration: element-wise steps keep the
    # copies equal, and TH writes them (it wraps its small m-channel input).
    @property
    def ext(self):
        return (self.Q[0] - 1, self.Q[1] - 1)

    def extend(self, d):
        """Periodic ``(B, C, Nh, Nw)`` -> extended ``(B, C, Nh+Qh-1, Nw+Qw-1)``."""
        eh, ew = self.ext
        return F.pad(d, (ew, 0, eh, 0), mode="circular") if eh or ew else d

    def interior(self, d):
        """Extended -> the layer's input grid ``(B, C_in, H, W)`` (a view)."""
        eh, ew = self.ext
        return d[:, :, eh:eh + self.in_hw[0], ew:ew + self.in_hw[1]]

    def T_ext(self, d, weight):
        """:meth:`T` of an extended input (no padding needed)."""
        return F.conv2d(d, weight)

    def TH_ext(self, u, weight):
        """:meth:`TH` with an extended output ``(B, C_in, Nh+Qh-1, Nw+Qw-1)``."""
        eh, ew = self.ext
        if eh or ew:
            u = F.pad(u, (ew, ew, eh, eh), mode="circular")
        return F.conv2d(u, weight)

    # ----------------------------------------------------------- products
    def T(self, d, weight):
        """Circular transposed convolution ``(B, C_in, Nh, Nw)`` -> ``(B, m, Nh, Nw)``.

        ``weight`` is :meth:`forward_weight` in the working dtype/device.
        """
        qh, qw = self.Q
        if qh > 1 or qw > 1:
            d = F.pad(d, (qw - 1, 0, qh - 1, 0), mode="circular")
        return F.conv2d(d, weight)

    def TH(self, u, weight):
        """Adjoint of :meth:`T`; ``weight`` is :meth:`adjoint_weight`."""
        qh, qw = self.Q
        if qh > 1 or qw > 1:
            u = F.pad(u, (0, qw - 1, 0, qh - 1), mode="circular")
        return F.conv2d(u, weight)

    def forward_weight(self):
        return self.kernel.flip(2, 3).contiguous()

    def adjoint_weight(self):
        return self.kernel.transpose(0, 1).contiguous()


def _block(A):
    """Complex ``(f, p, q)`` -> real ``(f, 2q, 2p)`` acting on ``[re, im]`` rows."""
    Ar, Ai = A.real, A.imag
    top = torch.cat([Ar.mT, Ai.mT], 2)
    bot = torch.cat([-Ai.mT, Ar.mT], 2)
    return torch.cat([top, bot], 1).contiguous()


class ADMMResolvent:
    """The exact ``d~``-update for one layer, ``rho``, device and dtype.

    ``resolvent(v) = (TᴴSᵀS T + rho I)^-1 (TᴴSᵀ y + rho v)
    = v + (c0 - Tᴴ z(v)) / rho`` with ``c0 = TᴴSᵀ y`` (see :meth:`correction`).
    """

    def __init__(self, emb, rho, device, dtype):
        if len(emb.unobserved) > MAX_BOUNDARY:
            raise ValueError(
                f"solver='admm': this layer leaves {len(emb.unobserved)} output pixels of "
                f"its periodic embedding unobserved (limit {MAX_BOUNDARY}); the dense "
                "boundary correction would be too large. Use solver='fista'."
            )
        self.emb = emb
        self.rho = float(rho)
        self.device, self.dtype = device, dtype
        Fk = emb.Fk
        m = emb.m
        G = torch.linalg.inv(self.rho * torch.eye(m, dtype=Fk.dtype) + Fk @ Fk.mH)
        self.G = _block(G).to(device, dtype)                # (f, 2m, 2m)
        self.unobs = emb.unobserved.to(device)
        nu = len(emb.unobserved)
        if nu:
            # capacitance C = rho P G Pᵀ, built column block by column block
            cols = []
            for start in range(0, nu, 512):
                idx = emb.unobserved[start:start + 512]
                e = torch.zeros((len(idx), m * emb.N[0] * emb.N[1]), dtype=torch.float64)
                e[torch.arange(len(idx)), idx] = 1.0
                eh = torch.fft.rfft2(e.reshape((-1, m) + emb.N))
                eh = eh.permute(2, 3, 1, 0).reshape(-1, m, len(idx))
                ge = (G @ eh).reshape(emb.N[0], emb.Nw2, m, len(idx)).permute(3, 2, 0, 1)
                g = torch.fft.irfft2(ge, s=emb.N).reshape(len(idx), -1)
                cols.append(g[:, emb.unobserved])
            C = self.rho * torch.cat(cols, 0)
            C = 0.5 * (C + C.T)
            self.Cinv = torch.linalg.inv(C).to(device, dtype)
        else:
            self.Cinv = None
        self.wf = emb.forward_weight().to(device, dtype)
        self.wa = emb.adjoint_weight().to(device, dtype)

    def _fwd(self, x):
        """``(B, m, Nh, Nw)`` real -> ``(f, B, 2m)`` spectrum rows."""
        B, c = x.shape[:2]
        xh = torch.view_as_real(torch.fft.rfft2(x))
        return xh.permute(2, 3, 0, 4, 1).reshape(-1, B, 2 * c)

    def _inv(self, z, c):
        emb = self.emb
        B = z.shape[1]
        zz = z.reshape(emb.N[0], emb.Nw2, B, 2, c).permute(2, 4, 0, 1, 3).contiguous()
        return torch.fft.irfft2(torch.view_as_complex(zz), s=emb.N)

    def targets(self, y_img):
        """``(c0, t0) = (TᴴSᵀ y, T c0)`` for observed outputs ``(B, C_out, Ho, Wo)``."""
        c0 = self.emb.TH(self.emb.observe(y_img), self.wa)
        return c0, self.emb.T(c0, self.wf)

    def phase_solve(self, tb):
        """``z = (I - rho G Pᵀ C⁻¹ P) G tb``: the m-channel part of the solve."""
        B, m = tb.shape[0], self.emb.m
        tw = self._inv(self._fwd(tb) @ self.G, m)              # G T b
        if self.Cinv is None:
            return tw
        flat = tw.reshape(B, -1)
        q = torch.zeros_like(flat)
        q[:, self.unobs] = flat[:, self.unobs] @ self.Cinv
        gq = self._inv(self._fwd(q.reshape(tw.shape)) @ self.G, m)
        return torch.sub(tw, gq, alpha=self.rho)

    def correction(self, v, c0, t0):
        """``c0 - Tᴴ z`` so that ``resolvent(v) = v + (c0 - Tᴴ z) / rho``."""
        emb = self.emb
        tb = torch.add(t0, emb.T(v, self.wf), alpha=self.rho)     # T (c0 + rho v)
        return c0 - emb.TH(self.phase_solve(tb), self.wa)

    def resolvent(self, v, c0, t0):
        return v + self.correction(v, c0, t0) / self.rho


def get_resolvent(op, rho, device, dtype):
    """The cached :class:`ADMMResolvent` of ``op`` (cached on the operator)."""
    key = ("admm", float(rho), str(device), dtype)
    res = op._cache.get(key)
    if res is None:
        emb = op._cache.get("admm_embedding")
        if emb is None:
            emb = CirculantEmbedding(op)
            op._cache["admm_embedding"] = emb
        res = ADMMResolvent(emb, rho, device, dtype)
        op._cache[key] = res
    return res


def _rho_stages(rho, lipschitz):
    """``rho`` (None, a float or stages) as a list of ``(rho, n_iter or None)``."""
    scale = float(lipschitz) if lipschitz > 0 else 1.0
    if rho is None:
        stages = [(r * scale, n) for r, n in DEFAULT_RHO_STAGES]
    elif isinstance(rho, (int, float)):
        stages = [(float(rho), None)]
    else:
        stages = [(float(r), None if n is None else int(n)) for r, n in rho]
        if not stages:
            raise ValueError("rho stages must not be empty.")
        stages[-1] = (stages[-1][0], None)
    for r, n in stages:
        if not r > 0:
            raise ValueError(f"rho must be positive; got {r}.")
        if n is not None and n < 1:
            raise ValueError(f"each rho stage needs at least one iteration; got {n}.")
    return stages


def admm(op, y, alpha, lipschitz, *, lower=None, d0=None, rho=None, relax=DEFAULT_RELAX,
         tol=1e-6, max_iter=200, check_every=20, dtype=torch.float32, n_extrapolation=5,
         callback=None):
    """Over-relaxed ADMM (Douglas-Rachford) with exact FFT solves, batched.

    Parameters
    ----------
    op : LayerOperator
        A ConvTranspose2d operator with groups=1.
    y : torch.Tensor of shape (B, M), float64
        Targets (already shifted by ``W anchor`` and the bias).
    alpha : float
        Penalty (sum scale).
    lipschitz : float
        Largest eigenvalue of ``WᵀW``; the default ``rho`` stages are
        ``DEFAULT_RHO_STAGES`` in units of it.
    lower : torch.Tensor of shape (K,) or None
        Lower bound on ``d``.
    d0 : torch.Tensor of shape (B, K) or None
        Warm start (the ADMM state starts at ``d0`` with a zero dual).
    rho : float, sequence of (float, int or None) pairs, or None
        ADMM penalty parameter, or stages ``(rho, n_iter)`` of a continuation
        (the last stage's count is ignored: it runs to the end).  A new stage
        keeps the iterate and the dual ``rho (w - x)`` and needs one more
        factorisation of the boundary (cached per layer and ``rho``).
    relax : float
        Over-relaxation in ``(0, 2)``.
    tol : float
        Stop a sample when ``gap <= tol * 1/2 ||y||^2``.
    max_iter, check_every : int
        Iterations at most; iterations between two float64 gap evaluations.
    dtype : torch.dtype
        Precision of the iterations (the gap is always float64).
    n_extrapolation : int
        Residuals (one per gap check) used by dual extrapolation, as in
        :func:`fista` (0 switches it off).
    callback : callable or None
        ``callback(n_iter, n_active)`` after each gap check.

    Returns
    -------
    d : torch.Tensor (B, K), float64
    primal, gap : torch.Tensor (B,), float64
    n_iter : torch.Tensor (B,), int64
    """
    check_admm_operator(op)
    if not 0.0 < relax < 2.0:
        raise ValueError(f"relax must be in (0, 2); got {relax}.")
    device = y.device
    y = y.to(torch.float64)
    B = y.shape[0]
    stages = _rho_stages(rho, lipschitz)
    rho = stages[0][0]
    res = get_resolvent(op, rho, device, dtype)
    emb = res.emb
    H, Wd = emb.in_hw
    K = op.n_inputs

    # The state lives on the extended periodic grid (see CirculantEmbedding.ext),
    # channels-last on CPU, where oneDNN's small convolutions are faster.
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def grid(t):
        """``(C_in, H, W)`` values -> ``(1, C_in, extended grid)``, padding zero."""
        out = torch.zeros((1, emb.cin) + emb.N, dtype=dtype, device=device)
        out[0, :, :H, :Wd] = t
        return emb.extend(out).contiguous(memory_format=fmt)

    # thresholds: +inf on the padding keeps it at zero
    inf_pad = grid(torch.ones((emb.cin, H, Wd), dtype=dtype, device=device)) == 0

    def thresholds(rho):
        t = torch.full(inf_pad.shape, alpha / rho, dtype=dtype, device=device)
        t[inf_pad] = math.inf
        t = t.contiguous(memory_format=fmt)
        return t, -t

    thresh, neg_thresh = thresholds(rho)
    lower64 = None if lower is None else lower.to(device, torch.float64)
    low = None
    if lower is not None:
        low = grid(lower.to(device, dtype).reshape(emb.cin, H, Wd))

    def prox(w):
        x = w - torch.clamp(w, neg_thresh, thresh)
        if low is not None:
            x = torch.maximum(x, low)
        return x

    scale = gap_scale(y)
    if d0 is None:
        w = torch.zeros((B, emb.cin) + emb.N, dtype=dtype, device=device)
    else:
        d0 = d0.to(device, torch.float64)
        if lower64 is not None:
            d0 = torch.maximum(d0, lower64)
        # a w with prox(w) = d0 (and a zero dual)
        x0 = emb.embed(d0.to(dtype).reshape(B, emb.cin, H, Wd))
        w = x0 + torch.sign(x0) * (alpha / rho)
    w = emb.extend(w).contiguous(memory_format=fmt)
    # resolvent(v) = v + (c0 - Tᴴ z) / rho with c0 = Tᴴ y_ph, so the update
    # w + relax (resolvent(2x - w) - x) is lerp(w, x, relax) + Tᴴ (relax/rho) (y_ph - z)
    y_ph = emb.observe(y.to(dtype).reshape((B,) + op.output_shape))
    t0 = emb.T(emb.TH(y_ph, res.wa), res.wf)
    wf = res.wf.contiguous(memory_format=fmt)
    wa = (res.wa * (relax / rho)).contiguous(memory_format=fmt)
    stage, stage_end = 0, stages[0][1]

    d_out = torch.zeros((B, K), dtype=torch.float64, device=device)
    primal_out = torch.full((B,), math.inf, dtype=torch.float64, device=device)
    gap_out = torch.full((B,), math.inf, dtype=torch.float64, device=device)
    iter_out = torch.zeros(B, dtype=torch.int64, device=device)
    best_dual = torch.full((B,), -math.inf, dtype=torch.float64, device=device)
    idx = torch.arange(B, device=device)
    history = []                               # float64 residuals at checks
    n_iter = 0
    while True:
        x = prox(w)
        if n_iter % check_every == 0 or n_iter >= max_iter:
            d64 = emb.interior(x).reshape(-1, K).to(torch.float64)
            y64 = y[idx]
            r = y64 - op.matvec(d64)
            primal = primal_objective(r, d64, alpha)
            dual = dual_point_value(r, op.rmatvec(r), y64, alpha, lower64)
            if n_extrapolation:
                dual = extrapolated_dual(op, history, r, y64, alpha, lower64, dual,
                                         n_extrapolation)
            best = torch.maximum(best_dual[idx], dual)
            best_dual[idx] = best
            gap = (primal - best).clamp(min=0.0)
            d_out[idx], primal_out[idx], gap_out[idx], iter_out[idx] = d64, primal, gap, n_iter
            done = gap / scale[idx] <= tol
            if callback is not None:
                callback(n_iter, int((~done).sum()))
            if n_iter >= max_iter or bool(done.all()):
                break
            if done.any():
                keep = ~done
                idx, w, x, y_ph, t0 = idx[keep], w[keep], x[keep], y_ph[keep], t0[keep]
                history = [h[keep] for h in history]
        if stage_end is not None and n_iter >= stage_end:
            # next rho: keep x and the dual rho (w - x)
            stage += 1
            new_rho, n_stage = stages[stage]
            w = torch.lerp(x, w, rho / new_rho)
            rho = new_rho
            stage_end = None if n_stage is None else stage_end + n_stage
            res = get_resolvent(op, rho, device, dtype)
            thresh, neg_thresh = thresholds(rho)
            wa = (res.wa * (relax / rho)).contiguous(memory_format=fmt)
            x = prox(w)
        # one over-relaxed Douglas-Rachford step
        tb = torch.add(t0, emb.T_ext(torch.lerp(w, x, 2.0), wf), alpha=rho)
        z = res.phase_solve(tb.contiguous())
        w = torch.lerp(w, x, relax).add_(emb.TH_ext(y_ph - z, wa))
        n_iter += 1
    return d_out, primal_out, gap_out, iter_out
