"""A second blind test on the published face DCGAN: shadows that change G's last layer (issue 32).

``bench_face_blind`` missed one generator: C2, G's transposed convolutions
with nearest-neighbour upsampling + a 3x3 ``Conv2d`` in the last layer only
(0.755 and 0.889 with shadows of the whole upsample + conv family).  The
hypothesis drawn from it: the owner should also train **variants of G whose
final layer upsamples another way**
(:func:`~flipad_sklearn.generators.final_layer_variant`), since the final
layer is where FLIPAD and the spectrum look.  V1 (nearest) and V2 (sub-pixel
convolution) are such variants of G, trained on G's samples like the other
shadows.  V1 has C2's architecture: C2 is no longer a blind test for it and
is shown for reference only.

The test generators, trained after this file's rows and prediction were
committed (see its history), on G's samples with the same budget:

* D1: G with a bilinear final-layer variant (a variant not among the
  shadows);
* D2: G with nearest upsampling + 3x3 ``Conv2d`` in its fourth doubling
  (16x16 -> 32x32) and G's transposed convolution as final layer
  (:func:`~benchmarks.bench_face_dcgan.middle_nearest`): nearest upsampling
  one layer before the last;
* D3: C2's layout at width 48 (another body, nearest upsampling + conv last).

Rows (at the defaults, fnr 0.005, 400 samples of G, 100 per kind of labelled
others, every union :func:`~flipad_sklearn.make_open_world_union` with
``immunise="published"`` recalibrated on fresh samples of G):

1. the union with the competitor + A1 + B1 (``bench_face_blind``'s row 5);
2. the union with the competitor + A1 + B1 + V1 + V2;
3. DCTPAD immunised alone with row 2's others.

**Prediction, committed before V1, V2 and D1-D3 were trained**: row 2
rejects each of D1, D2 and D3 with accuracy at fnr 0.005 >= 0.95, keeps
C1, C3 and C4 at >= 0.95 and the digits and noise at >= 0.99, rejects <= 0.01
of fresh samples of G and accepts >= 0.95 of G's JPEG q90 images.  Rows 1
and 3 are reference points without a prediction.

Run: ``python -m benchmarks.bench_face_blind_variants`` (after
``bench_face_blind``; five generators to train the first time, 3 to 5
minutes each on two threads).  Writes
``benchmarks/results/bench_face_blind_variants.md``.
"""

import argparse
import time
import warnings

import numpy as np
import torch

from flipad_sklearn import make_dctpad

from ._results import add_result_args, results_dir, tee_result
from .bench_face_architectures import GENERATORS, _SHADOW_SEED, extra_sources
from .bench_face_blind import COLUMNS as BLIND_COLUMNS
from .bench_face_blind import (
    N_TEST, TEST_SEED, _blind_fingerprints, blind_sources, check_prediction, score_row,
)
from .bench_face_dcgan import (
    FACE_CACHE, FACE_OTHERS, fingerprint_note, load_face_dcgan, sample, trained_other,
    weights_fingerprints,
)
from .bench_open_world_face import build, open_world_union, save_source_grid, verdict_score

#: the final-layer variants of G used as shadows: key -> (architecture, training seed)
SHADOWS = {"V1": ("var_nearest", 51), "V2": ("var_pixshuf", 52)}
#: the blind generators of this round: key -> (architecture, training seed)
BLIND = {"D1": ("var_bilinear", 61), "D2": ("mid_nearest", 62), "D3": ("hybrid48", 63)}
COLUMNS = {"D1": "D1: G, bilinear final-layer variant",
           "D2": "D2: G, nearest upsample + conv one layer before the last",
           "D3": "D3: C2's layout at width 48",
           "C2": "C2 (reference: V1 shares its architecture)",
           **{k: BLIND_COLUMNS[k] for k in ("C1", "C3", "C4", "digits", "noise")}}
#: labelled others beside the competitor's 100 samples, per row
OTHERS = {"the competitor + A1 + B1 (100 each)": ("A1", "B1"),
          "the competitor + A1 + B1 + V1 + V2 (100 each)": ("A1", "B1", "V1", "V2")}
#: the prediction of the docstring: (claim, rows, sources, test of one number)
PREDICTION = [
    ("each of D1-D3 rejected, accuracy >= 0.95", (2,), ("D1", "D2", "D3"),
     lambda v: v >= 0.95),
    ("C1, C3, C4 rejected, accuracy >= 0.95", (2,), ("C1", "C3", "C4"), lambda v: v >= 0.95),
    ("both far sources rejected, accuracy >= 0.99", (2,), ("digits", "noise"),
     lambda v: v >= 0.99),
    ("fresh samples of G rejected <= 0.01", (2,), ("G",), lambda v: v <= 0.01),
    ("G's JPEG q90 accepted >= 0.95", (2,), ("jpeg",), lambda v: v >= 0.95),
]


def _specs(table):
    return [(arch, arch, seed) for arch, seed in table.values()]


#: this round: what run_round needs (the title, the shadows and blind generators trained
#: for it, the rows' labelled others, the DCTPAD row's, the prediction, the grid's file)
ROUND = dict(
    title="A second blind test: final-layer variants of G as shadows",
    trained="V1, V2 and D1-D3", shadows=SHADOWS, blind=BLIND, columns=COLUMNS, others=OTHERS,
    dctpad_others=list(OTHERS)[1], prediction=PREDICTION,
    grid="bench_face_blind_variants_sources.png")


def run_round(args, rnd, generators, samplers=None):
    """Fit each row of ``rnd`` on its labelled others, score every column, check the prediction.

    ``generators`` maps the keys of trained shadows and test generators (any round's) to
    ``(architecture, training seed)``; ``samplers`` maps further keys to a function
    ``(n, seed) -> images`` (shadows trained another way); A1, B1 and the first blind
    test's sources come from their benchmarks' caches.
    """
    samplers = {} if samplers is None else samplers
    t0 = time.time()
    G = load_face_dcgan()
    images, feats = build(args.cache_dir)
    extra_img, _ = extra_sources(args.cache_dir, images, feats)

    def draw(key, n, seed):
        if key in samplers:
            return samplers[key](n, seed)
        arch, train_seed = generators[key]
        return sample(trained_other(G, arch, arch, train_seed, args.cache_dir), n, seed)
    known = sorted({k for keys in rnd["others"].values() for k in keys})
    shadows = {k: extra_img[f"{k}_shadow"][:100] if k in ("A1", "B1", "A2")
               else draw(k, 100, _SHADOW_SEED) for k in known}
    first = {k: v for k, v in blind_sources(G, args.cache_dir).items() if k in rnd["columns"]}
    tests = {k: first[k] if k in first else draw(k, N_TEST, TEST_SEED) for k in rnd["columns"]}
    n = 400
    fresh = np.concatenate([images["g"][n:], images["fresh"]])

    alone = rnd.get("without_competitor", ())

    def training(keys, label=None):
        competitor = [] if label in alone else [images["comp"][:100]]
        neg = np.concatenate([*competitor, *(shadows[k] for k in keys)])
        return np.concatenate([images["g"][:n], neg]), np.r_[np.ones(n), -np.ones(len(neg))]

    print(f"# {rnd['title']}\n")
    print(f"{n} samples of G against the labelled others of each row; {len(fresh)} fresh "
          f"samples of G and {N_TEST} per test source.  Rows and prediction committed before "
          f"{rnd['trained']} were trained (the benchmark's docstring).  Cells: accuracy at "
          "fnr 0.005 / ROC AUC.\n")
    print("| detector | labelled others | G rejected | " + " | ".join(rnd["columns"].values())
          + " | G's samples after JPEG q90 accepted | fit |")
    print("|---|---|---|" + "---|" * len(rnd["columns"]) + "---|---|")
    rows = {}
    for i, (label, keys) in enumerate(rnd["others"].items(), start=1):
        X, y = training(keys, label)
        t = time.time()
        union = open_world_union(G, "published")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            union.fit(X, y)
            rng = np.random.default_rng(20)
            union.calibrate(lambda k: sample(G, k, seed=int(rng.integers(2**31))))
        t_fit = time.time() - t
        bounds = np.array([e[-1].fnr_bound_ for _, e in union.estimators_])

        def decide(X, union=union, bounds=bounds):
            return verdict_score(union.pvalues(X, per_detector=True), bounds)
        # the union's promise for G's samples, and the spread of this one calibration's
        low, high = union.fnr_interval_
        note = (f"fit and calibration {t_fit:.0f} s; G rejected at most "
                f"{union.fnr_bound_:.4f} on average over calibrations, 90 % of them within "
                f"{low:.4f}-{high:.4f}")
        rows[i] = score_row(f"{i}. FLIPAD + DCTPAD immunised + pixel guard", label, decide,
                            fresh, tests, images["jpeg90"], note, columns=rnd["columns"])
    label = rnd["dctpad_others"]
    X, y = training(rnd["others"][label], label)
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = make_dctpad(fnr=0.005, random_state=0, device="cpu",
                          immunise="published").fit(X, y)
    i = len(rows) + 1
    rows[i] = score_row(f"{i}. DCTPAD immunised (make_dctpad)", label, det.decision_function,
                        fresh, tests, images["jpeg90"], f"{time.time() - t:.0f} s",
                        columns=rnd["columns"])
    check_prediction(rows, rnd["prediction"])
    grid = {"G": fresh, **tests, **{f"{k} (shadow)": shadows[k] for k in rnd["shadows"]}}
    save_source_grid(grid, results_dir(args),
                     keys=["G", *(f"{k} (shadow)" for k in rnd["shadows"]), *rnd["blind"]],
                     name=rnd["grid"])
    print(fingerprint_note(args.cache_dir, FACE_OTHERS + tuple(
        (a, a, s) for a, s in GENERATORS.values()) + tuple(_specs(generators))))
    print("".join(f"\n- {spec}" for spec in _blind_fingerprints(args.cache_dir)))
    print(f"\n{time.time() - t0:.0f} s (trained generators cached in {args.cache_dir}).")


def run(args):
    run_round(args, ROUND, {**SHADOWS, **BLIND})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--train-only", action="store_true",
                   help="train and cache V1, V2 and D1-D3, measure nothing")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_only:
        G = load_face_dcgan()
        for arch, seed in [*SHADOWS.values(), *BLIND.values()]:
            trained_other(G, arch, arch, seed, args.cache_dir)
        print(weights_fingerprints(args.cache_dir, _specs(SHADOWS) + _specs(BLIND)))
        return
    tee_result("bench_face_blind_variants.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
