"""The certificate tracker every iterative solver shares.

A solver hands it its current iterate at each check; the tracker computes the
float64 primal value, the best dual value it can find (the rescaled
residual, its dual extrapolation, and any dual estimates the solver offers,
such as ADMM's multiplier), keeps each sample's best iterate with its
certified gap, decides which samples stop and why, and shrinks the batch.

Stop reasons, per sample (:data:`STOP_REASONS`):

``"gap"``
    the relative duality gap reached ``tol``: certified;
``"feature"``
    (strongly convex penalties, :class:`~.penalty.ElasticNetPenalty`) the
    certified distance to the unique solution relative to ``max(||z*||,
    floor)`` (:func:`feature_error`), reached ``feature_tol`` (and the gap
    ``tol``, if one is set): the returned activation is certified;
``"progress"``
    over each of ``patience`` consecutive checks, the objective changed by
    less than ``progress_tol * 1/2 ||y||^2`` per iteration: more iterations
    no longer matter (the units of ``tol``: the objective at the anchor);
``"max_iter"``
    the iteration budget ran out;
``"stalled"``
    float32 iterations stopped improving the gap (the caller goes on in float64).

Whatever stopped a sample, its ``gap`` is a valid bound on its suboptimality.
"""

import contextlib
import math

import torch

from ._duality import extrapolated_residual, gap_scale, ray_dual_value
from .datafit import Quadratic

_TINY = 1e-300
#: With float32 checks (``fast``): a row whose float32 certificate is within
#: this factor of the goal (``feature_tol``; ``tol`` squared, the gap's units)
#: is finalised in float64, which decides.  The float32 products leave an
#: error in the data term of about ``||r|| * 1e-7 ||y||``, a fair share of the
#: gaps the feature stop needs on large layers: a sample certified in float64
#: could look uncertified in float32 and run another ``check_every`` iterations.
FAST_SCREEN = 1.25
STOP_REASONS = ("gap", "progress", "max_iter", "stalled", "feature")
GAP, PROGRESS, MAX_ITER, STALLED, FEATURE = range(5)
#: reasons that certify a sample
CERTIFIED = (GAP, FEATURE)


def feature_error(gap, d, ridge, anchor=None, floor=None):
    """Certified relative distance ``||z - z*|| / max(||z*||, floor)`` per row (``z = d + anchor``).

    Strong convexity (modulus ``ridge``) gives ``||d - d*|| <= e = sqrt(2 gap /
    ridge)``, and ``||z*|| >= ||z|| - e``, so ``e / max(||z|| - e, floor)``
    bounds the distance relative to ``max(||z*||, floor)``.  ``floor`` (per
    row, default 0) is the scale below which the distance counts as absolute:
    without it a row whose solution is (near) zero could never be certified
    (:func:`feature_floor`).  0 where ``e = 0`` (the row is the solution);
    inf where the bound says nothing (``ridge = 0``, or ``e >= ||z||`` with no
    floor).
    """
    gap = gap.to(torch.float64)
    if not ridge > 0:
        return torch.full_like(gap, math.inf)
    err = torch.sqrt(2.0 * gap.clamp(min=0.0) / ridge)
    z = d.reshape(d.shape[0], -1).to(torch.float64)
    if anchor is not None:
        z = z + anchor.to(z.device, torch.float64)
    denom = torch.linalg.vector_norm(z, dim=1) - err
    if floor is not None:
        denom = torch.maximum(denom, floor.to(denom.device, torch.float64))
    rel = err / denom.clamp(min=_TINY)
    rel = torch.where(denom > 0, rel, torch.full_like(rel, math.inf))
    return torch.where(err == 0, torch.zeros_like(rel), rel)


def feature_floor(y, lipschitz):
    """The scale of a row's features: ``||y|| / sqrt(L)`` (``L >= ||W||_2^2``).

    The smallest norm of an activation (shift) ``d`` that reproduces the
    target, ``W d = y``, is at least ``||y|| / ||W||_2``: the size features
    take when they explain the image.  :func:`feature_error` measures a
    distance relative to ``max(||z*||, ||y|| / sqrt(L))``: the solution's own
    norm whenever it explains the image, and this scale when the penalty
    shrinks it towards zero (a huge ``alpha``, or an image the layer explains
    by the anchor alone), where a bound relative to ``||z*||`` alone does
    not exist.  It is also the unit in which a relative gap becomes a
    distance: with ``ridge = c L``, a relative gap ``tol`` certifies
    ``||d - d*|| <= sqrt(tol / c) ||y|| / sqrt(L)``.  ``y`` is ``(B, M)``
    (the weighted target ``D y`` with a weighted data term, whose ``L``
    includes the weights' factor); the floor is a function of the image and
    the fitted layer alone, not of the batch or the solver.
    """
    y = y.to(torch.float64)
    return torch.linalg.vector_norm(y, dim=1) / math.sqrt(float(lipschitz))


class Certificate:
    """Per-sample certificates, best iterates and stopping of a batch.

    Parameters
    ----------
    op : operator
        ``matvec`` / ``rmatvec`` in float64 on the solver's layout.
    y : torch.Tensor (B, M), float64
    penalty : L1Penalty
    datafit : Quadratic or WeightedQuadratic, default Quadratic()
        The data term, for all B rows.  With weights ``D`` the certificate is
        that of the plain lasso with target ``D y`` and operator ``D W``
        (:mod:`.datafit`): primal, dual, gap and ``tol`` are in those terms.
    tol : float or None
        Relative gap (``gap <= tol * 1/2 ||y||^2``) that certifies a sample
        (None: no gap criterion; then ``feature_tol`` must be set).
    feature_tol : float or None
        With a strongly convex penalty: the certified relative distance to
        the solution (:func:`feature_error`) that certifies a sample, with the
        gap ``tol`` if both are set (reason ``"feature"``).
    anchor : torch.Tensor (K,) or None
        ``z = d + anchor``: the norm ``feature_tol`` is relative to.
    feature_floor : torch.Tensor (B,) or None
        Per row, the scale below which ``feature_tol`` is absolute
        (:func:`feature_error`, :func:`feature_floor`; None: 0).
    progress_tol : float or None
        Change of the current iterate's objective per iteration since the
        previous check, relative to ``1/2 ||y||^2`` (as ``tol``), below which
        a check counts as no progress (None: never stop on progress).  Relative
        to the objective itself it would depend on the penalty: near basis
        pursuit (tiny alpha) the objective is a tiny fraction of ``1/2 ||y||^2``
        and keeps falling slowly long after the reconstruction has settled.
    patience : int
        Consecutive checks without progress that stop a sample.
    n_extrapolation : int
        Residuals used by dual extrapolation (0: off).
    stall_checks : int or None
        Stop as ``"stalled"`` when the relative gap is below 1e-5 and has not
        improved by 10 % over this many checks (float32 iterations).
    d0 : torch.Tensor (B, K) or None
        Warm start: the initial best iterate.
    fast : FastProducts or None
        Products in float32 for the checks along the way (float64 convolutions
        cost up to ~100 float32 ones on CPU).  A sample's reported primal
        value and gap are then recomputed in float64 when it stops, and a
        sample that looked certified but is not goes on.  The checks then
        take the iterate as it is (float32, flat or ``(B, C, H, W)`` in any
        memory layout) and keep the best iterates in float32: the iterations
        are float32, so nothing is lost, and no large float64 copy is made.
    exact : object or None
        The float64 products of the reported certificates (``matvec``,
        ``rmatvec``; default ``op``), e.g.
        :class:`~flipad_sklearn.operators.spectral.SpectralProducts`.
    """

    def __init__(self, op, y, penalty, *, datafit=None, tol, progress_tol=None, patience=2,
                 n_extrapolation=5, stall_checks=None, d0=None, fast=None, exact=None,
                 feature_tol=None, anchor=None, feature_floor=None):
        if feature_tol is not None and not penalty.ridge > 0:
            raise ValueError("feature_tol needs a strongly convex penalty (ridge > 0).")
        if tol is None and feature_tol is None:
            raise ValueError("set tol, feature_tol or both.")
        self.feature_tol = feature_tol
        self.anchor = None if anchor is None else anchor.to(y.device, torch.float64)
        self.floor = None if feature_floor is None else feature_floor.to(y.device,
                                                                         torch.float64)
        self.op, self.penalty = op, penalty
        self.datafit = Quadratic() if datafit is None else datafit
        self.exact = op if exact is None else exact
        self.y = self.datafit.target(y.to(torch.float64))
        B, dev = y.shape[0], y.device
        store = torch.float64 if fast is None else torch.float32
        self.tol, self.progress_tol, self.patience = tol, progress_tol, patience
        self.n_extrapolation, self.stall_checks = n_extrapolation, stall_checks
        self.scale = gap_scale(self.y)
        self.d = (torch.zeros((B, op.n_inputs), dtype=store, device=dev)
                  if d0 is None else d0.to(dev, store).clone())
        self.primal = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        self.gap = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        self.n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
        self.reason = torch.full((B,), MAX_ITER, dtype=torch.int64, device=dev)
        self.best_dual = torch.full((B,), -math.inf, dtype=torch.float64, device=dev)
        self._since = torch.zeros(B, dtype=torch.int64, device=dev)    # checks without progress
        self._last = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        self._last_iter = torch.zeros(B, dtype=torch.int64, device=dev)
        self._stall_ref = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        self._stall_n = torch.zeros(B, dtype=torch.int64, device=dev)
        self.idx = torch.arange(B, device=dev)
        self._history = []
        self.fast = fast
        self._theta = None           # the best dual candidate of the last check

    @property
    def n_active(self):
        return int(self.idx.numel())

    @contextlib.contextmanager
    def phase(self, *, tol, stall_checks):
        """A phase of a composite strategy with its own gap tolerance and stall rule.

        The float32 iterations of :class:`~.solvers.Float64Finish` stop at the
        gap float32 can reach (or on a stall) and hand over; the caller's
        rule is back when the phase ends, even on an error.
        """
        saved = self.tol, self.stall_checks
        self.tol, self.stall_checks = tol, stall_checks
        try:
            yield self
        finally:
            self.tol, self.stall_checks = saved

    def check(self, n_iter, d, duals=(), final=False, Wd=None):
        """Certify the active rows' iterate ``d`` (active rows only, any dtype).

        ``duals`` are extra dual candidates (active rows, float64) the solver
        offers, as residuals ``y - W d`` would be: the certificate applies the
        datafit's weights to them.  ``Wd``: the solver's own ``W d`` (flat, float64), in
        place of the product here (a solver with its state on a padded grid
        gets it without copying ``d`` out of that grid).  Returns the bool
        mask of active rows that stop now (all of them when ``final``); their
        results are final.
        """
        idx, pen, fit = self.idx, self.penalty, self.datafit
        y = self.y[idx]
        if self.fast is None:
            d = d.reshape(d.shape[0], -1).to(torch.float64)
            mv, rmv = self._weighted(self.exact, idx)
        else:
            mv, rmv = self._weighted(self.fast, idx)
        r = y - (mv(d) if Wd is None else fit.weigh(Wd, idx))
        primal = 0.5 * (r * r).sum(dim=1) + pen.value(d)
        dual = ray_dual_value(r, rmv(r), y, pen)
        theta = r
        cands = [fit.weigh(c.to(torch.float64), idx) for c in duals]
        if self.n_extrapolation:
            self._history.append(r)
            if len(self._history) > self.n_extrapolation + 1:
                self._history.pop(0)
            if len(self._history) == self.n_extrapolation + 1:
                cands.append(extrapolated_residual(torch.stack(self._history, dim=1)))
        for cand in cands:
            value = self._safe_dual(cand, y, rmv)
            better = value > dual
            theta = torch.where(better[:, None], cand.to(torch.float64), theta)
            dual = torch.maximum(dual, value)
        self._theta = theta if self.fast is not None else None
        best_dual = torch.maximum(self.best_dual[idx], dual)
        self.best_dual[idx] = best_dual

        old = self.primal[idx]
        better = primal < old
        if bool(better.any()):
            # rows only: a full where() over the batch would copy it three times;
            # into a view of the store shaped like d, so that an iterate in another
            # memory layout (channels-last) is copied once, not flattened first
            store = self.d.view((self.d.shape[0],) + tuple(d.shape[1:])) \
                if d.ndim > 2 else self.d
            if bool(better.all()):
                store[idx] = d.to(self.d.dtype)
            else:
                store[idx[better]] = d[better].to(self.d.dtype)
        best = torch.minimum(primal, old)
        self.primal[idx] = best
        gap = (best - best_dual).clamp(min=0.0)
        self.gap[idx] = gap
        self.n_iter[idx] = n_iter
        rel = gap / self.scale[idx]

        reason = torch.full_like(idx, -1)
        # the bound is on the stored (best) iterate: the norm is that one's
        met = self._met(rel, gap, self.d[idx] if self.feature_tol is not None else None, idx,
                        slack=1.0 if self.fast is None else FAST_SCREEN)
        reason[met] = self.certified_reason
        if self.progress_tol is not None:
            # the current iterate's objective against the previous check's:
            # stationary (either way) means more iterations no longer change it;
            # the best so far would stall on methods that are not monotone
            # (ADMM); an iterate that has not moved at all (ADMM's first steps
            # can leave it at the anchor while its state builds up) is no sign
            last = self._last[idx]
            steps = (n_iter - self._last_iter[idx]).clamp(min=1)
            change = (last - primal).abs() / (self.scale[idx] * steps)
            self._last[idx] = primal
            self._last_iter[idx] = n_iter
            flat = (change > 0) & (change <= self.progress_tol)
            stuck = torch.where(flat, self._since[idx] + 1, 0)
            self._since[idx] = stuck
            reason[(reason < 0) & (stuck >= self.patience)] = PROGRESS
        if self.stall_checks:
            improved = rel < 0.9 * self._stall_ref[idx]
            self._stall_ref[idx] = torch.where(improved, rel, self._stall_ref[idx])
            count = torch.where(improved, 0, self._stall_n[idx] + 1)
            self._stall_n[idx] = count
            reason[(reason < 0) & (rel < 1e-5) & (count >= self.stall_checks)] = STALLED
        if final:
            reason[reason < 0] = MAX_ITER
        done = reason >= 0
        if self.fast is not None and bool(done.any()):
            done = self._finalise(done, reason, final)
        self.reason[idx[done]] = reason[done]
        return done

    def _finalise(self, done, reason, final):
        """Exact float64 primal and gap of the stopping rows' best iterates.

        A row stopped as certified (by the float32 screen, :data:`FAST_SCREEN`)
        whose exact certificate misses the goal goes on; at the final check it
        stops as ``"max_iter"``.
        """
        rows = torch.nonzero(done)[:, 0]
        idx = self.idx[rows]
        y, d = self.y[idx], self._feasible(self.d[idx].to(torch.float64))
        mv, rmv = self._weighted(self.exact, idx)
        r = y - mv(d)
        primal = 0.5 * (r * r).sum(dim=1) + self.penalty.value(d)
        # the best dual candidate of the last (float32) check, exact in float64;
        # the residual of the best iterate only when that candidate fails (one
        # float64 product less: on CPU they cost tens of float32 iterations)
        dual = self._safe_dual(self._theta[rows], y, rmv)
        bad = ~torch.isfinite(dual)
        if bool(bad.any()):
            _, rmv_bad = self._weighted(self.exact, idx[bad])
            dual[bad] = ray_dual_value(r[bad], rmv_bad(r[bad]), y[bad], self.penalty)
        gap = (primal - dual).clamp(min=0.0)
        self.primal[idx], self.gap[idx] = primal, gap
        self.best_dual[idx] = dual
        met = self._met(gap / self.scale[idx], gap, d, idx)
        miss = (reason[rows] == self.certified_reason) & ~met
        if bool(miss.any()):
            if final:
                # the last check: it stops anyway, as uncertified
                reason[rows[miss]] = MAX_ITER
            else:
                done = done.clone()
                done[rows[miss]] = False
                reason[rows[miss]] = -1
        return done

    @property
    def certified_reason(self):
        """The stop reason of a certified sample: ``FEATURE`` or ``GAP``."""
        return GAP if self.feature_tol is None else FEATURE

    def _met(self, rel, gap, d, rows, slack=1.0):
        """Rows ``rows`` whose certificate meets the goal (``tol`` and/or ``feature_tol``),
        each relaxed by ``slack`` (a screen before an exact finalisation)."""
        ok = torch.ones_like(gap, dtype=torch.bool)
        if self.tol is not None:
            ok &= rel <= self.tol * slack * slack
        if self.feature_tol is not None:
            ok &= self.feature_error(gap, d, rows) <= self.feature_tol * slack
        return ok

    def feature_error(self, gap, d, rows):
        """:func:`feature_error` of rows ``rows`` (iterates ``d``, certified ``gap``)."""
        floor = None if self.floor is None else self.floor[rows]
        return feature_error(gap, d, self.penalty.ridge, self.anchor, floor)

    def met(self, rows=None):
        """Bool mask of ``rows`` (default all) whose stored certificate meets the goal."""
        rows = torch.arange(self.gap.shape[0], device=self.gap.device) if rows is None else rows
        gap = self.gap[rows]
        return self._met(gap / self.scale[rows], gap, self.d[rows], rows)

    def _weighted(self, products, idx):
        """``(matvec, rmatvec)`` of ``D W`` on rows ``idx`` (``products``' own without weights)."""
        fit = self.datafit
        if fit.weights is None:
            return products.matvec, products.rmatvec
        return (lambda d: fit.weigh(products.matvec(d), idx),
                lambda t: products.rmatvec(fit.weigh(t, idx)))

    def _safe_dual(self, theta, y, rmatvec):
        """Dual value of a candidate (rows with non-finite entries give -inf).

        ``rmatvec`` is that of the candidates' rows (weighted as they are).
        """
        ok = torch.isfinite(theta).all(dim=1)
        out = torch.full((theta.shape[0],), -math.inf, dtype=torch.float64, device=theta.device)
        if bool(ok.all()):
            return ray_dual_value(theta.to(torch.float64), rmatvec(theta.to(torch.float64)),
                                  y, self.penalty)
        if bool(ok.any()):
            # a row subset: the weighted products must see the same rows
            keep = torch.nonzero(ok)[:, 0]
            t = theta[ok].to(torch.float64)
            full = torch.zeros_like(theta, dtype=torch.float64)
            full[keep] = t
            out[ok] = ray_dual_value(t, rmatvec(full)[keep], y[ok], self.penalty)
        return out

    def drop(self, done):
        """Remove the stopped rows from the active set; returns the kept mask."""
        keep = ~done
        self.idx = self.idx[keep]
        self._history = [h[keep] for h in self._history]
        if self._theta is not None:
            self._theta = self._theta[keep]
        return keep

    def _feasible(self, d):
        """float64 ``d`` on the bound: a float32 iterate clamped at the float32 bound
        can sit a rounding below the float64 one, where the primal value (which
        assumes the bound) would undercut the optimum and void the certificate."""
        low = self.penalty.lower_as(d)
        return d if low is None else torch.maximum(d, low.reshape(d.shape[1:]))

    def results(self):
        """``(d, primal, gap, n_iter, reason)`` of every row (``d`` in float64, on the bound)."""
        return (self._feasible(self.d.to(torch.float64)), self.primal, self.gap, self.n_iter,
                self.reason)


class FastProducts:
    """float32 products of an operator for the checks of float32 iterations.

    ``matvec`` takes the iterate flat ``(B, n_inputs)`` or as ``(B, C, H, W)``
    (in any memory layout, any float dtype) and returns ``W d`` flat in
    float64; ``rmatvec`` takes float64 ``(B, n_outputs)`` and returns ``Wᵀ r``
    in float32 (``(B, C, H, W)`` for conv layers): only its maximum and, with
    a bound, a sum are used, and a float64 copy of it would cost more than
    the product.  Convolutions run on ``view`` (a
    :class:`~flipad_sklearn.operators.channels_last.ChannelsLastOperator`) if given.
    """

    def __init__(self, op, view=None):
        self.op, self.view = op, view

    def matvec(self, d):
        B = d.shape[0]
        if self.view is None:
            out = self.op.matvec(d.reshape(B, -1).to(torch.float32))
        else:
            out = self.view.forward_nchw(d.to(torch.float32).reshape((B,) + self.op.input_shape))
        return out.reshape(B, -1).to(torch.float64)

    def rmatvec(self, r):
        r = r.to(torch.float32)
        if self.view is None:
            return self.op.rmatvec(r)
        return self.view.adjoint_nchw(r.reshape((r.shape[0],) + self.op.output_shape))
