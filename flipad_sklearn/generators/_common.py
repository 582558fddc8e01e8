"""What the image and tabular generators share: seeding, the accessors the
attribution needs (``sample``, ``final_layer``, ``latent_shape``,
``sample_activations``), a progress bar, and saving/loading checkpoints.
"""

import contextlib
import os

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from .._device import resolve_device
from ..generator_utils import _latents
from ..generator_utils import sample_activations as _sample_activations


def seed_to_int(seed):
    """An int seed from an int, a RandomState or None (fresh entropy)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}.")
        return int(seed)
    return int(check_random_state(seed).randint(np.iinfo(np.int32).max))


def latent_seed(random_state):
    """The seed of the latent codes, derived as in
    :func:`flipad_sklearn.sample_activations` (and drawn with the same
    helper), so that ``sample(n, rs)`` and ``sample_activations(n, rs)`` give
    the same samples, whatever the batch size."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def preserved_global_rng():
    """Build modules without changing torch's global CPU RNG.

    ``nn.Module`` constructors draw their default initialisation from the
    global RNG; the modules here are re-initialised from a local
    ``torch.Generator`` afterwards, and the global state is restored.
    """
    with torch.random.fork_rng(devices=[]):
        yield


def init_weights(module, gen, std=0.02):
    """DCGAN initialisation from the local generator ``gen``.

    Linear / (transposed) convolutions: N(0, std), bias 0; batch norm with
    affine parameters: weight N(1, std), bias 0.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.normal_(0.0, std, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
                m.weight.normal_(1.0, std, generator=gen)
                m.bias.zero_()


def progress(total, desc, verbose):
    """A tqdm bar when ``verbose`` is positive, else None (silence)."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True)


class GeneratorMixin:
    """The accessors the attribution needs; subclasses define ``_final`` and
    ``latent_dim`` and an ``nn.Module.forward`` from latent codes."""

    @property
    def latent_shape(self):
        """Shape of one latent code (standard normal)."""
        return (self.latent_dim,)

    @property
    def final_layer(self):
        """The final linear layer (what :class:`~flipad_sklearn.FinalLayerInverter` inverts)."""
        return self._final

    def sample(self, n, random_state=None, *, batch_size=512, return_latents=False):
        """Draw ``n`` samples (eval mode, no gradients), as a numpy array.

        Parameters
        ----------
        n : int
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator of the latent codes (no global RNG is
            touched): the same seed gives the same samples, in any batch size,
            and the same as ``sample_activations(n, random_state)``.
        batch_size : int, default=512
        return_latents : bool, default=False
            Also return the latent codes.

        Returns
        -------
        X : ndarray of shape (n, *output_shape), float32
        Z : ndarray of shape (n, *latent_shape), float32
            Only when ``return_latents``.
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}.")
        rng = np.random.default_rng(latent_seed(random_state))
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        outs, zs = [], []
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    m = min(batch_size, n - start)
                    z = _latents(m, self.latent_shape, rng, device)
                    outs.append(self(z).cpu().numpy())
                    zs.append(z.cpu().numpy())
        finally:
            self.train(was_training)
        out_shape = tuple(self.output_shape)
        X = (np.concatenate(outs) if outs else np.empty((0,) + out_shape)).astype(
            np.float32, copy=False)
        if return_latents:
            Z = (np.concatenate(zs) if zs else np.empty((0,) + self.latent_shape)).astype(
                np.float32, copy=False)
            return X, Z
        return X

    def sample_activations(self, n, random_state=None, *, batch_size=256, device="cpu",
                           return_outputs=True):
        """Penultimate activations (the final layer's input) of ``n`` samples.

        See :func:`flipad_sklearn.sample_activations`.

        Returns
        -------
        activations : ndarray of shape (n, n_activations), float32
        outputs : ndarray of shape (n, *output_shape), float32
            Only when ``return_outputs``.
        """
        return _sample_activations(self, n, self.latent_shape, layer=self.final_layer,
                                   batch_size=batch_size, device=device,
                                   random_state=random_state, return_outputs=return_outputs)


_REGISTRY = {}


def register(cls):
    _REGISTRY[cls.__name__] = cls
    return cls


def save_generator(generator, path):
    """Save a generator of this package: its configuration, weights and history.

    Parameters
    ----------
    generator : ImageGenerator or TabularGenerator
    path : str or path-like
        Written with :func:`torch.save`; read it back with
        :func:`load_generator` (``weights_only=True``, safe on untrusted files).
    """
    if type(generator).__name__ not in _REGISTRY:
        raise TypeError(f"Cannot save a {type(generator).__name__}: not a generator of "
                        "flipad_sklearn.generators.")
    state = {
        "class": type(generator).__name__,
        "config": dict(generator.config),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "history": {k: [float(x) for x in v] for k, v in generator.history.items()},
        "info": dict(generator.info),
    }
    torch.save(state, os.fspath(path))


def load_generator(path, device="cpu"):
    """Load a generator written by :func:`save_generator` (eval mode).

    The file is read with ``torch.load(weights_only=True)``: only tensors and
    plain containers, never arbitrary pickled code.
    """
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    cls = _REGISTRY.get(state.get("class"))
    if cls is None:
        raise ValueError(f"{os.fspath(path)!r} holds no generator of flipad_sklearn "
                         f"(class {state.get('class')!r}).")
    with preserved_global_rng():
        gen = cls(**state["config"])
    gen.load_state_dict(state["state_dict"])
    gen.history = {k: list(v) for k, v in state.get("history", {}).items()}
    gen.info = dict(state.get("info", {}))
    return gen.to(resolve_device(device)).eval()
