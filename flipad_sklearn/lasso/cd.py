"""Coordinate descent for the lasso with a dense ``W`` (fully connected layers).

Cyclic coordinate descent vectorised over samples: each coordinate update
acts on a whole block of samples at once, so the Python loop runs over the
``K`` coordinates only.  Two bookkeeping modes, chosen by shape:

* ``M <= K`` (wide W, e.g. the tabular generator's ``Linear(300, 11)``): keep
  the residual ``R = Y - D Wᵀ``; one update costs ``O(B M)``;
* ``M > K``: keep ``Q = Wᵀ R`` through the Gram matrix ``WᵀW``; one update
  costs ``O(B K)``.

Converged samples (relative duality gap below ``tol``) leave the block.
"""

import numpy as np
import torch

from ._duality import dual_point_value, gap_scale, primal_objective


def _gap(W, Y, D, alpha, lower):
    Wt = torch.from_numpy(W)
    Yt, Dt = torch.from_numpy(Y), torch.from_numpy(D)
    r = Yt - Dt @ Wt.T
    primal = primal_objective(r, Dt, alpha)
    low = None if lower is None else torch.from_numpy(lower)
    dual = dual_point_value(r, r @ Wt, Yt, alpha, low)
    return primal.numpy(), (primal - dual).clamp(min=0).numpy()


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
