"""Solvers for the batched (shifted, optionally bounded) lasso.

They know nothing about generators: each solves, per row ``y`` of a batch,
``min_d 1/2 ||y - W d||^2 + alpha ||d||_1`` (with ``d >= lower`` if given) for a
linear operator ``W``, and returns the solution with its duality-gap certificate.

The parts, in the spirit of skglm's datafit / penalty / solver split:

* operators (:mod:`flipad_sklearn.operators`: the protocol and its
  capabilities, e.g. the periodic embedding ``W = S T E``);
* the data term (:class:`~.datafit.Quadratic`, or
  :class:`~.datafit.WeightedQuadratic` with per-sample weights);
* the penalty (:class:`~.penalty.L1Penalty`: prox, value, dual feasibility,
  conjugate);
* the certificate tracker (:class:`~.certificate.Certificate`: gap, best
  dual, extrapolation, best iterate, stop rules, shrinking the batch) and
  the products it uses (float32 checks, exact float64 products by FFT:
  :class:`~flipad_sklearn.operators.spectral.SpectralProducts`);
* solver objects that own only their iterations and declare the operator
  capabilities they require (:mod:`.solvers`), explicit composite strategies
  (:class:`~.solvers.HandOver`, :class:`~.solvers.Float64Finish`) and one
  name -> solver registry (:func:`~.solvers.register_solver`);
* one door, :func:`~.solve.solve` ``(problem, solver, stop) -> result``, with
  a :class:`~.solve.BatchLasso`, a frozen :class:`~.solve.StopRule` and a
  :class:`~.solve.LassoResult`.
"""

import importlib

from .._deprecated import moved_name
from ._duality import duality_gap, primal_objective
from .admm import admm
from .cd import coordinate_descent
from .certificate import STOP_REASONS, Certificate
from .datafit import Quadratic, WeightedQuadratic
from .fista import fista, fista_path
from .penalty import ElasticNetPenalty, L1Penalty
from .reference import solve_cvxpy, solve_scipy
from .solve import BatchLasso, LassoResult, StopRule, solve, solve_batch
from .solvers import (
    SOLVERS, DenseSolver, ExactADMM, FISTA, Float64Finish, HandOver, SplitADMM, TorchSolver,
    auto_solver, choose_solver, make_solver, register_solver, solver_names,
)
from .split_admm import split_admm

# tuning constants stay in their modules (each cites the benchmark that set it)
__all__ = [
    "BatchLasso", "Certificate", "DenseSolver", "ElasticNetPenalty", "ExactADMM", "FISTA",
    "Float64Finish", "HandOver", "L1Penalty", "LassoResult", "Quadratic", "SOLVERS",
    "STOP_REASONS", "SplitADMM", "StopRule", "TorchSolver", "WeightedQuadratic", "admm",
    "auto_solver", "choose_solver", "coordinate_descent", "duality_gap", "fista",
    "fista_path", "make_solver", "primal_objective", "register_solver", "solve",
    "solve_batch", "solve_cvxpy", "solve_scipy", "solver_names", "split_admm",
]

# names this package exported before the redesign: still reachable for one
# release, with a FutureWarning naming their module
_FORMER = {
    "ADMM_ITER": "flipad_sklearn.lasso.solvers", "FLOAT32_TOL": "flipad_sklearn.lasso.solvers",
    "DEFAULT_RHO_SCALE": "flipad_sklearn.lasso.admm",
    "DEFAULT_RHO_STAGES": "flipad_sklearn.lasso.admm",
    "RHO_ALPHA_SCALING": "flipad_sklearn.lasso.admm",
    "check_admm_operator": "flipad_sklearn.lasso.admm",
    "penalty_ratio": "flipad_sklearn.lasso.admm", "rho_alpha_factor": "flipad_sklearn.lasso.admm",
    "dual_point_value": "flipad_sklearn.lasso._duality",
    "gap_scale": "flipad_sklearn.lasso._duality",
    "SpectralProducts": "flipad_sklearn.operators.spectral",
}


def __getattr__(name):
    if name == "exact_products":
        moved_name(f"{__name__}.exact_products", "the operator's exact_products(device)")
        return lambda op, device: op.exact_products(device)
    if name in _FORMER:
        moved_name(f"{__name__}.{name}", f"{_FORMER[name]}.{name}")
        return getattr(importlib.import_module(_FORMER[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
