"""The one door to the solvers: ``solve(problem, solver, stop) -> LassoResult``.

* :class:`BatchLasso`: a batch of lasso problems as plain data (an operator,
  numpy targets, the penalty's parts, optional data-term weights).
  :meth:`~flipad_sklearn.FinalLayerInverter.lasso_problem` returns the one of a
  batch of images.
* :class:`StopRule`: when a row is done (frozen: a strategy that needs other
  criteria for a phase makes a new rule, it never edits the caller's).
* ``solver``: a registered name (:func:`~.solvers.solver_names`), ``"auto"``
  (:func:`~.solvers.choose_solver`, one rule for every caller) or a solver
  object (anything with ``name``, ``supports(op)`` and ``run`` or ``solve``).
* :class:`LassoResult`: the solution with its certificate, by name.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .certificate import (
    FEATURE, GAP, MAX_ITER, STOP_REASONS, Certificate, feature_error, feature_floor,
)
from .datafit import make_datafit
from .penalty import ElasticNetPenalty, L1Penalty
from .solvers import (
    ADMM_ITER, N_EXTRAPOLATION, LassoProblem, choose_solver, fast_products, make_solver,
)

#: Relative gap the dense solvers (cd, cvxpy, scipy) run to for a feature
#: tolerance: they stop on the gap alone, and converge linearly on the
#: strongly convex elastic net.
DENSE_FEATURE_TOL = 1e-12


@dataclass(frozen=True)
class StopRule:
    """When a row of a batch is done.

    Parameters
    ----------
    feature_tol : float or None
        Certified relative distance to the unique solution (needs ``ridge > 0``).
    tol : float or None
        Relative duality gap, ``gap <= tol * 1/2 ||y||^2``.  With
        ``feature_tol`` both must hold.
    progress_tol : float or None
        Also stop on a stalled objective (certifies nothing; opt-in).
    max_iter : int
        Iterations (epochs for coordinate descent) at most.
    """

    feature_tol: float = None
    tol: float = None
    progress_tol: float = None
    max_iter: int = 1000

    def __post_init__(self):
        if self.tol is None and self.feature_tol is None:
            raise ValueError("set tol, feature_tol or both.")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}.")


@dataclass(frozen=True)
class BatchLasso:
    """``min_d 1/2 ||D (y - W d)||^2 + alpha ||d||_1 + ridge/2 ||d||^2`` per row, ``d >= lower``.

    Parameters
    ----------
    operator : Operator
        ``W`` (:mod:`flipad_sklearn.operators`).
    targets : ndarray of shape (B, M)
        ``y`` per row (for an inversion: ``sigma^-1(x) - b - W anchor``).
    alpha, ridge : float
    lower : ndarray of shape (K,) or None
        Lower bound on ``d`` (``-anchor`` for ``positive=True``).
    anchor : ndarray of shape (K,) or None
        The shift of the features ``z = d + anchor``: the feature certificate
        is relative to ``||z||``.
    weights : ndarray of shape (B, M) or None
        The data term's ``D`` per row.
    max_weight : float or None
        A bound on every weight the caller will solve with (steps that do not
        depend on the batch).
    lipschitz : float or None
        Of ``WᵀW`` (computed when None).
    """

    operator: object
    targets: np.ndarray
    alpha: float
    ridge: float = 0.0
    lower: np.ndarray = None
    anchor: np.ndarray = None
    weights: np.ndarray = None
    max_weight: float = None
    lipschitz: float = None

    def __post_init__(self):
        op = self.operator
        if not all(hasattr(op, a) for a in ("matvec", "rmatvec", "n_inputs", "n_outputs")):
            raise TypeError(f"operator must be an Operator (matvec, rmatvec, n_inputs, "
                            f"n_outputs; flipad_sklearn.operators), got {type(op).__name__}.")
        Y = np.ascontiguousarray(self.targets, dtype=np.float64)
        if Y.ndim != 2 or Y.shape[1] != op.n_outputs:
            raise ValueError(f"targets must have shape (n_rows, {op.n_outputs}) for this "
                             f"operator, got {Y.shape}.")
        if not np.isfinite(Y).all():
            raise ValueError("targets contain NaN or infinity.")
        if not (np.isfinite(self.alpha) and self.alpha >= 0 and np.isfinite(self.ridge)
                and self.ridge >= 0):
            raise ValueError(f"alpha and ridge must be finite and >= 0, got alpha="
                             f"{self.alpha!r}, ridge={self.ridge!r}.")
        object.__setattr__(self, "targets", Y)
        if self.weights is not None:
            w = np.ascontiguousarray(self.weights, dtype=np.float64)
            if w.shape != Y.shape:
                raise ValueError(f"weights have shape {w.shape}, but the targets have "
                                 f"{Y.shape}.")
            object.__setattr__(self, "weights", w)

    @property
    def shifted_bound(self):
        """A bound that is not at zero for every coordinate's anchor (``d >= -anchor != 0``)."""
        return self.lower is not None and bool(np.any(np.asarray(self.lower) != 0))

    def rows(self, sl):
        """The sub-batch of rows ``sl`` (a slice)."""
        return BatchLasso(self.operator, self.targets[sl], self.alpha, self.ridge, self.lower,
                          self.anchor, None if self.weights is None else self.weights[sl],
                          self.max_weight, self.lipschitz)


@dataclass(frozen=True)
class LassoResult:
    """A solved batch: each row's solution ``d`` (float64, ``(B, K)``), ``objective``,
    certified ``gap`` (an upper bound on objective - optimum), ``n_iter``,
    ``reason`` (the index of its stop reason in
    :data:`~.certificate.STOP_REASONS`), the certified ``feature_error``
    (:func:`~.certificate.feature_error`; inf without a ridge) and the
    ``feature_scale`` it is relative to below ``||z*||``
    (:func:`~.certificate.feature_floor`)."""

    d: np.ndarray
    objective: np.ndarray
    gap: np.ndarray
    n_iter: np.ndarray
    reason: np.ndarray
    feature_error: np.ndarray = None
    feature_scale: np.ndarray = None

    @property
    def stop_reason(self):
        """The stop reasons as strings."""
        return np.asarray(STOP_REASONS)[self.reason]


def make_penalty(alpha, ridge=0.0, lower=None):
    """:class:`~.penalty.L1Penalty`, or :class:`~.penalty.ElasticNetPenalty` for ``ridge > 0``."""
    return ElasticNetPenalty(alpha, ridge, lower) if ridge > 0 else L1Penalty(alpha, lower)


def resolve_solver(problem, solver, device, **settings):
    """The strategy object for ``solver`` (a name, ``"auto"`` or an object), checked."""
    if isinstance(solver, str):
        if solver == "auto":
            solver = choose_solver(problem, device)[0]
        strategy = make_solver(solver, **settings)
    else:
        strategy = solver
    why = strategy.supports(problem.operator)
    if why is None and problem.weights is not None and not getattr(
            strategy, "accepts_weights", False):
        why = "does not take a weighted data term"
    if why is not None:
        raise ValueError(f"solver={strategy.name!r} {why}.")
    return strategy


def solve(problem, solver="auto", stop=None, *, device="cpu", dtype=torch.float32,
          callback=None):
    """Solve every row of ``problem`` (a :class:`BatchLasso`) until ``stop``.

    Parameters
    ----------
    problem : BatchLasso
    solver : str or solver object, default="auto"
    stop : StopRule, default=None
        ``StopRule(tol=1e-4)`` when None.
    device : str or torch.device, default="cpu"
        Where the iterative solvers run (the dense ones run on CPU).
    dtype : torch.dtype, default=torch.float32
        Of the iterations; the certificate is always float64.
    callback : callable or None
        ``callback(n_iter, n_active)`` at each check.

    Returns
    -------
    LassoResult
    """
    stop = StopRule(tol=1e-4) if stop is None else stop
    strategy = resolve_solver(problem, solver, device)
    ridge = float(problem.ridge)
    if stop.feature_tol is not None and not ridge > 0:
        raise ValueError("feature_tol needs ridge > 0 (a strongly convex problem).")
    op, Y = problem.operator, problem.targets
    low = None if problem.lower is None else torch.from_numpy(
        np.asarray(problem.lower, np.float64))
    anchor = None if problem.anchor is None else torch.from_numpy(
        np.asarray(problem.anchor, np.float64))
    if not strategy.iterative:
        return _solve_dense(strategy, problem, stop, low, anchor, callback)
    device = torch.device(device)
    y = torch.from_numpy(Y).to(device)
    penalty = make_penalty(problem.alpha, ridge, None if low is None else low.to(device))
    weights = problem.weights
    datafit = make_datafit(None if weights is None else torch.from_numpy(weights).to(device),
                           problem.max_weight)
    L = (op.lipschitz() if problem.lipschitz is None else problem.lipschitz) \
        * datafit.lipschitz_factor()
    lasso = LassoProblem(op, y, penalty, L, datafit)
    floor = feature_floor(datafit.target(y), L)
    cert = Certificate(op, y, penalty, datafit=datafit, tol=stop.tol,
                       progress_tol=stop.progress_tol, feature_tol=stop.feature_tol,
                       anchor=anchor, feature_floor=floor,
                       n_extrapolation=N_EXTRAPOLATION if getattr(
                           strategy, "dual_extrapolation", True) else 0,
                       fast=fast_products(op, device, dtype), exact=op.exact_products(device))
    with torch.no_grad():
        strategy.run(lasso, cert, d0=None, max_iter=int(stop.max_iter), dtype=dtype,
                     callback=callback)
    d, primal, gap, n_iter, reason = cert.results()
    rows = torch.arange(gap.shape[0], device=gap.device)
    err = cert.feature_error(gap, d, rows) if ridge > 0 else torch.full_like(gap, np.inf)
    return LassoResult(*(t.cpu().numpy() for t in (d, primal, gap, n_iter, reason, err, floor)))


def _solve_dense(strategy, problem, stop, low, anchor, callback):
    """The dense CPU solvers: they stop on the gap alone (tight: linear convergence)."""
    Y, weights, ridge = problem.targets, problem.weights, float(problem.ridge)
    penalty = make_penalty(problem.alpha, ridge, low)
    dense_tol = DENSE_FEATURE_TOL if stop.tol is None else stop.tol
    if stop.feature_tol is not None:
        dense_tol = min(dense_tol, DENSE_FEATURE_TOL)
    D, primal, gap, n_iter = strategy.solve(problem.operator, Y, penalty, tol=dense_tol,
                                            max_iter=int(stop.max_iter), callback=callback,
                                            weights=weights)
    Yw = Y if weights is None else weights * Y
    datafit = make_datafit(None if weights is None else torch.from_numpy(weights),
                           problem.max_weight)
    L = (problem.operator.lipschitz() if problem.lipschitz is None else problem.lipschitz) \
        * datafit.lipschitz_factor()
    floor = feature_floor(torch.from_numpy(Yw), L)
    err = feature_error(torch.from_numpy(gap), torch.from_numpy(D), ridge, anchor, floor).numpy()
    met = np.ones(len(Y), dtype=bool)
    if stop.tol is not None:
        met &= gap <= stop.tol * 0.5 * (Yw * Yw).sum(axis=1)
    if stop.feature_tol is not None:
        met &= err <= stop.feature_tol
    reason = np.where(met, GAP if stop.feature_tol is None else FEATURE, MAX_ITER)
    return LassoResult(D, primal, gap, n_iter, reason, err, floor.numpy())


def solve_batch(op, Y, alpha, *, solver="fista", lower=None, tol=1e-4, max_iter=1000,
                lipschitz=None, device="cpu", dtype=torch.float32, continuation=True,
                progress_tol=None, callback=None, rho=None, admm_iter=ADMM_ITER,
                return_reason=False, weights=None, max_weight=None, ridge=0.0,
                feature_tol=None, anchor=None):
    """:func:`solve` with loose arguments, returning a tuple (the earlier interface).

    Returns numpy ``D (B, K)``, ``primal (B,)``, ``gap (B,)``, ``n_iter (B,)``
    and, with ``return_reason=True``, ``reason (B,)``.  ``continuation``,
    ``rho`` and ``admm_iter`` are the named solver's settings
    (:func:`~.solvers.make_solver`).
    """
    problem = BatchLasso(op, Y, alpha, ridge, lower, anchor, weights, max_weight, lipschitz)
    if isinstance(solver, str):
        name = choose_solver(problem, device)[0] if solver == "auto" else solver
        solver = make_solver(name, continuation=continuation, rho=rho, admm_iter=admm_iter)
    res = solve(problem, solver, StopRule(feature_tol, tol, progress_tol, max_iter),
                device=device, dtype=dtype, callback=callback)
    out = (res.d, res.objective, res.gap, res.n_iter, res.reason)
    return out if return_reason else out[:4]
