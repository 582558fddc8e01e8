"""Batched FISTA for the (shifted, optionally bounded) lasso, in torch.

Solves ``min_d 1/2 ||y - W d||^2 + g(d)`` for a batch of targets at once, on
CPU or CUDA.  What makes it fast:

* step ``1/L`` with ``L`` the largest eigenvalue of ``WᵀW``;
* adaptive restart of the momentum per sample (O'Donoghue & Candès, 2015,
  gradient scheme), which turns FISTA's sublinear rate into the linear rate
  the lasso allows once the support is identified;
* one ``W`` and one ``Wᵀ`` product per iteration (``W v`` is a combination of
  the two last ``W d``), fused element-wise steps;
* iterations in float32 (or float64); the certificate, the best iterate and
  the stopping live in :class:`~.certificate.Certificate` (float64), and
  stopped samples leave the batch.

``op`` may be a layout view of the problem's operator (``view``): the
iterations then run on it, and the certificate on the plain layout.
"""

import torch

from .certificate import Certificate
from .datafit import make_datafit
from .driver import check_due, checkpoint
from .penalty import L1Penalty


def fista_steps(op, y, penalty, lipschitz, cert, *, view=None, d0=None, max_iter=1000,
                check_every=20, dtype=torch.float32, restart=True, callback=None,
                weights=None):
    """Run FISTA on the active rows of ``cert``; returns the iterations run.

    ``y`` holds the active rows' targets (float64, plain layout); ``view``
    (a :class:`~flipad_sklearn.operators.channels_last.ChannelsLastOperator` or None) is
    the layout the products run on.  ``weights``: the active rows' data-term
    weights ``D`` (:mod:`.datafit`) or None; the gradient is then
    ``Wᵀ D² (W v - y)`` and ``lipschitz`` must bound ``D W``'s.
    """
    work = op if view is None else view
    to_w = (lambda t: t) if view is None else view.to_native_inputs
    L = float(lipschitz)
    if L <= 0:
        L = 1.0                      # W = 0: the solution is the prox of 0
    step = 1.0 / L
    B, K = y.shape[0], op.n_inputs
    yc = (y if view is None else view.to_native_outputs(y)).to(dtype)
    w2 = None
    if weights is not None:
        w2 = (weights * weights).to(y.device)
        w2 = (w2 if view is None else view.to_native_outputs(w2)).to(dtype)
    low = penalty.lower_as(yc)
    if low is not None and view is not None:
        low = view.to_native_inputs(low[None])[0]
    warm = d0 is not None                  # a warm start is checked at iteration 0
    if d0 is None:
        d = torch.zeros((B, K), dtype=dtype, device=y.device)
    else:
        d = to_w(d0.to(y.device, dtype)).clone()     # updated in place below
    if low is not None:
        d = torch.maximum(d, low)
    Wd = work.matvec(d)
    v, Wv = d.clone(), Wd.clone()
    # large arrays live in kept buffers: a fresh one per step page-faults, which
    # on CPU costs several times the operation itself
    spare, u = torch.empty_like(d), torch.empty_like(d)
    thresh = penalty.alpha * step
    shrink = 1.0 / (1.0 + penalty.ridge * step)      # the elastic net's prox scale
    t = torch.ones((B, 1), dtype=dtype, device=y.device)
    n_iter = 0
    while True:
        if check_due(n_iter, max_iter, check_every, warm):
            stop, keep = checkpoint(cert, n_iter, max_iter,
                                    d if view is None else view.inputs_nchw(d),
                                    callback=callback)
            if stop:
                break
            if keep is not None:
                d, v, Wd, Wv, t, yc = d[keep], v[keep], Wd[keep], Wv[keep], t[keep], yc[keep]
                if w2 is not None:
                    w2 = w2[keep]
                spare, u = torch.empty_like(d), torch.empty_like(d)
        res = Wv - yc
        if w2 is not None:
            res.mul_(w2)
        torch.add(v, work.rmatvec(res), alpha=-step, out=u)    # gradient step from v
        d_new = spare
        if thresh > 0:
            torch._C._nn.softshrink(u, thresh, out=d_new)
        else:
            d_new.copy_(u)
        if shrink != 1.0:
            d_new.mul_(shrink)
        if low is not None:
            torch.maximum(d_new, low, out=d_new)
        Wd_new = work.matvec(d_new)
        delta = torch.sub(d_new, d, out=d)                   # d's buffer is free now
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        if restart:
            # gradient-mapping restart: momentum points uphill -> drop it
            torch.sub(v, d_new, out=v)
            uphill = torch.bmm(v.unsqueeze(1), delta.unsqueeze(2))[:, :, 0] > 0
            beta = torch.where(uphill, torch.zeros_like(beta), beta)
            t_new = torch.where(uphill, torch.ones_like(t_new), t_new)
        torch.addcmul(d_new, beta, delta, out=v)
        Wv = torch.addcmul(Wd_new, beta, Wd_new - Wd)
        d, spare, Wd, t = d_new, delta, Wd_new, t_new
        n_iter += 1
    return n_iter


def fista(op, y, alpha, lipschitz, *, lower=None, d0=None, tol=1e-6, max_iter=10_000,
          check_every=20, dtype=torch.float32, n_extrapolation=5, restart=True,
          stall_checks=None, progress_tol=None, callback=None, weights=None):
    """Solve a batch of lasso problems with FISTA.

    Parameters
    ----------
    op : operator
        ``matvec`` and ``rmatvec`` on ``(B, n)`` tensors.
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
    max_iter, check_every : int
        Iterations at most; iterations between two certificate checks.
    dtype : torch.dtype
        Precision of the iterations (the certificate is always float64).
    n_extrapolation : int
        Residuals used by dual extrapolation (0 switches it off).
    restart : bool
        Adaptive momentum restart.
    stall_checks, progress_tol :
        Other stopping rules, see :class:`~.certificate.Certificate`.
    callback : callable or None
        ``callback(n_iter, n_active)`` after each check (progress bars).
    weights : torch.Tensor of shape (B, M) or None
        Data-term weights ``D``: solve ``1/2 ||D (y - W d)||^2 + g(d)``
        (:class:`~.datafit.WeightedQuadratic`; the step uses
        ``lipschitz * max D^2``).

    Returns
    -------
    d : torch.Tensor (B, K), float64
        Each sample's best iterate.
    primal, gap : torch.Tensor (B,), float64
    n_iter : torch.Tensor (B,), int64
    """
    penalty = L1Penalty(alpha, lower)
    y = y.to(torch.float64)
    datafit = make_datafit(weights)
    cert = Certificate(op, y, penalty, datafit=datafit, tol=tol, progress_tol=progress_tol,
                       n_extrapolation=n_extrapolation, stall_checks=stall_checks, d0=d0)
    fista_steps(op, y, penalty, lipschitz * datafit.lipschitz_factor(), cert, d0=d0,
                max_iter=max_iter, check_every=check_every, dtype=dtype, restart=restart,
                callback=callback, weights=datafit.weights)
    return cert.results()[:4]


def fista_path(op, y, alpha, lipschitz, *, n_stages=3, stage_ratio=10.0,
               stage_budget=0.5, max_iter=1000, tol=1e-4, callback=None, **kwargs):
    """FISTA with continuation on the penalty (a warm-started path of alphas).

    Small penalties make the lasso ill-conditioned: the support is large and
    FISTA spends most of its iterations shrinking it.  Solving first with
    ``alpha * stage_ratio**k`` (k = n_stages-1 ... 1) to a loose tolerance and
    warm-starting the next stage reaches a given objective in fewer
    iterations.  Stages use at most ``stage_budget * max_iter`` iterations in
    all; the last stage, at ``alpha``, gets the rest of that cap (whatever the
    stages used: a row's result must not depend on the rows of its batch) and
    its certificate is the one returned.
    """
    d0 = kwargs.pop("d0", None)
    used = torch.zeros(y.shape[0], dtype=torch.int64, device=y.device)
    cap = 0
    if n_stages > 1:
        stage_kw = {k: v for k, v in kwargs.items() if k != "progress_tol"}
        per_stage = max(1, int(stage_budget * max_iter) // (n_stages - 1))
        for k in range(n_stages - 1, 0, -1):
            d0, _, _, n = fista(op, y, alpha * stage_ratio ** k, lipschitz, d0=d0,
                                tol=max(tol, 1e-2), max_iter=per_stage, **stage_kw)
            used += n
        cap = per_stage * (n_stages - 1)
    budget = max(1, max_iter - cap)
    d, primal, gap, n = fista(op, y, alpha, lipschitz, d0=d0, tol=tol, max_iter=budget,
                              callback=callback, **kwargs)
    return d, primal, gap, n + used
