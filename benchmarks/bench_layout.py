"""FISTA per iteration on CPU: plain (C, H, W) layout against the channels-last view.

``solve_batch`` runs FISTA on :class:`flipad_sklearn.operators.ChannelsLastOperator`
for convolutional final layers on CPU.  This prints, for a few final layers,
milliseconds per FISTA iteration (best of ``--repeat`` runs, 100 iterations,
no gap checks) on both layouts, measured in the same run.

Run: ``python -m benchmarks.bench_layout [--batch 4] [--repeat 3]``.
"""

import argparse
import time

import torch
from torch import nn

from flipad_sklearn.lasso import fista
from flipad_sklearn.operators import ChannelsLastOperator, LayerOperator

from ._results import add_result_args, results_dir, tee_result


LAYERS = [
    ("Conv2d(64, 3, 3, padding=1), 32x32", lambda: nn.Conv2d(64, 3, 3, padding=1), (64, 32, 32)),
    ("Conv2d(64, 3, 4, stride=2, padding=1), 64x64",
     lambda: nn.Conv2d(64, 3, 4, stride=2, padding=1), (64, 64, 64)),
    ("ConvTranspose2d(64, 3, 4, 2, 1) (DCGAN)", lambda: nn.ConvTranspose2d(64, 3, 4, 2, 1),
     (64, 32, 32)),
    ("ConvTranspose2d(64, 4, 4, 2, 1, groups=4)",
     lambda: nn.ConvTranspose2d(64, 4, 4, 2, 1, groups=4), (64, 32, 32)),
]


def per_iteration(op, y, L, repeat, n_iter=100):
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeat):
            t0 = time.perf_counter()
            fista(op, y, 1e-3, L, max_iter=n_iter, tol=0.0, check_every=10 * n_iter)
            best = min(best, time.perf_counter() - t0)
    return best / n_iter * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    add_result_args(parser)
    args = parser.parse_args(argv)
    return tee_result("bench_layout.md", _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    print(f"\n## FISTA ms / iteration, batch {args.batch}, {torch.get_num_threads()} threads\n")
    print("| final layer | plain layout | channels-last view | speed-up |")
    print("|---|---|---|---|")
    for name, make, shape in LAYERS:
        torch.manual_seed(0)
        op = LayerOperator.from_layer(make(), shape)
        view = ChannelsLastOperator(op)
        y = torch.randn(args.batch, op.n_outputs, dtype=torch.float64)
        L = op.lipschitz()
        plain = per_iteration(op, y, L, args.repeat)
        cl = per_iteration(view, view.to_native_outputs(y), L, args.repeat)
        print(f"| {name} | {plain:.2f} | {cl:.2f} | {plain / cl:.2f}x |")


if __name__ == "__main__":
    main()
