"""Solver objects: what each method supports, and the strategies that chain them.

A solver owns only its iterations.  The problem (operator, targets,
penalty) and the certificate are shared objects (:mod:`.penalty`,
:mod:`.certificate`); composite strategies are explicit objects:

* :class:`HandOver` runs a first solver for a number of iterations and hands
  the unfinished samples, warm-started, to a second one;
* :class:`Float64Finish` runs float32 iterations and continues the samples
  that float32 cannot certify in float64.

:func:`make_solver` builds what ``solver=<name>`` means, and
:func:`auto_solver` picks per layer (``solver="auto"``) with the reason.
Each solver's ``supports(op)`` returns None or the reason it cannot take
the operator; :class:`~flipad_sklearn.FinalLayerInverter` checks it once at fit.
"""

import numpy as np
import torch

from .admm import MAX_BOUNDARY, admm_steps, boundary_size
from .certificate import CERTIFIED, PROGRESS, Certificate, FastProducts
from .cd import coordinate_descent
from .datafit import Quadratic, make_datafit
from .fista import fista_steps
from .penalty import L1Penalty
from .reference import MAX_DENSE_VARIABLES, solve_cvxpy, solve_scipy
from .split_admm import split_admm

#: Relative gap below which float32 iterations stall; tighter tolerances
#: finish in float64.
FLOAT32_TOL = 1e-7
#: Iterations of a splitting method before FISTA takes over (tight tolerances).
ADMM_ITER = 400
#: Activations per output from which ``solver="auto"`` takes exact ADMM, at
#: the default stop (``benchmarks/results/bench_auto_solver.md``): 1 on groups=1
#: ConvTranspose2d layers, 2 on Conv2d and grouped layers (at 1 per output
#: FISTA took half exact ADMM's time on both; on a Conv2d at 2.7 per output
#: exact ADMM took 29% less time than FISTA).  Split ADMM from 4, where exact
#: ADMM's boundary is too large.  Below them FISTA's cheaper iterations win.
ADMM_MIN_RATIO = 1.0
ADMM_MIN_RATIO_OTHER = 2.0
SPLITTING_MIN_RATIO = 4.0
#: Unobserved outputs above which ``solver="auto"`` prefers split ADMM to exact
#: ADMM (``benchmarks/results/bench_inversion_defaults.md``): 780 on the DCGAN and LSGAN 64x64
#: layers, where exact ADMM is faster; on SD's ``conv_out`` at 128x128 (1548)
#: exact ADMM stopped in the same time at a 10% higher objective, and at
#: 512x512 (6156) its factorisations and its iterations were both slower.
AUTO_MAX_BOUNDARY = 1000
#: Largest unobserved boundary, as a fraction of the observed outputs, for
#: which ``solver="auto"`` takes a splitting method.  Stride-1 layers leave a
#: thin frame (3-15% on every layer measured); a strided Conv2d leaves most of
#: its grid unobserved (350% for stride 2), and FISTA took 18% less time
#: there than exact ADMM and 44% less than split ADMM (``bench_auto_solver.py``).
AUTO_MAX_BOUNDARY_FRACTION = 0.5
#: Residuals the certificate's dual extrapolation uses (solvers that want it).
N_EXTRAPOLATION = 5


class LassoProblem:
    """A batch of lasso problems: ``min_d f(y - W d) + g(d)`` per row.

    Parameters
    ----------
    op : LayerOperator
    y : torch.Tensor (B, M), float64, on the solver's device
    penalty : L1Penalty
    lipschitz : float
        Of the data term's gradient (``D W``'s with weights).
    datafit : Quadratic or WeightedQuadratic, default Quadratic()
    """

    def __init__(self, op, y, penalty, lipschitz, datafit=None):
        self.op, self.y, self.penalty = op, y, penalty
        self.lipschitz = float(lipschitz)
        self.datafit = Quadratic() if datafit is None else datafit

    def weights(self, rows):
        """The data-term weights of ``rows`` (None for the plain data term)."""
        w = self.datafit.weights
        return None if w is None else w[rows.to(w.device)].to(self.y.device)

    @property
    def device(self):
        return self.y.device


# ----------------------------------------------------------------- solvers
#: what each capability a solver may require means, for its error message
_CAPABILITIES = {
    "periodic_embedding": "handles Conv2d and ConvTranspose2d layers only (operators with "
                          "a periodic embedding)",
    "stored_matrix": "handles fully connected (Linear) layers only",
}


def _missing_capability(solver, op):
    """The reason ``solver`` cannot take ``op`` for lack of a capability, or None."""
    for cap in getattr(solver, "requires", ()):
        if getattr(op, cap)() is None:
            return f"{_CAPABILITIES.get(cap, 'needs ' + cap)} (this layer is {op.layer_name})"
    return None


class TorchSolver:
    """Base of the batched torch solvers: ``run`` iterates on a certificate."""

    name = None
    #: whether the progress stop applies (iterative solvers)
    iterative = True
    #: whether the certificate should extrapolate the residuals for a dual point
    #: (the splitting methods offer their own dual estimate, which is as good
    #: on the benchmark layers, so the extra product per check is saved)
    dual_extrapolation = True
    #: whether it solves a weighted data term (:class:`~.datafit.WeightedQuadratic`)
    accepts_weights = True
    #: operator capabilities it needs (:mod:`flipad_sklearn.operators.base`)
    requires = ()

    def supports(self, op):
        """None if this solver handles ``op``, else the reason it does not."""
        return _missing_capability(self, op)

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class FISTA(TorchSolver):
    """Accelerated proximal gradient (:mod:`.fista`), any layer, CPU or CUDA.

    On CPU, convolutions run on their channels-last view.
    """

    name = "fista"

    def __init__(self, continuation=False):
        self.continuation = continuation

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        op = problem.op
        view = op.channels_last() if problem.device.type == "cpu" else None
        rows = cert.idx.clone()
        y = problem.y[rows]
        used, cap = 0, 0
        if self.continuation:
            d0, used, cap = _continuation_start(problem, y, rows, view, d0, max_iter, dtype)
        # the final stage's budget is what the stages may take at most, not what the
        # batch's slowest row took: a row's result must not depend on its batch
        fista_steps(op, y, problem.penalty, problem.lipschitz, cert, view=view, d0=d0,
                    max_iter=max(1, max_iter - cap), dtype=dtype, callback=callback,
                    weights=problem.weights(rows))
        cert.n_iter[rows] += used

    def __repr__(self):
        return f"FISTA(continuation={self.continuation})"


def _continuation_start(problem, y, rows, view, d0, max_iter, dtype, n_stages=3, ratio=10.0,
                        budget=0.5):
    """Warm start from larger penalties (``alpha * 100``, then ``alpha * 10``).

    Small penalties make the lasso ill-conditioned: the support is large and
    FISTA spends most of its iterations shrinking it.  Each stage runs to a
    loose tolerance; together they take at most ``budget * max_iter``
    iterations.  Returns the warm start, the iterations each row used (its
    own, for its ``n_iter``) and the most the stages may use (the same for
    every batch).
    """
    used = torch.zeros(len(rows), dtype=torch.int64, device=y.device)
    per_stage = max(1, int(budget * max_iter) // (n_stages - 1))
    pen = problem.penalty
    weights = problem.weights(rows)
    datafit = make_datafit(weights, getattr(problem.datafit, "max_weight", None))
    for k in range(n_stages - 1, 0, -1):
        stage_pen = pen.with_alpha(pen.alpha * ratio ** k)
        cert = Certificate(problem.op, y, stage_pen, datafit=datafit, tol=1e-2, d0=d0)
        fista_steps(problem.op, y, stage_pen, problem.lipschitz, cert, view=view, d0=d0,
                    max_iter=per_stage, dtype=dtype, weights=weights)
        d0 = cert.d
        used += cert.n_iter.to(used.device)
    return d0, used, per_stage * (n_stages - 1)


class ExactADMM(TorchSolver):
    """ADMM with exact FFT solves and a dense boundary correction (:mod:`.admm`).

    Conv2d and ConvTranspose2d layers (any stride, padding, dilation,
    groups) with at most ``MAX_BOUNDARY`` unobserved outputs on their periodic
    grid: transposed convolutions (DCGAN-style final layers) and stride-1
    Conv2d layers (LSGAN-style, Stable Diffusion's ``conv_out``).
    """

    name = "admm"
    dual_extrapolation = False
    #: its FFT solve is of ``WᵀW + rho I``; ``WᵀD²W`` has no such structure
    accepts_weights = False

    def __init__(self, rho=None):
        self.rho = rho

    requires = ("periodic_embedding",)

    def supports(self, op):
        why = super().supports(op)
        if why is not None:
            return why
        nu = boundary_size(op)
        if nu > MAX_BOUNDARY:
            return (f"cannot take this layer: its periodic embedding leaves {nu} outputs "
                    f"unobserved (limit {MAX_BOUNDARY} for the dense boundary correction; "
                    "use solver='split_admm')")
        return None

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        admm_steps(problem.op, problem.y[cert.idx], problem.penalty, problem.lipschitz,
                   cert, d0=d0, rho=self.rho, max_iter=max_iter, dtype=dtype,
                   callback=callback)


class SplitADMM(TorchSolver):
    """ADMM with two splits and FFT solves (:mod:`.split_admm`), every conv layer."""

    name = "split_admm"
    dual_extrapolation = False

    def __init__(self, stages=None):
        self.stages = stages

    requires = ("periodic_embedding",)

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        split_admm(problem.op, problem.y[cert.idx], problem.penalty, problem.lipschitz,
                   cert, d0=d0, stages=self.stages, max_iter=max_iter, dtype=dtype,
                   callback=callback, weights=problem.weights(cert.idx))


class DenseSolver:
    """Solvers on the dense matrix (CPU, float64): ``"cd"``, ``"cvxpy"``, ``"scipy"``."""

    iterative = False
    accepts_weights = True

    def __init__(self, name):
        self.name = name
        self.requires = ("stored_matrix",) if name == "cd" else ()

    def supports(self, op):
        why = _missing_capability(self, op)
        if why is not None:
            return why
        if self.name in ("cvxpy", "scipy") and op.n_inputs > MAX_DENSE_VARIABLES:
            return (f"is meant to verify small problems (this layer has {op.n_inputs} "
                    f"activations, limit {MAX_DENSE_VARIABLES})")
        return None

    def solve(self, op, Y, penalty, *, tol, max_iter, callback=None, weights=None):
        """``weights`` (numpy ``(B, M)`` or None): one weighted problem per row,
        solved as the plain lasso with ``D W`` and ``D y``.  An elastic net
        (``penalty.ridge > 0``) is solved as the lasso of ``[W; sqrt(ridge) I]``
        and ``[y; 0]``: the same objective, and that lasso's certificate."""
        W = op.to_dense()
        if penalty.ridge > 0:
            return self._augmented(W, Y, penalty, tol=tol, max_iter=max_iter,
                                   callback=callback, weights=weights)
        return self._solve_dense(W, Y, penalty, tol=tol, max_iter=max_iter,
                                 callback=callback, weights=weights)

    def _augmented(self, W, Y, penalty, *, tol, max_iter, callback, weights):
        K = W.shape[1]
        root = np.sqrt(penalty.ridge) * np.eye(K)
        plain = L1Penalty(penalty.alpha, penalty.lower)
        if weights is None:
            return self._solve_dense(np.vstack([W, root]), np.hstack([Y, np.zeros((len(Y), K))]),
                                     plain, tol=tol, max_iter=max_iter, callback=callback)
        parts = [self._solve_dense(np.vstack([W * w[:, None], root]),
                                   np.hstack([w * y, np.zeros(K)])[None], plain, tol=tol,
                                   max_iter=max_iter, callback=None)
                 for w, y in zip(weights, Y)]
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _solve_dense(self, W, Y, penalty, *, tol, max_iter, callback=None, weights=None):
        lower = None if penalty.lower is None else penalty.lower.numpy()
        if self.name == "cd":
            def fn(W, Y, alpha, lower, callback):
                return coordinate_descent(W, Y, alpha, lower=lower, tol=tol,
                                          max_iter=max_iter, callback=callback)
        else:
            fn = solve_cvxpy if self.name == "cvxpy" else solve_scipy

        def run(W, Y, callback):
            return fn(W, Y, penalty.alpha, lower=lower, callback=callback)

        if weights is None:
            return run(W, Y, callback)
        parts = [run(W * w[:, None], (w * y)[None], None) for w, y in zip(weights, Y)]
        return tuple(np.concatenate(p) for p in zip(*parts))

    def __repr__(self):
        return f"DenseSolver({self.name!r})"


# -------------------------------------------------------------- strategies
def _unfinished(cert):
    """Rows not stopped by the certificate or the progress rule."""
    done = torch.isin(cert.reason, torch.tensor(CERTIFIED + (PROGRESS,), device=cert.reason.device))
    return torch.nonzero(~done)[:, 0]


class HandOver:
    """``first`` for at most ``after`` iterations, then ``then`` on the rest, warm-started.

    Only when the certificate is the goal (a tight ``tol <= tight_tol``, or
    no progress stop): the splitting methods reach a moderate gap fast but can
    stall short of a tight one, where FISTA goes on.  Otherwise ``first``
    runs to the end (a FISTA step on these layers costs more and gains less
    than an ADMM step).
    """

    def __init__(self, first, then, after=ADMM_ITER, tight_tol=1e-7):
        self.first, self.then, self.after = first, then, int(after)
        self.tight_tol = tight_tol
        self.name = first.name
        self.iterative = True
        self.dual_extrapolation = first.dual_extrapolation
        self.accepts_weights = first.accepts_weights and then.accepts_weights

    def supports(self, op):
        return self.first.supports(op) or self.then.supports(op)

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        loose = cert.tol is not None and cert.tol > self.tight_tol
        if loose and cert.feature_tol is None and cert.progress_tol is not None:
            self.first.run(problem, cert, d0=d0, max_iter=max_iter, dtype=dtype,
                           callback=callback)
            return
        n_first = max(1, min(self.after, max_iter))
        self.first.run(problem, cert, d0=d0, max_iter=n_first, dtype=dtype, callback=callback)
        if max_iter > n_first:
            _continue(self.then, problem, cert, _unfinished(cert), max_iter, dtype, callback)

    def __repr__(self):
        return f"HandOver({self.first!r}, {self.then!r}, after={self.after})"


class Float64Finish:
    """float32 iterations of ``inner``; samples float32 cannot certify go on in float64.

    float32 iterates stall near a relative gap of ~1e-5 (``FLOAT32_TOL``):
    below that, the unfinished samples continue with FISTA in float64 from
    where they are.
    """

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.iterative = True
        self.dual_extrapolation = inner.dual_extrapolation
        self.accepts_weights = inner.accepts_weights

    def supports(self, op):
        return self.inner.supports(op)

    def run(self, problem, cert, *, d0, max_iter, dtype, callback=None):
        tight = cert.tol is not None and cert.tol < FLOAT32_TOL
        if dtype != torch.float32 or not (tight or cert.feature_tol is not None):
            self.inner.run(problem, cert, d0=d0, max_iter=max_iter, dtype=dtype,
                           callback=callback)
            return
        with cert.phase(tol=FLOAT32_TOL if tight else cert.tol, stall_checks=10):
            self.inner.run(problem, cert, d0=d0, max_iter=max_iter, dtype=dtype,
                           callback=callback)
        met = cert.met()
        # stalled at, or out of iterations on, a certificate that meets the goal
        cert.reason[met & (cert.reason != PROGRESS)] = cert.certified_reason
        rows = torch.nonzero(~met & (cert.reason != PROGRESS))[:, 0]
        _continue(FISTA(), problem, cert, rows, max_iter, torch.float64, callback)

    def __repr__(self):
        return f"Float64Finish({self.inner!r})"


def fast_products(op, device, dtype):
    """float32 products for the checks of float32 iterations on conv layers, else None.

    float64 convolutions run far slower than float32 ones on CPU (no oneDNN
    kernel); the checks along the way then cost more than the iterations.
    """
    if dtype != torch.float32 or not op.fast_float32_checks:
        return None
    if torch.device(device).type == "cpu":
        return FastProducts(op, op.channels_last())
    return FastProducts(op)


def _continue(solver, problem, cert, rows, max_iter, dtype, callback):
    """Run ``solver`` on ``rows`` of ``cert``, warm-started, for the iterations left.

    Each row gets its own ``max_iter - n_iter``: rows that used the same number
    run together, so a row's result does not depend on the rows of its batch.
    """
    if rows.numel() == 0:
        return
    used = cert.n_iter[rows]
    for n_used in torch.unique(used).tolist():
        _continue_rows(solver, problem, cert, rows[used == n_used], max_iter - n_used,
                       dtype, callback)


def _continue_rows(solver, problem, cert, rows, left, dtype, callback):
    """:func:`_continue` for rows that all have ``left`` iterations left."""
    if left < 1:
        return
    used = cert.n_iter[rows]
    datafit = make_datafit(problem.weights(rows), getattr(problem.datafit, "max_weight", None))
    sub_problem = LassoProblem(problem.op, problem.y[rows], problem.penalty, problem.lipschitz,
                               datafit)
    sub = Certificate(problem.op, problem.y[rows], problem.penalty, datafit=datafit,
                      tol=cert.tol, feature_tol=cert.feature_tol, anchor=cert.anchor,
                      feature_floor=None if cert.floor is None else cert.floor[rows],
                      progress_tol=cert.progress_tol, patience=cert.patience,
                      n_extrapolation=(N_EXTRAPOLATION if getattr(solver, "dual_extrapolation",
                                                                  True) else 0),
                      d0=cert.d[rows],
                      fast=cert.fast if dtype == torch.float32 else None, exact=cert.exact)
    sub.best_dual[:] = cert.best_dual[rows]          # dual bounds stay valid
    sub.primal[:] = cert.primal[rows]
    solver.run(sub_problem, sub, d0=cert.d[rows], max_iter=left, dtype=dtype, callback=callback)
    if sub.d.dtype != cert.d.dtype:
        cert.d = cert.d.to(torch.float64)            # float64 iterates are kept as they are
    cert.d[rows], cert.primal[rows], cert.gap[rows] = sub.d, sub.primal, sub.gap
    cert.best_dual[rows] = sub.best_dual
    cert.n_iter[rows] = used + sub.n_iter
    cert.reason[rows] = sub.reason


# --------------------------------------------------------------- registry
#: name -> factory(**settings) of the strategy ``solver=name`` runs
_REGISTRY = {}


def register_solver(name, factory, *, replace=False):
    """Make ``solver=name`` run ``factory(**settings)`` (a solver or strategy object).

    The factory takes keyword settings and ignores those it does not use
    (``continuation``, ``rho``, ``admm_iter`` reach every factory).  The
    object needs ``name``, ``iterative``, ``supports(op)`` and ``run`` (an
    iterative torch solver) or ``solve`` (a dense one); see :class:`TorchSolver`.
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"A solver's name must be a non-empty string other than 'auto', "
                         f"got {name!r}.")
    if not callable(factory):
        raise TypeError(f"factory must be callable (settings -> solver), got "
                        f"{type(factory).__name__}.")
    if name in _REGISTRY and not replace:
        raise ValueError(f"A solver named {name!r} is registered already (replace=True "
                         "to override it).")
    _REGISTRY[name] = factory
    return factory


def solver_names():
    """``"auto"`` and every registered solver's name."""
    return ("auto",) + tuple(_REGISTRY)


def make_solver(name, **settings):
    """The strategy object ``solver=name`` runs (no ``"auto"``: see :func:`choose_solver`)."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown solver {name!r}; use one of {solver_names()}.")
    return _REGISTRY[name](**settings)


def _fista(continuation=True, **_):
    return Float64Finish(FISTA(continuation=continuation))


def _admm(rho=None, admm_iter=ADMM_ITER, **_):
    return Float64Finish(HandOver(ExactADMM(rho=rho), FISTA(), after=admm_iter))


def _split_admm(rho=None, admm_iter=ADMM_ITER, **_):
    return Float64Finish(HandOver(SplitADMM(stages=rho), FISTA(), after=admm_iter))


def _dense(name):
    def factory(**_):
        return DenseSolver(name)
    return factory


for _name, _factory in (("fista", _fista), ("admm", _admm), ("split_admm", _split_admm),
                        ("cd", _dense("cd")), ("cvxpy", _dense("cvxpy")),
                        ("scipy", _dense("scipy"))):
    register_solver(_name, _factory)
#: the built-in names (``solver_names()`` also lists registered ones)
SOLVERS = solver_names()


def choose_solver(problem, device):
    """``(name, reason)`` of ``solver="auto"`` for a :class:`~.solve.BatchLasso`:
    :func:`auto_solver` with the problem's bound and weights (every caller's one rule)."""
    return auto_solver(problem.operator, device, shifted_bound=problem.shifted_bound,
                       weighted=problem.weights is not None, ridge=float(problem.ridge))


def auto_solver(op, device, shifted_bound=False, weighted=False, ridge=0.0):
    """``(name, reason)``: the method ``solver="auto"`` uses for ``op`` on ``device``.

    The rule comes from ``benchmarks/results/bench_inversion_defaults.md`` and
    ``benchmarks/results/bench_auto_solver.md`` (each method at the default stop):
    on conv layers with more activations than outputs (near basis pursuit:
    DCGAN 64x64 5.3 per output, LSGAN 21, SD's decoder 43, but also the
    28x28 MNIST generators' 4-8) a splitting method with FFT solves stops in
    several times fewer iterations than FISTA, at a lower objective, and
    exact ADMM before split ADMM where its boundary matrix is small; on
    better-posed layers (about one activation per output or fewer) and on
    strided Conv2d layers (most of the periodic grid unobserved) FISTA
    stops first, for its cheaper iterations.  On Linear layers scikit-learn's
    compiled coordinate descent is fastest on CPU, unless the problem has a
    shifted bound (``shifted_bound``: ``positive=True`` with a non-zero
    anchor, so ``d >= -anchor``), which it does not handle: the package's own
    coordinate descent then loops in Python, and batched FISTA is far faster;
    or a ridge (``ridge > 0``, the default elastic net of the features): on
    the tabular ``Linear(300, 11)`` layer coordinate descent ended every
    sample at ``max_iter`` far from the feature tolerance, where FISTA
    certified it at a tenth of the time (``benchmarks/results/bench_inversion_linear.md``).

    With a weighted data term (``weighted``, :mod:`.datafit`) exact ADMM is
    out (its solve needs ``WᵀW``'s structure): split ADMM takes its place
    from ``SPLITTING_MIN_RATIO`` activations per output, FISTA below, and
    Linear layers run batched FISTA (each row has its own ``D W``).
    """
    device = torch.device(device)
    if weighted:
        name, reason = auto_solver(op, device, shifted_bound, ridge=ridge)
        if name == "admm":
            ratio = op.n_inputs / op.n_outputs
            if ratio >= SPLITTING_MIN_RATIO:
                return "split_admm", (f"{type(op).__name__} ({ratio:.1f} activations per "
                                      "output) with a weighted data term: ADMM with two "
                                      "splits and FFT solves (exact-resolvent ADMM takes "
                                      "no weights)")
            return "fista", (f"{type(op).__name__} ({ratio:.1f} activations per output, "
                             f"under {SPLITTING_MIN_RATIO:g}) with a weighted data term: "
                             "FISTA (exact-resolvent ADMM takes no weights)")
        if name == "cd":
            return "fista", ("Linear layer with a weighted data term (each sample has its "
                             "own D W): batched FISTA")
        return name, reason
    if op.stored_matrix() is not None:
        if shifted_bound:
            return "fista", ("Linear layer with a shifted bound (positive=True, non-zero "
                             "anchor): batched FISTA")
        if ridge > 0:
            return "fista", ("Linear layer with a ridge (the features' elastic net): batched "
                             "FISTA certifies the feature stop, where coordinate descent "
                             "did not within max_iter")
        if device.type == "cpu":
            return "cd", "Linear layer on CPU: compiled coordinate descent"
        return "fista", "Linear layer on CUDA: batched FISTA"
    if op.periodic_embedding() is None:
        return "fista", f"{type(op).__name__}: FISTA (needs only W z and W^T r)"
    ratio = op.n_inputs / op.n_outputs
    per = f"{ratio:.1f} activations per output"
    nu = boundary_size(op)
    if nu > AUTO_MAX_BOUNDARY_FRACTION * op.n_outputs:
        return "fista", (f"{type(op).__name__} with {nu} unobserved outputs on its periodic "
                         f"grid for {op.n_outputs} observed (a strided layer): FISTA needs "
                         "no boundary solve")
    plain = op.phase_convolution
    admm_least = ADMM_MIN_RATIO if plain else ADMM_MIN_RATIO_OTHER
    why = ExactADMM().supports(op)
    if why is None and nu > AUTO_MAX_BOUNDARY:
        why = f"is slower than split ADMM with {nu} unobserved outputs (over {AUTO_MAX_BOUNDARY})"
    if why is None and ratio >= admm_least:
        return "admm", (f"{type(op).__name__} with {per} and a small unobserved boundary "
                        f"({nu} outputs): ADMM with exact FFT solves of the layer")
    if why is not None and ratio >= SPLITTING_MIN_RATIO:
        return "split_admm", (f"{type(op).__name__} ({per}): ADMM with two splits and FFT "
                              f"solves (exact-resolvent ADMM {why})")
    least = admm_least if why is None else SPLITTING_MIN_RATIO
    return "fista", (f"{type(op).__name__} with {per} (under {least:g}): well-posed "
                     "enough that FISTA's cheaper iterations win")


def bytes_per_sample(op, precision="float32"):
    """Upper estimate of the solver state one sample needs, in bytes.

    Iterations keep about 8 activation-sized and 16 output-sized arrays in
    the working precision (FISTA's iterate, momentum, gradient and products;
    ADMM's state on its grid); the certificate keeps the best iterate, a
    float64 copy at checks and the residuals of dual extrapolation.
    """
    isz = 4 if precision == "float32" else 8
    return op.n_inputs * (8 * isz + 3 * 8) + op.n_outputs * (16 * isz + 10 * 8)


#: On CPU, ``batch_size="auto"`` also keeps a batch's solver state within
#: this many bytes: beyond it the iterations' arrays no longer stay in the
#: CPU's caches and each sample costs 1.4-1.9x more
#: (``benchmarks/results/bench_batch_size.md``: the DCGAN, LSGAN and Stable Diffusion
#: layers of ``bench_inversion.py``).  Small layers still get the 256 cap.
CPU_BATCH_BYTES = 192 * 2 ** 20


def auto_batch_size(op, precision="float32", budget=2 ** 31, largest=256, device="cpu"):
    """Samples per batch: the solver state within ``budget`` bytes (and, on
    CPU, within :data:`CPU_BATCH_BYTES`), at most ``largest``."""
    if torch.device(device).type == "cpu":
        budget = min(budget, CPU_BATCH_BYTES)
    return int(max(1, min(largest, budget // bytes_per_sample(op, precision))))
