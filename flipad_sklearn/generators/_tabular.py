"""A KL-WGAN-style MLP generator for tabular data (FLIPAD's tabular setting).

Generator: noise (10) -> 300 -> ReLU -> 300 -> ReLU -> n_features, the final
layer a ``nn.Linear`` without output activation.  Trained as a WGAN with
gradient penalty whose critic objective is the KL form of Song & Ermon (2020,
"Bridging the gap between f-GANs and Wasserstein GANs"):
``E_real[D] - log E_fake[exp D]``, the Donsker-Varadhan bound on KL(real || fake)
over Lipschitz critics.
"""

import math
from numbers import Integral

import numpy as np
import torch
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


@register
class TabularGenerator(GeneratorMixin, nn.Module):
    """MLP generator: noise ``latent_dim`` -> hidden ReLU layers -> ``n_features``.

    The final layer is a ``nn.Linear`` with no output activation (FLIPAD's
    ``activation="identity"``); the penultimate activation is the last ReLU
    output, of size ``hidden_sizes[-1]``.

    Parameters
    ----------
    n_features : int, default=11
    latent_dim : int, default=10
    hidden_sizes : tuple of int, default=(300, 300)

    Attributes
    ----------
    history : dict of lists
        Losses recorded by :func:`train_tabular_gan`.
    info : dict
        How it was trained.
    """

    def __init__(self, n_features=11, latent_dim=10, hidden_sizes=(300, 300)):
        super().__init__()
        hidden_sizes = tuple(hidden_sizes)
        for name, v in (("n_features", n_features), ("latent_dim", latent_dim)) + tuple(
                ("hidden_sizes", h) for h in hidden_sizes):
            if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must hold positive integers, got {v!r}.")
        if not hidden_sizes:
            raise ValueError("hidden_sizes must hold at least one layer size.")
        self.n_features, self.latent_dim = int(n_features), int(latent_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        layers, width = [], self.latent_dim
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, self.n_features))
        self.net = nn.Sequential(*layers)
        self.history = {}
        self.info = {}

    @property
    def config(self):
        """Constructor arguments (rebuild with ``TabularGenerator(**config)``)."""
        return {"n_features": self.n_features, "latent_dim": self.latent_dim,
                "hidden_sizes": list(self.hidden_sizes)}

    @property
    def output_shape(self):
        """Shape of one sample ``(n_features,)``."""
        return (self.n_features,)

    @property
    def _final(self):
        return self.net[-1]

    def forward(self, z):
        """Rows ``(n, n_features)`` from latent codes ``(n, latent_dim)``."""
        return self.net(z)

    def _scaling(self):
        mean = np.asarray(self.info.get("feature_mean", np.zeros(self.n_features)), float)
        std = np.asarray(self.info.get("feature_std", np.ones(self.n_features)), float)
        return mean, std

    def standardize(self, X):
        """Rows in the standardised units the generator was trained in.

        ``(X - mean) / std`` with the training columns' statistics (the
        identity for a generator trained with ``standardize=False``).  Use it
        with :meth:`standardized_final_layer` for the inversion: in data units
        the columns with large units dominate the lasso's squared error.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_std : ndarray of shape (n_samples, n_features), float64
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}.")
        mean, std = self._scaling()
        return (X - mean) / std

    def standardized_final_layer(self):
        """A copy of the final layer that outputs standardised units.

        ``standardize(G(z)) == standardized_final_layer()(h)`` for the
        penultimate activation ``h``: invert standardised rows with it.

        Returns
        -------
        layer : torch.nn.Linear
        """
        mean, std = self._scaling()
        final = self.final_layer
        layer = nn.Linear(final.in_features, final.out_features,
                          dtype=final.weight.dtype, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            s = torch.as_tensor(std, dtype=final.weight.dtype)
            mu = torch.as_tensor(mean, dtype=final.weight.dtype)
            layer.weight.copy_(final.weight.detach().cpu() / s[:, None])
            layer.bias.copy_((final.bias.detach().cpu() - mu) / s)
        return layer


def _critic(n_features, hidden_sizes):
    layers, width = [], n_features
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _log_mean_exp(v):
    return torch.logsumexp(v, dim=0) - math.log(v.shape[0])


def train_tabular_gan(X, epochs=50, seed=0, batch_size=64, verbose=0, *, latent_dim=10,
                      hidden_sizes=(300, 300), critic_hidden_sizes=(300, 300), lr=1e-4,
                      n_critic=5, gp_weight=10.0, standardize=True, device="cpu"):
    """Train the KL-WGAN-style tabular generator and return it.

    Deterministic for a given ``seed`` (local ``torch.Generator``; the global
    RNG is left as it was).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Numeric training rows (e.g. ``load_wine_quality().data``).
    epochs : int, default=50
    seed : int or RandomState, default=0
    batch_size : int, default=64
        The last incomplete batch of each epoch is dropped.
    verbose : int, default=0
        0: silent; positive: a tqdm progress bar.
    latent_dim : int, default=10
    hidden_sizes : tuple of int, default=(300, 300)
        The generator's hidden layers.
    critic_hidden_sizes : tuple of int, default=(300, 300)
    lr : float, default=1e-4
        Adam learning rate (betas 0.5, 0.9) of both networks.
    n_critic : int, default=5
        Critic steps per generator step (the generator steps on the first
        batch and every ``n_critic``-th after it).
    gp_weight : float, default=10.0
        Weight of the gradient penalty (1-Lipschitz critic).
    standardize : bool, default=True
        Train on standardised columns, then fold the scaling into the final
        layer (``W <- diag(std) W``, ``b <- std * b + mean``): the returned
        generator outputs rows in the units of ``X`` and its final layer is
        still a plain ``nn.Linear``.  For the inversion, prefer the
        standardised view (:meth:`TabularGenerator.standardize` and
        :meth:`TabularGenerator.standardized_final_layer`): in data units the
        columns with large units dominate the lasso.
    device : {"cpu", "cuda", "auto"}, default="cpu"

    Returns
    -------
    generator : TabularGenerator
        In eval mode, on the CPU, with ``history`` (``"d_loss"``, ``"g_loss"``
        per step, ``"epoch_d_loss"``, ``"epoch_g_loss"``) and ``info`` (the
        whole recipe, see :func:`train_shadows`, and the column means and
        standard deviations that were folded into the final layer).
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise ValueError(f"X must be a numeric 2-D array, got shape {X.shape} and "
                         f"dtype {X.dtype}.")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity.")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"At least 2 training rows are needed, got {n}.")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("n_critic", n_critic)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    seed = seed_to_int(seed)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)

    mean = X.mean(axis=0) if standardize else np.zeros(d)
    std = X.std(axis=0) if standardize else np.ones(d)
    std = np.where(std > 0, std, 1.0)
    data = torch.from_numpy(((X - mean) / std).astype(np.float32)).to(dev)

    with preserved_global_rng():
        G = TabularGenerator(d, latent_dim, hidden_sizes)
        D = _critic(d, tuple(critic_hidden_sizes))
    init_weights(G, gen, std=0.1)
    init_weights(D, gen, std=0.1)
    G.to(dev).train()
    D.to(dev).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))

    bs = min(batch_size, n)
    n_batches = n // bs
    history = {"d_loss": [], "g_loss": [], "epoch_d_loss": [], "epoch_g_loss": []}
    bar = progress(epochs * n_batches, "training kl-wgan", verbose)
    step = 0

    def noise(m):
        return torch.randn((m, latent_dim), generator=gen).to(dev)

    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            d_epoch, g_epoch = [], []
            for b in range(n_batches):
                real = data[order[b * bs:(b + 1) * bs]]
                m = real.shape[0]
                fake = G(noise(m)).detach()
                eps = torch.rand((m, 1), generator=gen).to(dev)
                mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
                (grad,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
                gp = (grad.norm(dim=1) - 1).pow(2).mean()
                kl = D(real).mean() - _log_mean_exp(D(fake).reshape(-1))
                d_loss = -kl + gp_weight * gp
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_epoch.append(float(d_loss.detach()))
                history["d_loss"].append(d_epoch[-1])
                if step % n_critic == 0:
                    g_loss = -_log_mean_exp(D(G(noise(m))).reshape(-1))
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    g_epoch.append(float(g_loss.detach()))
                    history["g_loss"].append(g_epoch[-1])
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(d_loss=f"{d_epoch[-1]:.3f}")
            history["epoch_d_loss"].append(float(np.mean(d_epoch)))
            history["epoch_g_loss"].append(float(np.mean(g_epoch)) if g_epoch else float("nan"))
    finally:
        if bar is not None:
            bar.close()

    G.to("cpu").eval()
    if standardize:
        final = G.final_layer
        with torch.no_grad():
            s = torch.as_tensor(std, dtype=final.weight.dtype)
            mu = torch.as_tensor(mean, dtype=final.weight.dtype)
            final.weight.mul_(s[:, None])
            final.bias.mul_(s).add_(mu)
    G.history = history
    G.info = {"kind": "kl_wgan", "seed": seed, "epochs": int(epochs),
              "batch_size": int(batch_size), "n_train": int(n), "lr": float(lr),
              "critic_hidden_sizes": [int(h) for h in critic_hidden_sizes],
              "n_critic": int(n_critic), "gp_weight": float(gp_weight),
              "standardize": bool(standardize),
              "feature_mean": [float(v) for v in mean], "feature_std": [float(v) for v in std]}
    return G
