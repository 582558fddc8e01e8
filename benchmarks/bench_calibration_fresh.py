"""Do the threshold's scores match fresh scores of G? (issue 32, item 1)

The design card's use through the public API: the demo's small MNIST DCGAN
``G`` (final ``ConvTranspose2d(16, 1, 4, 2, 1)``, tanh) in a ``Pipeline`` of
``FinalLayerInverter`` (mean activation over 2000 samples as anchor) and
``FLIPADDetector(fnr=0.005, random_state=0)``, fitted on 700 samples of G
(y = 1) and 500 of its shadow, another seed of its recipe (y = -1); tested
on 300 fresh samples of G and 300 of the demo's unseen seed.  For the default
detector (one-class SVM guard, ``combine="auto"``) and Deep SAD alone
(``one_class=None``): the held-out scores of G that set the threshold and
the fresh scores of G (min / 5 % or 1 % / median), their two-sample KS
p-value, the share of the unseen seed accepted, ROC AUC and accuracy at
fnr 0.005.

Run: ``python -m benchmarks.bench_calibration_fresh`` (one CPU thread; writes
``results/calibration_fresh.md`` with the run's time).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from flipad_sklearn import FinalLayerInverter, FLIPADDetector
from flipad_sklearn.generators import load_demo_generator

from ._results import add_result_args, results_dir, write_result


HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="calibration_fresh.md",
                   help="the result file's name in --results-dir (or a path)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t0 = time.time()
    G, other, unseen = (load_demo_generator(n) for n in ("G", "shadow", "unseen"))
    X = np.concatenate([G.sample(700, random_state=10), other.sample(500, random_state=11)])
    y = np.r_[np.ones(700), -np.ones(500)]
    h, _ = G.sample_activations(2000, random_state=12)
    anchor = h.mean(axis=0).reshape(16, 14, 14)
    X_fresh, X_unseen = G.sample(300, random_state=13), unseen.sample(300, random_state=14)
    inv = FinalLayerInverter(layer=G.final_layer, activation="tanh", alpha=5e-4,
                             anchor=anchor, device="cpu").fit(X)
    # invert once; the Pipeline's detector step is then fitted on the same features
    F, F_fresh, F_unseen = inv.transform(X), inv.transform(X_fresh), inv.transform(X_unseen)
    rows = []
    for name, kw in (("default (`one_class=\"ocsvm\"` guard, `combine=\"auto\"`)", {}),
                     ("`one_class=None` (Deep SAD alone)", {"one_class": None})):
        pipe = Pipeline([("inv", inv), ("det", FLIPADDetector(fnr=0.005, random_state=0,
                                                              device="cpu", **kw))])
        pipe[-1].fit(F, y)
        det = pipe[-1]
        v = det.validation_scores_
        s_g, s_u = det.score_samples(F_fresh), det.score_samples(F_unseen)
        acc = 0.5 * (np.mean(det.predict(F_fresh) == 1) + np.mean(det.predict(F_unseen) == -1))
        auc = roc_auc_score(np.r_[np.ones(300), np.zeros(300)], np.r_[s_g, s_u])
        rows.append(
            f"| {name} ({det.combine_}) | {v.min():.4g} / {np.quantile(v, 0.05):.4g} / "
            f"{np.median(v):.4g} | {s_g.min():.4g} / {np.quantile(s_g, 0.01):.4g} / "
            f"{np.median(s_g):.4g} | {ks_2samp(v, s_g).pvalue:.3f} | "
            f"{np.mean(det.predict(F_fresh) == -1):.3f} | "
            f"{np.mean(det.predict(F_unseen) == 1):.3f} | {auc:.4f} | {acc:.3f} |")
        print(rows[-1], flush=True)
    lines = [
        f"<!-- python -m benchmarks.bench_calibration_fresh --threads {args.threads}; "
        f"device cpu, torch threads {args.threads}; "
        f""
        f"{time.time() - t0:.0f} s -->",
        "# Held-out scores of G (the threshold's) against fresh scores of G",
        "",
        "Demo MNIST DCGAN G, 700 samples of G and 500 of its shadow to fit; 300 fresh "
        "samples of G and 300 of the unseen seed to test. Scores: higher = more like G.",
        "",
        "| detector | held-out scores of G: min / 5 % / median | fresh scores of G: "
        "min / 1 % / median | KS p-value | fresh G rejected | unseen seed accepted | AUC "
        "| accuracy at fnr 0.005 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    print(f"written: {write_result(args.out, text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
