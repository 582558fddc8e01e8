"""The data term of the lasso: plain, or weighted per sample and per output.

* :class:`Quadratic`: ``1/2 ||y - W d||^2``, FLIPAD's data term;
* :class:`WeightedQuadratic`: ``1/2 ||D (y - W d)||^2`` with a diagonal
  ``D >= 0`` per sample.

A weighted problem is the plain lasso with target ``D y`` and operator
``D W``, so the penalty, the dual and the certificate of :mod:`._duality`
hold unchanged in those terms.  The datafit object is what carries ``D``
through a batch: it is stored for every row and indexed with the rows that
are still active (a solver drops finished samples), so the operators stay
shared by all samples.  A solver declares whether it takes a weighted data
term (``accepts_weights``): FISTA needs one more product per step, split
ADMM blends the weights into its element-wise ``u``-update, and
exact-resolvent ADMM cannot (its FFT solve is of ``WᵀW + rho I``).
"""

import torch


class Quadratic:
    """``1/2 ||y - W d||^2``: every output counts the same."""

    weights = None

    def weigh(self, t, rows=None):
        """``D t`` for the given rows (here: ``t``)."""
        return t

    def target(self, y):
        """The target of the equivalent plain lasso, ``D y``."""
        return y

    def subset(self, rows):
        return self

    def lipschitz_factor(self):
        """Bound on ``max D^2``: the Lipschitz constant of ``D W`` is at most this times W's."""
        return 1.0

    def __repr__(self):
        return "Quadratic()"


class WeightedQuadratic(Quadratic):
    """``1/2 ||D (y - W d)||^2`` with per-sample diagonal weights.

    Parameters
    ----------
    weights : torch.Tensor of shape (B, M)
        ``D`` for each row of the batch (finite, non-negative); float64.
        An output with weight 0 does not enter the fit (as if unobserved).
    max_weight : float or None
        A bound on every weight, for every sample the caller may solve (e.g.
        the largest slope of the activation): the step sizes then do not
        depend on which samples share a batch.  None: the largest weight of
        this batch.
    """

    def __init__(self, weights, max_weight=None):
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.ndim != 2:
            raise ValueError(f"weights must be 2-D (samples, outputs); got shape "
                             f"{tuple(weights.shape)}.")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and non-negative.")
        self.weights = weights
        self.max_weight = None if max_weight is None else float(max_weight)
        if self.max_weight is not None and weights.numel() and \
                float(weights.amax()) > self.max_weight * (1 + 1e-12):
            raise ValueError(f"weights exceed max_weight={self.max_weight:g}.")
        self._cast = {}

    def _rows(self, rows, like):
        key = (str(like.device), like.dtype)
        w = self._cast.get(key)
        if w is None:
            w = self.weights.to(like.device, like.dtype)
            self._cast[key] = w
        return w if rows is None else w[rows]

    def weigh(self, t, rows=None):
        """``D t`` for ``rows`` of the batch (all rows when None); ``t`` is ``(n, M)``
        or shaped like the outputs ``(n, C, H, W)``."""
        w = self._rows(rows, t)
        return t * w.reshape(t.shape)

    def target(self, y):
        return self.weigh(y)

    def subset(self, rows):
        return WeightedQuadratic(self.weights[rows.to(self.weights.device)], self.max_weight)

    def lipschitz_factor(self):
        if self.max_weight is not None:
            return self.max_weight ** 2
        return float(self.weights.amax() ** 2) if self.weights.numel() else 1.0

    def __repr__(self):
        return f"WeightedQuadratic(weights of shape {tuple(self.weights.shape)})"


def make_datafit(weights=None, max_weight=None):
    """:class:`Quadratic` for None, else :class:`WeightedQuadratic`."""
    return Quadratic() if weights is None else WeightedQuadratic(weights, max_weight)
