"""ADMM with two splits for every convolutional layer (Almeida & Figueiredo).

With the layer written as ``W = S T E`` (:mod:`.embedding`), the lasso is

    min_{x, u, v}  1/2 ||S u - y||^2 + g(v)   s.t.  u = T x,  v = x,

``x`` free on the periodic grid and ``g`` the penalty on the activation grid
plus "zero on the padding".  Each ADMM step is exact and cheap:

* ``x``-update ``(rho_u TᴴT + rho_v I) x = rho_u Tᴴ(u - a) + rho_v (v - b)``:
  by Woodbury ``x = (v - b) + Tᴴ(rho_u (u - a) - q) / rho_v`` with
  ``q = G T r`` and ``G_k = (c I + F_k F_kᴴ)^-1`` (``m x m`` per frequency,
  ``c = rho_v / rho_u``); moreover ``T x = q / rho_u``, so a step needs one
  ``T`` and one ``Tᴴ`` convolution, like a FISTA step, plus FFTs of the ``m``
  output channels only;
* ``u``-update: element-wise (observed outputs blend with ``y``);
* ``v``-update: the penalty's prox (soft-threshold, bound, zero padding).

Nothing depends on the size of the unobserved boundary, so this works for
any image size (the exact-resolvent ADMM of :mod:`.admm` needs a dense
boundary matrix).  The multiplier of the ``u = T x`` split converges to the
optimal dual point (``y - S u``), which the certificate uses beside the
residual.

Reference: M. Almeida and M. Figueiredo, "Deconvolving images with unknown
boundaries using the alternating direction method of multipliers", IEEE
Trans. Image Processing 22(8), 2013.
"""

import torch

from ..operators.embedding import periodic_embedding
from .admm import CHECK_EVERY
from .driver import check_due, checkpoint

#: Default penalties, in units of the layer's Lipschitz constant L:
#: ``rho_u = DEFAULT_RHO_U`` and ``rho_v = DEFAULT_GAMMA * L * rho_u``.
DEFAULT_RHO_U = 0.1
DEFAULT_GAMMA = 1e-2
DEFAULT_RELAX = 1.6
#: Default continuation ``(rho_u, gamma, n_iter)`` (the last stage to the end).
DEFAULT_STAGES = ((DEFAULT_RHO_U, 3e-3, 100), (DEFAULT_RHO_U, 3e-2, None))
#: Default with a ridge (an elastic net): no slow tail to fight, one stage.
#: To ``feature_tol`` 5e-4: 40 iterations on SD's ``conv_out`` at 128x128
#: (the stages above: 50) and on the demo's DCGAN layer (120; 75 against 110
#: with ``datafit="output"``).
RIDGE_STAGES = ((DEFAULT_RHO_U, 3e-2, None),)


def _spectral_inverse(emb, c, device, dtype):
    """``G_k = (c I + F_k F_kᴴ)^-1`` and ``F_k F_kᴴ`` in the working precision."""
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    key = ("split_admm", float(c), str(device), cdt)
    hit = emb._solves.get(key)
    if hit is None:
        gram = emb.gram()
        eye = torch.eye(emb.m, dtype=gram.dtype)
        G = torch.linalg.inv(c * eye + gram)
        hit = (G.to(device, cdt), gram.to(device, cdt))
        emb._solves[key] = hit
    return hit


def _step_matrix(emb, rho_u, rho_v, device, dtype):
    """``[rho_v G_k, rho_u G_k F_k F_kᴴ]`` as ``(m, 2m, f)``: the FFT part of one step.

    ``q_k = M_k [X1_k; X2_k]`` with ``X1 = T(v - b)`` and ``X2 = u - a`` in the
    frequency domain; laid out so that it applies to the ``(B, m, f)``
    spectra as they come from ``rfft2`` (a permuted copy for a batched
    matrix product costs more than the product itself).
    """
    G, gram = _spectral_inverse(emb, rho_v / rho_u, device, dtype)
    key = ("split_admm_step", float(rho_u), float(rho_v), str(device), G.dtype)
    hit = emb._solves.get(key)
    if hit is None:
        M = torch.cat([rho_v * G, rho_u * (G @ gram)], dim=2)      # (f, m, 2m)
        hit = M.permute(1, 2, 0).contiguous()
        emb._solves[key] = hit
    return hit


def _stages(rho_u, gamma, stages, ridge=0.0):
    if stages is not None:
        out = [(float(r), float(g), None if n is None else int(n)) for r, g, n in stages]
        if not out:
            raise ValueError("split ADMM stages must not be empty.")
        out[-1] = out[-1][:2] + (None,)
        return out
    if rho_u is None and gamma is None:
        return list(RIDGE_STAGES if ridge > 0 else DEFAULT_STAGES)
    return [(DEFAULT_RHO_U if rho_u is None else float(rho_u),
             DEFAULT_GAMMA if gamma is None else float(gamma), None)]


def split_admm(op, y, penalty, lipschitz, cert, *, d0=None, rho_u=None, gamma=None,
               stages=None, relax=DEFAULT_RELAX, max_iter=200, check_every=CHECK_EVERY,
               dtype=torch.float32, callback=None, weights=None):
    """Run split ADMM on the active rows of ``cert`` (a :class:`Certificate`).

    Parameters
    ----------
    op : LayerOperator
        A Conv2d or ConvTranspose2d operator (plain layout).
    y : torch.Tensor (B, M), float64
    penalty : L1Penalty
    lipschitz : float
    cert : Certificate
        Tracks the certificate and stopping; its results are the output.
    d0 : torch.Tensor (B, K) or None
        Warm start (zero multipliers).
    rho_u, gamma : float or None
        Penalty of the ``u = T x`` split, and ``rho_v / (rho_u L)`` (one stage).
    stages : sequence of (rho_u, gamma, n_iter) or None
        A continuation: each stage runs ``n_iter`` iterations (the last one
        to the end) and keeps the iterate and the unscaled multipliers.
        Default (no ``rho_u``/``gamma`` either): ``DEFAULT_STAGES``.
    relax : float
        Over-relaxation in ``(0, 2)``.
    weights : torch.Tensor (B, M) or None
        The active rows' data-term weights ``D`` (:mod:`.datafit`): the
        ``u``-update minimises ``1/2 ||D (S u - y)||^2`` instead, still
        element-wise.

    Returns
    -------
    n_iter : int
        Iterations run.
    """
    if not 0.0 < relax < 2.0:
        raise ValueError(f"relax must be in (0, 2); got {relax}.")
    emb = periodic_embedding(op)
    device = y.device
    B = y.shape[0]
    L = float(lipschitz) if lipschitz > 0 else 1.0
    plan = _stages(rho_u, gamma, stages, penalty.ridge)
    wf, wa = emb.weights(device, dtype)
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    wf, wa = wf.contiguous(memory_format=fmt), wa.contiguous(memory_format=fmt)
    N, m, f = emb.N, emb.m, emb.N[0] * emb.Nw2

    low = penalty.lower_as(y.to(dtype))
    if low is not None:
        low = emb.extend(emb.embed(low.reshape((1,) + op.input_shape)))

    def setup(stage):
        rho_u, gamma, n = plan[stage]
        rho_v = gamma * L * rho_u
        return rho_u, rho_v, _step_matrix(emb, rho_u, rho_v, device, dtype), n

    def prox(w, thresh, out, scale=1.0):
        # into a kept buffer: a fresh large tensor per step page-faults, which
        # costs several times the operation itself on CPU; ``scale``: the
        # elastic net's ridge, rho_v / (rho_v + ridge)
        if thresh > 0:
            torch._C._nn.softshrink(w, thresh, out=out)
        else:
            out.copy_(w)
        if scale != 1.0:
            out.mul_(scale)
        if low is not None:
            torch.maximum(out, low, out=out)
        return emb.zero_padding_(out)

    stage = 0
    rho_u, rho_v, M, stage_end = setup(0)

    warm = d0 is not None                  # a warm start is checked at iteration 0
    if d0 is None:
        v = torch.zeros((B, emb.cin) + N, dtype=dtype, device=device)
    else:
        v = emb.embed(d0.to(device, dtype).reshape((B,) + op.input_shape))
    w = emb.extend(v).contiguous(memory_format=fmt)
    v = prox(w, 0.0, torch.empty_like(w))
    w.copy_(v)
    # Douglas-Rachford form: the one large state is w = x_r + b (x_r the relaxed
    # x-update, b the scaled multiplier of v = x), with v = prox(w) and b = w - v;
    # each step then makes five passes over it less than with v and b apart
    refl = torch.empty_like(w)
    y_img = y.to(dtype).reshape((B,) + op.output_shape)
    y_obs = emb.observe(y_img)
    if weights is None:
        mask = emb.observed_mask(device).to(dtype)      # D^2 on the grid: 1 where observed
    else:
        # the u-update's data weight D^2 on the grid (0 where unobserved), and
        # D^2 y in place of y
        mask = emb.observe((weights * weights).to(device, dtype).reshape(y_img.shape))
    wy = y_obs if weights is None else mask * y_obs
    u = emb.T_ext(v, wf)
    a = torch.zeros_like(u)

    def spec(t):
        return torch.fft.rfft2(t).reshape(t.shape[0], m, f)

    n_iter = 0
    while True:
        if check_due(n_iter, max_iter, check_every, warm):
            d = emb.interior_ext(v)                       # a view: no copy
            # the residual y - S u (the certificate applies the weights)
            theta = emb.crop(y_obs - u).reshape(v.shape[0], -1).to(torch.float64)
            # W d from the padded state: no copy of d out of the grid
            Wd = emb.crop(emb.T_ext(v, wf)).reshape(v.shape[0], -1).to(torch.float64)
            stop, keep = checkpoint(cert, n_iter, max_iter, d, callback=callback,
                                    duals=(theta,), Wd=Wd)
            if stop:
                break
            if keep is not None:
                v, w, u, a, y_obs = v[keep], w[keep], u[keep], a[keep], y_obs[keep]
                if weights is not None:
                    mask, wy = mask[keep], wy[keep]
                else:
                    wy = y_obs
                refl = torch.empty_like(w)
        if stage_end is not None and n_iter >= stage_end:
            # next stage: keep v and the unscaled multipliers rho * (a, b)
            old_u, old_v = rho_u, rho_v
            stage += 1
            rho_u, rho_v, M, n_stage = setup(stage)
            a = a * (old_u / rho_u)
            torch.lerp(v, w, old_v / rho_v, out=w)       # b -> b * old_v / rho_v
            stage_end = None if n_stage is None else stage_end + n_stage
        n = v.shape[0]
        ua = u - a
        # q = G (rho_v T(v - b) + rho_u F Fᴴ (u - a)) per frequency; v - b = 2 v - w
        X = torch.cat([spec(emb.T_ext(torch.lerp(w, v, 2.0, out=refl), wf)), spec(ua)], 1)
        qh = (M.unsqueeze(0) * X.unsqueeze(1)).sum(2)
        q = torch.fft.irfft2(qh.reshape((n, m, N[0], emb.Nw2)), s=N)
        # x = (v - b) + Tᴴ(rho_u ua - q) / rho_v and T x = q / rho_u; with the
        # relaxed x_r = v + relax (x - v), the next w = x_r + b is
        # lerp(w, v, relax) + relax Tᴴ(rho_u ua - q) / rho_v
        th = emb.TH_ext((ua * rho_u - q) * (relax / rho_v), wa)
        w = w.lerp_(v, relax).add_(th)
        Tx = torch.lerp(u, q / rho_u, relax)
        u = (wy + rho_u * (Tx + a)) / (mask + rho_u)
        a = a + Tx - u
        v = prox(w, penalty.alpha / rho_v, out=v, scale=rho_v / (rho_v + penalty.ridge))
        n_iter += 1
    return n_iter
