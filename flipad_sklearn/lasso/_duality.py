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

from .penalty import L1Penalty

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


def ray_dual_value(theta, WT_theta, y, penalty):
    """Best dual value ``D(c theta)`` along the feasible part of the ray of ``theta``.

    ``c`` maximises the quadratic part ``c <y, theta> - c^2 ||theta||^2 / 2``
    and is clipped into the feasible interval of ``penalty``
    (:meth:`~.penalty.L1Penalty.feasible_scale`).  ``WT_theta`` is ``(B, ...)``
    in any float dtype (float32 from the fast checks); the value is float64.  With
    ``theta`` the residual at the optimum, ``c = 1`` and the gap closes.
    """
    yr = (y * theta).sum(dim=1)
    rr = (theta * theta).sum(dim=1)
    if penalty.ridge > 0:
        return _ridge_ray_value(yr, rr, WT_theta, penalty)
    c = yr / rr.clamp(min=_TINY)
    cmax = penalty.feasible_scale(WT_theta)
    if penalty.lower is None:
        c = torch.clamp(c, -cmax, cmax)
    else:
        c = torch.clamp(c.clamp(min=0.0), max=cmax)
    value = c * yr - 0.5 * c * c * rr
    if penalty.lower is not None:
        scale = c.to(WT_theta.dtype).reshape((-1,) + (1,) * (WT_theta.ndim - 1))
        value = value - penalty.conjugate(scale * WT_theta)
    return value


#: Newton steps on the dual ray of the elastic net (its dual value is a
#: concave piecewise quadratic in the scale c; steps from c = 1, the
#: residual's own scale, which is optimal at the solution)
RAY_NEWTON_STEPS = 1


def _ridge_ray_value(yr, rr, s, penalty):
    """``max_c c <y, theta> - c^2 ||theta||^2 / 2 - g*(c s)`` (elastic net: every c is feasible).

    Newton steps on the concave, piecewise quadratic function of ``c`` from
    ``c = 1``; the best value seen is returned (each is a valid dual value).
    """
    c = torch.ones_like(yr)
    best = torch.full_like(yr, -torch.inf)
    for k in range(RAY_NEWTON_STEPS + 1):
        conj, dconj, curv = penalty.ray_terms(s, c, derivatives=k < RAY_NEWTON_STEPS)
        value = c * yr - 0.5 * c * c * rr - conj
        best = torch.maximum(best, torch.nan_to_num(value, nan=-torch.inf))
        if k == RAY_NEWTON_STEPS:
            break
        c = c + (yr - c * rr - dconj) / (rr + curv).clamp(min=_TINY)
    return best


def dual_point_value(rho, WT_rho, y, alpha, lower):
    """:func:`ray_dual_value` for ``alpha ||d||_1`` (with ``d >= lower`` if given)."""
    return ray_dual_value(rho, WT_rho, y, L1Penalty(alpha, lower))


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


def duality_gap(op, y, d, alpha, lower=None):
    """Primal value, best simple dual value and gap of ``d`` (all float64, per row)."""
    residual = y - op.matvec(d)
    primal = primal_objective(residual, d, alpha)
    dual = dual_point_value(residual, op.rmatvec(residual), y, alpha, lower)
    return primal, dual, primal - dual
