"""Held-out against fresh scores of G on the published face DCGAN (issue 32, item 1).

G is the face DCGAN of ``gan-face-generate`` (see ``bench_face_dcgan.py``).
:func:`~flipad_sklearn.make_flipad` at its defaults is fitted one-class on
``--n-own`` samples of G (its ``ConformalPipeline`` holds the threshold's
samples out before the first step) and scores ``--n-fresh`` fresh samples
of G.  For the default detector (one-class SVM guard) and Deep SAD alone
(``one_class=None``): quantiles of the held-out scores (the threshold's) and
of the fresh scores, their two-sample KS p-value, the share of fresh samples
rejected at fnr 0.005, and for the guard the quantiles of its two
standardised parts on the fresh samples: where the guarded score's lower tail
comes from.  Writes ``--out`` with the commit, threads, device and date.

Run: ``python -m benchmarks.bench_face_calibration`` (one CPU thread; the
result file records the run's time, mostly the inversions).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from scipy.stats import ks_2samp

from flipad_sklearn import find_final_layer, make_flipad, mean_activation

from ._results import add_result_args, results_dir, write_result
from .bench_face_dcgan import LATENT, load_face_dcgan, sample


HERE = os.path.dirname(os.path.abspath(__file__))


def q(a):
    return " / ".join(f"{x:.3g}" for x in (a.min(), np.quantile(a, 0.01),
                                           np.quantile(a, 0.05), np.median(a)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--n-fresh", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="face_calibration.md",
                   help="the result file's name in --results-dir (or a path)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t0 = time.time()
    G = load_face_dcgan()
    final = find_final_layer(G, torch.zeros((2,) + LATENT))
    anchor = mean_activation(G, 1000, LATENT, random_state=3, device="cpu")
    inv = make_flipad(final.layer, final.activation, anchor, device="cpu")[:1]
    X_own = sample(G, args.n_own, seed=4)
    A_own = inv.fit(X_own).transform(X_own)
    A_fresh = inv.transform(sample(G, args.n_fresh, seed=6))
    rows = []
    for name, kw in (("default (guard)", {}), ("`one_class=None`", {"one_class": None})):
        rest = make_flipad(final.layer, final.activation, anchor, fnr=0.005, random_state=0,
                           device="cpu", detector_params=kw)[1:].fit(A_own)
        det = rest[-1]
        v, s = det.validation_scores_, rest.score_samples(A_fresh)
        parts = ""
        if det.score_scale_ is not None:
            deep, guard = det._standard_scores(rest[:-1].transform(A_fresh))
            parts = f"Deep SAD part {q(deep)}; guard part {q(guard)}"
        rows.append(f"| {name} ({det.combine_}) | {q(v)} | {q(s)} | "
                    f"{ks_2samp(v, s).pvalue:.3f} | {np.mean(rest.predict(A_fresh) == -1):.3f} "
                    f"| {parts} |")
        print(rows[-1], flush=True)
    lines = [
        f"<!-- python -m benchmarks.bench_face_calibration --n-own {args.n_own} --n-fresh "
        f"{args.n_fresh} --threads {args.threads}; device cpu, torch threads "
        f"{args.threads}; "
        f"{time.time() - t0:.0f} s -->",
        "# Face DCGAN: held-out (threshold) against fresh scores of G, make_flipad one-class",
        "",
        f"{args.n_own} samples of G to fit, {args.n_fresh} fresh samples of G. Quantiles: "
        "min / 1 % / 5 % / median (higher = more like G).",
        "",
        "| detector | held-out scores | fresh scores | KS p-value | fresh rejected at fnr "
        "0.005 | fresh, standardised parts of the guarded score |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    print(f"written: {write_result(args.out, text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
