"""What the certificate costs: iterations against the certified gap (issue 10, item 7).

At the defaults the inversion stops when more iterations no longer change
the objective (``progress_tol``), and reports its duality gap.  Relative to
the *objective* that gap is far larger than the objective's distance to the
optimum: FLIPAD's penalties are small, the optimal objective is about 1e-3
of the objective at the anchor, and the dual point converges much more
slowly than the objective.  This benchmark measures it on the layers of
``bench_inversion.py`` (same problems, same weight scaling), per sample:

* the defaults, then the default solver forced to 300 / 1000 / 3000
  iterations (``tol=0``, no progress stop);
* for each: seconds per sample, the certified gap relative to the objective
  and to ``P(0)`` (the units of ``tol``), and the objective's excess over the
  lowest objective of the table (the 3000-iteration run): an estimate of the
  true suboptimality, which the gap bounds from above;
* at the defaults' stop, the dual candidate of the residual alone and after
  20 rounds of a simultaneous projection (Cimmino) onto the violated
  constraints ``|W_j^T theta| <= alpha``: the residual violates them on a
  share of the coordinates, and whether removing the violation helps.

Run: ``python -m benchmarks.bench_certificate [--only dcgan|lsgan] [--n-samples 2]``
(about 1 minute for DCGAN, 3 for LSGAN, one thread).
"""

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.lasso import L1Penalty
from flipad_sklearn.lasso._duality import ray_dual_value

from ._harness import problem, scaled_layer
from ._results import add_result_args, results_dir, tee_result


ITERATIONS = (300, 1000, 3000)


def column_norms(layer, in_shape):
    """``||W_j||^2`` per activation (interior columns: every kernel tap lands)."""
    w = layer.weight.detach().double()
    dims = (1, 2, 3) if isinstance(layer, nn.ConvTranspose2d) else (0, 2, 3)
    per_channel = (w ** 2).sum(dim=dims)
    return per_channel[:, None, None].expand(in_shape).reshape(-1)


def dual_candidates(inv, x, Z, anchor, layer, in_shape, rounds=20, omega=0.5):
    """Relative gaps of the residual and of its Cimmino-projected version, and
    the residual's share of violated dual constraints and largest violation."""
    op, alpha = inv.operator_, inv.alpha
    n = len(x)
    y = torch.as_tensor(inv._targets(x.reshape(n, -1)), dtype=torch.float64)
    d = torch.as_tensor(Z, dtype=torch.float64) - torch.as_tensor(
        anchor.reshape(1, -1), dtype=torch.float64)
    r = y - op.matvec(d)
    P = 0.5 * (r * r).sum(1) + alpha * d.abs().sum(1)
    pen = L1Penalty(alpha)

    def gap(theta):
        return ((P - ray_dual_value(theta, op.rmatvec(theta), y, pen)) / P).numpy()

    s = op.rmatvec(r) / alpha
    share = (s.abs() > 1).double().mean(1).numpy()
    worst = s.abs().amax(1).numpy()
    cn = column_norms(layer, in_shape)
    theta = r.clone()
    for _ in range(rounds):
        s = op.rmatvec(theta)
        theta = theta - omega * op.matvec((s - s.clamp(-alpha, alpha)) / cn)
    return gap(r), gap(theta), share, worst


def run(name, layer, in_shape, n, log=print):
    x, anchor = problem(layer, in_shape, n, "tanh")
    rows = []
    settings = [("defaults", {})] + [(f"{it} iterations", dict(max_iter=it, tol=0.0,
                                                               progress_tol=None))
                                     for it in ITERATIONS]
    for label, params in settings:
        inv = FinalLayerInverter(layer=layer, activation="tanh", alpha=5e-4, anchor=anchor,
                                 **params).fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")              # tol=0 is never reached
            inv.transform(x[:1])                         # per-layer set-up, not timed
            t0 = time.perf_counter()
            Z = inv.transform(x)
            el = (time.perf_counter() - t0) / n
        y = inv._targets(x.reshape(n, -1))
        rows.append(dict(label=label, solver=inv.solver_, it=inv.n_iter_.mean(), s=el,
                         obj=inv.objective_.copy(), gap=inv.duality_gap_.copy(),
                         p0=0.5 * (y * y).sum(1)))
        if label == "defaults":
            cands = dual_candidates(inv, x, Z, anchor, layer, in_shape)
    best = np.min([r["obj"] for r in rows], axis=0)
    log(f"\n## {name}\n\nalpha=5e-4, tanh, {n} samples, solver {rows[0]['solver']}, one "
        f"thread; P* / P(0) about {np.median(best / rows[0]['p0']):.1e}\n")
    log("| setting | iterations | s / sample | gap / obj (max) | gap / P(0) (max) "
        "| obj / lowest - 1 (max) |")
    log("|---|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['label']} | {r['it']:.0f} | {r['s']:.3f} | {(r['gap'] / r['obj']).max():.2e} "
            f"| {(r['gap'] / r['p0']).max():.1e} | {(r['obj'] / best - 1).max():.1e} |")
    g_r, g_c, share, worst = cands
    log(f"\nAt the defaults' stop: the residual alone certifies gap / obj {g_r.max():.2f} "
        f"(it violates {share.mean():.1%} of the dual constraints, the worst by "
        f"{worst.max():.2f} x alpha); after 20 Cimmino rounds onto the violated constraints "
        f"{g_c.max():.2f}; the defaults' best candidate (the solver's own) "
        f"{(rows[0]['gap'] / rows[0]['obj']).max():.2f}.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("dcgan", "lsgan"), default=None)
    p.add_argument("--n-samples", type=int, default=2)
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("bench_certificate" + (f"_{args.only}" if args.only else "") + ".md",
                      _run, args, results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    torch.set_num_threads(1)
    if args.only in (None, "dcgan"):
        torch.manual_seed(0)
        run("DCGAN final layer ConvTranspose2d(64, 3, 4, 2, 1), 64x64 output",
            nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1), (64, 32, 32), args.n_samples)
    if args.only in (None, "lsgan"):
        torch.manual_seed(0)
        shape = (64, 64, 64)
        run("LSGAN final layer Conv2d(64, 3, 3, 1, 1) on 64x64x64",
            scaled_layer(nn.Conv2d(64, 3, 3, 1, 1), 0.025, shape), shape, args.n_samples)


if __name__ == "__main__":
    main()
