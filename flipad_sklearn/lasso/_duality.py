"""Primal objective, dual points and the duality gap of the (shifted) lasso.

Every solver in this package solves, per sample, the problem in ``d = z - anchor``::

    P(d) = 1/2 ||y - W d||^2 + alpha ||d||_1      subject to  d >= lower  (optional)

where ``lower = -anchor`` when ``positive=True`` (so that ``z >= 0``).  With
``g(d) = alpha |d| + indicator(d >= lower)`` the Fenchel dual is::

    D(theta) = 1/2 ||y||^2 - 1/2 ||y - theta||^2 - sum_j g_j*(W_j^T theta)

with ``g_j*(s) = +inf`` outside the dual feasible set (``|s| <= alpha`` without a
bound, ``s <= alpha`` with one) and, inside it, ``max(s l - alpha |l|,
s l+ - alpha l+)`` where ``l+ = max(l, 0)`` (zero for ``l = 0``).  Any dual
feasible ``theta`` gives ``D(theta) <= P* <= P(d)``, so ``P(d) - D(theta)``
bounds the suboptimality of ``d`` from above: it is a certificate.

The functions work on batches (one row per sample) of float64 torch tensors.
"""

import torch

_TINY = 1e-300


def gap_scale(y):
    """``1/2 ||y||^2`` per row: the objective at ``d = 0`` (the anchor).

    Tolerances are relative to it, as in scikit-learn's Lasso and Celer: a
    relative gap ``tol`` guarantees ``P(d) - P* <= tol * P(0)``.  Unlike the
    optimal objective, ``P(0)`` does not shrink with ``alpha``, so tiny
    penalties do not demand ever tighter absolute certificates.
    """
    return (0.5 * (y * y).sum(dim=1)).clamp(min=_TINY)


def primal_objective(residual, d, alpha):
    """``1/2 ||r||^2 + alpha ||d||_1`` per row."""
    return 0.5 * (residual * residual).sum(dim=1) + alpha * d.abs().sum(dim=1)


def conjugate_penalty(s, alpha, lower):
    """``sum_j g_j*(s_j)`` per row, for dual feasible ``s`` (0 without a bound)."""
    if lower is None:
        return torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    lp = lower.clamp(min=0.0)
    a = s * lower - alpha * lower.abs()
    b = s * lp - alpha * lp
    return torch.maximum(a, b).sum(dim=1)


def dual_point_value(rho, WT_rho, y, alpha, lower):
    """Best dual value along the ray ``theta = c * rho`` that stays feasible.

    ``c`` maximises the quadratic part ``c <y, rho> - c^2 ||rho||^2 / 2`` and is
    clipped into the feasible interval (``|c| ||W^T rho||_inf <= alpha``, or
    ``0 <= c`` and ``c max(W^T rho) <= alpha`` with a lower bound).  With
    ``rho`` the residual at the optimum, ``c = 1`` and the gap closes.

    Returns
    -------
    value : tensor (B,)
        ``D(c rho)``, a lower bound on the optimal primal value.
    """
    yr = (y * rho).sum(dim=1)
    rr = (rho * rho).sum(dim=1)
    c = yr / rr.clamp(min=_TINY)
    if lower is None:
        smax = WT_rho.abs().amax(dim=1)
        cmax = alpha / smax.clamp(min=_TINY)
        c = torch.clamp(c, -cmax, cmax)
    else:
        smax = WT_rho.amax(dim=1).clamp(min=0.0)
        cmax = alpha / smax.clamp(min=_TINY)
        c = torch.clamp(c.clamp(min=0.0), max=cmax)
    value = c * yr - 0.5 * c * c * rr
    if lower is not None:
        value = value - conjugate_penalty(c[:, None] * WT_rho, alpha, lower)
    return value


def extrapolated_residual(history):
    """Dual extrapolation (Massias, Gramfort & Salmon, 2018) of a residual sequence.

    ``history`` is a tensor ``(B, K + 1, M)`` of the last ``K + 1`` residuals.
    Fits the sequence as a vector auto-regressive process and returns its
    estimated limit ``sum_k c_k r_{k+1}`` with ``U^T U z = 1``, ``c = z / sum z``
    (``U`` the successive differences).  Rows whose linear system is singular
    get NaN; callers ignore those.
    """
    diffs = history[:, 1:] - history[:, :-1]          # (B, K, M)
    gram = diffs @ diffs.transpose(1, 2)              # (B, K, K)
    ones = torch.ones(gram.shape[:2] + (1,), dtype=gram.dtype, device=gram.device)
    z, info = torch.linalg.solve_ex(gram, ones)
    z = z[..., 0]
    denom = z.sum(dim=1, keepdim=True)
    bad = (info != 0) | ~torch.isfinite(denom[:, 0]) | (denom[:, 0].abs() < 1e-30)
    coef = z / torch.where(bad[:, None], torch.ones_like(denom), denom)
    out = (coef[:, :, None] * history[:, 1:]).sum(dim=1)
    out[bad] = float("nan")
    return out


def extrapolated_dual(op, history, r, y, alpha, lower, dual, n_extrapolation):
    """Append ``r`` to ``history`` and raise ``dual`` where extrapolation helps.

    Keeps the last ``n_extrapolation + 1`` residuals in the list ``history``;
    once it is full, the dual value at the extrapolated residual replaces
    ``dual`` (in place) on the rows where it is larger.  Any feasible dual
    point gives a valid bound, so this never weakens the certificate.
    """
    history.append(r)
    if len(history) > n_extrapolation + 1:
        history.pop(0)
    if len(history) == n_extrapolation + 1:
        r_acc = extrapolated_residual(torch.stack(history, dim=1))
        ok = torch.isfinite(r_acc).all(dim=1)
        if ok.any():
            r_ok = r_acc[ok]
            dual_acc = dual_point_value(r_ok, op.rmatvec(r_ok), y[ok], alpha, lower)
            dual[ok] = torch.maximum(dual[ok], dual_acc)
    return dual


def duality_gap(op, y, d, alpha, lower=None):
    """Primal value, best simple dual value and gap of ``d`` (all float64, per row)."""
    residual = y - op.matvec(d)
    primal = primal_objective(residual, d, alpha)
    dual = dual_point_value(residual, op.rmatvec(residual), y, alpha, lower)
    return primal, dual, primal - dual
