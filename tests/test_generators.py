"""The small generator zoo: image GANs and the tabular KL-WGAN.

Training is kept tiny (one epoch on 256 images); the real zoo is trained by a
script.
"""

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import find_final_layer
from flipad_sklearn.datasets import load_mnist_subset, load_wine_quality
from flipad_sklearn.generators import (
    GAN_KINDS,
    ImageGenerator,
    TabularGenerator,
    load_generator,
    save_generator,
    train_gan,
    train_tabular_gan,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def mnist_small():
    X, y = load_mnist_subset(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(X))[:256]  # all digits
    return X[idx]


@pytest.fixture(scope="module")
def trained(mnist_small, torch_single_thread):
    """One tiny training per kind, shared by the tests (seed 0)."""
    return {k: train_gan(k, mnist_small, epochs=1, seed=0, batch_size=64) for k in GAN_KINDS}


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", GAN_KINDS)
def test_training_is_deterministic_and_leaves_global_rng(kind, mnist_small, trained):
    before = torch.random.get_rng_state()
    again = train_gan(kind, mnist_small, epochs=1, seed=0, batch_size=64)
    assert torch.equal(before, torch.random.get_rng_state())
    ref = trained[kind]
    for key, value in _state(ref).items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert again.history == ref.history
    np.testing.assert_array_equal(again.sample(8, random_state=1), ref.sample(8, random_state=1))


@pytest.mark.parametrize("kind", GAN_KINDS)
def test_losses_recorded_and_changing(kind, trained):
    hist = trained[kind].history
    assert len(hist["d_loss"]) == 4 and len(hist["epoch_d_loss"]) == 1
    # WGAN-GP: generator step on the first of every n_critic=5 batches
    assert len(hist["g_loss"]) == (1 if kind == "wgan_gp" else 4)
    assert np.all(np.isfinite(hist["d_loss"])) and np.all(np.isfinite(hist["g_loss"]))
    assert np.ptp(hist["d_loss"]) > 0
    info = trained[kind].info
    assert info["kind"] == kind and info["seed"] == 0 and info["n_train"] == 256
    assert trained[kind].kind == kind


def test_training_moves_the_weights(mnist_small):
    still = train_gan("lsgan", mnist_small[:128], epochs=1, seed=5, lr=0.0)
    moved = train_gan("lsgan", mnist_small[:128], epochs=1, seed=5)
    w0, w1 = still.final_layer.weight, moved.final_layer.weight
    assert not torch.allclose(w0, w1)
    other_seed = train_gan("lsgan", mnist_small[:128], epochs=1, seed=6, lr=0.0)
    assert not torch.allclose(w0, other_seed.final_layer.weight)


@pytest.mark.parametrize("kind", GAN_KINDS)
def test_final_layer_and_activations(kind, trained):
    G = trained[kind]
    assert isinstance(G, ImageGenerator) and not G.training
    assert G.latent_shape == (64,)
    assert isinstance(G.final_layer, nn.ConvTranspose2d)
    assert isinstance(G.net[-1], nn.Tanh)
    found = find_final_layer(G, torch.zeros((2,) + G.latent_shape))
    assert found.layer is G.final_layer and found.activation == "tanh"
    assert found.activation_shape == (64, 14, 14)
    # penultimate activations: ReLU outputs that reproduce the samples exactly
    h, x = G.sample_activations(5, random_state=2)
    assert h.shape == (5, 64 * 14 * 14) and h.min() >= 0
    with torch.no_grad():
        rec = torch.tanh(G.final_layer(torch.from_numpy(h).reshape(5, 64, 14, 14)))
    np.testing.assert_allclose(rec.numpy(), x, atol=1e-5)
    np.testing.assert_allclose(x, G.sample(5, random_state=2), atol=1e-6)


def test_sample(trained):
    G = trained["dcgan"]
    before = torch.random.get_rng_state()
    X = G.sample(10, random_state=0)
    assert torch.equal(before, torch.random.get_rng_state())
    assert X.shape == (10, 1, 28, 28) and X.dtype == np.float32
    assert X.min() >= -1 and X.max() <= 1
    np.testing.assert_array_equal(X, G.sample(10, random_state=0))
    # the same latents whatever the batch size; the float32 convolutions may
    # block differently by batch size (seen on some CPUs: 2e-8 apart)
    np.testing.assert_allclose(X[:3], G.sample(3, random_state=0, batch_size=2),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(X[:3], G.sample(3, random_state=0, batch_size=1),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(X, G.sample(10, random_state=1))
    X2, Z = G.sample(4, random_state=np.random.RandomState(0), return_latents=True)
    assert Z.shape == (4, 64)
    assert G.sample(0).shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match="n must"):
        G.sample(-1)
    # the four kinds share the architecture but not the weights
    assert not torch.allclose(G.final_layer.weight, trained["ebgan"].final_layer.weight)


def test_32x32_generators(mnist_small):
    X32 = np.pad(mnist_small, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1)
    G = train_gan("wgan-gp", X32[:64], epochs=1, seed=0, batch_size=32, ngf=8, ndf=8)
    assert G.kind == "wgan_gp"
    assert G.sample(3, random_state=0).shape == (3, 1, 32, 32)
    found = find_final_layer(G, torch.zeros((2,) + G.latent_shape))
    assert found.layer is G.final_layer and found.activation_shape == (8, 16, 16)


def test_bad_training_input(mnist_small):
    with pytest.raises(ValueError, match="kind"):
        train_gan("stylegan", mnist_small)
    with pytest.raises(ValueError, match="shape"):
        train_gan("dcgan", mnist_small[:, 0])
    with pytest.raises(ValueError, match="28x28 or 32x32"):
        train_gan("dcgan", mnist_small[:, :, :20, :20])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        train_gan("dcgan", (mnist_small + 1) * 127.5)
    bad = mnist_small[:8].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_gan("dcgan", bad)
    with pytest.raises(ValueError, match="epochs"):
        train_gan("dcgan", mnist_small, epochs=0)
    with pytest.raises(ValueError, match="image_size"):
        ImageGenerator(image_size=64)


def test_verbose_progress_and_silence(mnist_small, capsys):
    train_gan("dcgan", mnist_small[:32], epochs=1, seed=0, batch_size=16, ngf=4, ndf=4)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    train_gan("dcgan", mnist_small[:32], epochs=1, seed=0, batch_size=16, ngf=4, ndf=4,
              verbose=1)
    assert "training dcgan" in capsys.readouterr().err


def test_save_and_load(trained, tmp_path):
    G = trained["ebgan"]
    path = tmp_path / "ebgan.pt"
    save_generator(G, path)
    G2 = load_generator(path)
    assert isinstance(G2, ImageGenerator) and not G2.training
    np.testing.assert_array_equal(G.sample(6, random_state=3), G2.sample(6, random_state=3))
    assert G2.history == G.history and G2.info == G.info
    with pytest.raises(TypeError):
        save_generator(nn.Linear(2, 2), path)


# ----------------------------------------------------------------------- tabular
@pytest.fixture(scope="module")
def wine():
    return load_wine_quality().data


def test_tabular_architecture_and_final_layer(wine):
    G = train_tabular_gan(wine, epochs=1, seed=0)
    assert isinstance(G, TabularGenerator) and G.latent_shape == (10,)
    linears = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 300), (300, 300),
                                                                  (300, 11)]
    assert G.net[-1] is G.final_layer
    found = find_final_layer(G, torch.zeros(2, 10))
    assert found.layer is G.final_layer and found.activation == "identity"
    assert found.activation_shape == (300,)
    h, x = G.sample_activations(7, random_state=0)
    assert h.shape == (7, 300) and x.shape == (7, 11)
    # latent codes of 10 values: the same samples in batches of 1 and of 7
    np.testing.assert_allclose(G.sample(7, random_state=0, batch_size=1), x, atol=1e-5)
    hist = G.history
    assert len(hist["d_loss"]) == 1599 // 64 and np.ptp(hist["d_loss"]) > 0
    assert len(hist["g_loss"]) == 5  # steps 0, 5, 10, 15, 20 of 24


def test_tabular_determinism_and_scaling(wine):
    before = torch.random.get_rng_state()
    a = train_tabular_gan(wine[:256], epochs=2, seed=1)
    assert torch.equal(before, torch.random.get_rng_state())
    b = train_tabular_gan(wine[:256], epochs=2, seed=1)
    np.testing.assert_array_equal(a.sample(20, random_state=0), b.sample(20, random_state=0))
    c = train_tabular_gan(wine[:256], epochs=2, seed=2)
    assert not np.allclose(a.sample(20, random_state=0), c.sample(20, random_state=0))
    # the standardisation is folded into the final layer: with lr=0 (weights
    # left at their initialisation) the scaled generator is mean + std * raw
    raw = train_tabular_gan(wine, epochs=1, seed=3, lr=0.0, standardize=False)
    scaled = train_tabular_gan(wine, epochs=1, seed=3, lr=0.0)
    z_out_raw = raw.sample(5, random_state=0)
    expected = wine.mean(axis=0) + wine.std(axis=0) * z_out_raw
    np.testing.assert_allclose(scaled.sample(5, random_state=0), expected, rtol=1e-4,
                               atol=1e-5)


def test_tabular_bad_input_and_round_trip(wine, tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        train_tabular_gan(wine[:, 0])
    bad = wine[:50].copy()
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        train_tabular_gan(bad)
    G = train_tabular_gan(wine[:128], epochs=1, seed=0, hidden_sizes=(16,),
                          critic_hidden_sizes=(16,))
    save_generator(G, tmp_path / "tab.pt")
    G2 = load_generator(tmp_path / "tab.pt")
    assert isinstance(G2, TabularGenerator) and G2.hidden_sizes == (16,)
    np.testing.assert_array_equal(G.sample(4, random_state=0), G2.sample(4, random_state=0))


# ----------------------------------------------------------------------- shadows
def test_shadows_reuse_the_recipe(mnist_small, trained):
    from flipad_sklearn.generators import default_shadow_seeds, train_shadows

    G = trained["lsgan"]
    # the recipe is complete: the generator's own seed retrains it exactly
    (same,) = train_shadows(G, mnist_small, seeds=[0])
    for key, value in G.state_dict().items():
        assert torch.equal(value, same.state_dict()[key]), key
    shadows = train_shadows(G, mnist_small[:64], n_shadows=2)
    seeds = default_shadow_seeds(0, 2)
    assert [S.info["seed"] for S in shadows] == seeds and 0 not in seeds
    assert len(set(seeds)) == 2 and min(seeds) > 1000
    for S in shadows:
        assert S.config == G.config and S.kind == "lsgan"
        assert not torch.allclose(S.final_layer.weight, G.final_layer.weight)
    with pytest.raises(ValueError, match="shape"):
        train_shadows(G, mnist_small[:, :, 2:26, 2:26])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        train_shadows("G", mnist_small)
    with pytest.raises(ValueError, match="latent_shape"):        # a user's generator
        train_shadows(nn.Linear(2, 2), mnist_small)
    with pytest.raises(ValueError, match="recipe"):
        train_shadows(ImageGenerator(), mnist_small)


class _UserGenerator(nn.Module):
    """A user's DCGAN-like generator, not a generator of this package: z (8,) -> 1x8x8."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16 * 4 * 4), nn.BatchNorm1d(16 * 4 * 4),
                                  nn.ReLU(), nn.Unflatten(1, (16, 4, 4)))
        self.final = nn.ConvTranspose2d(16, 1, 4, 2, 1)

    def forward(self, z):
        return torch.tanh(self.final(self.body(z)))


def test_shadows_of_a_users_generator():
    """Any torch generator: copies of its architecture, re-initialised per seed and
    trained as a DCGAN on X (here G's own samples, the owner's fallback)."""
    from flipad_sklearn.generators import default_shadow_seeds, train_shadows

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = _UserGenerator().eval()
    with torch.no_grad():
        z = torch.from_numpy(np.random.default_rng(0).standard_normal((256, 8),
                                                                      dtype=np.float32))
        X = (0.5 * G(z) + 0.4).numpy()          # a distribution far from a fresh init's
    before_g = {k: v.clone() for k, v in G.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    shadows = train_shadows(G, X, n_shadows=2, latent_shape=8, epochs=6, batch_size=32)
    assert torch.equal(rng_before, torch.random.get_rng_state())   # global RNG untouched
    for k, v in G.state_dict().items():                             # G untouched
        assert torch.equal(v, before_g[k]), k
    assert [S.info["seed"] for S in shadows] == default_shadow_seeds(0, 2)
    z_test = torch.from_numpy(np.random.default_rng(1).standard_normal((200, 8),
                                                                       dtype=np.float32))
    for S in shadows:
        assert type(S) is _UserGenerator and not S.training
        assert {k: v.shape for k, v in S.state_dict().items()} == \
            {k: v.shape for k, v in G.state_dict().items()}
        assert not torch.allclose(S.final.weight, G.final.weight)
        assert find_final_layer(S, z_test[:4]).layer is S.final    # ready for FLIPAD
        assert len(S.history["g_loss"]) == 6 * (256 // 32)
        # trained towards X: its mean image is closer to X's than a fresh copy's
        fresh = train_shadows(G, X, seeds=[S.info["seed"]], latent_shape=8, epochs=1,
                              batch_size=256)[0]  # one step only
        with torch.no_grad():
            err = float(((S(z_test).mean(0).numpy() - X.mean(0)) ** 2).mean())
            err0 = float(((fresh(z_test).mean(0).numpy() - X.mean(0)) ** 2).mean())
        assert err < 0.6 * err0, (err, err0)
    assert not torch.allclose(shadows[0].final.weight, shadows[1].final.weight)
    # a seed gives the same shadow again
    (again,) = train_shadows(G, X, seeds=[shadows[0].info["seed"]], latent_shape=(8,),
                             epochs=6, batch_size=32)
    for k, v in shadows[0].state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    with pytest.raises(ValueError, match="shape"):
        train_shadows(G, X[:, :, :4, :4], latent_shape=8, epochs=1)
    with pytest.raises(ValueError, match="init"):
        train_shadows(G, X, latent_shape=8, init="xavier")


def test_tabular_shadows(wine):
    from flipad_sklearn.generators import train_shadows

    G = train_tabular_gan(wine[:200], epochs=1, seed=4, batch_size=32, hidden_sizes=(16,),
                          critic_hidden_sizes=(8,))
    (same, other) = train_shadows(G, wine[:200], seeds=[4, 5])
    np.testing.assert_array_equal(same.sample(5, random_state=0), G.sample(5, random_state=0))
    assert other.config == G.config and other.info["critic_hidden_sizes"] == [8]
    assert not np.allclose(other.sample(5, random_state=0), G.sample(5, random_state=0))


def test_tabular_standardized_view(wine):
    """The standardised final layer maps penultimate activations to standardised rows."""
    G = train_tabular_gan(wine[:256], epochs=1, seed=0, hidden_sizes=(32,),
                          critic_hidden_sizes=(8,))
    h, x = G.sample_activations(6, random_state=0)
    before = torch.random.get_rng_state()
    layer = G.standardized_final_layer()
    assert torch.equal(before, torch.random.get_rng_state())
    assert isinstance(layer, nn.Linear) and layer is not G.final_layer
    with torch.no_grad():
        out = layer(torch.from_numpy(h)).numpy()
    np.testing.assert_allclose(out, G.standardize(x), atol=1e-4)
    np.testing.assert_allclose(G.standardize(wine[:256]).mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(G.standardize(wine[:256]).std(axis=0), 1, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        G.standardize(wine[:, :5])
