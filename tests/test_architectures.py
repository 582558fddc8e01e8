"""Generators of other upsampling families, to train on G's samples as labelled others."""

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import find_final_layer
from flipad_sklearn.generators import (
    PixelShuffleGenerator, UpsampleConvGenerator, train_shadows,
)

CLASSES = [UpsampleConvGenerator, PixelShuffleGenerator,
           lambda *a, **k: UpsampleConvGenerator(*a, mode="bilinear", **k)]


@pytest.mark.parametrize("make", CLASSES)
@pytest.mark.parametrize("shape, grid, doublings", [
    ((1, 28, 28), (7, 7), 2), ((3, 32, 32), (4, 4), 3), ((3, 64, 64), (4, 4), 4),
    ((2, 48, 96), (3, 6), 4), ((1, 6, 6), (3, 3), 1)])
def test_output_shape_is_reached_by_doubling_the_smallest_grid(make, shape, grid, doublings):
    G = make(16, shape, base_channels=4)
    first = 4 * 2 ** doublings
    # the linear layer fills the smallest grid of at least 3x3 from which doubling
    # reaches the output, with base_channels * 2**doublings channels
    assert G.fc.weight.shape == (first * grid[0] * grid[1], 16)
    assert G.out.in_channels == 4 and G.out.out_channels == shape[0]
    z = torch.randn(5, 16)
    with torch.no_grad():
        x = G(z)
        assert x.shape == (5, *shape)
        assert torch.equal(x, G(z.reshape(5, 16, 1, 1)))    # DCGAN-shaped latents too
    assert float(x.abs().max()) <= 1.0


def test_the_64x64_layouts_are_those_of_the_face_benchmarks():
    """The face benchmarks' cached weights load: 512 channels on a 4x4 grid, 32 at the end."""
    for G in (UpsampleConvGenerator(), PixelShuffleGenerator()):
        shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
        assert shapes["fc.weight"] == (512 * 16, 100)
        assert shapes["out.weight"] == (3, 32, 3, 3)
    ups = [m for m in UpsampleConvGenerator().body if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(m.mode == "nearest" for m in ups)
    assert sum(isinstance(m, nn.PixelShuffle) for m in PixelShuffleGenerator().body) == 4


def test_nearest_upsampling_repeats_pixels_before_the_last_convolution():
    """What makes the family: the input of ``out`` is constant on 2x2 blocks before each conv.

    With the last block's convolution replaced by the identity the activations
    that reach ``out`` repeat every value over a 2x2 block (nearest) and do not
    (bilinear, pixel shuffle)."""
    z = torch.randn(3, 8)
    for G, blocky in [(UpsampleConvGenerator(8, (1, 16, 16), 4), True),
                      (UpsampleConvGenerator(8, (1, 16, 16), 4, mode="bilinear"), False)]:
        G.eval()
        up = G.body[-4]
        assert isinstance(up, nn.Upsample)
        with torch.no_grad():
            h = G.body[:-4](torch.relu(G.fc(z)).reshape(-1, *G._grid))
            u = up(h)
        same = torch.equal(u[..., ::2, ::2], u[..., 1::2, 1::2])
        assert same is blocky


@pytest.mark.parametrize("make", CLASSES)
def test_final_layer_and_shadow_training(make):
    """FLIPAD finds the final convolution; train_shadows trains copies towards X."""
    G = make(8, (1, 16, 16), base_channels=4).eval()
    final = find_final_layer(G, torch.randn(4, 8))
    assert final.layer is G.out and final.activation == "tanh"
    X = np.full((128, 1, 16, 16), 0.6, dtype=np.float32)
    X += np.random.default_rng(0).normal(0, 0.05, X.shape).astype(np.float32)
    (S,) = train_shadows(G, X, seeds=[3], latent_shape=(8,), epochs=25, batch_size=32)
    assert type(S) is type(G) and not S.training
    (S0,) = train_shadows(G, X, seeds=[3], latent_shape=(8,), epochs=1, batch_size=128)
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err, err0 = (float(((M(z) - 0.6) ** 2).mean()) for M in (S, S0))
    assert err < 0.5 * err0, (err, err0)


@pytest.mark.parametrize("kwargs, match", [
    ({"output_shape": (1, 7, 7)}, "even height and width"),
    ({"output_shape": (1, 4, 4)}, "at least 6"),
    ({"output_shape": (1, 28)}, "output_shape must be"),
    ({"output_shape": (0, 8, 8)}, "output_shape must be"),
    ({"output_shape": (1, 8.0, 8)}, "output_shape must be"),
    ({"output_shape": "64"}, "output_shape must be"),
    ({"output_shape": (1, True, 8)}, "output_shape must be"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"latent_dim": True}, "latent_dim"),
    ({"base_channels": 0}, "base_channels"),
    ({"base_channels": False}, "base_channels"),
])
@pytest.mark.parametrize("cls", [UpsampleConvGenerator, PixelShuffleGenerator])
def test_bad_shapes_are_refused_by_name(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="mode must be"):
        UpsampleConvGenerator(mode="bicubic")


class _DCGANLike(nn.Module):
    """A user's generator: latent 8 -> 4x4 -> 8x8 by a stride-2 transposed conv, tanh."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (16, 4, 4)))
        self.final = nn.ConvTranspose2d(16, 2, 4, 2, 1)

    def forward(self, z):
        return torch.tanh(self.final(self.body(z)))


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear", "pixel_shuffle"])
def test_final_layer_variant_swaps_only_the_final_layer(upsampling):
    from flipad_sklearn.generators import final_layer_variant

    G = _DCGANLike().eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    V = final_layer_variant(G, z, upsampling)
    for k, v in G.state_dict().items():                       # G untouched
        assert torch.equal(v, before[k]), k
    assert type(G.final) is nn.ConvTranspose2d
    with torch.no_grad():
        x = V(z)
    assert x.shape == (5, 2, 8, 8) and float(x.abs().max()) <= 1     # G's activation kept
    assert not V.training
    # the body is G's, the final layer a 3x3 convolution after (or before) the upsampling
    for k, v in G.body.state_dict().items():
        assert torch.equal(v, V.body.state_dict()[k]), k
    kinds = [type(m).__name__ for m in V.final]
    if upsampling != "pixel_shuffle":       # a pixel shuffle after the conv is no activation
        final = find_final_layer(V, z)
        assert final.name == "final.1" and final.layer.kernel_size == (3, 3)
    assert kinds == (["Conv2d", "PixelShuffle"] if upsampling == "pixel_shuffle"
                     else ["Upsample", "Conv2d"])
    if upsampling == "nearest":
        # what the family does: the final convolution sees every value repeated 2x2
        with torch.no_grad():
            u = V.final[0](V.body(z))
        assert torch.equal(u[..., ::2, ::2], u[..., 1::2, 1::2])
    (S,) = train_shadows(V, np.zeros((64, 2, 8, 8), np.float32) + 0.3, seeds=[1],
                         latent_shape=(8,), epochs=1, batch_size=32)
    assert type(S) is type(V)


def test_final_layer_variant_refuses_what_it_cannot_change():
    from flipad_sklearn.generators import final_layer_variant

    z = torch.randn(3, 8)
    with pytest.raises(ValueError, match="upsampling must be one of"):
        final_layer_variant(_DCGANLike(), z, "bicubic")
    same_size = nn.Sequential(nn.Linear(8, 16 * 4 * 4), nn.Unflatten(1, (16, 4, 4)),
                              nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh())
    with pytest.raises(ValueError, match="no upsampling to change"):
        final_layer_variant(same_size, z)
    rows = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="needs images"):
        final_layer_variant(rows, z)


def test_numpy_and_torch_shapes_are_accepted():
    for shape in (np.array([1, 8, 8]), torch.Size([1, 8, 8]), [1, 8, 8]):
        assert UpsampleConvGenerator(4, shape, 2)(torch.zeros(2, 4)).shape == (2, 1, 8, 8)


def test_final_layer_variant_leaves_a_training_generator_alone():
    """Probing runs the generator: on a copy in eval mode, so G's batch-norm statistics
    and mode stay as they were (the docstring's "left unchanged")."""
    from flipad_sklearn.generators import final_layer_variant

    G = nn.Sequential(nn.Linear(8, 16 * 4 * 4), nn.Unflatten(1, (16, 4, 4)), nn.BatchNorm2d(16),
                      nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh())
    G.train()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    final_layer_variant(G, torch.randn(6, 8))
    assert G.training
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_final_layer_variant_of_a_bare_layer_and_of_a_double_generator():
    from flipad_sklearn.generators import final_layer_variant

    layer = nn.ConvTranspose2d(4, 3, 4, 2, 1)
    x = torch.randn(2, 4, 5, 5)
    V = final_layer_variant(layer, x)                   # the generator is its final layer
    assert V is not layer and V(x).shape == (2, 3, 10, 10)
    assert [type(m).__name__ for m in V] == ["Upsample", "Conv2d"]
    G = _DCGANLike().double()
    z = torch.randn(3, 8, dtype=torch.float64)
    V = final_layer_variant(G, z, "pixel_shuffle")      # the new layer in G's precision
    assert V(z).dtype == torch.float64 and V(z).shape == (3, 2, 8, 8)


class _RefineLast(nn.Module):
    """A final 3x3 conv at full resolution after a transposed conv (no module upsamples
    in the final layer)."""

    def __init__(self, functional=False):
        super().__init__()
        self.functional = functional
        self.body = nn.Sequential(nn.Linear(8, 16 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (16, 4, 4)))
        self.up = nn.Conv2d(16, 6, 3, 1, 1) if functional else nn.ConvTranspose2d(16, 6, 4, 2, 1)
        self.out = nn.Conv2d(6, 2, 3, 1, 1)

    def forward(self, z):
        h = self.up(self.body(z))
        if self.functional:             # an upsampling no module does
            h = nn.functional.interpolate(h, scale_factor=2)
        return torch.tanh(self.out(torch.relu(h)))


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear", "pixel_shuffle"])
def test_final_layer_variant_changes_the_last_upsampling_before_a_full_size_final_layer(
        upsampling):
    """Resize-convolution generators (and StyleGAN's toRGB) end in a convolution at full
    resolution: the variant changes the last layer before it that enlarges."""
    from flipad_sklearn.generators import final_layer_variant

    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    G = UpsampleConvGenerator(8, (2, 16, 16), 4).eval()        # two nearest upsamplings
    V = final_layer_variant(G, z, upsampling)
    ups = [i for i, m in enumerate(G.body) if isinstance(m, nn.Upsample)]
    assert len(ups) == 2
    first, last = ups
    assert V.body[first].mode == "nearest"                     # only the last one changes
    if upsampling == "pixel_shuffle":
        assert [type(m).__name__ for m in V.body[last]] == ["Conv2d", "PixelShuffle"]
        assert V.body[last][0].in_channels == 8 and V.body[last][0].out_channels == 32
    else:
        # an interpolation replaced by an interpolation: the layers after it stay G's
        assert type(V.body[last]) is nn.Upsample and V.body[last].mode == upsampling
        assert [type(m) for m in V.modules()] == [type(m) for m in G.modules()]
    for k, v in G.out.state_dict().items():                    # the final layer is G's
        assert torch.equal(v, V.out.state_dict()[k]), k
    with torch.no_grad():
        assert V(z).shape == G(z).shape == (4, 2, 16, 16)
    assert type(G.body[last]) is nn.Upsample and G.body[last].mode == "nearest"

    R = _RefineLast().eval()                                   # a transposed conv before
    V = final_layer_variant(R, z, upsampling)
    kinds = [type(m).__name__ for m in V.up]
    assert kinds == (["Conv2d", "PixelShuffle"] if upsampling == "pixel_shuffle"
                     else ["Upsample", "Conv2d"])
    assert V.up[-1 if upsampling != "pixel_shuffle" else 0].in_channels == 16
    with torch.no_grad():
        assert V(z).shape == R(z).shape == (4, 2, 8, 8)
    assert find_final_layer(V, z).name == "out"

    S = PixelShuffleGenerator(8, (2, 8, 8), 4).eval()          # a PixelShuffle before
    V = final_layer_variant(S, z, upsampling)
    last = [i for i, m in enumerate(S.body) if isinstance(m, nn.PixelShuffle)][-1]
    with torch.no_grad():
        assert V(z).shape == S(z).shape == (4, 2, 8, 8)
    assert type(V.body[last]) is nn.Sequential


class _SharedUpsample(nn.Module):
    """One ``Upsample`` module called for both doublings."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4 * 2 * 2)
        self.up = nn.Upsample(scale_factor=2)
        self.mid = nn.Conv2d(4, 4, 3, 1, 1)
        self.out = nn.Conv2d(4, 1, 3, 1, 1)

    def forward(self, z):
        h = self.fc(z).reshape(-1, 4, 2, 2)
        return torch.tanh(self.out(self.up(torch.relu(self.mid(self.up(h))))))


def test_final_layer_variant_refuses_an_upsampling_no_module_does():
    from flipad_sklearn.generators import final_layer_variant

    with pytest.raises(ValueError, match="no module before it enlarges.*function"):
        final_layer_variant(_RefineLast(functional=True), torch.randn(3, 8))
    # replacing a module forward calls twice would change both upsamplings
    with pytest.raises(ValueError, match="module 'up', which forward calls 2 times"):
        final_layer_variant(_SharedUpsample(), torch.randn(3, 8), "bilinear")


class _Odd(nn.Module):
    """Review cases of final_layer_variant's second path (one module per case)."""

    def __init__(self, case):
        super().__init__()
        self.case = case
        self.fc = nn.Linear(8, 4 * 4 * 4)
        self.up = nn.Upsample(scale_factor=2)
        self.mid = nn.Conv2d(4, 4, 3, 1, 1)
        if case == "odd_final":         # 8x8 -> 15x15: the final layer does not double
            self.final = nn.ConvTranspose2d(4, 1, 3, 2, 1)
        elif case == "projection":      # 1x1 -> 4x4 projection, then a functional x2
            self.proj = nn.ConvTranspose2d(8, 4, 4, 1, 0)
        elif case == "aux":             # an auxiliary head upsampled after the image
            self.aux_up = nn.Upsample(scale_factor=4)
        elif case == "residual":        # main and skip paths each upsample to full size
            self.skip_up = nn.Upsample(scale_factor=2)
        elif case == "two_names":       # the last upsampling registered under two names
            self.body = nn.Sequential(self.up, nn.Conv2d(4, 4, 3, 1, 1))
        self.out = nn.Conv2d(4, 1, 3, 1, 1)

    def forward(self, z):
        if self.case == "projection":
            h = nn.functional.interpolate(self.proj(z.reshape(-1, 8, 1, 1)), scale_factor=2)
            return torch.tanh(self.out(h))
        h = self.fc(z).reshape(-1, 4, 4, 4)
        if self.case == "odd_final":
            return torch.tanh(self.final(self.mid(self.up(h))))
        if self.case == "two_names":
            return torch.tanh(self.out(self.body(h)))
        x = torch.tanh(self.out(self.mid(self.up(h))
                                + (self.skip_up(h) if self.case == "residual" else 0)))
        if self.case == "aux":
            return {"image": x, "mask": torch.sigmoid(self.aux_up(h[:, :1]))}
        return x


def test_final_layer_variant_changes_what_feeds_the_final_layer_only():
    """A hostile review's cases: the second path replaces the modules that enlarge an image
    to the final layer's size before it, every one of them, under every name, and
    nothing when the final layer neither doubles nor keeps the size."""
    from flipad_sklearn.generators import final_layer_variant

    z = torch.randn(3, 8)
    with pytest.raises(ValueError, match="maps 8x8 to 15x15, neither an enlargement"):
        final_layer_variant(_Odd("odd_final"), z, "bilinear")
    # the latent's projection enlarges too, but not to the final layer's size
    with pytest.raises(ValueError, match=r"full resolution \(8x8\), and no module"):
        final_layer_variant(_Odd("projection"), z, "bilinear")
    V = final_layer_variant(_Odd("aux"), z, "bilinear", output="image")
    assert V.up.mode == "bilinear" and V.aux_up.mode == "nearest"
    V = final_layer_variant(_Odd("residual"), z, "bilinear")
    assert V.up.mode == "bilinear" and V.skip_up.mode == "bilinear"
    V = final_layer_variant(_Odd("two_names"), z, "bilinear")
    assert V.body[0].mode == "bilinear" and V.up.mode == "bilinear"
    G = _Odd("residual")
    with torch.no_grad():
        assert torch.equal(final_layer_variant(G, z, "nearest")(z), G(z))  # same kind: G


def _latents_and_images(G, n):
    """``n`` seeded latents of size 8 and G's images of them."""
    z = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return z, G(z).numpy()


def test_open_world_shadows_of_a_resize_convolution_generator():
    """The one call works for a G whose final layer keeps the size (it refused before)."""
    from flipad_sklearn.generators import OPEN_WORLD_SHADOWS, open_world_shadows

    G = UpsampleConvGenerator(8, (2, 8, 8), 4).eval()
    z, X = _latents_and_images(G, 32)
    shadows = open_world_shadows(G, X, z[:4], latent_shape=(8,), seed=1, epochs=1,
                                 batch_size=16)
    assert list(shadows) == list(OPEN_WORLD_SHADOWS)
    assert shadows["bilinear_final"].body[0].mode == "bilinear"
    for S in shadows.values():
        with torch.no_grad():
            assert S(z[:3]).shape == (3, 2, 8, 8)


def test_open_world_shadows_trains_the_recipes_five():
    from flipad_sklearn.generators import OPEN_WORLD_SHADOWS, open_world_shadows

    G = _DCGANLike().eval()
    z, X = _latents_and_images(G, 64)
    shadows = open_world_shadows(G, X, z[:4], latent_shape=(8,), seed=3, epochs=2,
                                 batch_size=32)
    assert list(shadows) == list(OPEN_WORLD_SHADOWS)
    seeds = [S.info["seed"] for S in shadows.values()]
    assert len(set(seeds)) == 5
    kinds = {name: [type(m).__name__ for m in S.final] for name, S in shadows.items()
             if name.endswith("_final")}
    assert kinds == {"nearest_final": ["Upsample", "Conv2d"],
                     "bilinear_final": ["Upsample", "Conv2d"],
                     "pixel_shuffle_final": ["Conv2d", "PixelShuffle"]}
    assert shadows["bilinear_final"].final[0].mode == "bilinear"
    assert isinstance(shadows["upsample_conv"], UpsampleConvGenerator)
    assert isinstance(shadows["pixel_shuffle"], PixelShuffleGenerator)
    for S in shadows.values():
        assert not S.training and len(S.history["g_loss"]) == 2 * 2
        with torch.no_grad():
            assert S(z[:3]).shape == (3, 2, 8, 8)
    with pytest.raises(ValueError, match="X must hold images"):
        open_world_shadows(G, X.reshape(64, -1), z[:4], latent_shape=(8,))
    with pytest.raises(ValueError, match=r"X has images of shape \(2, 4, 8\) but the "
                                         r"generator makes \(2, 8, 8\)"):
        open_world_shadows(G, X[:, :, :4], z[:4], latent_shape=(8,))
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        open_world_shadows(G, bad, z[:4], latent_shape=(8,), epochs=1)
    for not_a_module in ("G", lambda t: G(t)):
        with pytest.raises(TypeError, match="generator must be a torch.nn.Module"):
            open_world_shadows(not_a_module, X, z[:4], latent_shape=(8,))
