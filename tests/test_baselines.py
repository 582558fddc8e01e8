"""Baselines: fingerprint correlation, latent inversion, classic detectors, pipelines."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from flipad_sklearn import (
    ConformalDetector,
    ConformalPipeline,
    FingerprintCorrelation,
    FLIPADDetector,
    LatentInversionDistance,
    ReconstructionDistance,
    make_dctpad,
    make_flipad,
    make_rawpad,
    RandomPerturbation,
)
from flipad_sklearn.detection.deepsad import conformal_threshold
from flipad_sklearn.pipeline import ImmunisedPipeline

pytestmark = [
    pytest.mark.usefixtures("torch_single_thread"),
    pytest.mark.filterwarnings("ignore::flipad_sklearn.ThresholdWarning"),
]


def _fingerprinted(n, pattern, seed):
    """Smooth random images plus a fixed high-frequency pattern (a GAN's fingerprint)."""
    rng = np.random.default_rng(seed)
    import scipy.ndimage

    base = scipy.ndimage.gaussian_filter(rng.normal(size=(n, 1, 16, 16)), sigma=(0, 0, 2, 2))
    return (base * 3 + 0.3 * pattern + 0.05 * rng.normal(size=(n, 1, 16, 16)))


@pytest.fixture(scope="module")
def two_generators():
    rng = np.random.default_rng(0)
    p1, p2 = rng.normal(size=(2, 1, 1, 16, 16))
    return _fingerprinted(300, p1, 1), _fingerprinted(200, p2, 2), _fingerprinted(200, p1, 3)


# ------------------------------------------------------------------- estimator checks
_TWO_PIXELS = (
    "these checks fit on 2-feature blobs, read as a 1x2 image: the residual of two "
    "pixels, once centred, is +-(1, -1)/sqrt(2), so every correlation is +-1 and no "
    "sample can be rejected; the method needs images")


def _expected_failures(est):
    if isinstance(est, FingerprintCorrelation):
        return {name: _TWO_PIXELS for name in ("check_outliers_fit_predict",
                                               "check_outliers_train")}
    return {}


@parametrize_with_checks([
    FingerprintCorrelation(fnr=0.1, validation_fraction=0.3, random_state=0),
    FingerprintCorrelation("median", fnr=0.1, random_state=0),
    ConformalDetector("iforest", fnr=0.1, validation_fraction=0.3, random_state=0),
], expected_failed_checks=_expected_failures)
@pytest.mark.filterwarnings("ignore:.*labels are not in:UserWarning")
# constant data, and the fingerprint's +-1 correlations on two pixels: rightly reported
@pytest.mark.filterwarnings("ignore:All validation samples:RuntimeWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------ fingerprint
def test_fingerprint_separates_two_generators(two_generators):
    X_g, X_other, X_g_new = two_generators
    det = FingerprintCorrelation(fnr=0.05, random_state=0).fit(X_g)
    s_g, s_o = det.score_samples(X_g_new), det.score_samples(X_other)
    assert roc_auc_score(np.r_[np.ones(200), np.zeros(200)], np.r_[s_g, s_o]) > 0.99
    assert np.mean(det.predict(X_g_new) == 1) >= 0.9
    assert np.mean(det.predict(X_other) == -1) >= 0.95
    np.testing.assert_allclose(det.decision_function(X_other), s_o - det.offset_)
    # the threshold is the conformal quantile of held-out G scores
    assert det.threshold_ == pytest.approx(
        conformal_threshold(-det.validation_scores_, 0.05), rel=1e-8)
    # flat input with input_shape gives the same scores
    flat = FingerprintCorrelation(fnr=0.05, input_shape=(1, 16, 16), random_state=0)
    flat.fit(X_g.reshape(300, -1))
    np.testing.assert_allclose(flat.score_samples(X_other.reshape(200, -1)), s_o)


def test_fingerprint_ignores_labelled_others_and_pickles(two_generators):
    X_g, X_other, _ = two_generators
    X = np.concatenate([X_g, X_other])
    y = np.r_[np.ones(300), -np.ones(200)]
    a = FingerprintCorrelation(random_state=0).fit(X, y)
    b = FingerprintCorrelation(random_state=0).fit(X_g)
    np.testing.assert_allclose(a.fingerprint_, b.fingerprint_)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.score_samples(X_other), a.score_samples(X_other))


def test_fingerprint_errors(two_generators):
    X_g = two_generators[0]
    with pytest.raises(ValueError, match="input_shape"):
        FingerprintCorrelation(input_shape=(1, 8, 8)).fit(X_g.reshape(300, -1))
    with pytest.raises(ValueError, match="only one class"):
        FingerprintCorrelation().fit(X_g, -np.ones(300))
    with pytest.raises(ValueError, match="Too few samples of G"):
        FingerprintCorrelation().fit(X_g[:3], [1, -1, -1])
    det = FingerprintCorrelation().fit(X_g)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(X_g[:, :, :8, :8])


# ------------------------------------------------------------------ latent inversion
class _TinyGenerator(nn.Module):
    latent_shape = (4,)

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(4, 32, generator=g))
        self.w2 = nn.Parameter(torch.randn(32, 64, generator=g) / 4)

    def forward(self, z):
        return torch.tanh(torch.relu(z @ self.w1) @ self.w2).reshape(-1, 1, 8, 8)


def _samples(G, n, seed):
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 4), dtype=np.float32))
    with torch.no_grad():
        return G(z).numpy()


def test_latent_inversion_reconstructs_own_samples_better():
    G, H = _TinyGenerator(0), _TinyGenerator(1)
    X_g, X_h = _samples(G, 60, 0), _samples(H, 40, 1)
    det = LatentInversionDistance(G, n_steps=150, lr=0.05, fnr=0.05, random_state=0)
    det.fit(X_g)
    assert det.output_shape_ == (1, 8, 8) and det.latent_shape_ == (4,)
    s_g = det.score_samples(_samples(G, 40, 2))
    s_h = det.score_samples(X_h)
    assert np.median(-s_g) < 0.2 * np.median(-s_h)
    assert roc_auc_score(np.r_[np.ones(40), np.zeros(40)], np.r_[s_g, s_h]) > 0.9
    # seeded: same scores again, and the global RNG untouched
    before = torch.random.get_rng_state()
    np.testing.assert_array_equal(det.score_samples(X_h), s_h)
    assert torch.equal(before, torch.random.get_rng_state())
    assert set(np.unique(det.predict(X_h))) <= {-1, 1}


def test_latent_inversion_errors():
    G = _TinyGenerator(0)
    X = _samples(G, 10, 0)
    with pytest.raises(ValueError, match="needs generator"):
        LatentInversionDistance().fit(X)
    with pytest.raises(ValueError, match="generator outputs"):
        LatentInversionDistance(G, n_steps=2).fit(X.reshape(10, -1)[:, :50])
    with pytest.raises(ValueError, match="latent_shape"):
        LatentInversionDistance(nn.Linear(4, 64), n_steps=2).fit(X)
    det = LatentInversionDistance(nn.Linear(4, 64), latent_shape=(4,), n_steps=2,
                                  random_state=0).fit(X.reshape(10, -1))
    assert det.score_samples(X[:3]).shape == (3,)
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score_samples(X[:3]), det.score_samples(X[:3]))


# ----------------------------------------------------------------- classic detectors
@pytest.mark.parametrize("est", ["iforest", "ocsvm", "lof"])
def test_conformal_detector_drops_labelled_others(est):
    rng = np.random.default_rng(0)
    X_g, X_o = rng.normal(size=(300, 3)), rng.normal(size=(100, 3)) + 6
    X, y = np.vstack([X_g, X_o]), np.r_[np.ones(300), -np.ones(100)]
    det = ConformalDetector(est, fnr=0.05, random_state=0).fit(X, y)
    assert det.estimator_.n_features_in_ == 3
    assert np.mean(det.predict(X_o) == -1) == 1.0
    assert np.mean(det.predict(rng.normal(size=(200, 3))) == 1) > 0.85


def test_conformal_detector_rejects_bad_estimator():
    with pytest.raises(ValueError, match="estimator"):
        ConformalDetector("knn").fit(np.zeros((10, 2)))


# ------------------------------------------------------------------------- pipelines
def test_rawpad_and_dctpad_pipelines(two_generators):
    X_g, X_other, X_g_new = two_generators
    X, y = np.concatenate([X_g, X_other[:100]]), np.r_[np.ones(300), -np.ones(100)]
    params = dict(hidden_sizes=(32,), rep_dim=8, n_epochs=5, batch_size=64)
    for pipe in (make_rawpad(fnr=0.05, random_state=0, device="cpu", detector_params=params),
                 make_dctpad(fnr=0.05, random_state=0, device="cpu", detector_params=params)):
        pipe.fit(X, y)
        assert isinstance(pipe[-1], FLIPADDetector) and pipe[-1].network == "mlp"
        s = pipe.score_samples(np.concatenate([X_g_new, X_other[100:]]))
        assert roc_auc_score(np.r_[np.ones(200), np.zeros(100)], s) > 0.8


def _tiny_conv_generator():
    g = torch.Generator().manual_seed(0)
    layer = nn.ConvTranspose2d(4, 1, 4, 2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
        layer.bias.zero_()
    return layer


def _acts(n, shift, seed):
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.normal(size=(n, 4, 6, 6)), 0)
    A[:, :2] += shift
    return A.astype(np.float32)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("detector", [None, "iforest", "ocsvm"])
def test_make_flipad(detector):
    layer = _tiny_conv_generator()

    def images(A):
        with torch.no_grad():
            return torch.tanh(layer(torch.from_numpy(A))).numpy()

    A_g, A_o = _acts(200, 0.0, 0), _acts(100, 1.5, 1)
    X = np.concatenate([images(A_g), images(A_o)])
    y = np.r_[np.ones(200), -np.ones(100)]
    anchor = A_g.mean(axis=0)
    pipe = make_flipad(layer, "tanh", anchor, alpha=1e-3, tol=1e-4, max_iter=200,
                       n_channels=3, detector=detector, fnr=0.05, random_state=0,
                       device="cpu",
                       detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=5))
    assert [n for n, _ in pipe.steps] == ["inv", "pool", "select", "scaler", "det"]
    pipe.fit(X, y)
    assert pipe.named_steps["select"].channels_.size == 3
    X_test = np.concatenate([images(_acts(100, 0.0, 2)), images(_acts(100, 1.5, 3))])
    s = pipe.score_samples(X_test)
    assert roc_auc_score(np.r_[np.ones(100), np.zeros(100)], s) > 0.9
    if detector is not None:
        assert isinstance(pipe[-1], ConformalDetector)


def test_make_flipad_errors():
    layer = _tiny_conv_generator()
    with pytest.raises(ValueError, match="activation_shape"):
        make_flipad(layer, "tanh")
    with pytest.raises(ValueError, match=r"\(K,\) or \(C, H, W\)"):
        make_flipad(layer, "tanh", activation_shape=(4, 6))
    pipe = make_flipad(nn.Linear(5, 3), "identity", pooling=None)
    assert [n for n, _ in pipe.steps] == ["inv", "select", "scaler", "det"]


# ------------------------------------------------------------ reconstruction distance
class BlockAutoencoder(nn.Module):
    """encode: 2x2 average pooling; decode: nearest upsampling.  decode(encode(x))
    reproduces images made of 2x2 blocks (the "decodes") exactly."""

    def encode(self, x):
        return nn.functional.avg_pool2d(x, 2)

    def decode(self, z):
        return (nn.functional.interpolate(z, scale_factor=2, mode="nearest"),)  # a tuple


def _decodes(n, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    z = torch.tensor(rng.uniform(-1, 1, size=(n, 3, 4, 4)), dtype=torch.float32)
    x = BlockAutoencoder().decode(z)[0].numpy()
    return x + noise * rng.normal(size=x.shape)


def test_reconstruction_distance_accepts_decodes_and_rejects_noise():
    X_g = _decodes(60, 0)
    det = ReconstructionDistance(BlockAutoencoder(), fnr=0.05, random_state=0).fit(X_g)
    np.testing.assert_allclose(det.validation_scores_, 0.0, atol=1e-12)   # exact decodes
    X_noise = np.random.default_rng(1).uniform(-1, 1, size=(40, 3, 8, 8))
    assert (det.predict(_decodes(30, 2)) == 1).all()
    assert (det.predict(X_noise) == -1).all()
    np.testing.assert_allclose(det.decision_function(X_noise),
                               det.score_samples(X_noise) - det.offset_)
    # the score is minus the mean squared reconstruction error
    ae = BlockAutoencoder()
    with torch.no_grad():
        t = torch.tensor(X_noise, dtype=torch.float32)
        rec = ae.decode(ae.encode(t))[0]
    np.testing.assert_allclose(-det.score_samples(X_noise),
                               ((rec - t) ** 2).mean(dim=(1, 2, 3)).double().numpy(),
                               rtol=1e-6)
    # less noise, closer: the score ranks the noise level
    X_mix = np.vstack([_decodes(20, 3, noise=0.01), _decodes(20, 4, noise=0.2)])
    assert roc_auc_score(np.r_[np.ones(20), -np.ones(20)], det.score_samples(X_mix)) == 1.0
    # conformal threshold: the (1 - fnr) rule on G's held-out samples with noise
    X_gn = _decodes(100, 5, noise=0.05)
    det = ReconstructionDistance(BlockAutoencoder(), fnr=0.1, validation_fraction=0.5,
                                 random_state=0).fit(X_gn)
    val = det.validation_scores_
    assert val.size == 50
    assert np.mean(val < -det.threshold_) <= 0.1           # held-out samples of G kept
    assert det.threshold_ == pytest.approx(conformal_threshold(-val, 0.1), abs=1e-9)
    back = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(back.score_samples(X_noise), det.score_samples(X_noise))


def test_reconstruction_distance_with_callables_and_options():
    ae = BlockAutoencoder()
    X_g, X_noise = _decodes(30, 0), np.random.default_rng(1).uniform(-1, 1, (10, 3, 8, 8))
    det = ReconstructionDistance(encode=ae.encode, decode=ae.decode, distance="l1",
                                 input_shape=(3, 8, 8), fnr=0.1, random_state=0)
    det.fit(X_g.reshape(30, -1))                       # flat images with input_shape
    assert (det.predict(X_noise.reshape(10, -1)) == -1).all()
    with torch.no_grad():
        t = torch.tensor(X_noise, dtype=torch.float32)
        l1 = (ae.decode(ae.encode(t))[0] - t).abs().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(-det.score_samples(X_noise), l1, rtol=1e-6)
    # a distance of the autoencoder's own features
    feat = ReconstructionDistance(
        ae, distance=lambda x, r: ((ae.encode(x) - ae.encode(r)) ** 2).sum(dim=(1, 2, 3)),
        fnr=0.1, random_state=0).fit(X_g)
    assert np.all(feat.score_samples(X_noise) <= 0)
    with pytest.raises(ValueError, match="autoencoder=<a module"):
        ReconstructionDistance().fit(X_g)
    with pytest.raises(ValueError, match="one per sample"):
        ReconstructionDistance(ae, distance=lambda x, r: torch.zeros(1)).fit(X_g)
    with pytest.raises(ValueError, match="decode\\(encode\\(x\\)\\) has shape"):
        ReconstructionDistance(encode=ae.encode, decode=lambda z: z).fit(X_g)


# ------------------------------------------------- what the estimator checks cannot see
class _ScaledBlockAutoencoder(BlockAutoencoder):
    """BlockAutoencoder with a parameter (kept at 1): something fit could alter."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def decode(self, z):
        return super().decode(self.gain * z)


def test_fit_leaves_the_torch_module_unchanged():
    """The module given as a parameter keeps its weights, mode and gradient flags.

    (check_estimators_overwrite_params cannot tell: it compares joblib hashes of a
    deepcopy, and a module's pickle holds its tensors' memory addresses.)"""
    G, ae = _TinyGenerator(0), _ScaledBlockAutoencoder()
    for module, det, X in (
            (G, LatentInversionDistance(G, n_steps=3, random_state=0), _samples(G, 10, 0)),
            (ae, ReconstructionDistance(ae, random_state=0), _decodes(10, 0))):
        module.train()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        det.fit(X).score_samples(X)
        assert module.training
        assert all(p.requires_grad for p in module.parameters())
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert det.get_params()["generator" if module is G else "autoencoder"] is module


def test_latent_inversion_score_depends_on_the_sample_only():
    """A sample's score is the same whatever it is scored with: alone, in another
    order, in other batches (every sample starts from the same seeded code)."""
    G = _TinyGenerator(0)
    X = _samples(_TinyGenerator(1), 12, 1)
    det = LatentInversionDistance(G, n_steps=20, batch_size=5, random_state=0)
    det.fit(_samples(G, 20, 0))
    s = det.score_samples(X)
    np.testing.assert_allclose(det.score_samples(X[::-1]), s[::-1], rtol=1e-6)
    np.testing.assert_allclose([det.score_samples(X[i:i + 1])[0] for i in (0, 7, 11)],
                               s[[0, 7, 11]], rtol=1e-6)
    assert det.latent_start_.shape == (4,)
    # another seed, another start
    other = LatentInversionDistance(G, n_steps=20, random_state=1).fit(_samples(G, 20, 0))
    assert not np.array_equal(other.latent_start_, det.latent_start_)


def test_reconstruction_distance_reversed_input():
    """Negatively strided input (X[::-1]) is scored like any other array."""
    X = _decodes(10, 0, noise=0.1)
    det = ReconstructionDistance(BlockAutoencoder(), batch_size=4, random_state=0).fit(X)
    np.testing.assert_allclose(det.score_samples(X[::-1]), det.score_samples(X)[::-1],
                               rtol=1e-6)


def test_dctpad_immunised_trains_and_calibrates_on_perturbed_images(two_generators):
    # make_dctpad(immunise=...) mirrors make_flipad: an ImmunisedPipeline whose fit sees
    # every training image (and the held-out samples of G) through the perturbation
    X_g, X_other, _ = two_generators
    X, y = np.concatenate([X_g, X_other[:100]]), np.r_[np.ones(300), -np.ones(100)]
    params = dict(hidden_sizes=(16,), rep_dim=4, n_epochs=2, batch_size=64)
    pipe = make_dctpad(fnr=0.05, random_state=0, device="cpu", detector_params=params,
                       immunise="published")
    assert isinstance(pipe, ImmunisedPipeline)
    assert isinstance(pipe.immunise, RandomPerturbation) and pipe.immunise.random_state == 0
    seen, original = [], ConformalPipeline.fit

    def spy(self, X, y=None, **kwargs):
        seen.append(np.asarray(X).copy())
        return original(self, X, y, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ConformalPipeline, "fit", spy)
        pipe.fit(X, y)
    assert len(seen) == 1 and seen[0].shape == X.shape and not np.array_equal(seen[0], X)
    np.testing.assert_array_equal(seen[0], pipe._immunised(X))   # seeded: reproducible
    plain = make_dctpad(fnr=0.05, random_state=0, device="cpu", detector_params=params)
    assert type(plain) is ConformalPipeline
    with pytest.raises(ValueError, match="immunise must be None, 'published'"):
        make_dctpad(immunise="jpeg")
    with pytest.raises(TypeError, match="immunise must be None, 'published'"):
        make_dctpad(immunise=3)
