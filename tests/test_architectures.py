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
    ({"latent_dim": 0}, "latent_dim"),
    ({"base_channels": 0}, "base_channels"),
])
@pytest.mark.parametrize("cls", [UpsampleConvGenerator, PixelShuffleGenerator])
def test_bad_shapes_are_refused_by_name(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="mode must be"):
        UpsampleConvGenerator(mode="bicubic")
