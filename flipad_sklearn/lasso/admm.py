"""ADMM with exact FFT solves for convolutional layers with a small boundary.

Any ``Conv2d`` or ``ConvTranspose2d`` (any stride, padding, dilation and
groups) is ``W = S T E`` (:mod:`.embedding`):

* ``E`` places the activations in a periodic grid ``Nh x Nw`` (zero padding);
* ``T`` is a *stride-1* circular convolution on that grid from the ``C_in``
  activation channels to ``m`` channels (``C_out`` for a Conv2d, the
  ``C_out * sh * sw`` output phases of a ConvTranspose2d), i.e. per 2-D
  frequency a ``m x C_in`` complex matrix ``F_k``;
* ``S`` keeps the observed outputs (the crop by the padding, and the
  subsampling of a strided Conv2d).

With ``d~`` on the periodic grid the lasso becomes
``min 1/2 ||S T d~ - y||^2 + alpha ||x||_1 + [x_pad = 0]`` subject to
``x = d~``, which ADMM (Douglas-Rachford, over-relaxed) solves with

* an exact ``d~``-update ``(TᴴSᵀS T + rho I) d~ = TᴴSᵀ y + rho v``: the
  circulant part ``TᴴT + rho I`` is inverted per frequency with Woodbury
  (``G_k = (rho I + F_k F_kᴴ)^-1``, ``m x m``), the boundary (the unobserved
  outputs ``P`` of the periodic grid) by a second Woodbury correction with
  the dense capacitance matrix ``C = rho P G Pᵀ`` (one factorisation per layer
  and ``rho``; a gather of ``G``'s kernel, see :func:`capacitance`);
* a soft-threshold ``x``-update that keeps the padding at zero (and applies
  the lower bound, if any).

The ``C_in``-channel products ``T v`` and ``Tᴴ z`` are plain convolutions
(about the cost of one FISTA iteration); only the ``m`` output channels go
through FFTs.  The boundary is small for stride-1 Conv2d layers (a frame of
the grid: 780 outputs for a 3x3 kernel on a 64x64 RGB image) and for
transposed convolutions; a strided Conv2d leaves most of its grid
unobserved, and ``MAX_BOUNDARY`` refuses it (split ADMM, :mod:`.split_admm`,
has no boundary matrix).  A small ``rho`` removes the ill-conditioned error
fastest but has a slow tail, a large one the reverse, so the default is a
continuation on ``rho`` (``DEFAULT_RHO_STAGES``, larger for larger
penalties: ``RHO_ALPHA_SCALING``; a switch keeps ``x`` and the dual
``rho (w - x)``).  For tight tolerances :func:`solve_batch` hands over to
FISTA (warm-started) after ``admm_iter`` iterations.  That hybrid is
``solver="admm"``.

On CPU the state is channels-last, on the periodic grid extended by wrapped
rows and columns so that ``T`` needs no circular pad of the ``C_in``-channel
state (see :meth:`.embedding.PeriodicEmbedding.extend`).

Reference: M. Almeida and M. Figueiredo, "Deconvolving images with unknown
boundaries using the alternating direction method of multipliers", IEEE
Trans. Image Processing 22(8), 2013 (boundary-aware ADMM for deconvolution).
"""

import math

import torch

from ..operators.embedding import periodic_embedding
from .certificate import Certificate
from .driver import check_due, checkpoint
from .penalty import L1Penalty

#: Unobserved outputs above which the dense boundary correction is refused
#: (its factor is ``MAX_BOUNDARY^2`` floats).
MAX_BOUNDARY = 8000

#: Default continuation on rho: ``(rho / lipschitz, iterations)`` per stage, the
#: last stage running to the end.  A small rho removes the ill-conditioned
#: error fast but has a slow tail; a larger one then converges fast (measured on
#: the DCGAN layer, ``benchmarks/results/bench_inversion_defaults.md``: 140 iterations reach the
#: authors' objective, against 120 at rho=5e-4 L followed by 120 of FISTA).  A
#: shorter first stage at 1e-4 stopped 10 iterations sooner on the DCGAN and
#: LSGAN layers, but its first 60 iterations are far worse (objective +9% at
#: 60 on a 32x32 ConvTranspose2d), and the attribution benchmark's --quick run
#: (60 iterations) then gave constant features.
DEFAULT_RHO_STAGES = ((5e-4, 80), (3e-3, 30), (2e-2, None))
#: Default continuation with a ridge (an elastic net, strongly convex): the
#: slow tail that the long small-rho stage above fights is gone, and a short
#: stage at 3e-3 L then 2e-2 L certifies the features (``feature_tol`` 5e-4)
#: in 30 iterations on the DCGAN and LSGAN layers
#: (``benchmarks/results/bench_inversion_ridge.md``), where the stages above take 120
#: (``benchmarks/results/bench_reproducibility.md`` measures the result).
RIDGE_RHO_STAGES = ((3e-3, 20), (2e-2, None))
#: The first stage's ``rho / lipschitz`` (the default of earlier versions).
DEFAULT_RHO_SCALE = DEFAULT_RHO_STAGES[0][0]
#: The default stages grow with the penalty: ``(least ratio, factor)``, the
#: ratio ``alpha / ||Wᵀy||_inf`` (its median over the batch; 1 would give
#: ``d = 0``).  The prox threshold is ``alpha / rho``: with the stages fixed
#: in units of ``L``, a larger penalty over-shrinks each step and ADMM needs
#: more iterations as alpha grows (DCGAN layer, ratio 0.14: 215 iterations,
#: slower than FISTA's 120), while stages a hundred times larger end in 70 at
#: the same objective.  At FLIPAD's penalties (ratio ~3e-4) the unscaled
#: stages reach the lowest objective and larger ones stop early above it.
#: Measured in ``benchmarks/results/bench_admm_alpha.md``; factors are powers of ten
#: so that the per-rho factorisations stay cached across batches.
RHO_ALPHA_SCALING = ((4e-2, 100.0), (4e-3, 10.0))
#: The same with a ridge (``RIDGE_RHO_STAGES``): milder, since the strongly
#: convex problem has no slow tail.  On the 32x32 zoo's final layers
#: (ratio 0.27) the factor 100 took 180-440 iterations to ``feature_tol``, 5
#: took 70 (``benchmarks/results/bench_reproducibility.md``, ``bench_inversion_ridge.md``).
RIDGE_RHO_ALPHA_SCALING = ((4e-2, 5.0), (4e-3, 2.0))
DEFAULT_RELAX = 1.8
#: Iterations between two certificate checks.  A check costs about half an
#: iteration here; checking every 10 rather than 20 lets the progress stop end
#: 10-20 iterations sooner (``benchmarks/results/bench_inversion_defaults.md``, DCGAN: 140 instead
#: of 160, the objective still below the authors' FISTA's on every sample).
CHECK_EVERY = 10


def check_admm_operator(op):
    """Raise a clear ValueError unless ``op`` is a convolution exact ADMM handles."""
    capability = getattr(op, "periodic_embedding", None)
    if capability is None or capability() is None:
        name = getattr(op, "layer_name", type(op).__name__)
        raise ValueError(
            f"solver='admm' handles Conv2d and ConvTranspose2d final layers only (this "
            f"layer is {name}); use solver='fista'."
        )


def unobserved_outputs(emb):
    """Flat indices into ``(m, Nh, Nw)`` of ``T``'s outputs that ``S`` does not observe.

    They are the boundary of the exact solve's Woodbury correction (cached on
    the embedding).
    """
    idx = getattr(emb, "_unobserved", None)
    if idx is None:
        idx = torch.nonzero(emb.observed_mask()[0].reshape(-1) == 0)[:, 0]
        emb._unobserved = idx
    return idx


def boundary_size(op):
    """How many outputs of ``op``'s periodic embedding are unobserved."""
    return len(unobserved_outputs(periodic_embedding(op)))


def capacitance(emb, G, rho, rows=1024):
    """``C = rho P G Pᵀ`` on the unobserved outputs ``P`` (float64, dense).

    ``G`` is circulant per channel pair, so ``C`` is a gather of its kernel
    ``g_ij = IDFT(G_k[i, j])`` at the position differences: no solve per
    boundary pixel.
    """
    (Nh, Nw), m = emb.N, emb.m
    g = torch.fft.irfft2(G.reshape(Nh, emb.Nw2, m, m).permute(2, 3, 0, 1), s=emb.N)
    idx = unobserved_outputs(emb)
    ch, rest = idx // (Nh * Nw), idx % (Nh * Nw)
    ph, pw = rest // Nw, rest % Nw
    C = torch.empty((len(idx), len(idx)), dtype=torch.float64)
    for a in range(0, len(idx), rows):
        sl = slice(a, a + rows)
        C[sl] = g[ch[sl, None], ch[None, :],
                  (ph[sl, None] - ph[None, :]) % Nh, (pw[sl, None] - pw[None, :]) % Nw]
    C *= rho
    return 0.5 * (C + C.T)


class ADMMResolvent:
    """The exact ``d~``-update for one layer, ``rho``, device and dtype.

    ``resolvent(v) = (TᴴSᵀS T + rho I)^-1 (TᴴSᵀ y + rho v)
    = v + (c0 - Tᴴ z(v)) / rho`` with ``c0 = TᴴSᵀ y`` (see :meth:`correction`).
    """

    def __init__(self, emb, rho, device, dtype):
        nu = len(unobserved_outputs(emb))
        if nu > MAX_BOUNDARY:
            raise ValueError(
                f"solver='admm': this layer leaves {nu} output pixels of its periodic "
                f"embedding unobserved (limit {MAX_BOUNDARY}); the dense boundary "
                "correction would be too large. Use solver='split_admm' or 'fista'."
            )
        self.emb = emb
        self.rho = float(rho)
        self.device, self.dtype = device, dtype
        gram = emb.gram()
        G = torch.linalg.inv(self.rho * torch.eye(emb.m, dtype=gram.dtype) + gram)
        # (m, m, f), applied to the (B, m, f) spectra as rfft2 gives them: a
        # broadcast product beats a batched matmul over f tiny matrices
        cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.G = G.permute(1, 2, 0).to(device, cdt).contiguous()
        self.unobs = unobserved_outputs(emb).to(device)
        # the capacitance is SPD (eigenvalues in [rho/(rho+L), 1]); its explicit
        # inverse makes the boundary correction one small matrix product
        self.Cinv = (torch.cholesky_inverse(torch.linalg.cholesky(
            capacitance(emb, G, self.rho))).to(device, dtype) if nu else None)
        self.wf, self.wa = emb.weights(device, dtype)

    def _apply_G(self, x):
        """``G x`` per frequency for a real ``(B, m, Nh, Nw)`` batch."""
        B, m, N = x.shape[0], self.emb.m, self.emb.N
        xh = torch.fft.rfft2(x).reshape(B, 1, m, -1)
        zh = (self.G * xh).sum(2)
        return torch.fft.irfft2(zh.reshape(B, m, N[0], self.emb.Nw2), s=N)

    def targets(self, y_img):
        """``(c0, t0) = (TᴴSᵀ y, T c0)`` for observed outputs ``(B, C_out, Ho, Wo)``."""
        c0 = self.emb.TH(self.emb.observe(y_img), self.wa)
        return c0, self.emb.T(c0, self.wf)

    def phase_solve(self, tb):
        """``z = (I - rho G Pᵀ C⁻¹ P) G tb``: the m-channel part of the solve."""
        B = tb.shape[0]
        tw = self._apply_G(tb)                                   # G T b
        if self.Cinv is None:
            return tw
        flat = tw.reshape(B, -1)
        q = torch.zeros_like(flat)
        q[:, self.unobs] = flat[:, self.unobs] @ self.Cinv
        return torch.sub(tw, self._apply_G(q.reshape(tw.shape)), alpha=self.rho)

    def correction(self, v, c0, t0):
        """``c0 - Tᴴ z`` so that ``resolvent(v) = v + (c0 - Tᴴ z) / rho``."""
        emb = self.emb
        tb = torch.add(t0, emb.T(v, self.wf), alpha=self.rho)     # T (c0 + rho v)
        return c0 - emb.TH(self.phase_solve(tb), self.wa)

    def resolvent(self, v, c0, t0):
        return v + self.correction(v, c0, t0) / self.rho


def get_resolvent(op, rho, device, dtype):
    """The cached :class:`ADMMResolvent` of ``op`` (cached on the operator)."""
    check_admm_operator(op)
    emb = periodic_embedding(op)
    return op.cached(("admm", float(rho), str(device), dtype),
                     lambda: ADMMResolvent(emb, rho, device, dtype))


def rho_alpha_factor(ratio, ridge=0.0):
    """The factor of the default rho stages at ``ratio = alpha / ||Wᵀy||_inf``."""
    for least, factor in (RIDGE_RHO_ALPHA_SCALING if ridge > 0 else RHO_ALPHA_SCALING):
        if ratio >= least:
            return factor
    return 1.0


def penalty_ratio(op, y, penalty, dtype=torch.float32):
    """Median over the rows of ``alpha / ||Wᵀy||_inf`` (one-sided with a bound).

    The share of the largest useful penalty: at 1 or more the answer is
    ``d = 0``.  One adjoint product in ``dtype`` (a scale, not a certificate).
    """
    if y.shape[0] == 0 or penalty.alpha <= 0:
        return 0.0
    ratio = penalty.feasible_scale(op.rmatvec(y.to(dtype)))
    return float(ratio.median())


def _rho_stages(rho, lipschitz, factor=1.0, ridge=0.0):
    """``rho`` (None, a float or stages) as a list of ``(rho, n_iter or None)``.

    ``factor`` scales the default stages only (:func:`rho_alpha_factor`);
    with ``ridge > 0`` the defaults are ``RIDGE_RHO_STAGES``.
    """
    scale = float(lipschitz) if lipschitz > 0 else 1.0
    if rho is None:
        default = RIDGE_RHO_STAGES if ridge > 0 else DEFAULT_RHO_STAGES
        stages = [(r * scale * factor, n) for r, n in default]
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
        A Conv2d or ConvTranspose2d operator (at most ``MAX_BOUNDARY``
        unobserved outputs on its periodic grid).
    y : torch.Tensor of shape (B, M), float64
        Targets (already shifted by ``W anchor`` and the bias).
    alpha : float
        Penalty (sum scale).
    lipschitz : float
        Largest eigenvalue of ``WᵀW``; the default ``rho`` stages are
        ``DEFAULT_RHO_STAGES`` in units of it, times :func:`rho_alpha_factor`
        of the batch's :func:`penalty_ratio`.
    lower : torch.Tensor of shape (K,) or None
        Lower bound on ``d``.
    d0 : torch.Tensor of shape (B, K) or None
        Warm start (the ADMM state starts at ``d0`` with a zero dual).
    rho : float, sequence of (float, int or None) pairs, or None
        ADMM penalty parameter, or stages ``(rho, n_iter)`` of a continuation
        (the last stage's count is ignored: it runs to the end).  A new stage
        keeps the iterate and the dual ``rho (w - x)`` and needs one more
        factorisation of the boundary (cached per layer and ``rho``).  None:
        ``DEFAULT_RHO_STAGES``, scaled with the penalty (``RHO_ALPHA_SCALING``).
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
    factor = 1.0 if rho is not None else rho_alpha_factor(penalty_ratio(op, y, penalty, dtype),
                                                          penalty.ridge)
    stages = _rho_stages(rho, lipschitz, factor, penalty.ridge)
    rho = stages[0][0]
    res = get_resolvent(op, rho, device, dtype)
    emb = res.emb
    H, Wd = emb.in_hw

    # The state lives on the extended periodic grid (see PeriodicEmbedding.extend),
    # channels-last on CPU, where oneDNN's small convolutions are faster.
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def grid(t):
        """``(C_in, H, W)`` values -> ``(1, C_in, extended grid)``, padding zero."""
        return emb.extend(emb.embed(t[None])).contiguous(memory_format=fmt)

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

    ridge = penalty.ridge

    def prox(w, out):
        # w - clamp(w, -t, t), into a kept buffer (a fresh large tensor per
        # step page-faults); the elastic net's ridge then scales by rho / (rho + ridge)
        torch.clamp(w, neg_thresh, thresh, out=out)
        torch.sub(w, out, out=out)
        if ridge > 0:
            out.mul_(rho / (rho + ridge))
        if low is not None:
            torch.maximum(out, low, out=out)
        return out

    warm = d0 is not None                  # a warm start is checked at iteration 0
    if d0 is None:
        w = torch.zeros((B, emb.cin) + emb.N, dtype=dtype, device=device)
    else:
        d0 = d0.to(device, torch.float64)
        if penalty.lower is not None:
            d0 = torch.maximum(d0, penalty.lower.to(device))
        # a w with prox(w) = d0 (and a zero dual)
        x0 = emb.embed(d0.to(dtype).reshape(B, emb.cin, H, Wd))
        w = x0 * (1.0 + ridge / rho) + torch.sign(x0) * (alpha / rho)
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
        if check_due(n_iter, max_iter, check_every, warm):
            d = emb.interior_ext(x)                       # a view: no copy
            # the resolvent's residual y - W d~ = S (y_ph - z) is a dual candidate
            # (its limit is the optimal dual point)
            duals = () if resid is None else \
                (emb.crop(resid).reshape(resid.shape[0], -1).to(torch.float64),)
            stop, keep = checkpoint(cert, n_iter, max_iter, d, callback=callback, duals=duals)
            if stop:
                break
            if keep is not None:
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
