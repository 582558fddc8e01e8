"""Which solver ``solver="auto"`` should take on small conv layers, measured at the defaults.

``bench_inversion.py`` measures the large final layers (64x64 DCGAN, LSGAN,
Stable Diffusion) against the FLIPAD authors' settings.  This benchmark covers
the small ones where the choice between FISTA and a splitting method is
close: the demo's and the MNIST zoo's trained generators (28x28 and 32x32,
``ConvTranspose2d(C, 1, 4, 2, 1)``) and synthetic layers from 0.5 to 16
activations per output.  Each method runs **at the inverter's defaults**
(``tol``, ``max_iter``, the progress stop; only ``solver=`` is set), on the
same samples, alternating, best time of ``--repeat``; the table prints the
milliseconds per sample, the median iterations, the mean objective relative
to the lowest of the three, the largest certified gap / objective, and what
``solver="auto"`` picks.

Synthetic layers: torch's default initialisation (seed 0), ReLU of standard
normal activations, the anchor their mean (as in ``bench_inversion.py``).
Trained generators: ``positive=True`` (their penultimate layer is a ReLU),
the anchor the mean activation over 500 samples; the zoo is read from the
attribution benchmark's cache when it is there (``benchmarks/train_zoo.py``).

Run: ``python -m benchmarks.bench_auto_solver [--n-samples 32] [--repeat 2]
[--threads 1] [--only NAME] [--datafit output]``.  Keep ``--threads`` at most
the free cores.  ``--datafit output``: every inverter weighs its data term by
tanh's slope (exact ADMM refuses it).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter, mean_activation

from ._harness import problem
from ._results import add_result_args, results_dir, tee_result


SOLVERS = ("fista", "admm", "split_admm")


def synthetic_cases():
    """``(name, layer, activation shape)`` of small random layers."""
    torch.manual_seed(0)
    specs = [
        ("ConvTranspose2d(2, 1, 4, 2, 1) 14->28", nn.ConvTranspose2d(2, 1, 4, 2, 1), (2, 14, 14)),
        ("ConvTranspose2d(4, 1, 4, 2, 1) 14->28", nn.ConvTranspose2d(4, 1, 4, 2, 1), (4, 14, 14)),
        ("ConvTranspose2d(8, 1, 4, 2, 1) 14->28", nn.ConvTranspose2d(8, 1, 4, 2, 1), (8, 14, 14)),
        ("ConvTranspose2d(16, 3, 4, 2, 1) 16->32", nn.ConvTranspose2d(16, 3, 4, 2, 1),
         (16, 16, 16)),
        ("Conv2d(3, 3, 3, 1, 1) 32x32", nn.Conv2d(3, 3, 3, 1, 1), (3, 32, 32)),
        ("Conv2d(8, 3, 3, 1, 1) 32x32", nn.Conv2d(8, 3, 3, 1, 1), (8, 32, 32)),
        ("Conv2d(16, 1, 3, 1, 1) 28x28", nn.Conv2d(16, 1, 3, 1, 1), (16, 28, 28)),
        # most of a strided Conv2d's grid is unobserved: a large boundary matrix
        ("Conv2d(16, 3, 4, 2, 1) 32->16", nn.Conv2d(16, 3, 4, 2, 1), (16, 32, 32)),
        ("ConvTranspose2d(16, 4, 4, 2, 1, groups=2) 16->32",
         nn.ConvTranspose2d(16, 4, 4, 2, 1, groups=2), (16, 16, 16)),
    ]
    return specs


def trained_cases(cache_dir):
    """The demo's G and, if cached, one generator of each zoo kind."""
    from flipad_sklearn.generators import load_generator
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator

    out = [("demo G (28x28)", load_demo_generator("G"))]
    for kind in ("dcgan", "lsgan", "ebgan"):
        path = os.path.join(cache_dir, f"{kind}-seed0-32px-e5-n5000.pt")
        if os.path.exists(path):
            out.append((f"zoo {kind} seed 0 (32x32)", load_generator(path)))
    return out


def measure(layer, x, anchor, positive, repeat, datafit="preactivation"):
    """Per solver: (seconds, median iterations, mean objective, max gap/obj)."""
    rows = {}
    for _ in range(repeat):
        for solver in SOLVERS:
            inv = FinalLayerInverter(layer=layer, activation="tanh", anchor=anchor,
                                     positive=positive, solver=solver, device="cpu",
                                     datafit=datafit)
            try:
                inv.fit(x[:4])
            except ValueError:
                rows[solver] = None           # the solver refuses this layer
                continue
            inv.transform(x[:2])              # per-layer set-up, not timed
            t0 = time.perf_counter()
            inv.transform(x)
            t = time.perf_counter() - t0
            if rows.get(solver) is None or t < rows[solver][0]:
                rows[solver] = (t, float(np.median(inv.n_iter_)), float(inv.objective_.mean()),
                                float(np.max(inv.duality_gap_ / inv.objective_)))
    auto = FinalLayerInverter(layer=layer, activation="tanh", anchor=anchor,
                              positive=positive, device="cpu", datafit=datafit).fit(x[:4])
    return rows, auto


def print_table(name, rows, auto, n):
    op = auto.operator_
    print(f"\n## {name}: {op.n_inputs} activations, "
          f"{op.n_inputs / op.n_outputs:.1f} per output; auto -> **{auto.solver_}**\n")
    print("| solver | ms / sample | iterations (median) | objective / lowest - 1 | "
          "gap / obj (max) |")
    print("|---|---|---|---|---|")
    done = [r for r in rows.values() if r is not None]
    lowest = min(r[2] for r in done)
    fastest = min(r[0] for r in done)
    for solver in SOLVERS:
        r = rows.get(solver)
        if r is None:
            print(f"| {solver} | refuses this layer | | | |")
            continue
        mark = " (fastest)" if r[0] == fastest else ""
        print(f"| {solver}{' (auto)' if solver == auto.solver_ else ''} | "
              f"{r[0] / n * 1e3:.2f}{mark} | {r[1]:.0f} | {r[2] / lowest - 1:+.2e} | "
              f"{r[3]:.2e} |")


def main(argv=None):
    from .train_zoo import DEFAULT_CACHE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-samples", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--only", default=None, help="run the cases whose name contains this")
    p.add_argument("--datafit", default="preactivation", choices=("preactivation", "output"),
                   help="the inverters' data term (exact ADMM refuses 'output')")
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("bench_auto_solver.md", _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    keep = (lambda name: args.only is None or args.only in name)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    n = args.n_samples
    print(f"# solver='auto' on small conv layers: {n} samples, {args.threads} thread(s), "
          f"every method at the defaults, datafit={args.datafit!r}")
    for name, G in trained_cases(args.cache_dir):
        if not keep(name):
            continue
        x = G.sample(n, random_state=100)
        anchor = mean_activation(G, 500, G.latent_shape, layer=G.final_layer, random_state=0)
        rows, auto = measure(G.final_layer, x, anchor, True, args.repeat, args.datafit)
        print_table(f"{name} {G.final_layer}, positive=True", rows, auto, n)
    for name, layer, shape in synthetic_cases():
        if not keep(name):
            continue
        x, anchor = problem(layer, shape, n, "tanh")
        rows, auto = measure(layer, x, anchor, False, args.repeat, args.datafit)
        print_table(name, rows, auto, n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
