"""A third blind test on the published face DCGAN: the recipe the first two suggest (issue 32).

Both earlier blind tests (``bench_face_blind``, ``bench_face_blind_variants``)
missed the one generator whose final layer upsampled in a way no labelled
other did (C2 nearest, D1 bilinear: about 0.76), and rejected a final layer
of a kind a shadow had, whatever the body or seed (0.999).  The recipe they
suggest: a variant of G for every final-layer upsampling one fears
(:func:`~flipad_sklearn.generators.final_layer_variant`: V1 nearest, V2
sub-pixel, and now V3 bilinear) beside a generator of each other family (A1,
B1), all trained on G's samples, as labelled others of
:func:`~flipad_sklearn.make_open_world_union` with DCTPAD immunised.

Its test generators, trained after this file's rows and prediction were
committed (see its history), are G with another final layer only, of kinds
no shadow has (:func:`~benchmarks.bench_face_dcgan.last_layer`):

* E1: bicubic upsampling + 3x3 ``Conv2d``;
* E2: a transposed convolution of kernel 3 (stride 2, output padding 1);
* E3: a transposed convolution of kernel 2, stride 2 (no overlap: each input
  pixel paints its own 2x2 block);
* E4: nearest upsampling + 5x5 ``Conv2d`` (V1's kind with another kernel).

D1 (bilinear final layer, the second test's miss) is shown for reference: V3
has its architecture.

Rows (fnr 0.005, 400 samples of G, 100 per kind of labelled others, unions
recalibrated on fresh samples of G):

1. the union with the second test's others (the competitor + A1 + B1 + V1 +
   V2);
2. the union with the recipe's (row 1's + V3);
3. DCTPAD immunised alone with row 2's others.

**Prediction, committed before V3 and E1-E4 were trained**: row 2 rejects
each of E1-E4 with accuracy at fnr 0.005 >= 0.95 and the digits and noise
at >= 0.99, rejects <= 0.01 of fresh samples of G and accepts >= 0.95 of G's
JPEG q90 images.  Rows 1 and 3 are reference points without a prediction.

Run: ``python -m benchmarks.bench_face_blind_recipe`` (after
``bench_face_blind_variants``; five generators to train the first time, 3 to
5 minutes each on two threads).  Writes
``benchmarks/results/bench_face_blind_recipe.md``.
"""

import argparse

import torch

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import COLUMNS as FIRST_COLUMNS
from .bench_face_blind_variants import BLIND as SECOND_BLIND
from .bench_face_blind_variants import SHADOWS as SECOND_SHADOWS
from .bench_face_blind_variants import _specs, run_round
from .bench_face_dcgan import FACE_CACHE, load_face_dcgan, trained_other, weights_fingerprints

#: the recipe's third final-layer variant: key -> (architecture, training seed)
SHADOWS = {"V3": ("var_bilinear", 53)}
#: this round's blind generators
BLIND = {"E1": ("last_bicubic", 71), "E2": ("last_tconv3", 72), "E3": ("last_tconv2", 73),
         "E4": ("last_near5", 74)}
COLUMNS = {"E1": "E1: G, bicubic + conv last", "E2": "E2: G, transposed conv kernel 3 last",
           "E3": "E3: G, transposed conv kernel 2 last", "E4": "E4: G, nearest + 5x5 conv last",
           "D1": "D1 (reference: V3 shares its architecture)",
           "digits": FIRST_COLUMNS["digits"], "noise": FIRST_COLUMNS["noise"]}
OTHERS = {"the competitor + A1 + B1 + V1 + V2 (100 each)": ("A1", "B1", "V1", "V2"),
          "the competitor + A1 + B1 + V1 + V2 + V3 (100 each)": ("A1", "B1", "V1", "V2", "V3")}
PREDICTION = [
    ("each of E1-E4 rejected, accuracy >= 0.95", (2,), ("E1", "E2", "E3", "E4"),
     lambda v: v >= 0.95),
    ("both far sources rejected, accuracy >= 0.99", (2,), ("digits", "noise"),
     lambda v: v >= 0.99),
    ("fresh samples of G rejected <= 0.01", (2,), ("G",), lambda v: v <= 0.01),
    ("G's JPEG q90 accepted >= 0.95", (2,), ("jpeg",), lambda v: v >= 0.95),
]
ROUND = dict(
    title="A third blind test: the recipe of final-layer variants",
    trained="V3 and E1-E4", shadows=SHADOWS, blind=BLIND, columns=COLUMNS, others=OTHERS,
    dctpad_others=list(OTHERS)[1], prediction=PREDICTION,
    grid="bench_face_blind_recipe_sources.png")
#: every trained generator this round draws from
GENERATORS = {**SECOND_SHADOWS, **SECOND_BLIND, **SHADOWS, **BLIND}


def run(args):
    run_round(args, ROUND, GENERATORS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--train-only", action="store_true",
                   help="train and cache V3 and E1-E4, measure nothing")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_only:
        G = load_face_dcgan()
        for arch, seed in [*SHADOWS.values(), *BLIND.values()]:
            trained_other(G, arch, arch, seed, args.cache_dir)
        print(weights_fingerprints(args.cache_dir, _specs(SHADOWS) + _specs(BLIND)))
        return
    tee_result("bench_face_blind_recipe.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
