"""FLIPADDetector: Deep SAD training, threshold, labels, persistence, devices."""

import math
import os
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import torch
from conftest import make_activations
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM
from torch import nn

from flipad_sklearn import FLIPADDetector, LabelConventionWarning, ThresholdWarning
from flipad_sklearn.detection.deepsad import conformal_threshold

pytestmark = pytest.mark.usefixtures("torch_single_thread")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# one_class=None: these tests are about Deep SAD itself (the guard is tested below)
FAST = dict(hidden_sizes=(16,), rep_dim=8, n_epochs=5, batch_size=64, fnr=0.05,
            device="cpu", random_state=0, one_class=None)


def gaussian(n, d=6, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


@pytest.fixture(scope="module")
def fitted():
    X = gaussian(400)
    return FLIPADDetector(**FAST).fit(X), X


# ---------------------------------------------------------------- training
def test_loss_falls_and_scores_vary(fitted):
    det, X = fitted
    loss = det.history_["loss"]
    assert len(loss) == det.n_epochs == len(det.history_["lr"])
    assert loss[-1] < 0.7 * loss[0]
    scores = det.score_samples(gaussian(200, seed=5))
    assert np.unique(scores).size > 150
    assert np.std(scores) > 1e-3 * np.abs(scores).mean()


def test_outputs_types_and_relations(fitted):
    det, X = fitted
    Xn = gaussian(50, seed=3)
    s, d, p = det.score_samples(Xn), det.decision_function(Xn), det.predict(Xn)
    assert s.dtype == np.float64 and d.dtype == np.float64 and s.shape == (50,)
    assert np.all(s <= 0)
    np.testing.assert_array_equal(d, s - det.offset_)
    assert det.offset_ == -det.threshold_
    assert p.dtype.kind == "i" and set(np.unique(p)) <= {-1, 1}
    np.testing.assert_array_equal(p, np.where(d >= 0, 1, -1))
    assert det.center_.shape == (det.rep_dim,) and det.center_.dtype == np.float64
    assert np.all(np.abs(det.center_) >= det.eps)


def test_anomalies_score_lower(fitted):
    det, _ = fitted
    auc = roc_auc_score(np.r_[np.ones(300), -np.ones(300)],
                        det.decision_function(np.vstack([gaussian(300, seed=7),
                                                         gaussian(300, shift=2, seed=8)])))
    assert auc > 0.9


def test_labelled_anomalies_used(toy_labelled):
    X, y, _ = toy_labelled
    X_test = np.vstack([make_activations(200, seed=11), make_activations(200, shift=1.0, seed=12)])
    y_test = np.r_[np.ones(200), -np.ones(200)]
    params = dict(FAST, n_epochs=10, hidden_sizes=(32,))
    one_class = FLIPADDetector(**params).fit(X[y == 1])
    semi = FLIPADDetector(**params).fit(X, y)
    auc1 = roc_auc_score(y_test, one_class.decision_function(X_test))
    auc2 = roc_auc_score(y_test, semi.decision_function(X_test))
    assert auc2 > 0.95 and auc2 > auc1


def test_scores_independent_of_batch(fitted):
    det, X = fitted
    s1 = det.score_samples(X[:100])
    det2 = pickle.loads(pickle.dumps(det)).set_params(batch_size=7)
    np.testing.assert_allclose(det2.score_samples(X[:100]), s1, rtol=1e-12)
    np.testing.assert_allclose([det.score_samples(X[i:i + 1])[0] for i in range(5)],
                               s1[:5], rtol=1e-12)


def test_float32_scores_independent_of_batch():
    X = make_activations(100, shape=(3, 8, 8)).astype(np.float32)
    det = FLIPADDetector(**dict(FAST, conv_channels=(4,), kernel_size=3, batch_size=32),
                         input_shape=(3, 8, 8), score_dtype="float32").fit(X)
    assert next(det.network_.parameters()).dtype == torch.float32
    s = det.score_samples(X)
    assert s.dtype == np.float64
    np.testing.assert_array_equal(det.score_samples(X[5:12]), s[5:12])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(det)).score_samples(X), s)
    s64 = det.set_params(score_dtype="float64").score_samples(X)  # fitted dtype is kept
    np.testing.assert_array_equal(s64, s)


def test_lr_milestones_and_scheduler_order():
    X = gaussian(200)
    with warnings.catch_warnings():
        # torch warns when the scheduler is stepped before the optimizer.
        warnings.simplefilter("error")
        det = FLIPADDetector(**dict(FAST, n_epochs=4, lr_milestones=(2,), lr_gamma=0.5)).fit(X)
    assert det.history_["lr"] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])


@pytest.mark.parametrize("n", [17, 33, 65])
def test_batch_norm_drops_batch_of_one(n):
    # With validation_fraction=0.2 the training sets leave a remainder of 1.
    X = gaussian(n + math.ceil(0.2 * n))
    det = FLIPADDetector(**dict(FAST, batch_size=16, validation_size=None,
                                validation_fraction=0.2, n_epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        det.fit(X)
    assert np.isfinite(det.history_["loss"][0])


def test_batch_smaller_than_batch_size():
    X = gaussian(30)
    with pytest.warns(ThresholdWarning):
        det = FLIPADDetector(**dict(FAST, batch_size=1000)).fit(X)
    assert np.isfinite(det.threshold_)


# ---------------------------------------------------------------- networks
def test_lenet_on_images_and_4d_input():
    X = make_activations(200, shape=(3, 8, 8))
    det = FLIPADDetector(**dict(FAST, conv_channels=(4, 8), kernel_size=3),
                         input_shape=(3, 8, 8)).fit(X)
    assert type(det.network_).__name__ == "LeNet"
    X4 = X.reshape(-1, 3, 8, 8)
    det4 = FLIPADDetector(**dict(FAST, conv_channels=(4, 8), kernel_size=3)).fit(X4)
    assert det4.input_shape_ == (3, 8, 8) and det4.n_features_in_ == 192
    np.testing.assert_array_equal(det.score_samples(X), det4.score_samples(X4))
    np.testing.assert_array_equal(det4.score_samples(X), det4.score_samples(X4))


def test_lenet_needs_shape():
    with pytest.raises(ValueError, match="input_shape"):
        FLIPADDetector(network="lenet", **FAST).fit(gaussian(50))
    with pytest.raises(ValueError, match="holds 27 values"):
        FLIPADDetector(input_shape=(3, 3, 3), **FAST).fit(gaussian(50))


def test_user_module_and_callable():
    X = gaussian(200)
    net = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8, affine=False),
                        nn.ReLU(), nn.Linear(8, 3, bias=False))
    before = [p.detach().clone() for p in net.parameters()]
    det = FLIPADDetector(net, **FAST).fit(X)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # not mutated
    assert det.network_ is not net and det.center_.shape == (3,)
    assert np.isfinite(det.score_samples(X)).all()
    det2 = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(det2.score_samples(X), det.score_samples(X))

    def build(n_features):
        return nn.Sequential(nn.Linear(n_features, 4, bias=False), nn.Tanh(),
                             nn.Linear(4, 2, bias=False))

    state = torch.random.get_rng_state()
    a = FLIPADDetector(build, **FAST).fit(X).score_samples(X)
    b = FLIPADDetector(build, **FAST).fit(X).score_samples(X)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("net, what", [
    (nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2, bias=False)), "0.bias"),
    (nn.Sequential(nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False)),
     "affine"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), "bias"),
])
def test_refuses_biased_networks(net, what):
    with pytest.raises(ValueError, match=what):
        FLIPADDetector(net, **FAST).fit(gaussian(50))


def test_callable_must_return_module():
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        FLIPADDetector(lambda n: "nope", **FAST).fit(gaussian(50))


# ---------------------------------------------------------------- seeding
def test_same_seed_same_scores_and_global_rng_untouched():
    X = gaussian(300)
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    s1 = FLIPADDetector(**dict(FAST, random_state=3)).fit(X).score_samples(X)
    s2 = FLIPADDetector(**dict(FAST, random_state=3)).fit(X).score_samples(X)
    s3 = FLIPADDetector(**dict(FAST, random_state=4)).fit(X).score_samples(X)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, s3)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    np.testing.assert_array_equal(np_state, np.random.get_state()[1])


def test_verbose(capsys):
    X = gaussian(100)
    FLIPADDetector(**dict(FAST, n_epochs=3, verbose=0)).fit(X)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    # verbose=1: a tqdm bar over the epochs on stderr (before: a print per epoch)
    FLIPADDetector(**dict(FAST, n_epochs=3, verbose=1)).fit(X)
    out = capsys.readouterr()
    assert out.out == ""
    assert "Deep SAD training" in out.err and "3/3" in out.err and "loss=" in out.err
    # verbose=2: also one line per epoch
    FLIPADDetector(**dict(FAST, n_epochs=3, verbose=2)).fit(X)
    out = capsys.readouterr()
    assert out.out.count("[FLIPADDetector] epoch") == 3 and "3/3" in out.out
    assert "Deep SAD training" in out.err


# ---------------------------------------------------------------- threshold
@pytest.mark.parametrize("n, fnr", [(199, 0.005), (1000, 0.005), (100, 0.1), (57, 0.05)])
def test_conformal_threshold_is_order_statistic(n, fnr):
    d = np.random.default_rng(n).exponential(size=n)
    k = math.ceil((n + 1) * (1 - fnr) - 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = conformal_threshold(d, fnr)
    assert t == np.sort(d)[k - 1]
    assert np.mean(d > t) <= fnr  # at most fnr of the held-out samples rejected


def test_conformal_threshold_too_few_samples_warns():
    d = np.arange(10.0)
    with pytest.warns(ThresholdWarning, match="at least 199"):
        assert conformal_threshold(d, 0.005) == 9.0
    with pytest.warns(ThresholdWarning):
        assert conformal_threshold(d, 0.0) == 9.0


def test_validation_rejections_at_most_fnr(fitted):
    det, _ = fitted
    v = -det.validation_scores_
    assert v.size == math.ceil(0.2 * 400)
    assert np.mean(v > det.threshold_) <= det.fnr


def test_fnr_holds_on_fresh_samples():
    """Statistical: fresh samples of G are rejected at rate <= fnr (up to noise).

    n_val = 800 and fnr = 0.05: the rejection rate of one fit is
    Beta-distributed with mean 1 - k/(n+1) = 0.0499 and sd ~0.008; over three
    fits the mean has sd ~0.0045.  Bounds are ~3.5 sd.
    """
    rates = []
    for seed in range(3):
        det = FLIPADDetector(**dict(FAST, fnr=0.05, validation_fraction=0.5,
                                    random_state=seed)).fit(gaussian(1600, seed=seed))
        rates.append(np.mean(det.predict(gaussian(20000, seed=100 + seed)) == -1))
        p = det.pvalues(gaussian(5000, seed=200 + seed))
        assert np.all((p > 0) & (p <= 1))
        assert np.mean(p <= 0.2) < 0.2 + 0.035
    assert np.mean(rates) <= 0.05 + 0.016
    assert np.mean(rates) >= 0.05 - 0.016  # not needlessly conservative
    assert all(0.02 < r < 0.085 for r in rates)


# ------------------------------------------------- one-class guard (the default)
def _directions(n, d=8, direction=None, shift=6.0, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, d))
    if direction is not None:
        X[:, direction] += shift
    return X


@pytest.mark.parametrize("seed", [0, 2])
def test_guard_rejects_a_direction_the_negatives_do_not_show(seed):
    """Labelled negatives along e0 teach Deep SAD e0 only; an anomaly along e1 is
    accepted by Deep SAD alone (the default with negatives: ``combine="auto"``) and
    rejected with the guard kept (``combine="mean"``)."""
    X = np.r_[_directions(400, seed=1), _directions(200, direction=0, seed=2)]
    y = np.r_[np.ones(400), -np.ones(200)]
    params = dict(FAST, hidden_sizes=(32,), n_epochs=10, random_state=seed)
    G, seen, new = (_directions(300, seed=3), _directions(300, direction=0, seed=4),
                    _directions(300, direction=1, seed=5))
    rejected = {}
    for one_class in (None, "ocsvm"):
        det = FLIPADDetector(**dict(params, one_class=one_class, combine="mean")).fit(X, y)
        rejected[one_class] = [np.mean(det.predict(Z) == -1) for Z in (G, seen, new)]
    default = FLIPADDetector(**dict(params, one_class="ocsvm")).fit(X, y)
    assert np.mean(default.predict(new) == -1) == rejected[None][2]   # what auto gives up
    (g_old, seen_old, new_old), (g_new, seen_new, new_new) = rejected[None], rejected["ocsvm"]
    assert seen_old > 0.95 and seen_new > 0.95       # the direction it was shown
    assert new_old < 0.6                              # Deep SAD alone: about chance
    assert new_new > 0.95                             # the guard rejects it
    assert g_new < 0.05 + 0.04                        # G's own samples: fnr = 0.05
    assert g_old < 0.05 + 0.04                        # and with Deep SAD alone


def test_guard_attributes_and_score():
    X = np.r_[_directions(300, seed=1), _directions(100, direction=0, seed=2)]
    y = np.r_[np.ones(300), -np.ones(100)]
    det = FLIPADDetector(**dict(FAST, one_class="ocsvm", combine="min")).fit(X, y)
    assert FLIPADDetector().one_class == "ocsvm"      # the default
    assert isinstance(det.one_class_, OneClassSVM) and det.score_scale_.shape == (2, 2)
    # the guard sees G's training samples only: 300 - 60 held out - 20% for the scales
    assert det.one_class_.shape_fit_[0] == 240 - 48
    Xn = _directions(50, seed=3)
    (l0, s0), (l1, s1) = det.score_scale_
    deep = (-np.log(det._distances(Xn)) - l0) / s0
    guard = (np.log(det.one_class_.score_samples(Xn)) - l1) / s1
    np.testing.assert_allclose(det.score_samples(Xn), np.minimum(deep, guard), rtol=1e-12)
    np.testing.assert_array_equal(det.predict(Xn),
                                  np.where(det.score_samples(Xn) >= det.offset_, 1, -1))
    alone = FLIPADDetector(**dict(FAST, one_class=None)).fit(X, y)
    assert alone.one_class_ is None and alone.score_scale_ is None
    np.testing.assert_array_equal(alone.score_samples(Xn), -alone._distances(Xn))
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score_samples(Xn), det.score_samples(Xn))


def test_guard_fits_on_at_most_max_samples():
    from flipad_sklearn.detection.deepsad.detector import ONE_CLASS_MAX_SAMPLES
    X = gaussian(3200, d=3)
    det = FLIPADDetector(**dict(FAST, n_epochs=1, batch_size=256, one_class="ocsvm")).fit(X)
    assert det.one_class_.shape_fit_[0] == ONE_CLASS_MAX_SAMPLES == 2000


def test_guard_keeps_the_fnr_on_fresh_samples():
    """As test_fnr_holds_on_fresh_samples, for the combined score (same bounds)."""
    rates = []
    for seed in range(3):
        det = FLIPADDetector(**dict(FAST, fnr=0.05, validation_fraction=0.5,
                                    random_state=seed, one_class="ocsvm")).fit(
            gaussian(1600, seed=seed))
        rates.append(np.mean(det.predict(gaussian(20000, seed=100 + seed)) == -1))
    assert 0.05 - 0.016 <= np.mean(rates) <= 0.05 + 0.016
    assert all(0.02 < r < 0.085 for r in rates)


def test_pvalues_match_predict(fitted):
    det, _ = fitted
    X = np.vstack([gaussian(100, seed=9), gaussian(100, shift=2, seed=10)])
    p, pred = det.pvalues(X), det.predict(X)
    # Rejected (distance > k-th smallest) <=> at most n-k validation distances >= d.
    n = det.validation_scores_.size
    k = math.ceil((n + 1) * (1 - det.fnr) - 1e-12)
    np.testing.assert_array_equal(pred == -1, p <= (1 + n - k) / (n + 1))


# ---------------------------------------------------------------- labels and errors
def test_fit_predict_forwards_y(toy_labelled):
    X, y, _ = toy_labelled
    seen = {}

    class Spy(FLIPADDetector):
        def fit(self, X, y=None):
            seen["y"] = y
            return super().fit(X, y)

    det = Spy(**FAST)
    pred = det.fit_predict(X, y)
    np.testing.assert_array_equal(seen["y"], y)
    np.testing.assert_array_equal(pred, clone(det).fit(X, y).predict(X))


def test_label_conventions(toy_labelled):
    X, y, _ = toy_labelled
    with pytest.warns(UserWarning, match="treated as unlabelled"):
        FLIPADDetector(**FAST).fit(X, np.where(y == 1, 1, 2))
    with pytest.raises(ValueError, match="Unknown label type"):
        FLIPADDetector(**FAST).fit(X, np.where(y == 1, "G", "other"))
    with pytest.raises(ValueError, match="only one class"):
        FLIPADDetector(**FAST).fit(X, -np.ones(len(X)))
    # Validation set is drawn from y == 1 only.
    det = FLIPADDetector(**FAST).fit(X, y)
    assert det.validation_scores_.size == math.ceil(0.2 * 300)
    # y in {0, 1} (as scikit-learn's checks pass it) works.
    FLIPADDetector(**FAST).fit(X, (y == 1).astype(int))


def test_errors():
    X = gaussian(100)
    det = FLIPADDetector(**FAST)
    with pytest.raises(NotFittedError):
        det.predict(X)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.fit(X_nan)
    with pytest.raises(ValueError, match="Too few samples"):
        FLIPADDetector(**dict(FAST, validation_fraction=0.5)).fit(X[:3])
    det.fit(X)
    with pytest.raises(ValueError, match="expecting 6 features"):
        det.predict(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        det.score_samples(X_nan)
    with pytest.raises(ValueError, match="fnr"):
        FLIPADDetector(fnr=1.5).fit(X)
    with pytest.raises(ValueError, match="CUDA is not available|cuda"):
        if torch.cuda.is_available():
            raise ValueError("cuda present: nothing to test")
        FLIPADDetector(**dict(FAST, device="cuda")).fit(X)


def test_divergence_is_reported():
    X = gaussian(200) * 1e30
    with pytest.raises(FloatingPointError, match="lower lr"):
        FLIPADDetector(**dict(FAST, lr=1e10)).fit(X)


# ---------------------------------------------------------------- persistence
def test_pickle_stores_numpy_state(fitted):
    det, X = fitted
    state = det.__getstate__()
    assert "network_" not in state
    assert all(isinstance(v, np.ndarray) for v in state["_network_state"].values())
    det2 = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(det2.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(det2.predict(X), det.predict(X))


def test_joblib_round_trip_in_fresh_process(fitted, tmp_path):
    det, X = fitted
    np.save(tmp_path / "X.npy", X)
    joblib.dump(det, tmp_path / "det.joblib")
    code = (
        "import joblib, numpy as np\n"
        f"det = joblib.load(r'{tmp_path / 'det.joblib'}')\n"
        f"np.save(r'{tmp_path / 's.npy'}', det.score_samples(np.load(r'{tmp_path / 'X.npy'}')))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), det.score_samples(X))


@requires_cuda
@pytest.mark.cuda
def test_cuda_fit_loads_on_cpu(tmp_path):
    X = gaussian(300)
    det = FLIPADDetector(**dict(FAST, device="cuda")).fit(X)
    assert det.device_.type == "cuda"
    s_cuda = det.score_samples(X)
    joblib.dump(det, tmp_path / "det.joblib")
    code = (
        "import joblib, numpy as np\n"
        f"det = joblib.load(r'{tmp_path / 'det.joblib'}')\n"
        f"np.save(r'{tmp_path / 's.npy'}', det.score_samples(np.load(r'{tmp_path / 'X.npy'}')))\n"
    )
    np.save(tmp_path / "X.npy", X)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), s_cuda, rtol=1e-10)
    cpu = FLIPADDetector(**FAST).fit(X)
    assert np.corrcoef(cpu.score_samples(X), s_cuda)[0, 1] > 0.5


# ------------------------------------------- combine: when to keep the guard
def _subtle(n, d=20, shift=0.0, seed=0):
    """N(0, I) in 20 dimensions, shifted along e0: invisible to a one-class SVM's
    density estimate at shift 3, plain to Deep SAD once it is shown the shift."""
    X = np.random.default_rng(seed).normal(size=(n, d))
    X[:, 0] += shift
    return X


@pytest.mark.parametrize("shift", [3.0, 6.0])
def test_combine_auto_with_negatives_is_deep_sad_alone(shift):
    # shift 3: negatives the one-class SVM cannot see; shift 6: negatives both parts
    # separate (the old held-out check kept the guard there; on the face DCGAN, against
    # noise-emitting others, it then cost every unseen generator)
    X = np.r_[_subtle(400, seed=1), _subtle(300, shift=shift, seed=2)]
    y = np.r_[np.ones(400), -np.ones(300)]
    params = dict(FAST, hidden_sizes=(32,), n_epochs=20, one_class="ocsvm")
    det = FLIPADDetector(**params).fit(X, y)
    assert FLIPADDetector().combine == "auto" and FLIPADDetector().one_class == "ocsvm"
    assert det.combine_ == "deep_sad" and det.one_class_ is None
    assert det.guard_check_["n_negatives"] == 300
    assert "Deep SAD alone" in det.guard_check_["reason"]
    # exactly the paper's Deep SAD: same training samples, same seed, same scores
    alone = FLIPADDetector(**dict(params, one_class=None)).fit(X, y)
    G, neg = _subtle(400, seed=3), _subtle(400, shift=shift, seed=4)
    np.testing.assert_array_equal(det.score_samples(G), alone.score_samples(G))
    assert det.threshold_ == alone.threshold_
    if shift == 3.0:
        # what the guard would have cost: fresh negatives accepted at fnr = 0.05
        guarded = FLIPADDetector(**dict(params, combine="mean")).fit(X, y)
        assert np.mean(det.predict(neg) == -1) > np.mean(guarded.predict(neg) == -1) + 0.2
    assert np.mean(det.predict(G) == -1) < 0.05 + 0.04


def test_combine_auto_keeps_the_guard_without_negatives():
    X = _subtle(400, seed=1)
    det = FLIPADDetector(**dict(FAST, one_class="ocsvm")).fit(X)
    assert det.combine_ == "mean" and "no labelled negatives" in det.guard_check_["reason"]
    assert det.one_class_ is not None and det.score_scale_.shape == (2, 2)
    # unlabelled samples (y == 0) are not negatives: still one-class training
    with pytest.warns(LabelConventionWarning):
        det = FLIPADDetector(**dict(FAST, one_class="ocsvm")).fit(
            np.r_[X, _subtle(50, seed=5)], np.r_[np.ones(400), np.zeros(50)])
    assert det.combine_ == "mean"


def test_combine_fixed_rules_and_attributes():
    X = np.r_[_directions(300, seed=1), _directions(100, direction=0, seed=2)]
    y = np.r_[np.ones(300), -np.ones(100)]
    Xn = _directions(50, seed=3)
    for combine in ("min", "mean"):
        det = FLIPADDetector(**dict(FAST, one_class="ocsvm", combine=combine)).fit(X, y)
        assert det.combine_ == combine and det.guard_check_ is None
        deep, guard = det._standard_scores(Xn)
        expected = np.minimum(deep, guard) if combine == "min" else 0.5 * (deep + guard)
        np.testing.assert_allclose(det.score_samples(Xn), expected, rtol=1e-12)
        # the guard sees the same samples as under "auto"
        assert det.one_class_.shape_fit_[0] == 240 - 48
    alone = FLIPADDetector(**dict(FAST, one_class=None, combine="min")).fit(X, y)
    assert alone.combine_ == "deep_sad" and alone.guard_check_ is None


@pytest.mark.parametrize("combine", ["max", "deep_sad", None, 1])
def test_combine_is_validated(combine):
    with pytest.raises(ValueError, match="combine"):
        FLIPADDetector(**dict(FAST, combine=combine)).fit(gaussian(60))


# ------------------------------------------- calibration against fresh samples (issue 32)
def _tiny_generator(seed):
    """A random tanh generator: 8x1x1 -> 16x4x4 ReLU -> ConvTranspose2d(16, 1, 4, 2, 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.ReLU(),
                             nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh()).eval()


def _outputs_and_activations(G, n, seed):
    z = torch.randn(n, 8, 1, 1, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        h = G[:2](z)
        return G[2:](h).reshape(n, -1).numpy().astype(np.float64), h.numpy()


@pytest.fixture(scope="module")
def inverted_generators():
    """FLIPAD features of G (700 to fit, 600 fresh), a labelled other seed (500) and an
    unseen seed (300), through the public inverter."""
    from flipad_sklearn import FinalLayerInverter

    G, other, unseen = _tiny_generator(1), _tiny_generator(2), _tiny_generator(3)
    X_g, _ = _outputs_and_activations(G, 700, seed=10)
    X_other, _ = _outputs_and_activations(other, 500, seed=11)
    _, H = _outputs_and_activations(G, 2000, seed=12)
    X_fresh, _ = _outputs_and_activations(G, 600, seed=13)
    X_unseen, _ = _outputs_and_activations(unseen, 300, seed=14)
    # a loose tolerance: the features need not be exact for this test, only alike
    inv = FinalLayerInverter(layer=G[2], activation="tanh", alpha=5e-4,
                             anchor=H.mean(axis=0), max_iter=150, tol=1e-3, device="cpu")
    X = np.vstack([X_g, X_other])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inv.fit(X)
        return (inv.transform(X), np.r_[np.ones(700), -np.ones(500)],
                inv.transform(X_fresh), inv.transform(X_unseen))


@pytest.mark.parametrize("one_class", ["ocsvm", None])
def test_held_out_scores_match_fresh_scores_of_g(inverted_generators, one_class):
    """The threshold's scores (held-out samples of G) and fresh samples' scores come
    from one distribution, so the operating point at fnr = 0.005 is the one the
    scores allow: the unseen generator is accepted no more than at the threshold an
    oracle would set on 600 fresh samples of G (issue 32: the guard's held-out scores
    once sat far below fresh ones, accepting 42 % of an unseen seed)."""
    from scipy.stats import ks_2samp

    F, y, F_fresh, F_unseen = inverted_generators
    det = FLIPADDetector(fnr=0.005, one_class=one_class, device="cpu",
                         random_state=0).fit(F, y)
    fresh, unseen = det.score_samples(F_fresh), det.score_samples(F_unseen)
    assert det.validation_scores_.size == 199
    assert ks_2samp(det.validation_scores_, fresh).pvalue > 0.01
    # the fnr holds on fresh samples (binomial slack: 600 draws at 0.005, mean 3)
    assert np.mean(det.predict(F_fresh) == -1) <= 0.02
    # the accuracy follows the AUC: what the threshold accepts of the unseen generator
    # is close to what the oracle's threshold (the fresh scores' 0.5 % quantile) does
    oracle = np.quantile(fresh, 0.005)
    accepted = np.mean(det.predict(F_unseen) == 1)
    assert accepted <= np.mean(unseen >= oracle) + 0.05
    auc = roc_auc_score(np.r_[np.ones(600), np.zeros(300)], np.r_[fresh, unseen])
    if auc >= 0.999:
        assert accepted <= 0.05


@pytest.mark.parametrize("one_class", [None, "ocsvm"])
def test_nan_scores_raise_instead_of_a_verdict(one_class):
    # before: NaN (or infinite) scores were "not G" (predict -1) with a p-value
    X = gaussian(200)
    det = FLIPADDetector(**dict(FAST, one_class=one_class)).fit(X)
    with torch.no_grad():
        w = det.network_.net[0].weight
        sign = torch.where(torch.rand_like(w) > 0.5, 1.0, -1.0).to(w.dtype)
        w.copy_(sign * 1e200)                # finite in float64, its products are not
    for method in (det.score_samples, det.decision_function, det.predict, det.pvalues):
        with pytest.raises(FloatingPointError, match="scores are not finite"):
            method(X[:5])
