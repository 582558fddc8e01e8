"""Time per sample of the default inversion against the batch size, on CPU.

A user inverting a data set gets ``batch_size="auto"``.  This benchmark
times the defaults of :class:`~flipad_sklearn.FinalLayerInverter` (every
other parameter at its default) on a fixed set of samples cut into batches
of each size, on the layers of ``bench_inversion.py`` (same problems, same
weight scaling) and on a small layer like the zoo's
(``ConvTranspose2d(32, 1, 4, 2, 1)`` on 16x16 activations), and prints the
milliseconds per sample beside the batch that ``"auto"`` picks (with its
state estimate, :func:`~flipad_sklearn.lasso.solvers.bytes_per_sample`).
Past a few hundred MB of state per batch the iterations' arrays leave the
CPU's caches and every sample costs more; ``CPU_BATCH_BYTES`` caps the
automatic batch there.  Times are the best of ``--repeat`` runs after one
warm-up transform, the batch sizes alternating within each repeat.

Run: ``python -m benchmarks.bench_batch_size [--only dcgan|lsgan|sd|small] [--threads 2]``
(about 5 minutes on 2 cores).
"""

import argparse
import time
import warnings

import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.lasso.solvers import CPU_BATCH_BYTES, bytes_per_sample

from ._harness import problem, scaled_layer
from ._results import add_result_args, results_dir, tee_result


def layers():
    """(name, layer, activation shape, activation, alpha, samples, batch sizes)."""
    torch.manual_seed(0)
    yield ("DCGAN ConvTranspose2d(64, 3, 4, 2, 1), 64x64 output",
           nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1), (64, 32, 32), "tanh", 5e-4,
           128, (8, 16, 32, 64, 128))
    torch.manual_seed(0)
    shape = (64, 64, 64)
    yield ("LSGAN Conv2d(64, 3, 3, 1, 1) on 64x64", scaled_layer(
        nn.Conv2d(64, 3, 3, 1, 1), 0.025, shape), shape, "tanh", 5e-4, 32, (4, 8, 16, 32))
    torch.manual_seed(0)
    shape = (128, 128, 128)
    yield ("SD conv_out Conv2d(128, 3, 3, 1, 1) at 128x128, identity", scaled_layer(
        nn.Conv2d(128, 3, 3, 1, 1), 0.01, shape), shape, "identity", 1e-5, 8, (1, 2, 4, 8))
    torch.manual_seed(0)
    yield ("small ConvTranspose2d(32, 1, 4, 2, 1), 32x32 output (the zoo's shape)",
           nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), (32, 16, 16), "tanh", 5e-4,
           256, (8, 32, 64, 128, 256))


def times_per_sample(layer, x, anchor, activation, alpha, batch_sizes, repeat):
    """Best ms per sample for each batch size; the sizes alternate within each
    repeat, so that a slow spell of the machine biases none of them."""
    invs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in batch_sizes:
            invs[b] = FinalLayerInverter(layer=layer, activation=activation, alpha=alpha,
                                         anchor=anchor, batch_size=b).fit(x)
            invs[b].transform(x[:1])
        best = dict.fromkeys(batch_sizes, float("inf"))
        for _ in range(repeat):
            for b, inv in invs.items():
                t0 = time.perf_counter()
                inv.transform(x)
                best[b] = min(best[b], time.perf_counter() - t0)
    return {b: t / len(x) * 1e3 for b, t in best.items()}, invs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("dcgan", "lsgan", "sd", "small"), default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("bench_batch_size" + (f"_{args.only}" if args.only else "") + ".md",
                      _run, args, results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    torch.set_num_threads(args.threads)
    print(f"{args.threads} torch threads; CPU_BATCH_BYTES = {CPU_BATCH_BYTES / 2**20:.0f} MiB")
    for (title, layer, shape, act, alpha, n, sizes), key in zip(
            layers(), ("dcgan", "lsgan", "sd", "small")):
        if args.only not in (None, key):
            continue
        x, anchor = problem(layer, shape, n, act)
        ms, invs = times_per_sample(layer, x, anchor, act, alpha, ("auto",) + sizes,
                                    args.repeat)
        inv = invs["auto"]
        per = bytes_per_sample(inv.operator_)
        print(f"\n## {title}\n\n{n} samples, solver {inv.solver_}, state estimate "
              f"{per / 2**20:.1f} MiB per sample; batch_size='auto' -> {inv.batch_size_}\n")
        print("| batch size | state per batch (MiB) | ms / sample | against auto |")
        print("|---|---|---|---|")
        for b in sizes:
            print(f"| {b} | {b * per / 2**20:.0f} | {ms[b]:.1f} | {ms[b] / ms['auto']:.2f}x |")
        print(f"| auto ({inv.batch_size_}) | {min(inv.batch_size_, n) * per / 2**20:.0f} "
              f"| {ms['auto']:.1f} | 1.00x |")


if __name__ == "__main__":
    main()
