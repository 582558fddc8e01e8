"""Why a recompressed file hid a generator's upsampling from DCTPAD, and JPEG's blocks.

On the published face DCGAN, a generator of G's architecture whose last layer
upsamples bicubically then convolves (E1, never among the labelled others)
is rejected on its PNG files and passed on its JPEG ones
(``bench_face_recipe_perturbations``).  Two questions, on the same images:

1. **Is the trace still in the file?**  A linear classifier (logistic
   regression on standardised ``log |DCT|``) with E1 *labelled*: trained on
   1000 of G's images and 1000 of E1's, another 500 of each held out, all
   perturbed the same way.  Its threshold at G's 0.5 % quantile (fresh
   samples of G).  Not a detector anyone could build (E1 is unknown); it
   says whether the compression erased the trace.
2. **Which features keep it open-world?**  DCTPAD as the open-world union
   trains it (:func:`~flipad_sklearn.make_dctpad`, ``immunise="published"``,
   its own held-out threshold at fnr 0.005), on the whole image's spectrum
   (``block_size=None``, the union until the blocks) and with JPEG's 8 x 8
   blocks' spectra beside it (``block_size=8``); trained on 1500 samples of
   G against the recipe's labelled others (the competitor and the five
   one-call shadows; E1 is not among them), the training set of
   ``bench_full_scale`` (seed 0).  Tested on 500 fresh samples of G and 200
   per other source, each perturbed.
3. **What do the blocks cost where no shadow taught DCTPAD?**  DCTPAD
   clean (the union's, not immunised) against the competitor alone, on
   ``bench_open_world_face``'s images as generated.

Cells: accuracy at the threshold (share of G accepted, share of a source
rejected) / ROC AUC of the source against G.  DCTPAD alone rejects neither
the real digits (the pixel guard's job in the union) nor everything; the
union's verdicts on the same files are in
``bench_face_recipe_perturbations_cli_cli_whole_1500_1500_seed1.md``.

Run: ``python -m benchmarks.bench_face_jpeg_grid`` (after
``bench_face_blind_one_call``, whose trained generators it reads).  Writes
``benchmarks/results/bench_face_jpeg_grid.md``.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from flipad_sklearn import DCTFeatures, make_dctpad

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import N_TEST, TEST_SEED, real_digits, trained_vae
from .bench_face_blind_recipe import BLIND as THIRD_BLIND
from .bench_face_dcgan import FACE_CACHE, load_face_dcgan, sample, trained_other
from .bench_face_recipe_perturbations import PERTURBATIONS as ALL_PERTURBATIONS
from .bench_face_recipe_perturbations import SOURCES
from .bench_full_scale import open_world_others, open_world_training_set
from .bench_open_world_face import OTHERS, build

FNR = 0.005
#: the rows: bench_face_recipe_perturbations' within the published mixture
PERTURBATIONS = {name: ALL_PERTURBATIONS[name] for name in (
    "8-bit PNG", "JPEG q90", "JPEG q70", "resize 0.9 and back", "centre crop 90 %")}
#: part 3's sources from bench_open_world_face's images
FAR = {"unseen": "G's architecture, unseen seed", "upconv": "upsample + conv family",
       "finetune": "G fine-tuned", "domain": "another domain"}


def _perturb(name, X):
    t = PERTURBATIONS[name]
    if t is None:   # what an 8-bit PNG holds
        return np.round((np.clip(X, -1, 1) + 1) * 127.5) / 127.5 - 1
    return t.fit_transform(X).reshape(X.shape)


def _auc(own, other):
    """ROC AUC of G's scores (higher = more G's) against another source's."""
    return roc_auc_score(np.r_[np.ones(len(own)), np.zeros(len(other))], np.r_[own, other])


def _oracle(G, E1, perturbation, block_size):
    """E1 labelled: a linear classifier's accuracy on E1 / AUC, and G accepted."""
    dct = DCTFeatures(block_size=block_size)

    def feats(X):
        return dct.fit_transform(_perturb(perturbation, X))
    g, e, fresh = (feats(sample(G, 1500, 501)), feats(sample(E1, 1500, 502)),
                   feats(sample(G, 1000, 601)))
    X = np.r_[g[:1000], e[:1000]]
    mu, sd = X.mean(0), X.std(0) + 1e-6
    clf = LogisticRegression(C=0.01, max_iter=3000).fit(
        (X - mu) / sd, np.r_[np.ones(1000), np.zeros(1000)])
    score = lambda F: clf.decision_function((F - mu) / sd)   # noqa: E731
    threshold = np.quantile(score(fresh), FNR)
    s_g, s_e = score(g[1000:]), score(e[1000:])
    return np.mean(s_g >= threshold), np.mean(s_e < threshold), _auc(s_g, s_e)


def run(args):
    t0 = time.time()
    G = load_face_dcgan()
    arch, seed = THIRD_BLIND["E1"]
    E1 = trained_other(G, arch, arch, seed, args.cache_dir)
    print("# JPEG's blocks: where a recompressed file keeps a generator's upsampling\n")
    print("## 1. The trace is in the file: E1 labelled (a linear classifier, not a "
          "detector)\n")
    print("| perturbation | features | G accepted | E1 rejected / AUC |")
    print("|---|---|---|---|")
    for name in args.perturbations:
        for block_size, label in ((None, "whole image"), (8, "whole image + 8x8 blocks")):
            acc_g, rej, auc = _oracle(G, E1, name, block_size)
            print(f"| {name} | {label} | {acc_g:.3f} | {rej:.3f} / {auc:.3f} |")

    comp = trained_other(G, "comp", *OTHERS["comp"], args.cache_dir)
    train = open_world_training_set(G, open_world_others(G, comp, args.cache_dir), 0,
                                    args.n_own, args.n_others)
    X = np.concatenate([train["own"], train["others"]])
    y = np.r_[np.ones(len(train["own"])), -np.ones(len(train["others"]))]
    fresh = sample(G, 500, 61)
    tests = {"unseen": sample(trained_other(G, "unseen", "dcgan", 12, args.cache_dir),
                              N_TEST, TEST_SEED),
             "C4": sample(trained_vae(G, args.cache_dir), N_TEST, TEST_SEED),
             "E1": sample(E1, N_TEST, TEST_SEED),
             "digits": real_digits(N_TEST, TEST_SEED)}
    print(f"\n## 2. Open world: DCTPAD immunised (E1 never labelled), fnr {FNR}\n")
    print(f"{len(train['own'])} samples of G against {len(train['others'])} of the "
          "competitor and the five one-call shadows; threshold on DCTPAD's own held-out "
          "samples of G; each test source perturbed before scoring.  Cells: accuracy / "
          "ROC AUC against G.\n")
    print("| perturbation | DCTPAD | G accepted | " + " | ".join(SOURCES.values()) + " |")
    print("|---|---|---|" + "---|" * len(SOURCES))
    detectors = {}
    for block_size, label in ((None, "whole image (`block_size=None`)"),
                              (8, "whole image + 8x8 blocks (`block_size=8`)")):
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detectors[label] = make_dctpad((3, 64, 64), immunise="published",
                                           random_state=args.seed, device="cpu",
                                           block_size=block_size).fit(X, y)
        print(f"<!-- {label}: fit {time.time() - t:.0f} s -->")
    for name in args.perturbations:
        for label, det in detectors.items():
            own = _perturb(name, fresh)
            s_g = det.decision_function(own)
            cells = []
            for key in SOURCES:
                X_src = _perturb(name, tests[key])
                cells.append(f"{np.mean(det.predict(X_src) == -1):.3f} / "
                             f"{_auc(s_g, det.decision_function(X_src)):.3f}")
            print(f"| {name} | {label} | {np.mean(det.predict(own) == 1):.3f} | "
                  + " | ".join(cells) + " |")
    _competitor_only(args, tests)
    print(f"\n{time.time() - t0:.0f} s (trained generators cached in {args.cache_dir}).")


def _competitor_only(args, tests):
    """DCTPAD clean (the union's) against the competitor alone, on images as generated."""
    images, _ = build(args.cache_dir, log=lambda msg: None)   # cached: nothing to say
    X = np.concatenate([images["g"][:400], images["comp"]])
    y = np.r_[np.ones(400), -np.ones(len(images["comp"]))]
    own = np.concatenate([images["g"][400:], images["fresh"]])
    sources = {**{k: images[k] for k in FAR}, "C4": tests["C4"], "E1": tests["E1"]}
    print("\n## 3. The competitor alone: DCTPAD clean, images as generated\n")
    print(f"400 samples of G against {len(images['comp'])} of the competitor (the paper's "
          f"protocol, `bench_open_world_face`'s images); {len(own)} other samples of G, "
          "100 per source of that benchmark and 200 of C4 and E1, as 8-bit PNGs.  Cells: "
          "accuracy / ROC AUC against G.\n")
    names = {**FAR, "C4": SOURCES["C4"], "E1": SOURCES["E1"]}
    print("| DCTPAD | G accepted | " + " | ".join(names.values()) + " |")
    print("|---|---|" + "---|" * len(names))
    for block_size, label in ((None, "whole image (`block_size=None`)"),
                              (8, "whole image + 8x8 blocks (`block_size=8`)")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = make_dctpad((3, 64, 64), random_state=args.seed, device="cpu",
                              block_size=block_size).fit(X, y)
        own8 = _perturb("8-bit PNG", own)
        s_g = det.decision_function(own8)
        cells = []
        for key in names:
            X_src = _perturb("8-bit PNG", sources[key])
            cells.append(f"{np.mean(det.predict(X_src) == -1):.3f} / "
                         f"{_auc(s_g, det.decision_function(X_src)):.3f}")
        print(f"| {label} | {np.mean(det.predict(own8) == 1):.3f} | " + " | ".join(cells)
              + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--perturbations", nargs="+", choices=list(PERTURBATIONS),
                   default=list(PERTURBATIONS), metavar="NAME")
    p.add_argument("--n-own", type=int, default=1500)
    p.add_argument("--n-others", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0, help="DCTPAD's random_state")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_face_jpeg_grid.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
