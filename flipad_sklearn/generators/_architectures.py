"""Image generators of other architectures than the owner's, to train as labelled others.

A detector learns to reject what its labelled others show it.  Shadow copies
of ``G`` (:func:`~flipad_sklearn.generators.train_shadows`) teach it other
weights of ``G``'s own architecture; a generator whose upsampling differs
from ``G``'s leaves other traces in the image's spectrum, which a detector
that never saw such a generator may accept.  Trained on ``G``'s samples with
:func:`~flipad_sklearn.generators.train_shadows` (which takes any torch
module), these give the owner labelled others of two common upsampling
families besides the transposed convolutions of DCGAN-like generators:

* :class:`UpsampleConvGenerator`: interpolate x2, then a 3x3 convolution
  (nearest-neighbour or bilinear; "resize-convolution");
* :class:`PixelShuffleGenerator`: a 3x3 convolution to four times the
  channels, then ``PixelShuffle(2)`` (sub-pixel convolution).

Both map a latent vector through a linear layer to a small grid, double it
until it reaches the output's height and width, and end in a 3x3
``Conv2d`` and ``tanh`` (images in [-1, 1]).

:func:`final_layer_variant` keeps ``G``'s own architecture and changes only
how it upsamples last (nearest or bilinear interpolation then a 3x3
convolution, or sub-pixel convolution), in its final layer or, when that
one keeps the size, in the last layer before it that enlarges: a copy of a
user's generator that leaves the traces of another family, to train as a
shadow.
:func:`open_world_shadows` trains the whole set on ``G``'s samples.
"""

import copy
from numbers import Integral

import numpy as np
import torch
from torch import nn

from ..generator_utils import _call, _select_output, find_final_layer
from ._shadows import default_shadow_seeds, train_shadows

#: the final layers :func:`final_layer_variant` makes
VARIANTS = ("nearest", "bilinear", "pixel_shuffle")


def _doublings(height, width):
    """The number of x2 steps from the smallest grid of at least 3x3 to ``(height, width)``."""
    k = 0
    while (height % 2 ** (k + 1) == 0 and width % 2 ** (k + 1) == 0
           and min(height, width) // 2 ** (k + 1) >= 3):
        k += 1
    if k == 0:
        raise ValueError(f"output_shape needs an even height and width of at least 6 to be "
                         f"reached by doubling a grid, got {height}x{width}.")
    return k


def _check_shape(latent_dim, output_shape, base_channels):
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, Integral) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    if (isinstance(base_channels, bool) or not isinstance(base_channels, Integral)
            or base_channels < 1):
        raise ValueError(f"base_channels must be a positive integer, got {base_channels!r}.")
    shape = (tuple(output_shape) if isinstance(output_shape, (tuple, list, torch.Size))
             or getattr(output_shape, "ndim", None) == 1 else None)
    if (shape is None or len(shape) != 3
            or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0
                       for s in shape)):
        raise ValueError("output_shape must be (channels, height, width), three positive "
                         f"integers, got {output_shape!r}.")
    c, h, w = (int(s) for s in shape)
    k = _doublings(h, w)
    return c, k, (h // 2 ** k, w // 2 ** k)


class _DoublingGenerator(nn.Module):
    """Linear -> a grid of ``base_channels * 2**k`` channels, ``k`` doubling blocks, 3x3 conv."""

    def __init__(self, latent_dim, output_shape, base_channels):
        super().__init__()
        out_channels, k, grid = _check_shape(latent_dim, output_shape, base_channels)
        self.latent_dim = int(latent_dim)
        self.output_shape = tuple(int(s) for s in output_shape)
        self.base_channels = int(base_channels)
        self._grid = (base_channels * 2 ** k, *grid)
        self.fc = nn.Linear(self.latent_dim, self._grid[0] * grid[0] * grid[1])
        blocks, c = [], self._grid[0]
        for _ in range(k):
            blocks += [*self._doubling(c, c // 2), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, out_channels, 3, 1, 1)

    def forward(self, z):
        """Images of latents ``(n, latent_dim)`` or ``(n, latent_dim, 1, 1)``."""
        h = torch.relu(self.fc(z.reshape(z.shape[0], -1)))
        return torch.tanh(self.out(self.body(h.reshape(-1, *self._grid))))


class UpsampleConvGenerator(_DoublingGenerator):
    """Resize-convolution generator: (upsample x2, 3x3 conv, batch norm, ReLU) per doubling.

    Parameters
    ----------
    latent_dim : int, default=100
        Size of the latent vector; latents of shape ``(n, latent_dim)`` or
        ``(n, latent_dim, 1, 1)`` (DCGAN's) are both accepted.
    output_shape : tuple of int, default=(3, 64, 64)
        ``(channels, height, width)`` of the images; height and width are
        reached by doubling the smallest grid of at least 3x3 they share
        (4x4 for 64x64, 7x7 for 28x28).
    base_channels : int, default=32
        Channels after the last doubling; the first block has
        ``base_channels * 2**k`` for ``k`` doublings.
    mode : {"nearest", "bilinear"}, default="nearest"
        The interpolation of each upsampling.

    Examples
    --------
    Labelled others of another architecture, trained on ``G``'s samples::

        from flipad_sklearn.generators import UpsampleConvGenerator, train_shadows

        others = train_shadows(UpsampleConvGenerator(100, (3, 64, 64)), X_of_G,
                               seeds=[1], latent_shape=(100,), epochs=6, batch_size=32)
    """

    def __init__(self, latent_dim=100, output_shape=(3, 64, 64), base_channels=32,
                 mode="nearest"):
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}.")
        self.mode = mode
        super().__init__(latent_dim, output_shape, base_channels)

    def _doubling(self, c_in, c_out):
        return [nn.Upsample(scale_factor=2, mode=self.mode),
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]


class PixelShuffleGenerator(_DoublingGenerator):
    """Sub-pixel convolution generator: (3x3 conv to 4x channels, ``PixelShuffle(2)``, BN, ReLU).

    Each block computes the four phases of its output at the lower
    resolution and interleaves them, where :class:`UpsampleConvGenerator`
    repeats or interpolates pixels and convolves after.

    Parameters
    ----------
    latent_dim : int, default=100
        Size of the latent vector (``(n, latent_dim)`` or ``(n, latent_dim, 1, 1)``).
    output_shape : tuple of int, default=(3, 64, 64)
        ``(channels, height, width)``, as in :class:`UpsampleConvGenerator`.
    base_channels : int, default=32
        Channels after the last doubling.
    """

    def __init__(self, latent_dim=100, output_shape=(3, 64, 64), base_channels=32):
        super().__init__(latent_dim, output_shape, base_channels)

    def _doubling(self, c_in, c_out):
        return [nn.Conv2d(c_in, 4 * c_out, 3, 1, 1, bias=False), nn.PixelShuffle(2)]


def _called_modules(generator, example_input, output):
    """``(name, module, in_shape, out_shape)`` of every call of a leaf module on an image
    batch (4-D in and out), in the order of the forward pass."""
    calls, hooks = [], []

    def hook(module, args, out):
        x = args[0] if args else None
        if (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)
                and x.dim() == 4 and out.dim() == 4):
            calls.append((names[module], module, tuple(x.shape[1:]), tuple(out.shape[1:])))
    names = {}
    for name, module in generator.named_modules():
        if name and not any(True for _ in module.children()):
            names[module] = name
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            _select_output(_call(generator, example_input), output)
    finally:
        for handle in hooks:
            handle.remove()
    return calls


def final_layer_variant(generator, example_input, upsampling="nearest", *, output=None):
    """A copy of ``generator`` whose last upsampling is of another kind.

    The layer replaced is the final layer
    (:func:`~flipad_sklearn.find_final_layer`) when it enlarges its input by
    an integer factor ``s`` (a DCGAN's stride-2 transposed convolution:
    ``s = 2``); when it keeps the size instead (a final convolution at full
    resolution, as in resize-convolution generators and StyleGAN's toRGB),
    the modules called before it that enlarge an image to its resolution (an
    ``Upsample``, a transposed convolution, a ``PixelShuffle``; each of them
    where there are several, e.g. the main and the skip path of a residual
    block).  Mapping ``(C, H, W)`` to ``(C', s H, s W)``, each is
    replaced by ``Upsample(s, upsampling)`` and a 3x3 ``Conv2d`` from ``C``
    to ``C'`` channels (``"nearest"``, ``"bilinear"``; an ``Upsample``
    itself, which keeps the channels, by the new ``Upsample`` alone) or by a
    3x3 ``Conv2d`` to ``s**2 C'`` channels and ``PixelShuffle(s)``
    (``"pixel_shuffle"``), with the same input and output shapes; the rest
    of the generator, its activation included, is ``generator``'s.  When
    the last upsampling is already of that kind (a nearest ``Upsample``
    made nearest) the variant is ``generator``'s architecture: trained from
    another seed, a shadow copy.  A new layer starts from PyTorch's
    initialisation: train the copy (e.g.
    :func:`~flipad_sklearn.generators.train_shadows`, which re-initialises
    every layer from its seed) before using its samples as labelled others.
    (A pixel-shuffle final layer ends in a rearrangement of the
    convolution's output, which :func:`~flipad_sklearn.find_final_layer`
    does not take as a final layer: it is a shadow to draw samples from,
    not a ``G`` to invert.)

    Parameters
    ----------
    generator : torch.nn.Module
        Left unchanged.
    example_input : torch.Tensor, tuple or dict
        A batch of latents the generator accepts (as for
        :func:`~flipad_sklearn.find_final_layer`).
    upsampling : {"nearest", "bilinear", "pixel_shuffle"}, default="nearest"
    output : str, callable or None, default=None
        Which part of the output holds the samples (as for
        :func:`~flipad_sklearn.find_final_layer`).

    Returns
    -------
    variant : torch.nn.Module
        A deep copy of ``generator`` (in eval mode) with the new layer(s).

    Raises
    ------
    TypeError
        When ``generator`` is not a ``torch.nn.Module``.
    ValueError
        When ``upsampling`` is unknown; when the generator does not make
        images; when its final layer neither enlarges by an integer factor
        nor keeps the size; when it keeps the size and no module before it
        enlarges an image to that size (e.g. an upsampling written as a
        function call in ``forward``, which no module replaces); or when
        such a module is called more than once (replacing it would change
        every call).
    """
    if upsampling not in VARIANTS:
        raise ValueError(f"upsampling must be one of {VARIANTS}, got {upsampling!r}.")
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be a torch.nn.Module (its last upsampling is "
                        f"replaced in a copy), got {type(generator).__name__}.")
    # probed on the copy, in eval mode: the original's batch-norm statistics stay as they are
    variant = copy.deepcopy(generator).eval()
    final = find_final_layer(variant, example_input, output=output)
    with torch.no_grad():
        out_shape = tuple(_select_output(_call(variant, example_input), output).shape[1:])
    in_shape = tuple(final.activation_shape)
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise ValueError(f"The final layer {final.name!r} maps {in_shape} to {out_shape}: "
                         "final_layer_variant needs images, (C, H, W) to (C', s H, s W).")
    if _enlarges(in_shape, out_shape):
        targets = [(final.layer, in_shape, out_shape)]
    elif in_shape[1:] == out_shape[1:]:
        targets = _last_upsamplings(variant, example_input, output, final)
    else:
        raise ValueError(f"The final layer {final.name!r} maps {in_shape[1]}x{in_shape[2]} "
                         f"to {out_shape[1]}x{out_shape[2]}, neither an enlargement by an "
                         "integer factor >= 2 nor the same size: there is no upsampling to "
                         "change.")
    weight = next(final.layer.parameters(), None)
    for module, shape_in, shape_out in targets:
        layer = _upsampling_layer(module, shape_in, shape_out, upsampling)
        if weight is not None:                  # the generator's device and precision
            layer = layer.to(device=weight.device, dtype=weight.dtype)
        if module is variant:                   # the generator is its final layer
            return layer.eval()
        # every name of the module: one registered twice runs under either
        for name, m in variant.named_modules(remove_duplicate=False):
            if m is module:
                parent_name, _, child = name.rpartition(".")
                setattr(variant.get_submodule(parent_name), child, layer)
    return variant


def _last_upsamplings(variant, example_input, output, final):
    """``(module, in_shape, out_shape)`` of each module that enlarges an image to the size of
    a final layer working at full resolution, called before it."""
    called = _called_modules(variant, example_input, output)
    last_final = max((i for i, call in enumerate(called) if call[1] is final.layer),
                     default=len(called))
    size = tuple(final.activation_shape[1:])
    found, names = {}, {}
    for name, module, shape_in, shape_out in called[:last_final]:
        if _enlarges(shape_in, shape_out) and shape_out[1:] == size:
            found.setdefault(module, (module, shape_in, shape_out))
            names[module] = name
    if not found:
        raise ValueError(
            f"The final layer {final.name!r} works at full resolution "
            f"({size[0]}x{size[1]}), and no module before it enlarges an image to that "
            "size by an integer factor >= 2: there is no upsampling to change (an "
            "upsampling called as a function in forward is not a module).")
    for module in found:
        uses = sum(call[1] is module for call in called)
        if uses > 1:
            # one module doing several upsamplings: replacing it changes all of them
            raise ValueError(
                f"The last upsampling is done by module {names[module]!r}, which forward calls "
                f"{uses} times: replacing it would change every one of those calls, not "
                "the last upsampling alone. Give the last upsampling a module of its own.")
    return list(found.values())


def _enlarges(in_shape, out_shape):
    """Whether ``(C, H, W) -> (C', s H, s W)`` for an integer ``s >= 2``."""
    (h, w), (h_out, w_out) = in_shape[1:], out_shape[1:]
    scale = h_out // h
    return scale >= 2 and (h_out, w_out) == (scale * h, scale * w)


def _upsampling_layer(module, in_shape, out_shape, upsampling):
    """The new layer of :func:`final_layer_variant` in place of ``module``."""
    (c_in, h, _), c_out = in_shape, out_shape[0]
    scale = out_shape[1] // h
    if upsampling == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(c_in, c_out * scale ** 2, 3, 1, 1),
                             nn.PixelShuffle(scale))
    if isinstance(module, nn.Upsample) and c_in == c_out:
        # an interpolation in the body: another interpolation, and the layers after it
        # stay G's
        return nn.Upsample(scale_factor=scale, mode=upsampling)
    return nn.Sequential(nn.Upsample(scale_factor=scale, mode=upsampling),
                         nn.Conv2d(c_in, c_out, 3, 1, 1))


#: the shadows :func:`open_world_shadows` trains, in order: G's variants of
#: :func:`final_layer_variant` (named ``*_final`` also when the layer they change is the one
#: before a full-resolution final layer), then the two families
OPEN_WORLD_SHADOWS = ("nearest_final", "bilinear_final", "pixel_shuffle_final",
                      "upsample_conv", "pixel_shuffle")


def _open_world_models(generator, example_input, latent_dim, output=None):
    """The untrained architectures of :func:`open_world_shadows`, by name (its order), and
    the shape of G's images they make (to load saved shadows' weights into, too)."""
    variants = [final_layer_variant(generator, example_input, kind, output=output)
                for kind in VARIANTS]
    with torch.no_grad():       # a variant (a copy, in eval mode) makes G's shape
        made = tuple(_select_output(_call(variants[0], example_input), output).shape[1:])
    models = variants + [UpsampleConvGenerator(latent_dim, made),
                         PixelShuffleGenerator(latent_dim, made)]
    return dict(zip(OPEN_WORLD_SHADOWS, models)), made


def open_world_shadows(generator, X, example_input, *, latent_shape, seed=0, epochs=5,
                       batch_size=64, output=None, verbose=0, device="cpu"):
    """Train the open-world recipe's shadows of an image generator on ``X``.

    Five generators, each trained on ``X`` (``G``'s own samples, which only
    its owner can draw in any number, or its training data) by
    :func:`~flipad_sklearn.generators.train_shadows` from its own seed: ``G``
    with a nearest, a bilinear and a sub-pixel last upsampling
    (:func:`final_layer_variant`), and an
    :class:`UpsampleConvGenerator` and a :class:`PixelShuffleGenerator` of
    ``G``'s output shape and latent size.  Their samples, beside a
    competitor's, are the labelled others of
    :func:`~flipad_sklearn.make_open_world_union` (with
    ``immunise="published"``): on the published face DCGAN these shadows
    let the union reject generators whose final layers differ from every
    shadow's in a blind test (user guide, "Open world";
    ``benchmarks/results/bench_face_blind_recipe.md``).  For a ``G`` that
    upsamples by nearest-neighbour interpolation and a convolution (a
    resize-convolution generator), the nearest variant and the
    :class:`UpsampleConvGenerator` are of ``G``'s own kind, and no shadow
    has a transposed convolution; on such a ``G`` the recipe was measured
    far weaker (user guide, "A second owner";
    ``benchmarks/results/bench_face_second_owner.md``).

    Parameters
    ----------
    generator : torch.nn.Module
        ``G``, an unconditional image generator that upsamples by an
        integer factor in a module: its final layer, or a layer before a
        final layer at full resolution (left unchanged; see
        :func:`final_layer_variant`).
    X : ndarray of shape (n_samples, C, H, W)
        What the shadows learn to imitate.
    example_input : torch.Tensor
        A batch of latents ``G`` accepts (to find its final layer).
    latent_shape : int or tuple of int
        The shape of one latent code (the families take its product).
    seed : int, default=0
        Draws the shadows' seeds (:func:`default_shadow_seeds`).
    epochs, batch_size, output, verbose, device
        As in :func:`~flipad_sklearn.generators.train_shadows`.

    Returns
    -------
    shadows : dict {name: torch.nn.Module}
        Keys :data:`OPEN_WORLD_SHADOWS`; each trained, in eval mode, with
        ``history`` and ``info``.
    """
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"X must hold images (n, C, H, W), got shape {X.shape}.")
    latent_dim = int(np.prod(latent_shape))
    models, made = _open_world_models(generator, example_input, latent_dim, output)
    if X.shape[1:] != made:
        raise ValueError(f"X has images of shape {X.shape[1:]} but the generator makes "
                         f"{made}.")
    seeds = default_shadow_seeds(seed, len(models))
    out = {}
    for (name, model), shadow_seed in zip(models.items(), seeds):
        # the families take flat latents, the variants G's own
        shape = latent_shape if name.endswith("_final") else (latent_dim,)
        (out[name],) = train_shadows(model, X, seeds=[shadow_seed], latent_shape=shape,
                                     epochs=epochs, batch_size=batch_size,
                                     output=output if name.endswith("_final") else None,
                                     verbose=verbose, device=device)
    return out
