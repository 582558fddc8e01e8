"""Shadow generators: copies of the owner's generator trained with other seeds.

Trained on G's samples against real data only, a detector rejects real data
but is near chance against generators it never saw; a few shadow copies of G
(same architecture and recipe, other seeds) added as labelled negatives
(y = -1) fix that.  The owner can always train them: this is the recommended
open-world recipe (see the design notes).

A generator of the package is retrained with its own recipe and other seeds.
Any other torch generator (the models people own) gets copies of its
architecture, re-initialised from each seed and trained as a DCGAN
(non-saturating loss, a discriminator sized to the samples) on ``X``: the
generator's training data when the owner has it, else samples of the
generator itself, which only its owner can draw in any number.
"""

import copy
import math
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import resolve_device
from ..generator_utils import _check_latent_shape, _select_output
from ._common import init_weights, preserved_global_rng, progress
from ._image import ImageGenerator, train_gan
from ._tabular import TabularGenerator, train_tabular_gan

#: Adam settings of the user-generator recipe (DCGAN's, Radford et al. 2016).
USER_SHADOW_LR = 2e-4
USER_SHADOW_BETAS = (0.5, 0.999)


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


def train_shadows(generator, X, n_shadows=2, *, seeds=None, latent_shape=None,
                  epochs=5, batch_size=64, init="dcgan", output=None, verbose=0,
                  device="cpu"):
    """Train shadow copies of a generator with other seeds.

    A generator of this package (:class:`ImageGenerator`,
    :class:`TabularGenerator`): the architecture (``generator.config``) and
    the training recipe (``generator.info``: kind, epochs, batch size,
    learning rate, ...) are reused; only the seed changes.  With
    ``seeds=[generator.info["seed"]]`` and the same ``X`` it retrains
    ``generator`` itself, exactly.

    Any other ``torch.nn.Module`` (your own generator, a published one): each
    shadow is a deep copy of it, re-initialised from its seed (``init``) and
    trained as a DCGAN on ``X`` with standard-normal latents of
    ``latent_shape``, a discriminator sized to the samples (strided
    convolutions for images ``(n, C, H, W)``, an MLP for rows ``(n, d)``),
    the non-saturating loss and Adam (``USER_SHADOW_LR``,
    ``USER_SHADOW_BETAS``).  Without the generator's training data, ``X``
    can be its own samples: shadows then learn G's output distribution with
    other weights, which is what makes them useful negatives (they differ
    from G where another model trained on the same kind of data would).
    Only the inputs of the generator's ``forward`` are latents here: a
    conditional generator needs its own training code.  Such shadows help
    only as far as they resemble G: shadows much worse than G teach the
    detector to reject poor samples rather than other models' traces, so
    retrain with G's own training code and other seeds when you have it,
    and keep real data among the labelled others
    (``benchmarks/results/user_shadows.md`` compares the two).

    Parameters
    ----------
    generator : ImageGenerator, TabularGenerator or torch.nn.Module
        Trained by :func:`train_gan` or :func:`train_tabular_gan` (or loaded
        with :func:`load_generator`), or any torch generator ``G(z)``.
        Left unchanged.
    X : ndarray
        The training data (the generator's, or any the owner has, or samples
        of the generator); for a user generator, of the shape of its
        samples.
    n_shadows : int, default=2
        Used when ``seeds`` is None.
    seeds : sequence of int or None, default=None
        One shadow per seed.  None: :func:`default_shadow_seeds` (of
        ``generator.info["seed"]``, or of 0 for a user generator).  Keep them
        apart from the seeds of generators you test on as "unseen".
    latent_shape : int or tuple of int or None, default=None
        User generator only (required there): the shape of one latent code.
    epochs : int, default=5
        User generator only: passes over ``X``.
    batch_size : int, default=64
        User generator only.  The last incomplete batch of an epoch is
        dropped (batch norm), unless ``X`` holds less than one batch.
    init : {"dcgan", "reset", "finetune"}, default="dcgan"
        User generator only (a generator of this package refuses anything but
        the default): how a shadow's weights start.  ``"dcgan"``:
        N(0, 0.02) weights, zero biases, batch-norm scales N(1, 0.02) (the
        initialisation of the package's GANs); ``"reset"``: each module's own
        ``reset_parameters()`` (PyTorch's defaults), under the shadow's seed;
        ``"finetune"``: G's own weights, trained further on ``X`` against a
        new discriminator (the seed draws the discriminator and the batches):
        a copy of G that someone fine-tuned.
    output : str, callable or None, default=None
        User generator only: which part of its output holds the samples (see
        :func:`~flipad_sklearn.find_final_layer`).
    verbose : int, default=0
        Progress bars of the trainings.
    device : {"cpu", "cuda", "auto"}, default="cpu"

    Returns
    -------
    shadows : list of ImageGenerator, TabularGenerator or torch.nn.Module
        In the order of ``seeds``; user-generator shadows are in eval mode on
        the CPU, with ``history`` (losses per step) and ``info`` (the recipe)
        attributes.

    Examples
    --------
    >>> from flipad_sklearn.generators import train_gan, train_shadows
    >>> G = train_gan("dcgan", X, epochs=3, seed=0)  # doctest: +SKIP
    >>> shadows = train_shadows(G, X, n_shadows=2)  # doctest: +SKIP
    >>> X_neg = np.concatenate([S.sample(500, random_state=i)
    ...                         for i, S in enumerate(shadows)])  # doctest: +SKIP
    """
    if not isinstance(generator, (ImageGenerator, TabularGenerator)):
        if not isinstance(generator, nn.Module):
            raise TypeError(
                f"generator must be a torch.nn.Module (a generator of this package or "
                f"your own), got {type(generator).__name__}.")
        return _train_user_shadows(generator, X, n_shadows, seeds=seeds,
                                   latent_shape=latent_shape, epochs=epochs,
                                   batch_size=batch_size, init=init, output=output,
                                   verbose=verbose, device=device)
    if init != "dcgan":
        # the package's generators are retrained by their own recipe: a "finetune" asked
        # for here would silently give shadows trained from scratch
        raise ValueError(f"init={init!r} applies to your own generators; shadows of a "
                         "generator of this package follow its training recipe (leave "
                         "init='dcgan').")
    info = dict(generator.info)
    if "kind" not in info or "seed" not in info:
        raise ValueError(
            "generator.info holds no training recipe (kind, seed, ...): was it trained "
            "by train_gan / train_tabular_gan?")
    seeds = _check_seeds(seeds, n_shadows, info["seed"])
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


def _check_seeds(seeds, n_shadows, seed):
    if seeds is None:
        if not isinstance(n_shadows, Integral) or isinstance(n_shadows, bool) or n_shadows < 1:
            raise ValueError(f"n_shadows must be a positive integer, got {n_shadows!r}.")
        seeds = default_shadow_seeds(seed, int(n_shadows))
    return [int(s) for s in seeds]


class _Discriminator(nn.Module):
    """A DCGAN discriminator sized to the samples: sample -> one logit.

    Images ``(C, H, W)``: 4x4 convolutions of stride 2 (``ndf`` channels,
    doubling, batch norm after the first) until the smaller side is at most
    4, then a linear layer.  Rows ``(d,)``: an MLP with two hidden layers.
    """

    def __init__(self, sample_shape, ndf=32, hidden=256):
        super().__init__()
        if len(sample_shape) == 3:
            c, h, w = sample_shape
            layers, width, first = [], c, True
            while True:
                layers += [nn.Conv2d(width, ndf if first else width * 2, 4, 2, 1,
                                     bias=first)]
                width = ndf if first else width * 2
                if not first:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.LeakyReLU(0.2, True))
                h, w, first = h // 2, w // 2, False
                if min(h, w) <= 4:
                    break
            layers += [nn.Flatten(), nn.Linear(width * max(h, 1) * max(w, 1), 1)]
        else:
            d = int(np.prod(sample_shape))
            layers = [nn.Flatten(), nn.Linear(d, hidden), nn.LeakyReLU(0.2, True),
                      nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, True),
                      nn.Linear(hidden, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).reshape(-1)


def _reinit(module, init, seed):
    """Re-initialise every parameter of ``module`` from ``seed`` (global RNG untouched)."""
    gen = torch.Generator().manual_seed(seed)
    with preserved_global_rng():
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    if init == "dcgan":
        init_weights(module, gen)


def _train_user_shadows(generator, X, n_shadows, *, seeds, latent_shape, epochs,
                        batch_size, init, output, verbose, device):
    if latent_shape is None:
        raise ValueError("latent_shape is needed to train shadows of your own generator "
                         "(the shape of one latent code, e.g. (100, 1, 1)).")
    latent_shape = _check_latent_shape(latent_shape)
    if init not in ("dcgan", "reset", "finetune"):
        raise ValueError(f"init must be 'dcgan', 'reset' or 'finetune', got {init!r}.")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    seeds = _check_seeds(seeds, n_shadows, 0)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim < 2 or X.shape[0] < 2:
        raise ValueError(f"X must hold at least 2 samples along its first axis; got shape "
                         f"{X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity.")
    dev = resolve_device(device)
    with torch.no_grad(), preserved_global_rng():
        was_training = generator.training
        generator.eval()
        try:
            probe = _select_output(generator(torch.zeros((2,) + latent_shape,
                                                         device=_device_of(generator))),
                                   output)
        finally:
            generator.train(was_training)
    if tuple(probe.shape[1:]) != X.shape[1:]:
        raise ValueError(
            f"The generator makes samples of shape {tuple(probe.shape[1:])} but X has "
            f"{X.shape[1:]}; pass X of the generator's sample shape.")
    data = torch.from_numpy(X)
    n = X.shape[0]
    bs = min(int(batch_size), n)
    n_batches = n // bs
    shadows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        with preserved_global_rng():
            G = copy.deepcopy(generator).to("cpu")
            D = _Discriminator(X.shape[1:])
        if init != "finetune":
            _reinit(G, init, seed)
        init_weights(D, gen)
        G.to(dev).train()
        D.to(dev).train()
        opt_g = torch.optim.Adam(G.parameters(), lr=USER_SHADOW_LR, betas=USER_SHADOW_BETAS)
        opt_d = torch.optim.Adam(D.parameters(), lr=USER_SHADOW_LR, betas=USER_SHADOW_BETAS)
        history = {"d_loss": [], "g_loss": []}
        bar = progress(int(epochs) * n_batches, f"training shadow (seed {seed})", verbose)
        try:
            for _ in range(int(epochs)):
                order = torch.randperm(n, generator=gen)
                for b in range(n_batches):
                    real = data[order[b * bs:(b + 1) * bs]].to(dev)
                    m = real.shape[0]
                    z = torch.randn((m,) + latent_shape, generator=gen).to(dev)
                    fake = _select_output(G(z), output)
                    d_real, d_fake = D(real), D(fake.detach())
                    d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                              + F.binary_cross_entropy_with_logits(d_fake,
                                                                   torch.zeros_like(d_fake)))
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    out = D(fake)
                    g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    history["d_loss"].append(float(d_loss.detach()))
                    history["g_loss"].append(float(g_loss.detach()))
                    if not (math.isfinite(history["d_loss"][-1])
                            and math.isfinite(history["g_loss"][-1])):
                        raise FloatingPointError(
                            f"Shadow training (seed {seed}) diverged: losses "
                            f"{history['d_loss'][-1]}, {history['g_loss'][-1]}.")
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        G.to("cpu").eval()
        G.history = history
        G.info = {"kind": "dcgan", "recipe": "user", "seed": seed, "init": init,
                  "epochs": int(epochs), "batch_size": int(batch_size), "n_train": int(n),
                  "latent_shape": latent_shape, "lr": USER_SHADOW_LR}
        shadows.append(G)
    return shadows


def _device_of(module):
    for t in module.parameters():
        return t.device
    return torch.device("cpu")
