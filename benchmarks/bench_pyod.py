"""PyOD's detectors inside FLIPAD's recipe against the default detector (issue 30).

``python -m benchmarks.bench_pyod`` (needs the ``pyod`` extra; about 2-3
minutes on one CPU core): on the demo's generators
(:mod:`flipad_sklearn.demo`: ``G`` a DCGAN, its shadow, an unseen DCGAN of
another seed and an unseen LSGAN of another architecture, and real MNIST),
:func:`~flipad_sklearn.pipeline.make_flipad` with

* ``detector=None``: the package's default (Deep SAD with its one-class guard,
  trained against the labelled real digits and shadow samples);
* ``detector=IForest(random_state=seed)`` and ``detector=KNN()`` from PyOD,
  wrapped in :class:`~flipad_sklearn.ConformalDetector` (scored with minus
  PyOD's ``decision_function``, fitted on G's samples only);
* ``detector="iforest"``: scikit-learn's IsolationForest, for reference.

All four get the conformal threshold at fnr 0.005 on held-out samples of G
(about 200).  Reported per source: accuracy at that threshold (G: share
accepted; the others: share rejected) and the ROC AUC of G against it, for
each seed and their mean.  The inversion is shared: it is per sample and
does not depend on the training set, so each detector's pipeline after the
inversion (``pipe[1:]``, a ConformalPipeline that holds the detector's
held-out samples out of the channel selection and scaling) is fitted on the
same activations.  ``--quick``: one seed, fewer samples.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from ._results import add_result_args, results_dir, write_result

FNR = 0.005
SOURCES = ("G", "real", "unseen", "other")
NAMES = {"G": "G", "real": "real MNIST", "unseen": "unseen DCGAN", "other": "unseen LSGAN"}


def _detectors(seed):
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN

    return {
        "FLIPAD default (Deep SAD + guard)": None,
        "PyOD IForest": IForest(random_state=seed),
        "PyOD KNN": KNN(),
        "scikit-learn IsolationForest": "iforest",
    }


def _data(seed, n_own, n_neg, n_test):
    from flipad_sklearn.datasets import load_mnist_subset
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator

    gens = {name: load_demo_generator(name) for name in ("G", "shadow", "unseen", "other")}
    G = gens["G"]
    X_real, _ = load_mnist_subset(return_X_y=True)
    X_real = X_real[np.random.default_rng(seed).permutation(len(X_real))]
    X_own = G.sample(n_own + n_test, random_state=seed + 100)
    X_train = np.concatenate([X_own[:n_own], X_real[:n_neg],
                              gens["shadow"].sample(n_neg, random_state=seed + 101)])
    y_train = np.r_[np.ones(n_own), -np.ones(2 * n_neg)].astype(int)
    tests = {"G": X_own[n_own:], "real": X_real[n_neg:n_neg + n_test],
             "unseen": gens["unseen"].sample(n_test, random_state=seed + 102),
             "other": gens["other"].sample(n_test, random_state=seed + 103)}
    return G, X_train, y_train, tests


def run_seed(seed, n_own=400, n_neg=150, n_test=200, epochs=40, log=print):
    """Rows ``{detector, seed, acc_<source>, auc_<source>, fit_s}`` for one seed."""
    from flipad_sklearn import mean_activation
    from flipad_sklearn.pipeline import make_flipad

    G, X_train, y_train, tests = _data(seed, n_own, n_neg, n_test)
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=seed)

    def recipe(det):
        # the demo's recipe (positive=True: the penultimate layer is a ReLU)
        return make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=FNR,
                           random_state=seed, device="cpu", detector=det,
                           detector_params=(dict(n_epochs=epochs, validation_fraction=0.5)
                                            if det is None else None))

    t0 = time.perf_counter()
    inv = recipe(None)[:1]                 # the inversion, with the 8-bit input contract
    X_test = np.concatenate([tests[s] for s in SOURCES])
    source = np.repeat(np.array(SOURCES), [len(tests[s]) for s in SOURCES])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        inv.fit(X_train, y_train)
        Z_train, Z_test = inv.transform(X_train), inv.transform(X_test)
    log(f"seed {seed}: inversion of {len(X_train) + len(X_test)} images "
        f"{time.perf_counter() - t0:.1f} s")
    rows = []
    for name, det in _detectors(seed).items():
        tail = recipe(det)[1:]             # selection, scaling, detector
        t1 = time.perf_counter()
        tail.fit(Z_train, y_train)
        fit_s = time.perf_counter() - t1
        scores = tail.decision_function(Z_test)
        accepted = scores >= 0
        row = {"detector": name, "seed": seed, "fit_s": fit_s,
               "n_val": tail[-1].validation_scores_.size}
        for s in SOURCES:
            mask = source == s
            row[f"acc_{s}"] = float(np.mean(accepted[mask] if s == "G" else ~accepted[mask]))
            if s != "G":
                both = mask | (source == "G")
                row[f"auc_{s}"] = float(roc_auc_score(source[both] == "G", scores[both]))
        row["auc_all"] = float(roc_auc_score(source == "G", scores))
        rows.append(row)
        log(f"  {name}: fit {fit_s:.1f} s, AUC all {row['auc_all']:.3f}")
    return rows


def markdown(rows, config):
    cols = ([f"acc_{s}" for s in SOURCES] + [f"auc_{s}" for s in SOURCES if s != "G"]
            + ["auc_all"])
    head = ([f"acc {NAMES[s]}" for s in SOURCES]
            + [f"AUC vs {NAMES[s]}" for s in SOURCES if s != "G"] + ["AUC vs all"])
    lines = [
        "# PyOD's detectors in FLIPAD's recipe (issue 30)", "",
        f"`python -m benchmarks.bench_pyod` ({config}). Demo generators "
        "(`flipad_sklearn.demo`): make_flipad with each detector, trained on G's "
        "samples against real digits and G's shadow (labelled -1; the PyOD and "
        "scikit-learn detectors are fitted on G's samples only), threshold at fnr "
        f"{FNR} on held-out samples of G (`n_val`). acc: share of G accepted, share of "
        "each other source rejected. AUC: G against the source.", "",
        "| detector | seed | n_val | " + " | ".join(head) + " | fit (s) |",
        "|---|---|---|" + "---|" * len(head) + "---|",
    ]
    for r in rows:
        lines.append(f"| {r['detector']} | {r['seed']} | {r['n_val']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {r['fit_s']:.1f} |")
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        lines += ["", f"Mean over seeds {seeds}:", "",
                  "| detector | " + " | ".join(head) + " |",
                  "|---|" + "---|" * len(head)]
        for name in dict.fromkeys(r["detector"] for r in rows):
            sub = [r for r in rows if r["detector"] == name]
            lines.append(f"| {name} | "
                         + " | ".join(f"{np.mean([r[c] for r in sub]):.3f}" for c in cols)
                         + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, fewer samples")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_result_args(p)
    args = p.parse_args(argv)
    try:
        import pyod  # noqa: F401
    except ImportError:
        p.exit(1, "bench_pyod needs PyOD: pip install 'flipad_sklearn[pyod]'\n")
    import torch

    torch.set_num_threads(1)
    size = (dict(n_own=400, n_neg=60, n_test=60, epochs=5) if args.quick
            else dict(n_own=400, n_neg=150, n_test=200, epochs=40))
    seeds = args.seeds[:1] if args.quick else args.seeds
    t0 = time.perf_counter()
    rows = [r for seed in seeds for r in run_seed(seed, **size)]
    config = (", ".join(f"{k}={v}" for k, v in size.items())
              + f", seeds {seeds}, {time.perf_counter() - t0:.0f} s in all, 1 torch thread")
    text = markdown(rows, config)
    print(text)
    print(f"written: {write_result('bench_pyod.md', text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
