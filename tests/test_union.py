"""ConformalUnion, GaussianDensity and make_pixel_guard (issue 32: open world by construction)."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import binom, multivariate_normal
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError

from flipad_sklearn import (
    ConformalDetector, ConformalUnion, GaussianDensity, make_open_world_union, make_pixel_guard,
    persistence,
)
from flipad_sklearn.generators import train_shadows

from test_persistence import _craft, _entry, _members, _state


def _union(fnr=0.05, weights=None):
    return ConformalUnion([("forest", ConformalDetector("iforest", random_state=0)),
                           ("gauss", ConformalDetector("gaussian", random_state=1))],
                          fnr=fnr, weights=weights)


# ------------------------------------------------------------------ GaussianDensity
def test_gaussian_density_without_shrinkage_is_the_gaussian_log_density():
    X = np.random.default_rng(0).normal(size=(500, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0])
    g = GaussianDensity(shrinkage=0.0).fit(X)
    cov = np.cov(X, rowvar=False, bias=True)
    Y = np.random.default_rng(1).normal(size=(7, 4))
    np.testing.assert_allclose(g.score_samples(Y),
                               multivariate_normal(X.mean(0), cov).logpdf(Y), rtol=1e-10)


def test_gaussian_density_shrinks_as_ledoit_wolf():
    X = np.random.default_rng(0).normal(size=(30, 50))     # more features than samples
    g = GaussianDensity().fit(X)
    lw = LedoitWolf().fit(X)
    assert g.shrinkage_ == pytest.approx(lw.shrinkage_)
    np.testing.assert_allclose(np.linalg.inv(g.precision_), lw.covariance_, atol=1e-10)
    assert np.isfinite(g.score_samples(X)).all()


def test_gaussian_density_of_constant_samples_stays_finite():
    g = GaussianDensity().fit(np.ones((10, 3)))
    assert np.isfinite(g.precision_).all() and np.isfinite(g.score_samples(np.zeros((2, 3)))).all()


# ------------------------------------------------------------------ ConformalUnion
def test_each_detector_gets_its_share_and_the_bound_is_their_sum():
    X = np.random.default_rng(0).normal(size=(600, 3))
    u = _union(fnr=0.05, weights={"forest": 3, "gauss": 1}).fit(X)
    fnrs = [e.fnr for _, e in u.estimators_]
    assert fnrs == pytest.approx([0.0375, 0.0125])
    assert u.fnr_bound_ == pytest.approx(sum(e.fnr_bound_ for _, e in u.estimators_))
    assert u.fnr_bound_ <= 0.05 + 1e-12


def test_union_rejects_exactly_what_some_detector_rejects():
    rng = np.random.default_rng(0)
    u = _union().fit(rng.normal(size=(400, 3)))
    Y = np.r_[rng.normal(size=(300, 3)), rng.normal(size=(100, 3)) * 3]
    members = np.column_stack([e.predict(Y) for _, e in u.estimators_])
    expected = np.where((members == 1).all(1), 1, -1)
    np.testing.assert_array_equal(u.predict(Y), expected)
    assert (np.sign(u.decision_function(Y)) >= 0).tolist() == (expected == 1).tolist()
    assert 0 < (expected == -1).sum() < len(Y)


def test_fresh_samples_of_g_are_rejected_at_most_fnr():
    """The union bound holds (each detector alone at fnr would reject ~2 fnr)."""
    rng = np.random.default_rng(0)
    rejected = 0
    n_test = 2000
    for seed in range(5):
        u = _union(fnr=0.05).fit(rng.normal(size=(400, 3)))
        rejected += (u.predict(rng.normal(size=(n_test, 3))) == -1).sum()
    # one-sided binomial test at 0.001 against "rejects fnr = 0.05 of G"
    assert rejected <= binom.ppf(0.999, 5 * n_test, 0.05)


def test_pvalues_are_bonferroni_of_the_detectors_and_agree_with_predict():
    rng = np.random.default_rng(0)
    u = _union(fnr=0.05, weights={"forest": 1, "gauss": 4}).fit(rng.normal(size=(600, 3)))
    Y = np.r_[rng.normal(size=(200, 3)), rng.normal(size=(50, 3)) * 4]
    P = u.pvalues(Y, per_detector=True)
    assert P.shape == (250, 2)
    np.testing.assert_allclose(u.pvalues(Y), np.minimum(1, (P / [0.2, 0.8]).min(1)))
    bounds = np.array([e.fnr_bound_ for _, e in u.estimators_])
    np.testing.assert_array_equal(u.predict(Y) == -1, (P <= bounds).any(1))


def test_calibrate_sets_only_the_detectors_named():
    rng = np.random.default_rng(0)
    u = _union(fnr=0.01).fit(rng.normal(size=(300, 3)))
    before = [e.validation_scores_.size for _, e in u.estimators_]
    u.calibrate(lambda n: rng.normal(size=(n, 3)), detectors=["gauss"])
    after = [e.validation_scores_.size for _, e in u.estimators_]
    assert after[0] == before[0] and after[1] == 199     # 0.005 needs 199 held out
    assert u.estimators_[1][1].fnr == pytest.approx(0.005)
    with pytest.raises(ValueError, match="Unknown detectors"):
        u.calibrate(rng.normal(size=(10, 3)), detectors=["nope"])


def test_fnr_interval_is_the_spread_of_the_members_thresholds():
    from flipad_sklearn.detection.conformal import union_fnr_interval

    rng = np.random.default_rng(0)
    with pytest.raises(NotFittedError):
        _union(fnr=0.01).fnr_interval_
    u = _union(fnr=0.01).fit(rng.normal(size=(300, 3)))
    sizes = [e.validation_scores_.size for _, e in u.estimators_]
    assert u.fnr_interval_ == pytest.approx(union_fnr_interval(sizes, [0.005, 0.005]))
    lo, hi = u.fnr_interval_
    assert lo < u.fnr_bound_ < hi
    u.calibrate(lambda n: rng.normal(size=(n, 3)), n_samples=4000)
    lo2, hi2 = u.fnr_interval_
    assert hi2 < hi and hi2 - lo2 < hi - lo        # more samples of G: a narrower spread


def test_union_calibration_size_keeps_one_calibrations_rejections_below_max_fnr():
    from scipy.stats import beta

    from flipad_sklearn.detection.conformal import (
        _rank, union_calibration_size, union_fnr_interval,
    )

    fnrs = [0.0025, 0.0015, 0.001]          # make_open_world_union's shares of 0.005
    previous = None
    for max_fnr in (0.02, 0.01, 0.0075):
        sizes = union_calibration_size(fnrs, max_fnr)
        assert union_fnr_interval(sizes, fnrs)[1] <= max_fnr
        # a tighter spread costs more samples of G for every detector
        assert previous is None or all(n > m for n, m in zip(sizes, previous))
        previous = sizes
    # the claim itself: one calibration's share of G rejected, R <= sum_j R_j with
    # R_j ~ Beta(n_j + 1 - k_j, k_j), exceeds max_fnr in at most 1 draw of 20, for
    # independent detectors and for identical ones (the same quantile everywhere)
    sizes = union_calibration_size(fnrs, 0.01)
    laws = [beta(n + 1 - min(_rank(n, f), n), min(_rank(n, f), n)) for n, f in zip(sizes, fnrs)]
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(20000, len(fnrs)))
    independent = sum(law.ppf(u[:, j]) for j, law in enumerate(laws))
    identical = sum(law.ppf(u[:, 0]) for law in laws)
    assert np.mean(independent > 0.01) <= 0.05
    assert np.mean(identical > 0.01) <= 0.05
    assert union_calibration_size([0.01, 0.0], 0.02)[1] == 0      # rejects nothing
    for bad in (0.005, float("nan"), 1.0, True):
        with pytest.raises(ValueError, match="max_fnr must be in"):
            union_calibration_size(fnrs, bad)
    with pytest.raises(ValueError, match="one fnr per detector"):
        union_calibration_size([], 0.01)
    with pytest.raises(ValueError, match="max_fnr must be in"):
        union_calibration_size([0.0, 0.0], float("nan"))     # checked even when all are 0


def test_calibrate_with_max_fnr_draws_what_each_detector_needs():
    from flipad_sklearn.detection.conformal import union_calibration_size

    rng = np.random.default_rng(0)
    u = _union(fnr=0.01).fit(rng.normal(size=(300, 3)))
    before = [e.threshold_ for _, e in u.estimators_]
    needed = union_calibration_size([0.005, 0.005], 0.03)
    # refused before any threshold moves: too few samples, both rules, bad sizes
    with pytest.raises(ValueError, match="needs .* fresh samples of G"):
        u.calibrate(rng.normal(size=(needed[0] - 1, 3)), max_fnr=0.03)
    with pytest.raises(ValueError, match="not both"):
        u.calibrate(lambda n: rng.normal(size=(n, 3)), n_samples=500, max_fnr=0.03)
    with pytest.raises(ValueError, match="unknown detectors"):
        u.calibrate(lambda n: rng.normal(size=(n, 3)), n_samples={"nope": 300})
    with pytest.raises(ValueError, match="of detector 'gauss'"):
        u.calibrate(lambda n: rng.normal(size=(n, 3)), n_samples={"forest": 300, "gauss": 0})
    assert [e.threshold_ for _, e in u.estimators_] == before
    u.calibrate(lambda n: rng.normal(size=(n, 3)), max_fnr=0.03)
    assert [e.validation_scores_.size for _, e in u.estimators_] == needed
    assert u.fnr_interval_[1] <= 0.03
    u.calibrate(lambda n: rng.normal(size=(n, 3)), n_samples={"gauss": 700})
    assert [e.validation_scores_.size for _, e in u.estimators_] == [199, 700]


def _gaussian_union(**kw):
    return ConformalUnion([("a", ConformalDetector("gaussian", random_state=0, **kw)),
                           ("b", ConformalDetector("gaussian", random_state=1, **kw))],
                          fnr=0.01)


def test_calibrate_refuses_bad_max_fnr_and_an_unfitted_union():
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    sampler = lambda n: rng.normal(size=(n, 3))          # noqa: E731
    with pytest.raises(NotFittedError):
        _gaussian_union().calibrate(sampler, max_fnr=0.03)
    u = _gaussian_union().fit(rng.normal(size=(600, 3)))
    before = [e.threshold_ for _, e in u.estimators_]
    for bad in (float("nan"), "0.03", 0.01, 1.5, True):     # 0.01: not above the union's fnr
        with pytest.raises(ValueError, match="max_fnr must be in"):
            u.calibrate(sampler, max_fnr=bad)
    assert [e.threshold_ for _, e in u.estimators_] == before


def test_max_fnr_bounds_the_whole_union_so_a_subset_is_refused():
    # before: detectors=["b"] drew b's slice of the room only, a kept its 199 held-out
    # samples, and the union's interval ended above max_fnr (0.0284 > 0.02), silently
    rng = np.random.default_rng(0)
    u = _gaussian_union().fit(rng.normal(size=(600, 3)))
    before = [e.threshold_ for _, e in u.estimators_]
    with pytest.raises(ValueError, match="max_fnr bounds the whole union"):
        u.calibrate(lambda n: rng.normal(size=(n, 3)), max_fnr=0.02, detectors=["b"])
    assert [e.threshold_ for _, e in u.estimators_] == before


def test_an_error_midway_through_calibrate_leaves_units_and_fnr_consistent():
    # before: the first detector's threshold moved, scales_ kept its old unit; and a
    # failed draw left a new fnr over the old threshold
    from flipad_sklearn.detection.conformal import calibrate
    from flipad_sklearn.detection.union import _spread

    rng = np.random.default_rng(0)
    u = _gaussian_union().fit(rng.normal(size=(600, 3)))
    calls = []

    def sampler(n):
        calls.append(n)
        if len(calls) == 2:
            raise RuntimeError("G's sampler ran out of memory")
        return rng.normal(size=(n, 3)) * 5          # another unit than at fit
    with pytest.raises(RuntimeError):
        u.calibrate(sampler, n_samples=500)
    dets = [e for _, e in u.estimators_]
    assert u.scales_ == pytest.approx([_spread(d.validation_scores_) for d in dets])
    det = ConformalDetector("gaussian", fnr=0.05, random_state=0).fit(rng.normal(size=(300, 3)))
    threshold = det.threshold_

    def broken(n):
        raise RuntimeError("no samples")
    with pytest.raises(RuntimeError):
        calibrate(det, broken, fnr=0.01)
    assert det.fnr == 0.05 and det.threshold_ == threshold


def test_an_uncalibrated_union_says_to_calibrate_the_union():
    # make_open_world_union(validation_size=0)'s state before calibrate: before, fnr_bound_
    # was a member's AttributeError, fnr_interval_ a ValueError about n=0, and predict
    # advised calibrate(detector, X), a TypeError on a union
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    u = _gaussian_union(validation_size=0).fit(rng.normal(size=(600, 3)))
    for read in (lambda: u.fnr_bound_, lambda: u.fnr_interval_,
                 lambda: u.predict(rng.normal(size=(2, 3))),
                 lambda: u.pvalues(rng.normal(size=(2, 3)))):
        with pytest.raises(NotFittedError, match=r"union\.calibrate"):
            read()
    u.calibrate(lambda n: rng.normal(size=(n, 3)))
    assert u.fnr_bound_ <= 0.01 + 1e-12 and u.predict(rng.normal(size=(2, 3))).shape == (2,)


@pytest.mark.parametrize("weights, message", [
    ({"forest": 1}, "missing"), ({"forest": 1, "gauss": 1, "x": 1}, "unknown"),
    ({"forest": 1, "gauss": -1}, "positive"), ({"forest": 1, "gauss": np.nan}, "positive"),
])
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        _union(weights=weights).fit(np.random.default_rng(0).normal(size=(50, 3)))


def test_a_detector_that_is_not_conformal_is_refused_by_name():
    from sklearn.ensemble import IsolationForest

    u = ConformalUnion([("plain", IsolationForest())])
    with pytest.raises(TypeError, match="'plain'.*IsolationForest"):
        u.fit(np.zeros((20, 2)))


def test_params_reach_inside_and_clone_keeps_them():
    u = _union().set_params(gauss__estimator="ocsvm", fnr=0.1)
    params = clone(u).get_params()
    assert params["gauss__estimator"] == "ocsvm" and params["fnr"] == 0.1


def test_fit_predict_forwards_y():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(200, 3)), rng.normal(size=(50, 3)) + 6]
    y = np.r_[np.ones(200), -np.ones(50)]
    # the -1 samples are dropped from training: they stay far from G and are rejected
    assert (_union().fit_predict(X, y)[200:] == -1).all()


# --------------------------------------------------------------------- the pixel guard
def _smooth(n, seed, transpose=False):
    """Images of one 'domain': a wave along the rows with a random phase, times a fixed
    wave along the columns; ``transpose``: the other way round (another domain)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, 16)
    ph = rng.uniform(0, 2 * np.pi, size=(n, 3, 1, 1))
    img = np.sin(t[None, None, :, None] + ph) * np.cos(t[None, None, None, :])
    if transpose:
        img = img.transpose(0, 1, 3, 2)
    return np.tanh(img + 0.1 * rng.normal(size=(n, 3, 16, 16))).astype(np.float32)


def test_pixel_guard_rejects_another_domain_and_ignores_labelled_others():
    X_g, X_other = _smooth(400, 0), _smooth(100, 1, transpose=True)
    y = np.r_[np.ones(400), -np.ones(100)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # too few held-out samples for fnr
        guard = make_pixel_guard((3, 16, 16), size=4, fnr=0.01, random_state=0)
        with_others = clone(guard).fit(np.r_[X_g, X_other], y)
        alone = clone(guard).fit(X_g)
    fresh, other = _smooth(300, 2), _smooth(300, 3, transpose=True)
    for g in (with_others, alone):
        assert (g.predict(other) == -1).mean() >= 0.99
        assert (g.predict(fresh) == -1).mean() <= 0.05
    np.testing.assert_allclose(with_others.score_samples(other), alone.score_samples(other))


def test_pixel_guard_shrinkage_does_not_fall_with_more_samples_of_g():
    """Before: Ledoit-Wolf's estimate, which falls as samples of G grow (on the face
    DCGAN 0.020 at 400 samples, 0.0055 at 1500), and the guard fitted on more samples
    passed most of another domain (bench_face_pixel_guard)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = {n: make_pixel_guard((3, 16, 16), size=4, random_state=0).fit(
            _smooth(n, 0)) for n in (200, 2000)}
        lw = {n: make_pixel_guard((3, 16, 16), size=4, shrinkage="ledoit_wolf",
                                  random_state=0).fit(_smooth(n, 0)) for n in (200, 2000)}
    assert [g[-1].estimator_.shrinkage_ for g in fitted.values()] == [0.1, 0.1]
    assert lw[2000][-1].estimator_.shrinkage_ < lw[200][-1].estimator_.shrinkage_
    with pytest.raises(ValueError, match="shrinkage"):
        make_pixel_guard((3, 16, 16), size=4, shrinkage=1.5).fit(_smooth(50, 0))


def test_pixel_guard_scores_floats_and_their_8bit_files_alike():
    X = _smooth(300, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = make_pixel_guard((3, 16, 16), size=4, random_state=0).fit(X)
    q = np.round((X + 1) * 127.5) / 127.5 - 1
    np.testing.assert_allclose(g.score_samples(X), g.score_samples(q))


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": (16, 16)}, "image_shape"), ({"image_shape": (3, 16, 16), "size": 0}, "size"),
    ({"image_shape": (3, 16, 16), "size": 2.5}, "size"),
])
def test_pixel_guard_refuses_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pixel_guard(**kwargs)


# -------------------------------------------------------------------------- persistence
@pytest.fixture
def saved_union(tmp_path):
    X = _smooth(300, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = ConformalUnion([("coarse", make_pixel_guard((3, 16, 16), size=2, random_state=0)),
                            ("fine", make_pixel_guard((3, 16, 16), size=4, random_state=1))],
                           fnr=0.02).fit(X)
    path = tmp_path / "union.flipad"
    persistence.save(u, path)
    return u, path, X


def test_union_round_trips_with_identical_scores(saved_union):
    u, path, X = saved_union
    v = persistence.load(path)
    np.testing.assert_array_equal(u.decision_function(X[:50]), v.decision_function(X[:50]))
    np.testing.assert_array_equal(u.pvalues(X[:50]), v.pvalues(X[:50]))
    assert v.fnr_bound_ == u.fnr_bound_


def _fitted_key(node, cls, key):
    """The array key of ``key`` in the first estimator of class ``cls`` that has it."""
    if isinstance(node, dict):
        if node.get("__type__") == "estimator" and node.get("class") == cls:
            for k, v in node["state"]["items"]:
                if k == key:
                    return v["key"]
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            found = _fitted_key(v, cls, key)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("edit, message", [
    ("weights", "weights_ must be positive shares"),
    ("precision", "precision_ must be a symmetric"),
    ("location", r"location_ has shape"),
])
def test_inconsistent_union_files_are_refused(saved_union, tmp_path, edit, message):
    _, path, _ = saved_union
    spec, arrays = _members(path)
    if edit == "weights":
        key = _entry(_state(spec["root"], "flipad_sklearn.ConformalUnion"), "weights_")[1]["key"]
        arrays[key] = np.array([0.9, 0.9])
    else:
        # the fitted density, not an unfitted one among the parameters
        key = _fitted_key(spec["root"], "flipad_sklearn.GaussianDensity", f"{edit}_")
        a = arrays[key].copy()
        if edit == "precision":
            a[0, 1] += 1.0
        else:
            a = a[:-1]
        arrays[key] = a
    with pytest.raises(persistence.UnsafeFileError, match=message):
        persistence.load(_craft(tmp_path / "bad.flipad", spec, arrays))


# ------------------------------------------------------------------ fine-tuned shadows
def test_finetune_shadows_start_from_g_and_others_do_not():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                            torch.nn.Tanh())
    X = np.tanh(np.random.default_rng(0).normal(size=(64, 6))).astype(np.float32)

    def distance(S):
        return sum(float((a - b).detach().norm()) for a, b in zip(S.parameters(), G.parameters()))
    (tuned,) = train_shadows(G, X, seeds=[1], latent_shape=(4,), epochs=1, init="finetune")
    (fresh,) = train_shadows(G, X, seeds=[1], latent_shape=(4,), epochs=1)
    assert 0 < distance(tuned) < 0.5 * distance(fresh)
    with pytest.raises(ValueError, match="finetune"):
        train_shadows(G, X, seeds=[1], latent_shape=(4,), init="warm")


def test_pixel_guard_refuses_bad_images_at_predict():
    X = _smooth(120, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = make_pixel_guard((3, 16, 16), size=4, fnr=0.05, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\)"):
        guard.predict(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        guard.predict(np.full((2, 3, 16, 16), np.nan, np.float32))


@pytest.mark.parametrize("shrinkage", [float("nan"), "auto", True, -0.1, None])
def test_pixel_guard_refuses_a_bad_shrinkage_when_made(shrinkage):
    with pytest.raises(ValueError, match="shrinkage"):
        make_pixel_guard((3, 16, 16), shrinkage=shrinkage)


def test_the_union_reads_jpeg_blocks_only_when_immunised():
    """An immunised union (for files) gives DCTPAD JPEG's 8x8 blocks, a union for
    images as generated the whole spectrum alone; dctpad_params decides over both."""
    layer = torch.nn.ConvTranspose2d(4, 1, 4, 2, 1)

    def block_size(**kw):
        union = make_open_world_union(layer, "tanh", np.zeros((4, 8, 8)), image_shape=(1, 16, 16),
                                      **kw)
        return dict(union.estimators)["dctpad"].named_steps["dct"].block_size
    assert block_size() is None
    assert block_size(immunise="published") == 8
    assert block_size(immunise="published", dctpad_params={"block_size": None}) is None
    assert block_size(dctpad_params={"block_size": 4}) == 4
