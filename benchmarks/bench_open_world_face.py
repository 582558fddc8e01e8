"""The default detector on a published generator, and the union that makes it open-world (issue 32).

G is the trained face DCGAN of the PyPI wheel ``gan-face-generate`` (see
:mod:`benchmarks.bench_face_dcgan`, whose sources this reuses): the recipe of
:func:`~flipad_sklearn.make_flipad` at its defaults is trained on
``--n-own`` samples of G against 200 of a competitor (G's architecture
trained on G's samples) and tested on fresh samples of G and on sources it
never saw: G's architecture with an unseen seed, an upsample + ``Conv2d``
family, another image domain, a copy of G fine-tuned on its own samples,
and G's own samples after JPEG q90.

Compared, on the same inverted features (the inversion is the costly part:
it runs once and is cached in ``--cache-dir``):

* the default (``combine="auto"``: Deep SAD alone when labelled negatives
  are given, the one-class guard otherwise);
* ``combine="mean"``: the guard kept (what the old ``"auto"`` chose here);
* ``one_class=None``: the paper's Deep SAD alone;
* RAWPAD (:func:`~flipad_sklearn.make_rawpad`) on the pixels and DCTPAD
  (:func:`~flipad_sklearn.make_dctpad`) on their DCT;
* :class:`~flipad_sklearn.ConformalUnion` of the recipe, RAWPAD (or DCTPAD)
  and :func:`~flipad_sklearn.make_pixel_guard`, fitted and scored on the
  images end to end (its own inversions, not the cache), each detector then
  recalibrated on fresh samples of G (as many as its share of fnr needs).

Also the lead behind the pixel guard: a Gaussian model of 8x8-downsampled
pixels, fitted on G's training samples alone, rejected at its own 0.5 %
quantile of fresh G.

The other generators are trained with :func:`~flipad_sklearn.generators.train_shadows`
on 2000 samples of G (``TRAIN_RECIPE``: 372 Adam steps, early-training models
with a face's layout, far from converged: a CPU budget); the result file says
what each source emits (pixel statistics).

Run: ``python -m benchmarks.bench_open_world_face`` (about 70 minutes on one
thread without a cache: training the four other generators and the
inversions; about 20 with it, most of it the union's own inversions).
Writes ``benchmarks/results/bench_open_world_face.md``.
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from flipad_sklearn import (
    ConformalPipeline, ConformalUnion, JPEGCompression, find_final_layer, make_dctpad,
    make_flipad, make_open_world_union, make_pixel_guard, make_rawpad, mean_activation,
)
from flipad_sklearn.generators import train_shadows

from ._harness import accuracy_auc
from ._results import add_result_args, results_dir, tee_result
from .bench_face_dcgan import (
    FACE_CACHE, FACE_OTHERS, LATENT, TRAIN_BATCH, TRAIN_EPOCHS, TRAIN_SAMPLES,
    fingerprint_note, load_face_dcgan, other_domain, sample, trained_other,
    weights_fingerprints,
)

N_G, N_COMP, N_TEST = 800, 200, 100
NAMES = {"unseen": "same architecture, trained on G's samples, unseen seed",
         "upconv": "upsample + conv generator trained on G's samples",
         "domain": "another domain (MNIST DCGAN resized to 64x64)",
         "finetune": "G fine-tuned on its own samples (1 epoch, new discriminator)"}
#: the unions' detectors and their shares of fnr (the pixel guard is cheap to calibrate
#: on many fresh samples of G; its sources lie far away): two weightings with RAWPAD,
#: then the first with DCTPAD in RAWPAD's place (after bench_face_architectures had
#: measured the two alone)
UNION_WEIGHTINGS = [{"flipad": 0.5, "rawpad": 0.3, "pixels": 0.2},
                    {"flipad": 0.3, "rawpad": 0.6, "pixels": 0.1},
                    {"flipad": 0.5, "dctpad": 0.3, "pixels": 0.2}]
#: the others' training (bench_face_dcgan's recipe), part of the cache's key
TRAIN_RECIPE = f"{TRAIN_SAMPLES} samples of G, {TRAIN_EPOCHS} epochs, batch {TRAIN_BATCH}"
#: the trained others: source -> (architecture, seed)
OTHERS = {name: (arch, seed) for name, arch, seed in FACE_OTHERS}
_SAMPLE_SEEDS = {"comp": 5, "unseen": 7, "upconv": 8}


def _other(G, name, cache, log):
    """The other generator ``name`` trained on G's samples (its weights cached in ``cache``)."""
    arch, seed = OTHERS[name]
    return trained_other(G, name, arch, seed, cache, log=log)


def _inverter_key(inv):
    """The settings of the recipe's inverter that shape its features (scalars only: the
    layer and the anchor are G's), part of the features cache's key."""
    params = inv[0].get_params(deep=False)
    return json.dumps({k: v for k, v in sorted(params.items())
                       if isinstance(v, (bool, int, float, str, type(None)))})


def _features_hold(inv, images, features, n=4):
    """Whether cached features are what ``inv`` computes now (checked on ``n`` images)."""
    if "g" not in features or "g" not in images:
        return False
    now = inv.transform(images["g"][:n])
    return bool(np.allclose(now, features["g"][:n], rtol=1e-4, atol=1e-5))


def build(cache, log=print):
    """Images of every source and their FLIPAD features (the inverter of make_flipad).

    Cached in ``cache``; sources made by an older recipe (``recipe`` in the
    images file) are made again, the others kept; features computed with
    other inverter settings (``inverter`` in the features file) are computed
    again (a cache written before the key existed is checked on a few
    images instead).
    """
    img_path, feat_path = (os.path.join(cache, f) for f in ("images.npz", "features.npz"))
    os.makedirs(cache, exist_ok=True)
    images, features, inverter = {}, {}, ""
    if os.path.exists(feat_path) and os.path.exists(img_path):
        images, features = dict(np.load(img_path)), dict(np.load(feat_path))
        # both files carry the recipe and the weights' fingerprints: a run stopped
        # between the two writes must not pair new images with old features, and
        # samples of a generator trained again are made again
        inverter = str(features.pop("inverter", ""))
        keys = {(str(d.pop("recipe", "")), str(d.pop("fingerprints", "")))
                for d in (images, features)}
        if keys != {(TRAIN_RECIPE, _fingerprints(cache))}:
            for name in OTHERS:
                images.pop(name, None)
                features.pop(name, None)
    G = load_face_dcgan()
    inv = _inverter(G)
    if features and inverter != _inverter_key(inv) and not (
            inverter == "" and _features_hold(inv, images, features)):
        log("the cached features were computed with other inverter settings: again")
        features = {}
    fresh = images.get("fresh")
    if fresh is None:
        fresh = sample(G, N_TEST, seed=6)
    makers = {"g": lambda: sample(G, N_G, seed=4), "fresh": lambda: fresh,
              "domain": lambda: other_domain(N_TEST, 9),
              "finetune": lambda: sample(_finetuned(G), N_TEST, 10),
              "jpeg90": lambda: JPEGCompression(quality=90).fit_transform(fresh)}
    for name in OTHERS:
        makers[name] = (lambda name=name: sample(_other(G, name, cache, log),
                                                 N_COMP if name == "comp" else N_TEST,
                                                 _SAMPLE_SEEDS[name]))
    missing = [k for k in makers if k not in features or k not in images]
    stamp = dict(recipe=np.array(TRAIN_RECIPE), fingerprints=np.array(_fingerprints(cache)))
    if not missing:
        if inverter != _inverter_key(inv):      # checked above: stamp it
            np.savez(feat_path, **stamp, inverter=np.array(_inverter_key(inv)), **features)
        log(f"cached: {cache}")
        return images, features
    for name in missing:
        images[name] = makers[name]()
        log(f"inverting {len(images[name])} images of {name}")
        features[name] = inv.transform(images[name]).astype(np.float32)
    np.savez(img_path, **stamp, **images)
    np.savez(feat_path, **stamp, inverter=np.array(_inverter_key(inv)), **features)
    return images, features


def _fingerprints(cache):
    """The others' weights in ``cache``, as one string (the samples' cache key)."""
    return json.dumps(weights_fingerprints(cache, FACE_OTHERS), sort_keys=True)


def save_source_grid(images, folder, n=8, keys=None,
                     name="bench_open_world_face_sources.png"):
    """``name`` in ``folder``: ``n`` test images per source of ``keys``, one row each."""
    from PIL import Image

    keys = ("fresh", "comp", *NAMES) if keys is None else tuple(keys)
    rows = [np.concatenate(list(images[k][:n].reshape(n, 3, 64, 64).transpose(0, 2, 3, 1)),
                           axis=1) for k in keys]
    grid = np.round((np.clip(np.concatenate(rows), -1, 1) + 1) * 127.5).astype(np.uint8)
    path = os.path.join(folder, name)
    Image.fromarray(grid).save(path)
    print(f"\nSample images, one row per source ({', '.join(keys)}): `{os.path.basename(path)}`.")


def source_rows(images):
    """What each source emits: per-image pixel std and mean (median, 1-99 %)."""
    print("\nWhat each source emits (per image: std and mean of its pixels in [-1, 1]; "
          "median and 1-99 % range over the source's test images):\n")
    print("| source | pixel std | pixel mean |")
    print("|---|---|---|")
    for key in ("fresh", "comp", *NAMES):
        X = images[key].reshape(len(images[key]), -1)
        cells = []
        for v in (X.std(axis=1), X.mean(axis=1)):
            lo, med, hi = np.percentile(v, [1, 50, 99])
            cells.append(f"{med:.3f} ({lo:.3f} to {hi:.3f})")
        label = {"fresh": "G, fresh samples", "comp": "competitor (labelled others)"}.get(
            key, NAMES.get(key))
        print(f"| {label} | " + " | ".join(cells) + " |")


def _finetuned(G):
    """G fine-tuned one epoch on 500 of its own samples against a new discriminator."""
    (tuned,) = train_shadows(G, sample(G, 500, seed=1), seeds=[14], latent_shape=LATENT,
                             epochs=1, init="finetune")
    return tuned


def _final_and_anchor(G):
    """G's final layer (find_final_layer) and the recipe's anchor (mean_activation)."""
    z = torch.from_numpy(
        np.random.default_rng(2).standard_normal((4,) + LATENT, dtype=np.float32))
    return find_final_layer(G, z), mean_activation(G, 1000, LATENT, random_state=3,
                                                   device="cpu")


def _recipe(G, **params):
    """make_flipad at its defaults for G (find_final_layer, mean_activation)."""
    final, anchor = _final_and_anchor(G)
    return make_flipad(final.layer, final.activation, anchor, random_state=0, device="cpu",
                       **params)


def open_world_union(G, immunise=None, **params):
    """make_open_world_union at its defaults for G (the recipe's layer and anchor)."""
    final, anchor = _final_and_anchor(G)
    return make_open_world_union(final.layer, final.activation, anchor,
                                 image_shape=(3, 64, 64), immunise=immunise, random_state=0,
                                 device="cpu", **params)


def _inverter(G):
    """The recipe's inversion step, fitted (it learns nothing from X)."""
    return _recipe(G, fnr=0.005)[:1].fit(sample(G, 10, seed=0))


def head(**det_params):
    """make_flipad's steps after the inversion, with detector parameters changed."""
    layer = torch.nn.ConvTranspose2d(64, 3, 4, 2, 1)
    pipe = make_flipad(layer, "tanh", np.zeros((64, 32, 32), np.float32), fnr=0.005,
                       random_state=0, device="cpu")
    out = ConformalPipeline([(n, clone(e)) for n, e in pipe.steps[1:]])
    return out.set_params(**{f"det__{k}": v for k, v in det_params.items()})


def rows_for(name, decide, tests, note=""):
    g = decide(tests["fresh G"])
    cells = [f"{np.mean(g < 0):.3f}"]
    cells += [accuracy_auc(g, decide(tests[key])) for key in NAMES]
    cells.append(f"{np.mean(decide(tests['jpeg90']) >= 0):.3f}")
    print(f"| {name} | " + " | ".join(cells) + f" | {note} |", flush=True)


def run(args):
    t0 = time.time()
    images, F = build(args.cache_dir)
    n = args.n_own
    Z_tr = np.concatenate([F["g"][:n], F["comp"]])
    y_tr = np.r_[np.ones(n), -np.ones(len(F["comp"]))]
    # fresh G: the samples of G not trained on (the last N_G - n and the fresh set)
    ftests = {"fresh G": np.concatenate([F["g"][n:], F["fresh"]]),
              **{k: F[k] for k in (*NAMES, "jpeg90")}}
    itests = {"fresh G": np.concatenate([images["g"][n:], images["fresh"]]),
              **{k: images[k] for k in (*NAMES, "jpeg90")}}
    print("# Face DCGAN: the default detector against the guard it replaced\n")
    print(f"Published face DCGAN (gan-face-generate) as G; {n} samples of G against "
          f"{len(F['comp'])} of a competitor (G's architecture trained on "
          f"{TRAIN_RECIPE}) to fit; {len(ftests['fresh G'])} fresh samples of G and "
          f"{N_TEST} per other source to test.  Cells: accuracy at fnr 0.005 / ROC AUC "
          "against fresh G; 'G rejected' and 'JPEG q90 accepted' are shares of G's "
          "samples.\n")
    print("| detector | G rejected | " + " | ".join(NAMES.values()) +
          " | G's samples after JPEG q90 accepted | threshold |")
    print("|---|---|" + "---|" * len(NAMES) + "---|---|")
    variants = {"default (`combine=\"auto\"`)": {},
                "guard kept (`combine=\"mean\"`, the old auto's choice here)":
                    {"combine": "mean"},
                "Deep SAD alone (`one_class=None`)": {"one_class": None}}
    for name, params in variants.items():
        t = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = head(**params).fit(Z_tr, y_tr)
        det = pipe[-1]
        lo, hi = det.fnr_interval_
        rows_for(name, pipe.decision_function, ftests,
                 f"{det.combine_}, {det.validation_scores_.size} held out: rejects "
                 f"{lo:.4f}-{hi:.4f} of G (90 %); fit {time.time() - t:.0f} s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = make_rawpad(fnr=0.005, random_state=0, device="cpu").fit(
            np.concatenate([images["g"][:n], images["comp"]]), y_tr)
    rows_for("RAWPAD (`make_rawpad`)", raw.decision_function, itests,
             f"{raw[-1].combine_}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dct = make_dctpad(fnr=0.005, random_state=0, device="cpu").fit(
            np.concatenate([images["g"][:n], images["comp"]]), y_tr)
    rows_for("DCTPAD (`make_dctpad`)", dct.decision_function, itests, f"{dct[-1].combine_}")

    run_union(images, itests, n, y_tr)
    source_rows(images)
    save_source_grid(images, results_dir(args))

    # the guard's lead, kept for comparison: a one-class model of the pixels, no negatives
    def down8(X):
        return X.reshape(len(X), 3, 8, 8, 8, 8).mean((3, 5)).reshape(len(X), -1)
    A = down8(images["g"][:n])
    mu, sd = A.mean(0), A.std(0) + 1e-12
    gauss = LedoitWolf().fit((A - mu) / sd)

    def score(X):
        return -gauss.mahalanobis((down8(X) - mu) / sd)
    t = np.quantile(score(itests["fresh G"]), 0.005)
    print("\nThe lead behind `make_pixel_guard` (first found here): a Gaussian model "
          "(Ledoit-Wolf) of G's 8x8-downsampled pixels, no negatives; share rejected at its "
          "0.5 % quantile of the fresh samples of G (an oracle threshold) / ROC AUC:\n")
    print("| " + " | ".join(NAMES.values()) + " |")
    print("|" + "---|" * len(NAMES))
    g = score(itests["fresh G"])
    cells = []
    for key in NAMES:
        s = score(itests[key])
        auc = roc_auc_score(np.r_[np.ones(g.size), np.zeros(s.size)], np.r_[g, s])
        cells.append(f"{np.mean(s < t):.2f} / {auc:.3f}")
    print("| " + " | ".join(cells) + " |")
    print(fingerprint_note(args.cache_dir, FACE_OTHERS))
    print(f"\n{time.time() - t0:.0f} s (inverted features cached in {args.cache_dir}).")


def verdict_score(P, bounds):
    """A union's verdict as a score: the log of the smallest p-value over its detector's
    bound (negative where some detector rejects, ``predict``'s rule,
    tests/test_union.py); its ranking gives the union's AUC."""
    return np.log(np.maximum((P / bounds).min(axis=1), 1e-300)) - 1e-12


def run_union(images, itests, n, y_tr):
    """FLIPAD, RAWPAD or DCTPAD, and the pixel guard in a ConformalUnion, end to end on images."""
    G = load_face_dcgan()
    print("\n## Open world by construction: `ConformalUnion` (FLIPAD, RAWPAD or DCTPAD, "
          "pixel guard)\n")
    print("The same training samples; `ConformalUnion([make_flipad(...), make_rawpad() or "
          "make_dctpad(), make_pixel_guard((3, 64, 64))], fnr=0.005, weights=...)`, fitted "
          "on the images "
          "end to end, then each detector recalibrated with `union.calibrate(sampler)` on "
          "as many fresh samples of G as its share of fnr needs (none seen before).  A "
          "sample is G's only when all three accept it.  AUC: of the union's p-value "
          "(each detector's p-value over its bound, the smallest; its sign of log is the "
          "verdict).  Three unions in this run: the first weighting was set before any "
          "measurement; the second after a run against others trained for 14 steps "
          "(noise images) showed RAWPAD's heavy lower tail on G's own samples (its "
          "threshold at a 0.0015 share fell below that run's upsample + conv "
          "family); the third is the first with DCTPAD in RAWPAD's place, after "
          "bench_face_architectures measured the two alone.\n")
    rows = []
    for weights in UNION_WEIGHTINGS:
        t = time.time()
        members = {"flipad": lambda: _recipe(G),
                   "rawpad": lambda: make_rawpad(random_state=0, device="cpu"),
                   "dctpad": lambda: make_dctpad(random_state=0, device="cpu"),
                   "pixels": lambda: make_pixel_guard((3, 64, 64), random_state=0)}
        union = ConformalUnion([(name, members[name]()) for name in weights],
                               fnr=0.005, weights=weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            union.fit(np.concatenate([images["g"][:n], images["comp"]]), y_tr)
        t_fit = time.time() - t
        fit_bound = union.fnr_bound_
        rng = np.random.default_rng(20)
        sampler = lambda k: sample(G, k, seed=int(rng.integers(2**31)))     # noqa: E731
        t = time.time()
        union.calibrate(sampler)
        t_cal = time.time() - t
        sizes = ", ".join(f"{name} {e[-1].validation_scores_.size}"
                          for name, e in union.estimators_)
        bounds = np.array([e[-1].fnr_bound_ for _, e in union.estimators_])
        t = time.time()
        P = {k: union.pvalues(X, per_detector=True) for k, X in itests.items()}
        t_score = time.time() - t
        rows.append((weights, P, bounds, f"fit {t_fit:.0f} s, calibration on {sizes} "
                     f"fresh samples {t_cal:.0f} s, scoring {t_score:.0f} s; fnr bound "
                     f"{fit_bound:.4f} after fit, {union.fnr_bound_:.4f} calibrated"))
    print("| union, shares of fnr 0.005 | G rejected | " + " | ".join(NAMES.values()) +
          " | G's samples after JPEG q90 accepted | run |")
    print("|---|---|" + "---|" * len(NAMES) + "---|---|")
    for weights, P, bounds, note in rows:
        # the verdict: rejected when some detector's p-value is at most its bound
        # (what union.predict does, tests/test_union.py)
        score = {k: verdict_score(p, bounds) for k, p in P.items()}
        rows_for(", ".join(f"{k} {v}" for k, v in weights.items()), score.__getitem__,
                 {k: k for k in P}, note)
    print("\nWho rejects what (share of each source rejected by each detector at its own "
          "threshold, calibrated):\n")
    names = ["fresh G", *NAMES, "jpeg90"]
    print("| union | detector | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for weights, P, bounds, _ in rows:
        label = ", ".join(f"{k} {v}" for k, v in weights.items())
        for j, det in enumerate(weights):
            cells = [f"{np.mean(P[k][:, j] <= bounds[j]):.3f}" for k in names]
            print(f"| {label} | {det} | " + " | ".join(cells) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_open_world_face.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
