"""The open-world recipe on the face DCGAN when the images are files: JPEG, resized, cropped.

A verdict is scored on files: 8-bit PNG and JPEG, often resized or cropped
on their way.  The blind tests (``bench_face_blind*``) score 8-bit images
and G's JPEG q90 images only.  Here the recipe's union
(:func:`~flipad_sklearn.make_open_world_union`, labelled others the
competitor + the five one-call shadows of ``bench_face_blind_one_call``, 400
samples of G, fnr 0.005, recalibrated on fresh samples of G) scores G's fresh
samples and four other sources after the same perturbation: the
perturbations of :func:`~flipad_sklearn.perturbations.published_mixture` at
their strongest (JPEG q70, resize by 0.9 and 1.1, a 90 % centre crop), JPEG
q90, and two beyond it (JPEG q50, a resize to half and back).

Two unions, as a user gets them:

* the user guide's: ``immunise="published"`` (DCTPAD learns G's perturbed
  images; FLIPAD and the pixel guard as they are);
* the command line's ``flipad fit --detector union --immunise published``:
  FLIPAD immunised too.

``--unions cli cli5`` adds the command line's union with five Deep SAD
networks per detector (``--networks 5``: ``n_networks=5`` in FLIPAD's and
DCTPAD's :class:`~flipad_sklearn.FLIPADDetector`), beside the one-network
union fitted on the same samples.
``--unions jpeg70 jpeg70_whole`` does the same for the union matched to
JPEG q70.  ``--unions cli cli_whole`` compares the command line's union (DCTPAD on the
whole image's spectrum and on JPEG's 8 x 8 blocks', an immunised union's
default since the blocks were added) with the union before (the whole
image's alone).
``--unions flipad none`` measures two more: FLIPAD immunised and DCTPAD not
(``flipad_params={"immunise": "published"}``), and neither immunised.
``--unions jpeg90 jpeg70`` measures unions matched to the files: FLIPAD and
DCTPAD trained and calibrated on G's images (and the others') saved as JPEG
at one quality, the quality a JPEG file's quantisation tables tell
(:func:`~flipad_sklearn.verdicts.jpeg_quality`); ``--perturbations`` picks
the rows.  ``--each-kind false true`` calibrates each fitted union twice
in turn, on the same fresh samples of G: on one draw of its mixture per
sample (the fnr on average over the mixture), then on each sample's lowest
score over the mixture's kinds (``calibrate(each_kind=True)``: the fnr
under each kind).

Cells: the share of G's images accepted, the share of each other source
rejected (at the union's verdict, no AUC), and the mean accuracy
``(G accepted + mean of the others rejected) / 2``; then which detectors
reject G's images (the share each one rejects: an image rejected by two
counts for both).

Run: ``python -m benchmarks.bench_face_recipe_perturbations`` (after
``bench_face_blind_one_call``, whose trained generators it reads).  Writes
``benchmarks/results/bench_face_recipe_perturbations.md``.
"""

import argparse
import time
import warnings

import numpy as np
import torch

from flipad_sklearn import make_open_world_union
from flipad_sklearn.perturbations import JPEGCompression, Resize, ResizedCrop

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import N_TEST, TEST_SEED, real_digits, trained_vae
from .bench_face_blind_one_call import one_call_shadows
from .bench_face_blind_recipe import BLIND as THIRD_BLIND
from .bench_face_dcgan import FACE_CACHE, load_face_dcgan, sample, trained_other
from .bench_full_scale import open_world_others, open_world_training_set
from .bench_open_world_face import OTHERS, _final_and_anchor, build, verdict_score

#: name -> transformer (None: the 8-bit image as generated, what a PNG holds)
PERTURBATIONS = {
    "8-bit PNG": None,
    "JPEG q90": JPEGCompression(quality=90),
    "JPEG q70": JPEGCompression(quality=70),
    "JPEG q50 (beyond the mixture)": JPEGCompression(quality=50),
    "resize 0.9 and back": Resize(scale=0.9),
    "resize 1.1 and back": Resize(scale=1.1),
    "resize 0.5 and back (beyond)": Resize(scale=0.5),
    "centre crop 90 %": ResizedCrop(scale=0.9),
}
SOURCES = {"unseen": "G's architecture, unseen seed", "C4": "C4: VAE decoder",
           "E1": "E1: G, bicubic + conv last", "digits": "real MNIST digits"}
#: short name -> (row label, make_open_world_union's immunisation keywords)
UNIONS = {
    "guide": ("user guide: immunise='published' (DCTPAD)", {"immunise": "published"}),
    "cli": ("CLI --immunise published (FLIPAD and DCTPAD)",
            {"immunise": "published", "flipad_params": {"immunise": "published"}}),
    "cli_whole": ("CLI --immunise published, DCTPAD on the whole image's spectrum only "
                  "(the union before JPEG's blocks)",
                  {"immunise": "published", "flipad_params": {"immunise": "published"},
                   "dctpad_params": {"block_size": None}}),
    "cli5": ("CLI --immunise published --networks 5 (5 Deep SAD networks per detector)",
             {"immunise": "published",
              "flipad_params": {"immunise": "published", "detector_params": {"n_networks": 5}},
              "dctpad_params": {"detector_params": {"n_networks": 5}}}),
    "flipad": ("FLIPAD immunised, DCTPAD not", {"flipad_params": {"immunise": "published"}}),
    "none": ("neither immunised", {}),
    **{f"jpeg{q}": (f"matched: FLIPAD and DCTPAD on JPEG q{q}",
                    {"immunise": JPEGCompression(quality=q),
                     "flipad_params": {"immunise": JPEGCompression(quality=q)}})
       for q in (90, 70)},
    "jpeg70_whole": ("matched: FLIPAD and DCTPAD on JPEG q70, DCTPAD on the whole image's "
                     "spectrum only (before JPEG's blocks)",
                     {"immunise": JPEGCompression(quality=70),
                      "flipad_params": {"immunise": JPEGCompression(quality=70)},
                      "dctpad_params": {"block_size": None}}),
}
DEFAULT_UNIONS = ("guide", "cli")


def _perturb(name, X):
    t = PERTURBATIONS[name]
    if t is None:
        return X
    return t.fit_transform(X).reshape(X.shape)


def run(args):
    t0 = time.time()
    G = load_face_dcgan()
    images, _ = build(args.cache_dir)
    shadows = one_call_shadows(G, args.cache_dir)
    n = args.n_own
    if (args.n_own, args.n_others) == (400, 600):
        # the first runs' training set (the cached images), kept to compare with them
        neg = np.concatenate([images["comp"][:100]]
                             + [sample(m, 100, 21) for m in shadows.values()])
        X = np.concatenate([images["g"][:n], neg])
        fresh = np.concatenate([images["g"][n:], images["fresh"]])
    else:
        # bench_full_scale's training set (its seed 0), fresh samples of G unseen by it
        comp = trained_other(G, "comp", *OTHERS["comp"], args.cache_dir)
        train = open_world_training_set(G, open_world_others(G, comp, args.cache_dir),
                                        100 * args.seed,
                                        args.n_own, args.n_others)
        neg = train["others"]
        X = np.concatenate([train["own"], neg])
        fresh = sample(G, 500, 61 + 100 * args.seed)
    y = np.r_[np.ones(n), -np.ones(len(neg))]
    arch, seed = THIRD_BLIND["E1"]
    tests = {"unseen": sample(trained_other(G, "unseen", "dcgan", 12, args.cache_dir),
                              N_TEST, TEST_SEED),
             "C4": sample(trained_vae(G, args.cache_dir), N_TEST, TEST_SEED),
             "E1": sample(trained_other(G, arch, arch, seed, args.cache_dir), N_TEST,
                          TEST_SEED),
             "digits": real_digits(N_TEST, TEST_SEED)}
    final, anchor = _final_and_anchor(G)
    print("# The open-world recipe on files: G's images and others after a perturbation\n")
    print(f"{n} samples of G against the competitor + the five one-call shadows "
          f"({len(neg) // 6} each); "
          f"{len(fresh)} fresh samples of G and {N_TEST} per other source, each perturbed "
          "before scoring.  Cells: share accepted (G) or rejected (others) at the union's "
          "verdict, fnr 0.005"
          + ("" if n == 400 else "; calibrated with max_fnr=0.01 (the guide's recipe)")
          + ".\n")
    print("| union | perturbation | G accepted | " + " | ".join(
        f"{v} rejected" for v in SOURCES.values()) + " | mean accuracy | G rejected by "
        "FLIPAD / DCTPAD / pixel guard |")
    print("|---|---|---|" + "---|" * len(SOURCES) + "---|---|")
    for key in args.unions:
        label, immunisation = UNIONS[key]
        t = time.time()
        union = make_open_world_union(final.layer, final.activation, anchor,
                                      image_shape=(3, 64, 64), random_state=args.seed, device="cpu",
                                      **immunisation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            union.fit(X, y)
        t_fit = time.time() - t
        # one fitted union, calibrated each way in turn (the same fresh-sample draws)
        for each_kind in args.each_kind:
            _measure(args, union, f"{label}{', per kind' if each_kind else ''}", each_kind,
                     G, fresh, tests, t_fit)
    print(f"\n{time.time() - t0:.0f} s (trained generators cached in {args.cache_dir}).")


def _measure(args, union, label, each_kind, G, fresh, tests, t_fit):
    """Calibrate ``union`` (``each_kind``) and print its rows."""
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rng = np.random.default_rng(20 + args.seed)
        # the first runs: the fewest fresh samples each share needs; at another scale
        # the guide's recipe, max_fnr=0.01
        union.calibrate(lambda k: sample(G, k, seed=int(rng.integers(2**31))),
                        each_kind=each_kind,
                        **({} if args.n_own == 400 else {"max_fnr": 0.01}))
    bounds = np.array([e[-1].fnr_bound_ for _, e in union.estimators_])
    t_cal = time.time() - t

    def pvalues(Z, union=union):
        return union.pvalues(Z, per_detector=True)

    def accepted(P, bounds=bounds):
        return verdict_score(P, bounds) >= 0
    for name in args.perturbations:
        P = pvalues(_perturb(name, fresh))
        g = float(np.mean(accepted(P)))
        # each detector's own verdict (verdict_score on its column alone)
        by = [float(np.mean(verdict_score(P[:, [j]], bounds[[j]]) < 0))
              for j in range(P.shape[1])]
        rej = [1 - float(np.mean(accepted(pvalues(_perturb(name, tests[k])))))
               for k in SOURCES]
        cells = [f"{g:.3f}"] + [f"{r:.3f}" for r in rej]
        print(f"| {label} | {name} | " + " | ".join(cells)
              + f" | {0.5 * (g + np.mean(rej)):.3f} | "
              + " / ".join(f"{b:.3f}" for b in by) + " |", flush=True)
    print(f"| {label} | (fit {t_fit:.0f} s, calibration {t_cal:.0f} s) |"
          + " |" * (len(SOURCES) + 3))


def _bool(text):
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"true or false, not {text!r}")
    return text.lower() == "true"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    p.add_argument("--unions", nargs="+", choices=list(UNIONS), default=list(DEFAULT_UNIONS),
                   help="the unions to measure (guide cli); others write "
                        "bench_face_recipe_perturbations_<names>.md")
    p.add_argument("--perturbations", nargs="+", choices=list(PERTURBATIONS),
                   default=list(PERTURBATIONS), metavar="NAME",
                   help="the rows, by name (default: all of %(choices)s)")
    p.add_argument("--each-kind", nargs="+", type=_bool, default=[False], metavar="BOOL",
                   help="calibrate each fitted union on the mixture (false, the default) "
                        "and/or per kind of it (true: calibrate(each_kind=True)), in turn")
    p.add_argument("--n-own", type=int, default=400,
                   help="samples of G to fit on (400; 1500 is the paper's scale)")
    p.add_argument("--n-others", type=int, default=600,
                   help="labelled others, an equal share per source (600)")
    p.add_argument("--seed", type=int, default=0,
                   help="another draw of the training set, fresh samples of G, the "
                        "calibration and the detectors' seeds (not of the trained "
                        "generators nor the test images; at 400 / 600 the detectors' "
                        "seeds only)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = "bench_face_recipe_perturbations"
    if tuple(args.unions) != DEFAULT_UNIONS:
        name += "_" + "_".join(args.unions)
    if (args.n_own, args.n_others) != (400, 600):
        name += f"_{args.n_own}_{args.n_others}"
    if args.seed:
        name += f"_seed{args.seed}"
    if args.each_kind != [False]:
        name += "_" + "_".join("per_kind" if e else "mixture" for e in args.each_kind)
    tee_result(f"{name}.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
