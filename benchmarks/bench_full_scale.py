"""The whole attribution protocol at the paper's scale, timed end to end (issue 32).

The README demo's recipe (:func:`flipad_sklearn.demo.run`: the bundled MNIST
DCGAN as G, :func:`~flipad_sklearn.make_flipad` at its defaults but
``positive=True``, threshold at fnr 0.005) at the paper's sizes: 1500
samples of G and 1500 labelled others (750 real digits, 750 of a shadow of
G) to fit, 1000 test samples per source (G, real digits, an unseen seed of
G's architecture, an LSGAN).  Everything is timed: sampling, the anchor,
the inversion of 7500 images, Deep SAD's training and the scoring.

``--generator face``: the same protocol on the published face DCGAN
(``gan-face-generate``, 64x64 RGB; the recipe of ``bench_open_world_face``):
1500 samples of G against 1500 of a competitor trained on G's samples, 1000
test samples each of G, an unseen seed of G's architecture and the upsample
+ conv family (the trained generators come from the face benchmarks' cache;
their training is not timed, it is not part of the protocol).

``--generator face --recipe open-world``: the same protocol with the recipe
the user guide recommends for an owner (``make_open_world_union``, labelled
others: the competitor and the five shadows of one ``open_world_shadows``
call, 250 each; every sample of G trains every detector
(``validation_size=0``) and ``calibrate(..., max_fnr=0.01)`` sets the
thresholds on fresh samples of G, as the guide does, which is timed).  After the clock
stops it also scores the issue's other two sources of item 0 (another image
domain, G's samples after JPEG q90), so that item 0's table after the fix
comes from this one run.

Run: ``python -m benchmarks.bench_full_scale [--threads 1] [--generator
face]``; writes ``benchmarks/results/bench_full_scale.md`` (face:
``bench_full_scale_face.md``) with the load average of the machine while it
ran (a shared machine inflates the time).
"""

import argparse
import os
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from flipad_sklearn import demo

from ._results import add_result_args, results_dir, tee_result
from flipad_sklearn import JPEGCompression
from flipad_sklearn.generators import OPEN_WORLD_SHADOWS

from .bench_face_blind_one_call import _one_call_note, one_call_shadows
from .bench_face_dcgan import (
    FACE_CACHE, FACE_OTHERS, fingerprint_note, load_face_dcgan, other_domain, sample,
    trained_other,
)
from .bench_open_world_face import OTHERS, _recipe, open_world_union

TARGET_MINUTES = 10


def _timed(label, fn):
    """``fn()``, printing how long it took under ``label``."""
    t = time.time()
    value = fn()
    print(f"{label}: {time.time() - t:.0f} s", flush=True)
    return value


def run(args):
    load_before = os.getloadavg()
    out = demo.run(n_own=1500, n_neg=750, n_test=1000, verbose=True, figure=None,
                   random_state=args.seed)
    _summary(out["seconds"], out["accuracy"], out["auc"], load_before)


def run_face(args):
    """The protocol on the published face DCGAN, every step but the others' training timed."""
    G = load_face_dcgan()
    comp, unseen, upconv = (trained_other(G, name, *OTHERS[name], args.cache_dir)
                            for name in ("comp", "unseen", "upconv"))
    load_before = os.getloadavg()
    t0 = time.time()
    seed = 100 * args.seed
    X_own = _timed("sampling", lambda: {
        "own": sample(G, 1500, seed + 20), "others": sample(comp, 1500, seed + 21),
        "G": sample(G, 1000, seed + 22), "unseen": sample(unseen, 1000, seed + 23),
        "upconv": sample(upconv, 1000, seed + 24)})
    pipe = _timed("anchor (1000 samples of G) and make_flipad", lambda: _recipe(G, fnr=0.005))
    X = np.concatenate([X_own["own"], X_own["others"]])
    y = np.r_[np.ones(1500), -np.ones(1500)]
    _timed("fit: 3000 inversions and Deep SAD", lambda: pipe.fit(X, y))
    dec = _timed("scoring: 3000 inversions", lambda: {
        k: pipe.decision_function(X_own[k]) for k in ("G", "unseen", "upconv")})
    seconds = time.time() - t0
    g = dec["G"]
    accuracy = {"G": float(np.mean(g >= 0))}
    auc = {}
    for k in ("unseen", "upconv"):
        accuracy[k] = float(0.5 * (np.mean(g >= 0) + np.mean(dec[k] < 0)))
        auc[k] = roc_auc_score(np.r_[np.ones(g.size), np.zeros(dec[k].size)], np.r_[g, dec[k]])
    print("\nG: the published face DCGAN (64x64 RGB); 1500 samples of G against 1500 of a "
          "competitor (G's architecture trained on G's samples) to fit; 1000 test samples "
          "of G, of an unseen seed of G's architecture and of the upsample + conv family.  "
          "The others' training (bench_face_dcgan's recipe, cached) is not timed.")
    _summary(seconds, accuracy, auc, load_before)
    print(fingerprint_note(args.cache_dir, FACE_OTHERS))


def run_face_open_world(args):
    """The protocol with the recommended open-world recipe, calibration included in the time."""
    G = load_face_dcgan()
    comp, unseen, upconv = (trained_other(G, name, *OTHERS[name], args.cache_dir)
                            for name in ("comp", "unseen", "upconv"))
    labelled = open_world_others(G, comp, args.cache_dir)
    per_other = args.n_others // len(labelled)
    load_before = os.getloadavg()
    t0 = time.time()
    seed = 100 * args.seed
    X_own = _timed("sampling", lambda: {
        **open_world_training_set(G, labelled, seed, args.n_own, args.n_others),
        "G": sample(G, 1000, seed + 22), "unseen": sample(unseen, 1000, seed + 23),
        "upconv": sample(upconv, 1000, seed + 24)})
    # as the guide: every sample of G trains every detector, fresh ones set the thresholds
    union = _timed("anchor (1000 samples of G) and make_open_world_union",
                   lambda: open_world_union(G, validation_size=0, **_immunised(args)))
    X = np.concatenate([X_own["own"], X_own["others"]])
    y = np.r_[np.ones(args.n_own), -np.ones(len(X_own["others"]))]
    _timed(f"fit: {len(X)} inversions, Deep SAD on FLIPAD and DCTPAD features, the pixel "
           "guard", lambda: union.fit(X, y))
    rng = np.random.default_rng(seed + 40)
    _timed(f"calibrate: fresh samples of G, max_fnr={args.max_fnr}",
           lambda: union.calibrate(lambda k: sample(G, k, int(rng.integers(2**31))),
                                   **({} if args.max_fnr is None
                                      else dict(max_fnr=args.max_fnr))))
    n_cal = {name: int(det.validation_scores_.size)
             for (name, _), det in zip(union.estimators_, union._detectors())}
    # one pass per detector gives the verdict and which detector rejected each image
    verdicts = _timed("scoring: 3000 images", lambda: {
        k: union.pvalues(X_own[k], per_detector=True, return_decision=True)
        for k in ("G", "unseen", "upconv")})
    seconds = time.time() - t0
    print("\nnot timed (item 0's other two sources):", flush=True)
    extra = {"other domain": other_domain(1000, seed + 25),
             "G, JPEG q90": JPEGCompression(quality=90).fit_transform(X_own["G"])}
    verdicts.update({k: union.pvalues(v, per_detector=True, return_decision=True)
                     for k, v in extra.items()})
    dec = {k: d for k, (_, d) in verdicts.items()}
    g = dec["G"]
    accuracy = {"G": float(np.mean(g >= 0)),
                "G, JPEG q90": float(np.mean(dec["G, JPEG q90"] >= 0))}
    auc = {}
    for k in ("unseen", "upconv", "other domain"):
        accuracy[k] = float(0.5 * (np.mean(g >= 0) + np.mean(dec[k] < 0)))
        auc[k] = roc_auc_score(np.r_[np.ones(g.size), np.zeros(dec[k].size)], np.r_[g, dec[k]])
    immunised = {"none": "", "dctpad": ", DCTPAD immunised (published, the guide's)",
                 "flipad": ", FLIPAD immunised (published), DCTPAD not",
                 "published": ", FLIPAD and DCTPAD immunised (published, the CLI's)"}[
        args.immunise]
    print("\nG: the published face DCGAN (64x64 RGB); the recipe: make_open_world_union "
          f"(FLIPAD, DCTPAD, pixel guard at shares {union.weights}, validation_size=0"
          f"{immunised}) "
          f"fitted on all {args.n_own} samples of G against {len(X_own['others'])} labelled "
          "others "
          f"({per_other} each of the "
          f"competitor and the one-call shadows {', '.join(OPEN_WORLD_SHADOWS)}), the "
          f"thresholds then set on fresh samples of G (calibrate, max_fnr={args.max_fnr}: "
          f"samples per detector {n_cal}); "
          f"fnr bound {union.fnr_bound_:.4f}; "
          f"90 % interval of the share of G's samples one calibration rejects "
          f"{union.fnr_interval_[0]:.4f}-{union.fnr_interval_[1]:.4f}.  1000 test samples "
          "of G, of an unseen seed of G's architecture and of the upsample + conv family "
          "(timed); then 1000 of another domain (the demo's MNIST DCGAN, 64x64) and G's "
          "1000 test samples after JPEG q90 (not timed).  'G' and 'G, JPEG q90': share "
          "accepted.  The others' and shadows' training is not timed (below).")
    scale = ("the paper's scale" if (args.n_own, args.n_others) == (1500, 1500)
             else f"{args.n_own} samples of G and {args.n_others} labelled others")
    _summary(seconds, accuracy, auc, load_before, scale)
    _rejected_by(union, verdicts)
    print(fingerprint_note(args.cache_dir, FACE_OTHERS))
    print(_one_call_note(args.cache_dir))


def _immunised(args):
    """--immunise published: FLIPAD and DCTPAD immunised, as `flipad fit --detector union
    --immunise published` builds the union; dctpad: DCTPAD only (``immunise="published"``
    of make_open_world_union, the guide's recipe with shadows); flipad: FLIPAD only
    (``flipad_params={"immunise": "published"}``); none: neither."""
    if args.immunise == "none":
        return {}
    if args.immunise == "dctpad":
        return dict(immunise="published")
    if args.immunise == "flipad":
        return dict(flipad_params=dict(immunise="published"))
    return dict(immunise=args.immunise, flipad_params=dict(immunise=args.immunise))


def open_world_others(G, comp, cache):
    """The labelled others of the open-world run: the competitor and the one-call shadows."""
    return {"comp": comp, **one_call_shadows(G, cache)}


def open_world_training_set(G, labelled, seed, n_own=1500, n_others=1500):
    """Samples of G ("own") and of the labelled others, as many of each other."""
    per_other = n_others // len(labelled)
    return {"own": sample(G, n_own, seed + 20),
            "others": np.concatenate([sample(m, per_other, seed + 30 + i)
                                      for i, m in enumerate(labelled.values())])}


def _rejected_by(union, verdicts):
    """Share of each source's images each detector rejects (p_j at or below its bound)."""
    names = [name for name, _ in union.estimators_]
    bounds = np.array([det._fnr_bound() for det in union._detectors()])
    print("\nWhich detector rejected the images (share of each source rejected by each "
          f"detector at its threshold; its fnr: "
          f"{', '.join(f'{n} {d.fnr:g}' for n, d in zip(names, union._detectors()))}):\n")
    print("| source | union | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for source, (P, decision) in verdicts.items():
        rejected = P <= bounds
        # the union rejects exactly where some detector does
        assert np.array_equal(rejected.any(axis=1), decision < 0), source
        print(f"| {source} | {np.mean(decision < 0):.3f} | "
              + " | ".join(f"{v:.3f}" for v in rejected.mean(axis=0)) + " |")


def _summary(seconds, accuracy, auc, load_before, scale="the paper's scale"):
    load_after = os.getloadavg()
    minutes = seconds / 60
    print(f"\n# The protocol at {scale}: {minutes:.1f} minutes end to end\n")
    print("| source | accuracy at fnr 0.005 | ROC AUC |")
    print("|---|---|---|")
    for s, acc in accuracy.items():
        print(f"| {s} | {acc:.3f} | {auc.get(s, float('nan')):.3f} |")
    print(f"\n{torch.get_num_threads()} torch thread(s); target < {TARGET_MINUTES} minutes "
          f"on 2 cores: {'met' if minutes < TARGET_MINUTES else 'missed'}.  Load average "
          f"(1 min) of the machine before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
          f"({_load_note(max(load_before[0], load_after[0]), torch.get_num_threads())}).")


def _load_note(load, threads):
    """How to read the time: a load above the run's own threads means shared cores."""
    if load > threads + 0.5:
        return "above the number of threads: other jobs shared the cores"
    return "at most the number of threads: the cores were not shared"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generator", choices=("demo", "face"), default="demo",
                   help="the README demo's MNIST DCGAN, or the published face DCGAN")
    p.add_argument("--cache-dir", default=FACE_CACHE,
                   help="the face benchmarks' trained generators (--generator face)")
    p.add_argument("--recipe", choices=("flipad", "open-world"), default="flipad",
                   help="--generator face: make_flipad, or the open-world union of the guide")
    p.add_argument("--immunise", choices=("none", "dctpad", "flipad", "published"),
                   default="none",
                   help="--recipe open-world: published immunises FLIPAD and DCTPAD, as "
                        "`flipad fit --detector union --immunise published`; dctpad only "
                        "DCTPAD, as make_open_world_union(immunise='published'); flipad "
                        "only FLIPAD (none)")
    p.add_argument("--n-own", type=int, default=1500,
                   help="--recipe open-world: samples of G to fit (1500, the paper's)")
    p.add_argument("--n-others", type=int, default=1500,
                   help="--recipe open-world: labelled others to fit (1500)")
    p.add_argument("--max-fnr", type=float, default=0.01,
                   help="--recipe open-world: union.calibrate(..., max_fnr=) as the guide "
                        "does (0.01); 0: the fewest samples each share needs")
    add_result_args(p)
    args = p.parse_args(argv)
    args.max_fnr = args.max_fnr or None
    torch.set_num_threads(args.threads)
    if args.generator == "face" and args.recipe == "open-world":
        suffix = "" if args.immunise == "none" else f"_immunised_{args.immunise}"
        if (args.n_own, args.n_others) != (1500, 1500):
            suffix += f"_{args.n_own}_{args.n_others}"
        tee_result(f"bench_full_scale_face_open_world{suffix}.md", run_face_open_world, args,
                   results_dir=results_dir(args))
    elif args.generator == "face":
        tee_result("bench_full_scale_face.md", run_face, args, results_dir=results_dir(args))
    else:
        tee_result("bench_full_scale.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
