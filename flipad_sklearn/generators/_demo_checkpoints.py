"""The small trained MNIST generators of the demo (``python -m flipad_sklearn.demo``).

Four generators of the package's zoo (:func:`~flipad_sklearn.generators.train_gan`),
trained on the bundled MNIST subset (all 5000 images, 28x28):

``G``
    The owner's generator: a DCGAN, ``ngf=8``, ``latent_dim=32``, seed 0.
``shadow``
    A shadow of ``G`` (same recipe, a seed from
    :func:`~flipad_sklearn.generators.default_shadow_seeds`): the owner can
    always train one; the demo uses it as a labelled negative.
``unseen``
    Same recipe as ``G``, seed 1: never shown to the detector.
``other``
    Another architecture and loss: an LSGAN with ``ngf=12``, seed 0, never
    shown to the detector.

The weights ship with the package (``flipad_sklearn/generators/checkpoints/``,
a few hundred KB each, written by :func:`~flipad_sklearn.generators.save_generator`
and read back with ``torch.load(weights_only=True)``).  Regenerate them with::

    python -m flipad_sklearn.generators._demo_checkpoints

(about three minutes on one CPU thread; training is deterministic for
a given thread count, see :func:`~flipad_sklearn.generators.train_gan`).
"""

import argparse
import os
import sys
import time

CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")

EPOCHS = 10
G_SEED = 0
UNSEEN_SEED = 1


def _recipes():
    from ._shadows import default_shadow_seeds

    small = dict(kind="dcgan", ngf=8, latent_dim=32, ndf=16)
    return {
        "G": dict(small, seed=G_SEED),
        "shadow": dict(small, seed=default_shadow_seeds(G_SEED, 1)[0]),
        "unseen": dict(small, seed=UNSEEN_SEED),
        "other": dict(kind="lsgan", ngf=12, latent_dim=32, ndf=16, seed=0),
    }


DEMO_GENERATORS = ("G", "shadow", "unseen", "other")


def checkpoint_path(name):
    """Path of the shipped checkpoint ``name`` (one of :data:`DEMO_GENERATORS`)."""
    if name not in DEMO_GENERATORS:
        raise ValueError(f"name must be one of {DEMO_GENERATORS}, got {name!r}.")
    return os.path.join(CHECKPOINT_DIR, f"mnist_{name}.pt")


def load_demo_generator(name):
    """One of the demo's trained MNIST generators (eval mode, on the CPU).

    Parameters
    ----------
    name : {"G", "shadow", "unseen", "other"}

    Returns
    -------
    generator : ImageGenerator
    """
    from ._common import load_generator

    path = checkpoint_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The demo checkpoint {path!r} is missing; recreate it with "
            "`python -m flipad_sklearn.generators._demo_checkpoints`.")
    return load_generator(path)


def train_demo_generators(out_dir=CHECKPOINT_DIR, epochs=EPOCHS, log=print):
    """Train the demo's four generators and save them to ``out_dir``."""
    import torch

    from ..datasets import load_mnist_subset
    from ._common import save_generator
    from ._image import train_gan

    X, _ = load_mnist_subset(return_X_y=True)
    os.makedirs(out_dir, exist_ok=True)
    for name, recipe in _recipes().items():
        recipe = dict(recipe)
        kind = recipe.pop("kind")
        t0 = time.perf_counter()
        G = train_gan(kind, X, epochs=epochs, **recipe)
        G.history = {}              # per-step losses: not needed, and they weigh
        path = os.path.join(out_dir, f"mnist_{name}.pt")
        save_generator(G, path + ".tmp")
        os.replace(path + ".tmp", path)
        log(f"{name}: {kind} ngf={recipe['ngf']} seed={recipe['seed']} "
            f"({epochs} epochs, {len(X)} images, {torch.get_num_threads()} threads) "
            f"in {time.perf_counter() - t0:.1f}s -> {path} "
            f"({os.path.getsize(path) / 1024:.0f} KB)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default=CHECKPOINT_DIR)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the shipped checkpoints' setting)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    train_demo_generators(args.out_dir, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
