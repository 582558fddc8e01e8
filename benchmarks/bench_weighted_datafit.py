"""A lead for issue 13's robustness item: a Jacobian-weighted data term.

FLIPAD inverts ``x = tanh(W z + b)`` through ``y' = atanh(x)``, whose slope
``1 / (1 - x^2)`` amplifies small pixel changes: on the zoo's DCGAN seed 0,
JPEG 90 moves the pixels by 3% (median relative norm) and ``y'`` by 64%.
A Gauss-Newton weight ``D = diag(1 - x^2)`` on the data term,
``1/2 ||D (y' - W z)||^2 + alpha ||z - anchor||_1`` (still a convex lasso,
with operator ``D W``), approximates ``1/2 ||x - tanh(W z + b)||^2`` near
the solution and damps those pixels.

This study runs the perturbation part of ``attribution.py`` (full sizes,
G = DCGAN seed 0 or ``--kind``'s seed 0, shadows protocol, JPEG q=90 and noise std=0.05, clean
trained and immunised) for three FLIPAD variants: the package's default,
the same recipe with its inverter replaced by plain FISTA (400 iterations,
float32) and by the weighted FISTA (same budget).  The weighted inverter
lives here (a study, not a package feature): per-sample weights wrap the
layer's operator.

Run: ``python benchmarks/bench_weighted_datafit.py [--kind lsgan] --out bench_out``
(8.5 minutes on 2 cores for DCGAN).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attribution as bench  # noqa: E402
import attribution_methods as M  # noqa: E402
from flipad_sklearn import FinalLayerInverter, GaussianNoise, JPEGCompression  # noqa: E402
from flipad_sklearn.lasso import fista  # noqa: E402

N_ITER = 400


class _Weighted:
    """``D W`` for a batch with per-sample diagonal weights ``D`` (B, M): every call
    must see the whole batch (tol=0, no dual extrapolation: no row is dropped)."""

    def __init__(self, op, D):
        self.op, self.D = op, D
        self.n_inputs, self.n_outputs = op.n_inputs, op.n_outputs

    def matvec(self, z):
        return self.D.to(z.dtype) * self.op.matvec(z)

    def rmatvec(self, r):
        return self.op.rmatvec(self.D.to(r.dtype) * r)


class FISTAInverter(FinalLayerInverter):
    """FinalLayerInverter whose transform runs FISTA for ``N_ITER`` iterations,
    with the data term weighted by ``1 - x^2`` when ``WEIGHTED``."""

    WEIGHTED = False

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        Y = torch.as_tensor(self._targets(X))
        D = (torch.as_tensor(1 - np.clip(X, -1 + 1e-6, 1 - 1e-6) ** 2) if self.WEIGHTED
             else torch.ones_like(Y))
        lower = torch.as_tensor(-self.anchor_, dtype=torch.float64) if self.positive else None
        out = []
        for s in range(0, len(X), 100):
            Dw = D[s:s + 100]
            d, *_ = fista(_Weighted(self.operator_, Dw), Dw * Y[s:s + 100], self.alpha,
                          self.lipschitz_, lower=lower, tol=0.0, max_iter=N_ITER,
                          progress_tol=None, dtype=torch.float32, n_extrapolation=0)
            out.append(d.numpy())
        return np.concatenate(out) + self.anchor_


class WeightedInverter(FISTAInverter):
    WEIGHTED = True


def target_sensitivity(kind="dcgan", n=200, log=print):
    """How much a perturbation moves the pixels, the target ``atanh(x)`` and
    the weighted target, on ``n`` samples of the zoo's ``kind`` seed 0."""
    from flipad_sklearn.generators import load_generator
    from train_zoo import DEFAULT_CACHE, FULL

    name = f"{kind}-seed0-32px-e{FULL['epochs'][kind]}-n{FULL['n_train']}.pt"
    G = load_generator(os.path.join(DEFAULT_CACHE, name))
    x = G.sample(n, random_state=0).reshape(n, -1).astype(np.float64)

    def target(v):
        return np.arctanh(np.clip(v, -1 + 1e-6, 1 - 1e-6))

    sat = np.abs(x) > 0.99
    log(f"{kind} seed 0, {n} samples: {sat.mean():.1%} of the pixels have |x| > 0.99")
    for name, pert in (("JPEG q=90", JPEGCompression(quality=90)),
                       ("noise std=0.05", GaussianNoise(std=0.05, random_state=0))):
        xp = np.asarray(pert.fit_transform(x.reshape((n,) + tuple(G.output_shape))),
                        dtype=np.float64).reshape(n, -1)
        dy = target(xp) - target(x)
        w = 1 - x ** 2

        def rel(a, b):
            return np.median(np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))

        log(f"  {name}: pixels {rel(xp - x, x):.1%}, target {rel(dy, target(x)):.1%} "
            f"({(dy[sat] ** 2).sum() / (dy ** 2).sum():.0%} of its change on those pixels), "
            f"weighted target {rel(w * dy, w * target(x)):.1%}")


def _variant(cls):
    base = M.REGISTRY["FLIPAD"].factory

    def factory(ctx):
        pipe = base(ctx)
        inv = pipe[0]
        pipe.steps[0] = (pipe.steps[0][0], cls(**inv.get_params()))
        return pipe
    return factory


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out")
    p.add_argument("--config", default="full", choices=("quick", "full"))
    p.add_argument("--kind", default="dcgan", help="G's kind (seed 0)")
    args = p.parse_args(argv)
    zoo = dict(bench.CONFIGS[args.config]["zoo"])
    zoo["kinds"] = (args.kind,) + tuple(k for k in zoo["kinds"] if k != args.kind)
    bench.CONFIGS[args.config] = dict(bench.CONFIGS[args.config], zoo=zoo)
    torch.set_num_threads(2)
    for name, cls in (("FLIPAD FISTA400", FISTAInverter),
                      ("FLIPAD weighted FISTA400", WeightedInverter)):
        M.REGISTRY[name] = M.Method(name, _variant(cls), "features", True)
    bench.PERTURBATION_METHODS = ("FLIPAD", "FLIPAD FISTA400", "FLIPAD weighted FISTA400")
    bench._perturbations = lambda: {
        "noise": [("std=0.05", GaussianNoise(std=0.05, random_state=0))],
        "jpeg": [("q=90", JPEGCompression(quality=90))]}
    target_sensitivity(args.kind)
    os.makedirs(args.out, exist_ok=True)
    bench.run_perturbations(args.config, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
