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

    python -m benchmarks.train_zoo --quick          # tiny generators, well under a minute
    python -m benchmarks.train_zoo                  # the full zoo (~35 min on one thread)
    python -m benchmarks.train_zoo --kinds dcgan lsgan --seeds 0 1 2 3
    python -m benchmarks.train_zoo --kinds dcgan --seeds 0 --checkpoint-epochs 1 2 3 4

Checkpoints of other epochs (``--checkpoint-epochs``, for the benchmark's
``finetune`` part): a generator's run is deterministic and does not depend
on the number of epochs asked for (weights, batch order and latent codes come
from one seeded stream, consumed epoch by epoch), so the generator of the
same recipe trained for ``e`` epochs *is* the state of the zoo's run after
``e`` epochs (and, for more epochs than the zoo's, its continuation).  Each
is saved under the usual name (``...-e{e}-...``); :func:`ensure_checkpoints`
checks that its loss history is the same, step for step, as the zoo
generator's over their common steps (it differs if, e.g., they were trained
with other thread counts).  The existing checkpoint names and recipes are
unchanged.  :func:`finetune_generator` makes the fine-tuned copies of that
part (a fresh discriminator, ``k`` GAN steps on MNIST).

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


def ensure_checkpoints(cache_dir=DEFAULT_CACHE, kinds=("dcgan",), seeds=(0,),
                       checkpoint_epochs=(1, 2, 3, 4), *, n_train=5000, image_size=32,
                       epochs=None, verbose=0, log=print):
    """The zoo's generators of ``kinds`` x ``seeds`` stopped after each of
    ``checkpoint_epochs`` epochs (trained once, then cached).

    Each checkpoint's loss history must equal the zoo generator's (trained
    for ``epochs``) over their common steps: else ``RuntimeError``.

    Returns
    -------
    checkpoints : dict of (kind, seed, epochs) -> ImageGenerator
    """
    epochs = FULL["epochs"] if epochs is None else epochs
    zoo = ensure_image_zoo(cache_dir, kinds, seeds, n_train=n_train, image_size=image_size,
                           epochs=epochs, verbose=verbose, log=log)
    out = {}
    for e in checkpoint_epochs:
        for (kind, seed), G in ensure_image_zoo(cache_dir, kinds, seeds, n_train=n_train,
                                                image_size=image_size, epochs=int(e),
                                                verbose=verbose, log=log).items():
            ref = zoo[kind, seed].history.get("d_loss", [])
            own = G.history.get("d_loss", [])
            n = min(len(ref), len(own))
            if n == 0 or ref[:n] != own[:n]:
                path = image_checkpoint(cache_dir, kind, seed, image_size, int(e), n_train)
                raise RuntimeError(
                    f"{kind} seed {seed} after {e} epochs is not on the zoo generator's "
                    f"trajectory (loss histories differ over their first {n} steps): were "
                    "they trained with different thread counts or library versions? "
                    f"Delete {path} and train the checkpoints with the thread count the "
                    f"zoo was trained with: python -m benchmarks.train_zoo --kinds {kind} "
                    f"--seeds {seed} --checkpoint-epochs {' '.join(map(str, checkpoint_epochs))} "
                    "--no-tabular --threads N.")
            out[kind, seed, int(e)] = G
    return out


class _FreshDiscriminator(torch.nn.Module):
    """The fine-tuner's own DCGAN discriminator (G's is not published with it)."""

    def __init__(self, image_size, channels, ndf=32):
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ndf, 4 * ndf, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * ndf),
            nn.LeakyReLU(0.2), nn.Flatten())
        with torch.no_grad():
            n = self.net(torch.zeros(1, channels, image_size, image_size)).shape[1]
        self.head = nn.Linear(n, 1)

    def forward(self, x):
        return self.head(self.net(x)).reshape(-1)


def finetune_generator(G, X, steps, *, seed=0, warmup=100, batch_size=64, lr=2e-4):
    """Copies of ``G`` fine-tuned on images ``X`` for each number of ``steps``.

    The fine-tuner has G's weights but not its discriminator: a fresh DCGAN
    discriminator first trains ``warmup`` steps against G's frozen samples,
    then both train together (non-saturating loss, Adam ``lr``, betas (0.5,
    0.999), batches of ``batch_size``), and a copy of G is taken after each
    number of joint steps in ``steps`` (0: G itself).  Deterministic for a
    given ``seed`` on one thread (a local torch generator; the global RNG is
    left as it was).

    Returns
    -------
    copies : dict of int -> ImageGenerator
    """
    import copy

    import torch.nn.functional as F

    steps = sorted({int(k) for k in steps})
    gen = torch.Generator().manual_seed(seed)
    G = copy.deepcopy(G).eval()
    with torch.random.fork_rng(devices=[]):   # the default init draws from the global RNG
        D = _FreshDiscriminator(G.image_size, G.channels)
    with torch.no_grad():
        for m in D.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, 0.02, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    ones, zeros = torch.ones(batch_size), torch.zeros(batch_size)

    def d_step(fake):
        real = data[torch.randint(len(data), (batch_size,), generator=gen)]
        d_loss = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

    def snapshot(k):
        c = copy.deepcopy(G).eval()
        c.info = dict(G.info, finetune_steps=k, finetune_seed=seed, finetune_warmup=warmup)
        return c

    for _ in range(warmup):
        # G frozen (eval mode: its batch-norm statistics stay G's)
        with torch.no_grad():
            fake = G(torch.randn((batch_size, G.latent_dim), generator=gen))
        d_step(fake)
    copies = {0: snapshot(0)} if 0 in steps else {}
    G.train()
    for k in range(1, steps[-1] + 1):
        fake = G(torch.randn((batch_size, G.latent_dim), generator=gen))
        d_step(fake)
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if k in steps:
            copies[k] = snapshot(k)
    return copies


def finetuned_checkpoint(cache_dir, kind, seed, image_size, epochs, n_train, steps, warmup,
                         ft_seed):
    return os.path.join(cache_dir, f"{kind}-seed{seed}-{image_size}px-e{epochs}-n{n_train}"
                                   f"-ft{steps}-w{warmup}-s{ft_seed}.pt")


def ensure_finetuned(cache_dir=DEFAULT_CACHE, kind="dcgan", seed=0, steps=(0, 10, 100, 1000),
                     *, n_train=5000, image_size=32, epochs=None, warmup=100, ft_seed=0,
                     log=print):
    """The zoo generator (kind, seed) fine-tuned on its own MNIST training images
    for each number of ``steps`` (:func:`finetune_generator`), cached.

    Returns
    -------
    copies : dict of int -> ImageGenerator
    """
    epochs = FULL["epochs"] if epochs is None else epochs
    e = epochs[kind] if isinstance(epochs, dict) else int(epochs)
    G = ensure_image_zoo(cache_dir, (kind,), (seed,), n_train=n_train, image_size=image_size,
                         epochs=epochs, log=log)[kind, seed]
    paths = {k: finetuned_checkpoint(cache_dir, kind, seed, image_size, e, n_train, int(k),
                                     warmup, ft_seed) for k in steps}
    missing = [k for k, p in paths.items() if not os.path.exists(p)]
    if missing:
        t0 = time.perf_counter()
        for k, c in finetune_generator(G, mnist_train_images(n_train, image_size), missing,
                                       seed=ft_seed, warmup=warmup).items():
            save_generator(c, paths[k] + ".tmp")
            os.replace(paths[k] + ".tmp", paths[k])
        log(f"fine-tuned {kind} seed {seed} for {max(missing)} steps in "
            f"{time.perf_counter() - t0:.1f}s")
    return {k: load_generator(p) for k, p in paths.items()}


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
    p.add_argument("--checkpoint-epochs", nargs="+", type=int, default=None,
                   help="also save each generator of --kinds x --seeds stopped after these "
                        "epochs (for the benchmark's finetune part)")
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
    if args.checkpoint_epochs:
        ensure_checkpoints(args.cache_dir, cfg["kinds"], cfg["seeds"], args.checkpoint_epochs,
                           n_train=cfg["n_train"], image_size=cfg["image_size"],
                           epochs=cfg["epochs"], verbose=args.verbose)
    n_tab = 0
    if not args.no_tabular:
        n_tab = len(ensure_tabular_zoo(args.cache_dir, cfg["tabular_seeds"],
                                       epochs=cfg["tabular_epochs"], verbose=args.verbose))
    print(f"zoo ready in {args.cache_dir}: {len(zoo)} image and {n_tab} tabular generators "
          f"({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
