"""Feature steps: pooling, channel selection, G-standardisation, DCT."""

import numpy as np
import pytest
import scipy.fft
from conftest import make_activations
from sklearn.base import clone

from flipad_sklearn import (
    ActivationPooling,
    ChannelSelector,
    DCTFeatures,
    GeneratorStandardScaler,
)


# ---------------------------------------------------------------- pooling
@pytest.mark.parametrize("method, kernel, expect", [
    ("max", 2, [5, 7, 13, 15]),
    ("avg", 2, [2.5, 4.5, 10.5, 12.5]),
    ("max", 3, [10]),                # trailing row/column dropped
    ("max", 10, [15]),               # kernel clipped to the map
])
def test_pooling_values(method, kernel, expect):
    X = np.arange(16.0)[None]
    out = ActivationPooling((1, 4, 4), method=method, kernel_size=kernel).fit_transform(X)
    np.testing.assert_array_equal(out[0], expect)


def test_pooling_matches_torch_and_keeps_channels():
    torch = pytest.importorskip("torch")
    X = np.random.default_rng(0).normal(size=(5, 3 * 8 * 6))
    for method, fn in [("max", torch.nn.functional.max_pool2d),
                       ("avg", torch.nn.functional.avg_pool2d)]:
        pool = ActivationPooling((3, 8, 6), method=method, kernel_size=2).fit(X)
        ref = fn(torch.tensor(X).reshape(5, 3, 8, 6), 2).reshape(5, -1).numpy()
        np.testing.assert_allclose(pool.transform(X), ref, rtol=1e-12)
        assert pool.output_shape_ == (3, 4, 3)


def test_center_crop():
    X = np.arange(2 * 6 * 6, dtype=float).reshape(1, 2, 6, 6)
    out = ActivationPooling(method="center_crop", crop_size=2).fit_transform(X)
    np.testing.assert_array_equal(out.reshape(2, 2, 2), X[0, :, 2:4, 2:4])
    pool = ActivationPooling((2, 6, 6), method="center_crop").fit(X.reshape(1, -1))
    assert pool.output_shape_ == (2, 3, 3)


def test_pooling_dtype_4d_and_shape_errors():
    X = make_activations(4, shape=(2, 4, 4)).astype(np.float32)
    pool = ActivationPooling((2, 4, 4)).fit(X)
    assert pool.transform(X).dtype == np.float32
    np.testing.assert_array_equal(pool.transform(X.reshape(4, 2, 4, 4)), pool.transform(X))
    assert len(pool.get_feature_names_out()) == 8
    with pytest.raises(ValueError, match="holds 27 values"):
        ActivationPooling((3, 3, 3)).fit(X)
    with pytest.raises(ValueError, match="three positive integers"):
        ActivationPooling((2, 16)).fit(X)
    with pytest.raises(ValueError, match="expecting 32 features"):
        pool.transform(X[:, :30])


# ---------------------------------------------------------------- channel selection
def test_channel_selector_keeps_differing_channels():
    shape = (5, 3, 3)
    rng = np.random.default_rng(0)
    G = rng.normal(size=(100, *shape))
    other = rng.normal(size=(80, *shape))
    other[:, 1] += 2.0
    other[:, 3] -= 1.0
    X = np.vstack([G, other]).reshape(180, -1)
    y = np.r_[np.ones(100), -np.ones(80)]
    sel = ChannelSelector(2, input_shape=shape).fit(X, y)
    np.testing.assert_array_equal(sel.channels_, [1, 3])
    assert np.argmax(sel.scores_) == 1
    out = sel.transform(X)
    np.testing.assert_array_equal(out, X.reshape(180, 5, 9)[:, [1, 3]].reshape(180, -1))
    assert sel.get_support().sum() == 18
    # Unlabelled samples (0) are ignored by the ranking.
    y0 = y.copy()
    y0[:20] = 0
    sel0 = ChannelSelector(2, input_shape=shape).fit(X, y0)
    np.testing.assert_array_equal(sel0.channels_, [1, 3])


def test_channel_selector_flat_features_and_clipping():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    y = np.r_[np.ones(30), -np.ones(30)]
    X[30:, 2] += 3
    sel = ChannelSelector(1).fit(X, y)
    np.testing.assert_array_equal(sel.transform(X), X[:, [2]])
    assert ChannelSelector(10).fit(X, y).transform(X).shape == (60, 4)


def test_channel_selector_passthrough_and_errors():
    X = make_activations(20)
    for y in (None, np.ones(20), np.r_[np.ones(10), np.zeros(10)]):
        sel = ChannelSelector(1, input_shape=(4, 6, 6)).fit(X, y)
        assert sel.scores_ is None
        np.testing.assert_array_equal(sel.transform(X), X)
    with pytest.raises(ValueError, match="both classes"):
        ChannelSelector(1, input_shape=(4, 6, 6)).fit(X, -np.ones(20))
    with pytest.raises(ValueError, match="NaN"):
        X_nan = X.copy()
        X_nan[0, 0] = np.nan
        ChannelSelector(1).fit(X_nan)


# ---------------------------------------------------------------- standardisation
def test_scaler_uses_g_statistics():
    rng = np.random.default_rng(0)
    G = rng.normal(3.0, 2.0, size=(500, 3))
    other = rng.normal(-5.0, 10.0, size=(200, 3))
    X, y = np.vstack([G, other]), np.r_[np.ones(500), -np.ones(200)]
    sc = GeneratorStandardScaler().fit(X, y)
    np.testing.assert_allclose(sc.mean_, G.mean(0))
    np.testing.assert_allclose(sc.scale_, G.std(0) + 0.05)
    assert sc.n_samples_seen_ == 500
    np.testing.assert_allclose(sc.transform(X), (X - G.mean(0)) / (G.std(0) + 0.05))
    np.testing.assert_allclose(sc.inverse_transform(sc.transform(X)), X)
    # No labels: all samples; eps is a parameter.
    sc2 = GeneratorStandardScaler(eps=0.0).fit(G)
    np.testing.assert_allclose(sc2.transform(G).std(0), 1.0)


def test_scaler_constant_feature():
    X = np.c_[np.ones(10), np.arange(10.0)]
    out = GeneratorStandardScaler().fit_transform(X)
    np.testing.assert_array_equal(out[:, 0], 0.0)  # eps keeps it finite
    with pytest.raises(ValueError, match="constant"):
        GeneratorStandardScaler(eps=0).fit(X)
    with pytest.raises(ValueError, match="only one class"):
        GeneratorStandardScaler().fit(X, -np.ones(10))


# ---------------------------------------------------------------- DCT
def test_dct_features():
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-1, 1, size=(3, 2, 8, 8))
    out = DCTFeatures(eps=1e-12).fit_transform(imgs)
    ref = np.log(np.abs(scipy.fft.dctn(imgs, axes=(-2, -1), norm="ortho")) + 1e-12)
    np.testing.assert_allclose(out, ref.reshape(3, -1))
    flat = DCTFeatures((2, 8, 8)).fit(imgs.reshape(3, -1))
    np.testing.assert_allclose(flat.transform(imgs.reshape(3, -1)), out)
    # A constant image has one non-zero coefficient; eps keeps the rest finite.
    const = DCTFeatures((1, 4, 4)).fit_transform(np.ones((1, 16)))
    assert np.isfinite(const).all() and const[0, 0] == pytest.approx(np.log(4.0))
    assert DCTFeatures().fit_transform(np.ones((2, 16), np.float32)).dtype == np.float32


def test_dct_features_tiles_are_jpeg_blocks():
    """block_size=8: the whole spectrum, then each 8x8 tile's DCT, as JPEG cuts the image."""
    rng = np.random.default_rng(1)
    imgs = rng.uniform(-1, 1, size=(2, 3, 16, 24))
    out = DCTFeatures(block_size=8).fit_transform(imgs)
    whole = DCTFeatures().fit_transform(imgs)
    assert out.shape == (2, 2 * 3 * 16 * 24)
    np.testing.assert_array_equal(out[:, :whole.shape[1]], whole)
    tiles = out[:, whole.shape[1]:].reshape(2, 3, 2, 8, 3, 8)
    # the tile in block row 1, block column 2 of channel 2
    ref = np.log(np.abs(scipy.fft.dctn(imgs[:, 2, 8:16, 16:24], axes=(-2, -1), norm="ortho"))
                 + 1e-12)
    np.testing.assert_allclose(tiles[:, 2, 1, :, 2, :], ref)
    # a tile of a constant 8x8 patch has one non-zero coefficient: DC = 8 x the value
    flat = np.zeros((1, 1, 8, 8)) + 0.5
    tile = DCTFeatures(block_size=8, eps=1e-300).fit_transform(flat)[:, 64:]
    assert tile[0, 0] == pytest.approx(np.log(4.0)) and (tile[0, 1:] < -600).all()


def test_dct_features_tiles_pad_by_repeating_the_edge():
    rng = np.random.default_rng(2)
    imgs = rng.uniform(-1, 1, size=(2, 1, 10, 5))
    est = DCTFeatures(block_size=4).fit(imgs)
    out = est.transform(imgs)
    padded = np.pad(imgs, ((0, 0), (0, 0), (0, 2), (0, 3)), mode="edge")
    ref = DCTFeatures(block_size=4).fit_transform(padded)[:, 12 * 8:]
    np.testing.assert_allclose(out[:, 50:], ref)
    names = est.get_feature_names_out()
    assert len(names) == out.shape[1] == 50 + 12 * 8
    assert names[49] == "x49" and names[50] == "tile_c0_y0_x0"
    # coefficient (u, v) = (1, 2) of the tile in tile row 2, column 1: row 9, column 6
    assert names[50 + 9 * 8 + 6] == "tile_c0_y9_x6"
    np.testing.assert_allclose(
        out[:, 50 + 9 * 8 + 6],
        np.log(np.abs(scipy.fft.dctn(padded[:, 0, 8:12, 4:8], axes=(-2, -1),
                                     norm="ortho")[:, 1, 2]) + 1e-12))
    for bad in (0, True, np.bool_(True)):   # True passed scikit-learn's Integral check
        with pytest.raises(ValueError, match="block_size"):
            DCTFeatures(block_size=bad).fit(imgs)
    # a side shorter than the block is one tile: rows of 5 read as 1x5 images,
    # whose one 1x5 tile is the whole row (no padding to 8x8)
    rows = rng.uniform(-1, 1, size=(3, 5))
    out = DCTFeatures(block_size=8).fit_transform(rows)
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out[:, 5:], out[:, :5])


def test_clone_and_params():
    for est in (ActivationPooling((1, 2, 2)), ChannelSelector(3), GeneratorStandardScaler(0.1),
                DCTFeatures((1, 2, 2))):
        assert clone(est).get_params() == est.get_params()


def test_set_output_pandas():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(make_activations(10, shape=(1, 2, 2)), columns=list("abcd"))
    out = GeneratorStandardScaler().set_output(transform="pandas").fit_transform(X)
    assert list(out.columns) == list("abcd")
    sel = ChannelSelector(1).set_output(transform="pandas").fit(X, np.r_[np.ones(5), -np.ones(5)])
    assert sel.transform(X).shape == (10, 1)
