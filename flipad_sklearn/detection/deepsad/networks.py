"""Bias-free networks for Deep SAD, and how to build, check and rebuild them.

Deep SAD needs networks without bias terms and with batch norm that has no
affine parameters: with a bias the network can map every input to the centre
(hypersphere collapse), and the loss would be minimised by a useless model.

Built-in networks are described by a small dict ("spec") so that a fitted
detector can be pickled as numpy arrays and rebuilt anywhere.
"""

import math

import numpy as np
import torch
from torch import nn

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


class MLP(nn.Module):
    """Fully connected bias-free network for flat features.

    ``Linear -> BatchNorm1d(affine=False) -> LeakyReLU`` per hidden layer,
    then a final ``Linear`` to ``rep_dim`` (as in the Deep SAD reference).
    """

    def __init__(self, n_features, hidden_sizes=(128, 64), rep_dim=32,
                 batch_norm=True, device=None):
        super().__init__()
        layers, d = [], n_features
        for h in hidden_sizes:
            layers.append(nn.Linear(d, h, bias=False, device=device))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h, eps=1e-4, affine=False,
                                             device=device))
            layers.append(nn.LeakyReLU())
            d = h
        layers.append(nn.Linear(d, rep_dim, bias=False, device=device))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-style bias-free conv net; flat input is reshaped to ``input_shape``.

    Per entry of ``conv_channels``: ``Conv2d(kernel_size, 'same' padding) ->
    BatchNorm2d(affine=False) -> LeakyReLU -> MaxPool2d(2)`` (the pooling is
    skipped once the map is smaller than 2x2), then a final ``Linear``.
    """

    def __init__(self, input_shape, conv_channels=(32, 64), kernel_size=5,
                 rep_dim=32, batch_norm=True, device=None):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        c, h, w = self.input_shape
        layers = []
        for ch in conv_channels:
            layers.append(nn.Conv2d(c, ch, kernel_size, padding=kernel_size // 2,
                                    bias=False, device=device))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch, eps=1e-4, affine=False,
                                             device=device))
            layers.append(nn.LeakyReLU())
            # An even kernel with padding k//2 grows the map by one pixel.
            h, w = h + 2 * (kernel_size // 2) - kernel_size + 1, w + 2 * (
                kernel_size // 2) - kernel_size + 1
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, rep_dim, bias=False, device=device)

    def forward(self, x):
        x = self.features(x.reshape(-1, *self.input_shape))
        return self.fc(x.flatten(1))


_BUILDERS = {"mlp": MLP, "lenet": LeNet}


def build_network(spec, generator, device):
    """Build a built-in network from its spec with weights drawn from ``generator``.

    The module is created on the ``meta`` device and initialised explicitly,
    so that the global torch RNG is never consumed.
    """
    net = _BUILDERS[spec["kind"]](**spec["kwargs"], device="meta")
    net = net.to_empty(device="cpu")
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            # torch's default initialisation, drawn from the local generator.
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return net.to(device)


def rebuild_network(spec, state_dict):
    """Rebuild a built-in network on the CPU from a numpy state dict."""
    net = _BUILDERS[spec["kind"]](**spec["kwargs"], device="meta")
    # compared on the meta device, before anything is allocated: a spec from a file
    # (hidden_sizes=(10**6,)) must not allocate more than its stored state holds
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    given = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    if expected != given:
        diff = sorted(k for k in set(expected) | set(given)
                      if expected.get(k) != given.get(k))[:3]
        raise ValueError(
            f"The stored state does not fit a {spec['kind']!r} network with "
            f"{spec['kwargs']}: " + ", ".join(
                f"{k}: stored {given.get(k)}, needed {expected.get(k)}" for k in diff) + ".")
    net = net.to_empty(device="cpu")
    dtype = next(iter(state_dict.values())).dtype if state_dict else None
    if dtype is not None and str(dtype) == "float64":
        net = net.double()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state_dict.items()})
    return net


def check_bias_free(net):
    """Raise a ValueError if ``net`` has bias terms or affine normalisation."""
    offenders = [name for name, _ in net.named_parameters()
                 if name.rsplit(".", 1)[-1] == "bias"]
    for name, m in net.named_modules():
        affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
        if isinstance(m, _NORM_TYPES) and affine:
            offenders.append(f"{name or type(m).__name__} (affine normalisation)")
    if offenders:
        raise ValueError(
            "Deep SAD needs a network without bias terms and without affine "
            "normalisation (they let it map every input to the centre: "
            "hypersphere collapse). Offending parameters/modules: "
            f"{sorted(set(offenders))}. Use bias=False and "
            "BatchNorm(affine=False)."
        )
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError("The network has no trainable parameters.")


def has_batch_norm(net):
    """True if ``net`` holds a batch-norm layer (training then drops batches of one)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
