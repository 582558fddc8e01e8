"""Do the features, and the verdicts, come out the same whatever computes them?

A verdict is evidence: someone re-scores the same images with the saved
detector on another machine, one image at a time, with another solver.  The
features are the unique solution of the elastic net ``FinalLayerInverter``
states (``ridge > 0``), and each sample's certified distance to it is
``feature_error_``.  This benchmark measures, at the defaults a user gets:

1. **Features.**  Per layer, the defaults (``solver="auto"``, automatic batch,
   2 torch threads) against the same images at ``batch_size`` 1 and 7, one
   torch thread, every other solver that takes the layer, and a reference
   solve in float64 certified to ``feature_tol=1e-5``: the largest and the median
   relative L2 difference per sample, the largest reported bound, and how
   many samples break the bound (``||z - z_ref|| > (e + e_ref) ||z_ref||``).
   Layers: the demo's trained DCGAN (28x28 MNIST, real activations), the
   DCGAN ``ConvTranspose2d(64, 3, 4, 2, 1)`` at 64x64 (random weights, scaled
   as in ``bench_inversion.py``), the same layer with the published face
   DCGAN's trained weights and real activations (``pip install --no-deps
   gan-face-generate``; skipped without it), LSGAN ``Conv2d(64, 3, 3, 1, 1)``
   at 64x64 and Stable Diffusion's ``conv_out`` at 128x128.
2. **Verdicts.**  The demo's pipeline (``make_flipad`` at its defaults, fnr
   0.005) scores 1000 test images (G, real digits, two unseen generators)
   from features computed each of those ways: labels flipped, largest score
   and p-value change, and what the p-value changes are made of: a conformal
   p-value moves in steps of ``1/(n_val + 1)``, only where a held-out score
   lies between a test image's two scores (the crossings, how far the crossed
   held-out score is from the image's score, and the image's score change).
3. **Verdicts, calibrated as ``flipad fit`` calibrates.**  The same pipeline
   and features, its threshold set with ``calibrate`` on 1000 fresh samples of
   G: p-values in steps of 1/1001 instead of 1/(n_val + 1); labels flipped,
   largest p-value change and crossings side by side with table 2's.

``s/sample`` is the wall time of the call, the first call's per-layer set-up
(ADMM's factorisations) included: a rough cost on a shared machine, not the
speed claim, which ``bench_inversion.py`` measures against the baseline.

Run: ``python -m benchmarks.bench_reproducibility [--quick] [--only NAME]
[--no-features] [--no-verdicts] [--out FILE]``;
writes ``benchmarks/results/bench_reproducibility.md`` (``--quick``: a temporary
folder unless ``--results-dir`` is given).
"""

import argparse
import copy
import os
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import (FinalLayerInverter, calibrate, mean_activation,
                            required_validation_size, sample_activations)
from flipad_sklearn.lasso.solvers import make_solver

from ._harness import problem, scaled_layer
from ._results import add_result_args, results_dir, write_result


THREADS = 2
SOLVERS = ("fista", "admm", "split_admm")


def with_threads(n, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def run_variant(inv, X, threads=THREADS, **params):
    """Features of ``X`` from a re-fitted copy of ``inv`` with ``params``; (Z, inverter, s/sample)."""
    v = clone(inv).set_params(**params).fit(X[:1])

    def go():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            Z = v.transform(X)
        return Z.astype(np.float64), (time.perf_counter() - t0) / len(X)

    Z, sec = with_threads(threads, go)
    return Z, v, sec


def variants(inv, X):
    """``name -> params`` of every comparison, for the fitted default ``inv``."""
    out = {"batch_size=1": dict(batch_size=1), "batch_size=7": dict(batch_size=7),
           "1 torch thread": dict(threads=1)}
    for s in SOLVERS:
        if s != inv.solver_ and make_solver(s).supports(inv.operator_) is None:
            out[f"solver={s}"] = dict(solver=s)
    if torch.cuda.is_available():
        # the other device than the one the defaults ran on: CPU against CUDA
        other = "cpu" if inv._device().type == "cuda" else "cuda"
        out[f"device={other}"] = dict(device=other)
    return out


def feature_table(name, inv, X):
    """Rows of table 1 for one layer (``inv`` unfitted, at the defaults)."""
    Z0, d0, sec0 = run_variant(inv, X)
    Zr, dr, secr = run_variant(inv, X, feature_tol=1e-5, precision="float64", max_iter=5000)
    # the scale the feature bound is stated in: max(||z*||, feature_scale_)
    ref_norm = np.maximum(np.linalg.norm(Zr, axis=1), dr.feature_scale_)
    rows = []

    def row(label, Z, fit, sec):
        dist = np.linalg.norm(Z - Z0, axis=1) / ref_norm
        to_ref = np.linalg.norm(Z - Zr, axis=1) / ref_norm
        broken = int(np.sum(to_ref > (fit.feature_error_ + dr.feature_error_) * 1.0001))
        reasons = ",".join(sorted(set(fit.stop_reason_)))
        rows.append(f"| {name} | {label} ({fit.solver_}) | {dist.max():.1e} | "
                    f"{np.median(dist):.1e} | {to_ref.max():.1e} | "
                    f"{fit.feature_error_.max():.1e} | {broken} / {len(X)} | "
                    f"{int(np.median(fit.n_iter_))} | {sec:.3f} | {reasons} |")

    row("defaults", Z0, d0, sec0)
    for label, params in variants(d0, X).items():
        threads = params.pop("threads", THREADS)
        Z, fit, sec = run_variant(inv, X, threads=threads, **params)
        row(label, Z, fit, sec)
    row("reference (float64, feature_tol 1e-5)", Zr, dr, secr)
    return rows, d0


def layers(quick, only):
    """``name -> (unfitted inverter at the defaults, X)``, built lazily."""
    def demo():
        from flipad_sklearn.generators import load_demo_generator

        G = load_demo_generator("G")
        X = G.sample(16 if quick else 64, random_state=5)
        anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
        return FinalLayerInverter(G.final_layer, anchor=anchor, positive=True), X

    def synthetic(layer, in_shape, n, activation="tanh", alpha=5e-4):
        torch.manual_seed(0)
        layer = scaled_layer(layer, 0.025 if activation == "tanh" else 0.01, in_shape)
        x, anchor = problem(layer, in_shape, n, activation)
        return FinalLayerInverter(layer, activation=activation, alpha=alpha,
                                  anchor=anchor), x.reshape(n, -1)

    def face():
        try:
            import gan_face_generate
            from gan_face_generate.models import Generator
        except ImportError:
            return None
        G = Generator(0, 3, 100, 64)
        path = os.path.join(os.path.dirname(gan_face_generate.__file__), "weights.tar")
        G.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"])
        G.eval()
        final = G.main[-2]
        n = 4 if quick else 8
        anchor = mean_activation(G, 500, (100, 1, 1), layer=final, random_state=0)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            X = G(torch.randn((n, 100, 1, 1), generator=gen)).reshape(n, -1).numpy()
        return FinalLayerInverter(final, anchor=anchor), X.astype(np.float64)

    table = {
        "demo DCGAN 28x28 (trained)": demo,
        "DCGAN ConvT(64,3,4,2,1) 64x64": lambda: synthetic(
            nn.ConvTranspose2d(64, 3, 4, 2, 1), (64, 32, 32), 4 if quick else 8),
        "face DCGAN (published weights)": face,
        "LSGAN Conv2d(64,3,3,1,1) 64x64": lambda: synthetic(
            nn.Conv2d(64, 3, 3, 1, 1), (64, 64, 64), 2 if quick else 4),
        "SD conv_out 128x128": lambda: synthetic(
            nn.Conv2d(128, 3, 3, 1, 1), (128, 128, 128), 2, activation="identity",
            alpha=1e-5),
    }
    for name, build in table.items():
        if only and only.lower() not in name.lower():
            continue
        if quick and name.startswith("SD"):
            continue
        built = build()
        if built is not None:
            yield name, built


def verdict_table(quick):
    """Table 2: the demo's pipeline scoring features computed each way."""
    from flipad_sklearn.datasets import load_mnist_subset
    from flipad_sklearn.generators import load_demo_generator
    from flipad_sklearn.pipeline import make_flipad

    gens = {k: load_demo_generator(k) for k in ("G", "shadow", "unseen", "other")}
    G = gens["G"]
    X_real, _ = load_mnist_subset(return_X_y=True)
    X_real = X_real[np.random.default_rng(0).permutation(len(X_real))]
    n_test = 50 if quick else 250
    X_train = np.concatenate([G.sample(400, random_state=100), X_real[:150],
                              gens["shadow"].sample(150, random_state=101)])
    y_train = np.r_[np.ones(400), -np.ones(300)].astype(int)
    X_test = np.concatenate([G.sample(n_test, random_state=200), X_real[150:150 + n_test],
                             gens["unseen"].sample(n_test, random_state=202),
                             gens["other"].sample(n_test, random_state=203)])
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
    pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=0.005,
                       random_state=0, device="cpu",
                       detector_params=dict(n_epochs=20 if quick else 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with_threads(THREADS, lambda: pipe.fit(X_train, y_train))
    inv, rest, det = pipe[0], pipe[1:-1], pipe[-1]
    Z0, d0, _ = run_variant(inv, X_test)

    def verdicts(det, Z):
        F = rest.transform(Z)
        return det.decision_function(F), det.pvalues(F), det.score_samples(F)

    def crossings(held_out, c0, c):
        """Samples whose p-value moved: a held-out score lies between their two
        scores.  ``(count, the crossed held-out score's largest distance to the
        defaults' score, their largest score change)``."""
        lo, hi = np.minimum(c0, c), np.maximum(c0, c)
        moved = np.searchsorted(held_out, hi, side="right") > np.searchsorted(
            held_out, lo, side="right")
        if not moved.any():
            return 0, "-", "-"
        dist = [np.abs(held_out[(held_out > lo[i]) & (held_out <= hi[i])] - c0[i]).max()
                for i in np.flatnonzero(moved)]
        return int(moved.sum()), f"{max(dist):.1e}", f"{np.abs(c - c0)[moved].max():.1e}"

    def compare(det, Z):
        """Against the defaults' features, scored by ``det``: labels flipped,
        score change, p-value change, crossings (count, crossed at, their change)."""
        held_out = np.sort(np.asarray(det.validation_scores_, dtype=np.float64))
        s0, p0, c0 = verdicts(det, Z0)
        s, p, c = verdicts(det, Z)
        moved = p != p0
        # where the moved p-values lie: near the threshold (small p) they could
        # flip a verdict, near 1 they say the same thing
        low = f"{np.minimum(p, p0)[moved].min():.3f}" if moved.any() else "-"
        return (int(np.sum((s >= 0) != (s0 >= 0))), np.abs(s - s0).max(),
                np.abs(p - p0).max()) + crossings(held_out, c0, c) + (low,)

    # The same fitted pipeline, its threshold and p-values set on fresh samples of
    # G (not used in training) with the package's public calibrate, as
    # ``flipad fit`` does: max(required_validation_size(fnr), 1000) of them.
    n_fresh = max(required_validation_size(det.fnr), 1000)
    fresh = copy.deepcopy(pipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with_threads(THREADS, lambda: calibrate(fresh, G.sample(n_fresh, random_state=300)))
    det_fresh = fresh[-1]

    rows = [f"| defaults ({d0.solver_}) | 0 | 0 | 0 | - | - | 0 / {len(X_test)} | "
            f"{d0.feature_error_.max():.1e} |"]
    side = [f"| defaults ({d0.solver_}) | 0 / {len(X_test)} | 0 / {len(X_test)} | 0 | 0 "
            f"| 0 | 0 | - | - |"]
    for label, params in variants(d0, X_test).items():
        threads = params.pop("threads", THREADS)
        Z, fit, _ = run_variant(inv, X_test, threads=threads, **params)
        flipped, ds, dp, n_cross, dist, change, low = compare(det, Z)
        rows.append(f"| {label} ({fit.solver_}) | {ds:.1e} | {dp:.1e} | {n_cross} | "
                    f"{dist} | {change} | {flipped} / {len(X_test)} | "
                    f"{fit.feature_error_.max():.1e} |")
        flipped_f, _, dp_f, n_cross_f, _, _, low_f = compare(det_fresh, Z)
        side.append(f"| {label} ({fit.solver_}) | {flipped} / {len(X_test)} | "
                    f"{flipped_f} / {len(X_test)} | {dp:.1e} | {dp_f:.1e} | "
                    f"{n_cross} | {n_cross_f} | {low} | {low_f} |")
    s0 = verdicts(det, Z0)[0]
    spread = np.percentile(s0, 95) - np.percentile(s0, 5)
    n_val = np.size(det.validation_scores_)
    n_val_fresh = np.size(det_fresh.validation_scores_)
    return rows, side, spread, len(X_test), n_val, n_val_fresh


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples, no SD layer")
    p.add_argument("--only", default="", help="layers whose name contains this")
    p.add_argument("--no-verdicts", action="store_true", help="skip table 2")
    p.add_argument("--no-features", action="store_true", help="skip table 1")
    p.add_argument("--out", default=None,
                   help="name of the result file (default bench_reproducibility.md)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    out = ["# Reproducibility of the features and verdicts at the defaults", "",
           "## 1. Features: each way of computing them against the defaults", "",
           "Relative L2 per sample (to max(||z_ref||, feature_scale_), the scale the bound "
           "is stated in; ||z_ref|| on every sample here unless the solution is ~0).  "
           "*bound broken*: samples with ||z - z_ref|| > (feature_error_ + the "
           "reference's) max(||z_ref||, feature_scale_).", "",
           "| layer | computed with | max diff to defaults | median | max diff to "
           "reference | max reported bound | bound broken | median iterations | "
           "s/sample | stop reasons |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (inv, X) in ([] if args.no_features else layers(args.quick, args.only)):
        rows, _ = feature_table(name, inv, X)
        out.extend(rows)
        print("\n".join(rows), flush=True)
    if not args.no_verdicts:
        rows, side, spread, n, n_val, n_fresh = verdict_table(args.quick)
        out += ["", f"## 2. Verdicts: the demo's pipeline scoring {n} test images", "",
                f"Scores' 5-95 % spread {spread:.2f}; threshold at 0.  A conformal p-value "
                f"moves in steps of 1/(n_val + 1) = {1 / (n_val + 1):.1e} ({n_val} held-out "
                "scores of G): it moves only where a held-out score lies between a test "
                "image's two scores (*crossings*; *crossed at*: the largest distance of such "
                "a held-out score to the defaults' score; *their score change*: the largest "
                "score change of those images).", "",
                "| features computed with | max score change | max p-value change | "
                "crossings | crossed at | their score change | labels flipped | "
                "max reported bound |", "|---|---|---|---|---|---|---|---|"] + rows
        out += ["", f"## 3. Verdicts with the threshold set on {n_fresh} fresh samples of G", "",
                f"The same fitted pipeline and the same features as table 2, its threshold "
                f"and p-values recalibrated with ``calibrate`` on {n_fresh} fresh samples of "
                f"G (what ``flipad fit`` does): a p-value then moves in steps of "
                f"1/({n_fresh} + 1) = {1 / (n_fresh + 1):.1e}, against {1 / (n_val + 1):.1e} "
                f"with the {n_val} held-out scores.  Labels flipped and crossings are "
                "counted against the defaults' features under each calibration; *smallest "
                "moved p-value*: the smallest p-value (of the two) of the images whose "
                "p-value moved (near the fnr it could flip a verdict, near 1 it cannot).", "",
                f"| features computed with | labels flipped ({n_val} held out) | labels "
                f"flipped ({n_fresh} fresh) | max p-value change ({n_val} held out) | "
                f"max p-value change ({n_fresh} fresh) | crossings ({n_val} held out) | "
                f"crossings ({n_fresh} fresh) | smallest moved p-value ({n_val} held out) | "
                f"smallest moved p-value ({n_fresh} fresh) |",
                "|---|---|---|---|---|---|---|---|---|"] + side
        print("\n".join(rows + [""] + side), flush=True)
    name = args.out or ("bench_reproducibility" + ("_quick" if args.quick else "") + ".md")
    path = write_result(name,
                        "\n".join(out), results_dir=results_dir(args))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
