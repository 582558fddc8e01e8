"""Solvers for the batched (shifted, optionally bounded) lasso.

They know nothing about generators: each solves, per row ``y`` of a batch,
``min_d 1/2 ||y - W d||^2 + alpha ||d||_1`` (with ``d >= lower`` if given) for a
linear operator ``W``, and returns the solution with its duality-gap certificate.
"""

import numpy as np
import torch

from ._duality import dual_point_value, duality_gap, primal_objective
from .cd import coordinate_descent
from .fista import fista, fista_path
from .reference import solve_cvxpy, solve_scipy

SOLVERS = ("fista", "cd", "cvxpy", "scipy")

__all__ = [
    "SOLVERS", "coordinate_descent", "dual_point_value", "duality_gap", "fista",
    "fista_path", "primal_objective", "solve_batch", "solve_cvxpy", "solve_scipy",
]


def solve_batch(op, Y, alpha, *, solver="fista", lower=None, tol=1e-4, max_iter=1000,
                lipschitz=None, device="cpu", dtype=torch.float32, continuation=True,
                callback=None):
    """Solve the lasso for a batch ``Y`` (numpy ``(B, M)``) with the named solver.

    Returns numpy float64 arrays ``D (B, K)``, ``primal (B,)``, ``gap (B,)`` and
    int ``n_iter (B,)``.  ``gap`` is an upper bound on ``primal - optimum``.
    """
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if solver == "fista":
        device = torch.device(device)
        y = torch.from_numpy(Y).to(device)
        low = None if lower is None else torch.from_numpy(np.asarray(lower, np.float64))
        L = op.lipschitz() if lipschitz is None else lipschitz
        kwargs = dict(lower=low, tol=tol, max_iter=max_iter, dtype=dtype, callback=callback)
        with torch.no_grad():
            if continuation:
                out = fista_path(op, y, alpha, L, **kwargs)
            else:
                out = fista(op, y, alpha, L, **kwargs)
        return tuple(t.cpu().numpy() for t in out)
    W = op.to_dense()
    if solver == "cd":
        return coordinate_descent(W, Y, alpha, lower=lower, tol=tol, max_iter=max_iter,
                                  callback=callback)
    if solver == "cvxpy":
        return solve_cvxpy(W, Y, alpha, lower=lower, callback=callback)
    if solver == "scipy":
        return solve_scipy(W, Y, alpha, lower=lower, callback=callback)
    raise ValueError(f"Unknown solver {solver!r}; use one of {SOLVERS}.")
