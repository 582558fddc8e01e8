"""Robustness of FLIPAD's features with the output-weighted data term (issue 13).

FLIPAD inverts ``x = tanh(W z + b)`` through ``y' = atanh(x)``, whose slope
``1 / (1 - x^2)`` amplifies small pixel changes: on the zoo's DCGAN seed 0,
JPEG 90 moves the pixels by 3% (median relative norm) and ``y'`` by 64%.
``FinalLayerInverter(datafit="output")`` weighs the data term by tanh's
slope, ``1/2 ||D (y' - W z)||^2 + alpha ||z - anchor||_1`` with
``D = diag(1 - x^2)`` (still a convex lasso, with operator ``D W``): the
Gauss-Newton form of ``1/2 ||x - tanh(W z + b)||^2``, which damps those pixels.

This benchmark runs the perturbation part of ``attribution.py`` (full sizes,
G = ``--kind`` seed ``--seed``, shadows protocol, JPEG q=90 and noise
std=0.05, clean-trained and immunised) for FLIPAD variants that differ in
their inverter only, each at the package's defaults otherwise:

* ``FLIPAD``: the default recipe (``datafit="preactivation"``);
* ``FLIPAD output``: ``datafit="output"`` (``solver="auto"`` then takes
  split ADMM or FISTA: exact ADMM takes no weights; ``clip_eps="auto"``
  clips at 3e-2 with it), and ``FLIPAD output 1e-6`` with the clip of the
  plain data term;
* ``FLIPAD FISTA400``: plain FISTA for 400 iterations, no continuation, no
  early stop: the less converged features of the first study
  (``results/weighted_datafit.md``);
* ``FLIPAD clip 1e-2`` / ``3e-2``: the plain data term with the pixels
  clipped further from +-1 (``clip_eps``), which caps ``atanh``;
* ``FLIPAD output clip 1e-2`` / ``3e-2``: both (the weights ``1 - x^2`` then
  have a floor).

``--variants`` picks them (default: the first two; ``FLIPAD`` always runs).

Run: ``python -m benchmarks.bench_weighted_datafit [--kind lsgan] [--seed 1] --out bench_out``
(about 6 minutes on 2 cores per G for the two default variants).
"""

import argparse
import os

import numpy as np
import torch

from flipad_sklearn import GaussianNoise, JPEGCompression

from . import attribution as bench
from . import attribution_methods as M

#: inverter parameters of each variant (the rest: the recipe's defaults)
VARIANTS = {
    "FLIPAD": {},                            # the recipe: datafit="preactivation"
    "FLIPAD output": {"datafit": "output"},            # clip_eps="auto": 3e-2
    # the first package run (results/weighted_datafit_package.md, before
    # clip_eps="auto"): the weights of saturated pixels down to 2e-6
    "FLIPAD output 1e-6": {"datafit": "output", "clip_eps": 1e-6},
    "FLIPAD FISTA400": {"datafit": "preactivation", "solver": "fista", "max_iter": 400,
                        "tol": 0.0, "progress_tol": None, "continuation": False},
    # the plain data term with saturated pixels clipped further (atanh capped at
    # 2.65 and 2.09 instead of 7.25): a perturbation of a saturated pixel then
    # hardly moves the target either
    "FLIPAD clip 1e-2": {"datafit": "preactivation", "clip_eps": 1e-2},
    "FLIPAD clip 3e-2": {"datafit": "preactivation", "clip_eps": 3e-2},
    # both: the weights 1 - x^2 then have a floor (0.02 and 0.059) and the
    # targets a cap
    "FLIPAD output clip 1e-2": {"datafit": "output", "clip_eps": 1e-2},
    "FLIPAD output clip 3e-2": {"datafit": "output", "clip_eps": 3e-2},
}
DEFAULT_VARIANTS = ("FLIPAD", "FLIPAD output")


def target_sensitivity(kind="dcgan", seed=0, n=200, log=print):
    """How much a perturbation moves the pixels, the target ``atanh(x)`` and
    the weighted target, on ``n`` samples of the zoo's ``kind`` ``seed``."""
    from flipad_sklearn.generators import load_generator
    from .train_zoo import DEFAULT_CACHE, FULL

    name = f"{kind}-seed{seed}-32px-e{FULL['epochs'][kind]}-n{FULL['n_train']}.pt"
    G = load_generator(os.path.join(DEFAULT_CACHE, name))
    x = G.sample(n, random_state=0).reshape(n, -1).astype(np.float64)

    def target(v):
        return np.arctanh(np.clip(v, -1 + 1e-6, 1 - 1e-6))

    sat = np.abs(x) > 0.99
    log(f"{kind} seed {seed}, {n} samples: {sat.mean():.1%} of the pixels have |x| > 0.99")
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


def _variant(params):
    base = M.REGISTRY["FLIPAD"].factory

    def factory(ctx):
        pipe = base(ctx)
        pipe.steps[0][1].set_params(**params)
        return pipe
    return factory


def summarise(dirs, log=print):
    """Markdown: accuracy at fnr 0.005 (clean-trained -> immunised) and clean-trained
    AUC per G and variant, from the ``perturbations.csv`` of each run in ``dirs``
    (``.../wd_<kind>_s<seed>``), with the mean over the runs."""
    import csv

    runs = {}
    for d in dirs:
        with open(os.path.join(d, "perturbations.csv")) as fh:
            runs[os.path.basename(os.path.normpath(d)).removeprefix("wd_")] = list(
                csv.DictReader(fh))
    methods = list(dict.fromkeys(r["method"] for rows in runs.values() for r in rows))
    perts = [("none", "-"), ("noise", "std=0.05"), ("jpeg", "q=90")]
    header = "| G | perturbation | " + " | ".join(
        f"{m}: acc clean-trained -> immunised (AUC clean-trained)" for m in methods) + " |"
    lines = [header, "|" + "---|" * (2 + len(methods))]
    sums = {}
    for g, rows in runs.items():
        key = {(r["perturbation"], r["strength"], r["immunised"], r["method"]): r for r in rows}
        for pn, st in perts:
            cells = []
            for m in methods:
                if (pn, st, "False", m) not in key:
                    cells.append("-")             # not run on this G
                    continue
                c = key[pn, st, "False", m]
                acc_c, auc_c = float(c["acc@0.005"]), float(c["auc"])
                if pn == "none":
                    vals = (acc_c, acc_c, auc_c)
                    cells.append(f"{acc_c:.3f} ({auc_c:.3f})")
                else:
                    acc_i = float(key[pn, st, "True", m]["acc@0.005"])
                    vals = (acc_c, acc_i, auc_c)
                    cells.append(f"{acc_c:.3f} -> {acc_i:.3f} ({auc_c:.3f})")
                sums.setdefault((pn, m), []).append(vals)
            lines.append(f"| {g} | {pn} {st} | " + " | ".join(cells) + " |")
    for pn, st in perts:
        cells = []
        for m in methods:
            v = np.asarray(sums[pn, m])
            mean = v.mean(axis=0)
            if len(v) < len(runs):
                cells.append(f"(of {len(v)}) " + (f"{mean[0]:.3f} ({mean[2]:.3f})" if pn == "none"
                             else f"{mean[0]:.3f} -> {mean[1]:.3f} ({mean[2]:.3f})"))
                continue
            cells.append(f"{mean[0]:.3f} ({mean[2]:.3f})" if pn == "none" else
                         f"{mean[0]:.3f} -> {mean[1]:.3f} ({mean[2]:.3f})")
        lines.append(f"| **mean of {len(runs)}** | {pn} {st} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    log(text)
    return text


def run_image(variant, out_dir, g_seeds=(0,), log=print):
    """The image part of ``attribution.py`` (both protocols, every kind as G at
    ``g_seeds``) for FLIPAD and FLIPAD+OCSVM only, their shared inversion
    replaced by ``variant``'s: the clean-image check of a variant."""
    params = VARIANTS[variant]
    registry = dict(M.REGISTRY)
    for name in ("FLIPAD", "FLIPAD+OCSVM"):
        base = M.REGISTRY[name]

        def factory(ctx, base=base):
            pipe = base.factory(ctx)
            pipe.steps[0][1].set_params(**params)
            return pipe
        registry[name] = M.Method(name, factory, base.input, base.supervised)
    return bench.run("full", out_dir, g_seeds=g_seeds, figures=False, log=log,
                     methods=("FLIPAD", "FLIPAD+OCSVM"), registry=registry)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out")
    p.add_argument("--config", default="full", choices=("quick", "full"))
    p.add_argument("--kind", default="dcgan", help="G's kind")
    p.add_argument("--seed", type=int, default=0, help="G's seed (its kind's other seeds "
                   "become the shadows and the unseen generators)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS,
                   help="FLIPAD variants to run (FLIPAD, the default, always first)")
    p.add_argument("--summarise", nargs="+", metavar="DIR", default=None,
                   help="only print the table of earlier runs' output folders")
    p.add_argument("--image", metavar="VARIANT", choices=list(VARIANTS), default=None,
                   help="instead: the image part (clean images, both protocols, G = every "
                        "kind at --seed) for FLIPAD and FLIPAD+OCSVM with this variant's "
                        "inversion")
    args = p.parse_args(argv)
    if args.image:
        torch.set_num_threads(1)
        run_image(args.image, args.out, g_seeds=(args.seed,))
        return 0
    if args.summarise:
        summarise(args.summarise)
        return 0
    zoo = dict(bench.CONFIGS[args.config]["zoo"])
    zoo["kinds"] = (args.kind,) + tuple(k for k in zoo["kinds"] if k != args.kind)
    if args.seed not in zoo["seeds"]:
        p.error(f"--seed must be one of {zoo['seeds']}")
    zoo["seeds"] = (args.seed,) + tuple(s for s in zoo["seeds"] if s != args.seed)
    torch.set_num_threads(2)
    names = ["FLIPAD"] + [n for n in args.variants if n != "FLIPAD"]
    registry = dict(M.REGISTRY)
    for name in names[1:]:
        registry[name] = M.Method(name, _variant(VARIANTS[name]), "features", True)
    perturbations = {
        "noise": [("std=0.05", GaussianNoise(std=0.05, random_state=0))],
        "jpeg": [("q=90", JPEGCompression(quality=90))]}
    target_sensitivity(args.kind, args.seed)
    os.makedirs(args.out, exist_ok=True)
    bench.run_perturbations(args.config, args.out, methods=tuple(names),
                            perturbations=perturbations, registry=registry, zoo=zoo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
