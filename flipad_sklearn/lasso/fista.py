"""Batched FISTA for the (shifted, optionally bounded) lasso, in torch.

Solves ``min_d 1/2 ||y - W d||^2 + alpha ||d||_1  (s.t. d >= lower)`` for a batch
of targets ``y`` at once, on CPU or CUDA.  What makes it fast and trustworthy:

* step ``1/L`` with ``L`` the largest eigenvalue of ``WᵀW``;
* adaptive restart of the momentum per sample (O'Donoghue & Candès, 2015,
  gradient scheme), which turns FISTA's sublinear rate into the linear rate
  the lasso allows once the support is identified;
* one ``W`` and one ``Wᵀ`` product per iteration (``W v`` is a combination of
  the two last ``W d``), fused element-wise steps;
* iterations in float32 (or float64) with the duality gap checked in float64
  every ``check_every`` iterations;
* the gap uses the better of the rescaled residual and its dual extrapolation
  (Massias et al., 2018), and the best dual value seen so far, so samples stop
  as soon as they are certified; certified samples leave the batch.
"""

import math

import torch
import torch.nn.functional as F

from ._duality import dual_point_value, extrapolated_dual, gap_scale, primal_objective


def _prox(u, thresh, lower):
    out = F.softshrink(u, thresh) if thresh > 0 else u
    if lower is not None:
        out = torch.maximum(out, lower)
    return out


def fista_path(op, y, alpha, lipschitz, *, n_stages=3, stage_ratio=10.0,
               stage_budget=0.5, max_iter=1000, tol=1e-4, callback=None, **kwargs):
    """FISTA with continuation on the penalty (a warm-started path of alphas).

    Small penalties make the lasso ill-conditioned: the support is large and
    FISTA spends most of its iterations shrinking it.  Solving first with
    ``alpha * stage_ratio**k`` (k = n_stages-1 ... 1) to a loose tolerance and
    warm-starting the next stage reaches a given objective in several times
    fewer iterations on final layers of image generators (see
    ``benchmarks/bench_inversion.py``).  Stages never use more than
    ``stage_budget * max_iter`` iterations in total; the last stage, at
    ``alpha``, gets the rest and its certificate is the one returned.
    """
    d0 = kwargs.pop("d0", None)
    used = torch.zeros(y.shape[0], dtype=torch.int64, device=y.device)
    if n_stages > 1:
        per_stage = max(1, int(stage_budget * max_iter) // (n_stages - 1))
        for k in range(n_stages - 1, 0, -1):
            d0, _, _, n = fista(op, y, alpha * stage_ratio ** k, lipschitz, d0=d0,
                                tol=max(tol, 1e-2), max_iter=per_stage, **kwargs)
            used += n
    budget = max(1, max_iter - int(used.max()))
    d, primal, gap, n = fista(op, y, alpha, lipschitz, d0=d0, tol=tol,
                              max_iter=budget, callback=callback, **kwargs)
    return d, primal, gap, n + used


def fista(
    op,
    y,
    alpha,
    lipschitz,
    *,
    lower=None,
    d0=None,
    tol=1e-6,
    max_iter=10_000,
    check_every=20,
    dtype=torch.float32,
    n_extrapolation=5,
    restart=True,
    stall_checks=None,
    callback=None,
):
    """Solve a batch of lasso problems with FISTA.

    Parameters
    ----------
    op : LayerOperator
        Provides ``matvec`` and ``rmatvec`` on ``(B, n)`` tensors.
    y : torch.Tensor of shape (B, M), float64
        Targets (already shifted by ``W anchor`` and the bias).
    alpha : float
        Penalty (sum scale).
    lipschitz : float
        Largest eigenvalue of ``WᵀW`` (or an upper bound).
    lower : torch.Tensor of shape (K,) or None
        Lower bound on ``d``.
    d0 : torch.Tensor of shape (B, K) or None
        Warm start (projected on the bound).
    tol : float
        Stop a sample when ``gap <= tol * 1/2 ||y||^2`` (see ``gap_scale``).
    max_iter : int
        Iterations at most.
    check_every : int
        Iterations between two gap evaluations.
    dtype : torch.dtype
        Precision of the iterations (the gap is always float64).
    n_extrapolation : int
        Residuals used by dual extrapolation (0 switches it off).
    restart : bool
        Adaptive momentum restart.
    stall_checks : int or None
        Also stop a sample whose relative gap is below 1e-5 and has not
        improved by 10 % over this many checks: float32 iterates stall at a
        problem-dependent floor; the caller continues those in float64.
    callback : callable or None
        ``callback(n_iter, n_active)`` after each gap check (progress bars).

    Returns
    -------
    d : torch.Tensor (B, K), float64
    primal, gap : torch.Tensor (B,), float64
    n_iter : torch.Tensor (B,), int64
    """
    device = y.device
    y = y.to(torch.float64)
    B = y.shape[0]
    K = op.n_inputs
    L = float(lipschitz)
    if L <= 0:
        # W = 0: the solution is d = projection of 0 on the bound.
        L = 1.0
    step = 1.0 / L
    thresh = alpha * step

    lower64 = None if lower is None else lower.to(device, torch.float64)
    lower_c = None if lower is None else lower.to(device, dtype)

    if d0 is None:
        d64 = torch.zeros((B, K), dtype=torch.float64, device=device)
    else:
        d64 = d0.to(device, torch.float64).clone()
    if lower64 is not None:
        d64 = torch.maximum(d64, lower64)

    d_out = d64.clone()
    primal_out = torch.full((B,), math.inf, dtype=torch.float64, device=device)
    gap_out = torch.full((B,), math.inf, dtype=torch.float64, device=device)
    iter_out = torch.zeros(B, dtype=torch.int64, device=device)
    best_dual = torch.full((B,), -math.inf, dtype=torch.float64, device=device)
    scale = gap_scale(y)
    # relative gap a stall is measured against, and checks since it improved
    stall_ref = torch.full((B,), math.inf, dtype=torch.float64, device=device)
    stall_count = torch.zeros(B, dtype=torch.int64, device=device)

    idx = torch.arange(B, device=device)       # original row of each active row
    yc = y.to(dtype)
    d = d64.to(dtype)
    Wd = op.matvec(d)
    v, Wv = d.clone(), Wd.clone()
    t = torch.ones((B, 1), dtype=dtype, device=device)
    history = []                               # float64 residuals at checks
    n_iter = 0

    while True:
        # ---- certificate (float64) ------------------------------------
        if n_iter % check_every == 0 or n_iter >= max_iter:
            d64 = d.to(torch.float64)
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
            d_out[idx] = d64
            primal_out[idx] = primal
            gap_out[idx] = gap
            iter_out[idx] = n_iter
            rel = gap / scale[idx]
            done = rel <= tol
            if stall_checks:
                improved = rel < 0.9 * stall_ref[idx]
                stall_ref[idx] = torch.where(improved, rel, stall_ref[idx])
                stall_count[idx] = torch.where(improved, 0, stall_count[idx] + 1)
                done |= (rel < 1e-5) & (stall_count[idx] >= stall_checks)
            if callback is not None:
                callback(n_iter, int((~done).sum()))
            if n_iter >= max_iter or bool(done.all()):
                break
            if done.any():
                keep = ~done
                idx = idx[keep]
                d, v, Wd, Wv, t = d[keep], v[keep], Wd[keep], Wv[keep], t[keep]
                yc = yc[keep]
                history = [h[keep] for h in history]

        # ---- one FISTA step -------------------------------------------
        grad = op.rmatvec(Wv - yc)
        d_new = _prox(torch.add(v, grad, alpha=-step), thresh, lower_c)
        Wd_new = op.matvec(d_new)
        delta = d_new - d
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        if restart:
            # gradient-mapping restart: momentum points uphill -> drop it
            uphill = ((v - d_new) * delta).sum(dim=1, keepdim=True) > 0
            beta = torch.where(uphill, torch.zeros_like(beta), beta)
            t_new = torch.where(uphill, torch.ones_like(t_new), t_new)
        v = torch.addcmul(d_new, beta, delta)
        Wv = torch.addcmul(Wd_new, beta, Wd_new - Wd)
        d, Wd, t = d_new, Wd_new, t_new
        n_iter += 1

    return d_out, primal_out, gap_out, iter_out
