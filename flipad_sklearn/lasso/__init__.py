"""Solvers for the batched (shifted, optionally bounded) lasso.

They know nothing about generators: each solves, per row ``y`` of a batch,
``min_d 1/2 ||y - W d||^2 + alpha ||d||_1`` (with ``d >= lower`` if given) for a
linear operator ``W``, and returns the solution with its duality-gap certificate.
"""

import numpy as np
import torch

from ..linear_ops import ChannelsLastOperator

from ._duality import dual_point_value, duality_gap, gap_scale, primal_objective
from .admm import DEFAULT_RHO_SCALE, DEFAULT_RHO_STAGES, admm, check_admm_operator
from .cd import coordinate_descent
from .fista import fista, fista_path
from .reference import solve_cvxpy, solve_scipy

SOLVERS = ("fista", "admm", "cd", "cvxpy", "scipy")
FLOAT32_TOL = 1e-7

ADMM_ITER = 400

__all__ = [
    "ADMM_ITER", "DEFAULT_RHO_SCALE", "DEFAULT_RHO_STAGES", "SOLVERS", "admm", "coordinate_descent",
    "dual_point_value", "duality_gap", "fista", "fista_path", "gap_scale", "primal_objective", "solve_batch", "solve_cvxpy", "solve_scipy",
]


def solve_batch(op, Y, alpha, *, solver="fista", lower=None, tol=1e-4, max_iter=1000,
                lipschitz=None, device="cpu", dtype=torch.float32, continuation=True,
                callback=None, rho=None, admm_iter=ADMM_ITER):
    """Solve the lasso for a batch ``Y`` (numpy ``(B, M)``) with the named solver.

    ``solver="admm"`` (ConvTranspose2d layers with groups=1) runs at most
    ``admm_iter`` iterations of ADMM with exact FFT solves (penalty ``rho``: a
    float, ``(rho, n_iter)`` stages, or None for ``DEFAULT_RHO_STAGES`` times
    ``lipschitz``), then FISTA warm-started from its iterate for the rest of
    ``max_iter`` (``continuation`` is ignored).  On CPU, FISTA on a
    convolutional layer runs on its :class:`ChannelsLastOperator` view.

    Returns numpy float64 arrays ``D (B, K)``, ``primal (B,)``, ``gap (B,)`` and
    int ``n_iter (B,)``.  ``gap`` is an upper bound on ``primal - optimum``.
    """
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if solver in ("fista", "admm"):
        if solver == "admm":
            check_admm_operator(op)
        device = torch.device(device)
        y = torch.from_numpy(Y).to(device)
        low = None if lower is None else torch.from_numpy(np.asarray(lower, np.float64))
        L = op.lipschitz() if lipschitz is None else lipschitz
        # FISTA runs on the layout the device convolves fastest
        nat = _native_view(op, device)
        work = op if nat is None else nat
        y_w = y if nat is None else nat.to_native_outputs(y)
        low_w = low if nat is None or low is None else nat.to_native_inputs(low[None])[0]
        # float32 iterations stall near a relative gap of ~1e-5; below that
        # the unfinished samples go on in float64 from where they are
        tol32 = max(tol, FLOAT32_TOL) if dtype == torch.float32 else tol
        kwargs = dict(lower=low_w, max_iter=max_iter, dtype=dtype, callback=callback)
        if dtype == torch.float32:
            kwargs["stall_checks"] = 10
        with torch.no_grad():
            if solver == "admm":
                n_admm = max(1, min(int(admm_iter), max_iter))
                d, primal, gap, n_iter = admm(op, y, alpha, L, lower=low, rho=rho, tol=tol32,
                                              max_iter=n_admm, dtype=dtype,
                                              callback=callback)
                if nat is not None:
                    d = nat.to_native_inputs(d)
                _continue(work, y_w, alpha, L, tol32, max_iter, kwargs,
                          (d, primal, gap, n_iter))
            elif continuation:
                d, primal, gap, n_iter = fista_path(work, y_w, alpha, L, tol=tol32, **kwargs)
            else:
                d, primal, gap, n_iter = fista(work, y_w, alpha, L, tol=tol32, **kwargs)
            if tol32 > tol:
                kwargs.update(dtype=torch.float64, stall_checks=None)
                _continue(work, y_w, alpha, L, tol, max_iter, kwargs,
                          (d, primal, gap, n_iter))
            if nat is not None:
                d = nat.from_native_inputs(d)
        return d.cpu().numpy(), primal.cpu().numpy(), gap.cpu().numpy(), n_iter.cpu().numpy()
    W = op.to_dense()
    if solver == "cd":
        return coordinate_descent(W, Y, alpha, lower=lower, tol=tol, max_iter=max_iter,
                                  callback=callback)
    if solver == "cvxpy":
        return solve_cvxpy(W, Y, alpha, lower=lower, callback=callback)
    if solver == "scipy":
        return solve_scipy(W, Y, alpha, lower=lower, callback=callback)
    raise ValueError(f"Unknown solver {solver!r}; use one of {SOLVERS}.")


def _native_view(op, device):
    """A :class:`ChannelsLastOperator` for convolutions on CPU, else None.

    oneDNN's CPU convolutions are faster channels-last (up to 1.8x per FISTA
    iteration measured, never slower); on CUDA
    the plain layout is kept (not measured here).
    """
    if op.kind != "linear" and device.type == "cpu":
        return ChannelsLastOperator(op)
    return None


def _continue(op, y, alpha, L, tol, max_iter, kwargs, out):
    """Go on with FISTA (warm-started) on the rows of ``out`` not yet certified.

    ``out = (d, primal, gap, n_iter)`` is updated in place; the rows get the
    iterations left of ``max_iter``.
    """
    d, primal, gap, n_iter = out
    todo = (gap > tol * gap_scale(y)) & (n_iter < max_iter)
    if not bool(todo.any()):
        return
    rows = torch.nonzero(todo)[:, 0]
    left = max_iter - int(n_iter[rows].max())
    kw = dict(kwargs, max_iter=max(left, 1))
    d2, p2, g2, n2 = fista(op, y[rows], alpha, L, d0=d[rows], tol=tol, **kw)
    d[rows], primal[rows], gap[rows], n_iter[rows] = d2, p2, g2, n2 + n_iter[rows]
