"""Does the ridge that defines the features cost attribution accuracy?

``python -m benchmarks.bench_ridge_accuracy`` (about a minute per seed on one
CPU core; writes ``benchmarks/results/bench_ridge_accuracy.md``): on the demo's
generators (:mod:`flipad_sklearn.demo`: ``G`` a DCGAN, its shadow, an unseen
DCGAN of another seed, an unseen LSGAN of another architecture, and real
MNIST), :func:`~flipad_sklearn.pipeline.make_flipad` at its defaults with the
features

* ``ridge="auto"`` (the default elastic net, ``1e-3 * lipschitz_``), stopped
  on its certified feature error (``feature_tol=5e-4``);
* ``ridge=0``: the paper's plain lasso, stopped as the defaults did before the
  ridge (relative gap ``tol=1e-6`` or ``progress_tol=2e-7``).

Everything else (training set, detector, seeds) is the same.  Reported per
source: accuracy at the conformal threshold at fnr 0.005 (G: share accepted;
the others: share rejected) and the ROC AUC of G against it, per seed and the
mean.  ``--quick``: one seed, fewer samples.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from ._results import add_result_args, results_dir, write_result
from .bench_pyod import FNR, NAMES, SOURCES, _data

#: the inverter's settings compared (``inverter_params`` of make_flipad)
VARIANTS = {
    "ridge auto, feature_tol 5e-4 (default)": None,
    "ridge 0, tol 1e-6 / progress_tol 2e-7 (before)": dict(
        ridge=0.0, feature_tol=None, tol=1e-6, progress_tol=2e-7),
}


def run_seed(seed, n_own=400, n_neg=150, n_test=200, epochs=40, log=print):
    """Rows ``{variant, seed, acc_<source>, auc_<source>, inv_s}`` for one seed."""
    from flipad_sklearn import mean_activation
    from flipad_sklearn.pipeline import make_flipad

    G, X_train, y_train, tests = _data(seed, n_own, n_neg, n_test)
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=seed)
    X_test = np.concatenate([tests[s] for s in SOURCES])
    source = np.repeat(np.array(SOURCES), [len(tests[s]) for s in SOURCES])
    rows = []
    for name, params in VARIANTS.items():
        pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=FNR,
                           random_state=seed, device="cpu", inverter_params=params,
                           detector_params=dict(n_epochs=epochs, validation_fraction=0.5))
        inv, tail = pipe[:1], pipe[1:]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            inv.fit(X_train, y_train)
            Z_train, Z_test = inv.transform(X_train), inv.transform(X_test)
        inv_s = time.perf_counter() - t0
        tail.fit(Z_train, y_train)
        scores = tail.decision_function(Z_test)
        accepted = scores >= 0
        row = {"variant": name, "seed": seed, "inv_s": inv_s,
               "n_val": tail[-1].validation_scores_.size}
        for s in SOURCES:
            mask = source == s
            row[f"acc_{s}"] = float(np.mean(accepted[mask] if s == "G" else ~accepted[mask]))
            if s != "G":
                both = mask | (source == "G")
                row[f"auc_{s}"] = float(roc_auc_score(source[both] == "G", scores[both]))
        row["auc_all"] = float(roc_auc_score(source == "G", scores))
        rows.append(row)
        log(f"seed {seed} {name}: inversion {inv_s:.1f} s, AUC all {row['auc_all']:.3f}")
    return rows


def markdown(rows, config):
    cols = ([f"acc_{s}" for s in SOURCES] + [f"auc_{s}" for s in SOURCES if s != "G"]
            + ["auc_all"])
    head = ([f"acc {NAMES[s]}" for s in SOURCES]
            + [f"AUC vs {NAMES[s]}" for s in SOURCES if s != "G"] + ["AUC vs all"])
    lines = [
        "# Attribution accuracy with and without the features' ridge", "",
        f"`python -m benchmarks.bench_ridge_accuracy` ({config}). Demo generators "
        "(`flipad_sklearn.demo`): make_flipad at its defaults, trained on G's samples "
        "against real digits and G's shadow, threshold at fnr "
        f"{FNR} on held-out samples of G (`n_val`); only the inverter's problem and stop "
        "differ. acc: share of G accepted, share of each other source rejected. AUC: G "
        "against the source. inversion: seconds to invert the training and test images.",
        "",
        "| features | seed | n_val | " + " | ".join(head) + " | inversion (s) |",
        "|---|---|---|" + "---|" * len(head) + "---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['n_val']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {r['inv_s']:.1f} |")
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        lines += ["", f"Mean over seeds {seeds}:", "",
                  "| features | " + " | ".join(head) + " |",
                  "|---|" + "---|" * len(head)]
        for name in dict.fromkeys(r["variant"] for r in rows):
            sub = [r for r in rows if r["variant"] == name]
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
    name = "bench_ridge_accuracy" + ("_quick" if args.quick else "") + ".md"
    print(f"written: {write_result(name, text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
