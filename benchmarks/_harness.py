"""The problems the inversion benchmarks share: final layers, their targets, timers.

One place for what several benchmarks build, so that they measure the same
thing: the paper's final layers (:func:`paper_layer`, with the weight scaling of
:func:`scaled_layer`), the outputs and anchor of ReLU'd Gaussian activations
(:func:`problem`), the best-of-``repeat`` timer and the process's peak memory.
The generator zoo is :mod:`benchmarks.train_zoo`, the attribution protocol
:mod:`benchmarks.attribution_protocol` and :mod:`benchmarks.attribution_methods`.
"""

import resource
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from flipad_sklearn import FinalLayerInverter

#: the paper's final layers: name -> (builder, activation shape, output activation,
#: alpha, the authors' FISTA step); ``side`` is the activation's spatial size
PAPER_LAYERS = {
    "dcgan": (lambda side: nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1),
              lambda side: (64, side, side), "tanh", 5e-4, 0.025, 32),
    "lsgan": (lambda side: nn.Conv2d(64, 3, 3, 1, 1),
              lambda side: (64, side, side), "tanh", 5e-4, 0.025, 64),
    "sd": (lambda side: nn.Conv2d(128, 3, 3, 1, 1),
           lambda side: (128, side, side), "identity", 1e-5, 0.01, 128),
}


def paper_layer(name, side=None):
    """One of :data:`PAPER_LAYERS` built after ``torch.manual_seed(0)``.

    Returns ``(layer, in_shape, activation, alpha, step)``.  The DCGAN layer
    keeps torch's default initialisation (``step * L`` is already 0.08 there,
    as in the paper); the others are scaled to ``step * L = 0.09``.
    """
    build, shape, activation, alpha, step, default_side = PAPER_LAYERS[name]
    side = default_side if side is None else side
    torch.manual_seed(0)
    layer, in_shape = build(side), shape(side)
    if name != "dcgan":
        layer = scaled_layer(layer, step, in_shape)
    return layer, in_shape, activation, alpha, step


def accuracy_auc(g, s):
    """``"acc / AUC"`` of decisions on G's samples ``g`` against another source's ``s``:
    the balanced accuracy of the verdicts (decision >= 0: G) and the ROC AUC."""
    auc = roc_auc_score(np.r_[np.ones(g.size), np.zeros(s.size)], np.r_[g, s])
    return f"{0.5 * (np.mean(g >= 0) + np.mean(s < 0)):.3f} / {auc:.3f}"


def peak_mb():
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_time(fn, repeat):
    """The shortest of ``repeat`` runs of ``fn`` (seconds) and its last value."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def scaled_layer(layer, step, in_shape):
    """Scale ``layer``'s weight so that ``step * L = 0.09`` (as on the DCGAN layer)."""
    probe = FinalLayerInverter(layer=layer, activation="identity", activation_shape=in_shape)
    x = np.zeros((1, int(np.prod(layer(torch.zeros((1,) + in_shape)).shape[1:]))))
    L = probe.fit(x).lipschitz_
    with torch.no_grad():
        layer.weight.mul_((0.09 / step / L) ** 0.5)
    return layer


def problem(layer, in_shape, n, activation, seed=0):
    """Outputs ``x`` of ``layer`` for ``n`` ReLU'd standard normal activations
    (through tanh when ``activation == "tanh"``) and their anchor, the mean
    activation over up to 200 more draws."""
    rng = np.random.default_rng(seed)
    n_anchor = int(min(200, max(4, 5e7 // np.prod(in_shape))))   # bounded memory
    anchor = np.mean([np.maximum(rng.normal(size=in_shape), 0) for _ in range(n_anchor)],
                     axis=0)
    h = np.maximum(rng.normal(size=(n,) + in_shape), 0)
    with torch.no_grad():
        pre = layer(torch.tensor(h, dtype=torch.float32))
        x = torch.tanh(pre) if activation == "tanh" else pre
    return x.numpy(), anchor
