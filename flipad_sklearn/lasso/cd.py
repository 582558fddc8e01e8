"""Coordinate descent for the lasso with a dense ``W`` (fully connected layers).

Cyclic coordinate descent vectorised over samples: each coordinate update
acts on a whole block of samples at once, so the Python loop runs over the
``K`` coordinates only.  Two bookkeeping modes, chosen by shape:

* ``M <= K`` (wide W, e.g. the tabular generator's ``Linear(300, 11)``): keep
  the residual ``R = Y - D Wᵀ``; one update costs ``O(B M)``;
* ``M > K``: keep ``Q = Wᵀ R`` through the Gram matrix ``WᵀW``; one update
  costs ``O(B K)``.

Converged samples (relative duality gap below ``tol``) leave the block.

Without a bound other than ``d >= 0`` the problem is a plain (or positive)
lasso, and scikit-learn's compiled coordinate descent with a precomputed Gram
matrix (what ``sklearn.decomposition.sparse_encode`` runs) is used instead:
:func:`sklearn_lasso_cd`.  Either way the returned certificate is our own.
"""

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from ._duality import dual_point_value, gap_scale, primal_objective


def _gap(W, Y, D, alpha, lower):
    Wt = torch.from_numpy(W)
    Yt, Dt = torch.from_numpy(Y), torch.from_numpy(D)
    r = Yt - Dt @ Wt.T
    primal = primal_objective(r, Dt, alpha)
    low = None if lower is None else torch.from_numpy(lower)
    dual = dual_point_value(r, r @ Wt, Yt, alpha, low)
    return primal.numpy(), (primal - dual).clamp(min=0).numpy()


def sklearn_lasso_cd(W, Y, alpha, *, positive=False, tol=1e-6, max_iter=1000):
    """scikit-learn's Gram-matrix coordinate descent on each row of ``Y``.

    scikit-learn's Lasso minimises ``1/(2 M) ||y - W d||^2 + a ||d||_1``, so
    ``a = alpha / M`` gives our problem; its stopping rule (gap below
    ``tol * ||y||^2 / M``) matches ours (gap below ``tol * 1/2 ||y||^2``) up to
    a factor 2, which the tolerance passed here absorbs.
    """
    M, K = W.shape
    lasso = Lasso(alpha=alpha / M, fit_intercept=False, precompute=W.T @ W,
                  max_iter=max_iter, tol=tol / 2, positive=positive, selection="cyclic")
    with warnings.catch_warnings():
        # the caller checks our own certificate and warns once for all samples
        warnings.simplefilter("ignore", ConvergenceWarning)
        lasso.fit(W, np.ascontiguousarray(Y.T))
    D = np.asarray(lasso.coef_, dtype=np.float64).reshape(Y.shape[0], K)
    n_iter = np.broadcast_to(np.asarray(lasso.n_iter_), (Y.shape[0],)).astype(np.int64)
    primal, gap = _gap(W, Y, D, alpha, None if not positive else np.zeros(K))
    return D, primal, gap, n_iter


def coordinate_descent(W, Y, alpha, *, lower=None, tol=1e-4, max_iter=1000,
                       check_every=5, callback=None):
    """Solve ``min_d 1/2 ||y - W d||^2 + alpha ||d||_1 (d >= lower)`` per row of Y.

    Parameters
    ----------
    W : ndarray (M, K), float64
    Y : ndarray (B, M), float64
    alpha : float
    lower : ndarray (K,) or None
    tol : float
        Relative duality gap (``gap <= tol * 1/2 ||y||^2``) at which a row stops.
    max_iter : int
        Epochs (full sweeps over the coordinates) at most.

    Returns
    -------
    D : ndarray (B, K); primal, gap : ndarray (B,); n_iter : ndarray (B,) int
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if lower is None or not np.any(lower):
        return sklearn_lasso_cd(W, Y, alpha, positive=lower is not None, tol=tol,
                                max_iter=max_iter)
    B = Y.shape[0]
    M, K = W.shape
    D_all = np.zeros((B, K))
    if lower is not None:
        lower = np.asarray(lower, dtype=np.float64)
        D_all = np.maximum(D_all, lower)
    primal_all = np.full(B, np.inf)
    gap_all = np.full(B, np.inf)
    iter_all = np.zeros(B, dtype=np.int64)

    col_sq = (W ** 2).sum(axis=0)
    use_gram = M > K
    Wcols = np.asfortranarray(W)
    idx = np.arange(B)
    scale = gap_scale(torch.from_numpy(Y)).numpy()
    D = D_all.copy()
    if use_gram:
        G = W.T @ W
        Q = (Y - D @ W.T) @ W        # Wᵀ r per row
    else:
        R = Y - D @ W.T
    epoch = 0
    while True:
        if epoch % check_every == 0 or epoch >= max_iter:
            primal, gap = _gap(W, Y[idx], D, alpha, lower)
            D_all[idx], primal_all[idx], gap_all[idx], iter_all[idx] = D, primal, gap, epoch
            done = gap <= tol * scale[idx]
            if callback is not None:
                callback(epoch, int((~done).sum()))
            if epoch >= max_iter or done.all():
                break
            if done.any():
                keep = ~done
                idx, D = idx[keep], D[keep]
                if use_gram:
                    Q = Q[keep]
                else:
                    R = R[keep]
        for j in range(K):
            cj = col_sq[j]
            if cj == 0.0:
                continue
            old = D[:, j]
            g = Q[:, j] if use_gram else R @ Wcols[:, j]
            u = old + g / cj
            new = np.sign(u) * np.maximum(np.abs(u) - alpha / cj, 0.0)
            if lower is not None:
                new = np.maximum(new, lower[j])
            delta = new - old
            if not delta.any():
                continue
            D[:, j] = new
            if use_gram:
                Q -= np.outer(delta, G[:, j])
            else:
                R -= np.outer(delta, Wcols[:, j])
        epoch += 1
    return D_all, primal_all, gap_all, iter_all
