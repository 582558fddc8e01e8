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

4. **Verdicts per ``feature_tol``** (``--feature-tols 5e-4,2e-4,...``): table
   3's comparisons with the pipeline fitted at each ``feature_tol`` and the
   features computed each way at that ``feature_tol``.
5. **Speed per ``feature_tol``** (with 4): ``bench_inversion.py``'s tables of
   the DCGAN, LSGAN and SD 128x128 layers, the FLIPAD authors' setting and
   the defaults at each ``feature_tol`` timed in the same run (1 torch
   thread).  Table 6 sums up the trade per ``feature_tol``.  Tables 4 to 6
   go to ``bench_reproducibility_feature_tol.md``.

``s/sample`` is the wall time of the call, the first call's per-layer set-up
(ADMM's factorisations) included: a rough cost on a shared machine, not the
speed claim, which ``bench_inversion.py`` measures against the baseline.

Run: ``python -m benchmarks.bench_reproducibility [--quick] [--only NAME]
[--no-features] [--no-verdicts] [--feature-tols TOLS] [--out FILE]``;
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
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import (FinalLayerInverter, calibrate, mean_activation,
                            required_validation_size)
from flipad_sklearn.inversion import DEFAULT_FEATURE_TOL
from flipad_sklearn.lasso.solvers import make_solver

from ._harness import problem, scaled_layer
from ._results import add_result_args, captured, results_dir, write_result


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
    """Features of ``X`` from a re-fitted copy of ``inv`` with ``params``;
    (Z, inverter, s/sample)."""
    v = clone(inv).set_params(**params).fit(X[:1])

    def go():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            Z = v.transform(X)
        return Z.astype(np.float64), (time.perf_counter() - t0) / len(X)

    Z, sec = with_threads(threads, go)
    return Z, v, sec


def variants(inv, X, threads=THREADS):
    """``name -> params`` of every comparison, for the fitted default ``inv``
    (run with ``threads`` torch threads; the other thread count: 1, or 2 if 1)."""
    other = 2 if threads == 1 else 1
    out = {"batch_size=1": dict(batch_size=1), "batch_size=7": dict(batch_size=7),
           f"{other} torch thread{'s' * (other > 1)}": dict(threads=other)}
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
        G.load_state_dict(torch.load(path, map_location="cpu",
                                     weights_only=True)["netG_state_dict"])
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


def verdict_results(quick, inverter_params=None, threads=THREADS):
    """The demo's pipeline (``make_flipad`` at its defaults and ``inverter_params``)
    scoring the test images from features computed each way (:func:`variants`).

    Returns ``(results, meta)``: per way, a dict of the comparisons against
    the defaults' features under the pipeline's own threshold (199 held-out
    scores) and recalibrated on fresh samples of G (keys ending in ``_f``).
    The defaults run on ``threads`` torch threads.
    """
    from flipad_sklearn.datasets import load_mnist_subset
    from flipad_sklearn.generators import load_demo_generator
    from flipad_sklearn.pipeline import make_flipad

    gens = {k: load_demo_generator(k) for k in ("G", "shadow", "unseen", "other")}
    G = gens["G"]
    X_real, _ = load_mnist_subset(return_X_y=True)
    X_real = X_real[np.random.default_rng(0).permutation(len(X_real))]
    n_test = 50 if quick else 250
    X_gen = G.sample(400, random_state=100)
    X_train = np.concatenate([X_gen, X_real[:150],
                              gens["shadow"].sample(150, random_state=101)])
    y_train = np.r_[np.ones(400), -np.ones(300)].astype(int)
    X_test = np.concatenate([G.sample(n_test, random_state=200), X_real[150:150 + n_test],
                             gens["unseen"].sample(n_test, random_state=202),
                             gens["other"].sample(n_test, random_state=203)])
    # the calibration samples of table 3: max(required_validation_size(fnr), 1000)
    X_fresh = G.sample(max(required_validation_size(0.005), 1000), random_state=300)
    # the test images are fresh: none is a training (held-out) or calibration image
    closest = min(cdist(X_test.reshape(len(X_test), -1), A.reshape(len(A), -1)).min()
                  for A in (X_train, X_fresh))
    assert closest > 0, "a test image is also a training or calibration image"
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
    pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=0.005,
                       random_state=0, device="cpu", inverter_params=inverter_params,
                       detector_params=dict(n_epochs=20 if quick else 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with_threads(threads, lambda: pipe.fit(X_train, y_train))
    inv, rest, det = pipe[0], pipe[1:-1], pipe[-1]
    Z0, d0, _ = run_variant(inv, X_test, threads=threads)

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
        return dict(zip(("flipped", "ds", "dp", "cross", "dist", "change", "low"),
                        (int(np.sum((s >= 0) != (s0 >= 0))), np.abs(s - s0).max(),
                         np.abs(p - p0).max()) + crossings(held_out, c0, c) + (low,)))

    # The same fitted pipeline, its threshold and p-values set on fresh samples of
    # G (not used in training) with the package's public calibrate, as
    # ``flipad fit`` does.
    fresh = copy.deepcopy(pipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with_threads(threads, lambda: calibrate(fresh, X_fresh))
    det_fresh = fresh[-1]

    ref_norm = np.maximum(np.linalg.norm(Z0, axis=1), d0.feature_scale_)
    results = [dict(label="defaults", solver=d0.solver_, bound=d0.feature_error_.max(),
                    diff=0.0, iters=float(np.median(d0.n_iter_)),
                    **compare(det, Z0),
                    **{k + "_f": v for k, v in compare(det_fresh, Z0).items()})]
    for label, params in variants(d0, X_test, threads).items():
        Z, fit, _ = run_variant(inv, X_test, threads=params.pop("threads", threads), **params)
        results.append(dict(
            label=label, solver=fit.solver_, bound=fit.feature_error_.max(),
            diff=float((np.linalg.norm(Z - Z0, axis=1) / ref_norm).max()),
            iters=float(np.median(fit.n_iter_)), **compare(det, Z),
            **{k + "_f": v for k, v in compare(det_fresh, Z).items()}))
    s0 = verdicts(det, Z0)[0]
    held = np.sort(np.asarray(det.validation_scores_, dtype=np.float64))
    meta = dict(spread=np.percentile(s0, 95) - np.percentile(s0, 5), n=len(X_test),
                n_val=held.size, n_fresh=np.size(det_fresh.validation_scores_),
                held_lo=held[0], held_hi=held[-1], held_gap=float(np.median(np.diff(held))),
                closest=closest, feature_tol=d0.feature_tol)
    return results, meta


def verdict_table(quick):
    """Tables 2 and 3 (rows) and the facts their text quotes."""
    results, meta = verdict_results(quick)
    n = meta["n"]
    rows, side = [], []
    for r in results:
        name = f"{r['label']} ({r['solver']})"
        if r["label"] == "defaults":
            rows.append(f"| {name} | 0 | 0 | 0 | - | - | 0 / {n} | {r['bound']:.1e} |")
            side.append(f"| {name} | 0 / {n} | 0 / {n} | 0 | 0 | 0 | 0 | - | - |")
            continue
        rows.append(f"| {name} | {r['ds']:.1e} | {r['dp']:.1e} | {r['cross']} | "
                    f"{r['dist']} | {r['change']} | {r['flipped']} / {n} | {r['bound']:.1e} |")
        side.append(f"| {name} | {r['flipped']} / {n} | {r['flipped_f']} / {n} | "
                    f"{r['dp']:.1e} | {r['dp_f']:.1e} | {r['cross']} | {r['cross_f']} | "
                    f"{r['low']} | {r['low_f']} |")
    return rows, side, meta


def feature_tol_tables(quick, tols):
    """Tables 4 and 5: table 3's verdicts with the pipeline fitted at each
    ``feature_tol``, and the defaults' speed at each ``feature_tol`` beside the
    FLIPAD authors' setting on the DCGAN, LSGAN and SD layers (one torch thread,
    :func:`benchmarks.bench_inversion.conv_table`)."""
    from .bench_inversion import conv_table
    from ._harness import paper_layer

    out = ["## 4. Verdicts per feature_tol (the demo's pipeline fitted at each, "
           "threshold on 1000 fresh samples of G)", "",
           "Per ``feature_tol``: the demo's pipeline fitted with it (all else at the "
           "defaults), recalibrated on fresh samples of G as in table 3, scoring the test "
           "images from features computed each way at that ``feature_tol``, against the "
           "defaults' features at the same ``feature_tol``.  *feature diff*: the largest "
           "relative L2 difference to the defaults' features; the p-value columns are "
           "those of the fresh calibration (steps of 1/1001).", "",
           "| feature_tol | features computed with | median iterations | feature diff (max) "
           "| max reported bound | labels flipped | max p-value change | crossings | "
           "smallest moved p-value |", "|---|---|---|---|---|---|---|---|---|"]
    worst = {}
    for tol in tols:
        results, meta = verdict_results(quick, dict(feature_tol=tol), threads=1)
        worst[tol] = (sum(r["flipped_f"] for r in results), max(r["dp_f"] for r in results),
                      meta["n"])
        rows = [f"| {tol:g} | {r['label']} ({r['solver']}) | {r['iters']:.0f} | "
                f"{r['diff']:.1e} | {r['bound']:.1e} | {r['flipped_f']} / {meta['n']} | "
                f"{r['dp_f']:.1e} | {r['cross_f']} | {r['low_f']} |" for r in results]
        out += rows
        print("\n".join(rows), flush=True)
    out += ["", "## 5. Speed per feature_tol against the FLIPAD authors' setting "
            "(``bench_inversion.py``'s tables, 1 torch thread)", "",
            "Each layer's baseline and the defaults at every ``feature_tol`` in the same "
            "run, their timed runs alternating (best of each)."]
    variants_ = {f"feature_tol={t:g}": dict(feature_tol=t) for t in tols
                 if t != DEFAULT_FEATURE_TOL}
    n = 2 if quick else 4
    rep = dict(repeat=1, baseline_repeat=1) if quick else dict(repeat=3, baseline_repeat=1)
    specs = [("dcgan", None, "DCGAN final layer ConvTranspose2d(64, 3, 4, 2, 1), 64x64 output",
              1e-5, 10_000, n),
             ("lsgan", 32 if quick else 64, "LSGAN final layer Conv2d(64, 3, 3, 1, 1) on "
              "64x{side}x{side}", 1e-5, 10_000, n),
             ("sd", 32 if quick else 128, "SD VAE conv_out Conv2d(128, 3, 3, 1, 1) at "
              "{side}x{side}, identity", 0.0, 1000, 2)]
    speed = {}
    for name, side, title, stop, max_iter, n_layer in specs:
        layer, shape, act, alpha, step = paper_layer(name, side)

        def table():
            with captured() as buf:
                _, up = conv_table(title.format(side=side), layer, shape, activation=act,
                                   alpha=alpha, step=step, stop=stop, max_iter=max_iter,
                                   n=n_layer, device="cpu", variants=variants_, **rep)
            return buf.getvalue(), up
        text, up = with_threads(1, table)
        out.append(text.rstrip())
        speed[name] = [up["flipad defaults" if t == DEFAULT_FEATURE_TOL
                          else f"flipad defaults, feature_tol={t:g}"] for t in tols]
    out += ["", "## 6. The trade per feature_tol", "",
            "From tables 4 and 5: labels flipped summed over table 4's rows, the largest "
            "p-value change over them (target: 0 and <= 1e-3), and the speed-up over the "
            "authors' setting per layer (target: >= 20x).", "",
            "| feature_tol | labels flipped | max p-value change | DCGAN | LSGAN | SD | "
            "meets both |", "|---|---|---|---|---|---|---|"]
    for k, tol in enumerate(tols):
        flipped, dp, n_test = worst[tol]
        ups = [speed[name][k] for name in ("dcgan", "lsgan", "sd")]
        ok = flipped == 0 and dp <= 1e-3 + 1e-12 and min(ups) >= 20
        out.append(f"| {tol:g} | {flipped} / {n_test} | {dp:.1e} | "
                   + " | ".join(f"{u:.1f}x" for u in ups) + f" | {'yes' if ok else 'no'} |")
    print("\n".join(out[-len(tols) - 2:]), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples, no SD layer")
    p.add_argument("--only", default="", help="layers whose name contains this")
    p.add_argument("--no-verdicts", action="store_true", help="skip table 2")
    p.add_argument("--no-features", action="store_true", help="skip table 1")
    p.add_argument("--feature-tols", default="",
                   help="comma-separated feature_tol values: tables 4 and 5 only (verdicts "
                        "and speed per feature_tol), written to "
                        "bench_reproducibility_feature_tol.md")
    p.add_argument("--out", default=None,
                   help="name of the result file (default bench_reproducibility.md)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    if args.feature_tols:
        torch.set_num_threads(1)
        tols = [float(t) for t in args.feature_tols.split(",")]
        out = ["# Verdicts and speed per feature_tol", "",
               f"The default is feature_tol={DEFAULT_FEATURE_TOL:g}.  Verdicts: "
               "1 torch thread everywhere except the verdicts' thread row (2: with the "
               "machine's two cores shared, 2 threads for every solve cost ~30x).", ""]
        out += feature_tol_tables(args.quick, tols)
        name = args.out or ("bench_reproducibility_feature_tol"
                            + ("_quick" if args.quick else "") + ".md")
        print(f"written: {write_result(name, chr(10).join(out), results_dir=results_dir(args))}")
        return
    out = ["# Reproducibility of the features and verdicts at the defaults", ""]
    if not args.no_features:
        out += [
            "## 1. Features: each way of computing them against the defaults", "",
            "Relative L2 per sample (to max(||z_ref||, feature_scale_), the scale the bound "
            "is stated in; ||z_ref|| on every sample here unless the solution is ~0).  "
            "*bound broken*: samples with ||z - z_ref|| > (feature_error_ + the "
            "reference's) max(||z_ref||, feature_scale_).", "",
            "| layer | computed with | max diff to defaults | median | max diff to "
            "reference | max reported bound | bound broken | median iterations | "
            "s/sample | stop reasons |", "|---|---|---|---|---|---|---|---|---|---|"]
    else:
        out += ["Table 1 (features) is in ``bench_reproducibility.md`` (this run: "
                "``--no-features``)."]
    for name, (inv, X) in ([] if args.no_features else layers(args.quick, args.only)):
        rows, _ = feature_table(name, inv, X)
        out.extend(rows)
        print("\n".join(rows), flush=True)
    if not args.no_verdicts:
        rows, side, meta = verdict_table(args.quick)
        n, n_val, n_fresh = meta["n"], meta["n_val"], meta["n_fresh"]
        out += ["", f"## 2. Verdicts: the demo's pipeline scoring {n} test images", "",
                f"Scores' 5-95 % spread {meta['spread']:.2f}; threshold at 0; G's held-out "
                f"scores lie in [{meta['held_lo']:.3g}, {meta['held_hi']:.3g}], median spacing "
                f"{meta['held_gap']:.1e}: packed in a narrow band, so that tiny score changes "
                f"cross some; the test "
                f"images are fresh (the closest to a training or calibration image is "
                f"{meta['closest']:.2f} away in L2).  A conformal p-value "
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
