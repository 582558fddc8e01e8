"""Does FLIPAD's fnr hold on fresh samples of G when the detector holds out its own?

The conformal threshold guarantees ``P(rejected) <= fnr`` for a fresh sample
of G only if the held-out samples are exchangeable with it.  In
:func:`~flipad_sklearn.pipeline.make_flipad`'s pipeline the detector holds
them out of its own training, but ``GeneratorStandardScaler`` (and
``ChannelSelector``) are fitted on all of G's samples first: the held-out
samples are not exchangeable with fresh ones.  This benchmark fits FLIPAD at
:func:`~flipad_sklearn.pipeline.make_flipad`'s defaults on ``n`` samples of a
zoo generator and 400 real images, then measures the share of 1 500 fresh
samples of G rejected at fnr = 0.005 and 0.05: as a plain ``Pipeline`` (the
steps fitted on the held-out samples too: before), as the
:class:`~flipad_sklearn.ConformalPipeline` that ``make_flipad`` returns (the
samples held out before the first step: now), and after
:func:`~flipad_sklearn.detection.conformal.calibrate` on 600 fresh samples of G.

Run: ``python -m benchmarks.bench_pipeline_calibration [--kind lsgan] [--n 100 1000]``
(needs the zoo of ``benchmarks/train_zoo.py``; one thread, ~1.5 min per n).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from flipad_sklearn import make_flipad, mean_activation
from flipad_sklearn.detection.conformal import calibrate
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import load_generator

from ._results import add_result_args, results_dir, tee_result
from .train_zoo import DEFAULT_CACHE


FNRS = (0.005, 0.05)


def rejected(det, feats):
    """Share of ``feats`` rejected at each fnr, from the detector's validation scores."""
    out = []
    for fnr in FNRS:
        det.set_params(fnr=fnr)
        det._set_threshold(det.validation_scores_)
        out.append(float(np.mean(det.decision_function(feats) < 0)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", default="lsgan")
    p.add_argument("--n", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--draws", type=int, default=3,
                   help="independent draws of G's training samples (and seeds) per n")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("pipeline_calibration.md", _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    G = load_generator(os.path.join(args.cache_dir, f"{args.kind}-seed0-32px-e5-n5000.pt"))
    X_real, _ = load_mnist_subset(return_X_y=True, pad_to=32)
    X_real = X_real[np.random.default_rng(1).permutation(len(X_real))][:400]
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=7,
                             device="cpu")
    X_fresh, X_cal = G.sample(1500, random_state=12), G.sample(600, random_state=13)
    print(f"# fresh samples of G ({args.kind} seed 0) rejected, make_flipad defaults, "
          "400 real negatives\n")
    print(f"mean ± std over {args.draws} draws of G's training samples (and of the "
          "detector's seed)\n")
    print("| samples of G | held out | threshold from | rejected at fnr 0.005 | "
          "at fnr 0.05 |")
    print("|---|---|---|---|---|")
    for n in args.n:
        t0 = time.perf_counter()
        rows = {}
        for k in range(args.draws):
            X = np.concatenate([G.sample(n, random_state=11 + 100 * k), X_real])
            y = np.r_[np.ones(n), -np.ones(len(X_real))].astype(int)
            for label, plain in (("plain `Pipeline` (before): held-out samples", True),
                                 ("`ConformalPipeline` (make_flipad now): held-out samples",
                                  False)):
                pipe = make_flipad(G.final_layer, "tanh", anchor, random_state=k,
                                   device="cpu")
                if plain:
                    pipe = Pipeline(pipe.steps)
                pipe.fit(X, y)
                feats = pipe[:-1].transform(X_fresh)
                det = pipe[-1]
                rows.setdefault((label, det.validation_scores_.size), []).append(
                    rejected(det, feats))
            calibrate(pipe, X_cal)
            rows.setdefault(("600 fresh samples (`calibrate`)", "-"), []).append(
                rejected(det, feats))
        for (label, n_val), r in rows.items():
            r = np.array(r)
            print(f"| {n} | {n_val} | {label} | {r[:, 0].mean():.3f} ± {r[:, 0].std():.3f} | "
                  f"{r[:, 1].mean():.3f} ± {r[:, 1].std():.3f} |")
        print(f"<!-- n={n}: {time.perf_counter() - t0:.0f} s -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
