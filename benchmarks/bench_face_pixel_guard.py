"""Does the pixel guard weaken with more samples of G?  Its shrinkage against other domains.

The open-world union's pixel guard (:func:`~flipad_sklearn.make_pixel_guard`:
a Gaussian of G's 4x4 block averages, its covariance shrunk by Ledoit and
Wolf's estimate) rejected 0.939 of generated digits fitted on 400 samples of
the face DCGAN and 0.234 fitted on 1500 (``bench_full_scale`` runs; the
estimated shrinkage was 0.020 and 0.0055).  The hypothesis: with more
samples the estimate shrinks less, and the covariance follows G's
directions of large variance, along which those digits lie.  Here the
guard alone, fitted on ``--n-own`` samples of G (400 and 1500) with the
shrinkage estimated and fixed, is thresholded at its share of the
union's fnr (0.2 x 0.005 = 0.001) on 3000 fresh samples of G, and scores:
2000 other fresh samples of G (the share rejected should be about 0.001),
G's samples after JPEG q90 (the guard is left out of a union's file check
because JPEG hardly moves block averages), and four other image domains,
none of them a face: generated digits (the demo's MNIST DCGAN, bilinear to
64x64), real MNIST digits (the bundled subset), patches of two natural
photographs (scikit-learn's sample images, random 128x128 crops area-resized
to 64x64) and blurred Gaussian noise.  Then a second G, to test what the
first suggests: the zoo's DCGAN on 32x32 digits (:mod:`benchmarks.train_zoo`,
seed 0; its guard reads 2x2 block averages), against the face DCGAN's
samples, the photo patches and the noise, grey and area-resized to 32x32.

Run: ``python -m benchmarks.bench_face_pixel_guard [--threads 2]`` (about two
minutes: no inversion); writes ``benchmarks/results/bench_face_pixel_guard.md``.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from flipad_sklearn import JPEGCompression, make_pixel_guard
from flipad_sklearn.detection.conformal import calibrate

from ._results import add_result_args, results_dir, tee_result
from .bench_face_blind import real_digits, smooth_noise
from .bench_face_dcgan import load_face_dcgan, other_domain, sample
from .train_zoo import DEFAULT_CACHE, ensure_image_zoo

FNR = 0.2 * 0.005                 # the guard's share of the union's fnr
SHRINKAGES = ("ledoit_wolf", 0.01, 0.03, 0.1, 0.3)


def photo_patches(n, seed):
    """``n`` random 128x128 crops of scikit-learn's two sample photographs, area-resized
    to 64x64, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = load_sample_images().images
    out = np.empty((n, 3, 64, 64), np.float32)
    for i in range(n):
        img = images[rng.integers(len(images))]
        top = rng.integers(img.shape[0] - 128 + 1)
        left = rng.integers(img.shape[1] - 128 + 1)
        crop = torch.from_numpy(img[top:top + 128, left:left + 128].astype(np.float32))
        out[i] = F.interpolate(crop.permute(2, 0, 1)[None], size=(64, 64), mode="area")[0]
    return out / 127.5 - 1.0


def _grey32(X):
    x = torch.from_numpy(np.asarray(X, dtype=np.float32)).mean(dim=1, keepdim=True)
    return F.interpolate(x, size=(32, 32), mode="area").numpy()


def run(args):
    G = load_face_dcgan()
    X_g = sample(G, 2000, 71)
    tests = {"G (fresh)": X_g,
             "G, JPEG q90": JPEGCompression(quality=90).fit_transform(X_g[:1000]).reshape(
                 -1, 3, 64, 64),
             "generated digits": other_domain(1000, 9),
             "real digits": real_digits(1000, 41),
             "photo patches": photo_patches(1000, 5),
             "blurred noise": smooth_noise(1000, 7)}
    print("# The pixel guard's shrinkage against other domains (face DCGAN)\n")
    _table(args, (3, 64, 64), sample(G, max(args.n_own), 20), sample(G, 3000, 70), tests)
    digits_g = ensure_image_zoo(args.cache_dir, kinds=("dcgan",), seeds=(0,))["dcgan", 0]
    print("\n## A second G: the zoo's DCGAN on 32x32 digits\n")
    Xd = digits_g.sample(2000, random_state=71)
    _table(args, (1, 32, 32), digits_g.sample(max(args.n_own), random_state=20),
           digits_g.sample(3000, random_state=70),
           {"G (fresh)": Xd,
            "G, JPEG q90": JPEGCompression(quality=90).fit_transform(Xd[:1000]).reshape(
                -1, 1, 32, 32),
            "faces (the face DCGAN)": _grey32(sample(G, 1000, 72)),
            "photo patches": _grey32(photo_patches(1000, 5)),
            "blurred noise": _grey32(smooth_noise(1000, 7))})


def _table(args, shape, X_own, X_cal, tests):
    print(f"make_pixel_guard({shape}) with GaussianDensity(shrinkage=s), fitted on the "
          f"first n samples of G, thresholded at fnr {FNR:g} on {len(X_cal)} fresh samples "
          f"of G; cells: the share of each source rejected (G's: should be about {FNR:g}).\n")
    print("| samples of G | shrinkage | used | " + " | ".join(tests) + " |")
    print("|---|---|---|" + "---|" * len(tests))
    for n in args.n_own:
        for s in SHRINKAGES:
            guard = make_pixel_guard(shape, size=min(16, *shape[1:]), fnr=FNR,
                                     random_state=0)
            guard.set_params(det__estimator__shrinkage=s, det__validation_size=0)
            guard.fit(X_own[:n])
            calibrate(guard, X_cal)
            used = guard[-1].estimator_.shrinkage_
            cells = [f"{np.mean(guard.predict(X) == -1):.3f}" for X in tests.values()]
            label = "Ledoit-Wolf (default)" if s == "ledoit_wolf" else f"{s:g}"
            print(f"| {n} | {label} | {used:.4f} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-own", type=int, nargs="+", default=[400, 1500])
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="the image zoo's cache")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_face_pixel_guard.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
