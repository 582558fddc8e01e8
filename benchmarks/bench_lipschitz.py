"""The inverter's Lipschitz estimate: its value against the exact one, and its cost.

Every solver's step size rests on ``FinalLayerInverter.lipschitz_``, an
estimate of ``||W||_2^2`` for the final layer ``W``.  Too small and FISTA's
fixed step diverges; too large and every solve is slower than it needs to be.
This benchmark fits the inverter on the paper's final layers of
:mod:`benchmarks._harness` (DCGAN, LSGAN, Stable Diffusion's ``conv_out``) at
small spatial sizes, where ``W`` fits in memory as a dense matrix, and puts
``lipschitz_`` beside the exact largest squared singular value of that matrix,
with the time of ``fit`` (best of ``--repeat``; the estimate is most of it).

Run: ``python -m benchmarks.bench_lipschitz [--sides 4 8] [--repeat 3]`` (seconds;
writes ``benchmarks/results/bench_lipschitz.md``).
"""

import argparse

import numpy as np
import torch

from flipad_sklearn import FinalLayerInverter

from ._harness import best_time, paper_layer, problem
from ._results import add_result_args, results_dir, tee_result


def dense_matrix(layer, in_shape):
    """The layer's linear map (no bias) as a dense ``(n_out, n_in)`` matrix."""
    n_in = int(np.prod(in_shape))
    with torch.no_grad():
        basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in,) + in_shape)
        w = layer.weight.double()
        kw = dict(stride=layer.stride, padding=layer.padding)
        fn = (torch.nn.functional.conv_transpose2d
              if isinstance(layer, torch.nn.ConvTranspose2d) else torch.nn.functional.conv2d)
        out = fn(basis, w, **kw)
    return out.reshape(n_in, -1).T.numpy()


def measure(name, side, repeat):
    layer, in_shape, activation, _, _ = paper_layer(name, side)
    x, anchor = problem(layer, in_shape, 2, activation)

    def fit():
        return FinalLayerInverter(layer=layer, activation=activation, anchor=anchor).fit(x)

    seconds, inv = best_time(fit, repeat)
    W = dense_matrix(layer, in_shape)
    exact = float(np.linalg.norm(W, 2) ** 2)
    return (f"| {name} {type(layer).__name__}{tuple(layer.weight.shape)} | "
            f"{'x'.join(map(str, in_shape))} | {W.shape[0]:,} | {inv.lipschitz_:.6g} | "
            f"{exact:.6g} | {inv.lipschitz_ / exact:.4f} | {1e3 * seconds:.1f} |")


def run(args):
    torch.set_num_threads(args.threads)
    print(f"# The inverter's Lipschitz estimate against ||W||_2^2 ({args.threads} torch "
          f"thread(s), fit time best of {args.repeat})\n")
    print("| layer | activation | outputs | lipschitz_ | exact (dense SVD) | ratio | "
          "fit ms |")
    print("|---|---|---|---|---|---|---|")
    for side in args.sides:
        for name in ("dcgan", "lsgan", "sd"):
            print(measure(name, side, args.repeat), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sides", type=int, nargs="+", default=[4, 8],
                   help="spatial sizes of the activation (dense W must fit in memory)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    add_result_args(p)
    args = p.parse_args(argv)
    tee_result("bench_lipschitz.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
