"""Do labelled others of other architectures teach detectors to reject a new family? (issue 32)

G is the published face DCGAN (``gan-face-generate``).  On it the recipe
barely rejects an upsample + ``Conv2d`` family trained on G's samples
(``bench_open_world_face``), whatever labelled others of G's own
architecture it saw (``bench_face_shadows``).  An owner can train generators
of other architectures on G's samples as labelled others; whether that helps
against a family *none* of them belongs to is the question.  Two families
besides G's, all trained on G's samples with the same recipe
(``bench_face_dcgan.TRAIN_SAMPLES`` ...):

* A: upsample x2 + 3x3 ``Conv2d``
  (:class:`~flipad_sklearn.generators.UpsampleConvGenerator`): A1 and A2
  nearest-neighbour upsampling, two training seeds (A1 is the ``upconv``
  source of ``bench_open_world_face``, test images included), A3 bilinear;
* B: sub-pixel convolution, 3x3 ``Conv2d`` to 4x channels + ``PixelShuffle``
  (:class:`~flipad_sklearn.generators.PixelShuffleGenerator`), B1 and B2.

Crossed: samples of B1 as labelled others, tested on A1-A3 (a family none of
the others belongs to) and on B2 (the shadows' family, another training
seed); the same with A1, and with A2 (tested on A1: the other direction).  A
generator whose samples were labelled others is not scored (its cell says
so); its shadow samples come from other latent seeds than its test samples.
Each kind of labelled others gives 100 samples (the competitor alone 200, as
in ``bench_face_shadows``), beside 400 samples of G; 500 fresh samples of G
and 100 per source to test, the other sources those of
``bench_open_world_face``.  Four detectors at their defaults (fnr 0.005) on
the same samples: the recipe (:func:`~flipad_sklearn.make_flipad`, on the
cached features), DCTPAD, DCTPAD immunised against published perturbations
(``immunise="published"``) and RAWPAD (on the images); then a
:class:`~flipad_sklearn.ConformalUnion` of FLIPAD, DCTPAD and the pixel
guard, end to end on the images and recalibrated on fresh samples of G,
with the competitor alone, with A1 beside it, and with A1 and B1 beside it
(DCTPAD immunised).  The result file lists the
fingerprints of the trained generators' weights.

Run: ``python -m benchmarks.bench_face_architectures`` (after
``bench_open_world_face`` has filled its cache: the four generators
besides A1, 6 to 9 minutes each on one thread the first time, then 1000
inversions; about 3 minutes with the cache, most of it the unions).  Writes
``benchmarks/results/bench_face_architectures.md``.
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch

from flipad_sklearn import make_dctpad, make_rawpad
from flipad_sklearn.pipeline import OPEN_WORLD_SHARES

from ._harness import accuracy_auc
from ._results import add_result_args, results_dir, tee_result
from .bench_face_dcgan import (
    FACE_CACHE, FACE_OTHERS, fingerprint_note, load_face_dcgan, sample, trained_other,
    weights_fingerprints,
)
from .bench_open_world_face import (
    NAMES, OTHERS, TRAIN_RECIPE, _inverter, build, head, open_world_union, verdict_score,
)

#: the generators of the two families, each trained on G's samples: key -> (architecture,
#: training seed); A1 is bench_open_world_face's "upconv" source (its test images too)
GENERATORS = {"A1": ("upconv", OTHERS["upconv"][1]), "A2": ("upconv", 18),
              "A3": ("upbilin", 20), "B1": ("pixshuf", 17), "B2": ("pixshuf", 19)}
#: the generators whose samples serve as labelled others (other latent seeds than their tests)
SHADOWS = ("A1", "A2", "B1")
_SHADOW_SEED, _TEST_SEED = 21, 23
N_SHADOW, N_TEST = 200, 100
KIND = {"upconv": "upsample (nearest) + conv", "upbilin": "upsample (bilinear) + conv",
        "pixshuf": "pixel shuffle"}
COLUMNS = {"unseen": NAMES["unseen"],
           **{k: f"{k}: {KIND[arch]}, seed {seed}" for k, (arch, seed) in GENERATORS.items()},
           "domain": NAMES["domain"], "finetune": NAMES["finetune"]}
#: labelled others per row: label -> the generators whose samples join the competitor's
ROWS = {"a competitor (200)": (),
        "a competitor + B1 (100 + 100)": ("B1",),
        "a competitor + A1 (100 + 100)": ("A1",),
        "a competitor + A2 (100 + 100)": ("A2",),
        "a competitor + A1 + B1 (100 + 100 + 100)": ("A1", "B1")}
#: the unions: labelled others, and DCTPAD's immunise (the last added after DCTPAD alone,
#: immunised or not, had been measured against A1 + B1)
UNION_ROWS = [("a competitor (200)", None), ("a competitor + A1 (100 + 100)", None),
              ("a competitor + A1 + B1 (100 + 100 + 100)", "published")]
#: the union's shares of fnr: bench_open_world_face's first weighting, DCTPAD in RAWPAD's
#: place (set before the union was measured; make_open_world_union's default since)
UNION_WEIGHTS = OPEN_WORLD_SHARES
#: every trained generator behind the file's numbers: (name, architecture, seed)
_SPECS = tuple(sorted(set(FACE_OTHERS) | {(a, a, seed) for a, seed in GENERATORS.values()}))


def _cache_key(cache):
    """What the cached samples depend on, the generators' weights included."""
    prints = weights_fingerprints(cache, [(a, a, seed) for a, seed in GENERATORS.values()])
    return (f"{TRAIN_RECIPE}; {sorted(GENERATORS.items())}; {SHADOWS}; {_SHADOW_SEED}, "
            f"{_TEST_SEED}; {N_SHADOW}, {N_TEST}; {sorted(prints.items())}")


def extra_sources(cache, images, features, log=print):
    """Images and FLIPAD features of the shadows (``<key>_shadow``) and tests of the generators.

    A1's test samples are the ``upconv`` source of ``images`` / ``features``
    (``bench_open_world_face.build``); the rest is cached in ``cache``.
    """
    path = os.path.join(cache, "architecture_sources.npz")
    if os.path.exists(path):
        data = dict(np.load(path))
        if str(data.pop("key", "")) == _cache_key(cache):
            imgs = {k[4:]: v for k, v in data.items() if k.startswith("img_")}
            feats = {k[5:]: v for k, v in data.items() if k.startswith("feat_")}
            return ({**imgs, "A1": images["upconv"]}, {**feats, "A1": features["upconv"]})
    G = load_face_dcgan()
    gens = {k: trained_other(G, arch, arch, seed, cache, log=log)
            for k, (arch, seed) in GENERATORS.items()}
    imgs = {f"{k}_shadow": sample(gens[k], N_SHADOW, _SHADOW_SEED) for k in SHADOWS}
    imgs.update({k: sample(gens[k], N_TEST, _TEST_SEED) for k in GENERATORS if k != "A1"})
    inv = _inverter(G)
    feats = {}
    for name, X in imgs.items():
        log(f"inverting {len(X)} images of {name}")
        feats[name] = inv.transform(X).astype(np.float32)
    np.savez(path, key=np.array(_cache_key(cache)), **{f"img_{k}": v for k, v in imgs.items()},
             **{f"feat_{k}": v for k, v in feats.items()})
    return ({**imgs, "A1": images["upconv"]}, {**feats, "A1": features["upconv"]})


def _negatives(source, known):
    """The competitor's samples (all, or 100 beside 100 of each known generator)."""
    if not known:
        return source["comp"]
    return np.concatenate([source["comp"][:100], *(source[f"{k}_shadow"][:100] for k in known)])


def _row(detector, label, decide, tests, known, fresh, jpeg, note):
    g = decide(fresh)
    cells = [f"{np.mean(g < 0):.3f}"]
    cells += ["shadow" if key in known else accuracy_auc(g, decide(tests[key]))
              for key in COLUMNS]
    cells.append(f"{np.mean(decide(jpeg) >= 0):.3f}")
    print(f"| {detector} | {label} | " + " | ".join(cells) + f" | {note} |", flush=True)


def run(args):
    t0 = time.time()
    images, F = build(args.cache_dir)
    extra_img, extra_feat = extra_sources(args.cache_dir, images, F)
    n = 400
    sources = {
        "FLIPAD (make_flipad)": ({**F, **extra_feat}, lambda: head()),
        "DCTPAD (make_dctpad)": ({**images, **extra_img},
                                 lambda: make_dctpad(fnr=0.005, random_state=0, device="cpu")),
        "DCTPAD immunised (`immunise=\"published\"`)": (
            {**images, **extra_img},
            lambda: make_dctpad(fnr=0.005, random_state=0, device="cpu",
                                immunise="published")),
        "RAWPAD (make_rawpad)": ({**images, **extra_img},
                                 lambda: make_rawpad(fnr=0.005, random_state=0, device="cpu")),
    }
    print("# Shadows of other architectures on the published face DCGAN\n")
    print(f"{n} samples of G against the labelled others of each row; every other generator "
          f"trained on {TRAIN_RECIPE}.  Two families besides G's: A, upsample + conv "
          "(A1 and A2 nearest, two training seeds, A1 is bench_open_world_face's upsample + "
          "conv source; A3 bilinear); B, pixel shuffle (two training seeds).  Each "
          "detector at its defaults (fnr 0.005); "
          f"{len(images['g']) - n + len(images['fresh'])} fresh samples of G and {N_TEST} "
          "per source to test.  Cells: accuracy at fnr 0.005 / ROC AUC; 'shadow' where the "
          "row's labelled others are samples of that generator (other latent seeds).\n")
    print("| detector | labelled others | G rejected | " + " | ".join(COLUMNS.values()) +
          " | G's samples after JPEG q90 accepted | fit |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    for detector, (source, make) in sources.items():
        fresh = np.concatenate([source["g"][n:], source["fresh"]])
        tests = {key: source[key] for key in COLUMNS}
        for label, known in ROWS.items():
            neg = _negatives(source, known)
            t = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe = make().fit(np.concatenate([source["g"][:n], neg]),
                                  np.r_[np.ones(n), -np.ones(len(neg))])
            _row(detector, label, pipe.decision_function, tests, known, fresh,
                 source["jpeg90"], f"{time.time() - t:.0f} s")
    run_union({**images, **extra_img}, n)
    print(fingerprint_note(args.cache_dir, _SPECS))
    print(f"\n{time.time() - t0:.0f} s (images and features cached in {args.cache_dir}).")


def run_union(source, n):
    """FLIPAD, DCTPAD and the pixel guard in a ConformalUnion, end to end on the images."""
    G = load_face_dcgan()
    print("\n## FLIPAD, DCTPAD (immunised in the last row) and the pixel guard in one "
          "`ConformalUnion`\n")
    print("Fitted end to end on the images of the row, then each detector recalibrated "
          "with `union.calibrate(sampler)` on as many fresh samples of G as its share of "
          f"fnr 0.005 needs; shares {UNION_WEIGHTS} (set before the union was measured).  "
          "Verdict: G's when every detector accepts.  Cells as above; AUC of each "
          "detector's p-value over its bound, the smallest (its log's sign is the "
          "verdict).\n")
    print("| union | labelled others | G rejected | " + " | ".join(COLUMNS.values()) +
          " | G's samples after JPEG q90 accepted | run |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    fresh = np.concatenate([source["g"][n:], source["fresh"]])
    tests = {key: source[key] for key in COLUMNS}
    for label, immunise in UNION_ROWS:
        known = ROWS[label]
        neg = _negatives(source, known)
        t = time.time()
        union = open_world_union(G, immunise)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            union.fit(np.concatenate([source["g"][:n], neg]),
                      np.r_[np.ones(n), -np.ones(len(neg))])
            rng = np.random.default_rng(20)
            union.calibrate(lambda k: sample(G, k, seed=int(rng.integers(2**31))))
        t_fit = time.time() - t
        bounds = np.array([e[-1].fnr_bound_ for _, e in union.estimators_])
        cache = {}

        def decide(X):
            # each source is scored once (_row asks for fresh G's scores per column)
            if id(X) not in cache:
                cache[id(X)] = verdict_score(union.pvalues(X, per_detector=True), bounds)
            return cache[id(X)]
        name = "FLIPAD + DCTPAD" + (" immunised" if immunise else "") + " + pixel guard"
        _row(name, label, decide, tests, known, fresh,
             source["jpeg90"], f"fit and calibration {t_fit:.0f} s; fnr bound "
             f"{union.fnr_bound_:.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_face_architectures.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
