"""Which shadows help on a published generator: a competitor's copy or fine-tuned copies of G
(issue 32).

G is the published face DCGAN (``gan-face-generate``).  The recipe of
:func:`~flipad_sklearn.make_flipad` at its defaults is trained on 400
samples of G against 200 labelled others of one of three kinds, and tested
on the sources of :mod:`benchmarks.bench_open_world_face` (same cache, same
test images):

* a competitor: G's architecture trained from scratch on G's samples
  (what ``bench_open_world_face`` uses, ``TRAIN_RECIPE`` there);
* fine-tuned copies of G: ``train_shadows(G, X, init="finetune")``, one
  epoch on 500 of G's samples against a new discriminator, two seeds (15,
  16; the test source "G fine-tuned" is seed 14);
* both (100 + 100).

Run: ``python -m benchmarks.bench_face_shadows`` (about 10 minutes on one
thread after ``bench_open_world_face`` has filled its cache).  Writes
``benchmarks/results/bench_face_shadows.md``.
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch

from flipad_sklearn.generators import train_shadows

from ._results import add_result_args, results_dir, tee_result
from .bench_face_dcgan import FACE_OTHERS, LATENT, fingerprint_note, load_face_dcgan, sample
from .bench_open_world_face import NAMES, _inverter, build, head, rows_for
from .train_zoo import DEFAULT_CACHE


def _finetuned_features(cache, G, log):
    path = os.path.join(cache, "finetuned_shadows.npz")
    if os.path.exists(path):
        return dict(np.load(path))["features"]
    t = time.time()
    shadows = train_shadows(G, sample(G, 500, seed=1), seeds=[15, 16], latent_shape=LATENT,
                            epochs=1, init="finetune")
    X = np.concatenate([sample(S, 100, seed=30 + i) for i, S in enumerate(shadows)])
    F = _inverter(G).transform(X).astype(np.float32)
    np.savez(path, features=F)
    log(f"two fine-tuned shadows and their 200 samples inverted in {time.time() - t:.0f} s")
    return F


def run(args):
    t0 = time.time()
    images, F = build(args.cache_dir)
    G = load_face_dcgan()
    F_ft = _finetuned_features(args.cache_dir, G, print)
    n = 400
    fresh = np.concatenate([F["g"][n:], F["fresh"]])
    tests = {k: F[k] for k in (*NAMES, "jpeg90")}
    negatives = {"a competitor (G's architecture from scratch on G's samples)": F["comp"],
                 "two fine-tuned copies of G": F_ft,
                 "both (100 + 100)": np.concatenate([F["comp"][:100], F_ft[::2]])}
    print("# Which shadows help on the published face DCGAN\n")
    print(f"The recipe at its defaults, {n} samples of G against 200 labelled others of "
          f"each kind; {len(fresh)} fresh samples of G and 100 per source to test.  Cells: "
          "accuracy at fnr 0.005 / ROC AUC.\n")
    print("| labelled others | G rejected | " + " | ".join(NAMES.values()) +
          " | G's samples after JPEG q90 accepted | fit |")
    print("|---|---|" + "---|" * len(NAMES) + "---|---|")
    for label, neg in negatives.items():
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = head().fit(np.concatenate([F["g"][:n], neg]),
                              np.r_[np.ones(n), -np.ones(len(neg))])
        rows_for(label, pipe.decision_function, {"fresh G": fresh, **tests},
                 f"{time.time() - t:.0f} s")
    print(fingerprint_note(args.cache_dir, FACE_OTHERS))
    print(f"\n{time.time() - t0:.0f} s.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=os.path.join(DEFAULT_CACHE, "face_open_world"))
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_face_shadows.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
