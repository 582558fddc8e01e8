"""Second review of ConformalUnion, GaussianDensity and make_pixel_guard (issue 32)."""

import warnings

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

from flipad_sklearn import ConformalDetector, ConformalUnion, GaussianDensity, persistence
from flipad_sklearn.detection.conformal import ThresholdWarning
from flipad_sklearn.detection.conformal_pipeline import ConformalPipeline

from test_persistence import _craft, _members
from test_union import _fitted_key, saved_union  # noqa: F401 (fixture)


def test_a_frozen_detector_is_not_changed_and_its_own_threshold_is_reported():
    X = np.random.default_rng(0).normal(size=(400, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        d = ConformalDetector("gaussian", fnr=0.05, random_state=0).fit(X)
    threshold = d.threshold_
    u = ConformalUnion([("frozen", FrozenEstimator(d)),
                        ("forest", ConformalDetector(random_state=0))], fnr=0.02)
    with pytest.warns(ThresholdWarning, match="'frozen' is frozen"):
        u.fit(X)
    assert d.fnr == 0.05 and d.threshold_ == threshold      # the caller's object
    assert u.fnr_bound_ == pytest.approx(d.fnr_bound_ + u.estimators_[1][1].fnr_bound_)


def test_calibrate_updates_the_units_of_the_detectors_it_calibrates():
    rng = np.random.default_rng(0)
    u = ConformalUnion([("late", ConformalDetector("gaussian", validation_size=0)),
                        ("gauss", ConformalDetector("gaussian", random_state=0))],
                       fnr=0.1).fit(rng.normal(size=(300, 3)))
    assert u.scales_[0] == 1.0                  # nothing held out yet
    u.calibrate(rng.normal(size=(300, 3)) * 100, detectors=["late"])
    v = u.estimators_[0][1].validation_scores_
    q1, q3 = np.quantile(v, [0.25, 0.75])
    assert u.scales_[0] == pytest.approx(q3 - q1)
    Y = rng.normal(size=(50, 3))
    np.testing.assert_allclose(
        u.decision_function(Y),
        np.minimum(u.estimators_[0][1].decision_function(Y) / u.scales_[0],
                   u.estimators_[1][1].decision_function(Y) / u.scales_[1]))


def test_a_pipeline_of_one_conformal_step_gives_pvalues_and_calibrates():
    rng = np.random.default_rng(0)
    one = ConformalPipeline([("det", ConformalDetector("gaussian", random_state=0))],
                            input_range=(-1, 1), quantize="uint8")
    X = rng.uniform(-1, 1, size=(400, 4))
    u = ConformalUnion([("one", one), ("forest", ConformalDetector(random_state=0))],
                       fnr=0.1).fit(X)
    fitted = u.estimators_[0][1]
    # the pipeline's input contract applies to its p-values as to its predictions
    q = np.round((X[:20] + 1) * 127.5) / 127.5 - 1
    np.testing.assert_array_equal(fitted.pvalues(X[:20]), fitted.pvalues(q))
    np.testing.assert_array_equal(u.pvalues(X[:20], per_detector=True)[:, 0],
                                  fitted.pvalues(X[:20]))
    u.calibrate(rng.uniform(-1, 1, size=(100, 4)), detectors=["one"])
    assert fitted[-1].validation_scores_.size == 100


def test_gaussian_density_is_free_of_the_features_unit():
    """Eigenvalues are floored relative to the largest, not to 1."""
    X = np.random.default_rng(0).normal(size=(200, 5)) @ np.diag([1, 2, 3, 4, 5.0])
    Y = np.random.default_rng(1).normal(size=(20, 5))
    c = 1e-6
    np.testing.assert_allclose(GaussianDensity().fit(X * c).mahalanobis(Y * c),
                               GaussianDensity().fit(X).mahalanobis(Y), rtol=1e-6)


def test_gaussian_density_refuses_features_whose_covariance_overflows():
    X = np.random.default_rng(0).normal(size=(50, 3)) * 1e200
    with pytest.raises(ValueError, match="rescale"):
        GaussianDensity().fit(X)


@pytest.mark.parametrize("edit, message", [
    ("indefinite", "positive definite"), ("log_det", "log-determinant"),
])
def test_gaussian_files_that_would_change_every_score_are_refused(
        saved_union, tmp_path, edit, message):  # noqa: F811
    _, path, _ = saved_union
    spec, arrays = _members(path)
    key = _fitted_key(spec["root"], "flipad_sklearn.GaussianDensity", "precision_")
    P = arrays[key]
    if edit == "indefinite":
        w, V = np.linalg.eigh(P)
        w[0] = -w[0]                            # symmetric, finite, not a precision
        P = (V * w) @ V.T
        arrays[key] = 0.5 * (P + P.T)
    else:
        arrays[key] = 4.0 * P                   # log_det_ no longer matches
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


def test_pvalues_reject_where_predict_does_after_calibrating_equal_shares():
    """Three equal shares of 0.03 calibrated on the 99 samples each needs: a rejected
    sample's p_j is 1/100 = its bound, and p_j / (1/3) rounds above fnr."""
    rng = np.random.default_rng(0)
    u = ConformalUnion([(n, ConformalDetector("gaussian", validation_size=0, random_state=i))
                        for i, n in enumerate("abc")], fnr=0.03).fit(rng.normal(size=(300, 3)))
    u.calibrate(lambda n: rng.normal(size=(n, 3)))
    assert u.fnr_bound_ <= 0.03 + 1e-12
    Y = rng.normal(size=(3000, 3)) * 1.5
    rejected = u.predict(Y) == -1
    assert 0 < rejected.sum() < len(Y)
    np.testing.assert_array_equal(u.pvalues(Y) <= u.fnr, rejected)


@pytest.mark.parametrize("init", ["finetune", "reset"])
def test_shadows_of_a_package_generator_refuse_an_init_they_would_ignore(init):
    from flipad_sklearn.generators import ImageGenerator, train_shadows

    with pytest.raises(ValueError, match="your own generators"):
        train_shadows(ImageGenerator(), np.zeros((4, 1, 28, 28), np.float32), init=init)


@pytest.mark.parametrize("kwargs", [
    {"image_shape": (3, 16, 16), "size": 64},          # was: blocks of 1 pixel, 768 features
    {"image_shape": (3, 16.5, 16)},                    # was: truncated to 16
])
def test_pixel_guard_refuses_what_it_would_silently_change(kwargs):
    from flipad_sklearn import make_pixel_guard

    with pytest.raises(ValueError, match="image_shape|size"):
        make_pixel_guard(**kwargs)


@pytest.mark.parametrize("edit, message", [
    ("fnr_bound_", "fnr_bound_ does not follow"), ("threshold_", "threshold_ is not"),
    ("offset_", "offset_ is not"),
])
def test_union_files_whose_detectors_misstate_their_threshold_are_refused(
        saved_union, tmp_path, edit, message):  # noqa: F811
    """The union's fnr_bound_ is the sum of its detectors': a crafted 0 would promise 0."""
    _, path, _ = saved_union
    spec, arrays = _members(path)

    def detector_states(node):
        if isinstance(node, dict):
            if node.get("__type__") == "estimator" \
                    and node.get("class") == "flipad_sklearn.ConformalDetector" \
                    and any(k == "threshold_" for k, _ in node["state"]["items"]):
                yield node["state"]["items"]
            for v in node.values():
                yield from detector_states(v)
        elif isinstance(node, list):
            for v in node:
                yield from detector_states(v)
    items = next(detector_states(spec["root"]))
    shift = {"fnr_bound_": {}, "offset_": {"offset_": 1.0},
             "threshold_": {"threshold_": 1.0, "offset_": -1.0}}[edit]
    for i, (k, v) in enumerate(items):
        if edit == "fnr_bound_" and k == edit:
            items[i] = [k, 0.0]
        elif k in shift:                    # threshold_ moved with offset_ = -threshold_
            items[i] = [k, float(v) + shift[k]]
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


def _threshold_states(node, cls):
    """The state items of every fitted ``cls`` in a file's spec."""
    if isinstance(node, dict):
        if node.get("__type__") == "estimator" and node.get("class") == cls \
                and any(k == "threshold_" for k, _ in node["state"]["items"]):
            yield node["state"]["items"]
        for v in node.values():
            yield from _threshold_states(v, cls)
    elif isinstance(node, list):
        for v in node:
            yield from _threshold_states(v, cls)


def _moved_threshold(items, by):
    """Move ``threshold_`` by ``by`` and keep ``offset_ = -threshold_`` (a careful forger)."""
    for i, (k, v) in enumerate(items):
        if k == "threshold_":
            items[i] = [k, float(v) + by]
        elif k == "offset_":
            items[i] = [k, float(v) - by]


@pytest.mark.parametrize("by", [-1e6, 1e-3])
def test_flipad_files_whose_threshold_was_moved_are_refused(tmp_path, by):
    """A standalone detector's threshold must be the quantile of its held-out scores:
    moved far down it would accept every image while the file still states fnr."""
    from test_persistence import _data, _layer

    from flipad_sklearn.pipeline import make_flipad

    layer = _layer()
    X_g, A_g = _data(layer, 80, 0.0, 0)
    X_o, _ = _data(layer, 40, 1.5, 1)
    pipe = make_flipad(layer, "tanh", A_g.mean(axis=0), tol=1e-3, max_iter=50,
                       n_channels=3, fnr=0.05, random_state=0, device="cpu",
                       detector_params=dict(hidden_sizes=(8,), rep_dim=4, n_epochs=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(np.concatenate([X_g, X_o]), np.r_[np.ones(80), -np.ones(40)])
    path = persistence.save(pipe, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    persistence.load(path)                                   # the honest file loads
    spec, arrays = _members(path)
    _moved_threshold(next(_threshold_states(spec["root"], "flipad_sklearn.FLIPADDetector")),
                     by)
    with pytest.raises(persistence.UnsafeFileError, match="not the conformal quantile"):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


def test_conformal_detector_files_whose_threshold_was_moved_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    det = ConformalDetector("gaussian", fnr=0.05, random_state=0).fit(
        rng.normal(size=(200, 3)))
    path = persistence.save(det, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    X_new = rng.normal(size=(50, 3)) * 2
    np.testing.assert_array_equal(persistence.load(path).predict(X_new), det.predict(X_new))
    spec, arrays = _members(path)
    _moved_threshold(next(_threshold_states(spec["root"],
                                            "flipad_sklearn.ConformalDetector")), -1e6)
    with pytest.raises(persistence.UnsafeFileError, match="not the conformal quantile"):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


def _flipad_detector(**kw):
    from flipad_sklearn.detection import FLIPADDetector

    Y = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FLIPADDetector(hidden_sizes=(8,), rep_dim=4, n_epochs=2, random_state=0,
                              device="cpu", **kw).fit(Y)


@pytest.mark.parametrize("kw", [dict(fnr=0.05, score_dtype="float32"),
                                dict(fnr=0.005, validation_size=10, score_dtype="float32"),
                                dict(fnr=0.005, validation_size=10),
                                dict(fnr=0.05, validation_size=0),
                                dict(fnr=0.0)])
def test_honest_standalone_flipad_detector_files_load(tmp_path, kw):
    """float32 scores move the threshold by a 1e-5 relative margin (_threshold_margin);
    an uncalibrated detector (validation_size=0) has no threshold; both are honest."""
    from flipad_sklearn.detection.conformal import calibrate

    det = _flipad_detector(**kw)
    X_new = np.random.default_rng(1).normal(size=(30, 6)).astype(np.float32)
    path = persistence.save(det, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    back = persistence.load(path)
    if hasattr(det, "threshold_"):
        np.testing.assert_array_equal(back.predict(X_new), det.predict(X_new))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calibrate(det, np.random.default_rng(2).normal(size=(60, 6)).astype(np.float32))
        path = persistence.save(det, tmp_path / "cal.flipad") or tmp_path / "cal.flipad"
        np.testing.assert_array_equal(persistence.load(path).predict(X_new),
                                      det.predict(X_new))


def _drop_and_move(items, drop, by):
    items[:] = [it for it in items if it[0] not in drop]
    _moved_threshold(items, by)
    for it in items:            # offset_ without threshold_: set it directly
        if it[0] == "offset_" and "threshold_" in drop:
            it[1] = float(it[1]) - by


@pytest.mark.parametrize("cls", ["ConformalDetector", "FLIPADDetector"])
@pytest.mark.parametrize("drop", [{"validation_scores_"}, {"threshold_"}])
def test_files_that_drop_what_the_threshold_is_checked_against_are_refused(
        tmp_path, cls, drop):
    """predict reads offset_: dropping the held-out scores (or threshold_) skipped the
    quantile check, so any offset_ loaded."""
    if cls == "FLIPADDetector":
        det = _flipad_detector(fnr=0.05)
    else:
        det = ConformalDetector("gaussian", fnr=0.05, random_state=0).fit(
            np.random.default_rng(0).normal(size=(200, 3)))
    path = persistence.save(det, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    persistence.load(path)
    spec, arrays = _members(path)
    _drop_and_move(next(_threshold_states(spec["root"], f"flipad_sklearn.{cls}")), drop, -1e6)
    with pytest.raises(persistence.UnsafeFileError, match="go together"):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


def test_a_detector_whose_fnr_was_changed_after_fit_is_refused_at_save(tmp_path):
    """set_params(fnr=...) on a fitted detector keeps the old threshold: save wrote a
    file that load then refused (fnr_bound_ / quantile); save says so instead."""
    from flipad_sklearn.detection.conformal import calibrate

    rng = np.random.default_rng(0)
    det = ConformalDetector("gaussian", fnr=0.05, random_state=0).fit(
        rng.normal(size=(300, 4)))
    det.set_params(fnr=0.01)
    with pytest.raises(ValueError, match="load would refuse"):
        persistence.save(det, tmp_path / "stale.flipad")
    calibrate(det, rng.normal(size=(150, 4)))
    path = persistence.save(det, tmp_path / "ok.flipad") or tmp_path / "ok.flipad"
    assert persistence.load(path).fnr == 0.01
