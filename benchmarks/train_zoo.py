"""Train the generator zoo of the attribution benchmark, deterministically, with a cache.

Image zoo: the four GANs of :mod:`flipad_sklearn.generators` (DCGAN, WGAN-GP,
LSGAN, EBGAN) x several seeds, on the vendored MNIST subset (padded to
32x32 by default: the 32x32 generators have the smaller penultimate
activation, 32 x 16 x 16).  Tabular zoo: the KL-WGAN on the red-wine table,
several seeds.

Checkpoints go to ``--cache-dir`` (default ``~/.cache/flipad_sklearn/zoo``),
one file per generator, named after the whole recipe (kind, seed, image size,
epochs, number of training images), and are skipped when already there:
running the script twice trains nothing the second time.  Training is
deterministic for a given recipe on one thread (``train_gan`` seeds a local
torch generator), so a deleted checkpoint is regenerated identically.

Usage::

    python benchmarks/train_zoo.py --quick          # tiny generators, well under a minute
    python benchmarks/train_zoo.py                  # the full zoo (~35 min on one thread)
    python benchmarks/train_zoo.py --kinds dcgan lsgan --seeds 0 1 2 3

Full recipe: all 5000 images, 5 epochs (15 for WGAN-GP, which makes one
generator step per 5 critic steps); an epoch takes 13-22 s on one CPU
thread, so the 16 image generators (4 kinds x 4 seeds: G, an unseen one and
two shadows) take about 35 minutes and the four tabular ones about a minute.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

from flipad_sklearn.datasets import load_mnist_subset, load_wine_quality
from flipad_sklearn.generators import (
    GAN_KINDS,
    load_generator,
    save_generator,
    train_gan,
    train_tabular_gan,
)

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flipad_sklearn", "zoo")

FULL = dict(kinds=GAN_KINDS, seeds=(0, 1, 2, 3), n_train=5000, image_size=32,
            epochs={"dcgan": 5, "lsgan": 5, "ebgan": 5, "wgan_gp": 15},
            tabular_seeds=(0, 1, 2, 3), tabular_epochs=50)
QUICK = dict(kinds=GAN_KINDS, seeds=(0, 1, 2), n_train=320, image_size=32,
             epochs={k: 1 for k in GAN_KINDS}, tabular_seeds=(0, 1, 2), tabular_epochs=1)


def mnist_train_images(n_train, image_size, seed=0):
    """The first ``n_train`` images of a fixed permutation of the MNIST subset (all digits)."""
    X, _ = load_mnist_subset(return_X_y=True, pad_to=None if image_size == 28 else image_size)
    perm = np.random.default_rng(seed).permutation(len(X))
    return X[perm[:n_train]]


def image_checkpoint(cache_dir, kind, seed, image_size, epochs, n_train):
    return os.path.join(cache_dir, f"{kind}-seed{seed}-{image_size}px-e{epochs}-n{n_train}.pt")


def tabular_checkpoint(cache_dir, seed, epochs):
    return os.path.join(cache_dir, f"kl_wgan-wine-seed{seed}-e{epochs}.pt")


def ensure_image_zoo(cache_dir=DEFAULT_CACHE, kinds=GAN_KINDS, seeds=(0, 1, 2), *,
                     n_train=5000, image_size=32, epochs=None, verbose=0, log=print):
    """Train (or load from the cache) every (kind, seed) image generator.

    Returns
    -------
    zoo : dict of (kind, seed) -> ImageGenerator
    """
    epochs = FULL["epochs"] if epochs is None else epochs
    os.makedirs(cache_dir, exist_ok=True)
    X = None
    zoo = {}
    for kind in kinds:
        e = epochs[kind] if isinstance(epochs, dict) else int(epochs)
        for seed in seeds:
            path = image_checkpoint(cache_dir, kind, seed, image_size, e, n_train)
            if os.path.exists(path):
                zoo[kind, seed] = load_generator(path)
                continue
            if X is None:
                X = mnist_train_images(n_train, image_size)
            t0 = time.perf_counter()
            G = train_gan(kind, X, epochs=e, seed=seed, verbose=verbose)
            tmp = path + ".tmp"
            save_generator(G, tmp)
            os.replace(tmp, path)        # never leave a half-written checkpoint
            zoo[kind, seed] = G
            log(f"trained {kind} seed {seed} ({e} epochs on {len(X)} images) in "
                f"{time.perf_counter() - t0:.1f}s -> {path}")
    return zoo


def ensure_tabular_zoo(cache_dir=DEFAULT_CACHE, seeds=(0, 1, 2), *, epochs=50, verbose=0,
                       log=print):
    """Train (or load) the KL-WGAN on the red-wine table for each seed.

    Returns
    -------
    zoo : dict of seed -> TabularGenerator
    """
    os.makedirs(cache_dir, exist_ok=True)
    X = None
    zoo = {}
    for seed in seeds:
        path = tabular_checkpoint(cache_dir, seed, epochs)
        if os.path.exists(path):
            zoo[seed] = load_generator(path)
            continue
        if X is None:
            X = load_wine_quality().data
        t0 = time.perf_counter()
        G = train_tabular_gan(X, epochs=epochs, seed=seed, verbose=verbose)
        tmp = path + ".tmp"
        save_generator(G, tmp)
        os.replace(tmp, path)
        zoo[seed] = G
        log(f"trained kl_wgan seed {seed} ({epochs} epochs) in "
            f"{time.perf_counter() - t0:.1f}s -> {path}")
    return zoo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--quick", action="store_true",
                   help="tiny generators: 1 epoch on 320 images (well under a minute)")
    p.add_argument("--kinds", nargs="+", choices=GAN_KINDS, default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs for every kind (default: 5, 15 for WGAN-GP; 1 with --quick)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--image-size", type=int, choices=(28, 32), default=None)
    p.add_argument("--no-tabular", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("kinds", "seeds", "n_train", "image_size", "epochs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    t0 = time.perf_counter()
    zoo = ensure_image_zoo(args.cache_dir, cfg["kinds"], cfg["seeds"], n_train=cfg["n_train"],
                           image_size=cfg["image_size"], epochs=cfg["epochs"],
                           verbose=args.verbose)
    n_tab = 0
    if not args.no_tabular:
        n_tab = len(ensure_tabular_zoo(args.cache_dir, cfg["tabular_seeds"],
                                       epochs=cfg["tabular_epochs"], verbose=args.verbose))
    print(f"zoo ready in {args.cache_dir}: {len(zoo)} image and {n_tab} tabular generators "
          f"({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
