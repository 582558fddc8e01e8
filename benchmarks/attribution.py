"""The attribution benchmark: FLIPAD against its baselines on the image zoo.

The paper's protocol at CPU scale.  For each own generator G = (kind, seed)
of the zoo (``benchmarks/train_zoo.py``):

* training data: G's samples (y = 1) and, as labelled negatives (y = -1),
  - protocol ``paper``: real MNIST images;
  - protocol ``shadows``: real images + samples of G's shadows, the same
    architecture trained with the other zoo seeds except one, which stays
    unseen (the recommended open-world recipe);
* the detectors hold out part of G's training samples
  (``validation_fraction``) and threshold at fnr = 0.005 and 0.05 with the
  conformal rule (:func:`flipad_sklearn.conformal.conformal_threshold`);
* real images come from the vendored MNIST subset (the full zoo is trained
  on all of it, so real test images are GAN training images, as in the paper);
* test: balanced sets, fresh samples of G against fresh samples of each
  other source: ``real`` (seen in training), ``same-arch-unseen`` (G's kind,
  the seed no detector ever saw) and ``other-arch`` (every other kind, with
  that unseen seed too: generators of one seed share G's initial weights;
  never seen in training).

Methods: FLIPAD (final-layer inversion -> max pooling -> G-standardisation ->
Deep SAD), FLIPAD features with IsolationForest and OneClassSVM, RAWPAD
(Deep SAD on pixels), DCTPAD (Deep SAD on log |DCT|), the fingerprint
correlation of Marra et al. and the latent-inversion distance.  The last
four without labelled negatives (fingerprint, latent, IF, OCSVM) are
unsupervised: their numbers are the same under both protocols (computed once).

Parts (``--part``, default ``all``):

* ``image``: the table above.  Output: ``pairs.csv`` (one row per protocol,
  method, G, test source: accuracy at each fnr and ROC AUC), ``summary.csv``
  and ``results.md`` (mean ± std over the 3 seeds 0, 1, 2 of G: each seed's
  value is the mean over its (G, source) pairs of the group, i.e. over the 4
  kinds of G and the other architectures; the seed also seeds every
  detector), and figures of the first G: ``mean_activation.png`` (the
  mean recovered activation per test source, as in the paper) and
  ``roc.png`` (needs matplotlib; skipped without it).
* ``tabular``: the same protocol on the red-wine table with the KL-WGAN zoo;
  other sources: real rows, a KL-WGAN of an unseen seed, and two generators
  of other families fitted to the real rows
  (:class:`~flipad_sklearn.generators.GaussianMixtureGenerator`,
  :class:`~flipad_sklearn.generators.GaussianCopulaGenerator`).
  ``tabular_pairs.csv``, ``tabular_summary.csv``, ``tabular_results.md``.
* ``perturbations``: blur, noise, JPEG, resized crop at two strengths each,
  with and without immunisation, for one G under the shadows protocol
  (FLIPAD, RAWPAD, DCTPAD, fingerprint).  ``perturbations.csv`` / ``.md``.
* ``ablation``: FLIPAD variants (alpha, inversion iterations, pooling,
  channel selection, positive=True, 0 / 1 / 2 shadows, the lasso objective or the pixel
  residual as an extra feature)
  for one G.  ``ablation.csv`` / ``.md``.

The code: ``attribution_protocol.py`` (data sources, training and test sets,
evaluation at each fnr, summaries, writers), ``attribution_methods.py``
(``REGISTRY``: each method's factory, input kind and supervision) and one
short function per part here.

Usage::

    python benchmarks/attribution.py --quick --out bench_out     # < 5 min, one thread
    python benchmarks/attribution.py --parallel --out bench_out  # full, two processes
    python benchmarks/attribution.py --part image --out bench_out

Runtime on one CPU thread.  ``--quick`` (G = DCGAN and LSGAN of seed 0,
seeds 1 and 2 as unseen / shadow; 1-epoch generators on 320 images, 120
training samples of G, 40 test samples per source, 60 FISTA iterations):
about 3 minutes for all four parts, the zoo included (image part ~45 s,
tabular ~15 s, perturbations ~80 s, ablation ~40 s).  It is a smoke test: its
generators have made five training steps, and with 30 held-out samples both
fnr thresholds are the largest held-out distance (fnr = 0.005 needs at least
199), so the two accuracy columns coincide.

The full run (2026-11-28, the project's 2-core CPU, one thread per process;
4 kinds x 4 seeds in the zoo, G = seeds 0, 1, 2 of each kind: 12 G, 1000
samples of G of which 200 held out, 400 real + 400 shadow negatives, 200 test
samples per source, 300 FISTA iterations): ``image`` 52.4 minutes (about
160 s of inversion and 100 s of detectors per G), ``tabular`` 8 minutes,
``perturbations`` 16.5 minutes, ``ablation`` 12 minutes; the zoo takes about
35 minutes once (cached).  ``--part all --parallel`` runs the image part
beside the three others (two processes): about 53 minutes in all.  The
results are in ``docs/user_guide/benchmark.rst``.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attribution_methods as M  # noqa: E402
import attribution_protocol as P  # noqa: E402
from attribution_protocol import FNRS, METRICS  # noqa: E402
from train_zoo import DEFAULT_CACHE, FULL, QUICK  # noqa: E402

from flipad_sklearn import (  # noqa: E402
    LatentInversionDistance,
    ThresholdWarning,
    make_flipad,
    make_rawpad,
    mean_activation,
)

# the evaluation the tabular part (below) calls by these names
_evaluate = P.evaluate

CONFIGS = {
    "quick": dict(
        zoo=dict(QUICK, kinds=("dcgan", "lsgan")), g_seeds=(0,),
        n_g=120, n_real=80, n_shadow=80, n_test=40, validation_fraction=0.25,
        alpha=5e-4, max_iter=60, tol=1e-5, kernel_size=2, n_anchor=300,
        deep_sad=dict(hidden_sizes=(64, 32), rep_dim=16, n_epochs=10, batch_size=40),
        latent_steps=40, latent_lr=0.05,
    ),
    "full": dict(
        zoo=FULL, g_seeds=(0, 1, 2),
        n_g=1000, n_real=400, n_shadow=400, n_test=200, validation_fraction=0.2,
        alpha=5e-4, max_iter=300, tol=1e-5, kernel_size=2, n_anchor=2000,
        deep_sad=dict(hidden_sizes=(128, 64), rep_dim=32, n_epochs=30, batch_size=128),
        latent_steps=100, latent_lr=0.05,
    ),
}

METHODS = tuple(M.REGISTRY)
# unsupervised: y = -1 samples are not used, the protocols coincide
UNSUPERVISED = set(M.UNSUPERVISED)
GROUPS = ("real", "same-arch-unseen", "other-arch")
SIZES = ("n_g", "n_real", "n_shadow", "n_test")


def _config(config, *overrides, kinds=None, seeds=None, g_seeds=None):
    """``CONFIGS[config]`` updated with each dict of ``overrides[config]`` and
    with the zoo's kinds / seeds and the seeds of G given on the command line."""
    cfg = dict(CONFIGS[config])
    for o in overrides:
        cfg.update(o[config])
    cfg["zoo"] = dict(cfg["zoo"])
    if kinds is not None:
        cfg["zoo"]["kinds"] = tuple(kinds)
    if seeds is not None:
        cfg["zoo"]["seeds"] = tuple(seeds)
    if g_seeds is not None:
        cfg["g_seeds"] = tuple(g_seeds)
    if len(cfg["zoo"]["seeds"]) < 2:
        raise ValueError("At least 2 seeds per kind are needed (G and an unseen one).")
    return cfg


def _setup(cfg, zoo, real, kind, seed):
    z = cfg["zoo"]
    return P.image_setup(zoo, z["kinds"], z["seeds"], kind, seed, real,
                         n_anchor=cfg["n_anchor"], **{k: cfg[k] for k in SIZES})


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# --------------------------------------------------------------------------- image
def run(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, kinds=None, seeds=None,
        g_seeds=None, figures=True, log=print):
    """Run the benchmark; write ``pairs.csv``, ``summary.csv``, ``results.md`` to ``out_dir``.

    Returns
    -------
    pairs : list of dict
        One row per (protocol, method, G, test source).
    markdown : str
        The summary table.
    """
    cfg = _config(config, kinds=kinds, seeds=seeds, g_seeds=g_seeds)
    kinds, seeds = cfg["zoo"]["kinds"], cfg["zoo"]["seeds"]
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    log(f"zoo: {len(zoo)} generators ({time.perf_counter() - t_start:.1f}s)")
    real = P.real_pool(cfg["zoo"]["image_size"])
    g_seeds = [s for s in (cfg["g_seeds"] or seeds) if s in seeds] or list(seeds[:1])
    pairs, figure_data = [], None      # scores and activations of the first G, for the figures
    for kind in kinds:
        for seed in g_seeds:
            rows, data = _image_pairs(cfg, zoo, real, kind, seed, figure_data is None, log)
            pairs += rows
            figure_data = figure_data or data
    markdown = write_outputs(pairs, out_dir, config, time.perf_counter() - t_start)
    if figures:
        write_figures(figure_data, out_dir)
    log(markdown)
    return pairs, markdown


def _image_pairs(cfg, zoo, real, kind, seed, keep_figure, log):
    """Every method under both protocols for G = (kind, seed): one row per
    (protocol, method, test source)."""
    t_g = time.perf_counter()
    s = _setup(cfg, zoo, real, kind, seed)
    if not s.X_shadows:
        log(f"  no shadow for {s.name}: {len(cfg['zoo']['seeds'])} seeds leave none")
    ctx = M.Context(s.G, s.anchor, cfg, random_state=seed)  # G's seed seeds the detectors
    protocols = s.protocols()
    # FLIPAD's inversion once per G, for all images it will see (the paper
    # protocol's training rows are the first of the shadows protocol's)
    Z_pool, *Z_list = P.invert_all(M.inverter(ctx), [s.training_set()[0]] + list(s.test.values()))
    Z_test = dict(zip(s.test, Z_list))
    t_inv = time.perf_counter() - t_g
    figure = None
    if keep_figure:
        shape = s.anchor.shape
        figure = {"G": s.name, "scores": {}, "groups": dict(s.groups), "mean_activation": {
            name: Z.reshape(len(Z), *shape).mean(axis=(0, 1)) for name, Z in Z_test.items()}}
    rows = []
    for proto, (X_tr, y_tr) in protocols.items():
        for method in METHODS:
            if proto != "paper" and method in UNSUPERVISED:
                rows += [dict(r, protocol=proto) for r in rows
                         if r["protocol"] == "paper" and r["method"] == method]
                continue
            on_z = M.REGISTRY[method].input == "features"
            est = M.build(method, ctx, inverted=True)
            est.fit(Z_pool[:len(X_tr)] if on_z else X_tr, y_tr)
            s_g, results = P.score_sources(est, Z_test if on_z else s.test)
            for name, (s_o, row) in results.items():
                if figure is not None:
                    figure["scores"][proto, method, name] = (s_g, s_o)
                rows.append({"protocol": proto, "method": method, "G": s.name, "seed": seed,
                             "source": name, "group": s.groups[name],
                             "n_test": len(s.test["G"]), **row})
    log(f"G = {s.name}: inversion {t_inv:.1f}s, all methods "
        f"{time.perf_counter() - t_g:.1f}s")
    return rows, figure


def write_figures(data, out_dir):
    """Mean recovered activation per test source and ROC curves, for the first G.

    Skipped (with a message) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import roc_curve
    except ImportError:
        print("matplotlib is not installed: no figures.")
        return
    os.makedirs(out_dir, exist_ok=True)
    acts = data["mean_activation"]
    fig, axes = plt.subplots(1, len(acts), figsize=(2.2 * len(acts), 2.4), squeeze=False)
    vmin = min(float(a.min()) for a in acts.values())
    vmax = max(float(a.max()) for a in acts.values())
    for ax, (name, a) in zip(axes[0], acts.items()):
        ax.imshow(a, cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(f"{data['G']}" if name == "G" else name, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Mean recovered activation (channel mean) under G = {data['G']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "mean_activation.png"), dpi=120)
    plt.close(fig)

    protos = sorted({k[0] for k in data["scores"]}, reverse=True)
    sources = [n for n in acts if n != "G"]
    fig, axes = plt.subplots(len(protos), len(sources),
                             figsize=(3 * len(sources), 3 * len(protos)), squeeze=False)
    for i, proto in enumerate(protos):
        for j, name in enumerate(sources):
            ax = axes[i][j]
            for method in METHODS:
                if (proto, method, name) not in data["scores"]:
                    continue
                s_g, s_o = data["scores"][proto, method, name]
                fpr, tpr, _ = roc_curve(np.r_[np.ones(len(s_g)), np.zeros(len(s_o))],
                                        np.r_[s_g, s_o])
                ax.plot(fpr, tpr, label=method, lw=1)
            ax.plot([0, 1], [0, 1], "k:", lw=0.5)
            ax.set_title(f"{proto}: G vs {name} ({data['groups'][name]})", fontsize=8)
            ax.set_xlabel("false positive rate", fontsize=7)
            ax.set_ylabel("true positive rate", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"ROC curves, G = {data['G']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "roc.png"), dpi=120)
    plt.close(fig)


def summarise(pairs, methods=METHODS, groups=GROUPS):
    """Mean and std over the seeds of each (protocol, method, group)
    (see :func:`attribution_protocol.summarise`)."""
    return P.summarise(pairs, methods, groups)


def write_outputs(pairs, out_dir, config, seconds, *, methods=METHODS, groups=GROUPS,
                  prefix="", title="Attribution benchmark"):
    return P.write_pairs_tables(pairs, out_dir, config, seconds, methods=methods,
                                groups=groups, unsupervised=UNSUPERVISED, prefix=prefix,
                                title=title)


# ------------------------------------------------------------------------- tabular
TABULAR_CONFIGS = {
    "quick": dict(seeds=(0, 1, 2), g_seeds=(0,), epochs=1, n_g=300, n_real=200, n_shadow=200,
                  n_test=100, validation_fraction=0.25, alpha=1e-3, max_iter=200, tol=1e-5,
                  n_anchor=1000, latent_steps=60, latent_lr=0.05,
                  deep_sad=dict(hidden_sizes=(64, 32), rep_dim=16, n_epochs=15,
                                batch_size=64)),
    "full": dict(seeds=(0, 1, 2, 3), g_seeds=(0, 1, 2), epochs=50, n_g=1000, n_real=500,
                 n_shadow=500, n_test=300, validation_fraction=0.2, alpha=1e-3,
                 max_iter=1000, tol=1e-6, n_anchor=5000, latent_steps=200, latent_lr=0.05,
                 deep_sad=dict(hidden_sizes=(128, 64), rep_dim=32, n_epochs=50,
                               batch_size=128)),
}
TABULAR_METHODS = ("FLIPAD", "FLIPAD+IForest", "FLIPAD+OCSVM", "RAWPAD", "LatentInversion")
TABULAR_GROUPS = ("real", "same-arch-unseen", "other-model")


class _StandardizedOutput(torch.nn.Module):
    """A tabular generator whose rows come out in its standardised units."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator
        mean, std = generator._scaling()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.latent_shape = generator.latent_shape

    def forward(self, z):
        return (self.generator(z) - self.mean) / self.std


def run_tabular(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print):
    """The same protocol on the red-wine table (KL-WGAN zoo); ``tabular_*`` outputs.

    Sources: real rows, the KL-WGAN of an unseen seed (same architecture) and
    two models of other families fitted to the real training rows, never seen
    in training: a 5-component Gaussian mixture and a Gaussian copula.
    Everything is compared in G's standardised units.  FLIPAD inverts with
    ``positive=True`` (G's penultimate layer is a ReLU): over the 3 seeds
    that raised its ROC AUC by 0.02-0.03 in every source group, and its
    accuracy at fnr = 0.005 by 0.03-0.04 under the shadows protocol (by
    -0.01 to -0.03 under the paper protocol).
    """
    from flipad_sklearn.datasets import load_wine_quality
    from flipad_sklearn.generators import GaussianCopulaGenerator, GaussianMixtureGenerator
    from train_zoo import ensure_tabular_zoo

    cfg = TABULAR_CONFIGS[config]
    t_start = time.perf_counter()
    seeds = cfg["seeds"]
    zoo = ensure_tabular_zoo(cache_dir, seeds, epochs=cfg["epochs"], log=log)
    wine = load_wine_quality().data
    real = wine[np.random.default_rng(1).permutation(len(wine))]
    n_g, n_real, n_sh, n_test = cfg["n_g"], cfg["n_real"], cfg["n_shadow"], cfg["n_test"]
    X_real_train, X_real_test = real[:n_real], real[n_real:n_real + n_test]
    others = {"gmm": GaussianMixtureGenerator(5, random_state=0).fit(X_real_train),
              "copula": GaussianCopulaGenerator().fit(X_real_train)}
    X_others = {name: g.sample(n_test, random_state=1002) for name, g in others.items()}
    pairs = []
    for seed in cfg["g_seeds"] or seeds:
        i = seeds.index(seed)
        G = zoo[seed]
        unseen = seeds[(i + 1) % len(seeds)]
        shadow_seeds = [s for s in seeds if s not in (seed, unseen)]
        std = G.standardize
        X_g = std(G.sample(n_g, random_state=1001))
        X_sh = std(np.concatenate([zoo[s].sample(n_sh // len(shadow_seeds),
                                                 random_state=1001) for s in shadow_seeds]))
        test = {"G": std(G.sample(n_test, random_state=1002)), "real": std(X_real_test),
                f"kl_wgan-s{unseen}": std(zoo[unseen].sample(n_test, random_state=1002)),
                **{name: std(X) for name, X in X_others.items()}}
        groups = {"real": "real", f"kl_wgan-s{unseen}": "same-arch-unseen",
                  **{name: "other-model" for name in X_others}}
        protocols = {
            "paper": (np.concatenate([X_g, std(X_real_train)]),
                      np.r_[np.ones(n_g), -np.ones(n_real)]),
            "shadows": (np.concatenate([X_g, std(X_real_train), X_sh]),
                        np.r_[np.ones(n_g), -np.ones(n_real + len(X_sh))]),
        }
        layer = G.standardized_final_layer()
        anchor = mean_activation(G, cfg["n_anchor"], G.latent_shape, layer=G.final_layer,
                                 random_state=7, device="cpu")
        make = dict(alpha=cfg["alpha"], tol=cfg["tol"], max_iter=cfg["max_iter"],
                    pooling=None, positive=True, fnr=FNRS[0], random_state=seed,
                    device="cpu")
        for proto, (X_tr, y_tr) in protocols.items():
            for method in TABULAR_METHODS:
                if proto != "paper" and method in UNSUPERVISED:
                    pairs += [dict(r, protocol=proto) for r in pairs
                              if r["protocol"] == "paper" and r["method"] == method
                              and r["G"] == f"kl_wgan-s{seed}"]
                    continue
                ds = dict(cfg["deep_sad"], validation_fraction=cfg["validation_fraction"])
                if method.startswith("FLIPAD"):
                    det_name = {"FLIPAD": None, "FLIPAD+IForest": "iforest",
                                "FLIPAD+OCSVM": "ocsvm"}[method]
                    pipe = make_flipad(layer, "identity", anchor, detector=det_name,
                                       detector_params=ds, **make)
                    if det_name is not None:
                        pipe[-1].set_params(validation_fraction=cfg["validation_fraction"])
                elif method == "RAWPAD":
                    pipe = make_rawpad(fnr=FNRS[0], random_state=seed, device="cpu",
                                       detector_params=ds)
                else:
                    pipe = LatentInversionDistance(
                        _StandardizedOutput(G), n_steps=cfg["latent_steps"],
                        lr=cfg["latent_lr"], fnr=FNRS[0],
                        validation_fraction=cfg["validation_fraction"], random_state=seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    pipe.fit(X_tr, y_tr)
                    det = pipe[-1] if hasattr(pipe, "steps") else pipe
                    s_g = pipe.score_samples(test["G"])
                    for name in groups:
                        row = _evaluate(det, s_g, pipe.score_samples(test[name]))
                        pairs.append({"protocol": proto, "method": method,
                                      "G": f"kl_wgan-s{seed}", "seed": seed, "source": name,
                                      "group": groups[name], "n_test": n_test, **row})
        log(f"G = kl_wgan-s{seed} done ({time.perf_counter() - t_start:.1f}s)")
    md = write_outputs(pairs, out_dir, config, time.perf_counter() - t_start,
                       methods=TABULAR_METHODS, groups=TABULAR_GROUPS, prefix="tabular_",
                       title="Tabular attribution benchmark (red wine, KL-WGAN)")
    log(md)
    return pairs, md




# ------------------------------------------------------------------- perturbations
PERTURBATION_SIZES = {
    "quick": dict(n_g=120, n_real=80, n_shadow=80, n_test=40),
    # 40% of 500 held out: the 200 that fnr = 0.005 needs
    "full": dict(n_g=500, n_real=200, n_shadow=200, n_test=100, validation_fraction=0.4),
}
PERTURBATION_METHODS = ("FLIPAD", "RAWPAD", "DCTPAD", "Fingerprint")


def _perturbations():
    from flipad_sklearn import GaussianBlur, GaussianNoise, JPEGCompression, ResizedCrop

    return {
        "blur": [("sigma=0.5", GaussianBlur(sigma=0.5)), ("sigma=1", GaussianBlur(sigma=1.0))],
        "noise": [("std=0.02", GaussianNoise(std=0.02, random_state=0)),
                  ("std=0.05", GaussianNoise(std=0.05, random_state=0))],
        "jpeg": [("q=90", JPEGCompression(quality=90)), ("q=70", JPEGCompression(quality=70))],
        "crop": [("scale=0.95", ResizedCrop(scale=0.95)), ("scale=0.9", ResizedCrop(scale=0.9))],
    }


def _fit_methods(methods, ctx, X, y):
    """Each method of ``methods`` built for ``ctx`` and fitted end to end on (X, y)."""
    return {m: _fit(M.build(m, ctx), X, y) for m in methods}


def _mean_over_sources(fitted, tests):
    """Each fitted method's metrics, averaged over the test sources but G."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {m: P.mean_rows([row for _, row in P.score_sources(est, tests)[1].values()])
                for m, est in fitted.items()}


def _perturb(transformer, X, seed):
    return clone_fit_transform(transformer, X, seed).reshape(X.shape)


def run_perturbations(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print):
    """Robustness: each perturbation at two strengths, with and without immunisation.

    One G (the first kind, seed 0) under the shadows protocol.  The test
    images of every source (G's included) are perturbed; "immunised"
    detectors are trained on the same perturbation of their training images.
    Metrics are averaged over the test sources (real, same architecture
    unseen, other architectures).  Writes ``perturbations.csv`` and
    ``perturbations.md``.
    """
    cfg = _config(config, PERTURBATION_SIZES)
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    kind, seed = cfg["zoo"]["kinds"][0], cfg["zoo"]["seeds"][0]
    s = _setup(cfg, zoo, P.real_pool(cfg["zoo"]["image_size"]), kind, seed)
    X_tr, y_tr = s.training_set()
    ctx = M.Context(s.G, s.anchor, cfg, random_state=0)
    clean = _fit_methods(PERTURBATION_METHODS, ctx, X_tr, y_tr)
    rows = [{"perturbation": "none", "strength": "-", "immunised": False, "method": m, **r}
            for m, r in _mean_over_sources(clean, s.test).items()]
    for name, levels in _perturbations().items():
        for label, pert in levels:
            tests = {n: _perturb(pert, X, k) for k, (n, X) in enumerate(s.test.items())}
            for immunised in (False, True):
                fitted = (_fit_methods(PERTURBATION_METHODS, ctx, _perturb(pert, X_tr, 100),
                                       y_tr) if immunised else clean)
                rows += [{"perturbation": name, "strength": label, "immunised": immunised,
                          "method": m, **r}
                         for m, r in _mean_over_sources(fitted, tests).items()]
            log(f"{name} {label} done ({time.perf_counter() - t_start:.1f}s)")
    keys = ["perturbation", "strength", "immunised", "method"] + list(METRICS)
    P.write_csv(os.path.join(out_dir, "perturbations.csv"), rows, keys)
    keyed = {(r["perturbation"], r["strength"], r["immunised"], r["method"]): r for r in rows}
    table = [{"perturbation": pn, "strength": st, "immunised": "yes" if im else "no",
              **{f"{m} {k}": keyed[pn, st, im, m][k] for m in PERTURBATION_METHODS
                 for k in METRICS}}
             for (pn, st, im) in dict.fromkeys((r["perturbation"], r["strength"],
                                                r["immunised"]) for r in rows)]
    md = P.write_markdown(
        os.path.join(out_dir, "perturbations.md"),
        f"Perturbations ({config}, G = {s.name}, shadows protocol, "
        f"{P.elapsed_min(t_start):.1f} min)",
        ["Mean over the test sources (real, same architecture unseen, other "
         "architectures); test images of every source perturbed.", ""]
        + P.markdown_table(table, list(table[0])), log=log)
    return rows, md


def clone_fit_transform(transformer, X, seed):
    """A fresh copy of ``transformer`` (seeded with ``seed`` if it draws noise)
    fitted on and applied to 4-D images ``X``."""
    from sklearn.base import clone

    t = clone(transformer)
    if "random_state" in t.get_params():
        t.set_params(random_state=seed)     # independent noise for every image set
    return t.fit_transform(X)


# ------------------------------------------------------------------------ ablation
def _ablation_variants(cfg, n_shadows, n_channels):
    """(label, change of the recipe, number of shadows or None for all, extra feature)."""
    a, it = cfg["alpha"], cfg["max_iter"]
    return [
        ("default", {}, None, False),
        ("no shadows (paper protocol)", {}, 0, False),
        *[(f"{k} of {n_shadows} shadows", {}, k, False) for k in range(1, n_shadows)],
        (f"alpha x0.2 ({a * 0.2:g})", {"alpha": a * 0.2}, None, False),
        (f"alpha x2 ({a * 2:g})", {"alpha": a * 2}, None, False),
        (f"max_iter x4 ({it * 4})", {"max_iter": it * 4}, None, False),
        ("positive=True (z >= 0)", {"positive": True}, None, False),
        ("avg pooling", {"pooling": "avg"}, None, False),
        ("no pooling", {"pooling": None}, None, False),
        ("centre crop", {"pooling": "center_crop"}, None, False),
        (f"{n_channels // 2} of {n_channels} channels", {"n_channels": n_channels // 2},
         None, False),
        ("+ lasso objective feature", {}, None, "objective"),
        ("+ residual feature", {}, None, "residual"),
    ]


def run_ablation(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print):
    """What moves FLIPAD's unseen numbers: inversion, alpha, pooling, channels,
    shadows, the lasso objective or the residual as an extra feature.

    One G (the first kind, seed 0); every variant changes one thing of the
    default FLIPAD recipe.  Metrics: mean over the real test source and mean
    over the unseen generators (same architecture other seed, other
    architectures).  Writes ``ablation.csv`` and ``ablation.md``.
    """
    cfg = _config(config, PERTURBATION_SIZES)
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    s = _setup(cfg, zoo, P.real_pool(cfg["zoo"]["image_size"]),
               cfg["zoo"]["kinds"][0], cfg["zoo"]["seeds"][0])
    G, n_g = s.G, len(s.X_g)
    X_tr, y_tr = s.training_set()
    ds = M.Context(G, s.anchor, cfg).deep_sad
    base = dict(alpha=cfg["alpha"], tol=cfg["tol"], max_iter=cfg["max_iter"],
                kernel_size=cfg["kernel_size"], pooling="max", n_channels=None,
                positive=False)
    cache = {}

    def activations(params):
        key = (params["alpha"], params["max_iter"], params["positive"])
        if key not in cache:
            inv = make_flipad(G.final_layer, "tanh", s.anchor, alpha=key[0], tol=cfg["tol"],
                              max_iter=key[1], positive=key[2], device="cpu")[0]
            arrays = [X_tr] + list(s.test.values())
            Z = np.concatenate(P.invert_all(inv, arrays))
            X_all = np.concatenate(arrays)
            # logs of each sample's lasso objective and of its pixel residual
            # |x - sigma(W z + b)|^2, as candidate extra features
            resid = ((inv.inverse_transform(Z) - X_all.reshape(len(Z), -1)) ** 2).sum(1)
            cache[key] = (Z, {"objective": np.log(inv.objective_ + 1e-12)[:, None],
                              "residual": np.log(resid + 1e-12)[:, None]})
        return cache[key]

    def split(A):
        out, start = {}, len(X_tr)
        for name, X in s.test.items():
            out[name] = A[start:start + len(X)]
            start += len(X)
        return A[:len(X_tr)], out

    rows = []
    unseen = [k for k in s.test if k not in ("G", "real")]
    for label, change, n_sh, extra in _ablation_variants(cfg, len(s.X_shadows),
                                                         G.final_layer.in_channels):
        params = dict(base, **change)
        Z, extras = activations(params)
        n = len(s.training_set(n_shadows=n_sh)[0])
        pipe = make_flipad(G.final_layer, "tanh", s.anchor, fnr=FNRS[0], random_state=0,
                           device="cpu", detector_params=ds,
                           **{k: v for k, v in params.items() if k != "tol"})
        feats, det = pipe[1:-1], pipe[-1]
        Z_tr, Z_te = split(Z)
        F_tr = feats.fit_transform(Z_tr[:n], y_tr[:n])
        F_te = {k: feats.transform(v) for k, v in Z_te.items()}
        if extra:
            O_tr, O_te = split(extras[extra])
            mu, sd = O_tr[:n_g].mean(), O_tr[:n_g].std() + 0.05
            F_tr = np.hstack([F_tr, (O_tr[:n] - mu) / sd])
            F_te = {k: np.hstack([v, (O_te[k] - mu) / sd]) for k, v in F_te.items()}
        det.fit(F_tr, y_tr[:n])
        res = {name: row for name, (_, row) in P.score_sources(det, F_te)[1].items()}
        row = {"variant": label, "protocol": ("shadows" if n_sh is None else
                                              "paper" if n_sh == 0 else f"{n_sh} shadow(s)")}
        for grp, names in (("real", ["real"]), ("unseen", unseen)):
            row.update({f"{grp} {m}": v for m, v in
                        P.mean_rows([res[k] for k in names]).items()})
        rows.append(row)
        log(f"ablation: {label} done ({time.perf_counter() - t_start:.1f}s)")
    P.write_csv(os.path.join(out_dir, "ablation.csv"), rows)
    md = P.write_markdown(
        os.path.join(out_dir, "ablation.md"),
        f"FLIPAD ablation ({config}, G = {s.name}, {P.elapsed_min(t_start):.1f} min)",
        P.markdown_table(rows, list(rows[0])), log=log)
    return rows, md


PARTS = ("image", "tabular", "perturbations", "ablation")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run (< 5 minutes)")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--kinds", nargs="+", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--g-seeds", nargs="+", type=int, default=None,
                   help="seeds whose generators play G (default: all; --quick: 0)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--part", default="all",
                   choices=("all",) + PARTS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", action="store_true",
                   help="with --part all: run the image part in one process and the other "
                        "parts in a second one (two cores; the zoo is trained first)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.parallel and args.part == "all":
        return _run_parallel(args, argv)
    with warnings.catch_warnings():
        # fnr=0.005 needs >= 199 held-out samples; --quick holds out 30 (max is used)
        warnings.simplefilter("ignore", ThresholdWarning)
        config = "quick" if args.quick else "full"
        if args.part in ("all", "image"):
            run(config, args.out, args.cache_dir, args.kinds, args.seeds, args.g_seeds,
                figures=not args.no_figures)
        if args.part in ("all", "tabular"):
            run_tabular(config, args.out, args.cache_dir)
        if args.part in ("all", "perturbations"):
            run_perturbations(config, args.out, args.cache_dir)
        if args.part in ("all", "ablation"):
            run_ablation(config, args.out, args.cache_dir)
    return 0


def _run_parallel(args, argv):
    """``--part all`` as two processes: ``image``, and the other parts one after
    the other."""
    import subprocess

    from train_zoo import ensure_tabular_zoo

    config = "quick" if args.quick else "full"
    # train what is missing once, here, so that the two processes only read the cache
    P.load_zoo(_config(config, kinds=args.kinds, seeds=args.seeds)["zoo"], args.cache_dir)
    tcfg = TABULAR_CONFIGS[config]
    ensure_tabular_zoo(args.cache_dir, tcfg["seeds"], epochs=tcfg["epochs"])
    base = [sys.executable, os.path.abspath(__file__)] + [
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--parallel"]
    t0 = time.perf_counter()
    image = subprocess.Popen(base + ["--part", "image"])
    rc = 0
    for part in PARTS[1:]:
        rc |= subprocess.call(base + ["--part", part])
    rc |= image.wait()
    print(f"all parts: {(time.perf_counter() - t0) / 60:.1f} min (two processes)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
