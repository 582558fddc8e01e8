"""FLIPAD on a StyleGAN2-like generator: joint inversion of toRGB and the skip.

StyleGAN2's image is ``up(img_16) + W (s ⊙ h) + b``.  FLIPAD's fixed-W
lasso on the toRGB layer alone is misspecified (the upsampled skip image is
taken for part of ``W u``); :class:`~flipad_sklearn.SkipInverter`
inverts ``u`` and the skip jointly (the skip eliminated exactly, the same
certificate).  This benchmark compares, for G = the small StyleGAN2-like
generator of :mod:`flipad_sklearn.generators` trained on MNIST with seed 0:

* ``FLIPAD (joint)``: SkipInverter -> max pooling -> G-standardisation -> Deep SAD;
* ``FLIPAD (joint, u + skip)``: the same with the recovered, upsampled skip
  image as one more channel (``append_skip=True``);
* ``FLIPAD (fixed W)``: the standard FinalLayerInverter on the toRGB 1x1
  convolution alone, same steps after it;
* ``RAWPAD``: Deep SAD on the pixels (:func:`flipad_sklearn.make_rawpad`).

Protocols (as ``benchmarks/attribution.py``): ``paper`` (labelled negatives:
real MNIST) and ``shadows`` (real + samples of a shadow StyleGAN, seed 2).
Test sources: ``real`` (MNIST), ``same-arch-unseen`` (the StyleGAN of seed
1, never seen) and ``other-arch`` (the zoo's DCGAN).  Each detector holds
out part of G's training samples and thresholds at fnr = 0.005 with the
conformal rule; accuracy on balanced test sets (G's fresh samples against
each source's) and ROC AUC.  Also reported, on G's test samples under both
inversions: the mean objective, pixel residual, relative duality gap and the
relative error of the recovered ``u`` against the true one
(:meth:`~flipad_sklearn.generators.StyleGANGenerator.sample_final_unknowns`).

Generators are cached in ``--cache-dir`` (default that of
``benchmarks/train_zoo.py``, whose DCGAN it reuses when there).

Runtime on one CPU thread of the project's busy 2-core machine (2026-12-01):
``--quick`` 50-75 s; the full run 95-250 s once the generators are cached,
and training the three StyleGANs (5 epochs on 5000 images) 310-440 s each
the first time (the zoo's DCGAN is reused from ``train_zoo.py``'s cache).

Usage::

    python -m benchmarks.bench_stylegan --quick   # < 2 minutes, one thread
    python -m benchmarks.bench_stylegan           # full: benchmarks/results/bench_stylegan.md

``--quick`` writes to a temporary folder unless ``--results-dir`` is given.
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from flipad_sklearn import ThresholdWarning, make_flipad, make_rawpad, mean_activation
from flipad_sklearn.detection.conformal import conformal_threshold
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import load_generator, save_generator, train_stylegan
from flipad_sklearn.inversion import SkipInverter

from ._results import add_result_args, results_dir, write_result
from .train_zoo import DEFAULT_CACHE, ensure_image_zoo, mnist_train_images

FNR = 0.005

CONFIGS = {
    "quick": dict(n_train=320, epochs=1, dcgan_epochs=1, n_g=120, n_real=80, n_shadow=80,
                  n_test=40, validation_fraction=0.25, alpha=5e-4, max_iter=60, tol=1e-5,
                  n_anchor=300,
                  deep_sad=dict(hidden_sizes=(64, 32), rep_dim=16, n_epochs=10,
                                batch_size=40)),
    "full": dict(n_train=5000, epochs=5, dcgan_epochs=5, n_g=1000, n_real=400, n_shadow=400,
                 n_test=200, validation_fraction=0.2, alpha=5e-4, max_iter=300, tol=1e-5,
                 n_anchor=2000,
                 deep_sad=dict(hidden_sizes=(128, 64), rep_dim=32, n_epochs=30,
                               batch_size=128)),
}
METHODS = ("FLIPAD (joint)", "FLIPAD (joint, u + skip)", "FLIPAD (fixed W)", "RAWPAD")
G_SEED, UNSEEN_SEED, SHADOW_SEED = 0, 1, 2


def stylegan(cache_dir, seed, n_train, epochs, log=print):
    """The StyleGAN2-like G of ``seed`` (trained on the zoo's MNIST images, cached)."""
    path = os.path.join(cache_dir, f"stylegan2-seed{seed}-32px-e{epochs}-n{n_train}.pt")
    if os.path.exists(path):
        return load_generator(path)
    os.makedirs(cache_dir, exist_ok=True)
    t0 = time.perf_counter()
    G = train_stylegan(mnist_train_images(n_train, 32), epochs=epochs, seed=seed)
    save_generator(G, path + ".tmp")
    os.replace(path + ".tmp", path)
    log(f"trained stylegan2 seed {seed} in {time.perf_counter() - t0:.1f}s -> {path}")
    return G


def evaluate(det, s_g, s_o):
    """Accuracy at fnr (balanced) with the conformal threshold, and ROC AUC."""
    t = conformal_threshold(-det.validation_scores_, FNR)
    acc = 0.5 * (np.mean(-s_g <= t) + np.mean(-s_o > t))
    auc = roc_auc_score(np.r_[np.ones(len(s_g)), np.zeros(len(s_o))], np.r_[s_g, s_o])
    return acc, auc


def run(config="quick", cache_dir=DEFAULT_CACHE, log=print):
    cfg = CONFIGS[config]
    t_start = time.perf_counter()
    gens = {s: stylegan(cache_dir, s, cfg["n_train"], cfg["epochs"], log)
            for s in (G_SEED, UNSEEN_SEED, SHADOW_SEED)}
    dcgan = ensure_image_zoo(cache_dir, ("dcgan",), (0,), n_train=cfg["n_train"],
                             image_size=32, epochs=cfg["dcgan_epochs"], log=log)["dcgan", 0]
    t_gen = time.perf_counter() - t_start
    G = gens[G_SEED]
    n_g, n_real, n_sh, n_test = cfg["n_g"], cfg["n_real"], cfg["n_shadow"], cfg["n_test"]
    X_real, _ = load_mnist_subset(return_X_y=True, pad_to=32)
    X_real = X_real[np.random.default_rng(1).permutation(len(X_real))]
    X_g = G.sample(n_g, random_state=1001)
    X_sh = gens[SHADOW_SEED].sample(n_sh, random_state=1001)
    X_rtr = X_real[:n_real]
    # G's test samples with their true final unknowns u (same latent codes as sample)
    u_true, _, X_gtest = G.sample_final_unknowns(n_test, random_state=1002)
    test = {"G": X_gtest,
            "real": X_real[n_real:n_real + n_test],
            "same-arch-unseen": gens[UNSEEN_SEED].sample(n_test, random_state=1002),
            "other-arch": dcgan.sample(n_test, random_state=1002)}
    protocols = {"paper": (np.concatenate([X_g, X_rtr]), np.r_[np.ones(n_g), -np.ones(n_real)]),
                 "shadows": (np.concatenate([X_g, X_rtr, X_sh]),
                             np.r_[np.ones(n_g), -np.ones(n_real + n_sh)])}
    all_imgs = np.concatenate([X_g, X_rtr, X_sh] + list(test.values()))

    anchor = mean_activation(G, cfg["n_anchor"], G.latent_shape, layer=G.final_layer,
                             random_state=7, device="cpu")
    fin = G.final_operation()
    make = dict(alpha=cfg["alpha"], tol=cfg["tol"], max_iter=cfg["max_iter"], fnr=FNR,
                random_state=G_SEED, device="cpu")
    inverters = {
        "FLIPAD (joint)": SkipInverter(G.final_layer, upsample=fin["upsample"],
                                       activation=fin["activation"], anchor=anchor,
                                       alpha=cfg["alpha"], tol=cfg["tol"],
                                       max_iter=cfg["max_iter"], device="cpu"),
        "FLIPAD (fixed W)": make_flipad(G.final_layer, fin["activation"], anchor, **make)[0],
    }
    Z, fit_stats, t_inv = {}, {}, {}
    n_before = n_g + n_real + n_sh
    for name, inv in inverters.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            Z[name] = inv.fit(all_imgs).transform(all_imgs)
        t_inv[name] = time.perf_counter() - t0
        # G's test samples: objective and pixel residual of the model each inversion fits
        sl = slice(n_before, n_before + n_test)
        flat = all_imgs[sl].reshape(n_test, -1).astype(np.float64)
        if isinstance(inv, SkipInverter):
            rec = inv.inverse_transform(Z[name][sl].astype(np.float64), inv.skip_[sl])
        else:
            rec = inv.inverse_transform(Z[name][sl].astype(np.float64))
        fit_stats[name] = (float(np.mean(inv.objective_[sl])),
                           float(np.mean(np.linalg.norm(flat - rec, axis=1)
                                         / np.linalg.norm(flat, axis=1))),
                           float(np.mean(inv.duality_gap_[sl] / inv.objective_[sl])),
                           float(np.mean(np.linalg.norm(Z[name][sl] - u_true, axis=1)
                                         / np.linalg.norm(u_true, axis=1))))
        log(f"{name}: inversion of {len(all_imgs)} images in {t_inv[name]:.1f}s")
        if isinstance(inv, SkipInverter):
            # the same solution with the upsampled skip as one more channel
            # (what append_skip=True returns, without solving again)
            with torch.no_grad():
                up = inv.operator_.upsample_skip(torch.from_numpy(
                    inv.skip_.astype(np.float64))).numpy()
            Z["FLIPAD (joint, u + skip)"] = np.concatenate(
                [Z[name], up.astype(Z[name].dtype)], axis=1)

    rows = []
    for proto, (X_tr, y_tr) in protocols.items():
        for method in METHODS:
            ds = dict(cfg["deep_sad"], validation_fraction=cfg["validation_fraction"])
            if method == "RAWPAD":
                pipe = make_rawpad(activation=fin["activation"], fnr=FNR, random_state=G_SEED,
                                   device="cpu",
                                   detector_params=ds)
                feats = X_tr
                tests = test
            else:
                shape = anchor.shape
                if "skip" in method:
                    shape = (shape[0] + G.channels,) + shape[1:]
                pipe = make_flipad(G.final_layer, fin["activation"], np.zeros(shape),
                                   detector_params=ds, **make)[1:]
                feats = Z[method][:len(X_tr)]
                start, tests = n_before, {}
                for name, X in test.items():
                    tests[name] = Z[method][start:start + len(X)]
                    start += len(X)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ThresholdWarning)
                pipe.fit(feats, y_tr)
            s_g = pipe.score_samples(tests["G"])
            for src in ("real", "same-arch-unseen", "other-arch"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ThresholdWarning)   # quick: few held out
                    acc, auc = evaluate(pipe[-1], s_g, pipe.score_samples(tests[src]))
                rows.append(dict(protocol=proto, method=method, source=src, acc=acc, auc=auc))
    seconds = time.perf_counter() - t_start
    md = markdown(rows, fit_stats, t_inv, cfg, config, seconds, t_gen, len(all_imgs))
    log(md)
    return rows, md


def markdown(rows, fit_stats, t_inv, cfg, config, seconds, t_gen, n_inv):
    lines = [f"# FLIPAD on a StyleGAN2-like generator ({config})", "",
             f"G: StyleGAN2-like, MNIST 32x32, seed {G_SEED}, {cfg['epochs']} epochs on "
             f"{cfg['n_train']} images; {cfg['n_g']} samples of G for training "
             f"({cfg['validation_fraction']:.0%} held out), {cfg['n_real']} real "
             f"(+ {cfg['n_shadow']} of a shadow StyleGAN, seed {SHADOW_SEED}, under "
             f"`shadows`), {cfg['n_test']} test samples per source; alpha "
             f"{cfg['alpha']:g}, {cfg['max_iter']} iterations at most. "
             f"Accuracy at fnr = {FNR} (conformal threshold, balanced test) / ROC AUC.", "",
             "| protocol | method | real | same-arch-unseen (seed 1) | other-arch (DCGAN) |",
             "|---|---|---|---|---|"]
    for proto in ("paper", "shadows"):
        for method in METHODS:
            cells = []
            for src in ("real", "same-arch-unseen", "other-arch"):
                r = next(r for r in rows if (r["protocol"], r["method"], r["source"])
                         == (proto, method, src))
                cells.append(f"{r['acc']:.3f} / {r['auc']:.3f}")
            lines.append(f"| {proto} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "Inversion of G's test samples (mean over samples):", "",
              "| inversion | objective | relative pixel residual | relative gap | "
              f"relative error of u | seconds ({n_inv} images) |",
              "|---|---|---|---|---|---|"]
    for name, (obj, res, gap, err) in fit_stats.items():
        lines.append(f"| {name} | {obj:.4g} | {res:.3g} | {gap:.2g} | {err:.3f} "
                     f"| {t_inv[name]:.1f} |")
    lines += ["", f"Total {seconds:.0f} s on {torch.get_num_threads()} thread(s) "
              f"(generators {t_gen:.0f} s, cached after the first run)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny setting, under 2 minutes")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--out", default="bench_stylegan.md",
                   help="the result file's name in --results-dir (or a path)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = "quick" if args.quick else "full"
    _, md = run(config, args.cache_dir)
    print(f"written: {write_result(args.out, md, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
