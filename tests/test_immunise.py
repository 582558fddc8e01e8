"""Immunisation without naming the perturbation (issue 27, item 2):
RandomPerturbation, ImmunisedPipeline and make_flipad(immunise=...)."""

import joblib
import numpy as np
import pytest
import scipy.ndimage
import torch
from sklearn.base import clone
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from flipad_sklearn import (
    ConformalPipeline, GaussianBlur, GaussianNoise, GeneratorStandardScaler, JPEGCompression,
    RandomPerturbation, Resize, ResizedCrop,
)
from flipad_sklearn.detection import ConformalDetector
from flipad_sklearn.perturbations import published_mixture
from flipad_sklearn.pipeline import ImmunisedPipeline, make_flipad

pytest.importorskip("PIL")
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _images(n, seed, shift=0.0, size=8):
    rng = np.random.default_rng(seed)
    smooth = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, (n, 1, size, size)),
                                           sigma=(0, 0, 1.5, 1.5))
    return np.clip(smooth * 2 + shift, -1, 1)


# ------------------------------------------------------------ RandomPerturbation
def test_published_mixture_is_what_the_docs_say():
    kinds = published_mixture()
    assert kinds[0] is None
    assert [t.quality for t in kinds[1]] == list(range(70, 96))
    assert all(isinstance(t, Resize) for t in kinds[2])
    assert [t.scale for t in kinds[2]][0] == 0.9 and [t.scale for t in kinds[2]][-1] == 1.1
    assert all(isinstance(t, ResizedCrop) and 0.9 <= t.scale <= 1.0 for t in kinds[3])


def test_random_perturbation_draws_each_kind_by_its_weight():
    X = _images(400, 0)
    est = RandomPerturbation([None, GaussianBlur(sigma=1.0)], weights=[3, 1],
                             random_state=0).fit(X)
    Xt = est.transform(X)
    blurred = GaussianBlur(sigma=1.0).fit_transform(X)
    same = np.all(Xt == X.reshape(400, -1), axis=1)
    is_blur = np.all(Xt == blurred, axis=1)
    assert np.all(same | is_blur) and not np.any(same & is_blur)
    assert 0.2 < is_blur.mean() < 0.3            # weight 1 of 4
    np.testing.assert_allclose(est.weights_, [0.75, 0.25])
    # seeded: the same draws every time, and for a clone
    np.testing.assert_array_equal(Xt, est.transform(X))
    np.testing.assert_array_equal(Xt, clone(est).fit_transform(X))
    assert not np.array_equal(Xt, RandomPerturbation(
        [None, GaussianBlur(sigma=1.0)], random_state=1).fit_transform(X))


def test_random_perturbation_strengths_and_a_single_kind():
    X = _images(60, 1)
    # one kind at one strength: that perturbation
    one = RandomPerturbation([JPEGCompression(quality=50)], random_state=0).fit_transform(X)
    np.testing.assert_array_equal(one, JPEGCompression(quality=50).fit_transform(X))
    # one kind at two strengths: every image gets one of them, both occur
    Xt = RandomPerturbation([[GaussianBlur(sigma=0.5), GaussianBlur(sigma=2.0)]],
                            random_state=0).fit_transform(X)
    a, b = (GaussianBlur(sigma=s).fit_transform(X) for s in (0.5, 2.0))
    in_a, in_b = np.all(Xt == a, axis=1), np.all(Xt == b, axis=1)
    assert np.all(in_a | in_b) and in_a.any() and in_b.any()
    # the default mixture perturbs most images, within [-1, 1], float32 kept
    Xp = RandomPerturbation(random_state=0).fit_transform(_images(40, 2, size=16)
                                                          .astype(np.float32))
    assert Xp.dtype == np.float32 and np.abs(Xp).max() <= 1


@pytest.mark.parametrize("params, error, match", [
    (dict(perturbations=[]), ValueError, "at least one kind"),
    (dict(perturbations=[None, []]), ValueError, "empty list"),
    (dict(perturbations=[None, "jpeg"]), TypeError, "transformer"),
    (dict(perturbations="jpeg"), ValueError, "perturbations"),
    (dict(perturbations=[None, GaussianBlur()], weights=[1.0]), ValueError, "weights"),
    (dict(perturbations=[None, GaussianBlur()], weights=[1.0, -1.0]), ValueError, "weights"),
    (dict(perturbations=[None, GaussianBlur()], weights=[0.0, 0.0]), ValueError, "weights"),
    (dict(perturbations=[None, GaussianBlur()], weights=[1.0, np.nan]), ValueError,
     "weights"),
])
def test_random_perturbation_bad_parameters(params, error, match):
    with pytest.raises(error, match=match):
        RandomPerturbation(**params).fit(_images(4, 0))


def test_random_perturbation_checks_channels_at_fit():
    X2 = np.zeros((3, 2, 8, 8))
    with pytest.raises(ValueError, match="JPEGCompression in the mixture"):
        RandomPerturbation(random_state=0).fit(X2)
    RandomPerturbation([None, GaussianBlur()], random_state=0).fit(X2)   # blur: any


_POSITION = "the perturbation drawn for a sample depends on its position in the batch"


@pytest.mark.filterwarnings("ignore::flipad_sklearn.OutOfRangeWarning")
@parametrize_with_checks(
    [RandomPerturbation([None, GaussianBlur(sigma=1.0), JPEGCompression(quality=50)],
                        random_state=0)],
    expected_failed_checks=lambda est: {
        "check_methods_subset_invariance": _POSITION,
        "check_methods_sample_order_invariance": _POSITION,
        "check_estimators_dtypes": "integer images are refused (JPEG in the mixture)",
    },
)
def test_random_perturbation_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------ ImmunisedPipeline
def _detector_pipe(cls, **kw):
    return cls([("scaler", GeneratorStandardScaler()),
                ("det", ConformalDetector("ocsvm", fnr=0.05, random_state=0))], **kw)


def test_immunised_pipeline_is_a_conformal_pipeline_fitted_on_perturbed_inputs():
    X = _images(300, 0).reshape(300, -1)
    noise = GaussianNoise(std=0.3, random_state=0)
    imm = _detector_pipe(ImmunisedPipeline, immunise=noise).fit(X)
    ref = _detector_pipe(ConformalPipeline).fit(clone(noise).fit_transform(X))
    # the held-out samples of G that set the threshold were perturbed too
    np.testing.assert_array_equal(imm[-1].validation_scores_, ref[-1].validation_scores_)
    assert imm.offset_ == ref.offset_
    # scoring takes inputs as they come: no perturbation at predict
    X_new = _images(50, 5).reshape(50, -1)
    np.testing.assert_array_equal(imm.score_samples(X_new), ref.score_samples(X_new))
    np.testing.assert_array_equal(imm.score_samples(X_new), imm.score_samples(X_new))


def test_immunised_pipeline_keeps_g_under_the_perturbation():
    """Fails without immunisation: G's perturbed images fall below a clean threshold."""
    X = _images(300, 0).reshape(300, -1)
    noisy_g = GaussianNoise(std=0.3, random_state=7).fit_transform(_images(200, 3))
    clean = _detector_pipe(ConformalPipeline).fit(X)
    imm = _detector_pipe(ImmunisedPipeline,
                         immunise=GaussianNoise(std=0.3, random_state=0)).fit(X)
    assert np.mean(clean.predict(noisy_g) == 1) < 0.5
    assert np.mean(imm.predict(noisy_g) == 1) > 0.85


def test_immunised_pipeline_params_slices_and_pickling(tmp_path):
    X = _images(200, 0).reshape(200, -1)
    pipe = _detector_pipe(ImmunisedPipeline, immunise=GaussianBlur(sigma=1.0))
    assert clone(pipe).get_params()["immunise"].sigma == 1.0
    assert pipe[:1].immunise is pipe.immunise and pipe[1:].immunise is None
    pipe.fit(X)
    joblib.dump(pipe, tmp_path / "p.joblib")
    back = joblib.load(tmp_path / "p.joblib")
    np.testing.assert_array_equal(back.score_samples(X), pipe.score_samples(X))
    with pytest.raises(ValueError, match="one perturbed input per input"):
        _detector_pipe(ImmunisedPipeline,
                       immunise=FunctionTransformer(lambda A: A[:, :-1])).fit(X)


_FITS_ITS_STEPS = ("a pipeline fits the estimators of its steps in place (scikit-learn's "
                   "Pipeline does too)")


@parametrize_with_checks(
    [ImmunisedPipeline([("scaler", GeneratorStandardScaler()),
                        ("det", ConformalDetector(fnr=0.1, random_state=0))],
                       immunise=GaussianBlur(sigma=0.5))],
    expected_failed_checks=lambda est: {
        "check_estimators_overwrite_params": _FITS_ITS_STEPS,
        "check_dont_overwrite_parameters": _FITS_ITS_STEPS,
    },
)
@pytest.mark.filterwarnings("ignore::flipad_sklearn.ThresholdWarning")
@pytest.mark.filterwarnings("ignore:.*labels are not in:UserWarning")
@pytest.mark.filterwarnings("ignore:All validation samples:RuntimeWarning")
def test_immunised_pipeline_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------ make_flipad(immunise=)
def _layer():
    g = torch.Generator().manual_seed(0)
    layer = nn.ConvTranspose2d(4, 1, 4, 2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
        layer.bias.zero_()
    return layer


def test_make_flipad_immunise_parameter():
    layer, anchor = _layer(), np.zeros((4, 6, 6))
    plain = make_flipad(layer, "tanh", anchor, random_state=0, device="cpu")
    assert type(plain) is ConformalPipeline
    pipe = make_flipad(layer, "tanh", anchor, random_state=3, device="cpu",
                       immunise="published")
    assert isinstance(pipe, ImmunisedPipeline) and isinstance(pipe, ConformalPipeline)
    imm = pipe.immunise
    assert isinstance(imm, RandomPerturbation) and imm.perturbations == "published"
    assert imm.random_state == 3 and imm.input_shape == (1, 12, 12)   # G's image shape
    assert pipe.quantize == "uint8" and pipe.input_range == (-1.0, 1.0)
    given = JPEGCompression(quality=80)
    assert make_flipad(layer, "tanh", anchor, device="cpu", immunise=given).immunise is given
    with pytest.raises(ValueError, match="immunise"):
        make_flipad(layer, "tanh", anchor, device="cpu", immunise="jpeg")
    with pytest.raises(TypeError, match="immunise"):
        make_flipad(layer, "tanh", anchor, device="cpu", immunise=3)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_make_flipad_immunised_fits_on_flattened_images():
    """The default mixture needs the image shape: make_flipad gives it, so
    flattened images are perturbed as images (JPEG of a 12x12 digit, not of
    a 1x144 row)."""
    layer = _layer()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        X = torch.tanh(layer(torch.from_numpy(
            np.maximum(rng.normal(size=(120, 4, 6, 6)), 0).astype(np.float32)))).numpy()
    pipe = make_flipad(layer, "tanh", np.zeros((4, 6, 6)),
                       alpha=1e-3, tol=1e-3, max_iter=50, fnr=0.05, random_state=0,
                       device="cpu", immunise="published",
                       detector_params=dict(hidden_sizes=(8,), rep_dim=4, n_epochs=2))
    flat = pipe.fit(X.reshape(120, -1))
    assert flat.immunise.input_shape == (1, 12, 12)
    Xp = flat._immunised(X.reshape(120, -1))
    ref = RandomPerturbation(random_state=0, input_shape=(1, 12, 12)).fit_transform(
        X.reshape(120, -1))
    np.testing.assert_array_equal(Xp, ref)
    assert np.all(np.isfinite(flat.score_samples(X.reshape(120, -1))))


def test_immunised_flipad_saves_in_the_secure_format(tmp_path):
    """Before: persistence.save refused it (ImmunisedPipeline, RandomPerturbation and
    Resize were outside the allow-list)."""
    from flipad_sklearn import persistence

    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 1, 4, 2, 1)
    X = np.tanh(np.random.default_rng(0).normal(size=(120, 1, 16, 16))).astype(np.float32)
    pipe = make_flipad(layer, "tanh", np.zeros((4, 8, 8), np.float32), fnr=0.05,
                       random_state=0, device="cpu", immunise="published",
                       detector_params=dict(n_epochs=2)).fit(X)
    path = tmp_path / "immunised.flipad"
    persistence.save(pipe, path)
    loaded = persistence.load(path)
    assert isinstance(loaded, ImmunisedPipeline)
    assert isinstance(loaded.immunise, RandomPerturbation)
    np.testing.assert_array_equal(loaded.decision_function(X[:10]),
                                  pipe.decision_function(X[:10]))


def test_calibrate_perturbs_fresh_samples_of_an_immunised_pipeline():
    """The guarantee covers the perturbations: fresh samples of G set the threshold
    after the same perturbation as fit's (before: calibrate used them clean)."""
    from flipad_sklearn import calibrate

    X = _images(300, 0).reshape(300, -1)
    noise = GaussianNoise(std=0.3, random_state=0, input_shape=(1, 8, 8))
    pipe = ImmunisedPipeline([("scale", GeneratorStandardScaler()),
                              ("det", ConformalDetector("gaussian", fnr=0.05,
                                                        validation_size=0, random_state=0))],
                             immunise=noise).fit(X)
    fresh = _images(199, 1).reshape(199, -1)
    calibrate(pipe, fresh)
    expected = pipe[-1].score_samples(pipe[:-1].transform(
        clone(noise).fit_transform(fresh)))
    np.testing.assert_allclose(pipe[-1].validation_scores_, np.sort(expected))


# ------------------------------------------------------------ JPEG files
def _layer_images(layer, n, seed):
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        return torch.tanh(layer(torch.from_numpy(
            np.maximum(rng.normal(size=(n, 4, 6, 6)), 0).astype(np.float32)))).numpy()


def _save(images, folder, **save):
    from PIL import Image

    folder.mkdir()
    for i, im in enumerate(images):
        pixels = np.rint((np.clip(im[0], -1, 1) + 1) * 127.5).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{'jpg' if save else 'png'}", **save)
    return folder


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_files_warn_unless_made_as_the_detector_was_calibrated(tmp_path):
    """Before: a detector calibrated on lossless images scored JPEG files silently,
    though JPEG moves G's own images out of what it accepts."""
    import warnings

    from flipad_sklearn.exceptions import InputContractWarning
    from flipad_sklearn.pipeline import make_open_world_union
    from flipad_sklearn.verdicts import calibrated_files, verdict_table

    layer = _layer()
    X = _layer_images(layer, 150, 0)
    fresh = _layer_images(layer, 12, 1)
    png, jpg = _save(fresh, tmp_path / "png"), _save(fresh, tmp_path / "jpg", quality=60)
    kw = dict(alpha=1e-3, tol=1e-3, max_iter=50, fnr=0.05, random_state=0, device="cpu",
              detector_params=dict(hidden_sizes=(8,), rep_dim=4, n_epochs=2))
    plain = make_flipad(layer, "tanh", np.zeros((4, 6, 6)), **kw).fit(X)
    matched = make_flipad(layer, "tanh", np.zeros((4, 6, 6)),
                          immunise=JPEGCompression(quality=60), **kw).fit(X)
    assert (calibrated_files(plain), calibrated_files(matched)) == ({None}, {60})
    with pytest.warns(InputContractWarning,
                      match=r"12 of 12 files .*12 JPEG q60.*lossless.*--immunise jpeg:60"):
        verdict_table(plain, [str(jpg)])
    with pytest.warns(InputContractWarning, match=r"12 lossless.*calibrated on G's JPEG q60"):
        verdict_table(matched, [str(png)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputContractWarning)
        table = verdict_table(matched, [str(jpg)])
        verdict_table(plain, [str(png)])
        # a mixture covers no one quality: the user chose it, nothing to say
        published = make_flipad(layer, "tanh", np.zeros((4, 6, 6)), immunise="published",
                                **kw).fit(X)
        # the mixture covers lossless files and JPEG q70-95, so q60 is warned about
        assert calibrated_files(published) == {None, *range(70, 96)}
    with pytest.warns(InputContractWarning, match=r"calibrated on G's lossless images and "
                                                  r"JPEG q70-95.*--immunise jpeg:60"):
        verdict_table(published, [str(jpg)])
    # the matched detector scores the files as the JPEG it was calibrated on
    np.testing.assert_allclose(
        [r["score"] for r in table],
        matched.decision_function(JPEGCompression(quality=60).fit_transform(fresh)),
        rtol=1e-5, atol=1e-6)
    # a union: its immunised detectors' channel (the pixel guard is not immunised)
    union = make_open_world_union(
        layer, "tanh", np.zeros((4, 6, 6)), image_shape=(1, 12, 12), fnr=0.1,
        random_state=0, device="cpu", immunise=JPEGCompression(quality=60),
        flipad_params=dict(immunise=JPEGCompression(quality=60), alpha=1e-3, tol=1e-3,
                           max_iter=50, detector_params=dict(n_epochs=2)),
        dctpad_params=dict(detector_params=dict(n_epochs=2))).fit(X)
    # the guard reads every pixel of a 12x12 image: JPEG moves it as any detector
    assert calibrated_files(union) == set()
    # a guard on 4x4 blocks' averages does not count (JPEG keeps their means)
    from flipad_sklearn.pipeline import make_pixel_guard

    union.estimators_[2] = ("pixels", make_pixel_guard((1, 12, 12), size=3).fit(X))
    assert calibrated_files(union) == {60}
    with pytest.warns(InputContractWarning, match=r"12 of 24 files .*\(12 lossless\)"):
        verdict_table(union, [str(png), str(jpg)])
    # detectors calibrated on different files (before: the unimmunised one was ignored)
    union.estimators_[0][1].immunise = None
    assert calibrated_files(union) == set()
    with pytest.warns(InputContractWarning, match=r"different files by its detectors "
                                                  r"\(flipad: lossless images, dctpad: JPEG "
                                                  r"q60\).*--detector union --immunise jpeg:60 "
                                                  r"\(make_open_world_union"):
        verdict_table(union, [str(jpg)])


def test_file_channel_tells_lossy_from_lossless_files(tmp_path):
    from PIL import Image, features

    from flipad_sklearn.verdicts import file_channel

    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=71)
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    assert file_channel(tmp_path / "a.png") is None
    assert file_channel(tmp_path / "a.bmp") is None
    assert file_channel(tmp_path / "a.jpg") == 71
    if features.check("webp"):
        Image.fromarray(pixels).save(tmp_path / "lossy.webp", quality=80)
        Image.fromarray(pixels).save(tmp_path / "lossless.webp", lossless=True)
        # an extended header (VP8X, written for an ICC profile) before the image chunk
        Image.fromarray(pixels).save(tmp_path / "icc.webp", quality=80,
                                     icc_profile=b"\0" * 301)
        assert file_channel(tmp_path / "lossy.webp") == "lossy WebP"
        assert file_channel(tmp_path / "icc.webp") == "lossy WebP"
        assert file_channel(tmp_path / "lossless.webp") is None


def test_file_channel_names_lossy_files_jpegcompression_does_not_write(tmp_path):
    """Review of the first version: 4:4:4 JPEG passed as the quality's file, JPEG in
    TIFF and animated lossy WebP as lossless."""
    from PIL import Image, features

    from flipad_sklearn.verdicts import file_channel

    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "s.jpg", quality=85, subsampling=0)
    assert file_channel(tmp_path / "s.jpg") == "JPEG q85 (4:4:4)"
    if features.check_codec("jpg"):
        Image.fromarray(pixels).save(tmp_path / "t.tif", compression="jpeg")
        assert file_channel(tmp_path / "t.tif") == "JPEG in TIFF"
    if features.check("webp"):
        frames = [Image.fromarray(pixels), Image.fromarray(pixels[::-1].copy())]
        frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:],
                       quality=80)
        assert file_channel(tmp_path / "anim.webp") == "lossy WebP"


def test_check_file_channel_groups_models_calibrated_alike(tmp_path):
    """Several owned models calibrated alike: one warning naming them (before: one per model)."""
    import warnings

    from PIL import Image

    from flipad_sklearn.detection.multi import OwnedModelsAttributor
    from flipad_sklearn.verdicts import calibrated_files, check_file_channel

    X = _images(200, 0).reshape(200, -1)
    pipes = {n: _detector_pipe(ImmunisedPipeline, immunise=JPEGCompression(quality=85)).fit(X)
             for n in ("A", "B", "C")}
    pipes["C"].immunise = None
    attr = OwnedModelsAttributor.from_fitted(pipes)
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(
        tmp_path / "x.jpg", quality=85)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_file_channel(attr, [str(tmp_path / "x.jpg")]) == {85: 1}
    msgs = [str(w.message) for w in caught if "not stored" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("model 'C': 1 of 1 files")
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(
        tmp_path / "x.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_file_channel(attr, [str(tmp_path / "x.png")])
    msgs = [str(w.message) for w in caught if "not stored" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("models 'A', 'B': 1 of 1 files")
    with pytest.raises(TypeError, match="one detector"):
        calibrated_files(attr)


def test_files_vs_calibration_refuse_what_they_cannot_read():
    from sklearn.exceptions import NotFittedError

    from flipad_sklearn import ConformalUnion, jpeg_quality
    from flipad_sklearn.pipeline import make_pixel_guard
    from flipad_sklearn.verdicts import calibrated_files

    for bad in (3, None, [b"\xff\xd8"]):
        with pytest.raises(TypeError, match="jpeg_quality takes an image file"):
            jpeg_quality(bad)
    for bad in (None, 3, "detector.flipad"):
        with pytest.raises(TypeError, match="fitted pipeline or ConformalUnion"):
            calibrated_files(bad)
    with pytest.raises(NotFittedError):
        calibrated_files(ConformalUnion([("pixels", make_pixel_guard((3, 16, 16)))]))


# ------------------------------------------------------------ a guarantee per kind
def _blur_mixture_pipeline(n=400):
    """A Gaussian-density detector trained on G's images, half of them blurred."""
    mixture = RandomPerturbation([None, GaussianBlur(sigma=0.8)],
                                 random_state=0, input_shape=(1, 8, 8))
    pipe = ImmunisedPipeline([("scale", GeneratorStandardScaler()),
                              ("det", ConformalDetector("gaussian", fnr=0.05,
                                                        validation_size=0, random_state=0))],
                             immunise=mixture)
    return pipe.fit(_images(n, 0).reshape(n, -1)), mixture


def test_transform_each_kind_gives_one_copy_per_kind_of_positive_weight():
    X = _images(50, 0)
    blur = GaussianBlur(sigma=1.0)
    est = RandomPerturbation([None, [blur, GaussianBlur(sigma=2.0)], GaussianNoise(std=0.1)],
                             weights=[1, 1, 0], random_state=0).fit(X)
    copies = est.transform_each_kind(X)
    assert len(copies) == 2                       # the noise has weight 0
    np.testing.assert_array_equal(copies[0], X.reshape(50, -1))
    one = clone(blur).fit_transform(X)
    two = GaussianBlur(sigma=2.0).fit_transform(X)
    rows_one = np.all(copies[1] == one, axis=1)
    rows_two = np.all(copies[1] == two, axis=1)
    assert np.all(rows_one | rows_two) and rows_one.any() and rows_two.any()
    for a, b in zip(copies, est.transform_each_kind(X)):     # seeded
        np.testing.assert_array_equal(a, b)


def test_calibrate_each_kind_sets_the_threshold_on_the_lowest_score_over_the_kinds():
    from flipad_sklearn import calibrate

    pipe, mixture = _blur_mixture_pipeline()
    fresh = _images(199, 1).reshape(199, -1)
    calibrate(pipe, fresh, each_kind=True)
    clean = pipe[-1].score_samples(pipe[:-1].transform(fresh))
    blurred = pipe[-1].score_samples(pipe[:-1].transform(
        GaussianBlur(sigma=0.8, input_shape=(1, 8, 8)).fit_transform(fresh)))
    np.testing.assert_allclose(pipe[-1].validation_scores_,
                               np.sort(np.minimum(clean, blurred)))
    with pytest.raises(TypeError, match="each_kind must be True or False"):
        calibrate(pipe, fresh, each_kind="yes")


def test_each_kind_keeps_the_fnr_under_every_kind_where_the_mixture_does_not():
    """Before: calibrated on one draw of the mixture per sample, G's unperturbed
    images were rejected at twice the fnr (its blurred ones never): the guarantee
    held on average over the mixture only."""
    from flipad_sklearn import calibrate

    pipe, _ = _blur_mixture_pipeline()
    test = _images(4000, 3).reshape(4000, -1)
    kinds = (test, GaussianBlur(sigma=0.8, input_shape=(1, 8, 8)).fit_transform(test))
    rates = {}
    for each_kind in (False, True):
        runs = []
        for seed in range(5):           # five calibrations: the guarantee is an average
            calibrate(pipe, _images(399, 10 + seed).reshape(399, -1), each_kind=each_kind)
            runs.append([float(np.mean(pipe.predict(Z) == -1)) for Z in kinds])
        rates[each_kind] = np.mean(runs, axis=0)
    assert rates[False].max() > 0.075 and rates[False].min() < 0.03
    assert rates[True].max() <= 0.06                     # fnr 0.05 under each kind


def test_union_calibrate_each_kind_takes_the_lowest_score_of_its_immunised_members():
    from flipad_sklearn import ConformalUnion

    pipe, _ = _blur_mixture_pipeline()
    plain = ConformalPipeline([("scale", GeneratorStandardScaler()),
                               ("det", ConformalDetector("gaussian", fnr=0.05,
                                                         validation_size=0, random_state=1))])
    X = _images(400, 0).reshape(400, -1)
    union = ConformalUnion([("immunised", pipe), ("plain", plain)], fnr=0.02).fit(X)
    fresh = _images(500, 1).reshape(500, -1)
    union.calibrate(fresh, each_kind=True)
    immunised, plain_fit = (est for _, est in union.estimators_)
    blurred = GaussianBlur(sigma=0.8, input_shape=(1, 8, 8)).fit_transform(fresh)
    lowest = np.minimum(*(immunised[-1].score_samples(immunised[:-1].transform(Z))
                          for Z in (fresh, blurred)))
    np.testing.assert_allclose(immunised[-1].validation_scores_, np.sort(lowest))
    # a member without a mixture: its one kind, the images as they are
    np.testing.assert_allclose(plain_fit[-1].validation_scores_, np.sort(
        plain_fit[-1].score_samples(plain_fit[:-1].transform(fresh))))


def test_calibrate_each_kind_warns_on_a_mixture_it_cannot_split():
    """Before: a mixture wrapped in a Pipeline was calibrated on one draw per sample
    without a word, its per-kind guarantee silently an average."""
    from sklearn.pipeline import Pipeline

    from flipad_sklearn import calibrate
    from flipad_sklearn.detection.conformal import ThresholdWarning

    wrapped = Pipeline([("mix", RandomPerturbation([None, GaussianBlur(sigma=0.8)],
                                                   random_state=0, input_shape=(1, 8, 8)))])
    pipe = ImmunisedPipeline([("scale", GeneratorStandardScaler()),
                              ("det", ConformalDetector("gaussian", fnr=0.05,
                                                        validation_size=0, random_state=0))],
                             immunise=wrapped).fit(_images(400, 0).reshape(400, -1))
    fresh = _images(199, 1).reshape(199, -1)
    with pytest.warns(ThresholdWarning, match="has no transform_each_kind"):
        calibrate(pipe, fresh, each_kind=True)
    # one perturbation of the package's is one kind: nothing to say
    pipe.set_params(immunise=GaussianBlur(sigma=0.8, input_shape=(1, 8, 8)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ThresholdWarning)
        calibrate(pipe, fresh, each_kind=True)


@pytest.mark.parametrize("bad", [1.5, float("nan"), "0.1", -0.1, True])
@pytest.mark.parametrize("each_kind", [False, True])
def test_calibrate_refuses_a_bad_fnr_before_anything_changes(bad, each_kind):
    """Before: fnr=1.5 was set on the detector, then the threshold failed (the old
    threshold left under the new fnr); fnr=-0.1 moved the threshold silently."""
    from flipad_sklearn import calibrate

    pipe, _ = _blur_mixture_pipeline()
    calibrate(pipe, _images(199, 1).reshape(199, -1))
    before = (pipe[-1].fnr, pipe[-1].threshold_)
    with pytest.raises(ValueError, match=r"fnr must be None or a number in \[0, 1\)"):
        calibrate(pipe, _images(199, 2).reshape(199, -1), fnr=bad, each_kind=each_kind)
    assert (pipe[-1].fnr, pipe[-1].threshold_) == before


def test_attributor_checks_each_kind_before_any_model_moves():
    from flipad_sklearn import ConformalUnion
    from flipad_sklearn.detection.multi import OwnedModelsAttributor

    pipe, _ = _blur_mixture_pipeline()
    union = ConformalUnion([("immunised", pipe)], fnr=0.02).fit(
        _images(400, 0).reshape(400, -1))
    union.calibrate(_images(500, 1).reshape(500, -1))
    attributor = OwnedModelsAttributor.from_fitted({"G": union})
    with pytest.raises(TypeError, match="each_kind must be True or False"):
        attributor.calibrate({"G": _images(500, 2).reshape(500, -1)}, fnr=0.04,
                             each_kind="yes")
    assert union.fnr == 0.02


def test_transform_each_kind_refuses_bad_input():
    from sklearn.exceptions import NotFittedError

    mixture = RandomPerturbation([None, GaussianBlur(sigma=1.0)], random_state=0)
    X = _images(5, 0)
    with pytest.raises(NotFittedError):
        mixture.transform_each_kind(X)
    mixture.fit(X)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mixture.transform_each_kind(bad)
    with pytest.raises(ValueError, match="36 features.*expecting 64"):
        mixture.transform_each_kind(_images(5, 0, size=6))
    with pytest.raises(ValueError):
        mixture.transform_each_kind("images")


def test_the_detector_records_how_many_kinds_its_threshold_holds_under(tmp_path):
    """A verdict says which guarantee it has: the saved detector, its reloaded copy and
    the verdict table's metadata tell a threshold set per kind from one set on the
    mixture (before: nothing recorded it)."""
    import json

    from flipad_sklearn import calibrate, persistence
    from flipad_sklearn.verdicts import verdict_table

    from test_persistence import _craft, _entry, _members, _state

    pipe, _ = _blur_mixture_pipeline()
    fresh = _images(199, 1).reshape(199, -1)
    calibrate(pipe, fresh)
    assert pipe[-1].n_calibration_kinds_ == 1
    calibrate(pipe, fresh, each_kind=True)
    assert pipe[-1].n_calibration_kinds_ == 2
    path = tmp_path / "per_kind.flipad"
    persistence.save(pipe, path)
    loaded = persistence.load(path)
    assert loaded[-1].n_calibration_kinds_ == 2
    assert verdict_table(loaded, fresh[:3]).metadata["calibration_kinds"] == 2
    # a file that lies about it is refused
    spec, arrays = _members(path)
    for bad in ("2", 0, True, 1.5):
        crafted = json.loads(json.dumps(spec))
        _entry(_state(crafted, "flipad_sklearn.ConformalDetector"),
               "n_calibration_kinds_")[1] = bad
        with pytest.raises(persistence.UnsafeFileError, match="n_calibration_kinds_"):
            persistence.load(_craft(tmp_path / "bad.flipad", crafted, arrays))
    # fit sets the threshold on held-out samples drawn once: one kind again
    pipe.set_params(det__validation_size="auto").fit(_images(400, 0).reshape(400, -1))
    assert pipe[-1].n_calibration_kinds_ == 1


def test_calibration_noise_is_fresh_for_fresh_samples_of_g():
    """Before: a seeded GaussianNoise drew its noise by position in the batch, so the
    fresh samples of G at calibration got the very noise vectors the detector was
    trained on, scored too well, and the threshold rejected G's newly noised images
    above the fnr."""
    from flipad_sklearn import calibrate

    noise = GaussianNoise(std=0.3, random_state=0, input_shape=(1, 8, 8))
    pipe = ImmunisedPipeline([("scale", GeneratorStandardScaler()),
                              ("det", ConformalDetector("gaussian", fnr=0.05,
                                                        validation_size=0, random_state=0))],
                             immunise=noise).fit(_images(400, 0).reshape(400, -1))
    test = GaussianNoise(std=0.3, random_state=7, input_shape=(1, 8, 8)).fit_transform(
        _images(4000, 3).reshape(4000, -1))
    rejected = []
    for seed in range(5):
        calibrate(pipe, _images(399, 10 + seed).reshape(399, -1))
        rejected.append(float(np.mean(pipe.predict(test) == -1)))
    assert np.mean(rejected) <= 0.06


def test_seeded_noise_of_an_image_does_not_depend_on_its_batch():
    X = _images(6, 0)
    noise = GaussianNoise(std=0.2, random_state=3)
    whole = noise.fit_transform(X)
    np.testing.assert_array_equal(whole[4], noise.fit_transform(X[4:5])[0])
    np.testing.assert_array_equal(whole[::-1], noise.fit_transform(X[::-1]))
    # another image, or another seed: other noise
    assert not np.allclose(whole[0] - X[0].ravel(), whole[1] - X[1].ravel())
    other = GaussianNoise(std=0.2, random_state=4).fit_transform(X)
    assert not np.allclose(whole, other)
