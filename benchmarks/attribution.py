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
  conformal rule (:func:`flipad_sklearn.detection.conformal.conformal_threshold`);
* real images come from the vendored MNIST subset (the full zoo is trained
  on all of it, so real test images are GAN training images, as in the paper);
* test: balanced sets, fresh samples of G against fresh samples of each
  other source: ``real`` (seen in training), ``same-arch-unseen`` (G's kind,
  the seed no detector ever saw) and ``other-arch`` (every other kind, with
  that unseen seed too: generators of one seed share G's initial weights;
  never seen in training).

Methods: FLIPAD (final-layer inversion -> max pooling -> G-standardisation ->
``FLIPADDetector`` at its defaults: Deep SAD alone with labelled others, guarded
by a one-class SVM without them), FLIPAD
features with IsolationForest and OneClassSVM, RAWPAD (the same detector on
pixels), DCTPAD (on log |DCT|), the fingerprint
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
* ``tabular``: the red-wine table with the KL-WGAN zoo.  With the ``sdv``
  extra, the FLIPAD authors' recipe (``attribution_tabular.py``: TVAE as the
  labelled other in training, CTGAN and CopulaGAN at test,
  :func:`flipad_sklearn.pipeline.make_flipad_tabular`); without it, the
  others are real rows, a KL-WGAN of an unseen seed, and two generators of
  other families fitted to the real rows
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
* ``efficiency``: where the image part saturates, fewer resources: 100 /
  300 / 1000 training samples of G, 0 / 1 / 2 shadows, clean and
  JPEG-compressed test sets; FLIPAD at ``make_flipad``'s defaults, FLIPAD +
  OCSVM, RAWPAD, DCTPAD.  ``efficiency.csv`` / ``.md`` / ``.png``.
* ``finetune``: the hardest others, for the same methods: G's own training
  run stopped at other epochs (``train_zoo.py --checkpoint-epochs``) and
  copies of G fine-tuned on MNIST for k = 0, 1, 3, 10, 100, 1000 steps (the
  IP-theft question: how often are a stolen copy's samples attributed to
  G?).  ``finetune.csv`` / ``.md``, ``finetune.png``, ``checkpoints.png``.
* ``published`` (issue 27): FLIPAD at ``make_flipad``'s defaults (its 8-bit
  input contract), fitted with no perturbation named, on every test source
  as generated (floats), as published (8-bit PNG files read back by the
  package's loader), and after JPEG q90 / q75 and a resize to 90 % / 110 %
  and back of the published images, under both protocols.
  ``published.csv`` / ``.md``.  ``--recipe immunise`` adds, in the same
  run, ``make_flipad(..., immunise="published")`` (both sides immunised by
  a random perturbation mixture, no perturbation named) beside the
  default: ``published_immunise.csv`` / ``.md`` (full: 15.8 minutes on
  the shared 2-core CPU for DCGAN and LSGAN seeds 0-2, one thread).

Every part that inverts images once and fits the rest of the pipeline on the
activations (``image``, ``efficiency``, ``published``, ``ablation``) inverts
through ``attribution_methods.inverter``: the pipeline's first step *with its
input contract*, so the images are rounded to 8 bits as ``make_flipad``'s
pipeline rounds them and the scores are the whole pipeline's.

The code: ``attribution_protocol.py`` (data sources, training and test sets,
evaluation at each fnr, summaries, writers), ``attribution_methods.py``
(``REGISTRY``: each method's factory, input kind and supervision) and one
short function per part here.

Usage::

    python -m benchmarks.attribution --quick --out bench_out     # < 5 min, one thread
    python -m benchmarks.attribution --parallel --out bench_out  # full, two processes
    python -m benchmarks.attribution --part image --out bench_out

Runtime on one CPU thread.  ``--quick`` (G = DCGAN and LSGAN of seed 0,
seeds 1 and 2 as unseen / shadow; 1-epoch generators on 320 images, 120
training samples of G, 40 test samples per source; the inversion at the
inverter's defaults since issue 27, before it 60 FISTA iterations at
tol 1e-5, the times below):
about 3 minutes for the first four parts, the zoo included (image part
~45 s, tabular ~15 s, perturbations ~80 s, ablation ~40 s), plus 10-15 s of
CPU each for ``efficiency`` (40 and 120 samples of G) and ``finetune``
(checkpoints of 2 and 3 epochs, 0 / 5 / 20 fine-tuning steps).  It is a
smoke test: its generators have made five training steps, and with 10-30
held-out samples (30 of 120 in the image part) both fnr thresholds are the
largest held-out distance (fnr = 0.005 needs at least 199), so the two
accuracy columns coincide.

The full run (2026-11-28, the project's 2-core CPU, one thread per process;
4 kinds x 4 seeds in the zoo, G = seeds 0, 1, 2 of each kind: 12 G, 1000
samples of G of which 200 held out, 400 real + 400 shadow negatives, 200 test
samples per source, then 300 FISTA iterations; now the inverter's
defaults): ``image`` 52.4 minutes (about
160 s of inversion and 100 s of detectors per G; rerun on 2026-12-01 at the
current defaults, the one-class guard and the faster inversion: 30.9
minutes, about 70 s and 85 s per G), ``tabular`` 8 minutes,
``perturbations`` 16.5 minutes, ``ablation`` 12 minutes; the zoo takes about
35 minutes once (cached).  ``--part all --parallel`` runs the image part
beside the three others (two processes): about 53 minutes in all.  The
results are in ``docs/user_guide/benchmark.rst``.  All six parts at the
package's defaults (2026-12-01, ``--parallel``): 36.0 minutes, the image
part 35.9 of them; every output in
``benchmarks/results/full_run_2026-12-01/``.

The two last parts (2026-12-01, ``--kinds dcgan``: the rest of the full zoo
was still training, so no other-architecture source; on a CPU shared with
other jobs, about a quarter of a core per run): ``efficiency`` (G = DCGAN
seeds 0, 1, 2) 19.8 minutes, 5.1 minutes of CPU (rerun on 2026-12-01 at the
current defaults, the one-class guard, one core to itself: 3.9 minutes,
3.9 of CPU); ``finetune`` (G = DCGAN
seed 0) 7.6 minutes, 1.5 of CPU, after 7 minutes for the checkpoints and 14
for the 1000-step fine-tuning (cached; rerun on 2026-12-01 at the current
defaults, one core to itself: 1.1 minutes, 1.2 of CPU).  ``--quick`` with all six parts,
its zoo included: 2.8 minutes of CPU (15 minutes of wall time on that
shared CPU).  Tables and figures: ``benchmarks/results/``.
"""

import argparse
import itertools
import os
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from flipad_sklearn.detection.conformal import _n_validation, required_validation_size
from flipad_sklearn.inversion import DEFAULT_PROGRESS_TOL
from flipad_sklearn import (
    LatentInversionDistance,
    ThresholdWarning,
    make_flipad,
    make_rawpad,
    mean_activation,
)

from . import attribution_methods as M
from . import attribution_protocol as P
from .attribution_protocol import FNRS, METRICS
from .train_zoo import DEFAULT_CACHE, FULL, QUICK

# the evaluation the tabular part (below) calls by these names
_evaluate = P.evaluate

CONFIGS = {
    "quick": dict(
        zoo=dict(QUICK, kinds=("dcgan", "lsgan")), g_seeds=(0,),
        n_g=120, n_real=80, n_shadow=80, n_test=40, validation_fraction=0.25,
        # the inverter's defaults, as in the full run (a capped inversion asked
        # for a tighter tol than the defaults and then stopped it at 60 steps)
        alpha=5e-4, max_iter=None, tol=None, kernel_size=2, n_anchor=300,
        deep_sad=dict(hidden_sizes=(64, 32), rep_dim=16, n_epochs=10, batch_size=40),
        latent_steps=40, latent_lr=0.05,
    ),
    "full": dict(
        zoo=FULL, g_seeds=(0, 1, 2),
        n_g=1000, n_real=400, n_shadow=400, n_test=200, validation_fraction=0.2,
        # the inverter's defaults (tol, max_iter, progress stop): what a user gets
        alpha=5e-4, max_iter=None, tol=None, kernel_size=2, n_anchor=2000,
        deep_sad=dict(hidden_sizes=(128, 64), rep_dim=32, n_epochs=30, batch_size=128),
        latent_steps=100, latent_lr=0.05,
    ),
}

METHODS = tuple(M.REGISTRY)
# unsupervised: y = -1 samples are not used, the protocols coincide
UNSUPERVISED = set(M.UNSUPERVISED)
GROUPS = ("real", "same-arch-unseen", "other-arch")
SIZES = ("n_g", "n_real", "n_shadow", "n_test")


def _config(config, *overrides, kinds=None, seeds=None, g_seeds=None, zoo=None):
    """``CONFIGS[config]`` updated with each dict of ``overrides[config]``, with
    ``zoo`` (a whole zoo entry) and with the zoo's kinds / seeds and the seeds of
    G given on the command line."""
    cfg = dict(CONFIGS[config])
    for o in overrides:
        cfg.update(o[config])
    cfg["zoo"] = dict(cfg["zoo"] if zoo is None else zoo)
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


def _budget(cfg):
    """The inversion's ``tol`` / ``max_iter`` a config sets (None: the defaults)."""
    return {k: cfg[k] for k in ("tol", "max_iter") if cfg.get(k) is not None}


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# --------------------------------------------------------------------------- image
def run(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, kinds=None, seeds=None,
        g_seeds=None, figures=True, log=print, methods=None, registry=None):
    """Run the benchmark; write ``pairs.csv``, ``summary.csv``, ``results.md`` to ``out_dir``.

    ``methods`` (default :data:`METHODS`) are looked up in ``registry``
    (default ``attribution_methods.REGISTRY``; its ``"FLIPAD"`` entry's
    inverter is the shared inversion).

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
            rows, data = _image_pairs(cfg, zoo, real, kind, seed, figure_data is None, log,
                                      methods=methods, registry=registry)
            pairs += rows
            figure_data = figure_data or data
    markdown = write_outputs(pairs, out_dir, config, time.perf_counter() - t_start,
                             methods=METHODS if methods is None else methods)
    if figures:
        write_figures(figure_data, out_dir, methods=METHODS if methods is None else methods)
    log(markdown)
    return pairs, markdown


def _image_pairs(cfg, zoo, real, kind, seed, keep_figure, log, methods=None, registry=None):
    """Every method under both protocols for G = (kind, seed): one row per
    (protocol, method, test source)."""
    methods = METHODS if methods is None else methods
    registry = M.REGISTRY if registry is None else registry
    t_g = time.perf_counter()
    s = _setup(cfg, zoo, real, kind, seed)
    if not s.X_shadows:
        log(f"  no shadow for {s.name}: {len(cfg['zoo']['seeds'])} seeds leave none")
    ctx = M.Context(s.G, s.anchor, cfg, random_state=seed)  # G's seed seeds the detectors
    protocols = s.protocols()
    # FLIPAD's inversion once per G, for all images it will see (the paper
    # protocol's training rows are the first of the shadows protocol's)
    Z_pool, *Z_list = P.invert_all(M.inverter(ctx, registry),
                                   [s.training_set()[0]] + list(s.test.values()))
    Z_test = dict(zip(s.test, Z_list))
    t_inv = time.perf_counter() - t_g
    figure = None
    if keep_figure:
        shape = s.anchor.shape
        figure = {"G": s.name, "scores": {}, "groups": dict(s.groups), "mean_activation": {
            name: Z.reshape(len(Z), *shape).mean(axis=(0, 1)) for name, Z in Z_test.items()}}
    rows = []
    for proto, (X_tr, y_tr) in protocols.items():
        for method in methods:
            if proto != "paper" and method in UNSUPERVISED:
                rows += [dict(r, protocol=proto) for r in rows
                         if r["protocol"] == "paper" and r["method"] == method]
                continue
            on_z = registry[method].input == "features"
            est = M.build(method, ctx, inverted=True, registry=registry)
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


def write_figures(data, out_dir, methods=METHODS):
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
    # one colour per method in every panel; the false-positive rate on a log
    # axis (where methods differ: on a linear one every curve hugs the corner)
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(protos), len(sources),
                             figsize=(3 * len(sources), 3 * len(protos) + 0.4), squeeze=False)
    handles = {}
    for i, proto in enumerate(protos):
        for j, name in enumerate(sources):
            ax = axes[i][j]
            lowest = 1.0
            for method in methods:
                # unsupervised methods ignore the negatives: computed once, under
                # the paper protocol, and the same curve under every protocol
                key = (proto if method not in UNSUPERVISED else "paper", method, name)
                if key not in data["scores"]:
                    continue
                s_g, s_o = data["scores"][key]
                fpr, tpr, _ = roc_curve(np.r_[np.ones(len(s_g)), np.zeros(len(s_o))],
                                        np.r_[s_g, s_o])
                floor = 0.5 / len(s_o)            # fpr = 0 drawn at half a sample
                lowest = min(lowest, floor)
                handles[method], = ax.step(np.maximum(fpr, floor), tpr, where="post",
                                           color=colours[method], lw=1)
            # chance (tpr = fpr): a curve on the log axis, so drawn from many points
            chance = np.geomspace(lowest, 1.0, 64)
            ax.plot(chance, chance, "k:", lw=0.5)
            ax.set_xscale("log")
            ax.set_xlim(lowest, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{proto}: G vs {name} ({data['groups'][name]})", fontsize=8)
            ax.set_xlabel("false positive rate (log)", fontsize=7)
            ax.set_ylabel("true positive rate", fontsize=7)
    labels = [m + (" *" if m in UNSUPERVISED else "") for m in handles]
    fig.legend(list(handles.values()), labels, loc="lower center", ncol=len(handles),
               fontsize=7, frameon=False)
    fig.suptitle(f"ROC curves, G = {data['G']} (* ignores the labelled negatives: "
                 "the same curve under both protocols)", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
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
    from .train_zoo import ensure_tabular_zoo

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
        make = dict(alpha=cfg["alpha"], **_budget(cfg), pooling=None, positive=True, fnr=FNRS[0],
                    random_state=seed, device="cpu")
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
                    pipe = make_rawpad(activation="identity", fnr=FNRS[0], random_state=seed,
                                       device="cpu", detector_params=ds)
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


def _fit_methods(methods, ctx, X, y, registry=None):
    """Each method of ``methods`` built for ``ctx`` and fitted end to end on (X, y)."""
    return {m: _fit(M.build(m, ctx, registry=registry), X, y) for m in methods}


def _mean_over_sources(fitted, tests):
    """Each fitted method's metrics, averaged over the test sources but G."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {m: P.mean_rows([row for _, row in P.score_sources(est, tests)[1].values()])
                for m, est in fitted.items()}


def _perturb(transformer, X, seed):
    return clone_fit_transform(transformer, X, seed).reshape(X.shape)


def run_perturbations(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, log=print,
                      methods=PERTURBATION_METHODS, perturbations=None, registry=None,
                      zoo=None):
    """Robustness: each perturbation at two strengths, with and without immunisation.

    ``methods`` are looked up in ``registry`` (default
    ``attribution_methods.REGISTRY``); ``perturbations`` maps a name to its
    ``(label, transformer)`` levels (default :func:`_perturbations`); ``zoo``
    replaces the config's zoo entry (G is its first kind, first seed).

    One G (the first kind, seed 0) under the shadows protocol.  The test
    images of every source (G's included) are perturbed; "immunised"
    detectors are trained on the same perturbation of their training images.
    Metrics are averaged over the test sources (real, same architecture
    unseen, other architectures).  Writes ``perturbations.csv`` and
    ``perturbations.md``.
    """
    cfg = _config(config, PERTURBATION_SIZES, zoo=zoo)
    perturbations = _perturbations() if perturbations is None else perturbations
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    kind, seed = cfg["zoo"]["kinds"][0], cfg["zoo"]["seeds"][0]
    s = _setup(cfg, zoo, P.real_pool(cfg["zoo"]["image_size"]), kind, seed)
    X_tr, y_tr = s.training_set()
    ctx = M.Context(s.G, s.anchor, cfg, random_state=0)
    clean = _fit_methods(methods, ctx, X_tr, y_tr, registry)
    rows = [{"perturbation": "none", "strength": "-", "immunised": False, "method": m, **r}
            for m, r in _mean_over_sources(clean, s.test).items()]
    for name, levels in perturbations.items():
        for label, pert in levels:
            tests = {n: _perturb(pert, X, k) for k, (n, X) in enumerate(s.test.items())}
            for immunised in (False, True):
                fitted = (_fit_methods(methods, ctx, _perturb(pert, X_tr, 100), y_tr,
                                       registry) if immunised else clean)
                rows += [{"perturbation": name, "strength": label, "immunised": immunised,
                          "method": m, **r}
                         for m, r in _mean_over_sources(fitted, tests).items()]
            log(f"{name} {label} done ({time.perf_counter() - t_start:.1f}s)")
    keys = ["perturbation", "strength", "immunised", "method"] + list(METRICS)
    P.write_csv(os.path.join(out_dir, "perturbations.csv"), rows, keys)
    keyed = {(r["perturbation"], r["strength"], r["immunised"], r["method"]): r for r in rows}
    table = [{"perturbation": pn, "strength": st, "immunised": "yes" if im else "no",
              **{f"{m} {k}": keyed[pn, st, im, m][k] for m in methods
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


# ----------------------------------------------------------------------- published
PUBLISHED_SIZES = {
    "quick": dict(n_g=120, n_real=80, n_shadow=80, n_test=40),
    # 20 % of 1000 held out: the 200 that fnr = 0.005 needs; Deep SAD at its
    # defaults (deep_sad=None): make_flipad's recipe as a user gets it
    "full": dict(n_g=1000, n_real=400, n_shadow=400, n_test=200, validation_fraction=0.2,
                 deep_sad=None),
}
#: the published form every source's test images are scored in
PUBLISHED = "8-bit PNG"


def _published_conditions():
    """``{label: transformer or None}``: the test images as generated (floats),
    as published (8-bit PNG files read back by the package's loader), and the
    published images after what happens to them; no perturbation is named at
    fit.  A second PNG round trip is lossless: it is the ``8-bit PNG`` row."""
    from flipad_sklearn import JPEGCompression, Resize

    return {"float (as generated)": None, PUBLISHED: None,
            "JPEG q90": JPEGCompression(quality=90), "JPEG q75": JPEGCompression(quality=75),
            "resize 90%": Resize(scale=0.9), "resize 110%": Resize(scale=1.1)}


#: ``--recipe`` of the published part: ``default`` (make_flipad as it is) or
#: ``immunise`` (the default and, side by side in the same run, the recipe
#: immunised on both sides by :func:`immunise_mixture`)
PUBLISHED_RECIPES = ("default", "immunise")
#: what ``immunise="published"`` draws from, as the result file says it
IMMUNISE_MIXTURE_TEXT = (
    "make_flipad(..., immunise='published'): each training image (G's and the labelled "
    "negatives') through one perturbation of RandomPerturbation('published') drawn with "
    "equal weights from: none (the 8-bit rounding: a PNG round trip), JPEG q 70-95, "
    "resize 0.9-1.1 and back (Resize), centre crop 0.9-1.0 resized back (ResizedCrop); "
    "the threshold from held-out samples of G perturbed the same way")


def immunise_mixture(X, random_state):
    """``X`` (4-D, in [-1, 1]) as ``make_flipad(..., immunise="published",
    random_state=random_state)`` perturbs its training images at fit: each
    image through one perturbation of
    :func:`flipad_sklearn.perturbations.published_mixture`; an array of
    ``X``'s shape and dtype."""
    from flipad_sklearn.pipeline import ImmunisedPipeline
    from flipad_sklearn.perturbations import RandomPerturbation

    imm = ImmunisedPipeline([("id", "passthrough")],
                            immunise=RandomPerturbation("published", random_state=random_state))
    return imm._immunised(X)


def run_published(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, kinds=None,
                  seeds=None, g_seeds=None, log=print, sizes=None, recipe="default"):
    """Issue 27: the recipe on G's images as they travel, under both protocols.

    FLIPAD at :func:`~flipad_sklearn.pipeline.make_flipad`'s defaults (its
    8-bit input contract; in the full config Deep SAD at its defaults too),
    fitted on G's samples as the generator returns them (the contract
    rounds them), with no perturbation named at fit.  Every test source (G,
    real digits, the unseen seed of G's kind, the other kinds of that seed)
    is scored as generated (floats), as published (saved as 8-bit PNG files
    and read back with :func:`~flipad_sklearn.datasets.load_image_folder`)
    and after JPEG q90 / q75 and a resize to 90 % / 110 % and back
    (:class:`~flipad_sklearn.JPEGCompression`,
    :class:`~flipad_sklearn.Resize`) of the published images, G's
    included.  The inversion is the pipeline's own first step with its
    input contract (:func:`attribution_methods.inverter`), so the scores
    are the whole pipeline's.  Writes ``published.csv`` (one row per
    protocol, G, condition, source) and ``published.md``: G accepted at fnr
    0.005 and the balanced accuracy at fnr 0.005 per group, with "unseen
    generators" the mean over the same-architecture-unseen and
    other-architecture pairs.  ``sizes`` overrides the config's ``n_g``,
    ``n_real``, ``n_shadow``, ``n_test`` (a reduced run; the table says
    which sizes it ran).

    ``recipe="immunise"`` adds, side by side in the same run and on the same
    test images, the recipe immunised on both sides without naming a
    perturbation: the training pool (G's samples and the labelled negatives)
    through :func:`immunise_mixture`, so the held-out samples of G that set
    the threshold are perturbed by the same mixture; then writes
    ``published_immunise.csv`` / ``.md`` (a ``recipe`` column: ``default``,
    ``immunised``) instead.
    """
    if recipe not in PUBLISHED_RECIPES:
        raise ValueError(f"recipe must be one of {PUBLISHED_RECIPES}, got {recipe!r}.")
    from sklearn.base import clone

    from .bench_published_images import png_round_trip

    cfg = _config(config, PUBLISHED_SIZES, kinds=kinds, seeds=seeds, g_seeds=g_seeds)
    cfg.update(sizes or {})
    kinds, seeds = cfg["zoo"]["kinds"], cfg["zoo"]["seeds"]
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    real = P.real_pool(cfg["zoo"]["image_size"])
    g_seeds = [s for s in (cfg["g_seeds"] or seeds) if s in seeds] or list(seeds[:1])
    conditions = _published_conditions()
    rows = []
    for kind in kinds:
        for seed in g_seeds:
            t_g = time.perf_counter()
            s = _setup(cfg, zoo, real, kind, seed)
            ctx = M.Context(s.G, s.anchor, cfg, random_state=seed)
            inv = M.inverter(ctx)              # the inversion with the input contract
            protocols = s.protocols()
            X_pool = s.training_set()[0]
            pools = {"default": P.invert_all(inv, [X_pool])[0]}
            if recipe == "immunise":
                # what make_flipad(..., immunise="published", random_state=seed) does
                X_imm = immunise_mixture(X_pool, seed)
                pools["immunised"] = P.invert_all(inv, [X_imm])[0]
            published = {name: png_round_trip(X).astype(X.dtype) for name, X in s.test.items()}
            Z = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for label, t in conditions.items():
                    for name, X in (s.test if label.startswith("float") else published).items():
                        Xc = X if t is None else clone(t).fit_transform(X).reshape(X.shape)
                        Z[label, name] = inv.transform(Xc.astype(X.dtype))
            t_inv = time.perf_counter() - t_g
            for (proto, (X_tr, y_tr)), (rec, Z_pool) in itertools.product(
                    protocols.items(), pools.items()):
                head = _fit(M.build("FLIPAD", ctx, inverted=True), Z_pool[:len(X_tr)], y_tr)
                det = head[-1]
                for label in conditions:
                    s_g = head.score_samples(Z[label, "G"])
                    accepted = P.attribution_rate(det, s_g)
                    for name, group in s.groups.items():
                        row = P.evaluate(det, s_g, head.score_samples(Z[label, name]))
                        rows.append({"protocol": proto, "recipe": rec, "G": s.name,
                                     "seed": seed, "condition": label, "source": name,
                                     "group": group, "n_test": len(s.test["G"]),
                                     "G accepted@0.005": accepted["attr@0.005"], **row})
            log(f"G = {s.name}: inversion {t_inv:.1f}s, all "
                f"{time.perf_counter() - t_g:.1f}s")
    keys = ["protocol", "G", "seed", "condition", "source", "group", "n_test",
            "G accepted@0.005"] + list(METRICS)
    name, title = "published", "make_flipad's recipe"
    if recipe == "immunise":
        keys.insert(1, "recipe")
        name, title = "published_immunise", "make_flipad's recipe and both sides immunised"
    P.write_csv(os.path.join(out_dir, name + ".csv"), rows, keys, float_format="{:.4f}")
    md = P.write_markdown(
        os.path.join(out_dir, name + ".md"),
        f"Published images: {title}, no perturbation named at fit "
        f"({config}, {P.elapsed_min(t_start):.1f} min)",
        _published_table(rows, cfg, recipes=list(pools) if recipe == "immunise" else None),
        log=log)
    return rows, md


def _published_table(rows, cfg, recipes=None):
    """Lines of ``published.md``: one row per (protocol, condition); with
    ``recipes`` (``published_immunise.md``) one per (protocol, condition,
    recipe), with a ``recipe`` column."""
    gs = sorted({r["G"] for r in rows})
    z = cfg["zoo"]
    lines = [f"G = {', '.join(gs)} (zoo: kinds {', '.join(z['kinds'])}, seeds "
             f"{', '.join(map(str, z['seeds']))}, {z['n_train']} MNIST images, epochs "
             f"{z['epochs']}); {cfg['n_g']} training samples of G "
             f"({cfg['validation_fraction']:.0%} held out for the threshold), "
             f"{cfg['n_real']} real and {cfg['n_shadow']} shadow negatives (shadows "
             f"protocol), {cfg['n_test']} test images per source. Deep SAD: "
             f"{cfg['deep_sad'] or 'the detector defaults'}. Every source's test "
             f"images (G's included) go through the condition; balanced accuracy "
             f"at fnr 0.005 (thresholds from held-out samples of G) and AUC, means "
             f"over the G and the pairs of a group; 'unseen generators' = "
             f"same-arch-unseen and other-arch pairs.", ""]
    if recipes:
        lines += [f"Recipe 'immunised': {IMMUNISE_MIXTURE_TEXT}; 'default': make_flipad "
                  f"trained on the clean samples, in the same run on the same test "
                  f"images.", ""]
    rec_col = "recipe | " if recipes else ""
    lines += ["| protocol | " + rec_col + "condition | G accepted | acc real | "
              "acc same-arch-unseen | acc other-arch | acc unseen generators | "
              "AUC unseen generators |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if recipes else "")]
    for proto, label, rec in itertools.product(("paper", "shadows"), _published_conditions(),
                                               recipes or [None]):
        sel = [r for r in rows if r["protocol"] == proto and r["condition"] == label
               and (rec is None or r["recipe"] == rec)]
        if not sel:
            continue
        acc = {g: np.mean([r["acc@0.005"] for r in sel if r["group"] == g]) for g in GROUPS}
        unseen = [r for r in sel if r["group"] != "real"]
        g_acc = np.mean([r["G accepted@0.005"] for r in sel if r["group"] == "real"])
        lines.append(
            f"| {proto} | " + (f"{rec} | " if rec else "") + f"{label} | {g_acc:.3f} | "
            f"{acc['real']:.3f} | "
            f"{acc['same-arch-unseen']:.3f} | {acc['other-arch']:.3f} | "
            f"{np.mean([r['acc@0.005'] for r in unseen]):.3f} | "
            f"{np.mean([r['auc'] for r in unseen]):.3f} |")
    return lines


# ------------------------------------------------------------------------ ablation
def _ablation_variants(cfg, n_shadows, n_channels):
    """(label, change of the recipe, number of shadows or None for all, extra feature)."""
    a, it = cfg["alpha"], cfg["max_iter"]
    # a longer inversion: four times the cap, or (at the defaults, where the
    # progress stop ends it) a ten times smaller progress_tol
    longer = ((f"max_iter x4 ({it * 4})", {"max_iter": it * 4}) if it is not None else
              (f"progress_tol x0.1 ({DEFAULT_PROGRESS_TOL * 0.1:g})",
               {"progress_tol": DEFAULT_PROGRESS_TOL * 0.1}))
    return [
        ("default", {}, None, False),
        ("no shadows (paper protocol)", {}, 0, False),
        *[(f"{k} of {n_shadows} shadows", {}, k, False) for k in range(1, n_shadows)],
        (f"alpha x0.2 ({a * 0.2:g})", {"alpha": a * 0.2}, None, False),
        (f"alpha x2 ({a * 2:g})", {"alpha": a * 2}, None, False),
        (*longer, None, False),
        ("positive=True (z >= 0)", {"positive": True}, None, False),
        ("output data term (datafit=output)", {"datafit": "output"}, None, False),
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
    base = dict(alpha=cfg["alpha"], kernel_size=cfg["kernel_size"], pooling="max",
                n_channels=None, positive=False, **_budget(cfg))
    inversion_keys = ("alpha", "tol", "max_iter", "positive", "datafit", "progress_tol")
    cache = {}

    def activations(params):
        inv_params = {k: params[k] for k in inversion_keys if k in params}
        key = tuple(sorted(inv_params.items()))
        if key not in cache:
            extra = {"progress_tol": inv_params.pop("progress_tol")} \
                if "progress_tol" in inv_params else {}
            # the inversion with the pipeline's input contract (8-bit rounding)
            head = make_flipad(G.final_layer, "tanh", s.anchor, device="cpu",
                               inverter_params=extra, **inv_params)[:1]
            arrays = [X_tr] + list(s.test.values())
            Z = np.concatenate(P.invert_all(head, arrays))
            inv = head[0]
            # the images as the inversion saw them (the contract's rounding)
            X_all = head._contract(np.concatenate(arrays))
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
                           **{k: v for k, v in params.items()
                              if k not in ("tol", "progress_tol")})
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


# -------------------------------------------------------------- sample efficiency
# FLIPAD at make_flipad's defaults against the baselines; deep_sad=None in
# a full config: every Deep SAD at its defaults (FLIPADDetector())
DISCRIMINATING_METHODS = ("FLIPAD", "FLIPAD+OCSVM", "RAWPAD", "DCTPAD")
EFFICIENCY = {
    "quick": dict(g_kinds=("dcgan",), g_seeds=(0,), n_gs=(40, 120), n_real=80, n_shadow=80,
                  n_test=40),
    "full": dict(g_kinds=("dcgan",), g_seeds=(0, 1, 2), n_gs=(100, 300, 1000),
                 shadow_counts=(0, 2), n_real=400,
                 n_shadow=400, n_test=100, validation_fraction=0.2, deep_sad=None),
}
EFFICIENCY_PERTURBATION = "jpeg q=90"


def _group_means(results, groups):
    """Per group of sources, the mean of each metric over its sources."""
    out = {}
    for name, (_, row) in results.items():
        out.setdefault(groups[name], []).append(row)
    return {g: P.mean_rows(rows) for g, rows in out.items()}


def _inverted_sets(ctx, pool, sets):
    """FLIPAD's activations of the training ``pool`` and of every test set of
    ``sets`` (``{label: {source: images}}``), from one inversion."""
    arrays = [pool] + [X for tests in sets.values() for X in tests.values()]
    Z_pool, *Z = P.invert_all(M.inverter(ctx), arrays)
    it = iter(Z)
    return Z_pool, {label: {n: next(it) for n in tests} for label, tests in sets.items()}


def run_efficiency(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, kinds=None,
                   log=print):
    """Sample efficiency: ``n`` training samples of G (the first ``n`` of the
    same draw), 0 to all shadows, each method (FLIPAD and the baselines of
    ``DISCRIMINATING_METHODS``, the detectors at their defaults in the full
    config); test sources of the image part, clean and JPEG-compressed
    (quality 90, every source, G's included; detectors trained on clean
    images).  G: each seed of ``g_seeds`` (which also seeds the detectors)
    of each kind of ``g_kinds``; ``kinds``: the zoo's
    kinds (the other architectures; default: the config's).  Writes
    ``efficiency.csv``, ``efficiency.md`` and ``efficiency.png``.
    """
    from flipad_sklearn import JPEGCompression

    cfg = _config(config, EFFICIENCY, kinds=kinds)
    cfg["n_g"] = max(cfg["n_gs"])
    t_start = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    real = P.real_pool(cfg["zoo"]["image_size"])
    rows = []
    for kind, seed in [(k, sd) for k in cfg["g_kinds"] for sd in cfg["g_seeds"]]:
        s = _setup(cfg, zoo, real, kind, seed)
        ctx = M.Context(s.G, s.anchor, cfg, random_state=seed)
        pert = JPEGCompression(quality=90)
        sets = {"clean": s.test, EFFICIENCY_PERTURBATION: {
            n: _perturb(pert, X, k) for k, (n, X) in enumerate(s.test.items())}}
        pool = s.training_set()[0]
        Z_pool, Z_sets = _inverted_sets(ctx, pool, sets)
        n_all, n_neg = len(s.X_g), len(s.X_real)
        per_shadow = len(s.X_shadows[0]) if s.X_shadows else 0
        for n in cfg["n_gs"]:
            for n_sh in cfg.get("shadow_counts") or range(len(s.X_shadows) + 1):
                X_tr, y_tr = s.training_set(n_g=n, n_shadows=n_sh)
                rows_of_pool = np.r_[0:n, n_all:n_all + n_neg + n_sh * per_shadow]
                for method in DISCRIMINATING_METHODS:
                    key = dict(G=s.name, n_g=n, n_shadows=n_sh, method=method)
                    if n_sh and method in UNSUPERVISED:   # the same detector as with none
                        # (the smallest count of the config is 0)
                        rows += [dict(r, n_shadows=n_sh) for r in rows if r["G"] == s.name
                                 and r["n_g"] == n and r["n_shadows"] == 0
                                 and r["method"] == method]
                        continue
                    on_z = M.REGISTRY[method].input == "features"
                    est = _fit(M.build(method, ctx, inverted=True),
                               Z_pool[rows_of_pool] if on_z else X_tr, y_tr)
                    for label in sets:
                        tests = Z_sets[label] if on_z else sets[label]
                        groups = _group_means(P.score_sources(est, tests)[1], s.groups)
                        rows += [dict(key, test=label, group=g, **m) for g, m in groups.items()]
                log(f"efficiency: {s.name} n={n} shadows={n_sh} "
                    f"({time.perf_counter() - t_start:.1f}s)")
    P.write_csv(os.path.join(out_dir, "efficiency.csv"), rows)
    md = _efficiency_markdown(rows, cfg, config, t_start, out_dir, log)
    _efficiency_figure(rows, cfg, os.path.join(out_dir, "efficiency.png"))
    return rows, md


def _mean_std(values):
    v = np.asarray(values, dtype=float)
    if not len(v):
        return "–"
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std():.3f}"


def _held_out_text(cfg):
    """How many of the n samples of G the detectors hold out (validation_size="auto")."""
    sizes = [_n_validation(n, "auto", cfg["validation_fraction"], FNRS[0]) for n in cfg["n_gs"]]
    return (f"max({cfg['validation_fraction']:.0%}, min({required_validation_size(FNRS[0])}, "
            f"n / 2)): " + ", ".join(f"{k} of {n}" for k, n in zip(sizes, cfg["n_gs"])))


def _efficiency_markdown(rows, cfg, config, t_start, out_dir, log):
    cols = [("clean", "same-arch-unseen", "acc@0.005"), ("clean", "same-arch-unseen", "auc"),
            ("clean", "other-arch", "acc@0.005"), ("clean", "other-arch", "auc"),
            ("clean", "real", "acc@0.005"),
            (EFFICIENCY_PERTURBATION, "same-arch-unseen", "acc@0.005"),
            (EFFICIENCY_PERTURBATION, "same-arch-unseen", "auc")]
    table = []
    for key in dict.fromkeys((r["n_g"], r["n_shadows"], r["method"]) for r in rows):
        line = {"n (G)": key[0], "shadows": key[1], "method": key[2]}
        for test, group, m in cols:
            line[f"{'' if test == 'clean' else test + ' '}{group} {m}"] = _mean_std(
                [r[m] for r in rows if (r["n_g"], r["n_shadows"], r["method"]) == key
                 and r["test"] == test and r["group"] == group])
        table.append(line)
    gs = ", ".join(f"{k}-s{sd}" for k in cfg["g_kinds"] for sd in cfg["g_seeds"])
    return P.write_markdown(
        os.path.join(out_dir, "efficiency.md"),
        f"Sample efficiency ({config}, G = {gs}, {P.elapsed_min(t_start):.1f} min)",
        [f"n samples of G for training (held out for the thresholds: "
         f"{_held_out_text(cfg)}), {cfg['n_real']} real images and 0 to all shadows "
         f"({cfg['n_shadow']} samples in all) as labelled negatives; "
         f"{cfg['n_test']} test samples per source; other-arch: mean over the "
         f"other kinds; {EFFICIENCY_PERTURBATION}: every test image JPEG-compressed, "
         "detectors trained on clean images.  Mean (± std over the G when there "
         "are several).", ""] + P.markdown_table(table, list(table[0])), log=log)


def _curve(rows, x_key, match, metric):
    """``(x, mean, std)`` of ``metric`` over the rows matching ``match`` at each x."""
    xs = sorted({r[x_key] for r in rows if all(r[k] == v for k, v in match.items())})
    vals = [[r[metric] for r in rows if r[x_key] == x
             and all(r[k] == v for k, v in match.items())] for x in xs]
    return xs, [float(np.mean(v)) for v in vals], [float(np.std(v)) for v in vals]


def _efficiency_figure(rows, cfg, path):
    """Accuracy at fnr 0.005 against the unseen seed of G's kind, over n, one
    panel per number of shadows (and one for the JPEG-compressed tests)."""
    n_sh = sorted({r["n_shadows"] for r in rows})
    curves = {}
    for k in n_sh:
        curves[f"{k} shadow(s): G vs same-arch-unseen"] = {
            m: _curve(rows, "n_g", dict(method=m, n_shadows=k, test="clean",
                                        group="same-arch-unseen"), "acc@0.005")
            for m in DISCRIMINATING_METHODS}
    curves[f"{n_sh[-1]} shadow(s), {EFFICIENCY_PERTURBATION} tests"] = {
        m: _curve(rows, "n_g", dict(method=m, n_shadows=n_sh[-1],
                                    test=EFFICIENCY_PERTURBATION, group="same-arch-unseen"),
                  "acc@0.005") for m in DISCRIMINATING_METHODS}
    P.plot_curves(path, curves, xlabel="training samples of G", ylabel="accuracy at fnr 0.005",
                  title="Sample efficiency", xlog=True)


# ------------------------------------------------- G's checkpoints and fine-tuned copies
FINETUNE = {
    "quick": dict(g_kinds=("dcgan",), checkpoint_epochs=(2, 3), finetune_steps=(0, 5, 20),
                  warmup=10, n_g=120, n_real=80, n_shadow=80, n_test=40),
    "full": dict(g_kinds=("dcgan",), checkpoint_epochs=(1, 2, 3, 4),
                 finetune_steps=(0, 1, 3, 10, 100, 1000), warmup=100, n_g=500, n_real=200,
                 n_shadow=200, n_test=100, validation_fraction=0.4, deep_sad=None),
}
DERIVED_DRAW = 1003     # another draw than G's test samples: k = 0 is G itself


def run_finetune(config="quick", out_dir="bench_out", cache_dir=DEFAULT_CACHE, kinds=None,
                 log=print):
    """The hardest others: G's own checkpoints from other epochs, and the
    IP-theft question: copies of G fine-tuned for k steps on MNIST (a fresh
    discriminator, :func:`train_zoo.finetune_generator`).

    G: seed 0 of each kind of ``g_kinds``; detectors (``DISCRIMINATING_METHODS``)
    trained once under the shadows protocol.  Per checkpoint: accuracy and
    AUC of G against it (balanced) and the share of its samples attributed
    to G; per fine-tuned copy: the share attributed to G at each fnr and the
    AUC of G against it.  Writes ``finetune.csv``, ``finetune.md``,
    ``finetune.png`` and ``checkpoints.png``.
    """
    from .train_zoo import ensure_checkpoints, ensure_finetuned

    cfg = _config(config, PERTURBATION_SIZES, FINETUNE, kinds=kinds)
    z = cfg["zoo"]
    t_start = time.perf_counter()
    zoo = P.load_zoo(z, cache_dir, log)
    real = P.real_pool(z["image_size"])
    rows = []
    for kind in cfg["g_kinds"]:
        seed = z["seeds"][0]
        e_g = z["epochs"][kind] if isinstance(z["epochs"], dict) else int(z["epochs"])
        derived = {f"epoch {e}": ("checkpoint", e, G) for (_, _, e), G in ensure_checkpoints(
            cache_dir, (kind,), (seed,), cfg["checkpoint_epochs"], n_train=z["n_train"],
            image_size=z["image_size"], epochs=z["epochs"], log=log).items()}
        derived.update({f"fine-tuned {k} steps": ("finetune", k, G) for k, G in ensure_finetuned(
            cache_dir, kind, seed, cfg["finetune_steps"], n_train=z["n_train"],
            image_size=z["image_size"], epochs=z["epochs"], warmup=cfg["warmup"],
            log=log).items()})
        s = _setup(cfg, zoo, real, kind, seed)
        ctx = M.Context(s.G, s.anchor, cfg, random_state=0)
        tests = dict(s.test, **{n: G.sample(cfg["n_test"], random_state=DERIVED_DRAW)
                                for n, (_, _, G) in derived.items()})
        X_tr, y_tr = s.training_set()
        Z_tr, Z_sets = _inverted_sets(ctx, X_tr, {"all": tests})
        for method in DISCRIMINATING_METHODS:
            on_z = M.REGISTRY[method].input == "features"
            est = _fit(M.build(method, ctx, inverted=True), Z_tr if on_z else X_tr, y_tr)
            det = P.detector_of(est)
            res = P.score_sources(est, Z_sets["all"] if on_z else tests)[1]
            key = dict(G=s.name, g_epochs=e_g, method=method)
            for g in dict.fromkeys(s.groups.values()):      # the image part's groups
                names = [n for n in s.groups if s.groups[n] == g]
                s_o = np.concatenate([res[n][0] for n in names])
                rows.append(dict(key, family=g, x="-", other=g, **P.attribution_rate(det, s_o),
                                 **P.mean_rows([res[n][1] for n in names])))
            rows += [dict(key, family=derived[n][0], x=derived[n][1], other=n,
                          **P.attribution_rate(det, res[n][0]), **res[n][1]) for n in derived]
        log(f"finetune: {s.name} done ({time.perf_counter() - t_start:.1f}s)")
    P.write_csv(os.path.join(out_dir, "finetune.csv"), rows)
    keys = ["G", "method", "other", "attr@0.005", "attr@0.05", "acc@0.005", "auc"]
    gs = ", ".join(f"{k}-s{z['seeds'][0]}" for k in cfg["g_kinds"])
    md = P.write_markdown(
        os.path.join(out_dir, "finetune.md"),
        f"G's checkpoints and fine-tuned copies ({config}, G = {gs}, "
        f"{P.elapsed_min(t_start):.1f} min)",
        [f"Detectors trained under the shadows protocol ({cfg['n_g']} samples of G, "
         f"{cfg['n_real']} real, {cfg['n_shadow']} shadow samples); {cfg['n_test']} test "
         "samples per source.  attr@fnr: the share of the other source's samples "
         "attributed to G (for a fine-tuned copy, what an owner chasing a stolen "
         "model wants high; for other sources, low); acc: balanced accuracy of G "
         "against it; auc: ROC AUC of G against it (0.5: indistinguishable).  "
         f"G was trained for {', '.join(str(r) for r in sorted({r['g_epochs'] for r in rows}))} "
         "epoch(s); 'epoch e': the same run stopped (or continued) at e; "
         f"'fine-tuned k steps': a copy of G after k GAN steps on MNIST with a fresh "
         f"discriminator ({cfg['warmup']} warm-up steps of the discriminator first).", "",
         "## Standard sources and G's checkpoints", ""]
        + P.markdown_table([r for r in rows if r["family"] != "finetune"], keys)
        + ["", "## Fine-tuned copies of G", ""]
        + P.markdown_table([r for r in rows if r["family"] == "finetune"], keys), log=log)
    _finetune_figures(rows, out_dir)
    return rows, md


def _finetune_figures(rows, out_dir):
    ft = {"fine-tuned copy attributed to G (fnr 0.005)": "attr@0.005",
          "AUC of G against the fine-tuned copy": "auc"}
    P.plot_curves(os.path.join(out_dir, "finetune.png"), {
        title: {m: _curve(rows, "x", dict(method=m, family="finetune"), metric)
                for m in DISCRIMINATING_METHODS} for title, metric in ft.items()},
        xlabel="fine-tuning steps k", ylabel="", title="Fine-tuned copies of G", xlog=True)
    ck = {"G vs its checkpoint: accuracy at fnr 0.005": "acc@0.005",
          "G vs its checkpoint: AUC": "auc"}
    P.plot_curves(os.path.join(out_dir, "checkpoints.png"), {
        title: {m: _curve(rows, "x", dict(method=m, family="checkpoint"), metric)
                for m in DISCRIMINATING_METHODS} for title, metric in ck.items()},
        xlabel="epochs of the checkpoint", ylabel="", title="G's own checkpoints")


def _tabular_part(config, out_dir, cache_dir, log=print):
    """The authors' tabular recipe (``attribution_tabular.py``) when sdv is installed.

    Without the ``sdv`` extra, the others are the two light generator families
    of :mod:`flipad_sklearn.generators` (:func:`run_tabular`), as before.
    """
    try:
        import sdv  # noqa: F401
    except ImportError:
        log("tabular: sdv is not installed (pip install 'flipad_sklearn[sdv]'): "
            "GaussianMixture / GaussianCopula others instead of TVAE / CTGAN / CopulaGAN")
        return run_tabular(config, out_dir, cache_dir, log=log)
    from . import attribution_tabular
    return attribution_tabular.run(config, out_dir, cache_dir, log=log)


PARTS = ("image", "tabular", "perturbations", "ablation", "efficiency", "finetune",
         "published")


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
    p.add_argument("--recipe", default="default", choices=PUBLISHED_RECIPES,
                   help="--part published: 'immunise' adds the recipe immunised on both "
                        "sides by a perturbation mixture, side by side with the default "
                        "(published_immunise.md)")
    p.add_argument("--parallel", action="store_true",
                   help="with --part all: run the image part in one process and the other "
                        "parts in a second one (two cores; the zoo is trained first)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.parallel and args.part == "all":
        return _run_parallel(args, argv)
    with warnings.catch_warnings():
        # fnr=0.005 needs >= 199 held-out samples; --quick holds out 10-30 (max is used)
        warnings.simplefilter("ignore", ThresholdWarning)
        config = "quick" if args.quick else "full"
        if args.part in ("all", "image"):
            run(config, args.out, args.cache_dir, args.kinds, args.seeds, args.g_seeds,
                figures=not args.no_figures)
        if args.part in ("all", "tabular"):
            _tabular_part(config, args.out, args.cache_dir)
        if args.part in ("all", "perturbations"):
            run_perturbations(config, args.out, args.cache_dir)
        if args.part in ("all", "ablation"):
            run_ablation(config, args.out, args.cache_dir)
        if args.part in ("all", "efficiency"):
            run_efficiency(config, args.out, args.cache_dir, args.kinds)
        if args.part in ("all", "finetune"):
            run_finetune(config, args.out, args.cache_dir, args.kinds)
        if args.part in ("all", "published"):
            run_published(config, args.out, args.cache_dir, args.kinds, args.seeds,
                          args.g_seeds, recipe=args.recipe)
    return 0


def _run_parallel(args, argv):
    """``--part all`` as two processes: ``image``, and the other parts one after
    the other."""
    import subprocess

    from .train_zoo import ensure_tabular_zoo

    config = "quick" if args.quick else "full"
    # train what is missing once, here, so that the two processes only read the cache
    P.load_zoo(_config(config, kinds=args.kinds, seeds=args.seeds)["zoo"], args.cache_dir)
    tcfg = TABULAR_CONFIGS[config]
    ensure_tabular_zoo(args.cache_dir, tcfg["seeds"], epochs=tcfg["epochs"])
    base = [sys.executable, "-m", __spec__.name] + [
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--parallel"]
    t0 = time.perf_counter()
    # run from the folder above the package, so that ``-m benchmarks.attribution`` resolves
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    image = subprocess.Popen(base + ["--part", "image"], cwd=root)
    rc = 0
    for part in PARTS[1:]:
        rc |= subprocess.call(base + ["--part", part], cwd=root)
    rc |= image.wait()
    print(f"all parts: {(time.perf_counter() - t0) / 60:.1f} min (two processes)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
