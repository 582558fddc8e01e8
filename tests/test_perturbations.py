"""Blur, noise, JPEG and crop transformers."""

import numpy as np
import pytest
import scipy.ndimage
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from flipad_sklearn import (
    GaussianBlur, GaussianNoise, JPEGCompression, OutOfRangeWarning, Resize, ResizedCrop,
)

pytest.importorskip("PIL")

ALL = [GaussianBlur, GaussianNoise, JPEGCompression, Resize, ResizedCrop]

_INTEGER_IMAGES = ("integer images are refused with how to scale them into [-1, 1]: "
                   "clipped, they would lose their content")
EXPECTED_FAILED_CHECKS = {
    # seeded, the noise of an image depends on the image, not on its position
    "GaussianNoise": {"check_estimators_dtypes": _INTEGER_IMAGES},
    "JPEGCompression": {"check_estimators_dtypes": _INTEGER_IMAGES},
    "Resize": {"check_estimators_dtypes": _INTEGER_IMAGES},
}


# The checks' data are not images in [-1, 1]: the range warning is right there.
@pytest.mark.filterwarnings("ignore::flipad_sklearn.OutOfRangeWarning")
@parametrize_with_checks(
    [GaussianBlur(), GaussianBlur(sigma=0.0), GaussianNoise(random_state=0),
     JPEGCompression(quality=50), Resize(), Resize(scale=1.1), ResizedCrop(),
     ResizedCrop(scale=0.5)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    smooth = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, (6, 1, 16, 16)),
                                           sigma=(0, 0, 2, 2))
    return np.clip(smooth * 3, -1, 1)


def _make(cls, **kw):
    return cls(random_state=0, **kw) if cls is GaussianNoise else cls(**kw)


@pytest.mark.parametrize("cls", ALL)
def test_4d_and_flat_inputs_agree(cls, images):
    est = _make(cls)
    out4 = est.fit_transform(images)
    assert out4.shape == (6, 256) and est.input_shape_ == (1, 16, 16)
    flat = _make(cls, input_shape=(1, 16, 16)).fit_transform(images.reshape(6, -1))
    np.testing.assert_array_equal(out4, flat)
    out32 = _make(cls).fit_transform(images.astype(np.float32))
    assert out32.dtype == np.float32
    assert np.all(np.isfinite(out4)) and out4.min() >= -1 - 1e-9 and out4.max() <= 1 + 1e-9
    assert not np.allclose(out4, images.reshape(6, -1))  # it does perturb


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_is_refused(cls, images):
    bad = images.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _make(cls).fit(bad)
    est = _make(cls).fit(images)
    with pytest.raises(ValueError, match="NaN"):
        est.transform(bad)
    with pytest.raises(ValueError, match="features"):
        est.transform(images[:, :, :8, :8].reshape(6, -1))
    with pytest.raises(ValueError, match="shape"):
        est.transform(images.reshape(6, 1, 8, 32))
    with pytest.raises(ValueError):
        est.transform(images[:, 0])  # 3-D
    with pytest.raises(ValueError, match="input_shape"):
        _make(cls, input_shape=(1, 8, 8)).fit(images.reshape(6, -1))
    with pytest.raises(ValueError, match="input_shape"):
        _make(cls, input_shape=(1, 8, 32)).fit(images)


def test_blur(images):
    out = GaussianBlur(sigma=1.5).fit_transform(images).reshape(images.shape)
    expected = scipy.ndimage.gaussian_filter(images[2, 0], 1.5, mode="reflect")
    np.testing.assert_allclose(out[2, 0], expected, atol=1e-12)
    assert out.var() < images.var()
    np.testing.assert_array_equal(GaussianBlur(sigma=0).fit_transform(images),
                                  images.reshape(6, -1))
    # channels are blurred separately
    two = np.concatenate([images[:, :1], -images[:, :1]], axis=1)
    out2 = GaussianBlur(sigma=1.0).fit_transform(two).reshape(two.shape)
    np.testing.assert_allclose(out2[:, 0], -out2[:, 1], atol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(sigma=-1).fit(images)


def test_noise_seeded_and_sized(images):
    # 50 different images in [-0.5, 0.5]: no clipping, the noise is what is added
    base = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 1, 16, 16))
    a = GaussianNoise(std=0.1, random_state=3).fit(base)
    np.testing.assert_array_equal(a.transform(base), a.transform(base))
    b = GaussianNoise(std=0.1, random_state=4).fit_transform(base) - base.reshape(50, -1)
    assert not np.allclose(a.transform(base), b)
    assert abs(b.std() - 0.1) < 0.005 and abs(b.mean()) < 0.005
    fresh = GaussianNoise(std=0.1).fit(base)
    assert not np.allclose(fresh.transform(base), fresh.transform(base))
    # seeded by image: identical images get identical noise
    zeros = GaussianNoise(std=0.1, random_state=3).fit_transform(np.zeros((3, 1, 4, 4)))
    np.testing.assert_array_equal(zeros[0], zeros[2])
    ones = np.ones((4, 1, 16, 16))
    clipped = GaussianNoise(std=0.5, random_state=0).fit_transform(ones)
    assert clipped.max() == 1.0 and clipped.min() >= -1.0
    free = GaussianNoise(std=0.5, clip=False, random_state=0).fit_transform(ones)
    assert free.max() > 1.0
    np.testing.assert_array_equal(GaussianNoise(std=0).fit_transform(images),
                                  images.reshape(6, -1))


def test_jpeg(images):
    err = {q: np.abs(JPEGCompression(quality=q).fit_transform(images)
                     - images.reshape(6, -1)).mean() for q in (10, 50, 95)}
    assert err[95] < err[50] < err[10]
    assert err[95] < 0.02
    out = JPEGCompression(quality=75).fit_transform(images)
    np.testing.assert_allclose((out + 1) * 127.5, np.rint((out + 1) * 127.5), atol=1e-9)
    rgb = np.repeat(images[:, :, None], 3, axis=2).reshape(6, 3, 16, 16)
    rgb[:, 0] *= -1
    out_rgb = JPEGCompression(quality=90).fit_transform(rgb).reshape(rgb.shape)
    assert np.abs(out_rgb - rgb).mean() < 0.05
    with pytest.raises(ValueError, match="channels"):
        JPEGCompression().fit(np.zeros((2, 2, 8, 8)))
    # values outside [-1, 1] are clipped, as any 8-bit format would, with a warning
    with pytest.warns(OutOfRangeWarning):
        out = JPEGCompression(quality=95).fit_transform(np.full((1, 1, 8, 8), 3.0))
    assert out.max() == 1.0


def test_resized_crop(images):
    np.testing.assert_array_equal(ResizedCrop(scale=1.0).fit_transform(images),
                                  images.reshape(6, -1))
    const = np.full((2, 3, 10, 10), 0.25)
    np.testing.assert_allclose(ResizedCrop(scale=0.5).fit_transform(const), 0.25)
    # a horizontal ramp: the centre crop stretched back is a steeper ramp,
    # symmetric around the centre, within the input's range
    ramp = np.tile(np.linspace(-1, 1, 16), (1, 1, 16, 1))
    out = ResizedCrop(scale=0.5).fit_transform(ramp).reshape(16, 16)
    assert np.all(np.diff(out[0]) > 0)
    assert out[0, -1] - out[0, 0] < 1.1 and abs(out[0].mean()) < 1e-9
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="scale"):
        ResizedCrop(scale=0).fit(images)
    with pytest.raises(ValueError, match="scale"):
        ResizedCrop(scale=1.5).fit(images)


def test_in_a_pipeline_and_clone(images):
    """Chained perturbations (each step gets flat input and its input_shape)."""
    pipe = make_pipeline(JPEGCompression(quality=80),
                         GaussianBlur(sigma=0.5, input_shape=(1, 16, 16)))
    out = pipe.fit_transform(images)
    assert out.shape == (6, 256)
    est = clone(GaussianNoise(std=0.2, random_state=1, input_shape=(1, 16, 16)))
    assert est.get_params()["std"] == 0.2 and not hasattr(est, "input_shape_")


def test_resize_is_an_8bit_resize_and_back(images):
    from PIL import Image

    X8 = np.rint((images + 1) * 127.5) / 127.5 - 1
    # at scale 1 only the 8-bit quantisation remains
    np.testing.assert_allclose(Resize(scale=1.0).fit_transform(images), X8.reshape(6, -1))
    for scale, size in ((0.9, 14), (1.1, 18)):
        out = Resize(scale=scale).fit_transform(images).reshape(images.shape)
        pix = np.rint((out + 1) * 127.5)
        np.testing.assert_allclose(out, pix / 127.5 - 1, atol=1e-12)   # 8-bit output
        first = Image.fromarray(np.rint((images[0, 0] + 1) * 127.5).astype(np.uint8))
        want = np.asarray(first.resize((size, size), Image.Resampling.BICUBIC)
                          .resize((16, 16), Image.Resampling.BICUBIC), dtype=float)
        np.testing.assert_array_equal(pix[0, 0], want)
        assert 0 < np.abs(out - X8).max() < 0.5
    rgb = np.repeat(images, 3, axis=1)
    out = Resize(scale=0.9).fit_transform(rgb).reshape(rgb.shape)
    np.testing.assert_allclose(out[:, 0], out[:, 2])
    with pytest.raises(ValueError, match="scale"):
        Resize(scale=0).fit(images)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        Resize().fit(np.zeros((2, 2, 4, 4)))


# ------------------------------------------------------------ jpeg_quality
def _jpeg_file(tmp_path, pixels, name="x.jpg", **save):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(pixels).save(path, **save)
    return path


@pytest.fixture
def rgb_pixels():
    return (np.random.default_rng(3).random((24, 24, 3)) * 255).astype(np.uint8)


def test_jpeg_quality_reads_every_quality_pillow_writes(tmp_path, rgb_pixels):
    from flipad_sklearn.perturbations import JPEGQuality, jpeg_quality

    for q in range(1, 101):
        got = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, quality=q))
        assert got == JPEGQuality(q, True, "4:2:0"), q
    for q in (5, 50, 73, 96):
        assert jpeg_quality(_jpeg_file(tmp_path, rgb_pixels[..., 0], "g.jpg", quality=q)) \
            == JPEGQuality(q, True, None)
    assert jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, "p.png")) is None


def test_jpeg_quality_names_what_jpegcompression_does_not_write(tmp_path, rgb_pixels):
    from PIL import Image

    from flipad_sklearn.perturbations import jpeg_quality

    # other subsampling: same quality, but not JPEGCompression's file
    got = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, quality=80, subsampling=0))
    assert (got.quality, got.exact, got.subsampling) == (80, False, "4:4:4")
    # tables of no quality (another encoder's): the nearest, not exact
    with Image.open(_jpeg_file(tmp_path, rgb_pixels, quality=60)) as img:
        tables = {k: [min(255, round(v * 1.04)) for v in t]
                  for k, t in img.quantization.items()}
    got = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, "s.jpg", qtables=tables))
    assert not got.exact and 57 <= got.quality <= 60
    # an opened image works as a file does
    with Image.open(_jpeg_file(tmp_path, rgb_pixels, quality=42)) as img:
        assert jpeg_quality(img).quality == 42


def test_jpeg_quality_matches_jpegcompression(tmp_path, rgb_pixels):
    """A file saved at the quality jpeg_quality tells reads back as JPEGCompression of the
    same 8-bit image: a detector immunised with it sees what the file holds."""
    from flipad_sklearn.perturbations import jpeg_quality
    from flipad_sklearn.verdicts import read_images

    path = _jpeg_file(tmp_path, rgb_pixels, quality=77)
    X, ok, _ = read_images([str(path)], (3, 24, 24))
    image = rgb_pixels.transpose(2, 0, 1)[None] / 127.5 - 1.0
    q = jpeg_quality(path).quality
    np.testing.assert_allclose(JPEGCompression(quality=q).fit_transform(image),
                               X.reshape(1, -1), atol=1e-6)


def test_jpeg_quality_other_table_layouts(tmp_path, rgb_pixels):
    """Review of the first version: three tables (one per component) read as q1, one table
    for a colour image as Pillow's, a zero step gave log(0), a lying frame header an
    IndexError."""
    import warnings

    from PIL import Image

    from flipad_sklearn.perturbations import jpeg_quality

    with Image.open(_jpeg_file(tmp_path, rgb_pixels, quality=85)) as img:
        t = {k: list(v) for k, v in img.quantization.items()}
    three = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, "3.jpg", qtables=[t[0], t[1], t[1]]))
    one = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, "1.jpg", qtables=[t[0]]))
    assert (three.quality, one.quality) == (85, 85)
    assert not three.exact and not one.exact          # not the layout Pillow writes
    zero = [list(t[0]), list(t[1])]
    zero[0][0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = jpeg_quality(_jpeg_file(tmp_path, rgb_pixels, "0.jpg", qtables=zero))
    assert 80 <= got.quality <= 90 and not got.exact
    # a frame header announcing 3 components and listing 2 (Pillow's get_sampling fails)
    data = _jpeg_file(tmp_path, rgb_pixels, "f.jpg", quality=80).read_bytes()
    k = data.index(b"\xff\xc0")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[:k + 2] + (14).to_bytes(2, "big") + data[k + 4:k + 16] + data[k + 19:])
    assert jpeg_quality(bad).quality == 80
