"""The diffusers recipe on a tiny AutoencoderKL (random weights, built from a config: no
download)."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from flipad_sklearn import (  # noqa: E402
    ActivationPooling,
    ChannelSelector,
    FinalLayerInverter,
    GeneratorStandardScaler,
    ReconstructionDistance,
    StreamingFeatures,
    find_final_layer,
    mean_activation,
    sample_activations,
)

pytestmark = [pytest.mark.usefixtures("torch_single_thread"),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore::flipad_sklearn.ThresholdWarning")]


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        sample_size=16).eval()


def _pipeline_latents(n, seed):
    """Stand-in for ``pipe(..., output_type="latent").images``: latents in the
    UNet's (scaled) space."""
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_final_layer_of_the_decoder(vae):
    z = _pipeline_latents(2, 0) / vae.config.scaling_factor
    final = find_final_layer(vae.decode, z)            # DecoderOutput handled: .sample
    assert final.layer is vae.decoder.conv_out
    assert final.name == "decoder.conv_out"
    assert final.activation == "identity"             # images in [-1, 1] before postprocessing
    assert final.activation_shape == (8, 16, 16)


def test_anchor_and_samples_from_the_pipelines_latents(vae):
    sf = vae.config.scaling_factor
    latents = _pipeline_latents(10, 1)
    batches = [latents[i:i + 4] / sf for i in range(0, 10, 4)]   # batch by batch
    anchor = mean_activation(vae.decode, inputs=iter(batches), layer=vae.decoder.conv_out)
    h, x = sample_activations(vae.decode, inputs=latents / sf, batch_size=3)
    assert anchor.shape == (8, 16, 16) and x.shape == (10, 3, 16, 16)
    np.testing.assert_allclose(anchor.reshape(-1), h.mean(axis=0), atol=1e-5)
    with torch.no_grad():
        ref = vae.decode(latents / sf).sample.numpy()
    np.testing.assert_allclose(x, ref, atol=1e-5)
    # conv_out's input, captured with a hook, is the penultimate activation
    with torch.no_grad():
        pre = vae.decoder.conv_out(torch.from_numpy(h).reshape(10, 8, 16, 16))
    np.testing.assert_allclose(pre.numpy(), x, atol=1e-5)


def test_inversion_and_streamed_features(vae):
    sf = vae.config.scaling_factor
    anchor = mean_activation(vae.decode, inputs=_pipeline_latents(16, 2) / sf)
    _, X_g = sample_activations(vae.decode, inputs=_pipeline_latents(12, 3) / sf)
    X_o = np.random.default_rng(0).uniform(-1, 1, size=(8, 3, 16, 16)).astype(np.float32)
    X, y = np.concatenate([X_g, X_o]), np.r_[np.ones(12), -np.ones(8)]
    inv = FinalLayerInverter(layer=vae.decoder.conv_out, activation="identity",
                             anchor=anchor, alpha=1e-4, max_iter=200, device="cpu")
    feats = StreamingFeatures(inv, [
        ("crop", ActivationPooling(method="center_crop", crop_size=8,
                                   input_shape=(8, 16, 16))),
        ("select", ChannelSelector(3, input_shape=(8, 8, 8))),
        ("scaler", GeneratorStandardScaler()),
    ], batch_size=5)
    F = feats.fit(X, y).transform(X)
    assert F.shape == (20, 3 * 8 * 8) and np.isfinite(F).all()
    assert feats.n_passes_ == 1
    # the inversion reproduces the decodes through conv_out
    Z = feats.inverter_.transform(X_g)
    rec = feats.inverter_.inverse_transform(Z)
    assert np.linalg.norm(rec - X_g.reshape(12, -1)) < 0.05 * np.linalg.norm(X_g)


def test_reconstruction_distance_with_autoencoder_kl(vae):
    sf = vae.config.scaling_factor
    _, X_g = sample_activations(vae.decode, inputs=_pipeline_latents(10, 4) / sf)
    det = ReconstructionDistance(vae, fnr=0.1, random_state=0).fit(X_g)
    X = X_g[:4]
    with torch.no_grad():
        t = torch.from_numpy(X)
        rec = vae.decode(vae.encode(t).latent_dist.mode()).sample
    np.testing.assert_allclose(-det.score_samples(X),
                               ((rec - t) ** 2).mean(dim=(1, 2, 3)).double().numpy(),
                               rtol=1e-5)
    assert det.predict(X).shape == (4,)
    assert not vae.training
