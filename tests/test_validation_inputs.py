"""Bad or ambiguous inputs get a clear error or warning, never a silent wrong answer.

Each test here failed before the fix it guards (issue 11): the inputs were
accepted and gave wrong numbers, or failed deep inside with a raw traceback.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn._device import resolve_device

# tiny solves with few iterations: their convergence is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ----------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["mps", "gpu", "xla", "CPU"])
def test_unsupported_device_names_the_supported_ones(device):
    with pytest.raises(ValueError, match="not supported.*'cpu', 'cuda'"):
        resolve_device(device)
    layer = nn.Linear(6, 3)
    x = np.zeros((2, 3))
    # refused at fit, before any work, not at the first transform
    with pytest.raises(ValueError, match="not supported"):
        FinalLayerInverter(layer=layer, device=device).fit(x)


def test_meta_layer_is_refused_at_fit():
    with torch.device("meta"):
        layer = nn.Linear(6, 3)
    with pytest.raises(ValueError, match="meta device.*load_state_dict"):
        FinalLayerInverter(layer=layer, solver="cd").fit(np.zeros((2, 3)))


# ------------------------------------------------- out-of-range images
def _conv_problem(seed=0):
    """A ConvTranspose2d layer and four tanh outputs of it, (4, 3, 8, 8) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        h = torch.relu(torch.randn((4, 4, 4, 4), generator=gen))
        x = torch.tanh(layer(h)).numpy().astype(np.float64)
    return layer, x


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, bool])
def test_integer_images_are_refused_with_the_scaling(dtype):
    layer, x = _conv_problem()
    pixels = np.rint((x + 1) * 127.5).astype(dtype)
    with pytest.raises(ValueError, match=r"X / 127\.5 - 1"):
        FinalLayerInverter(layer=layer, device="cpu").fit(pixels)
    inv = FinalLayerInverter(layer=layer, device="cpu", max_iter=5).fit(x)
    with pytest.raises(ValueError, match="dtype"):
        inv.transform(pixels)
    with pytest.raises(ValueError, match=r"X / 255 for a sigmoid"):
        FinalLayerInverter(layer=layer, activation="sigmoid", device="cpu").fit(pixels)
    # identity has no range: integers are plain numbers there
    FinalLayerInverter(layer=layer, activation="identity", device="cpu").fit(pixels)


def test_images_on_another_scale_warn():
    from flipad_sklearn import OutOfRangeWarning

    layer, x = _conv_problem()
    inv = FinalLayerInverter(layer=layer, device="cpu", max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        warnings.simplefilter("ignore", UserWarning)         # convergence
        inv.fit(x).transform(x)                              # in range: silent
        x_sat = x.copy()
        x_sat.flat[:3] = [1.0, -1.0, 1.0 + 1e-7]              # a few saturated: silent
        inv.transform(x_sat)
    pixels = (x + 1) * 127.5                                 # floats in [0, 255]
    with pytest.warns(OutOfRangeWarning, match=r"outside \[-1, 1\].*X / 127\.5 - 1"):
        inv.transform(pixels)
    assert issubclass(OutOfRangeWarning, UserWarning)


def test_jpeg_and_noise_refuse_integer_and_warn_on_0_255_floats():
    from flipad_sklearn import GaussianBlur, GaussianNoise, JPEGCompression, OutOfRangeWarning

    _, x = _conv_problem()
    pixels = np.rint((x + 1) * 127.5)
    for est in (JPEGCompression(quality=90), GaussianNoise(std=0.1, random_state=0)):
        with pytest.raises(ValueError, match=r"X / 127\.5 - 1"):
            est.fit(pixels.astype(np.uint8))
        est.fit(x)
        with pytest.raises(ValueError, match="dtype"):
            est.transform(pixels.astype(np.uint8))
        with pytest.warns(OutOfRangeWarning, match=type(est).__name__):
            est.transform(pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("error", OutOfRangeWarning)
            est.transform(x)
    # blur is linear: right on any scale, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        out = GaussianBlur(sigma=1.0).fit_transform(pixels.astype(np.uint8))
    np.testing.assert_allclose(out, GaussianBlur(sigma=1.0).fit_transform(pixels))


# ----------------------------------------------------------- activations
@pytest.mark.parametrize("spelling", [
    nn.Tanh(), nn.Tanh, torch.tanh, torch.nn.functional.tanh, torch.atanh,
])
def test_torch_tanh_spellings_mean_tanh(spelling):
    lin = nn.Linear(6, 3)
    x = np.tanh(np.random.default_rng(0).normal(size=(5, 3)))
    ref = FinalLayerInverter(layer=lin, solver="cd", alpha=1e-3).fit(x).transform(x)
    z = FinalLayerInverter(layer=lin, activation=spelling, solver="cd", alpha=1e-3
                           ).fit(x).transform(x)
    np.testing.assert_array_equal(z, ref)


@pytest.mark.parametrize("spelling,name", [
    (nn.Sigmoid(), "sigmoid"), (torch.sigmoid, "sigmoid"), (torch.logit, "sigmoid"),
    (torch.special.expit, "sigmoid"), (nn.Identity(), "identity"),
])
def test_torch_sigmoid_and_identity_spellings(spelling, name):
    from flipad_sklearn.activations import BUILTIN_ACTIVATIONS, get_activation

    assert get_activation(spelling) is BUILTIN_ACTIVATIONS[name]


def test_forward_map_given_as_inverse_is_refused():
    import scipy.special

    from flipad_sklearn.activations import get_activation

    lin = nn.Linear(6, 3)
    x = np.tanh(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"numpy\.tanh computes tanh itself.*'tanh'"):
        FinalLayerInverter(layer=lin, activation=np.tanh, solver="cd").fit(x)
    with pytest.raises(ValueError, match="computes sigmoid itself.*'sigmoid'"):
        get_activation(scipy.special.expit)
    with pytest.raises(ValueError, match="computes tanh itself"):
        get_activation(lambda v: np.tanh(v))                 # found by the probe
    with pytest.raises(ValueError, match="swapped"):
        get_activation((np.arctanh, np.tanh))
    with pytest.raises(ValueError, match="not inverse to each other"):
        get_activation((np.tanh, scipy.special.logit))
    with pytest.raises(ValueError, match="not an invertible"):
        get_activation(nn.ReLU())
    # true inverses and consistent pairs are still accepted
    for ok in (np.arctanh, scipy.special.logit, (np.tanh, np.arctanh),
               (scipy.special.expit, scipy.special.logit), (torch.tanh, np.arctanh)):
        get_activation(ok)


# --------------------------------------------------------- 4-D layouts
def _activations(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, 4, 6, 3)), 0)


def test_feature_steps_refuse_another_layout_of_the_same_size():
    from flipad_sklearn import (
        ActivationPooling, ChannelSelector, DCTFeatures, GeneratorStandardScaler,
    )

    A = _activations()
    nhwc = np.ascontiguousarray(A.transpose(0, 2, 3, 1))     # (n, 6, 3, 4): same size
    y = np.r_[np.ones(20), -np.ones(20)]
    for est in (ActivationPooling(), ChannelSelector(n_channels=2), DCTFeatures(),
                GeneratorStandardScaler()):
        est.fit(A, y)
        ref = est.transform(A)
        with pytest.raises(ValueError, match=r"shape \(6, 3, 4\).*\(4, 6, 3\).*transpose"):
            est.transform(nhwc)
        # flat input in the fitted order is still read as before
        np.testing.assert_array_equal(est.transform(A.reshape(len(A), -1)), ref)


def test_detector_refuses_another_layout_of_the_same_size():
    from flipad_sklearn import FLIPADDetector

    A = _activations(60)
    det = FLIPADDetector("mlp", n_epochs=1, fnr=0.1, hidden_sizes=(4,), rep_dim=2,
                         device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(A)
    with pytest.raises(ValueError, match=r"shape \(6, 4, 3\)"):
        det.score_samples(np.ascontiguousarray(A.transpose(0, 2, 1, 3)))
    np.testing.assert_array_equal(det.score_samples(A.reshape(60, -1)), det.score_samples(A))


# ------------------------------------------------------------ image folders
def _png(path, value=128, size=4):
    from PIL import Image

    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_image_folder_reports_links_and_sub_folders(tmp_path):
    pytest.importorskip("PIL")
    from flipad_sklearn.datasets import load_image_folder

    _png(tmp_path / "a.png")
    (tmp_path / "b_dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "c_sub").mkdir()
    _png(tmp_path / "c_sub" / "inner.png")
    with pytest.warns(UserWarning, match="2 of 3"):
        X, paths, errors = load_image_folder(tmp_path, 4)
    assert X.shape == (1, 1, 4, 4)
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in errors}
    assert reasons["b_dangling.png"].startswith("skipped: broken symbolic link")
    assert "sub-folder" in reasons["c_sub"] and "recursive=True" in reasons["c_sub"]
    # recursive: the sub-folder is read, the dangling link is still reported
    X, paths, errors = load_image_folder(tmp_path, 4, recursive=True, warn=False)
    assert len(X) == 2 and [p.rsplit("/", 1)[-1] for p, _ in errors] == ["b_dangling.png"]


def test_empty_image_folder_is_an_error(tmp_path):
    pytest.importorskip("PIL")
    from flipad_sklearn.datasets import load_image_folder

    with pytest.raises(ValueError, match="is empty"):
        load_image_folder(tmp_path, 4)
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(ValueError, match="No image could be loaded.*notes.txt: skipped"):
        load_image_folder(tmp_path, 4)


# --------------------------------------------------------- model selection
def _search_data(seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(30, 4)), rng.normal(3.0, 1.0, size=(30, 4))])
    return X, np.r_[np.ones(30), -np.ones(30)].astype(int)       # sorted: G first


def test_label_stratified_kfold_puts_both_sources_in_every_fold():
    from sklearn.model_selection import KFold

    from flipad_sklearn.model_selection import LabelStratifiedKFold

    X, y = _search_data()
    y = y.copy()
    y[25:30] = 0                                                 # a few unlabelled
    # the default cv of a non-classifier: folds without G or without others
    assert any(len(set(y[test]) - {0}) < 2 for _, test in KFold(3).split(X, y))
    folds = list(LabelStratifiedKFold(3).split(X, y))
    for train, test in folds:
        assert {1, -1} <= set(y[test]) and {1, -1} <= set(y[train])
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(60))
    with pytest.raises(ValueError, match="2 known others.*at least 3"):
        list(LabelStratifiedKFold(3).split(X[:32], y[:32]))
    with pytest.raises(ValueError, match="only 1, -1 and 0"):
        list(LabelStratifiedKFold(3).split(X, np.where(y == 1, 2, y)))


def test_grid_search_with_unlabelled_samples_and_sorted_y():
    from sklearn.model_selection import GridSearchCV

    from flipad_sklearn import FLIPADDetector
    from flipad_sklearn.model_selection import LabelStratifiedKFold, labelled_roc_auc

    X, y = _search_data()
    y[25:30] = 0
    det = FLIPADDetector("mlp", hidden_sizes=(8,), rep_dim=4, n_epochs=3, fnr=0.1,
                         device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # few validation samples
        plain = GridSearchCV(det, {"eta": [1.0]}, scoring="roc_auc", cv=3).fit(X, y)
        search = GridSearchCV(det, {"eta": [1.0]}, scoring=labelled_roc_auc,
                              cv=LabelStratifiedKFold(3), error_score="raise").fit(X, y)
    assert np.isnan(plain.cv_results_["mean_test_score"][0])      # what users got
    scores = [search.cv_results_[f"split{k}_test_score"][0] for k in range(3)]
    assert all(0.7 < s <= 1.0 for s in scores), scores            # well separated sources
    # a fold without known others: a clear error, not nan
    fitted = search.best_estimator_ if hasattr(search, "best_estimator_") else det.fit(X, y)
    with pytest.raises(ValueError, match="0 known others.*LabelStratifiedKFold"):
        labelled_roc_auc(fitted, X[:30], y[:30])
