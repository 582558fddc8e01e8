"""Shadow generators: copies of the owner's generator trained with other seeds.

Trained on G's samples against real data only, a detector rejects real data
but is near chance against generators it never saw; a few shadow copies of G
(same architecture and recipe, other seeds) added as labelled negatives
(y = -1) fix that.  The owner can always train them: this is the recommended
open-world recipe (see the design notes).
"""

from numbers import Integral

import numpy as np

from ._image import ImageGenerator, train_gan
from ._tabular import TabularGenerator, train_tabular_gan


def default_shadow_seeds(seed, n_shadows):
    """Seeds for ``n_shadows`` shadows of a generator trained with ``seed``.

    Large integers derived from ``seed`` with :class:`numpy.random.SeedSequence`:
    distinct from the seed itself and, in practice, from the small seeds a
    zoo uses for its "same architecture, other seed" test generators (which
    must stay unseen).
    """
    ss = np.random.SeedSequence([int(seed), 0x5AD0])
    seeds = [int(s) for s in ss.generate_state(n_shadows, dtype=np.uint32)]
    return [s if s != seed else s + 1 for s in seeds]


def train_shadows(generator, X, n_shadows=2, *, seeds=None, verbose=0, device="cpu"):
    """Train shadow copies of a generator of this package with other seeds.

    The architecture (``generator.config``) and the training recipe
    (``generator.info``: kind, epochs, batch size, learning rate, ...) are
    reused; only the seed changes.  With ``seeds=[generator.info["seed"]]``
    and the same ``X`` it retrains ``generator`` itself, exactly.

    Parameters
    ----------
    generator : ImageGenerator or TabularGenerator
        Trained by :func:`train_gan` or :func:`train_tabular_gan` (or loaded
        with :func:`load_generator`).  For a generator of your own, train the
        shadows with your own training code and other seeds.
    X : ndarray
        The training data (the generator's, or any the owner has).
    n_shadows : int, default=2
        Used when ``seeds`` is None.
    seeds : sequence of int or None, default=None
        One shadow per seed.  None: :func:`default_shadow_seeds`.  Keep them
        apart from the seeds of generators you test on as "unseen".
    verbose : int, default=0
        Progress bars of the trainings.
    device : {"cpu", "cuda", "auto"}, default="cpu"

    Returns
    -------
    shadows : list of ImageGenerator or TabularGenerator
        In the order of ``seeds``.

    Examples
    --------
    >>> from flipad_sklearn.generators import train_gan, train_shadows
    >>> G = train_gan("dcgan", X, epochs=3, seed=0)  # doctest: +SKIP
    >>> shadows = train_shadows(G, X, n_shadows=2)  # doctest: +SKIP
    >>> X_neg = np.concatenate([S.sample(500, random_state=i)
    ...                         for i, S in enumerate(shadows)])  # doctest: +SKIP
    """
    if not isinstance(generator, (ImageGenerator, TabularGenerator)):
        raise TypeError(
            f"generator must be an ImageGenerator or TabularGenerator of this package, got "
            f"{type(generator).__name__}; train shadows of your own model with your own "
            "training code and other seeds.")
    info = dict(generator.info)
    if "kind" not in info or "seed" not in info:
        raise ValueError(
            "generator.info holds no training recipe (kind, seed, ...): was it trained "
            "by train_gan / train_tabular_gan?")
    if seeds is None:
        if not isinstance(n_shadows, Integral) or isinstance(n_shadows, bool) or n_shadows < 1:
            raise ValueError(f"n_shadows must be a positive integer, got {n_shadows!r}.")
        seeds = default_shadow_seeds(info["seed"], int(n_shadows))
    seeds = [int(s) for s in seeds]
    X = np.asarray(X)
    if X.shape[1:] != tuple(generator.output_shape):
        raise ValueError(
            f"X has samples of shape {X.shape[1:]} but the generator makes "
            f"{tuple(generator.output_shape)}.")

    shadows = []
    for seed in seeds:
        if isinstance(generator, TabularGenerator):
            cfg = generator.config
            shadow = train_tabular_gan(
                X, epochs=info["epochs"], seed=seed, batch_size=info["batch_size"],
                verbose=verbose, latent_dim=cfg["latent_dim"],
                hidden_sizes=tuple(cfg["hidden_sizes"]),
                critic_hidden_sizes=tuple(info["critic_hidden_sizes"]), lr=info["lr"],
                n_critic=info["n_critic"], gp_weight=info["gp_weight"],
                standardize=info["standardize"], device=device)
        else:
            shadow = train_gan(
                info["kind"], X, epochs=info["epochs"], seed=seed,
                batch_size=info["batch_size"], verbose=verbose,
                latent_dim=generator.latent_dim, ngf=generator.ngf, ndf=info["ndf"],
                lr=info["lr"], n_critic=info["n_critic"], gp_weight=info["gp_weight"],
                ebgan_margin=info["ebgan_margin"], pt_weight=info["pt_weight"],
                device=device)
        shadows.append(shadow)
    return shadows
