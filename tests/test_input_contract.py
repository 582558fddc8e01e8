"""Issue 27: images as they really travel, labels as scikit-learn users give them.

Each test here failed on the code before issue 27: a wrong verdict that said nothing.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter, FLIPADDetector, LabelConventionWarning
from flipad_sklearn._validation import check_labels

pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ----------------------------------------------------------------- labels
@pytest.mark.parametrize("y", [np.r_[np.ones(5), np.zeros(5)].astype(int),
                               np.r_[np.ones(5), np.zeros(5)].astype(bool),
                               np.r_[np.ones(5), np.zeros(5)].astype(float)])
def test_binary_labels_warn_with_the_convention(y):
    with pytest.warns(LabelConventionWarning, match=r"1 = made by G, -1 = known not made "
                      r"by G, 0 = unlabelled.*np.where\(y == 1, 1, -1\)"):
        labels = check_labels(y, 10)
    np.testing.assert_array_equal(labels, np.r_[np.ones(5), np.zeros(5)])


@pytest.mark.parametrize("y", [np.ones(6, int), np.zeros(6, int), np.ones(6, bool),
                               np.r_[1, 1, -1, -1, 0, 0], np.r_[1, 1, 1, -1, -1, -1]])
def test_flipad_labels_do_not_warn(y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_labels(y, 6)


def test_detector_and_pipeline_warn_once_on_binary_labels():
    from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.r_[np.ones(40, int), np.zeros(20, int)]
    det = FLIPADDetector(hidden_sizes=(8,), rep_dim=4, n_epochs=1, fnr=0.1, device="cpu",
                         random_state=0)
    with pytest.warns(LabelConventionWarning):
        det.fit(X, y)
    pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()), ("det", det)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y)
    assert sum(issubclass(w.category, LabelConventionWarning) for w in caught) == 1


# ------------------------------------------------- non-finite layer parameters
@pytest.mark.parametrize("where", ["weight", "bias"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("solver", ["auto", "fista"])
def test_non_finite_layer_is_refused_at_fit_naming_it(where, value, solver):
    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    with torch.no_grad():
        getattr(layer, where).view(-1)[0] = value
    X = np.tanh(np.random.default_rng(0).normal(size=(3, 1, 8, 8)))
    inv = FinalLayerInverter(layer, activation="tanh", activation_shape=(4, 4, 4),
                             solver=solver, device="cpu")
    with pytest.raises(ValueError, match=rf"NaN or infinity: {where} \(1 of"):
        inv.fit(X)


def test_skip_inverter_refuses_a_non_finite_layer():
    from flipad_sklearn.inversion import SkipInverter

    layer = nn.Conv2d(2, 1, 1)
    with torch.no_grad():
        layer.weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity: weight"):
        SkipInverter(layer, activation_shape=(2, 4, 4), device="cpu").fit(
            np.zeros((2, 1, 4, 4)))


def test_find_final_layer_blames_the_weights_not_the_activation():
    from flipad_sklearn import find_final_layer

    G = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 5), nn.Tanh())
    with torch.no_grad():
        G[2].bias[1] = np.inf
    with pytest.raises(ValueError, match=r"final layer \(2\)'s parameters contain NaN or "
                                         r"infinity: bias") as exc:
        find_final_layer(G, torch.zeros(2, 3))
    assert "activation" not in str(exc.value).split(":")[0]
    with torch.no_grad():
        G[2].bias[1] = 0.0
        G[0].weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="outputs on the example input contain NaN"):
        find_final_layer(G, torch.ones(2, 3))


# ------------------------------------------- [0, 1] images given to a tanh model
def _small_inverter(activation="tanh"):
    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    return FinalLayerInverter(layer, activation=activation, activation_shape=(4, 4, 4),
                              device="cpu", max_iter=20)


def test_unit_range_images_given_to_tanh_warn():
    from flipad_sklearn import OutOfRangeWarning

    X01 = np.random.default_rng(0).uniform(0, 1, size=(6, 1, 8, 8))
    inv = _small_inverter().fit(X01)
    with pytest.warns(OutOfRangeWarning, match=r"below 0.*\[0, 1\].*x / 127.5 - 1"):
        inv.transform(X01)
    # also through make_flipad's 8-bit contract, which can round 0 to -1/255
    from flipad_sklearn.pipeline import make_flipad

    X01 = X01.astype(np.float32)
    X01[:, :, 0, 0] = 0.0               # float32: 0 rounds to level 127 (-1/255)
    pipe = make_flipad(inv.layer, "tanh", activation_shape=(4, 4, 4), device="cpu",
                       max_iter=20, pooling=None)
    pipe["inv"].fit(X01)
    with pytest.warns(OutOfRangeWarning, match=r"below 0"):
        pipe[:1].transform(X01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        inv.transform(2 * X01 - 1)                     # the right scale: silent
        inv.transform(X01[:1])                         # one bright image: silent
        _small_inverter("sigmoid").fit(X01).transform(X01)  # sigmoid's own range


@pytest.mark.parametrize("name", ["G", "shadow", "unseen", "other"])
def test_demo_generators_samples_do_not_warn(name):
    from flipad_sklearn.activations import get_activation
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator

    X = load_demo_generator(name).sample(16, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_activation("tanh").check_range(X.reshape(len(X), -1))
        # and as published: 8-bit
        get_activation("tanh").check_range(np.round((X + 1) * 127.5) / 127.5 - 1)


# -------------------------------------------------- the input contract (8-bit)
def _contract_pipe(quantize, detector="iforest"):
    from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler
    from flipad_sklearn.detection import ConformalDetector

    return ConformalPipeline([("scaler", GeneratorStandardScaler()),
                              ("det", ConformalDetector(detector, fnr=0.1, random_state=0))],
                             input_range=(-1.0, 1.0), quantize=quantize)


def _to_8bit(X):
    return (np.round((X + 1) * 127.5) / 127.5 - 1).astype(X.dtype)


def _images(n=120, seed=0):
    return np.tanh(np.random.default_rng(seed).normal(size=(n, 80))).astype(np.float32)


def test_uint8_contract_gives_floats_and_their_8bit_files_the_same_verdict():
    X = _images()
    pipe = _contract_pipe("uint8").fit(X)
    assert pipe.input_contract_ == {"range": (-1.0, 1.0), "quantize": "uint8",
                                    "quantized_input": False}
    X_new = _images(40, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # floats are quantised silently
        s_float = pipe.score_samples(X_new)
        s_png = pipe.score_samples(_to_8bit(X_new))
    np.testing.assert_allclose(s_float, s_png, rtol=1e-6)
    np.testing.assert_array_equal(pipe.predict(X_new), pipe.predict(_to_8bit(X_new)))
    # a float pipeline scores the two differently
    flt = _contract_pipe(None).fit(X)
    assert np.abs(flt.score_samples(X_new) - flt.score_samples(_to_8bit(X_new))).max() > 0


def test_float_pipeline_warns_on_8bit_images_and_8bit_one_on_floats():
    from flipad_sklearn import InputContractWarning

    X = _images()
    flt = _contract_pipe(None).fit(X)
    assert flt.input_contract_["quantized_input"] is False
    with pytest.warns(InputContractWarning, match="8-bit images.*quantize='uint8'"):
        flt.predict(_to_8bit(X[:10]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flt.predict(X[:10])
    q = _contract_pipe(None).fit(_to_8bit(X))
    assert q.input_contract_["quantized_input"] is True
    with pytest.warns(InputContractWarning, match="between the 256 levels"):
        q.decision_function(X[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q.decision_function(_to_8bit(X[:10]))


def test_out_of_range_inputs_warn_before_quantisation_hides_them():
    from flipad_sklearn import OutOfRangeWarning

    pipe = _contract_pipe("uint8").fit(_images())
    with pytest.warns(OutOfRangeWarning, match="input_range"):
        pipe.predict((_images(10) + 1) * 127.5)          # 0..255 floats


def test_contract_follows_slices_that_keep_the_first_step_and_persistence(tmp_path):
    from flipad_sklearn import persistence

    X = _images()
    pipe = _contract_pipe("uint8", "ocsvm").fit(X)   # ocsvm: in the allow-list
    head = pipe[:-1]
    np.testing.assert_allclose(head.transform(X[:5]), head.transform(_to_8bit(X[:5])))
    assert pipe[1:].quantize is None and pipe[1:].input_range is None
    persistence.save(pipe, tmp_path / "p.flipad")
    again = persistence.load(tmp_path / "p.flipad")
    assert again.quantize == "uint8" and tuple(again.input_range) == (-1.0, 1.0)
    np.testing.assert_array_equal(again.predict(X[:20]), pipe.predict(_to_8bit(X[:20])))


def test_make_flipad_quantizes_images_by_default_and_not_tabular_data():
    from flipad_sklearn.pipeline import make_flipad

    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    assert make_flipad(layer, "tanh", activation_shape=(4, 4, 4)).quantize == "uint8"
    sig = make_flipad(layer, "sigmoid", activation_shape=(4, 4, 4))
    assert sig.quantize == "uint8" and sig.input_range == (0.0, 1.0)
    ident = make_flipad(nn.Linear(3, 5), "identity")
    assert ident.quantize is None and ident.input_range is None
    flt = make_flipad(layer, "tanh", activation_shape=(4, 4, 4), quantize=None)
    assert flt.quantize is None and flt.input_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match="needs a bounded input range"):
        make_flipad(nn.Linear(3, 5), "identity", quantize="uint8")


# ------------------------------------------------ the command line tool's scaling
SIGMOID_GENERATORS = """
import torch
from torch import nn

def _make(seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 8 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (8, 4, 4)),
                        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if nan:
            net[3].weight[0, 0, 0, 0] = float("nan")
    return net.eval()

G = _make(0)
H = _make(1)

def broken():
    return _make(0, nan=True)
"""


def _sigmoid_pngs(net, folder, n, seed):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32))
    with torch.no_grad():
        x = net(z).numpy()
    for i, im in enumerate(x):      # a sigmoid generator's image: round(255 x)
        pixels = np.clip(np.round(im[0] * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def sigmoid_workdir(tmp_path_factory):
    import importlib
    import sys

    root = tmp_path_factory.mktemp("sigmoid_cli")
    (root / "sgens.py").write_text(SIGMOID_GENERATORS)
    sys.path.insert(0, str(root))
    try:
        gens = importlib.import_module("sgens")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("sgens", None)
    _sigmoid_pngs(gens.G, root / "own", 160, seed=1)
    _sigmoid_pngs(gens.H, root / "others", 80, seed=2)
    _sigmoid_pngs(gens.G, root / "test_G", 40, seed=3)
    _sigmoid_pngs(gens.H, root / "test_H", 40, seed=4)
    return root


def _cli(args, cwd, capsys, monkeypatch):
    from flipad_sklearn import cli

    monkeypatch.chdir(cwd)
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_scales_by_the_activation_it_found(sigmoid_workdir, capsys, monkeypatch):
    from flipad_sklearn import persistence

    code, _, err = _cli(["fit", "--generator", "sgens.py:G", "--latent-shape", "8",
                         "--own", "own", "--others", "others", "--fnr", "0.05",
                         "--epochs", "8", "--anchor-samples", "300",
                         "--validation-samples", "200", "-q", "-o", "d.flipad"],
                        sigmoid_workdir, capsys, monkeypatch)
    assert code == 0, err
    assert "outside [0, 1]" not in err           # was: 21-45 % of the values clipped
    pipe = persistence.load(sigmoid_workdir / "d.flipad")
    assert tuple(pipe.input_range) == (0.0, 1.0) and pipe.quantize == "uint8"
    accepted = {}
    for folder in ("test_G", "test_H"):
        code, out, err = _cli(["score", "d.flipad", folder, "-q"], sigmoid_workdir,
                              capsys, monkeypatch)
        assert code == 0, err
        rows = out.strip().splitlines()[1:]
        accepted[folder] = np.mean([" not G " not in r for r in rows])
    # before issue 27 (pixels read as tanh's x / 127.5 - 1): H accepted 0.86
    assert accepted["test_G"] >= 0.85 and accepted["test_H"] <= 0.2, accepted


def test_cli_blames_non_finite_weights_not_the_activation(sigmoid_workdir, capsys,
                                                          monkeypatch):
    code, _, err = _cli(["fit", "--generator", "sgens.py:broken", "--latent-shape", "8",
                         "--own", "own", "-q", "-o", "never.flipad"],
                        sigmoid_workdir, capsys, monkeypatch)
    assert code == 1
    assert "parameters contain NaN or infinity: weight (1 of" in err
    assert "activation" not in err
    assert not (sigmoid_workdir / "never.flipad").exists()


def test_cli_score_prints_warnings_but_not_convergence(capsys):
    from sklearn.exceptions import ConvergenceWarning

    from flipad_sklearn.cli import _warnings_on_stderr

    with _warnings_on_stderr():
        warnings.warn("the inputs do not match", UserWarning)
        warnings.warn("the inputs do not match", UserWarning)
        warnings.warn("not converged", ConvergenceWarning)
    err = capsys.readouterr().err
    assert err.count("warning: the inputs do not match") == 1
    assert "not converged" not in err


def test_make_flipad_clips_8bit_inputs_at_half_a_level():
    from flipad_sklearn.pipeline import make_flipad

    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    assert make_flipad(layer, "tanh", activation_shape=(4, 4, 4))["inv"].clip_eps == \
        pytest.approx(1 / 255)
    assert make_flipad(layer, "sigmoid", activation_shape=(4, 4, 4))["inv"].clip_eps == \
        pytest.approx(1 / 510)
    for kw in (dict(quantize=None), dict(datafit="output"),
               dict(inverter_params=dict(clip_eps="auto"))):
        assert make_flipad(layer, "tanh", activation_shape=(4, 4, 4), **kw)["inv"].clip_eps \
            == "auto"


def test_pipelines_saved_before_the_contract_load_without_one():
    from flipad_sklearn import ConformalPipeline

    X = _images()
    pipe = _contract_pipe("uint8").fit(X)
    state = {k: v for k, v in pipe.__getstate__().items()
             if k not in ("input_range", "quantize", "input_contract_")}
    old = ConformalPipeline.__new__(ConformalPipeline)
    old.__setstate__(state)
    assert old.get_params()["quantize"] is None and old.input_range is None
    np.testing.assert_array_equal(old.predict(X[:5]), pipe[1:].predict(X[:5]))


# ------------------------------------------- the baselines' recipes: the same contract
@pytest.mark.parametrize("recipe", ["make_rawpad", "make_dctpad"])
def test_baseline_recipes_train_and_score_on_8bit_images(recipe):
    from flipad_sklearn import InputContractWarning, pipeline
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator

    make = getattr(pipeline, recipe)
    G = load_demo_generator("G")
    X = G.sample(160, random_state=0)
    X_new = G.sample(40, random_state=1)
    params = dict(fnr=0.1, random_state=0, device="cpu",
                  detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=2,
                                       batch_size=32, one_class=None))
    pipe = make(**params)
    assert pipe.quantize == "uint8" and pipe.input_range == (-1.0, 1.0)
    pipe.fit(X)
    assert pipe.input_contract_["quantize"] == "uint8"
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputContractWarning)
        # G's float outputs and the same images saved as 8-bit files: one verdict
        np.testing.assert_allclose(pipe.score_samples(X_new),
                                   pipe.score_samples(_to_8bit(X_new)), rtol=1e-6)
    assert make(activation="sigmoid").input_range == (0.0, 1.0)
    ident = make(activation="identity")
    assert ident.quantize is None and ident.input_range is None
    # a float pipeline (the old recipe) warns when given 8-bit images
    flt = make(quantize=None, **params).fit(X)
    assert flt.input_range == (-1.0, 1.0)
    with pytest.warns(InputContractWarning, match="8-bit images"):
        flt.predict(_to_8bit(X_new))
    with pytest.raises(ValueError, match="needs a bounded input range"):
        make(activation="identity", quantize="uint8")
