"""Tabular attribution benchmark with the authors' recipe: real synthesisers as others.

``G`` is a KL-WGAN on the red-wine table (``benchmarks/train_zoo.py
ensure_tabular_zoo``, seeds 0-3).  As in the FLIPAD paper's tabular
experiment, the other generators are deep synthesisers of the Synthetic Data
Vault (:class:`~flipad_sklearn.generators.SDVSynthesizer`, the ``sdv`` extra),
all fitted to the whole table with seed 0:

* training: samples of ``G`` (``y = 1``, drawn on demand: the owner can
  sample ``G``) and, as labelled others (``y = -1``), real rows and TVAE rows
  (protocol ``paper``); protocol ``shadows`` adds rows of two KL-WGANs of
  other seeds (the owner's shadows);
* test (balanced, fresh rows of ``G`` against each source): ``real`` (unseen
  real rows), ``seen-model`` (fresh TVAE rows), ``same-arch-unseen`` (the
  KL-WGAN of the seed no detector saw) and ``other-model`` (CTGAN and
  CopulaGAN, never seen);
* everything in ``G``'s standardised units (``G.standardize``).

Methods: FLIPAD with the package's tabular recipe
(:func:`flipad_sklearn.pipeline.make_flipad_tabular`: the inversion with
``positive=True``, the channels that differ most between ``G`` and the
labelled others, ``G``-standardisation, Deep SAD with the paper's MLP), the
same features with a OneClassSVM, and RAWPAD (Deep SAD with the same network
on the 11 standardised columns).

Outputs in ``out_dir``: ``tabular_pairs.csv`` (one row per protocol, method,
G, source), ``tabular_summary.csv`` and ``tabular_results.md`` (mean ± std
over the seeds of ``G``; each seed's value is the mean over the group's
sources).  ``--ablation`` runs the study behind the recipe's defaults on
``G`` = seed 0 (``tabular_ablation.csv`` / ``.md``).

Usage::

    python -m benchmarks.attribution_tabular --quick --out bench_out   # ~1 min
    python -m benchmarks.attribution_tabular --out bench_out           # full
    python -m benchmarks.attribution_tabular --ablation --out bench_out
    python -m benchmarks.attribution_tabular --alpha-check --out bench_out

Runtime on one CPU thread (2026-12-01): ``--quick`` 1.2 minutes (1-epoch
KL-WGANs, 2-epoch SDV synthesisers, fitted and cached on the first run);
full 4.6 minutes for ``G`` = seeds 0, 1, 2 (2 000 samples of ``G``, 500 real
+ 500 TVAE (+ 500 shadow) negatives, 300 test rows per source, Deep SAD with
the paper's MLP for 20 epochs), plus about 3.5 minutes once to fit the SDV
synthesisers (100 epochs) and 1.5 minutes for the KL-WGAN zoo; the ablation
8 minutes, ``--alpha-check`` 6 minutes.  Results: ``docs/user_guide/benchmark.rst`` and
``benchmarks/results/tabular_*`` (``tabular_results_alpha1e-4.md``: the first full run, at
``alpha = 1e-4``).
"""

import argparse
import csv
import os
import pickle
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from flipad_sklearn import make_rawpad, mean_activation
from flipad_sklearn.detection.conformal import conformal_threshold
from flipad_sklearn.datasets import load_wine_quality
from flipad_sklearn.pipeline import make_flipad_tabular

from .train_zoo import DEFAULT_CACHE, ensure_tabular_zoo
from ._results import write_result

FNRS = (0.005, 0.05)
PAPER_MLP = dict(hidden_sizes=(512, 1024, 512, 256, 128), rep_dim=32, lr=1e-3)

CONFIGS = {
    "quick": dict(seeds=(0, 1, 2), g_seeds=(0,), zoo_epochs=1, sdv_epochs=2, n_g=400,
                  n_real=150, n_tvae=150, n_shadow=150, n_test=100, n_anchor=1000,
                  validation_fraction=0.25, recipe=dict(max_iter=100),
                  deep_sad=dict(hidden_sizes=(64, 32), rep_dim=16, n_epochs=5,
                                batch_size=64)),
    "full": dict(seeds=(0, 1, 2, 3), g_seeds=(0, 1, 2), zoo_epochs=50, sdv_epochs=100,
                 n_g=2000, n_real=500, n_tvae=500, n_shadow=500, n_test=300,
                 n_anchor=5000, validation_fraction=0.2, recipe={},
                 deep_sad=dict(PAPER_MLP, n_epochs=20, batch_size=128)),
}
METHODS = ("FLIPAD", "FLIPAD+OCSVM", "RAWPAD")
GROUPS = ("real", "seen-model", "same-arch-unseen", "other-model")


# ------------------------------------------------------------------ data
def fitted_others(cache_dir, epochs, log=print):
    """TVAE, CTGAN and CopulaGAN fitted to the whole red-wine table (seed 0), cached."""
    from flipad_sklearn.generators import SDV_KINDS, SDVSynthesizer

    os.makedirs(cache_dir, exist_ok=True)
    out, X = {}, None
    for kind in SDV_KINDS:
        path = os.path.join(cache_dir, f"sdv-{kind}-wine-seed0-e{epochs}.pkl")
        if os.path.exists(path):
            with open(path, "rb") as fh:
                out[kind] = pickle.load(fh)
            continue
        if X is None:
            X = load_wine_quality().data
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[kind] = SDVSynthesizer(kind, epochs=epochs, random_state=0).fit(X)
        with open(path + ".tmp", "wb") as fh:
            pickle.dump(out[kind], fh)
        os.replace(path + ".tmp", path)
        log(f"fitted {kind} ({epochs} epochs) in {time.perf_counter() - t0:.1f}s -> {path}")
    return out


def prepare(cfg, cache_dir=DEFAULT_CACHE, log=print):
    """The zoo, the SDV synthesisers and the real rows (shuffled with seed 1)."""
    zoo = ensure_tabular_zoo(cache_dir, cfg["seeds"], epochs=cfg["zoo_epochs"], log=log)
    others = fitted_others(cache_dir, cfg["sdv_epochs"], log=log)
    wine = load_wine_quality().data
    real = wine[np.random.default_rng(1).permutation(len(wine))]
    return zoo, others, real


def setup_for(seed, cfg, zoo, others, real):
    """Training sets of both protocols and the test sources for ``G`` = ``seed``."""
    seeds = cfg["seeds"]
    G = zoo[seed]
    unseen = seeds[(seeds.index(seed) + 1) % len(seeds)]
    shadows = [s for s in seeds if s not in (seed, unseen)]
    std = G.standardize
    n_g, n_real, n_tvae, n_sh, n_test = (cfg[k] for k in (
        "n_g", "n_real", "n_tvae", "n_shadow", "n_test"))
    X_g = std(G.sample(n_g, random_state=1001))
    X_real = std(real[:n_real])
    X_tvae = std(others["tvae"].sample(n_tvae, random_state=1001))
    X_sh = std(np.concatenate([zoo[s].sample(n_sh // len(shadows), random_state=1001)
                               for s in shadows]))
    test = {"G": std(G.sample(n_test, random_state=1002)),
            "real": std(real[n_real:n_real + n_test]),
            "tvae": std(others["tvae"].sample(n_test, random_state=1002)),
            f"kl_wgan-s{unseen}": std(zoo[unseen].sample(n_test, random_state=1002)),
            "ctgan": std(others["ctgan"].sample(n_test, random_state=1002)),
            "copulagan": std(others["copulagan"].sample(n_test, random_state=1002))}
    groups = {"real": "real", "tvae": "seen-model", f"kl_wgan-s{unseen}": "same-arch-unseen",
              "ctgan": "other-model", "copulagan": "other-model"}
    neg = np.concatenate([X_real, X_tvae])
    protocols = {
        "paper": (np.concatenate([X_g, neg]), np.r_[np.ones(n_g), -np.ones(len(neg))]),
        "shadows": (np.concatenate([X_g, neg, X_sh]),
                    np.r_[np.ones(n_g), -np.ones(len(neg) + len(X_sh))]),
    }
    return G, protocols, test, groups


# ------------------------------------------------------------------ evaluation
def evaluate(det, s_g, s_o):
    """Accuracy at each fnr (balanced test set, conformal threshold) and ROC AUC."""
    d_val = -det.validation_scores_
    row = {}
    for fnr in FNRS:
        t = conformal_threshold(d_val, fnr)
        row[f"acc@{fnr}"] = 0.5 * (np.mean(-s_g <= t) + np.mean(-s_o > t))
    row["auc"] = roc_auc_score(np.r_[np.ones(len(s_g)), np.zeros(len(s_o))], np.r_[s_g, s_o])
    return row


def _deep_sad_params(cfg, overrides=None):
    return dict(cfg["deep_sad"], validation_fraction=cfg["validation_fraction"],
                **(overrides or {}))


def flipad_pipeline(G, cfg, anchor, seed, detector=None, recipe=None, deep_sad=None):
    """The package's tabular FLIPAD pipeline with the benchmark's sizes."""
    params = dict(cfg["recipe"], **(recipe or {}))
    pipe = make_flipad_tabular(
        G, anchor=anchor, detector=detector, fnr=FNRS[0], random_state=seed, device="cpu",
        detector_params=_deep_sad_params(cfg, deep_sad) if detector is None else None,
        **params)
    if detector is not None:
        pipe[-1].set_params(validation_fraction=cfg["validation_fraction"])
    return pipe


def run_g(seed, cfg, zoo, others, real, methods=METHODS, protocols=("paper", "shadows"),
          recipe=None, deep_sad=None, label=None):
    """Every method and protocol for one ``G``; one row per (protocol, method, source)."""
    G, sets, test, groups = setup_for(seed, cfg, zoo, others, real)
    anchor = mean_activation(G, cfg["n_anchor"], G.latent_shape, layer=G.final_layer,
                             random_state=7, device="cpu")
    pairs = []
    features = None
    for proto in protocols:
        X_tr, y_tr = sets[proto]
        for method in methods:
            if method.startswith("FLIPAD"):
                det = None if method == "FLIPAD" else "ocsvm"
                pipe = flipad_pipeline(G, cfg, anchor, seed, det, recipe, deep_sad)
                if features is None:
                    # one inversion per G of every row of both protocols and the tests
                    rows = np.concatenate([sets["shadows"][0]] + list(test.values()))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        Z = pipe[0].fit(rows).transform(rows)
                    n_tr = len(sets["shadows"][0])
                    features = {"train": Z[:n_tr]}
                    start = n_tr
                    for name, X in test.items():
                        features[name] = Z[start:start + len(X)]
                        start += len(X)
                head = pipe[1:]
                head.fit(features["train"][:len(X_tr)], y_tr)
                score = {name: head.score_samples(features[name]) for name in test}
                det_ = head[-1]
            else:
                pipe = make_rawpad(activation="identity", fnr=FNRS[0], random_state=seed,
                                   device="cpu",
                                   detector_params=_deep_sad_params(cfg, deep_sad))
                pipe.fit(X_tr, y_tr)
                score = {name: pipe.score_samples(X) for name, X in test.items()}
                det_ = pipe[-1]
            for name, group in groups.items():
                row = evaluate(det_, score["G"], score[name])
                pairs.append({"protocol": proto, "method": label or method,
                              "G": f"kl_wgan-s{seed}", "seed": seed, "source": name,
                              "group": group, "n_test": len(test[name]), **row})
    return pairs


# ------------------------------------------------------------------ outputs
def summarise(pairs, methods, groups=GROUPS):
    """Mean and std over the seeds of each (protocol, method, group)."""
    out = []
    for proto in ("paper", "shadows"):
        for method in methods:
            for group in groups:
                rows = [r for r in pairs if r["protocol"] == proto and r["method"] == method
                        and r["group"] == group]
                if not rows:
                    continue
                seeds = sorted({r["seed"] for r in rows})
                s = {"protocol": proto, "method": method, "group": group,
                     "n_seeds": len(seeds), "n_pairs": len(rows)}
                for m in [f"acc@{f}" for f in FNRS] + ["auc"]:
                    v = np.array([np.mean([r[m] for r in rows if r["seed"] == sd])
                                  for sd in seeds])
                    s[m + "_mean"], s[m + "_std"] = float(v.mean()), float(v.std())
                out.append(s)
    return out


def write_outputs(pairs, out_dir, title, methods, prefix="tabular_", groups=GROUPS,
                  metrics=("acc@0.005", "auc")):
    """``{prefix}pairs.csv``, ``{prefix}summary.csv`` and ``{prefix}results.md``."""
    os.makedirs(out_dir, exist_ok=True)
    keys = list(pairs[0])
    with open(os.path.join(out_dir, prefix + "pairs.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        for r in pairs:
            w.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in keys})
    summary = summarise(pairs, methods, groups)
    with open(os.path.join(out_dir, prefix + "summary.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    lines = [f"# {title}", "",
             f"Mean ± std over {summary[0]['n_seeds']} seed(s) of G (each seed: the mean "
             "over the group's test sources); balanced test sets; thresholds from "
             "held-out samples of G.", "",
             "| protocol | method | " + " | ".join(f"{g} {m}" for g in groups
                                                   for m in metrics) + " |",
             "|---|---|" + "---|" * (len(groups) * len(metrics))]
    for proto in ("paper", "shadows"):
        for method in methods:
            cells = []
            for g in groups:
                s = [r for r in summary if r["protocol"] == proto and r["method"] == method
                     and r["group"] == g]
                cells += [f"{s[0][m + '_mean']:.3f} ± {s[0][m + '_std']:.3f}" if s else "–"
                          for m in metrics]
            if any(c != "–" for c in cells):
                lines.append(f"| {proto} | {method} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    name = prefix + "results.md"
    write_result(name, md, results_dir=out_dir)
    return md


# ------------------------------------------------------------------ entry points
def run(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print):
    """The benchmark; writes ``tabular_pairs.csv``, ``tabular_summary.csv``, ``tabular_results.md``.

    Returns
    -------
    pairs : list of dict
    markdown : str
    """
    cfg = CONFIGS[config]
    t0 = time.perf_counter()
    zoo, others, real = prepare(cfg, cache_dir, log)
    pairs = []
    for seed in cfg["g_seeds"]:
        pairs += run_g(seed, cfg, zoo, others, real)
        log(f"G = kl_wgan-s{seed} done ({time.perf_counter() - t0:.1f}s)")
    title = (f"Tabular attribution (red wine, KL-WGAN; others TVAE / CTGAN / CopulaGAN; "
             f"{config}, {(time.perf_counter() - t0) / 60:.1f} min)")
    md = write_outputs(pairs, out_dir, title, METHODS)
    log(md)
    return pairs, md


ABLATION = dict(CONFIGS["full"], g_seeds=(0,), n_g=1000, n_real=300, n_tvae=300,
                n_shadow=300, n_test=300, deep_sad=dict(PAPER_MLP, n_epochs=8, batch_size=128))
# (name, FLIPAD recipe overrides, Deep SAD overrides, sizes); RAWPAD is rerun with the
# same Deep SAD and sizes whenever those change (a fair reference for each row)
ABLATION_VARIANTS = (
    ("recipe", {}, {}, {}),
    ("alpha=1e-4", {"alpha": 1e-4}, {}, {}),
    ("alpha=1e-2", {"alpha": 1e-2}, {}, {}),
    ("alpha=1e-1", {"alpha": 1e-1}, {}, {}),
    ("positive=False", {"positive": False}, {}, {}),
    ("all 300 channels", {"n_channels": None}, {}, {}),
    ("30 channels", {"n_channels": 30}, {}, {}),
    ("no G-standardisation", {"scale": False}, {}, {}),
    ("FISTA 1000 iterations", {"max_iter": 1000}, {}, {}),
    ("MLP (128, 64)", {}, {"hidden_sizes": (128, 64)}, {}),
    ("2x epochs", {}, {"n_epochs": 16}, {}),
    ("4x samples of G", {}, {}, {"n_g": 4000}),
    ("alpha=1e-4, all channels", {"alpha": 1e-4, "n_channels": None}, {}, {}),
    ("alpha=1e-4, all channels, 4x samples", {"alpha": 1e-4, "n_channels": None}, {},
     {"n_g": 4000}),
)


def ablate(out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print, variants=None):
    """FLIPAD variants against RAWPAD for ``G`` = seed 0, both protocols.

    Writes ``tabular_ablation.csv`` and ``tabular_ablation.md`` (mean over the
    test sources of each group; ``Δ`` is FLIPAD minus RAWPAD with the same
    detector settings and sizes).
    """
    t0 = time.perf_counter()
    zoo, others, real = prepare(ABLATION, cache_dir, log)
    os.makedirs(out_dir, exist_ok=True)
    rows, rawpad = [], {}
    for name, recipe, ds, sizes in (variants or ABLATION_VARIANTS):
        cfg = dict(ABLATION, **sizes)
        key = (repr(sorted(ds.items())), repr(sorted(sizes.items())))
        t1 = time.perf_counter()
        if key not in rawpad:
            rawpad[key] = run_g(0, cfg, zoo, others, real, methods=("RAWPAD",),
                                deep_sad=ds)
        pairs = run_g(0, cfg, zoo, others, real, methods=("FLIPAD",), recipe=recipe,
                      deep_sad=ds)
        for proto in ("paper", "shadows"):
            row = {"variant": name, "protocol": proto}
            for method, pp in (("FLIPAD", pairs), ("RAWPAD", rawpad[key])):
                for g in GROUPS:
                    for m in ("acc@0.005", "auc"):
                        row[f"{method} {g} {m}"] = float(np.mean(
                            [r[m] for r in pp if r["protocol"] == proto and r["group"] == g]))
            row["seconds"] = round(time.perf_counter() - t1, 1)
            rows.append(row)
        log(f"{name}: " + ", ".join(
            f"{r['protocol']} FLIPAD/RAWPAD acc " + " ".join(
                f"{r[f'FLIPAD {g} acc@0.005']:.3f}/{r[f'RAWPAD {g} acc@0.005']:.3f}"
                for g in GROUPS) for r in rows[-2:]) + f" ({time.perf_counter() - t0:.0f}s)")
        _write_ablation(rows, out_dir)
    return rows


def alpha_check(alphas=(1e-4, 1e-5, 1e-6), out_dir="bench_out", cache_dir=DEFAULT_CACHE,
                log=print):
    """FLIPAD at the full sizes for ``G`` = seed 0 with each ``alpha``, and RAWPAD.

    The ablation's trend (smaller ``alpha`` is better) checked at the full
    run's sizes; writes ``tabular_alpha.md``.
    """
    cfg = CONFIGS["full"]
    zoo, others, real = prepare(cfg, cache_dir, log)
    runs = [("RAWPAD", run_g(0, cfg, zoo, others, real, methods=("RAWPAD",)))]
    for a in alphas:
        runs.append((f"FLIPAD alpha={a:g}", run_g(0, cfg, zoo, others, real,
                                                  methods=("FLIPAD",), recipe={"alpha": a})))
        log(f"alpha={a:g} done")
    lines = ["# FLIPAD's alpha at the full sizes (G = kl_wgan-s0; acc@0.005 / AUC)", "",
             "| method | protocol | " + " | ".join(GROUPS) + " |",
             "|---|---|" + "---|" * len(GROUPS)]
    for name, pairs in runs:
        for proto in ("paper", "shadows"):
            cells = [f"{np.mean([r['acc@0.005'] for r in pairs if r['protocol'] == proto and r['group'] == g]):.3f} / "  # noqa: E501
                     f"{np.mean([r['auc'] for r in pairs if r['protocol'] == proto and r['group'] == g]):.3f}"  # noqa: E501
                     for g in GROUPS]
            lines.append(f"| {name} | {proto} | " + " | ".join(cells) + " |")
    os.makedirs(out_dir, exist_ok=True)
    write_result("tabular_alpha.md", "\n".join(lines), results_dir=out_dir)
    return runs


def _write_ablation(rows, out_dir):
    with open(os.path.join(out_dir, "tabular_ablation.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Tabular ablation (G = kl_wgan-s0; FLIPAD acc@0.005 / AUC, Δ vs RAWPAD)", "",
             "| variant | protocol | " + " | ".join(f"{g} acc (Δ) | {g} auc (Δ)"
                                                    for g in GROUPS) + " |",
             "|---|---|" + "---|" * (2 * len(GROUPS))]
    for r in rows:
        cells = []
        for g in GROUPS:
            for m in ("acc@0.005", "auc"):
                f, raw = r[f"FLIPAD {g} {m}"], r[f"RAWPAD {g} {m}"]
                cells.append(f"{f:.3f} ({f - raw:+.3f})")
        lines.append(f"| {r['variant']} | {r['protocol']} | " + " | ".join(cells) + " |")
    write_result("tabular_ablation.md", "\n".join(lines), results_dir=out_dir)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, about a minute")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ablation", action="store_true",
                   help="the study behind make_flipad_tabular's defaults (G = seed 0)")
    p.add_argument("--alpha-check", action="store_true",
                   help="FLIPAD's alpha at the full sizes for G = seed 0")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ablation:
        ablate(args.out, args.cache_dir)
        return
    if args.alpha_check:
        alpha_check(out_dir=args.out, cache_dir=args.cache_dir)
        return
    run("quick" if args.quick else "full", args.out, args.cache_dir)


if __name__ == "__main__":
    main()
