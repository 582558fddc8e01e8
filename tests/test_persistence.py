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
from flipad_sklearn.operators import build_layer, describe_layer
from flipad_sklearn.detection import FingerprintCorrelation
from flipad_sklearn.pipeline import make_dctpad, make_flipad

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
                       # the guard kept: the file then holds a OneClassSVM too (with
                       # labelled negatives combine="auto" is Deep SAD alone)
                       detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3,
                                            combine="mean"))
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
    from flipad_sklearn.detection.conformal import calibrate

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
    from flipad_sklearn.detection import ConformalDetector

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
    from flipad_sklearn.operators.skip import SkipProjectedOperator

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


# ------------------------------------------------ hostile files (issue 28)
def _members(path):
    """``(spec, arrays)`` of a .flipad file."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "__spec__"}
        spec = json.loads(npz["__spec__"].tobytes())
    return spec, arrays


def _craft(dst, spec, arrays, raw_spec=None):
    """Write a deflated .flipad archive (as a hostile sender would)."""
    import io

    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        blob = raw_spec if raw_spec is not None else json.dumps(spec).encode()
        for k, a in [("__spec__", np.frombuffer(blob, np.uint8))] + list(arrays.items()):
            bio = io.BytesIO()
            np.lib.format.write_array(bio, np.asarray(a), allow_pickle=False)
            zf.writestr(k + ".npy", bio.getvalue())
    return dst


def _state(node, cls):
    """The ``items`` of the first estimator of class ``cls`` in a spec."""
    if isinstance(node, dict):
        if node.get("__type__") == "estimator" and node.get("class") == cls:
            return node["state"]["items"]
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            found = _state(v, cls)
            if found is not None:
                return found
    return None


def _entry(items, key):
    for item in items:
        if item[0] == key:
            return item
    raise KeyError(key)


@pytest.fixture
def saved(fitted, tmp_path):
    pipe, X_test = fitted
    path = persistence.save(pipe, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    return path, pipe, X_test


def _peak_bytes(fn):
    """Peak of numpy/Python allocations while ``fn`` runs (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_member_referenced_many_times_is_read_once(saved, tmp_path):
    # before: every reference decompressed the member anew (200 MB x 12 = 2.8 GB)
    path, _, _ = saved
    spec, arrays = _members(path)
    arrays["big"] = np.zeros(2_500_000)                      # 20 MB, deflates to ~20 kB
    _state(spec["root"], "flipad_sklearn.ConformalPipeline").append(
        ["junk", [{"__type__": "ndarray", "key": "big"}] * 12])
    bad = _craft(tmp_path / "bomb.flipad", spec, arrays)
    assert os.path.getsize(bad) < 200_000

    def load():
        with pytest.raises(persistence.UnsafeFileError, match="referenced twice"):
            persistence.load(bad)
    assert _peak_bytes(load) < 60 * 2 ** 20


def test_decompressed_bytes_are_capped_before_decompression(saved, tmp_path):
    path, _, _ = saved
    spec, arrays = _members(path)
    arrays["big"] = np.zeros(4_000_000)                      # 32 MB of zeros
    _state(spec["root"], "flipad_sklearn.ConformalPipeline").append(
        ["junk", {"__type__": "ndarray", "key": "big"}])
    bad = _craft(tmp_path / "big.flipad", spec, arrays)

    def load():
        with pytest.raises(persistence.UnsafeFileError, match="max_bytes=8388608"):
            persistence.load(bad, max_bytes=8 * 2 ** 20)
    assert _peak_bytes(load) < 10 * 2 ** 20
    # the budget is the caller's: the default takes it (and the junk is ignored)
    assert isinstance(persistence.load(bad), Pipeline)
    with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
        persistence.load(bad, max_bytes=0)


def test_spec_size_and_depth_are_capped(saved, tmp_path):
    path, _, _ = saved
    spec, arrays = _members(path)
    deep = _craft(tmp_path / "deep.flipad", spec, arrays,
                  raw_spec=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(persistence.UnsafeFileError, match="corrupt spec"):
        persistence.load(deep)                       # before: a raw RecursionError
    nested = {"__type__": "tuple", "items": []}
    for _ in range(100):
        nested = [nested]
    spec["root"]["state"]["items"].append(["junk", nested])
    with pytest.raises(persistence.UnsafeFileError, match="deeper than 64"):
        persistence.load(_craft(tmp_path / "nested.flipad", spec, arrays))
    spec, arrays = _members(path)
    padded = json.dumps(spec).encode()
    padded = padded[:-1] + b" " * (persistence.MAX_SPEC_BYTES + 1) + b"}"
    with pytest.raises(persistence.UnsafeFileError, match="over the limit"):
        persistence.load(_craft(tmp_path / "padded.flipad", spec, arrays, raw_spec=padded))


def test_npy_header_that_lies_about_its_shape(saved, tmp_path):
    # before: numpy tried to allocate 7.28 TiB (MemoryError)
    import io

    path, _, _ = saved
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "a3.npy":
                hdr = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
                hdr += b" " * (117 - len(hdr)) + b"\n"
                data = b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr + b"\0" * 8
            zf.writestr(info, data)
    bad = tmp_path / "lie.flipad"
    bad.write_bytes(out.getvalue())
    with pytest.raises(persistence.UnsafeFileError, match=r"header says shape \(1000000000000,\)"):
        persistence.load(bad)


@pytest.mark.parametrize("edit, message", [
    # libsvm trusts these shapes: before, a read out of bounds (SIGSEGV at 30 M
    # support vectors, NaN or changed scores below)
    ("dual_coef_size", r"_dual_coef_ has shape \(1, 1\)"),
    ("empty_intercept", r"_intercept_ has shape \(0,\)"),
    ("nan_dual_coef", "_dual_coef_ holds NaN"),
    ("n_support", "_n_support"),
    ("int64_support", "support_ must be int32"),
])
def test_inconsistent_one_class_svm_never_reaches_libsvm(saved, tmp_path, edit, message):
    path, _, X_test = saved
    spec, arrays = _members(path)
    items = _state(spec["root"], "sklearn.svm.OneClassSVM")
    key = {k: _entry(items, k)[1]["key"] for k in
           ("support_vectors_", "_dual_coef_", "_intercept_", "_n_support", "support_")}
    if edit == "dual_coef_size":
        n, d = 50_000, arrays[key["support_vectors_"]].shape[1]
        arrays[key["support_vectors_"]] = np.zeros((n, d))
        arrays[key["support_"]] = np.zeros(n, np.int32)
        arrays[key["_n_support"]] = np.array([n, 0], np.int32)
        arrays[key["_dual_coef_"]] = np.ones((1, 1))
    elif edit == "empty_intercept":
        arrays[key["_intercept_"]] = np.zeros(0)
    elif edit == "nan_dual_coef":
        a = arrays[key["_dual_coef_"]].copy()
        a[0, 0] = np.nan
        arrays[key["_dual_coef_"]] = a
    elif edit == "n_support":
        arrays[key["_n_support"]] = arrays[key["_n_support"]] + 5
    else:
        arrays[key["support_"]] = arrays[key["support_"]].astype(np.int64)
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "svm.flipad", spec, arrays))


def _strided_inverter(stride):
    """A Conv2d whose activations are ``stride**2`` times its 3x16x16 outputs."""
    layer = nn.Conv2d(1, 3, 1, stride=stride)
    shape = (1, 16 * stride, 16 * stride)
    X = np.tanh(np.random.default_rng(0).normal(size=(2, 3, 16, 16))).astype(np.float32)
    return FinalLayerInverter(layer, anchor=np.zeros(shape), activation_shape=shape,
                              device="cpu", max_iter=3).fit(X)


def test_scoring_memory_is_checked_against_the_callers_budget(tmp_path):
    # before: batch_size_ and memory_budget came from the file, so a strided layer
    # with a large activation shape made scoring one image allocate gigabytes
    inv = _strided_inverter(32)                     # 262144 activations per image
    path = tmp_path / "strided.flipad"
    persistence.save(inv, path)
    spec, arrays = _members(path)
    _entry(spec["root"]["state"]["items"], "batch_size_")[1] = 10 ** 6
    _entry(spec["root"]["state"]["items"], "memory_budget")[1] = 2 ** 60
    bad = _craft(tmp_path / "big_batch.flipad", spec, arrays)
    with pytest.raises(persistence.UnsafeFileError,
                       match=r"scoring one sample with it needs about .* max_bytes=33554432"):
        persistence.load(bad, max_bytes=32 * 2 ** 20)
    budget = 256 * 2 ** 20
    again = persistence.load(bad, max_bytes=budget)
    assert 1 <= again.batch_size_ < 30                # the file's 10**6 lowered
    assert again.memory_budget <= budget
    fixed, per_sample = persistence._check.scoring_bytes(
        again.anchor_.size, 768, "float32", again.solver_,
        again.layer.weight.detach().numpy(), (1, 512, 512))
    assert fixed + per_sample * again.batch_size_ <= budget


def test_scoring_memory_estimate_bounds_the_real_peak(tmp_path):
    # the estimate is an upper bound of what transform allocates (numpy + torch)
    import resource
    import subprocess
    import sys

    inv = _strided_inverter(32)
    path = tmp_path / "strided.flipad"
    persistence.save(inv, path)
    fixed, per_sample = persistence._check.scoring_bytes(
        inv.anchor_.size, 768, inv.precision, inv.solver_, inv.layer.weight.detach().numpy(),
        inv.activation_shape_)
    code = (
        "import resource, sys, numpy as np\n"
        "from flipad_sklearn import persistence\n"
        f"inv = persistence.load({str(path)!r})\n"
        "x = np.tanh(np.random.default_rng(1).normal(size=(1, 3, 16, 16))).astype('f4')\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "inv.transform(x)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.split()[-1]) * 1024
    assert growth <= fixed + per_sample, (growth, fixed + per_sample)
    del resource


@pytest.mark.parametrize("cls, key, value, message", [
    # before: raw AttributeError tracebacks at scoring, or silently other scores
    ("flipad_sklearn.ActivationPooling", "method", "junk", "invalid parameters"),
    ("flipad_sklearn.FinalLayerInverter", "operator_", "junk", "operator_ is not rebuilt"),
    ("flipad_sklearn.FinalLayerInverter", "solver_", 7, "solver_ '7' is not one of"),
    ("flipad_sklearn.FinalLayerInverter", "lipschitz_", 1e-3, "lipschitz_ .* is not the layer's"),
    ("flipad_sklearn.FinalLayerInverter", "lipschitz_", 0.0, "lipschitz_ must be positive"),
    ("flipad_sklearn.FinalLayerInverter", "batch_size_", -1, "batch_size_ -1"),
    ("flipad_sklearn.FinalLayerInverter", "activation_shape_",
     {"__type__": "tuple", "items": [4, 60, 60]}, "anchor_ has shape"),
    ("flipad_sklearn.FLIPADDetector", "threshold_", float("nan"), "threshold_ must be"),
    ("flipad_sklearn.FLIPADDetector", "n_features_in_", 28, "takes 27 features"),
    ("flipad_sklearn.ChannelSelector", "n_channels", "3", "invalid parameters"),
])
def test_crafted_state_is_refused_with_the_one_exception(saved, tmp_path, cls, key, value,
                                                         message):
    path, _, _ = saved
    spec, arrays = _members(path)
    _entry(_state(spec["root"], cls), key)[1] = value
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "crafted.flipad", spec, arrays))


@pytest.mark.parametrize("key", ["bias_", "_anchor_image", "center_"])
def test_edited_derived_arrays_are_refused(saved, tmp_path, key):
    # a shifted bias or anchor image changes every score: refused, not scored
    path, _, _ = saved
    spec, arrays = _members(path)
    cls = "flipad_sklearn.FLIPADDetector" if key == "center_" else \
        "flipad_sklearn.FinalLayerInverter"
    k = _entry(_state(spec["root"], cls), key)[1]["key"]
    arrays[k] = arrays[k][:-1] if key == "center_" else arrays[k] + 0.5
    with pytest.raises(persistence.UnsafeFileError, match=key):
        persistence.load(_craft(tmp_path / "edited.flipad", spec, arrays))


@pytest.mark.parametrize("key, edit, message", [
    # found by the fuzz: scored as an unchecked ValueError (infinite float32
    # features), and as NaN scores (a negative batch-norm variance)
    ("scale_", lambda a: a * 0 + 1e-35, "float32's range"),
    ("running_var", lambda a: -np.abs(a) - 1.0, "negative batch-norm running_var"),
])
def test_absurd_scaler_and_network_state_is_refused(saved, tmp_path, key, edit, message):
    path, _, _ = saved
    spec, arrays = _members(path)
    if key == "scale_":
        k = _entry(_state(spec["root"], "flipad_sklearn.GeneratorStandardScaler"),
                   key)[1]["key"]
    else:
        net = _entry(_state(spec["root"], "flipad_sklearn.FLIPADDetector"),
                     "_network_state")[1]
        found = []

        def walk(node):
            if isinstance(node, list) and len(node) == 2 and isinstance(node[0], str) \
                    and node[0].endswith("running_var") and isinstance(node[1], dict):
                found.append(node[1]["key"])
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(net)
        if not found:
            pytest.skip("the network of this pipeline has no batch norm")
        k = found[0]
    arrays[k] = edit(arrays[k])
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "absurd.flipad", spec, arrays))


def test_old_files_are_migrated_or_refused_with_a_clear_message(saved, tmp_path):
    path, pipe, X_test = saved
    spec, arrays = _members(path)
    items = _state(spec["root"], "flipad_sklearn.FinalLayerInverter")
    items[:] = [it for it in items if it[0] != "datafit"]   # before the parameter existed
    with pytest.warns(persistence.FileVersionWarning, match="had no 'datafit'"):
        again = persistence.load(_craft(tmp_path / "old.flipad", spec, arrays))
    assert again[0].datafit == "preactivation"
    np.testing.assert_array_equal(again.decision_function(X_test),
                                  pipe.decision_function(X_test))
    spec, arrays = _members(path)
    items = _state(spec["root"], "flipad_sklearn.FinalLayerInverter")
    items[:] = [it for it in items if it[0] != "bias_"]     # a fitted attribute missing
    with pytest.raises(persistence.UnsafeFileError, match="re-fit with this version"):
        persistence.load(_craft(tmp_path / "older.flipad", spec, arrays))


def test_file_of_another_package_version_warns(saved, tmp_path):
    path, _, _ = saved
    spec, arrays = _members(path)
    spec["versions"]["flipad_sklearn"] = "0.0.1"
    with pytest.warns(persistence.FileVersionWarning, match="written by flipad_sklearn '0.0.1'"):
        persistence.load(_craft(tmp_path / "v.flipad", spec, arrays))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", persistence.FileVersionWarning)
        persistence.load(path)                       # this version: no warning


@pytest.mark.parametrize("value, message", [
    (1.0, "must be an integer, got float 1.0"), ("1", "must be an integer, got str '1'"),
    (True, "must be an integer, got bool True"), (0, "format_version 0 does not exist"),
    (-7, "format_version -7 does not exist"), (4, "Upgrade flipad_sklearn"),
])
def test_format_version_is_checked(saved, tmp_path, value, message):
    path, _, _ = saved
    spec, arrays = _members(path)
    spec["format_version"] = value
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "fv.flipad", spec, arrays))


def test_corrupt_files_raise_the_one_exception(saved, tmp_path):
    path, _, _ = saved
    good = path.read_bytes()
    (tmp_path / "cut.flipad").write_bytes(good[:len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10
    (tmp_path / "flip.flipad").write_bytes(bytes(flipped))
    for name in ("cut.flipad", "flip.flipad"):   # before: BadZipFile, not a ValueError
        with pytest.raises(persistence.UnsafeFileError, match="not a valid flipad_sklearn"):
            persistence.load(tmp_path / name)


def test_concurrent_saves_to_one_path_leave_one_complete_file(fitted, tmp_path):
    # before: one temporary name per process ("path.<pid>.tmp"), shared by threads:
    # 29 of 60 rounds left a corrupt file
    import threading

    pipe, X_test = fitted
    path = tmp_path / "shared.flipad"
    expected = pipe.decision_function(X_test[:2])
    for _ in range(5):
        barrier = threading.Barrier(4)
        errors = []

        def save():
            barrier.wait()
            try:
                persistence.save(pipe, path)
            except BaseException as exc:    # pragma: no cover - reported below
                errors.append(exc)
        threads = [threading.Thread(target=save) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        np.testing.assert_array_equal(persistence.load(path).decision_function(X_test[:2]),
                                      expected)
        assert os.listdir(tmp_path) == ["shared.flipad"]       # no temporary left


def test_layer_and_network_descriptions_are_checked_before_allocating():
    desc = describe_layer(nn.Linear(3, 2))
    desc["kwargs"]["in_features"] = 10 ** 6                    # 8 TB if allocated
    desc["kwargs"]["out_features"] = 10 ** 6
    with pytest.raises(ValueError, match=r"the layer needs \(1000000, 1000000\)"):
        build_layer(desc)
    from flipad_sklearn.detection.deepsad.networks import rebuild_network

    spec = {"kind": "mlp", "kwargs": {"n_features": 10 ** 6, "hidden_sizes": (10 ** 6,),
                                      "rep_dim": 4, "batch_norm": False}}
    with pytest.raises(ValueError, match="does not fit"):
        rebuild_network(spec, {"net.0.weight": np.zeros((2, 2), np.float32)})


def test_saved_file_has_the_permissions_open_would_give(fitted, tmp_path):
    # the unique temporary file of mkstemp is 0600; the saved file is not
    pipe, _ = fitted
    mask = os.umask(0o022)
    try:
        persistence.save(pipe, tmp_path / "new.flipad")
        assert os.stat(tmp_path / "new.flipad").st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.flipad", 0o640)
        persistence.save(pipe, tmp_path / "new.flipad")      # an existing file keeps its mode
        assert os.stat(tmp_path / "new.flipad").st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


@pytest.mark.parametrize("key, value", [("mean_", 1e300), ("mean_", -1e300),
                                        ("scale_", 1e-300)])
def test_scaler_beyond_float32_is_refused(saved, tmp_path, key, value):
    # before: the file loaded and scoring raised sklearn's "Input X contains infinity
    # or a value too large for dtype('float32')" (found by the persistence fuzz)
    path, _, _ = saved
    spec, arrays = _members(path)
    items = _state(spec["root"], "flipad_sklearn.GeneratorStandardScaler")
    k = _entry(items, key)[1]["key"]
    arrays[k] = arrays[k].copy()
    arrays[k][0] = value
    with pytest.raises(persistence.UnsafeFileError, match="beyond float32's range"):
        persistence.load(_craft(tmp_path / "scaler.flipad", spec, arrays))


# ------------------------------------------------ several Deep SAD networks
@pytest.fixture(scope="module")
def ensemble():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(200, 6)), rng.normal(1.0, size=(80, 6))]
    y = np.r_[np.ones(200), -np.ones(80)]
    det = FLIPADDetector(hidden_sizes=(16,), rep_dim=8, n_epochs=3, fnr=0.05, device="cpu",
                         n_networks=3, random_state=0).fit(X, y)
    return det, rng.normal(size=(40, 6))


def test_an_ensemble_round_trips(ensemble, tmp_path):
    det, X = ensemble
    again = persistence.load(persistence.save(det, tmp_path / "ens.flipad")
                             or tmp_path / "ens.flipad")
    assert len(again.extra_networks_) == 2
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(again.distance_scales_, det.distance_scales_)


def _edit_ensemble(det, tmp_path, edit):
    path = tmp_path / "ens.flipad"
    persistence.save(det, path)
    spec, arrays = _members(path)
    edit(_state(spec["root"], "flipad_sklearn.FLIPADDetector"), arrays)
    return _craft(tmp_path / "crafted.flipad", spec, arrays)


def _negative_scale(items, arrays):
    k = _entry(items, "distance_scales_")[1]["key"]
    arrays[k] = -arrays[k]


def _one_scale_too_few(items, arrays):
    k = _entry(items, "distance_scales_")[1]["key"]
    arrays[k] = arrays[k][:-1]


def _one_centre_too_few(items, arrays):
    k = _entry(items, "extra_centers_")[1]["key"]
    arrays[k] = arrays[k][:-1]


def _no_scales(items, arrays):
    _entry(items, "distance_scales_")[1] = None


def _other_weights(items, arrays):
    net = _entry(items, "_extra_network_states")[1][0]
    k = _entry(net["items"], "net.0.weight")[1]["key"]
    arrays[k] = np.zeros((3, 6), np.float32)


def _nan_weights(items, arrays):
    net = _entry(items, "_extra_network_states")[1][1]
    k = _entry(net["items"], "net.0.weight")[1]["key"]
    arrays[k] = np.full_like(arrays[k], np.nan)


def _no_spec(items, arrays):
    _entry(items, "_network_spec")[1] = None


def _scale(value):
    def edit(items, arrays):
        k = _entry(items, "distance_scales_")[1]["key"]
        arrays[k] = arrays[k] * 0 + value
    return edit


def _ratio(items, arrays):
    k = _entry(items, "distance_scales_")[1]["key"]
    arrays[k] = arrays[k] * np.r_[1.0, 1.0, 1e7]


def _n_networks(value):
    def edit(items, arrays):
        _entry(items, "n_networks")[1] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_negative_scale, r"distance_scales_ must hold one scale in \[1e-30, 1e30\] per network"),
    (_one_scale_too_few, r"distance_scales_ must hold one scale in \[1e-30, 1e30\] per network"),
    (_one_centre_too_few, "extra_centers_ has shape"),
    (_no_scales, "further networks but no distance_scales_"),
    (_other_weights, "network 2 has other weights than its first"),
    (_nan_weights, "network 3 state is not a dict of finite arrays"),
    (_no_spec, "network weights but no network description"),
    # found by the review: scores all -inf (a subnormal scale) or every sample G's
    (_scale(5e-324), r"one scale in \[1e-30, 1e30\]"),
    (_scale(1e300), r"one scale in \[1e-30, 1e30\]"),
    (_ratio, "differ by more than 1e6"),
    # the parameter must say what the file holds (get_params, clone), and be bounded
    (_n_networks(1), "n_networks is 1 but the detector holds 3 networks"),
    (_n_networks(50), "n_networks is 50 but the detector holds 3 networks"),
    (_n_networks(100_000), "invalid parameters"),
])
def test_a_crafted_ensemble_is_refused(ensemble, tmp_path, edit, message):
    det, _ = ensemble
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_edit_ensemble(det, tmp_path, edit))


def test_network_weights_without_their_description_are_refused(tmp_path):
    # before: a TypeError from rebuilding a network of no description, wrapped
    rng = np.random.default_rng(1)
    one = FLIPADDetector(hidden_sizes=(16,), rep_dim=8, n_epochs=2, fnr=0.1, device="cpu",
                         random_state=0).fit(rng.normal(size=(100, 6)))
    with pytest.raises(persistence.UnsafeFileError,
                       match="network weights but no network description"):
        persistence.load(_edit_ensemble(one, tmp_path, _no_spec))


def test_an_ensemble_is_written_in_format_2_a_single_network_in_1(ensemble, tmp_path):
    # a release that reads version 1 only would score an ensemble with its first
    # network against the ensemble's threshold (25 of 200 verdicts flipped in the
    # review); version 2 makes it refuse the file instead
    det, X = ensemble
    persistence.save(det, tmp_path / "ens.flipad")
    assert _members(tmp_path / "ens.flipad")[0]["format_version"] == 2
    one = FLIPADDetector(hidden_sizes=(16,), rep_dim=8, n_epochs=2, fnr=0.1, device="cpu",
                         random_state=0).fit(np.random.default_rng(1).normal(size=(100, 6)))
    persistence.save(one, tmp_path / "one.flipad")
    assert _members(tmp_path / "one.flipad")[0]["format_version"] == 1


def test_a_single_network_file_with_distance_scales_is_refused(tmp_path):
    one = FLIPADDetector(hidden_sizes=(16,), rep_dim=8, n_epochs=2, fnr=0.1, device="cpu",
                         random_state=0).fit(np.random.default_rng(1).normal(size=(100, 6)))
    persistence.save(one, tmp_path / "one.flipad")
    spec, arrays = _members(tmp_path / "one.flipad")
    arrays["scales"] = np.array([1e-3])
    _entry(_state(spec["root"], "flipad_sklearn.FLIPADDetector"),
           "distance_scales_")[1] = {"__type__": "ndarray", "key": "scales"}
    with pytest.raises(persistence.UnsafeFileError, match="set for a single network"):
        persistence.load(_craft(tmp_path / "crafted.flipad", spec, arrays))


def _dct_state(spec):
    """The items of the DCTFeatures state in a file's spec."""
    return _state(spec["root"], "flipad_sklearn.DCTFeatures")


def test_dctpad_with_tiles_round_trips_and_its_shape_is_checked(tmp_path):
    """DCTFeatures(block_size=4) in DCTPAD: same scores after a file; a file whose
    image shape disagrees with its feature count is refused; one written before
    block_size existed reads as the whole-image spectrum."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 1, 8, 8))
    y = np.r_[np.ones(40), -np.ones(20)]
    pipe = make_dctpad((1, 8, 8), input_range=None, quantize=None, fnr=0.2, random_state=0,
                       block_size=4, detector_params=dict(n_epochs=1, hidden_sizes=(8,),
                                                          rep_dim=4)).fit(X, y)
    src = tmp_path / "dct.flipad"
    persistence.save(pipe, src)
    np.testing.assert_array_equal(persistence.load(src).score_samples(X),
                                  pipe.score_samples(X))
    # a reader from before the tiles would score the whole spectrum alone: format 3
    assert _members(src)[0]["format_version"] == 3
    persistence.save(pipe.set_params(dct__block_size=None), tmp_path / "whole.flipad")
    assert _members(tmp_path / "whole.flipad")[0]["format_version"] == 1
    pipe.set_params(dct__block_size=4)

    def wrong_shape(spec):
        _entry(_dct_state(spec), "input_shape_")[1] = {"__type__": "tuple", "items": [1, 4, 8]}
    _rewrite_spec(src, tmp_path / "bad.flipad", wrong_shape)
    with pytest.raises(persistence.UnsafeFileError, match="input_shape_ does not match"):
        persistence.load(tmp_path / "bad.flipad")

    def bool_tiles(spec):   # passes scikit-learn's Integral check; crashed at scoring
        _entry(_dct_state(spec), "block_size")[1] = True
    _rewrite_spec(src, tmp_path / "bool.flipad", bool_tiles)
    with pytest.raises(persistence.UnsafeFileError, match="block_size must be a positive"):
        persistence.load(tmp_path / "bool.flipad")

    def before_tiles(spec):
        items = _dct_state(spec)
        items[:] = [item for item in items if item[0] != "block_size"]
    _rewrite_spec(src, tmp_path / "old.flipad", before_tiles)
    # the detector after it takes the tiles' features too: the chain check names it
    with pytest.raises(persistence.UnsafeFileError, match="makes 64 features"):
        persistence.load(tmp_path / "old.flipad")
