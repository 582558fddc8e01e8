"""find_final_layer, sample_activations, mean_activation on small torch generators."""

from dataclasses import dataclass

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


# --------------------------------------------------- adapters (issue 12) and errors (issue 11)
class _Body(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Linear(3, 10)
        self.head = nn.Linear(10, 5)

    def core(self, z):
        h = torch.relu(self.body(z))
        return h, torch.tanh(self.head(h))


class TupleGenerator(_Body):
    def forward(self, z):
        h, x = self.core(z)
        return x, h                              # the samples first, as many code bases do


class DictGenerator(_Body):
    def __init__(self, key="sample", extra=False):
        super().__init__()
        self.key, self.extra = key, extra

    def forward(self, z):
        h, x = self.core(z)
        out = {self.key: x}
        if self.extra:
            out["hidden"] = h
        return out


@dataclass
class _Out:
    image: torch.Tensor
    step: int = 0


class DataclassGenerator(_Body):
    def forward(self, z):
        return _Out(self.core(z)[1])


class Autoencoder(_Body):
    """decode is a method, not forward (as in diffusers' AutoencoderKL)."""

    def forward(self, x):
        raise RuntimeError("not the decoder")

    def decode(self, z):
        return _Out(self.core(z)[1])


def _reference(gen, z):
    with torch.no_grad():
        h, x = _Body.core(gen, torch.as_tensor(z, dtype=torch.float32))
    return h.numpy(), x.numpy()


@pytest.mark.parametrize("gen, kwargs", [
    (TupleGenerator(), {}),
    (DictGenerator(), {}),                            # "sample" key
    (DictGenerator(key="img"), {}),                   # a dict's single tensor
    (DictGenerator(key="img", extra=True), {"output": "img"}),
    (DataclassGenerator(), {}),                       # a dataclass's single tensor field
    (DataclassGenerator(), {"output": lambda o: o.image}),
    (Autoencoder().decode, {}),                       # a bound method
])
def test_structured_outputs_are_accepted(gen, kwargs):
    owner = gen.__self__ if not isinstance(gen, nn.Module) else gen
    final = find_final_layer(gen, torch.randn(4, 3), **kwargs)
    assert final.layer is owner.head and final.activation == "tanh"
    assert final.activation_shape == (10,)
    h, x = sample_activations(gen, 6, (3,), batch_size=4, random_state=0, **kwargs)
    z = np.random.default_rng(
        np.random.RandomState(0).randint(np.iinfo(np.int32).max)).standard_normal(
        (6, 3), dtype=np.float32)
    h_ref, x_ref = _reference(owner, z)
    np.testing.assert_allclose(h, h_ref, atol=1e-6)
    np.testing.assert_allclose(x, x_ref, atol=1e-6)


def test_structured_output_errors():
    with pytest.raises(TypeError, match="pass output=<key>"):
        find_final_layer(DictGenerator(key="img", extra=True), torch.randn(2, 3))
    with pytest.raises(ValueError, match="output='nope'.*keys are \\['img', 'hidden'\\]"):
        find_final_layer(DictGenerator(key="img", extra=True), torch.randn(2, 3),
                         output="nope")
    with pytest.raises(TypeError, match="selected a int"):
        find_final_layer(DataclassGenerator(), torch.randn(2, 3), output="step")
    gen = Autoencoder()
    with pytest.raises(TypeError, match="module="):
        find_final_layer(lambda z: gen.decode(z), torch.randn(2, 3))
    final = find_final_layer(lambda z: gen.decode(z / 2), torch.randn(2, 3), module=gen)
    assert final.layer is gen.head


def test_user_inputs_array_tensor_and_iterable():
    gen = TupleGenerator()
    z = np.random.default_rng(5).standard_normal((7, 3)).astype(np.float32)
    h_ref, x_ref = _reference(gen, z)
    for inputs in (z, torch.from_numpy(z), z.astype(np.float64),
                   (z[i:i + 2] for i in range(0, 7, 2))):
        h, x = sample_activations(gen, inputs=inputs, batch_size=3)
        np.testing.assert_allclose(h, h_ref, atol=1e-6)
        np.testing.assert_allclose(x, x_ref, atol=1e-6)
    h = sample_activations(gen, 4, inputs=[z[:3], z[3:]], return_outputs=False)
    np.testing.assert_allclose(h, h_ref[:4], atol=1e-6)          # n_samples caps the inputs
    anchor = mean_activation(gen, inputs=z, batch_size=2)
    np.testing.assert_allclose(anchor, h_ref.mean(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="at least one sample"):
        mean_activation(gen, inputs=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="yielded no samples"):
        mean_activation(gen, inputs=iter([]))
    with pytest.raises(TypeError, match="iterable of batches"):
        mean_activation(gen, inputs=3.0)
    with pytest.raises(ValueError, match="latent_shape"):
        mean_activation(gen, 4)


def test_bad_arguments_get_clear_errors():
    gen = sequential_generator()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sample_activations(gen, 4, (4,), batch_size=0)
    # an int latent_shape means (n,)
    h_int = sample_activations(gen, 5, 4, random_state=0, return_outputs=False)
    h_tup = sample_activations(gen, 5, (4,), random_state=0, return_outputs=False)
    np.testing.assert_array_equal(h_int, h_tup)
    with pytest.raises(ValueError, match="latent_shape must be positive"):
        sample_activations(gen, 5, (4, 0))
    with pytest.raises(ValueError, match="not a submodule of the generator"):
        mean_activation(gen, 4, (4,), layer=nn.Linear(8, 2))
    unused = PlainGenerator()
    unused.spare = nn.Linear(3, 3)                    # registered but never run
    with pytest.raises(ValueError, match="did not run"):
        mean_activation(unused, 4, (3,), layer=unused.spare)
    with pytest.raises(ValueError, match="no Linear, Conv2d or ConvTranspose2d"):
        mean_activation(nn.Sequential(nn.Tanh()), 4, (4,))    # no parameters at all


class Clamped(nn.Module):
    def __init__(self, how):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3, 6)
        with torch.no_grad():
            self.head.weight.mul_(0.05)               # the probe stays inside [-1, 1]
            self.head.bias.zero_()
        self.how = how

    def forward(self, z):
        pre = self.head(z)
        return torch.clamp(pre, -1, 1) if self.how == "clamp" else nn.functional.hardtanh(pre)


@pytest.mark.parametrize("how", ["clamp", "hardtanh"])
def test_clamped_outputs_are_not_identity(how):
    gen = Clamped(how)
    probe = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    assert gen(probe).abs().max() < 1                # the probe alone looks like identity
    with pytest.raises(ValueError, match=r"saturates.*\[-1, 1\].*clamp"):
        find_final_layer(gen, probe)
    with pytest.raises(ValueError, match="saturates"):
        mean_activation(gen, 10, 3)


class ConditionalGenerator(nn.Module):
    """A conditional DCGAN-like generator: ``forward(noise, labels)``."""

    def __init__(self, n_classes=3, latent_dim=4):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            self.embed = nn.Embedding(n_classes, latent_dim)
            self.body = nn.Linear(2 * latent_dim, 6 * 2 * 2)
            self.head = nn.ConvTranspose2d(6, 1, 4, stride=2, padding=1)

    def penultimate(self, noise, labels):
        h = torch.relu(self.body(torch.cat([noise, self.embed(labels)], dim=1)))
        return h.reshape(-1, 6, 2, 2)

    def forward(self, noise, labels):
        return torch.tanh(self.head(self.penultimate(noise, labels)))


def test_conditional_generator_takes_a_tuple_of_inputs():
    """``forward(noise, labels)`` works as it is: a tuple is the positional inputs."""
    gen = ConditionalGenerator()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=7)
    final = find_final_layer(gen, (torch.from_numpy(z[:2]), torch.from_numpy(labels[:2])))
    assert final.layer is gen.head and final.activation == "tanh"
    assert final.activation_shape == (6, 2, 2)
    with torch.no_grad():
        zt, yt = torch.from_numpy(z), torch.from_numpy(labels)
        h_ref = gen.penultimate(zt, yt).reshape(7, -1).numpy()
        x_ref = gen(zt, yt).numpy()
    # all inputs at once (split into batches together), as arrays or tensors
    for inputs in ((z, labels), (torch.from_numpy(z), torch.from_numpy(labels)),
                   {"noise": z, "labels": labels}):
        h, x = sample_activations(gen, inputs=inputs, batch_size=3)
        np.testing.assert_allclose(h, h_ref, atol=1e-6)
        np.testing.assert_allclose(x, x_ref, atol=1e-6)
    # an iterable of batches, each a tuple; n_samples caps them
    batches = [(z[:3], labels[:3]), (z[3:], labels[3:])]
    h = sample_activations(gen, 5, inputs=batches, return_outputs=False)
    np.testing.assert_allclose(h, h_ref[:5], atol=1e-6)
    anchor = mean_activation(gen, inputs=(z, labels), batch_size=2)
    np.testing.assert_allclose(anchor, h_ref.mean(axis=0).reshape(6, 2, 2), atol=1e-6)
    # the anchor and layer feed the inverter: it recovers the activations (the plain
    # lasso at a tiny penalty reproduces the outputs; the default ridge shrinks them)
    inv = FinalLayerInverter(layer=final.layer, activation=final.activation, alpha=1e-6,
                             ridge=0.0, feature_tol=None, tol=1e-9, anchor=anchor,
                             solver="fista", max_iter=3000, device="cpu")
    h_hat = inv.fit(x_ref.reshape(7, -1)).transform(x_ref.reshape(7, -1))
    assert np.allclose(inv.inverse_transform(h_hat), x_ref.reshape(7, -1), atol=1e-3)
    with pytest.raises(ValueError, match="as many samples each"):
        mean_activation(gen, inputs=(z, labels[:5]))
