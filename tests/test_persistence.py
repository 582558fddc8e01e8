"""Secure persistence: numpy arrays + a JSON spec, never unpickled."""

import json
import os
import pickle
import zipfile

import joblib
import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from flipad_sklearn import FinalLayerInverter, FLIPADDetector, persistence
from flipad_sklearn._layers import build_layer, describe_layer
from flipad_sklearn.baselines import FingerprintCorrelation
from flipad_sklearn.pipeline import make_flipad

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _layer():
    g = torch.Generator().manual_seed(0)
    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
        layer.bias.fill_(0.05)
    return layer


def _data(layer, n, shift, seed):
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.normal(size=(n, 4, 6, 6)), 0).astype(np.float32)
    A[:, :2] += shift
    with torch.no_grad():
        return torch.tanh(layer(torch.from_numpy(A))).numpy(), A


@pytest.fixture(scope="module")
def fitted():
    layer = _layer()
    X_g, A_g = _data(layer, 120, 0.0, 0)
    X_o, _ = _data(layer, 60, 1.5, 1)
    X = np.concatenate([X_g, X_o])
    y = np.r_[np.ones(120), -np.ones(60)]
    pipe = make_flipad(layer, "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                       max_iter=100, n_channels=3, fnr=0.05, random_state=0, device="cpu",
                       detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    pipe.fit(X, y)
    X_test = np.concatenate([_data(layer, 10, 0.0, 2)[0], _data(layer, 10, 1.5, 3)[0]])
    return pipe, X_test


class _Evil:
    """Unpickling this writes a marker file (stands for any code in a pickle)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_gives_identical_scores(fitted, tmp_path):
    pipe, X_test = fitted
    path = tmp_path / "detector.flipad"
    persistence.save(pipe, path)
    again = persistence.load(path)
    assert isinstance(again, Pipeline)
    assert [n for n, _ in again.steps] == [n for n, _ in pipe.steps]
    np.testing.assert_array_equal(again.decision_function(X_test),
                                  pipe.decision_function(X_test))
    np.testing.assert_array_equal(again.predict(X_test), pipe.predict(X_test))
    np.testing.assert_array_equal(again[-1].pvalues(again[:-1].transform(X_test)),
                                  pipe[-1].pvalues(pipe[:-1].transform(X_test)))
    # the layer is rebuilt on the CPU from its description, the state is the same
    inv, inv2 = pipe[0], again[0]
    assert type(inv2.layer) is nn.ConvTranspose2d and inv2.layer is not inv.layer
    np.testing.assert_array_equal(inv2.layer.weight.detach().numpy(),
                                  inv.layer.weight.detach().numpy())
    assert inv2.lipschitz_ == inv.lipschitz_ and inv2.activation_shape_ == inv.activation_shape_
    assert again[-1].get_params() == pipe[-1].get_params()
    # no temporary file is left behind; the archive is plain .npy members + the spec
    assert os.listdir(tmp_path) == ["detector.flipad"]
    with zipfile.ZipFile(path) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())


def test_file_holds_no_pickle(fitted, tmp_path):
    pipe, _ = fitted
    path = tmp_path / "d.flipad"
    persistence.save(pipe, path)
    with np.load(path, allow_pickle=False) as npz:    # would raise on an object array
        for key in npz.files:
            assert npz[key].dtype != object
        spec = json.loads(npz["__spec__"].tobytes())
    assert spec["format"] == "flipad_sklearn"
    classes = set()

    def walk(o):
        if isinstance(o, dict):
            if o.get("__type__") == "estimator":
                classes.add(o["class"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(spec["root"])
    assert classes == {"flipad_sklearn.ConformalPipeline", "flipad_sklearn.FinalLayerInverter",
                       "flipad_sklearn.ActivationPooling", "flipad_sklearn.ChannelSelector",
                       "flipad_sklearn.GeneratorStandardScaler",
                       "flipad_sklearn.FLIPADDetector",
                       "sklearn.svm.OneClassSVM"}   # the detector's one-class guard


def test_malicious_pickle_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for name, dump in [("evil.joblib", joblib.dump), ("evil.pkl", None),
                       ("evil_z.joblib", lambda o, p: joblib.dump(o, p, compress=3))]:
        path = tmp_path / name
        if dump is None:
            path.write_bytes(pickle.dumps(_Evil(str(marker))))
        else:
            dump(_Evil(str(marker)), path)
        with pytest.raises(persistence.UnsafeFileError, match="pickle/joblib"):
            persistence.load(path)
        assert not marker.exists()
    # the test file really is malicious: unpickling it writes the marker
    joblib.load(tmp_path / "evil.joblib").close()
    assert marker.exists()


def _rewrite_spec(src, dst, edit):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    spec = json.loads(arrays["__spec__"].tobytes())
    edit(spec)
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


def test_class_outside_allow_list_is_refused(fitted, tmp_path):
    pipe, _ = fitted
    src = tmp_path / "ok.flipad"
    persistence.save(pipe, src)

    def swap(spec):  # a file naming a class that would run code when built
        spec["root"]["class"] = "os.system"
    _rewrite_spec(src, tmp_path / "bad.flipad", swap)
    with pytest.raises(persistence.UnsafeFileError, match="not in the allow-list"):
        persistence.load(tmp_path / "bad.flipad")
    assert "os.system" not in persistence.ALLOWED_CLASSES

    def break_array(spec):
        spec["root"]["state"]["items"][0][1] = {"__type__": "ndarray", "key": "nope"}
    _rewrite_spec(src, tmp_path / "corrupt.flipad", break_array)
    with pytest.raises(persistence.UnsafeFileError, match="array 'nope' is missing"):
        persistence.load(tmp_path / "corrupt.flipad")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(persistence.UnsafeFileError, match="no spec"):
        persistence.load(tmp_path / "plain.npz")


def test_what_cannot_be_saved_securely_is_refused_clearly(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 8))
    inv = FinalLayerInverter(nn.Linear(3, 8), activation=np.arctanh)
    with pytest.raises(TypeError, match=r"activation.*callable.*'tanh'"):
        persistence.save(inv, tmp_path / "a.flipad")
    net = nn.Sequential(nn.Linear(8, 4, bias=False))
    det = FLIPADDetector(network=net, n_epochs=1, fnr=0.2, random_state=0).fit(X)
    with pytest.raises(TypeError, match="torch module"):
        persistence.save(det, tmp_path / "b.flipad")
    with pytest.raises(TypeError, match="not in the allow-list"):
        persistence.save(Pipeline([("s", StandardScaler()), ("d", _Evil("x"))]),
                         tmp_path / "c.flipad")
    assert not os.listdir(tmp_path)      # nothing half-written


def test_other_estimators_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 6, 6))
    fp = FingerprintCorrelation(fnr=0.1, random_state=np.random.RandomState(3)).fit(X)
    persistence.save(fp, tmp_path / "fp.flipad")
    fp2 = persistence.load(tmp_path / "fp.flipad")
    np.testing.assert_array_equal(fp2.score_samples(X), fp.score_samples(X))
    # the RandomState keeps its exact position (fit drew from it)
    assert fp2.random_state.randint(1000) == fp.random_state.randint(1000)
    sc = StandardScaler().fit(X.reshape(60, -1))
    persistence.save(sc, tmp_path / "sc.flipad")
    np.testing.assert_array_equal(persistence.load(tmp_path / "sc.flipad").scale_, sc.scale_)
    # numpy scalars stay 0-d (OneClassSVM's _gamma: libsvm refuses a 1-d array)
    from sklearn.svm import OneClassSVM

    svm = OneClassSVM(gamma="scale").fit(X.reshape(60, -1))
    persistence.save(svm, tmp_path / "svm.flipad")
    svm2 = persistence.load(tmp_path / "svm.flipad")
    assert np.shape(svm2._gamma) == () and svm2._gamma == svm._gamma
    np.testing.assert_array_equal(svm2.score_samples(X.reshape(60, -1)),
                                  svm.score_samples(X.reshape(60, -1)))


@pytest.mark.parametrize("layer", [nn.Linear(5, 3), nn.Linear(5, 3, bias=False),
                                   nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1),
                                   nn.Conv2d(2, 4, 3, padding="same", groups=2),
                                   nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1,
                                                      output_padding=1)])
def test_layer_description_rebuilds_the_layer(layer):
    desc = describe_layer(layer)
    again = build_layer(desc)
    assert type(again) is type(layer)
    assert repr(again) == repr(layer)
    for (k, v), (k2, v2) in zip(layer.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(ValueError, match="Unknown layer type"):
        build_layer(dict(desc, layer_type="Sequential"))
    with pytest.raises(ValueError, match="Unknown arguments"):
        build_layer(dict(desc, kwargs=dict(desc["kwargs"], evil=1)))
    with pytest.raises(ValueError, match="do not fit"):
        build_layer(dict(desc, weight=np.zeros((1, 1), dtype=np.float32)))


def test_pickled_inverter_holds_no_torch_module():
    inv = FinalLayerInverter(_layer(), activation_shape=(4, 6, 6)).fit(np.zeros((2, 144)))
    state = inv.__getstate__()
    assert not any(isinstance(v, (nn.Module, torch.Tensor)) for v in state.values())
    assert state["layer"]["layer_type"] == "ConvTranspose2d"
    again = pickle.loads(pickle.dumps(inv))
    assert isinstance(again.layer, nn.ConvTranspose2d)
    assert again.operator_.output_shape == inv.operator_.output_shape


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fitted_pipeline_saves_device_free(tmp_path):
    layer = _layer().cuda()
    X_g, A_g = _data(layer.cpu(), 120, 0.0, 0)
    X_o, _ = _data(layer.cpu(), 60, 1.5, 1)
    layer = layer.cuda()
    X = np.concatenate([X_g, X_o])
    y = np.r_[np.ones(120), -np.ones(60)]
    pipe = make_flipad(layer, "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                       max_iter=100, fnr=0.05, random_state=0, device="cuda",
                       detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    pipe.fit(X, y)
    persistence.save(pipe, tmp_path / "cuda.flipad")
    again = persistence.load(tmp_path / "cuda.flipad")
    assert again[0].layer.weight.device.type == "cpu"
    assert next(again[-1].network_.parameters()).device.type == "cpu"
    feats = pipe[:-1].transform(X[:20])
    np.testing.assert_allclose(again[-1].decision_function(feats),
                               pipe[-1].decision_function(feats), rtol=1e-6, atol=1e-8)


class _Custom(StandardScaler):
    """A class skops would have to import to rebuild: not trusted."""


def test_skops_format_round_trip_with_a_trusted_list(fitted, tmp_path):
    pytest.importorskip("skops")
    pipe, X_test = fitted
    path = tmp_path / "d.skops"
    persistence.save(pipe, path, format="skops")
    again = persistence.load(path)
    np.testing.assert_array_equal(again.decision_function(X_test),
                                  pipe.decision_function(X_test))
    assert "torch.device" in persistence.trusted_skops_types()
    bad = tmp_path / "bad.skops"
    persistence.save(Pipeline([("s", _Custom().fit(X_test.reshape(len(X_test), -1)))]),
                     bad, format="skops")
    with pytest.raises(persistence.UnsafeFileError, match="_Custom"):
        persistence.load(bad)
    with pytest.raises(ValueError, match="format"):
        persistence.save(pipe, tmp_path / "x", format="pickle")


def test_solver_choice_and_conformal_calibration_round_trip(fitted, tmp_path):
    # the fitted attributes of the solver rewrite and of the conformal module
    from flipad_sklearn.conformal import calibrate

    pipe, X_test = fitted
    layer = pipe[0].layer
    X_g, A_g = _data(layer, 80, 0.0, 5)
    X_o, _ = _data(layer, 40, 1.5, 6)
    cal = make_flipad(layer, "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                      max_iter=60, n_channels=3, fnr=0.05, random_state=0, device="cpu",
                      inverter_params=dict(batch_size="auto", memory_budget=2**20,
                                           progress_tol=None),
                      detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=2,
                                           validation_size=0))
    cal.fit(np.concatenate([X_g, X_o]), np.r_[np.ones(80), -np.ones(40)])
    calibrate(cal, _data(layer, 30, 0.0, 7)[0])
    cal[:-1].transform(X_test)                       # sets the inverter's stop_reason_
    persistence.save(cal, tmp_path / "cal.flipad")
    again = persistence.load(tmp_path / "cal.flipad")
    inv, inv2 = cal[0], again[0]
    for attr in ("solver_", "solver_reason_", "batch_size_"):
        assert getattr(inv2, attr) == getattr(inv, attr), attr
    np.testing.assert_array_equal(inv2.stop_reason_, inv.stop_reason_)
    assert inv2.get_params()["batch_size"] == "auto"
    assert inv2.memory_budget == 2**20 and inv2.progress_tol is None
    det, det2 = cal[-1], again[-1]
    assert det2.validation_size == 0
    np.testing.assert_array_equal(det2.validation_scores_, det.validation_scores_)
    assert det2.validation_scores_.size == 30 and det2.threshold_ == det.threshold_
    with pytest.warns(FutureWarning, match="validation_distances_ is deprecated"):
        np.testing.assert_array_equal(det2.validation_distances_,
                                      -det.validation_scores_[::-1])
    np.testing.assert_array_equal(again.decision_function(X_test),
                                  cal.decision_function(X_test))


def test_owned_models_attributor_round_trip(tmp_path):
    from sklearn.frozen import FrozenEstimator

    from flipad_sklearn import OwnedModelsAttributor
    from flipad_sklearn.baselines import ConformalDetector

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (80, 3)), rng.normal(4, 1, (80, 3)),
                        rng.normal(-4, 1, (40, 3))])
    y = np.array(["G1"] * 80 + ["G2"] * 80 + ["none"] * 40, dtype=object)
    attr = OwnedModelsAttributor({"G1": ConformalDetector("ocsvm", fnr=0.1, random_state=0),
                                  "G2": ConformalDetector("ocsvm", fnr=0.1,
                                                          random_state=1)}).fit(X, y)
    persistence.save(attr, tmp_path / "attr.flipad")
    again = persistence.load(tmp_path / "attr.flipad")
    assert type(again) is OwnedModelsAttributor
    assert again.classes_.dtype == object and list(again.classes_) == ["G1", "G2"]
    np.testing.assert_array_equal(again.pvalues(X), attr.pvalues(X))
    np.testing.assert_array_equal(again.predict(X), attr.predict(X))
    # detectors fitted elsewhere, frozen
    frozen = OwnedModelsAttributor.from_fitted(
        {"G1": FrozenEstimator(attr.estimators_["G1"]), "G2": attr.estimators_["G2"]})
    persistence.save(frozen, tmp_path / "frozen.flipad")
    np.testing.assert_array_equal(persistence.load(tmp_path / "frozen.flipad").pvalues(X),
                                  attr.pvalues(X))
    # an object array of anything but strings is still refused
    with pytest.raises(TypeError, match="array of Python objects"):
        persistence.save(_with_objects(), tmp_path / "bad.flipad")


def _with_objects():
    sc = StandardScaler().fit(np.ones((3, 2)))
    sc.feature_names_in_ = np.array(["a", 1], dtype=object)
    return sc


def test_streaming_features_round_trip(tmp_path):
    from flipad_sklearn import (ActivationPooling, ChannelSelector, GeneratorStandardScaler,
                                StreamingFeatures)

    layer = _layer()
    X_g, A_g = _data(layer, 60, 0.0, 0)
    X_o, _ = _data(layer, 30, 1.5, 1)
    X = np.concatenate([X_g, X_o])
    inv = FinalLayerInverter(layer, anchor=A_g.mean(axis=0), positive=True, tol=1e-3,
                             max_iter=50, device="cpu")
    steps = [("pool", ActivationPooling((4, 6, 6))),
             ("select", ChannelSelector(3, input_shape=(4, 3, 3))),
             ("scaler", GeneratorStandardScaler())]
    pipe = Pipeline([
        ("feat", StreamingFeatures(inv, steps, batch_size=25)),
        ("det", FLIPADDetector(hidden_sizes=(16,), rep_dim=4, n_epochs=2, fnr=0.1,
                               random_state=0, device="cpu")),
    ]).fit(X, np.r_[np.ones(60), -np.ones(30)])
    persistence.save(pipe, tmp_path / "stream.flipad")
    again = persistence.load(tmp_path / "stream.flipad")
    assert type(again[0]) is StreamingFeatures and again[0].n_passes_ == pipe[0].n_passes_
    np.testing.assert_array_equal(again.decision_function(X), pipe.decision_function(X))


@pytest.mark.parametrize("upsample", ["bilinear", "matrix"])
def test_skip_inverter_round_trip(tmp_path, upsample):
    """StyleGAN's SkipInverter saves securely and comes back with its P⊥W operator."""
    from flipad_sklearn import SkipInverter
    from flipad_sklearn.skip_operator import SkipProjectedOperator

    rng = np.random.default_rng(0)
    layer = nn.Conv2d(3, 2, 1)
    X = rng.normal(size=(5, 2 * 4 * 4))
    if upsample == "matrix":
        # a given 1-D upsampling per axis (StyleGAN2's FIR filter is one)
        upsample = (rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))
    inv = SkipInverter(layer, upsample=upsample, activation_shape=(3, 4, 4), alpha=0.05,
                       append_skip=True, device="cpu").fit(X)
    Z = inv.transform(X)
    persistence.save(inv, tmp_path / "skip.flipad")
    inv2 = persistence.load(tmp_path / "skip.flipad")
    assert type(inv2) is SkipInverter
    # not the plain layer operator: the skip is projected out as before
    assert isinstance(inv2.operator_, SkipProjectedOperator)
    np.testing.assert_array_equal(inv2.transform(X), Z)
    np.testing.assert_array_equal(inv2.skip_, inv.skip_)
