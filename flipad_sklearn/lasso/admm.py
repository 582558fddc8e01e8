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

from .certificate import Certificate
from .embedding import ConvTranspose2dEmbedding
from .penalty import L1Penalty

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
#: Iterations between two certificate checks.  A check costs about half an
#: iteration here; checking every 10 rather than 20 lets the progress stop end
#: 10-20 iterations sooner (benchmarks/bench_inversion.py, DCGAN: 140 instead
#: of 160, the objective still below the authors' FISTA's on every sample).
CHECK_EVERY = 10


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


class CirculantEmbedding(ConvTranspose2dEmbedding):
    """:class:`~.embedding.ConvTranspose2dEmbedding` with what the exact solve needs.

    Adds the per-frequency matrices ``F_k`` (``m x C_in``, small for the
    layers this solver takes) and the unobserved output pixels of the
    periodic grid (the boundary of the Woodbury correction).

    Parameters
    ----------
    op : LayerOperator
        A ``conv_transpose2d`` operator with groups=1 (any stride, padding,
        output_padding and dilation).
    """

    def __init__(self, op):
        check_admm_operator(op)
        super().__init__(op)
        Qh, Qw = self.Q
        big = torch.zeros((self.m, self.cin) + self.N, dtype=torch.float64)
        big[:, :, :Qh, :Qw] = self.kernel
        self.Fk = torch.fft.rfft2(big).permute(2, 3, 0, 1).reshape(-1, self.m, self.cin)
        full = torch.zeros((1, self.cout, self.N[0] * self.stride[0],
                            self.N[1] * self.stride[1]), dtype=torch.bool)
        (ph, pw), (_, Ho, Wo) = self.padding, self.out_shape
        full[:, :, ph:ph + Ho, pw:pw + Wo] = True
        self.observed = self._to_phase(full)[0]               # (m, Nh, Nw)
        self.unobserved = torch.nonzero(~self.observed.reshape(-1))[:, 0]

    def to_phase(self, u):
        """Full periodic output ``(B, C_out, Nh*sh, Nw*sw)`` -> phases ``(B, m, Nh, Nw)``."""
        return self._to_phase(u)

    @property
    def ext(self):
        return self.ext_before

    def interior(self, d):
        """Extended grid -> the layer's input grid ``(B, C_in, H, W)`` (a view)."""
        return self.interior_ext(d)

    def forward_weight(self):
        return self._forward_weight().contiguous()

    def adjoint_weight(self):
        return self._adjoint_weight().contiguous()


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
    emb = op.cached("admm_embedding", lambda: CirculantEmbedding(op))
    return op.cached(("admm", float(rho), str(device), dtype),
                     lambda: ADMMResolvent(emb, rho, device, dtype))


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
         tol=1e-6, max_iter=200, check_every=CHECK_EVERY, dtype=torch.float32, n_extrapolation=5,
         progress_tol=None, callback=None):
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
        Iterations at most; iterations between two float64 certificate checks.
    dtype : torch.dtype
        Precision of the iterations (the certificate is always float64).
    n_extrapolation, progress_tol :
        See :class:`~.certificate.Certificate`.
    callback : callable or None
        ``callback(n_iter, n_active)`` after each check.

    Returns
    -------
    d : torch.Tensor (B, K), float64
    primal, gap : torch.Tensor (B,), float64
    n_iter : torch.Tensor (B,), int64
    """
    penalty = L1Penalty(alpha, lower)
    y = y.to(torch.float64)
    cert = Certificate(op, y, penalty, tol=tol, progress_tol=progress_tol,
                       n_extrapolation=n_extrapolation, d0=d0)
    admm_steps(op, y, penalty, lipschitz, cert, d0=d0, rho=rho, relax=relax,
               max_iter=max_iter, check_every=check_every, dtype=dtype, callback=callback)
    return cert.results()[:4]


def admm_steps(op, y, penalty, lipschitz, cert, *, d0=None, rho=None, relax=DEFAULT_RELAX,
               max_iter=200, check_every=CHECK_EVERY, dtype=torch.float32, callback=None):
    """Run exact-resolvent ADMM on the active rows of ``cert``; returns the iterations."""
    check_admm_operator(op)
    if not 0.0 < relax < 2.0:
        raise ValueError(f"relax must be in (0, 2); got {relax}.")
    device = y.device
    alpha = penalty.alpha
    B = y.shape[0]
    stages = _rho_stages(rho, lipschitz)
    rho = stages[0][0]
    res = get_resolvent(op, rho, device, dtype)
    emb = res.emb
    H, Wd = emb.in_hw

    # The state lives on the extended periodic grid (see CirculantEmbedding.ext),
    # channels-last on CPU, where oneDNN's small convolutions are faster.
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def grid(t):
        """``(C_in, H, W)`` values -> ``(1, C_in, extended grid)``, padding zero."""
        out = torch.zeros((1, emb.cin) + emb.N, dtype=dtype, device=device)
        out[0, :, :H, :Wd] = t
        return emb.extend(out).contiguous(memory_format=fmt)

    # thresholds: +inf on the padding keeps it at zero (on these small grids one
    # clamp against a threshold array beats index fills of the padding)
    inf_pad = grid(torch.ones((emb.cin, H, Wd), dtype=dtype, device=device)) == 0

    def thresholds(rho):
        t = torch.full(inf_pad.shape, alpha / rho, dtype=dtype, device=device)
        t[inf_pad] = math.inf
        t = t.contiguous(memory_format=fmt)
        return t, -t

    thresh, neg_thresh = thresholds(rho)
    low = None
    if penalty.lower is not None:
        low = grid(penalty.lower.to(device, dtype).reshape(emb.cin, H, Wd))

    def prox(w, out):
        # w - clamp(w, -t, t), into a kept buffer (a fresh large tensor per
        # step page-faults)
        torch.clamp(w, neg_thresh, thresh, out=out)
        torch.sub(w, out, out=out)
        if low is not None:
            torch.maximum(out, low, out=out)
        return out

    if d0 is None:
        w = torch.zeros((B, emb.cin) + emb.N, dtype=dtype, device=device)
    else:
        d0 = d0.to(device, torch.float64)
        if penalty.lower is not None:
            d0 = torch.maximum(d0, penalty.lower.to(device))
        # a w with prox(w) = d0 (and a zero dual)
        x0 = emb.embed(d0.to(dtype).reshape(B, emb.cin, H, Wd))
        w = x0 + torch.sign(x0) * (alpha / rho)
    w = emb.extend(w).contiguous(memory_format=fmt)
    x, refl = torch.empty_like(w), torch.empty_like(w)
    # resolvent(v) = v + (c0 - Tᴴ z) / rho with c0 = Tᴴ y_ph, so the update
    # w + relax (resolvent(2x - w) - x) is lerp(w, x, relax) + Tᴴ (relax/rho) (y_ph - z)
    y_ph = emb.observe(y.to(dtype).reshape((B,) + op.output_shape))
    t0 = emb.T(emb.TH(y_ph, res.wa), res.wf)
    wf = res.wf.contiguous(memory_format=fmt)
    wa = (res.wa * (relax / rho)).contiguous(memory_format=fmt)
    stage, stage_end = 0, stages[0][1]

    n_iter, resid = 0, None
    while True:
        x = prox(w, x)
        if n_iter % check_every == 0 or n_iter >= max_iter:
            d = emb.interior(x)                           # a view: no copy
            # the resolvent's residual y - W d~ = S (y_ph - z) is a dual candidate
            # (its limit is the optimal dual point)
            duals = () if resid is None else \
                (emb.crop(resid).reshape(resid.shape[0], -1).to(torch.float64),)
            done = cert.check(n_iter, d, duals=duals, final=n_iter >= max_iter)
            if callback is not None:
                callback(n_iter, int((~done).sum()))
            if n_iter >= max_iter or bool(done.all()):
                break
            if done.any():
                keep = cert.drop(done)
                w, x, y_ph, t0 = w[keep], x[keep], y_ph[keep], t0[keep]
                resid = None if resid is None else resid[keep]
                refl = torch.empty_like(w)
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
            x = prox(w, x)
        # one over-relaxed Douglas-Rachford step
        tb = torch.add(t0, emb.T_ext(torch.lerp(w, x, 2.0, out=refl), wf), alpha=rho)
        resid = y_ph - res.phase_solve(tb.contiguous())
        w.lerp_(x, relax).add_(emb.TH_ext(resid, wa))
        n_iter += 1
    return n_iter
