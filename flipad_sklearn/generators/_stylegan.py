"""A small StyleGAN2-like generator for 32x32 images, CPU-trainable.

Mapping network ``z -> w``, a learned constant 4x4 input, modulated and
demodulated 3x3 convolutions, and toRGB skips at each resolution
(4, 8, 16, 32): ``img_r = up(img_{r/2}) + toRGB_r(s_r ⊙ h_r) + b_r``.  The
final operation is thus not ``sigma(W h + b)``:
:class:`~flipad_sklearn.SkipInverter` inverts it jointly (the skip image free).
No noise inputs, no style mixing, no path-length regulariser (small scale).
"""

from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import resolve_device
from ..generator_utils import _latents
from ._common import (
    GeneratorMixin, latent_seed, preserved_global_rng, progress, register, seed_to_int,
)
from ._image import _check_images, _Critic

#: output activations: identity (StyleGAN2's; the output is then exactly
#: linear in the final unknowns) or tanh
OUTPUTS = ("identity", "tanh")
#: upsamplings of the skip image (and of the feature maps)
SKIP_UPSAMPLINGS = ("nearest", "bilinear")


def _up(x, mode):
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class _ModConv(nn.Module):
    """Modulated 3x3 convolution with demodulation (StyleGAN2), then LeakyReLU.

    ``weight'_{o,i} = weight_{o,i} s_i / sqrt(sum_{i,k} (weight_{o,i,k} s_i)^2 + 1e-8)``,
    run as StyleGAN2's unfused path: scale the input by ``s``, convolve with
    the shared weight, scale the output by the demodulation coefficients
    (equal, and far faster on CPU than one grouped convolution per sample).
    """

    def __init__(self, c_in, c_out, w_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.affine = nn.Linear(w_dim, c_in)

    def forward(self, h, w):
        s = self.affine(w)                                       # (B, c_in)
        demod = torch.rsqrt((s * s) @ self.weight.pow(2).sum(dim=(2, 3)).T + 1e-8)
        out = F.conv2d(h * s[:, :, None, None], self.weight, padding=1)
        out = out * demod[:, :, None, None] + self.bias[None, :, None, None]
        return F.leaky_relu(out, 0.2)


class _ToRGB(nn.Module):
    """toRGB: a style-modulated 1x1 convolution, no demodulation.

    ``conv`` is a plain ``nn.Conv2d`` applied to ``u = s ⊙ h``: the final
    layer that the inversion sees, with ``u`` its input.
    """

    def __init__(self, c_in, channels, w_dim):
        super().__init__()
        self.affine = nn.Linear(w_dim, c_in)
        self.conv = nn.Conv2d(c_in, channels, 1)

    def forward(self, h, w):
        return self.conv(self.affine(w)[:, :, None, None] * h)


@register
class StyleGANGenerator(GeneratorMixin, nn.Module):
    """A small StyleGAN2-like generator for 32x32 images.

    ``z`` (``latent_dim``, standard normal) -> normalised -> mapping network
    (``n_mapping`` x [Linear, LeakyReLU]) -> ``w``.  Synthesis: a learned
    constant ``(widths[0], 4, 4)``; at 4x4 one modulated conv, at 8, 16 and
    32 an upsampling of the features and two modulated convs; at every
    resolution a toRGB whose image is added to the upsampled image of the
    previous one.  The final operation, at 32x32::

        x = out(up(img_16) + W (s ⊙ h) + b)

    ``W`` and ``b``: :attr:`final_layer` (a 1x1 ``nn.Conv2d``), ``s``: the
    last toRGB's style, ``h``: the last modulated conv's output.  The final
    layer's input (what :func:`~flipad_sklearn.sample_activations` hooks) is
    ``u = s ⊙ h``.

    Parameters
    ----------
    channels : int, default=1
    latent_dim : int, default=64
        Dimension of ``z`` and ``w``.
    widths : tuple of 4 int, default=(32, 32, 16, 8)
        Feature channels at 4, 8, 16 and 32 pixels.
    n_mapping : int, default=2
        Layers of the mapping network.
    skip_upsample : {"nearest", "bilinear"}, default="nearest"
        2x upsampling of the skip images and the feature maps.
    output : {"identity", "tanh"}, default="identity"
        Output activation.  ``"identity"`` (StyleGAN2's): samples are not
        clamped into [-1, 1] and are exactly linear in ``u`` and the skip.

    Attributes
    ----------
    history : dict of lists
        Losses recorded by :func:`train_stylegan`.
    info : dict
        How it was trained.
    """

    image_size = 32

    def __init__(self, channels=1, latent_dim=64, widths=(32, 32, 16, 8), n_mapping=2,
                 skip_upsample="nearest", output="identity"):
        super().__init__()
        for name, v in (("channels", channels), ("latent_dim", latent_dim),
                        ("n_mapping", n_mapping)):
            if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        widths = tuple(widths)
        if len(widths) != 4 or not all(isinstance(c, Integral) and c >= 1 for c in widths):
            raise ValueError(f"widths must be 4 positive integers (channels at 4, 8, 16 "
                             f"and 32 pixels), got {widths!r}.")
        if skip_upsample not in SKIP_UPSAMPLINGS:
            raise ValueError(f"skip_upsample must be one of {SKIP_UPSAMPLINGS}, got "
                             f"{skip_upsample!r}.")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        self.channels, self.latent_dim = int(channels), int(latent_dim)
        self.widths = tuple(int(c) for c in widths)
        self.n_mapping, self.skip_upsample, self.output = int(n_mapping), skip_upsample, output
        d = self.latent_dim
        mapping = []
        for _ in range(self.n_mapping):
            mapping += [nn.Linear(d, d), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*mapping)
        self.const = nn.Parameter(torch.ones(1, widths[0], 4, 4))
        self.convs = nn.ModuleList([_ModConv(widths[0], widths[0], d)])
        self.to_rgbs = nn.ModuleList([_ToRGB(widths[0], channels, d)])
        for c_prev, c in zip(widths[:-1], widths[1:]):
            self.convs.extend([_ModConv(c_prev, c, d), _ModConv(c, c, d)])
            self.to_rgbs.append(_ToRGB(c, channels, d))
        self.history = {}
        self.info = {}

    @property
    def config(self):
        """Constructor arguments (rebuild with ``StyleGANGenerator(**config)``)."""
        return {"channels": self.channels, "latent_dim": self.latent_dim,
                "widths": list(self.widths), "n_mapping": self.n_mapping,
                "skip_upsample": self.skip_upsample, "output": self.output}

    @property
    def output_shape(self):
        """Shape of one image ``(C, 32, 32)``."""
        return (self.channels, 32, 32)

    @property
    def activation_shape(self):
        """Shape of ``u``, the final layer's input: ``(widths[-1], 32, 32)``."""
        return (self.widths[-1], 32, 32)

    @property
    def _final(self):
        return self.to_rgbs[-1].conv

    @property
    def kind(self):
        return "stylegan2"

    def _reset_parameters(self, gen):
        """Initialise from the local generator ``gen`` (StyleGAN2's scales, without
        the equalised learning rate): mapping and affine maps ``N(0, 1/in)``
        with affine biases 1 (styles near 1); conv weights ``N(0, 1)`` (the
        demodulation normalises them); toRGB ``N(0, 1/C_in)``."""
        with torch.no_grad():
            for m in self.mapping:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, 1.0 / np.sqrt(m.in_features), generator=gen)
                    m.bias.zero_()
            self.const.normal_(0.0, 1.0, generator=gen)
            for block in list(self.convs) + list(self.to_rgbs):
                block.affine.weight.normal_(0.0, 1.0 / np.sqrt(self.latent_dim), generator=gen)
                block.affine.bias.fill_(1.0)
            for conv in self.convs:
                conv.weight.normal_(0.0, 1.0, generator=gen)
                conv.bias.zero_()
            for rgb in self.to_rgbs:
                rgb.conv.weight.normal_(0.0, 1.0 / np.sqrt(rgb.conv.in_channels), generator=gen)
                rgb.conv.bias.zero_()

    def map(self, z):
        """``w`` from latent codes ``z`` ``(n, latent_dim)``."""
        z = z.reshape(z.shape[0], self.latent_dim)
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.mapping(z)

    def _synthesis(self, w):
        """``(img_prev upsampled, h, to_rgb)`` at 32x32, and the 32x32 image."""
        h = self.const.expand(w.shape[0], -1, -1, -1)
        h = self.convs[0](h, w)
        img = self.to_rgbs[0](h, w)
        for r in range(1, 4):
            h = _up(h, self.skip_upsample)
            h = self.convs[2 * r](self.convs[2 * r - 1](h, w), w)
            img = _up(img, self.skip_upsample) + self.to_rgbs[r](h, w)
        return img

    def forward(self, z):
        """Images ``(n, C, 32, 32)`` from latent codes ``(n, latent_dim)``."""
        img = self._synthesis(self.map(z))
        return torch.tanh(img) if self.output == "tanh" else img

    def final_operation(self):
        """The pieces of the final operation, for the inversion and for tests.

        Returns
        -------
        pieces : dict
            ``"weight"`` (``W``, ndarray ``(C, widths[-1], 1, 1)``), ``"bias"``
            (``b``, ``(C,)``), ``"upsample"`` (the skip's upsampling, a name
            :class:`~flipad_sklearn.SkipInverter` takes),
            ``"activation"`` (the output activation's name),
            ``"activation_shape"`` (of ``u``) and ``"skip_shape"``
            (``(C, 16, 16)``).
        """
        conv = self._final
        return {"weight": conv.weight.detach().cpu().numpy().astype(np.float64),
                "bias": conv.bias.detach().cpu().numpy().astype(np.float64),
                "upsample": self.skip_upsample, "activation": self.output,
                "activation_shape": self.activation_shape,
                "skip_shape": (self.channels, 16, 16)}

    def sample_final_unknowns(self, n, random_state=None, *, batch_size=256):
        """``u = s ⊙ h``, the skip image and the output of ``n`` samples.

        The same latent codes as ``sample(n, random_state)``.

        Returns
        -------
        u : ndarray of shape (n, widths[-1]*32*32), float32
        skip : ndarray of shape (n, C*16*16), float32
            The image of resolution 16 (before its upsampling).
        X : ndarray of shape (n, C, 32, 32), float32
            ``out(up(skip) + W u + b)``.
        """
        rng = np.random.default_rng(latent_seed(random_state))
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        us, skips, xs = [], [], []
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    m = min(batch_size, n - start)
                    w = self.map(_latents(m, self.latent_shape, rng, device))
                    h = self.const.expand(m, -1, -1, -1)
                    h = self.convs[0](h, w)
                    img = self.to_rgbs[0](h, w)
                    for r in range(1, 4):
                        h = _up(h, self.skip_upsample)
                        h = self.convs[2 * r](self.convs[2 * r - 1](h, w), w)
                        if r < 3:
                            img = _up(img, self.skip_upsample) + self.to_rgbs[r](h, w)
                    u = self.to_rgbs[3].affine(w)[:, :, None, None] * h
                    x = _up(img, self.skip_upsample) + self._final(u)
                    x = torch.tanh(x) if self.output == "tanh" else x
                    us.append(u.reshape(m, -1).cpu().numpy())
                    skips.append(img.reshape(m, -1).cpu().numpy())
                    xs.append(x.cpu().numpy())
        finally:
            self.train(was_training)
        cat = (lambda parts, k: np.concatenate(parts).astype(np.float32) if parts
               else np.empty((0, k), np.float32))
        return (cat(us, int(np.prod(self.activation_shape))),
                cat(skips, self.channels * 256),
                np.concatenate(xs).astype(np.float32) if xs
                else np.empty((0,) + self.output_shape, np.float32))


def train_stylegan(X, epochs=5, seed=0, batch_size=64, verbose=0, *, latent_dim=64,
                   widths=(32, 32, 16, 8), n_mapping=2, skip_upsample="nearest",
                   output="identity", ndf=32, lr=2e-3, mapping_lr_mul=0.01,
                   r1_weight=1.0, device="cpu"):
    """Train the small StyleGAN2-like generator with the non-saturating loss.

    Deterministic for a given ``seed`` on a given device and thread count
    (weights, batches and latent codes from a local ``torch.Generator``; the
    global RNG is left as it was).  Discriminator: the zoo's convolutional
    one with batch norm (:func:`train_gan`'s DCGAN critic); an R1 penalty on
    real images every 4 steps; Adam with betas (0, 0.99) as in StyleGAN2, the
    mapping network at ``lr * mapping_lr_mul``.

    Parameters
    ----------
    X : ndarray of shape (n, C, 32, 32)
        Training images in [-1, 1] (MNIST: ``load_mnist_subset(pad_to=32)``).
    epochs : int, default=5
    seed : int or RandomState, default=0
    batch_size : int, default=64
    verbose : int, default=0
    latent_dim, widths, n_mapping, skip_upsample, output :
        The generator (see :class:`StyleGANGenerator`).
    ndf : int, default=32
        Width of the discriminator.
    lr : float, default=2e-3
    mapping_lr_mul : float, default=0.01
    r1_weight : float, default=1.0
        Weight of the R1 gradient penalty (0: none).
    device : {"cpu", "cuda", "auto"}, default="cpu"

    Returns
    -------
    generator : StyleGANGenerator
        In eval mode, on the CPU, with ``history`` (losses) and ``info``
        (the recipe; ``info["kind"] == "stylegan2"``).
    """
    X = _check_images(X)
    if X.shape[2] != 32:
        raise ValueError(f"The StyleGAN-like generator makes 32x32 images; X has "
                         f"{X.shape[2]}x{X.shape[3]} (pad MNIST with "
                         "load_mnist_subset(pad_to=32)).")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    seed = seed_to_int(seed)
    dev = resolve_device(device)
    n, c = X.shape[:2]
    gen = torch.Generator().manual_seed(seed)
    with preserved_global_rng():
        G = StyleGANGenerator(c, latent_dim, widths, n_mapping, skip_upsample, output)
        D = _Critic(32, c, ndf, batch_norm=True)
    G._reset_parameters(gen)
    with torch.no_grad():
        for m in D.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, 0.02, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02, generator=gen)
                m.bias.zero_()
    G.to(dev).train()
    D.to(dev).train()
    lr = float(lr)
    opt_g = torch.optim.Adam(
        [{"params": [p for k, p in G.named_parameters() if not k.startswith("mapping")]},
         {"params": G.mapping.parameters(), "lr": lr * mapping_lr_mul}],
        lr=lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.99))
    data = torch.from_numpy(X).to(dev)
    bs = min(batch_size, n)
    n_batches = n // bs
    history = {"d_loss": [], "g_loss": [], "epoch_d_loss": [], "epoch_g_loss": []}
    bar = progress(epochs * n_batches, "training stylegan2", verbose)
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
                with torch.no_grad():
                    fake = G(noise(m))
                r1 = r1_weight > 0 and step % 4 == 0
                real_in = real.detach().requires_grad_(r1)
                d_real, d_fake = D(real_in), D(fake)
                d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                if r1:
                    (grad,) = torch.autograd.grad(d_real.sum(), real_in, create_graph=True)
                    # lazy regularisation: every 4 steps, weighted by 4
                    d_loss = d_loss + 4 * 0.5 * r1_weight * grad.pow(2).sum(dim=(1, 2, 3)).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_epoch.append(float(d_loss.detach()))
                history["d_loss"].append(d_epoch[-1])
                g_loss = F.softplus(-D(G(noise(m)))).mean()
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                g_epoch.append(float(g_loss.detach()))
                history["g_loss"].append(g_epoch[-1])
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(d_loss=f"{d_epoch[-1]:.3f}", g_loss=f"{g_epoch[-1]:.3f}")
            history["epoch_d_loss"].append(float(np.mean(d_epoch)) if d_epoch else float("nan"))
            history["epoch_g_loss"].append(float(np.mean(g_epoch)) if g_epoch else float("nan"))
    finally:
        if bar is not None:
            bar.close()
    G.to("cpu").eval()
    G.history = history
    G.info = {"kind": "stylegan2", "seed": seed, "epochs": int(epochs),
              "batch_size": int(batch_size), "n_train": int(n), "lr": lr, "ndf": int(ndf),
              "mapping_lr_mul": float(mapping_lr_mul), "r1_weight": float(r1_weight)}
    return G
