"""Solvers for the batched (shifted, optionally bounded) lasso.

They know nothing about generators: each solves, per row ``y`` of a batch,
``min_d 1/2 ||y - W d||^2 + alpha ||d||_1`` (with ``d >= lower`` if given) for a
linear operator ``W``, and returns the solution with its duality-gap certificate.

The parts, in the spirit of skglm's datafit / penalty / solver split:

* operators (:mod:`flipad_sklearn.linear_ops`, one class per layer type) and
  their periodic embeddings ``W = S T E`` (:mod:`.embedding`);
* the data term (:class:`~.datafit.Quadratic`, or
  :class:`~.datafit.WeightedQuadratic` with per-sample weights);
* the penalty (:class:`~.penalty.L1Penalty`: prox, value, dual feasibility,
  conjugate);
* the certificate tracker (:class:`~.certificate.Certificate`: gap, best
  dual, extrapolation, best iterate, stop rules, shrinking the batch) and
  the products it uses (float32 checks, exact float64 products by FFT:
  :class:`~.spectral.SpectralProducts`);
* solver objects that own only their iterations and declare what they
  support (:mod:`.solvers`), and explicit composite strategies
  (:class:`~.solvers.HandOver`, :class:`~.solvers.Float64Finish`).
"""

from ._duality import dual_point_value, duality_gap, gap_scale, primal_objective
from .admm import (
    DEFAULT_RHO_SCALE, DEFAULT_RHO_STAGES, RHO_ALPHA_SCALING, admm, check_admm_operator,
    penalty_ratio, rho_alpha_factor,
)
from .cd import coordinate_descent
from .datafit import Quadratic, WeightedQuadratic
from .certificate import STOP_REASONS, Certificate
from .fista import fista, fista_path
from .penalty import L1Penalty
from .reference import solve_cvxpy, solve_scipy
from .solvers import (
    ADMM_ITER, FLOAT32_TOL, SOLVERS, ExactADMM, FISTA, Float64Finish, HandOver,
    SplitADMM, auto_solver, make_solver, solve_batch,
)
from .spectral import SpectralProducts, exact_products
from .split_admm import split_admm

__all__ = [
    "ADMM_ITER", "Certificate", "DEFAULT_RHO_SCALE", "DEFAULT_RHO_STAGES", "ExactADMM",
    "FISTA", "FLOAT32_TOL", "Float64Finish", "HandOver", "L1Penalty", "Quadratic",
    "RHO_ALPHA_SCALING", "SOLVERS", "STOP_REASONS", "SpectralProducts", "SplitADMM",
    "WeightedQuadratic", "admm", "auto_solver", "check_admm_operator", "coordinate_descent",
    "dual_point_value", "duality_gap", "exact_products", "fista", "fista_path", "gap_scale",
    "make_solver", "penalty_ratio", "primal_objective", "rho_alpha_factor", "solve_batch",
    "solve_cvxpy", "solve_scipy", "split_admm",
]
