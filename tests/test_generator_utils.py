"""find_final_layer, sample_activations, mean_activation on small torch generators."""

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import (
    FinalLayerInverter, find_final_layer, mean_activation, sample_activations,
)


def sequential_generator(final_activation=nn.Tanh()):
    torch.manual_seed(0)
    layers = [nn.Linear(4, 8 * 3 * 3), nn.ReLU(), nn.Unflatten(1, (8, 3, 3)),
              nn.ConvTranspose2d(8, 2, 4, stride=2, padding=1)]
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


class PlainGenerator(nn.Module):
    """A module whose forward calls torch.sigmoid itself (no activation module)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Linear(3, 10)
        self.head = nn.Linear(10, 5)

    def forward(self, z):
        return torch.sigmoid(self.head(torch.relu(self.body(z))))


@pytest.mark.parametrize("act, name", [(nn.Tanh(), "tanh"), (nn.Sigmoid(), "sigmoid"),
                                       (None, "identity")])
def test_find_final_layer_in_sequential(act, name):
    gen = sequential_generator(act)
    final = find_final_layer(gen, torch.zeros(2, 4))
    assert final.layer is gen[3]
    assert final.name == "3"
    assert final.activation == name
    assert final.activation_shape == (8, 3, 3)


def test_find_final_layer_with_functional_activation():
    gen = PlainGenerator()
    final = find_final_layer(gen, torch.zeros(2, 3))
    assert final.layer is gen.head and final.name == "head"
    assert final.activation == "sigmoid" and final.activation_shape == (10,)


def test_find_final_layer_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        find_final_layer(lambda z: z, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="no Linear, Conv2d or ConvTranspose2d"):
        find_final_layer(nn.Sequential(nn.ReLU()), torch.zeros(1, 2))
    softplus = nn.Sequential(nn.Linear(2, 3), nn.Softplus())
    with pytest.raises(ValueError, match="not tanh, sigmoid or the identity"):
        find_final_layer(softplus, torch.randn(4, 2))
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="something other than an element-wise"):
        find_final_layer(pooled, torch.randn(1, 1, 4, 4))


def test_sample_activations_are_the_layer_inputs_and_seeded():
    gen = sequential_generator()
    h, x = sample_activations(gen, 10, (4,), batch_size=3, random_state=0)
    assert h.shape == (10, 8 * 3 * 3) and x.shape == (10, 2, 6, 6)
    assert h.dtype == np.float32 and h.min() >= 0             # after a ReLU
    with torch.no_grad():
        pre = gen[3](torch.from_numpy(h).reshape(10, 8, 3, 3))
    np.testing.assert_allclose(np.tanh(pre.numpy()), x, atol=1e-6)
    h2, _ = sample_activations(gen, 10, (4,), batch_size=10, random_state=0)
    np.testing.assert_allclose(h, h2, atol=1e-5)             # same latents in any batching
    h3, _ = sample_activations(gen, 10, (4,), random_state=1)
    assert not np.allclose(h, h3)
    state = torch.random.get_rng_state()
    sample_activations(gen, 4, (4,), random_state=0, return_outputs=False)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_mean_activation_is_the_anchor():
    gen = sequential_generator()
    h, x = sample_activations(gen, 50, (4,), batch_size=7, random_state=3)
    anchor = mean_activation(gen, 50, (4,), batch_size=16, random_state=3)
    assert anchor.shape == (8, 3, 3) and anchor.dtype == np.float64
    np.testing.assert_allclose(anchor.reshape(-1), h.mean(axis=0), atol=1e-6)
    inv = FinalLayerInverter(layer=gen[3], anchor=anchor, alpha=1e-3).fit(x)
    assert inv.activation_shape_ == (8, 3, 3)
    with pytest.raises(ValueError, match="n_samples"):
        mean_activation(gen, 0, (4,))


def test_generator_mode_and_device_restored():
    gen = sequential_generator(nn.Tanh())
    gen.train()
    sample_activations(gen, 3, (4,), random_state=0, device="cpu")
    assert gen.training
