"""The open-world recipe for a second owner: a resize-convolution face generator as G (issue 32).

Every face benchmark so far had one G, the published face DCGAN, whose final
layer is a stride-2 transposed convolution; the recipe's defaults were
chosen on it.  A rule measured on one G is a hypothesis.  Here the owner's
generator is another: **G2**, the nearest-neighbour resize-convolution
generator A1 (:class:`~flipad_sklearn.generators.UpsampleConvGenerator`,
trained on the published DCGAN's samples by ``bench_open_world_face``).  Its
final layer is a 3x3 ``Conv2d`` at full resolution: no upsampling in the
final layer at all (the last one is an ``Upsample`` in the block before),
so the sparse code FLIPAD inverts and the traces DCTPAD reads are of another
kind.  Until this benchmark ``open_world_shadows`` refused such a G ("no
upsampling to change"); it now varies its last upsampling.

G2's owner follows the user guide and the command line, nothing tuned for
G2: 2000 samples of G2 train the five one-call shadows
(:func:`~flipad_sklearn.generators.open_world_shadows`, ``epochs=6,
batch_size=32``, seed 0) and a competitor (G2's architecture trained on G2's
samples, seed 11); :func:`~flipad_sklearn.make_open_world_union` as
``flipad fit --detector union --immunise published`` builds it
(``bench_face_recipe_perturbations``' ``cli``), fitted on 1500 samples of G2
against 1500 labelled others (250 per generator) and calibrated on fresh
samples of G2 with ``max_fnr=0.01``.  Test sources, 200 images each, none
labelled:

* G2's architecture trained on G2's samples, an unseen seed (seed 12);
* **the published face DCGAN itself**, the model G2 imitates, whose final
  layer (a transposed convolution) no shadow of G2 has;
* A2: G2's architecture and recipe, trained on the DCGAN's samples with
  another seed (a sibling of G2);
* A3: the bilinear resize-convolution generator; B1: the sub-pixel one;
* E1: the DCGAN with a bicubic + conv last layer; C4: the VAE decoder;
* real MNIST digits (another domain).

Each row perturbs G2's fresh samples and every source the same way: 8-bit
PNG, JPEG q90, JPEG q70, resize by 0.9 and back.  Cells as in
``bench_face_recipe_perturbations``.

**Prediction, committed before G2's shadows, competitor and unseen seed
were trained** (the DCGAN's results, carried over): on 8-bit PNG, each
source rejected at >= 0.95 and G2's fresh samples rejected at <= 0.01;
the mean accuracy of every row >= 0.95.

``--union none --rows "8-bit PNG"`` measures the union not immunised (for
images as generated or saved losslessly) on the same samples.

Run: ``python -m benchmarks.bench_face_second_owner`` (after
``bench_open_world_face`` and ``bench_face_architectures``, whose trained
generators it reads; the first run trains the five shadows, the competitor
and the unseen seed: about half an hour on two cores).  Writes
``benchmarks/results/bench_face_second_owner.md``.
"""

import argparse
import time
import warnings

import numpy as np
import torch

from flipad_sklearn import make_open_world_union

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import N_TEST, TEST_SEED, real_digits, trained_vae
from .bench_face_blind_one_call import _one_call_note, one_call_shadows
from .bench_face_blind_recipe import BLIND as THIRD_BLIND
from .bench_face_dcgan import (
    FACE_CACHE, fingerprint_note, load_face_dcgan, sample, trained_other,
)
from .bench_face_recipe_perturbations import UNIONS, _perturb
from .bench_full_scale import open_world_training_set
from .bench_open_world_face import _final_and_anchor, verdict_score

#: G2, the second owner's generator: (cache name, architecture, seed) of trained_other
G2_SPEC = ("upconv", "upconv", 13)
#: generators trained on G2's samples: key -> (cache name, architecture, seed)
G2_CHILDREN = {"comp": ("owner2comp", "upconv", 11), "unseen": ("owner2unseen", "upconv", 12)}
#: the one-call shadows' cache prefix
PREFIX = "owner2onecall"
#: test generators trained on the DCGAN's samples: key -> (cache name, architecture, seed)
SIBLINGS = {"A2": ("upconv", "upconv", 18), "A3": ("upbilin", "upbilin", 20),
            "B1": ("pixshuf", "pixshuf", 17)}
SOURCES = {"unseen": "G2's architecture on G2's samples, unseen seed",
           "dcgan": "the published face DCGAN (G2's source)",
           "A2": "A2: G2's recipe on the DCGAN's samples, another seed",
           "A3": "A3: bilinear resize-conv", "B1": "B1: sub-pixel",
           "E1": "E1: DCGAN, bicubic + conv last", "C4": "C4: VAE decoder",
           "digits": "real MNIST digits"}
ROWS = ("8-bit PNG", "JPEG q90", "JPEG q70", "resize 0.9 and back")
#: E1, the DCGAN with a bicubic + conv last layer: (cache name, architecture, seed)
E1_SPEC = (THIRD_BLIND["E1"][0], *THIRD_BLIND["E1"])


def _rejected(P, bounds):
    """Share of images the union rejects, and each detector at its own threshold, from the
    detectors' p-values ``P`` (one column each)."""
    union = float(np.mean(verdict_score(P, bounds) < 0))
    return union, [float(np.mean(verdict_score(P[:, [j]], bounds[[j]]) < 0))
                   for j in range(P.shape[1])]


def load_second_owner(cache):
    """The published DCGAN, G2, G2's labelled others (competitor + one-call shadows) and
    the test generators, training what the cache lacks."""
    G = load_face_dcgan()
    G2 = trained_other(G, *G2_SPEC, cache)
    children = {k: trained_other(G2, *spec, cache) for k, spec in G2_CHILDREN.items()}
    shadows = one_call_shadows(G2, cache, prefix=PREFIX)
    tests = {"unseen": children["unseen"], "dcgan": G,
             **{k: trained_other(G, *spec, cache) for k, spec in SIBLINGS.items()},
             "E1": trained_other(G, *E1_SPEC, cache), "C4": trained_vae(G, cache)}
    return G2, {"comp": children["comp"], **shadows}, tests


def run(args):
    t0 = time.time()
    G2, labelled, generators = load_second_owner(args.cache_dir)
    print(f"(loaded or trained the generators in {time.time() - t0:.0f} s)\n")
    train = open_world_training_set(G2, labelled, 100 * args.seed, args.n_own, args.n_others)
    X = np.concatenate([train["own"], train["others"]])
    y = np.r_[np.ones(len(train["own"])), -np.ones(len(train["others"]))]
    fresh = sample(G2, 500, 61 + 100 * args.seed)
    tests = {k: sample(m, N_TEST, TEST_SEED) for k, m in generators.items()}
    tests["digits"] = real_digits(N_TEST, TEST_SEED)
    final, anchor = _final_and_anchor(G2)
    label, immunisation = UNIONS[args.union]
    print("# The open-world recipe for a second owner: G2, a resize-convolution generator\n")
    print(f"G2's final layer: `{final.layer}` ({final.activation}), activations "
          f"{tuple(final.activation_shape)}.  {len(train['own'])} samples of G2 against its "
          f"competitor + its five one-call shadows ({len(train['others']) // len(labelled)} "
          f"each); {len(fresh)} fresh samples of G2 and {N_TEST} per other source, each "
          f"perturbed before scoring.  Union: {label}, fnr 0.005, calibrated with "
          "max_fnr=0.01.  Cells: share accepted (G2) or rejected (others).\n")
    t = time.time()
    union = make_open_world_union(final.layer, final.activation, anchor,
                                  image_shape=(3, 64, 64), random_state=args.seed,
                                  device="cpu", **immunisation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union.fit(X, y)
        t_fit = time.time() - t
        t = time.time()
        rng = np.random.default_rng(20 + args.seed)
        union.calibrate(lambda k: sample(G2, k, seed=int(rng.integers(2**31))),
                        max_fnr=0.01)
    t_cal = time.time() - t
    bounds = np.array([e[-1].fnr_bound_ for _, e in union.estimators_])
    columns = " | ".join(f"{v} rejected" for v in SOURCES.values())
    print(f"| perturbation | G2 accepted | {columns}"
          + " | mean accuracy | G2 rejected by FLIPAD / DCTPAD / pixel guard |")
    print("|---|---|" + "---|" * len(SOURCES) + "---|---|")
    rejected_by = {}
    for name in args.rows:
        g_rejected, by = _rejected(union.pvalues(_perturb(name, fresh), per_detector=True),
                                   bounds)
        g = 1 - g_rejected
        rej = {}
        for k in SOURCES:
            rej[k], rejected_by[(name, k)] = _rejected(
                union.pvalues(_perturb(name, tests[k]), per_detector=True), bounds)
        print(f"| {name} | {g:.3f} | " + " | ".join(f"{r:.3f}" for r in rej.values())
              + f" | {0.5 * (g + np.mean(list(rej.values()))):.3f} | "
              + " / ".join(f"{b:.3f}" for b in by) + " |", flush=True)
    print(f"\nFit {t_fit:.0f} s, calibration {t_cal:.0f} s.\n")
    print("Which detector rejects each source (share rejected by FLIPAD / DCTPAD / pixel "
          "guard, each at its own threshold):\n")
    print("| source | " + " | ".join(args.rows) + " |")
    print("|---|" + "---|" * len(args.rows))
    for k, v in SOURCES.items():
        print(f"| {v} | " + " | ".join(" / ".join(f"{b:.3f}" for b in rejected_by[(r, k)])
                                       for r in args.rows) + " |")
    specs = [G2_SPEC, *G2_CHILDREN.values(), *SIBLINGS.values(), E1_SPEC]
    print(fingerprint_note(args.cache_dir, specs))
    print(_one_call_note(args.cache_dir, PREFIX))
    print(f"\n{time.time() - t0:.0f} s (trained generators cached in {args.cache_dir}).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--n-own", type=int, default=1500)
    p.add_argument("--n-others", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0,
                   help="another draw of the training set, fresh samples and detectors' seeds")
    p.add_argument("--union", choices=list(UNIONS), default="cli",
                   help="the union, by bench_face_recipe_perturbations' names (cli: the "
                        "command line's --immunise published; none: not immunised); others "
                        "write bench_face_second_owner_<name>.md")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="NAME",
                   help="the perturbations to score (default: all of %(choices)s)")
    p.add_argument("--train-only", action="store_true",
                   help="train and cache G2's shadows, competitor and unseen seed only")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_only:
        load_second_owner(args.cache_dir)
        return
    name = "bench_face_second_owner"
    if args.union != "cli":
        name += f"_{args.union}"
    if args.seed:
        name += f"_seed{args.seed}"
    tee_result(f"{name}.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
