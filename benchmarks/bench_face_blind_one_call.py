"""A fourth blind test on the face DCGAN: the one-call shadows, far final layers (issue 32).

The third blind test (``bench_face_blind_recipe``) supported a recipe: a
variant of G for each final-layer upsampling (nearest, bilinear, sub-pixel)
and a generator of each other family, all trained on G's samples, as
labelled others of :func:`~flipad_sklearn.make_open_world_union` with
DCTPAD immunised.  Its shadows were trained one by one by the benchmarks;
an owner trains them with one call,
:func:`~flipad_sklearn.generators.open_world_shadows` (as the user guide
shows it: 2000 samples of G, ``epochs=6, batch_size=32``, its default seed).
That call has never been measured.  Nor has a final layer of a kind far from
all of nearest, bilinear, sub-pixel and transposed-convolution upsampling.

Its test generators, trained after this file's rows and prediction were
committed (see its history), are G with another final layer only
(:func:`~benchmarks.bench_face_dcgan.last_layer`), of kinds no shadow and no
earlier test has:

* F1: G's kind of transposed convolution to 32 channels, batch norm, ReLU,
  then a 3x3 ``Conv2d`` at full resolution (a refinement layer: the last
  layer does not upsample at all);
* F2: two transposed convolutions to 128x128, then 2x2 average pooling
  (rendered at twice the size and downsampled: supersampling);
* F3: a StyleGAN2-like skip output, the 32x32 features' colours upsampled
  bilinearly plus a transposed convolution's detail
  (:class:`~benchmarks.bench_face_dcgan.SkipToRGB`);
* F4: G's kind of transposed convolution followed by a fixed binomial blur
  (:class:`~benchmarks.bench_face_dcgan.FixedBlur`, StyleGAN's low-pass):
  G's final layer with its traces smoothed.

The eleven generators of the earlier blind tests (C1-C4, D1-D3, E1-E4) are
columns too: blind to the one-call shadows, which were trained after them
with other seeds, but not to the kinds those shadows hold.

Rows (fnr 0.005, 400 samples of G, 100 per kind of labelled others, unions
recalibrated on fresh samples of G):

1. the union with the competitor + the five one-call shadows (the user
   guide's recipe);
2. the union with the five one-call shadows alone (an owner with no
   competitor's model);
3. the union with the third test's others (the competitor + A1 + B1 + V1 +
   V2 + V3, trained one by one);
4. DCTPAD immunised alone with row 1's others.

**Prediction, committed before the one-call shadows and F1-F4 were
trained**: rows 1, 2 and 3 reject each of F1-F4 with accuracy at fnr 0.005
>= 0.95, the digits and noise at >= 0.99, reject <= 0.01 of fresh samples
of G and accept >= 0.95 of G's JPEG q90 images; row 1 also rejects each of
C1-C4, D1-D3 and E1-E4 at >= 0.95, and row 2 each of C2, D1, D3, E1 and E4
(final layers of a kind a one-call shadow has) at >= 0.95.  Row 2 on the
retrainings of G's own final layer (C1, C3, C4, D2, E2, E3) and row 4 are
reference points without a prediction.

Run: ``python -m benchmarks.bench_face_blind_one_call`` (after
``bench_face_blind_recipe``; the five shadows and four test generators to
train the first time, 3 to 5 minutes each on two threads).  Writes
``benchmarks/results/bench_face_blind_one_call.md``.
"""

import argparse
import json
import os
import time

import torch

from flipad_sklearn.generators import OPEN_WORLD_SHADOWS, open_world_shadows
from flipad_sklearn.generators._architectures import _open_world_models

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import COLUMNS as FIRST_COLUMNS
from .bench_face_blind_recipe import BLIND as THIRD_BLIND
from .bench_face_blind_recipe import COLUMNS as THIRD_COLUMNS
from .bench_face_blind_recipe import GENERATORS as THIRD_GENERATORS
from .bench_face_blind_recipe import OTHERS as THIRD_OTHERS
from .bench_face_blind_variants import BLIND as SECOND_BLIND
from .bench_face_blind_variants import COLUMNS as SECOND_COLUMNS
from .bench_face_blind_variants import _specs, run_round
from .bench_face_dcgan import (
    FACE_CACHE, LATENT, TRAIN_BATCH, TRAIN_EPOCHS, TRAIN_SAMPLES, _Z, load_face_dcgan,
    sample, state_fingerprint, trained_other, weights_fingerprints,
)

#: open_world_shadows' seed: its default, what a user gets
ONE_CALL_SEED = 0
#: this round's blind generators: key -> (architecture, training seed)
BLIND = {"F1": ("last_refine", 81), "F2": ("last_supersample", 82), "F3": ("last_skip", 83),
         "F4": ("last_blur", 84)}
COLUMNS = {"F1": "F1: G, refinement conv last", "F2": "F2: G, supersampled + 2x2 average",
           "F3": "F3: G, skip output (bilinear colours + detail)",
           "F4": "F4: G's final layer + fixed blur",
           **{k: FIRST_COLUMNS[k] for k in ("C1", "C2", "C3", "C4")},
           **{k: SECOND_COLUMNS[k] for k in ("D1", "D2", "D3")},
           **{k: THIRD_COLUMNS[k] for k in THIRD_BLIND},
           "digits": FIRST_COLUMNS["digits"], "noise": FIRST_COLUMNS["noise"]}
COLUMNS["C2"] = "C2: G's layers, nearest upsample + conv last"
COLUMNS["D1"] = "D1: G, bilinear final-layer variant"
#: row label -> keys of the shadows among its labelled others
OTHERS = {"the competitor + the five one-call shadows (100 each)": OPEN_WORLD_SHADOWS,
          "the five one-call shadows (100 each), no competitor": OPEN_WORLD_SHADOWS,
          **{k: v for k, v in THIRD_OTHERS.items() if "V3" in v}}
F = ("F1", "F2", "F3", "F4")
PREDICTION = [
    ("each of F1-F4 rejected, accuracy >= 0.95", (1, 2, 3), F, lambda v: v >= 0.95),
    ("both far sources rejected, accuracy >= 0.99", (1, 2, 3), ("digits", "noise"),
     lambda v: v >= 0.99),
    ("fresh samples of G rejected <= 0.01", (1, 2, 3), ("G",), lambda v: v <= 0.01),
    ("G's JPEG q90 accepted >= 0.95", (1, 2, 3), ("jpeg",), lambda v: v >= 0.95),
    ("each earlier blind generator rejected, accuracy >= 0.95", (1,),
     ("C1", "C2", "C3", "C4", "D1", "D2", "D3", "E1", "E2", "E3", "E4"),
     lambda v: v >= 0.95),
    ("the kinds a one-call shadow has rejected, accuracy >= 0.95", (2,),
     ("C2", "D1", "D3", "E1", "E4"), lambda v: v >= 0.95),
]
ROUND = dict(
    title="A fourth blind test: the one-call shadows against far final layers",
    trained="the one-call shadows and F1-F4", shadows=dict.fromkeys(OPEN_WORLD_SHADOWS),
    blind=BLIND, columns=COLUMNS, others=OTHERS, dctpad_others=list(OTHERS)[0],
    without_competitor=(list(OTHERS)[1],), prediction=PREDICTION,
    grid="bench_face_blind_one_call_sources.png")
#: every generator trained with trained_other this round draws from
GENERATORS = {**THIRD_GENERATORS, **SECOND_BLIND, **BLIND}


def _shadow_file(cache, name, prefix="onecall"):
    return os.path.join(cache, f"{prefix}_{name}_seed{ONE_CALL_SEED}_n{TRAIN_SAMPLES}"
                               f"_e{TRAIN_EPOCHS}_b{TRAIN_BATCH}.pt")


def one_call_shadows(G, cache, log=print, prefix="onecall"):
    """The user guide's ``open_world_shadows`` call on G's training samples (weights cached).

    Trained on the same 2000 samples of G as every other face generator
    (:func:`~benchmarks.bench_face_dcgan.trained_other`), with its budget; the
    call's time is kept beside the weights.  ``prefix`` names the cached files
    (another owner's generator: another prefix).
    """
    paths = {name: _shadow_file(cache, name, prefix) for name in OPEN_WORLD_SHADOWS}
    timing = os.path.join(cache, f"{prefix}_seed{ONE_CALL_SEED}_time.json")
    if all(os.path.exists(p) for p in paths.values()):
        shadows, _ = _open_world_models(G, _Z, LATENT[0])
        for name, model in shadows.items():
            model.load_state_dict(torch.load(paths[name], map_location="cpu",
                                             weights_only=True))
            model.eval()
        return shadows
    log(f"training the five one-call shadows on {TRAIN_SAMPLES} samples of G, "
        f"{TRAIN_EPOCHS} epochs, batch {TRAIN_BATCH}, seed {ONE_CALL_SEED}")
    t = time.time()
    shadows = open_world_shadows(G, sample(G, TRAIN_SAMPLES, seed=1), _Z,
                                 latent_shape=LATENT, seed=ONE_CALL_SEED,
                                 epochs=TRAIN_EPOCHS, batch_size=TRAIN_BATCH)
    seconds = time.time() - t
    os.makedirs(cache, exist_ok=True)
    for name, model in shadows.items():
        torch.save(model.state_dict(), paths[name])
    with open(timing, "w") as fh:
        json.dump({"seconds": seconds, "torch_threads": torch.get_num_threads()}, fh)
    return shadows


def _one_call_note(cache, prefix="onecall"):
    timing = os.path.join(cache, f"{prefix}_seed{ONE_CALL_SEED}_time.json")
    with open(timing) as fh:
        t = json.load(fh)
    lines = [f"\nThe one-call shadows (`open_world_shadows(G, X, z, latent_shape=(100, 1, 1), "
             f"seed={ONE_CALL_SEED}, epochs={TRAIN_EPOCHS}, batch_size={TRAIN_BATCH})` on "
             f"{TRAIN_SAMPLES} samples of G) took {t['seconds']:.0f} s to train on "
             f"{t['torch_threads']} torch threads; their weights (first 12 hex of sha256):"]
    lines += [f"- {name}: {state_fingerprint(_shadow_file(cache, name, prefix))}"
              for name in OPEN_WORLD_SHADOWS]
    return "\n".join(lines)


def run(args):
    G = load_face_dcgan()
    shadows = one_call_shadows(G, args.cache_dir)
    samplers = {name: (lambda n, seed, m=model: sample(m, n, seed))
                for name, model in shadows.items()}
    run_round(args, ROUND, GENERATORS, samplers)
    print(_one_call_note(args.cache_dir))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--train-only", action="store_true",
                   help="train and cache the one-call shadows and F1-F4, measure nothing")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_only:
        G = load_face_dcgan()
        one_call_shadows(G, args.cache_dir)
        for arch, seed in BLIND.values():
            trained_other(G, arch, arch, seed, args.cache_dir)
        print(weights_fingerprints(args.cache_dir, _specs(BLIND)))
        print(_one_call_note(args.cache_dir))
        return
    tee_result("bench_face_blind_one_call.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
