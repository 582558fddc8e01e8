"""Exact ADMM across penalties: rho stages scaled with alpha against fixed ones.

ADMM's default ``rho`` stages are in units of the layer's Lipschitz constant
``L`` (``DEFAULT_RHO_STAGES``).  The prox threshold of a step is
``alpha / rho``, so with fixed stages a larger penalty over-shrinks each step
and the iterations grow with alpha, until FISTA is faster.  The stages are
now multiplied by :func:`~flipad_sklearn.lasso.admm.rho_alpha_factor` of the
batch's ``alpha / ||Wᵀy||_inf`` (``RHO_ALPHA_SCALING``).  This benchmark
measures, per layer and penalty, at the defaults otherwise (``solver="auto"``,
which picks exact ADMM on these layers, the progress stop, float32):

* ``fixed``: the same code with the scaling off (``RHO_ALPHA_SCALING = ()``,
  the behaviour before it);
* ``scaled``: the defaults as a user gets them;
* ``fista``: ``solver="fista"``;

seconds per sample (best of ``--repeat``), median iterations, the objective's
largest excess over the lowest of the three per sample (the progress stop can
end early *above* the optimum; this column catches it) and the certified
gap / objective.  The layers are those of ``bench_inversion.py`` (same
problems, same weight scaling: ``step * L = 0.09`` at the authors' step).

Run: ``python -m benchmarks.bench_admm_alpha [--only dcgan|lsgan] [--threads 2]``
(about 3 minutes on 2 threads).
"""

import argparse
import importlib
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter

from ._harness import problem, scaled_layer
from ._results import add_result_args, results_dir, tee_result


admm_module = importlib.import_module("flipad_sklearn.lasso.admm")


def timed(inv, x, repeat):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        inv.transform(x[:1])                       # per-rho factorisations, not timed
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            inv.transform(x)
            best = min(best, time.perf_counter() - t0)
    return best / len(x), dict(it=int(np.median(inv.n_iter_)), obj=inv.objective_.copy(),
                               gap=(inv.duality_gap_ / inv.objective_).max(), solver=inv.solver_)


def run(name, layer, shape, n, alphas, positive, repeat, log=print):
    x, anchor = problem(layer, shape, n, "tanh")
    log(f"\n## {name}, tanh, positive={positive}, {n} samples\n")
    log("| alpha | alpha / max|Wᵀy| | auto | s / sample fixed / scaled / fista | speed-up "
        "| iterations fixed / scaled / fista | obj / lowest - 1 (max) fixed / scaled / fista "
        "| gap / obj (max) scaled |")
    log("|---|---|---|---|---|---|---|---|")
    saved = admm_module.RHO_ALPHA_SCALING
    for alpha in alphas:
        kw = dict(layer=layer, activation="tanh", alpha=alpha, anchor=anchor, positive=positive)
        rows = {}
        try:
            admm_module.RHO_ALPHA_SCALING = ()
            rows["fixed"] = timed(FinalLayerInverter(**kw).fit(x), x, repeat)
        finally:
            admm_module.RHO_ALPHA_SCALING = saved
        inv = FinalLayerInverter(**kw).fit(x)
        rows["scaled"] = timed(inv, x, repeat)
        rows["fista"] = timed(FinalLayerInverter(solver="fista", **kw).fit(x), x, repeat)
        y = torch.as_tensor(inv._targets(x.reshape(n, -1)))
        s = inv.operator_.rmatvec(y)
        amax = (s.amax(1).clamp(min=0) if positive else s.abs().amax(1)).numpy()
        low = np.min([r[1]["obj"] for r in rows.values()], axis=0)
        keys = ("fixed", "scaled", "fista")
        t = [rows[k][0] for k in keys]
        its = " / ".join(str(rows[k][1]["it"]) for k in keys)
        excess = " / ".join(f"{np.max(rows[k][1]['obj'] / low - 1):.0e}" for k in keys)
        log(f"| {alpha:g} | {np.median(alpha / amax):.1e} | {rows['scaled'][1]['solver']} "
            f"| {' / '.join(f'{v:.3f}' for v in t)} | {t[0] / t[1]:.2f}x "
            f"| {its} | {excess} "
            f"| {rows['scaled'][1]['gap']:.1e} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("dcgan", "lsgan"), default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("bench_admm_alpha" + (f"_{args.only}" if args.only else "") + ".md",
                      _run, args, results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    torch.set_num_threads(args.threads)
    print(f"<!-- python -m benchmarks.bench_admm_alpha --threads {args.threads} "
          f"--repeat {args.repeat} -->")
    if args.only in (None, "dcgan"):
        for positive in (False, True):
            torch.manual_seed(0)
            run("DCGAN ConvTranspose2d(64, 3, 4, 2, 1), 64x64 output",
                nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1), (64, 32, 32), 4,
                (5e-4, 5e-3, 2e-2, 0.1, 0.3, 1.0) if not positive else (5e-4, 5e-3, 0.1),
                positive, args.repeat)
    if args.only in (None, "lsgan"):
        torch.manual_seed(0)
        shape = (64, 64, 64)
        run("LSGAN Conv2d(64, 3, 3, 1, 1) on 64x64x64",
            scaled_layer(nn.Conv2d(64, 3, 3, 1, 1), 0.025, shape), shape, 2,
            (5e-4, 5e-3, 0.05, 0.2), False, args.repeat)


if __name__ == "__main__":
    main()
