"""Independent CPU solvers used to verify the fast ones on small problems.

* :func:`solve_cvxpy` states the problem in cvxpy and solves it with an
  interior-point method (Clarabel) at tight tolerances: the exact solution.
* :func:`solve_scipy` runs L-BFGS-B on the split ``d = u - v`` with
  ``u, v >= 0``, a smooth bound-constrained problem with the same optimum.

Neither shares code with FISTA or coordinate descent beyond the certificate.
"""

import numpy as np
import torch
from scipy.optimize import minimize

from ._duality import dual_point_value, primal_objective

MAX_DENSE_VARIABLES = 20_000


def _certificate(W, Y, D, alpha, lower):
    Wt, Yt, Dt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (W, Y, D))
    r = Yt - Dt @ Wt.T
    primal = primal_objective(r, Dt, alpha)
    low = None if lower is None else torch.from_numpy(lower)
    gap = (primal - dual_point_value(r, r @ Wt, Yt, alpha, low)).clamp(min=0)
    return primal.numpy(), gap.numpy()


def _check_size(W, name):
    if W.shape[1] > MAX_DENSE_VARIABLES:
        raise ValueError(
            f"solver={name!r} is meant to verify small problems; this layer has "
            f"{W.shape[1]} activations (limit {MAX_DENSE_VARIABLES}). Use solver='fista'."
        )


def solve_cvxpy(W, Y, alpha, *, lower=None, tol=1e-10, callback=None):
    """Exact per-sample solutions with cvxpy (Clarabel). Returns D, primal, gap, n_iter."""
    import cvxpy as cp

    _check_size(W, "cvxpy")
    M, K = W.shape
    d = cp.Variable(K)
    y = cp.Parameter(M)
    objective = 0.5 * cp.sum_squares(y - W @ d) + alpha * cp.norm1(d)
    constraints = [] if lower is None else [d >= lower]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    D = np.zeros((Y.shape[0], K))
    n_iter = np.zeros(Y.shape[0], dtype=np.int64)
    for i, row in enumerate(Y):
        y.value = row
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol,
                      tol_feas=tol, max_iter=500)
        if d.value is None:
            raise RuntimeError(f"cvxpy failed on sample {i}: {problem.status}")
        D[i] = d.value
        n_iter[i] = problem.solver_stats.num_iters or 0
        if callback is not None:
            callback(i + 1, Y.shape[0] - i - 1)
    if lower is not None:
        D = np.maximum(D, lower)    # interior-point solutions sit 1e-12 inside
    primal, gap = _certificate(W, Y, D, alpha, lower)
    return D, primal, gap, n_iter


def solve_scipy(W, Y, alpha, *, lower=None, tol=1e-12, max_iter=100_000, callback=None):
    """Per-sample L-BFGS-B on the split ``d = u - v``. Returns D, primal, gap, n_iter."""
    _check_size(W, "scipy")
    M, K = W.shape
    if lower is None:
        bounds = [(0.0, None)] * (2 * K)
    else:
        # d >= l: u >= max(l, 0) and v <= max(-l, 0)
        bounds = ([(max(low, 0.0), None) for low in lower]
                  + [(0.0, max(-low, 0.0)) for low in lower])

    def fun(x, y):
        d = x[:K] - x[K:]
        r = y - W @ d
        g = W.T @ r
        f = 0.5 * r @ r + alpha * x.sum()
        return f, np.concatenate([alpha - g, alpha + g])

    D = np.zeros((Y.shape[0], K))
    n_iter = np.zeros(Y.shape[0], dtype=np.int64)
    x0 = np.array([b[0] for b in bounds])
    for i, row in enumerate(Y):
        x, f_prev = x0, np.inf
        # L-BFGS-B may stop early on its line search; restarting from its own
        # point (fresh curvature memory) until the objective stalls fixes that
        for _ in range(20):
            res = minimize(fun, x, args=(row,), jac=True, method="L-BFGS-B",
                           bounds=bounds, options=dict(maxiter=max_iter, maxfun=2 * max_iter,
                                                       ftol=tol, gtol=tol, maxcor=30))
            x = res.x
            n_iter[i] += res.nit
            if f_prev - res.fun <= tol * max(abs(res.fun), 1.0):
                break
            f_prev = res.fun
        D[i] = x[:K] - x[K:]
        if callback is not None:
            callback(i + 1, Y.shape[0] - i - 1)
    primal, gap = _certificate(W, Y, D, alpha, lower)
    return D, primal, gap, n_iter
