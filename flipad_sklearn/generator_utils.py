"""Helpers to take a torch generator apart: its final layer, output activation
and penultimate activations (for the anchor).

They work with ``nn.Sequential`` and with plain modules whose ``forward``
calls layers and functions such as ``torch.tanh``: the final layer is found
with forward hooks (the last Linear/Conv2d/ConvTranspose2d to run), and the
output activation by comparing the generator's output with tanh, sigmoid and
the identity of that layer's output.
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from ._device import resolve_device
from .linear_ops import SUPPORTED_LAYERS


@dataclass
class FinalLayer:
    """What :func:`find_final_layer` found.

    Attributes
    ----------
    layer : torch.nn.Module
        The final Linear / Conv2d / ConvTranspose2d module.
    name : str
        Its qualified name in the generator.
    activation : str
        ``"tanh"``, ``"sigmoid"`` or ``"identity"``.
    activation_shape : tuple of int
        Shape of one penultimate activation (the layer's input).
    """

    layer: nn.Module
    name: str
    activation: str
    activation_shape: tuple


_ACTIVATION_TESTS = (
    ("tanh", torch.tanh),
    ("sigmoid", torch.sigmoid),
    ("identity", lambda t: t),
)


def _latents(n, latent_shape, rng, device):
    # numpy's stream does not depend on how the draws are batched (torch's
    # CPU randn does, for batches under 16 values)
    z = rng.standard_normal((n,) + tuple(latent_shape), dtype=np.float32)
    return torch.from_numpy(z).to(device)


def find_final_layer(generator, example_input):
    """Find a generator's final linear layer and its output activation.

    Parameters
    ----------
    generator : torch.nn.Module
    example_input : torch.Tensor
        A batch of latent codes the generator accepts.

    Returns
    -------
    FinalLayer
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be a torch.nn.Module, got {type(generator).__name__}.")
    names = {m: n for n, m in generator.named_modules()}
    calls = []

    def hook(module, inputs, output):
        calls.append((module, inputs[0].detach(), output.detach()))

    handles = [m.register_forward_hook(hook) for m in generator.modules()
               if isinstance(m, SUPPORTED_LAYERS)]
    try:
        with torch.no_grad():
            out = generator(example_input)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError(
            "The generator ran no Linear, Conv2d or ConvTranspose2d module; "
            "FinalLayerInverter needs one of them as the final layer."
        )
    layer, inp, pre = calls[-1]
    out = out.detach()
    if out.shape != pre.shape:
        raise ValueError(
            f"The generator's output has shape {tuple(out.shape)} but its last linear "
            f"layer ({names.get(layer, '?')}) outputs {tuple(pre.shape)}: something "
            "other than an element-wise activation follows it."
        )
    scale = float(out.abs().max()) + 1e-12
    for name, fn in _ACTIVATION_TESTS:
        if float((fn(pre) - out).abs().max()) <= 1e-5 * max(scale, 1.0):
            return FinalLayer(layer, names.get(layer, ""), name, tuple(inp.shape[1:]))
    raise ValueError(
        "The generator's output is not tanh, sigmoid or the identity of its last "
        f"linear layer's ({names.get(layer, '?')}) output; pass the activation's "
        "inverse to FinalLayerInverter(activation=...) yourself."
    )


def sample_activations(generator, n_samples, latent_shape, *, layer=None, batch_size=256,
                       device="auto", random_state=None, return_outputs=True, verbose=0):
    """Sample a generator and record its penultimate activations.

    Parameters
    ----------
    generator : torch.nn.Module
    n_samples : int
    latent_shape : tuple of int
        Shape of one latent code; codes are standard normal, drawn from a
        local numpy generator so that they do not depend on ``batch_size``.
    layer : torch.nn.Module, default=None
        The final layer (found with :func:`find_final_layer` if None).
    batch_size : int, default=256
    device : {"auto", "cpu", "cuda"}, default="auto"
    random_state : int, RandomState or None
        Seeds a local torch generator (no global RNG is touched).
    return_outputs : bool, default=True
    verbose : int, default=0
        Progress bar when positive.

    Returns
    -------
    activations : ndarray of shape (n_samples, n_activations), float32
    outputs : ndarray of shape (n_samples, *output_shape), float32
        Only when ``return_outputs``.
    """
    acts, outs = [], []
    for a, o in _iter_batches(generator, n_samples, latent_shape, layer, batch_size,
                              device, random_state, verbose):
        acts.append(a.reshape(a.shape[0], -1).cpu().numpy())
        if return_outputs:
            outs.append(o.cpu().numpy())
    acts = np.concatenate(acts).astype(np.float32, copy=False)
    if return_outputs:
        return acts, np.concatenate(outs).astype(np.float32, copy=False)
    return acts


def mean_activation(generator, n_samples, latent_shape, *, layer=None, batch_size=256,
                    device="auto", random_state=None, verbose=0):
    """Mean penultimate activation over ``n_samples`` samples: FLIPAD's anchor.

    Memory stays at one batch.  Returns an array of the activation's shape
    (float64), ready for ``FinalLayerInverter(anchor=...)``.
    """
    total, count = None, 0
    for a, _ in _iter_batches(generator, n_samples, latent_shape, layer, batch_size,
                              device, random_state, verbose):
        s = a.to(torch.float64).sum(dim=0)
        total = s if total is None else total + s
        count += a.shape[0]
    return (total / count).cpu().numpy()


def _iter_batches(generator, n_samples, latent_shape, layer, batch_size, device,
                  random_state, verbose):
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
    dev = resolve_device(device)
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    gen = np.random.default_rng(int(seed))
    was_training = generator.training
    generator.eval()
    try:
        if layer is None:
            probe = _latents(2, latent_shape, np.random.default_rng(0),
                             next(generator.parameters()).device)
            layer = find_final_layer(generator, probe).layer
        original_device = next(generator.parameters()).device
        generator.to(dev)
        captured = {}

        def hook(module, inputs, output):
            captured["h"] = inputs[0].detach()

        handle = layer.register_forward_hook(hook)
        bar = None
        if verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_samples, desc="sampling activations", unit="sample")
        try:
            with torch.no_grad():
                for start in range(0, n_samples, batch_size):
                    n = min(batch_size, n_samples - start)
                    out = generator(_latents(n, latent_shape, gen, dev))
                    yield captured["h"], out.detach()
                    if bar is not None:
                        bar.update(n)
        finally:
            handle.remove()
            if bar is not None:
                bar.close()
            generator.to(original_device)
    finally:
        generator.train(was_training)
