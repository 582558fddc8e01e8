"""Small CPU-trainable image GANs: DCGAN, WGAN-GP, LSGAN and EBGAN.

The four share one generator family (:class:`ImageGenerator`, a small DCGAN
generator ending in ``nn.ConvTranspose2d`` + ``nn.Tanh``) and differ in their
discriminator and loss, as in FLIPAD's experiments: telling them apart is the
attribution problem.
"""

from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import resolve_device
from ._common import (
    GeneratorMixin,
    init_weights,
    preserved_global_rng,
    progress,
    register,
    seed_to_int,
)

GAN_KINDS = ("dcgan", "wgan_gp", "lsgan", "ebgan")
IMAGE_SIZES = (28, 32)

# (learning rate, Adam betas) per kind; WGAN-GP as in Gulrajani et al.
_OPTIM = {
    "dcgan": (2e-4, (0.5, 0.999)),
    "lsgan": (2e-4, (0.5, 0.999)),
    "ebgan": (2e-4, (0.5, 0.999)),
    "wgan_gp": (1e-4, (0.5, 0.9)),
}


def _check_kind(kind):
    if not isinstance(kind, str):
        raise ValueError(f"kind must be one of {GAN_KINDS}, got {kind!r}.")
    k = kind.lower().replace("-", "_")
    if k == "wgangp":
        k = "wgan_gp"
    if k not in GAN_KINDS:
        raise ValueError(f"kind must be one of {GAN_KINDS}, got {kind!r}.")
    return k


def _start_size(image_size):
    """Spatial size of the first feature map and number of upsamplings."""
    if image_size == 28:
        return 7, 2
    if image_size == 32:
        return 4, 3
    raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}.")


@register
class ImageGenerator(GeneratorMixin, nn.Module):
    """A small DCGAN generator for 28x28 or 32x32 images in [-1, 1].

    latent (``latent_dim``) -> ConvTranspose2d to ``4*ngf`` x 7x7 (28) or
    4x4 (32) -> [ConvTranspose2d stride 2, BatchNorm, ReLU] ... ->
    ConvTranspose2d to ``channels`` -> Tanh.  The final layer is the last
    ``ConvTranspose2d`` (with bias); its input, the penultimate activation,
    is a ReLU output of shape ``(2*ngf, 14, 14)`` (28) or ``(ngf, 16, 16)`` (32).

    Parameters
    ----------
    image_size : {28, 32}, default=28
    channels : int, default=1
    latent_dim : int, default=64
    ngf : int, default=32
        Width: the feature maps have ``4*ngf``, ``2*ngf``, ... channels.

    Attributes
    ----------
    history : dict of lists
        Losses recorded by the training function.
    info : dict
        How it was trained (kind, seed, epochs, ...).
    """

    def __init__(self, image_size=28, channels=1, latent_dim=64, ngf=32):
        super().__init__()
        start, n_up = _start_size(image_size)
        for name, v in (("channels", channels), ("latent_dim", latent_dim), ("ngf", ngf)):
            if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        self.image_size, self.channels = int(image_size), int(channels)
        self.latent_dim, self.ngf = int(latent_dim), int(ngf)
        width = 4 * ngf
        layers = [nn.ConvTranspose2d(latent_dim, width, start, 1, 0, bias=False),
                  nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.history = {}
        self.info = {}

    @property
    def config(self):
        """Constructor arguments (rebuild with ``ImageGenerator(**config)``)."""
        return {"image_size": self.image_size, "channels": self.channels,
                "latent_dim": self.latent_dim, "ngf": self.ngf}

    @property
    def output_shape(self):
        """Shape of one image ``(C, H, W)``."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def _final(self):
        return self.net[-2]

    @property
    def kind(self):
        """The GAN it was trained as (``info["kind"]``), or None."""
        return self.info.get("kind")

    def forward(self, z):
        """Images ``(n, C, H, W)`` from latent codes ``(n, latent_dim)``."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class _Critic(nn.Module):
    """Convolutional discriminator / critic: image -> one logit.

    Batch norm in the hidden layers except for WGAN-GP (the gradient penalty
    is per sample, batch norm would couple the samples).
    """

    def __init__(self, image_size, channels, ndf, batch_norm):
        super().__init__()
        start, n_down = _start_size(image_size)
        layers = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        layers.append(nn.Conv2d(width, 1, start, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).reshape(-1)


class _AutoencoderCritic(nn.Module):
    """EBGAN's discriminator: an autoencoder; energy = reconstruction error."""

    def __init__(self, image_size, channels, ndf):
        super().__init__()
        _, n_down = _start_size(image_size)
        enc = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(n_down - 1):
            enc += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        dec = []
        for _ in range(n_down - 1):
            dec += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        dec.append(nn.ConvTranspose2d(width, channels, 4, 2, 1))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x):
        emb = self.encoder(x)
        return self.decoder(emb), emb.reshape(x.shape[0], -1)


def _pulling_away(emb):
    """EBGAN's pulling-away term: mean squared cosine similarity off the diagonal."""
    n = emb.shape[0]
    if n < 2:
        return emb.new_zeros(())
    e = F.normalize(emb, dim=1)
    sim = e @ e.T
    return (sim.pow(2).sum() - n) / (n * (n - 1))


def _gradient_penalty(critic, real, fake, gen):
    eps = torch.rand((real.shape[0], 1, 1, 1), generator=gen).to(real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(mix)
    (grad,) = torch.autograd.grad(out.sum(), mix, create_graph=True)
    return (grad.reshape(grad.shape[0], -1).norm(dim=1) - 1).pow(2).mean()


def _check_images(X):
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(
            f"X must be images of shape (n, C, H, W); got an array of shape {X.shape}. "
            "Reshape flattened images first.")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}.")
    n, c, h, w = X.shape
    if h != w or h not in IMAGE_SIZES:
        raise ValueError(
            f"The image GANs make {IMAGE_SIZES[0]}x{IMAGE_SIZES[0]} or "
            f"{IMAGE_SIZES[1]}x{IMAGE_SIZES[1]} images; X has {h}x{w} "
            "(pad MNIST with load_mnist_subset(pad_to=32)).")
    if n < 2:
        raise ValueError(f"At least 2 training images are needed, got {n}.")
    X = X.astype(np.float32, copy=False)
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity.")
    lo, hi = float(X.min()), float(X.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(
            f"X must be scaled to [-1, 1] (the generators end in tanh); its values "
            f"range over [{lo:.3g}, {hi:.3g}].")
    return X


def train_gan(kind, X, epochs=5, seed=0, batch_size=64, verbose=0, *, latent_dim=64,
              ngf=32, ndf=32, lr=None, n_critic=5, gp_weight=10.0, ebgan_margin=None,
              pt_weight=0.1, device="cpu"):
    """Train a small image GAN and return its generator.

    Deterministic for a given ``seed`` on a given device and thread count:
    weights are initialised, batches shuffled and latent codes drawn from a
    local ``torch.Generator`` (the global RNG is left as it was).

    Parameters
    ----------
    kind : {"dcgan", "wgan_gp", "lsgan", "ebgan"}
        ``"dcgan"``: non-saturating BCE loss (Radford et al. 2016);
        ``"wgan_gp"``: Wasserstein loss with gradient penalty, critic without
        batch norm, ``n_critic`` critic steps per generator step (Gulrajani et
        al. 2017); ``"lsgan"``: least-squares loss with targets 0/1 (Mao et
        al. 2017); ``"ebgan"``: autoencoder discriminator, margin loss and
        pulling-away term (Zhao et al. 2017).  ``"wgan-gp"`` is accepted.
    X : ndarray of shape (n, C, H, W)
        Training images in [-1, 1], ``H = W`` in {28, 32}.
    epochs : int, default=5
        Passes over ``X``.  The last incomplete batch of each epoch is
        dropped (batch norm), unless ``X`` holds less than one batch.
        On one CPU thread an epoch over the 5000 MNIST images takes about
        13-22 s.  WGAN-GP makes one generator step per ``n_critic`` batches,
        so it needs several times the epochs of the others for as many
        generator updates (3 epochs give digits for DCGAN, LSGAN and EBGAN;
        WGAN-GP's are still blurry after 12).
    seed : int or RandomState, default=0
    batch_size : int, default=64
    verbose : int, default=0
        0: silent; positive: a tqdm progress bar with the current losses.
    latent_dim, ngf : int, default=64, 32
        The generator's size (see :class:`ImageGenerator`).
    ndf : int, default=32
        Width of the discriminator.
    lr : float or None, default=None
        Adam learning rate for both networks; None: 2e-4 (1e-4 for WGAN-GP).
    n_critic : int, default=5
        WGAN-GP only: critic steps per generator step (the generator steps on
        the first batch and every ``n_critic``-th after it).
    gp_weight : float, default=10.0
        WGAN-GP only: weight of the gradient penalty.
    ebgan_margin : float or None, default=None
        EBGAN only: margin of the discriminator's loss on generated images;
        None: ``max(1, batch_size / 64)``.
    pt_weight : float, default=0.1
        EBGAN only: weight of the pulling-away term.
    device : {"cpu", "cuda", "auto"}, default="cpu"

    Returns
    -------
    generator : ImageGenerator
        In eval mode, on the CPU.  ``generator.history`` holds the losses of
        every step (``"d_loss"``, ``"g_loss"``) and the mean per epoch
        (``"epoch_d_loss"``, ``"epoch_g_loss"``); ``generator.info`` the
        whole recipe (kind, seed and every training argument; with
        ``generator.config`` it retrains the generator exactly, see
        :func:`train_shadows`).

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_mnist_subset
    >>> from flipad_sklearn.generators import train_gan
    >>> X, _ = load_mnist_subset(return_X_y=True)
    >>> G = train_gan("dcgan", X[::20], epochs=1, seed=0)  # doctest: +SKIP
    >>> G.sample(4, random_state=0).shape  # doctest: +SKIP
    (4, 1, 28, 28)
    """
    kind = _check_kind(kind)
    X = _check_images(X)
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("n_critic", n_critic)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    seed = seed_to_int(seed)
    dev = resolve_device(device)
    n, c, size, _ = X.shape
    gen = torch.Generator().manual_seed(seed)

    with preserved_global_rng():
        G = ImageGenerator(size, c, latent_dim, ngf)
        if kind == "ebgan":
            D = _AutoencoderCritic(size, c, ndf)
        else:
            D = _Critic(size, c, ndf, batch_norm=kind != "wgan_gp")
    init_weights(G, gen)
    init_weights(D, gen)
    G.to(dev).train()
    D.to(dev).train()
    default_lr, betas = _OPTIM[kind]
    lr = default_lr if lr is None else float(lr)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    margin = max(1.0, batch_size / 64) if ebgan_margin is None else float(ebgan_margin)

    data = torch.from_numpy(X).to(dev)
    bs = min(batch_size, n)
    n_batches = n // bs
    history = {"d_loss": [], "g_loss": [], "epoch_d_loss": [], "epoch_g_loss": []}
    bar = progress(epochs * n_batches, f"training {kind}", verbose)
    step = 0

    def noise(m):
        return torch.randn((m, G.latent_dim), generator=gen).to(dev)

    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            d_epoch, g_epoch = [], []
            for b in range(n_batches):
                real = data[order[b * bs:(b + 1) * bs]]
                m = real.shape[0]
                # --- discriminator / critic step
                fake = G(noise(m)).detach()
                if kind == "dcgan":
                    d_real, d_fake = D(real), D(fake)
                    bce = F.binary_cross_entropy_with_logits
                    d_loss = (bce(d_real, torch.ones_like(d_real))
                              + bce(d_fake, torch.zeros_like(d_fake)))
                elif kind == "lsgan":
                    d_loss = 0.5 * ((D(real) - 1).pow(2).mean() + D(fake).pow(2).mean())
                elif kind == "wgan_gp":
                    d_loss = (D(fake).mean() - D(real).mean()
                              + gp_weight * _gradient_penalty(D, real, fake, gen))
                else:
                    rec_real, _ = D(real)
                    rec_fake, _ = D(fake)
                    e_real = F.mse_loss(rec_real, real)
                    e_fake = F.mse_loss(rec_fake, fake)
                    d_loss = e_real + F.relu(margin - e_fake)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_epoch.append(float(d_loss.detach()))
                history["d_loss"].append(d_epoch[-1])
                # --- generator step
                if kind != "wgan_gp" or step % n_critic == 0:
                    fake = G(noise(m))
                    if kind == "dcgan":
                        out = D(fake)
                        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
                    elif kind == "lsgan":
                        g_loss = 0.5 * (D(fake) - 1).pow(2).mean()
                    elif kind == "wgan_gp":
                        g_loss = -D(fake).mean()
                    else:
                        rec, emb = D(fake)
                        g_loss = F.mse_loss(rec, fake) + pt_weight * _pulling_away(emb)
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    g_epoch.append(float(g_loss.detach()))
                    history["g_loss"].append(g_epoch[-1])
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(d_loss=f"{d_epoch[-1]:.3f}",
                                    g_loss=f"{history['g_loss'][-1]:.3f}"
                                    if history["g_loss"] else "-")
            history["epoch_d_loss"].append(float(np.mean(d_epoch)))
            history["epoch_g_loss"].append(float(np.mean(g_epoch)) if g_epoch else float("nan"))
    finally:
        if bar is not None:
            bar.close()

    G.to("cpu").eval()
    G.history = history
    G.info = {"kind": kind, "seed": seed, "epochs": int(epochs),
              "batch_size": int(batch_size), "n_train": int(n), "lr": lr, "ndf": int(ndf),
              "n_critic": int(n_critic), "gp_weight": float(gp_weight),
              "ebgan_margin": None if ebgan_margin is None else float(ebgan_margin),
              "pt_weight": float(pt_weight)}
    return G
