"""OwnedModelsAttributor: prediction sets over owned models, per-model coverage."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from flipad_sklearn import ConformalDetector, FLIPADDetector, OwnedModelsAttributor

pytestmark = pytest.mark.usefixtures("torch_single_thread")

D = 3
CENTRES = {"G1": np.zeros(D), "G2": np.r_[2.5, 0.0, 0.0], "G3": np.r_[0.0, 6.0, 0.0]}


def sample(name, n, seed):
    """Gaussian "generators"; G1 and G2 overlap, G3 is far; "none" is far from all."""
    rng = np.random.default_rng(seed)
    centre = CENTRES.get(name, np.r_[0.0, 0.0, 9.0])
    return rng.normal(size=(n, D)) + centre


def data(names, n, seed, n_other=0):
    X = np.vstack([sample(m, n, seed + i) for i, m in enumerate(names)]
                  + ([sample("none", n_other, seed + 99)] if n_other else []))
    y = np.array([m for m in names for _ in range(n)] + ["none"] * n_other, dtype=object)
    return X, y


def iforest(fnr=0.05):
    return ConformalDetector("iforest", fnr=fnr, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    X, y = data(["G1", "G2", "G3"], 400, seed=0, n_other=100)
    attr = OwnedModelsAttributor({m: iforest() for m in CENTRES}).fit(X, y)
    return attr


def test_coverage_per_model_and_set_sizes(fitted):
    """Held-out samples of each model: its name is in the set at rate >= 1 - fnr.

    With 80 held-out samples per model (fnr = 0.05, k = 77), one fit's miss
    rate is Beta(4, 77): mean 0.049, sd 0.024; the slack of 0.05 is two sd.
    """
    attr = fitted
    for j, name in enumerate(attr.classes_):
        sets = attr.predict_set(sample(name, 4000, seed=500 + j))
        assert sets.shape == (4000, 3)
        assert sets[:, j].mean() >= 1 - 0.05 - 0.05
    # G3 is far from G1 and G2: its sets are mostly {G3}; G1 and G2 overlap
    sets3 = attr.predict_set(sample("G3", 2000, seed=7), as_sets=True)
    assert np.mean([s == {"G3"} for s in sets3]) > 0.85
    sets1 = attr.predict_set(sample("G1", 2000, seed=8))
    assert 0.05 < np.mean(sets1[:, 1]) < 0.9  # "G1 or G2" happens
    # a source far from every model: "none of mine"
    far = attr.predict_set(sample("none", 2000, seed=9))
    assert np.mean(~far.any(axis=1)) > 0.95


def test_pvalues_predict_and_alpha(fitted):
    attr = fitted
    X = np.vstack([sample("G1", 50, 11), sample("G3", 50, 12), sample("none", 50, 13)])
    p = attr.pvalues(X)
    assert p.shape == (150, 3) and np.all((p > 0) & (p <= 1))
    # alpha=None is each detector's own decision
    for j, name in enumerate(attr.classes_):
        np.testing.assert_array_equal(attr.predict_set(X)[:, j],
                                      attr.estimators_[name].predict(X) == 1)
    np.testing.assert_array_equal(attr.predict_set(X, alpha=0.2), p > 0.2)
    assert (attr.predict_set(X, alpha=0.0)).all()  # alpha=0: every model, always
    pred = attr.predict(X)
    member = attr.predict_set(X)
    for i in range(150):
        if member[i].any():
            in_set = np.flatnonzero(member[i])
            assert pred[i] == attr.classes_[in_set[np.argmax(p[i, in_set])]]
        else:
            assert pred[i] == "none"
    assert np.mean(pred[50:100] == "G3") > 0.9 and np.mean(pred[100:] == "none") > 0.9
    assert 0.0 <= attr.score(X, np.array(["G1"] * 50 + ["G3"] * 50 + ["none"] * 50)) <= 1
    with pytest.raises(ValueError, match="alpha must be"):
        attr.predict_set(X, alpha=1.5)


def test_others_are_negatives_of_every_detector():
    seen = {}

    class Spy(ConformalDetector):
        def fit(self, X, y=None):
            seen.setdefault(id(self), []).append(np.asarray(y).copy())
            return super().fit(X, y)

    X, y = data(["G1", "G2"], 60, seed=1, n_other=20)
    OwnedModelsAttributor({"G1": Spy(fnr=0.1), "G2": Spy(fnr=0.1)}).fit(X, y)
    ys = [v[0] for v in seen.values()]
    assert sorted((yy == 1).sum() for yy in ys) == [60, 60]
    assert all((yy == -1).sum() == 80 and yy.size == 140 for yy in ys)
    seen.clear()
    OwnedModelsAttributor({"G1": Spy(fnr=0.1), "G2": Spy(fnr=0.1)},
                          owned_as_negatives=False).fit(X, y)
    assert all((v[0] == -1).sum() == 20 and v[0].size == 80 for v in seen.values())


def test_bad_labels_and_names():
    X, y = data(["G1", "G2"], 30, seed=2)
    est = {"G1": iforest(0.1), "G2": iforest(0.1)}
    with pytest.raises(ValueError, match="neither a model name nor none_label"):
        OwnedModelsAttributor(est).fit(X, np.where(y == "G2", "G4", y))
    with pytest.raises(ValueError, match="'G2' has 0 samples"):
        OwnedModelsAttributor(est).fit(X, np.where(y == "G2", "none", y))
    with pytest.raises(ValueError, match="not usable"):
        OwnedModelsAttributor({"none": iforest(), "G2": iforest()}).fit(X, y)
    with pytest.raises(ValueError, match="not usable"):
        OwnedModelsAttributor({"a__b": iforest()}).fit(X, y)
    with pytest.raises(ValueError, match="60 samples but y has 59"):
        OwnedModelsAttributor(est).fit(X, y[:-1])
    with pytest.raises(NotFittedError):
        OwnedModelsAttributor(est).predict(X)


def test_sklearn_style_params_and_clone():
    pipe = Pipeline([("scale", StandardScaler()), ("det", iforest())])
    attr = OwnedModelsAttributor({"G1": pipe, "G2": clone(pipe)}, fnr=0.1)
    params = attr.get_params()
    assert params["G1"] is pipe and params["G1__det__fnr"] == 0.05
    attr.set_params(G2__det__estimator="ocsvm", none_label="other")
    assert attr.estimators["G2"][-1].estimator == "ocsvm" and attr.none_label == "other"
    new = clone(attr)
    assert new.estimators["G1"] is not pipe and new.get_params()["G2__det__estimator"] == "ocsvm"
    attr.set_params(G1=iforest(0.2))
    assert isinstance(attr.estimators["G1"], ConformalDetector)
    # the list-of-pairs form works as well
    listed = OwnedModelsAttributor([("G1", iforest()), ("G2", iforest())])
    assert listed.get_params()["G2__fnr"] == 0.05
    for check in (check_get_params_invariance, check_set_params,
                  check_no_attributes_set_in_init):
        check("OwnedModelsAttributor", attr)
    check_parameters_default_constructible("OwnedModelsAttributor", attr)
    # fnr is set on every clone's detector; the given estimators are untouched
    X, y = data(["G1", "G2"], 100, seed=3, n_other=20)
    fitted = new.set_params(none_label="none").fit(X, y)
    assert all(est[-1].fnr == 0.1 for est in fitted.estimators_.values())
    assert pipe[-1].fnr == 0.05 and not hasattr(pipe[-1], "threshold_")
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.pvalues(X[:20]), fitted.pvalues(X[:20]))


def test_from_fitted_frozen_and_calibrate():
    dets = {m: iforest().fit(sample(m, 300, seed=20 + i)) for i, m in enumerate(("G1", "G3"))}
    attr = OwnedModelsAttributor.from_fitted(dets)
    X = np.vstack([sample("G1", 30, 31), sample("G3", 30, 32)])
    np.testing.assert_array_equal(attr.pvalues(X)[:, 0], dets["G1"].pvalues(X))
    frozen = OwnedModelsAttributor({m: FrozenEstimator(d) for m, d in dets.items()})
    frozen.fit(X, np.array(["G1"] * 30 + ["G3"] * 30))
    np.testing.assert_array_equal(frozen.predict(X), attr.predict(X))
    with pytest.raises(TypeError, match="not a conformal detector"):
        OwnedModelsAttributor.from_fitted({"G1": StandardScaler().fit(X)})
    # recalibrate one model on fresh samples, as many as its fnr needs
    attr.calibrate({"G1": lambda n: sample("G1", n, 40)}, fnr=0.005)
    assert dets["G1"].fnr == 0.005 and dets["G1"].validation_scores_.size == 199
    with pytest.raises(ValueError, match="not one of the models"):
        attr.calibrate({"G9": X})


def test_flipad_detectors_inside():
    fast = dict(hidden_sizes=(8,), rep_dim=4, n_epochs=2, batch_size=32, fnr=0.1,
                device="cpu", random_state=0)
    X, y = data(["G1", "G3"], 120, seed=4, n_other=30)
    attr = OwnedModelsAttributor({"G1": FLIPADDetector(**fast),
                                  "G3": FLIPADDetector(**fast)}).fit(X, y)
    assert attr.predict_set(X).shape == (270, 2)
    assert np.mean(attr.predict(sample("G3", 200, 50)) == "G3") > 0.6


def test_prediction_set_display(fitted):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from flipad_sklearn import PredictionSetDisplay

    X = np.vstack([sample("G1", 200, 60), sample("G3", 200, 61), sample("none", 100, 62)])
    y = np.array(["G1"] * 200 + ["G3"] * 200 + ["none"] * 100)
    disp = PredictionSetDisplay.from_estimator(fitted, X, y)
    sets = fitted.predict_set(X)
    assert list(disp.set_sizes) == ["G1", "G3", "none"]  # models first, then others
    np.testing.assert_allclose(disp.set_sizes["G3"],
                               np.bincount(sets[200:400].sum(1), minlength=4) / 200)
    assert disp.coverage["G1"] == pytest.approx(sets[:200, 0].mean())
    assert disp.target == {"G1": 0.95, "G2": 0.95, "G3": 0.95}
    assert len(disp.bars_) == 4 and disp.figure_ is disp.ax_.figure
    disp2 = PredictionSetDisplay.from_estimator(fitted, X, y, alpha=0.2)
    assert set(disp2.target.values()) == {0.8}
    with pytest.raises(ValueError, match="sets must have shape"):
        PredictionSetDisplay.from_predictions(y, sets[:, :2], ["G1", "G2", "G3"])
    plt.close("all")


class _ArrayLike:
    """Has ``__array__`` only (no len, no shape), like the checks' _NotAnArray."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)


def test_inputs_the_estimator_checks_cannot_reach():
    """The checks fit with labels 0, 1, 2, which an attributor rightly refuses (its
    classes are the model names): the same cases here, with proper labels."""
    from scipy import sparse

    X, y = data(["G1", "G2"], 40, seed=5, n_other=10)
    est = {"G1": iforest(0.1), "G2": iforest(0.1)}
    attr = OwnedModelsAttributor(est)
    assert not hasattr(attr, "n_features_in_")
    attr.fit(X, y)
    assert attr.n_features_in_ == D
    # an object with __array__ only
    other = OwnedModelsAttributor(est).fit(_ArrayLike(X), _ArrayLike(y))
    np.testing.assert_array_equal(other.predict(_ArrayLike(X)), attr.predict(X))
    # a continuous target is named as such
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        OwnedModelsAttributor(est).fit(X, np.linspace(0, 1, len(X)))
    # bad X: the detectors' own clear errors
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        OwnedModelsAttributor(est).fit(bad, y)
    with pytest.raises(ValueError, match="NaN"):
        attr.predict(bad)
    with pytest.raises(TypeError, match="[Ss]parse"):
        OwnedModelsAttributor(est).fit(sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="features"):
        attr.predict(X[:, :2])
    with pytest.raises(ValueError, match="Reshape your data"):
        attr.predict(X[0])
