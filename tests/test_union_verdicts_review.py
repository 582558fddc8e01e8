"""A hostile review of a ConformalUnion's verdicts (``pvalues``, ``verdict_table``,
``flipad score``).

A verdict is evidence: re-scoring the same image files with the saved union,
one at a time or in batches, in Python or with the command, must give the
same verdict and p-value.
"""

import csv
import io
import json
import warnings

import joblib
import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

from flipad_sklearn import (
    ConformalDetector, ConformalUnion, cli, make_pixel_guard, make_rawpad, persistence,
)
from flipad_sklearn.pipeline import make_flipad
from flipad_sklearn.verdicts import image_shape, read_images, saved_range, verdict_table

from test_union_verdicts import _generator, _samples, _write_pngs

pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def calibrated():
    """FLIPAD, RAWPAD and a pixel guard of G (the docs' recipe), recalibrated on fresh
    samples of G, saved in the secure format, and 8-bit test images written as files."""
    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 240, 1)
    X_h, _ = _samples(H, 80, 2)
    flipad = make_flipad(G[3], "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                         max_iter=50, n_channels=4, random_state=0, device="cpu",
                         detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    rawpad = make_rawpad(random_state=0, device="cpu",
                         detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    union = ConformalUnion([("flipad", flipad), ("raw", rawpad),
                            ("pixels", make_pixel_guard((1, 8, 8), size=4, random_state=0))],
                           fnr=0.3, weights={"flipad": 0.5, "raw": 0.3, "pixels": 0.2})
    seeds = iter(range(100, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])
        union.calibrate(lambda n: _samples(G, n, next(seeds))[0])
    return union, G, H


@pytest.fixture(scope="module")
def files(calibrated, tmp_path_factory):
    union, G, H = calibrated
    tmp = tmp_path_factory.mktemp("union_review")
    X = np.concatenate([_samples(G, 15, 3)[0], _samples(H, 15, 4)[0]])
    _write_pngs(X[:15], tmp / "imgs", "g")
    _write_pngs(X[15:], tmp / "imgs", "h")
    persistence.save(union, tmp / "union.flipad")
    paths = sorted(str(p) for p in (tmp / "imgs").glob("*.png"))
    return tmp, paths


def _score(args, capsys):
    code = cli.main(["score", *map(str, args), "--format", "json", "-q"])
    out = capsys.readouterr()
    assert code == cli.EXIT_OK, out.err
    return json.loads(out.out)["verdicts"]


def test_saved_calibrated_union_gives_one_verdict_per_file_in_any_batch(calibrated, files,
                                                                        capsys):
    union, _, _ = calibrated
    tmp, paths = files
    detector = tmp / "union.flipad"
    together = _score([detector, *paths, "--device", "cpu"], capsys)
    one_by_one = [_score([detector, p, "--device", "cpu"], capsys)[0] for p in paths]
    batch1 = _score([detector, *paths, "--device", "cpu", "--batch-size", "1"], capsys)
    cols = ["verdict", "pvalue", "p_flipad", "p_raw", "p_pixels"]
    for rows in (one_by_one, batch1):
        assert [[r[c] for c in cols] for r in rows] == \
            [[r[c] for c in cols] for r in together]
    # and the union in Python, on the same 8-bit images
    X, ok, _ = read_images(paths, image_shape(union), saved_range(union))
    assert ok == paths
    p, d = union.pvalues(X, return_decision=True)
    np.testing.assert_array_equal([r["verdict"] for r in together], union.predict(X))
    np.testing.assert_array_equal([r["pvalue"] for r in together], p)
    np.testing.assert_array_equal([r["score"] for r in together], d)
    assert {1, -1} <= {r["verdict"] for r in together}


def test_verdict_and_pvalue_agree_on_the_recipe(calibrated, files):
    # each detector within its share: predict rejects exactly where p <= fnr
    union, _, _ = calibrated
    tmp, paths = files
    for (_, est), w in zip(union.estimators_, union.weights_):
        assert est[-1].fnr_bound_ <= union.fnr * w + 1e-12
    table = verdict_table(union, paths)
    assert [r["verdict"] == -1 for r in table] == [r["pvalue"] <= union.fnr for r in table]


# fails on the code before the fix: FISTA's continuation gave the last stage max_iter minus
# the most iterations any sample of the batch used, and _continue the same
def test_union_pvalues_do_not_depend_on_the_batch_when_the_inversion_hits_max_iter():
    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 240, 1)
    X_h, _ = _samples(H, 80, 2)
    flipad = make_flipad(G[3], "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                         max_iter=50, n_channels=4, random_state=0, device="cpu",
                         detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    union = ConformalUnion([("flipad", flipad),
                            ("pixels", make_pixel_guard((1, 8, 8), size=4, random_state=0))],
                           fnr=0.02)
    seeds = iter(range(100, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])
        union.calibrate(lambda n: _samples(G, n, next(seeds))[0])    # 99 held out each
        X = _samples(G, 60, 3)[0]
        P = union.pvalues(X, per_detector=True)
        P1 = np.concatenate([union.pvalues(X[i:i + 1], per_detector=True)
                             for i in range(len(X))])
    np.testing.assert_array_equal(P1, P)


def _guard(fnr=0.05, **kw):
    X, _ = _samples(_generator(0), 240, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pixel_guard((1, 8, 8), size=4, random_state=0, fnr=fnr, **kw).fit(X), X


def test_frozen_and_bare_members_score_from_files_and_from_a_joblib_file(tmp_path, capsys):
    guard, X = _guard()
    union = ConformalUnion([("frozen", FrozenEstimator(guard)),
                            ("bare", ConformalDetector("gaussian", random_state=0))],
                           fnr=0.1).fit(X.reshape(len(X), -1))
    assert image_shape(union) == (1, 8, 8) and saved_range(union) == (-1.0, 1.0)
    _write_pngs(X[:4], tmp_path / "imgs", "x")
    expected = verdict_table(union, [str(tmp_path / "imgs")])
    joblib.dump(union, tmp_path / "u.joblib")
    assert cli.main(["score", str(tmp_path / "u.joblib"), str(tmp_path / "imgs")]) \
        == cli.EXIT_ERROR
    assert "--trust-pickle" in capsys.readouterr().err
    rows = _score([tmp_path / "u.joblib", tmp_path / "imgs", "--trust-pickle"], capsys)
    assert [(r["verdict"], r["pvalue"], r["p_frozen"], r["p_bare"]) for r in rows] == \
        [(r["verdict"], r["pvalue"], r["p_frozen"], r["p_bare"]) for r in expected]


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (4, 64), (1, 1, 8, 8), (1, 64)])
def test_one_pass_pvalues_and_decision_equal_the_separate_calls(shape):
    # a pipeline with an input contract (uint8 levels), a frozen one and a bare detector
    guard, X = _guard()
    union = ConformalUnion([("guard", make_pixel_guard((1, 8, 8), size=4, random_state=1)),
                            ("frozen", FrozenEstimator(guard)),
                            ("bare", ConformalDetector("gaussian", random_state=0))],
                           fnr=0.15).fit(X.reshape(len(X), -1))
    Xt = (_samples(_generator(1), 4, 9)[0] * 0.999).reshape(4, -1)[:shape[0]].reshape(shape)
    p, d = union.pvalues(Xt, return_decision=True)
    P, d2 = union.pvalues(Xt, per_detector=True, return_decision=True)
    np.testing.assert_array_equal(p, union.pvalues(Xt))
    np.testing.assert_array_equal(d, union.decision_function(Xt))
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_array_equal(union.combine_pvalues(P), p)
    np.testing.assert_array_equal(union.predict(Xt), np.where(d >= 0, 1, -1))


def test_members_that_read_other_pixel_ranges_are_refused_clearly(tmp_path, capsys):
    X = (_samples(_generator(0), 240, 1)[0] + 1) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union = ConformalUnion([("tanh", make_pixel_guard((1, 8, 8), size=4)),
                                ("sigmoid", make_pixel_guard((1, 8, 8), size=4,
                                                             activation="sigmoid"))],
                               fnr=0.1).fit(X)
    with pytest.raises(ValueError, match="different ranges"):
        verdict_table(union, [str(tmp_path)])
    persistence.save(union, tmp_path / "u.flipad")
    _write_pngs(X[:1] * 2 - 1, tmp_path / "imgs", "x")
    assert cli.main(["score", str(tmp_path / "u.flipad"), str(tmp_path / "imgs")]) \
        == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "different ranges" in err and "(-1.0, 1.0)" in err and "(0.0, 1.0)" in err


def test_odd_member_names_round_trip_through_csv_and_json():
    X = np.random.default_rng(0).normal(size=(240, 3))
    names = ['a,b"c', "ü x\n"]
    union = ConformalUnion([(n, ConformalDetector("gaussian", random_state=i))
                            for i, n in enumerate(names)], fnr=0.1).fit(X)
    table = verdict_table(union, X[:3])
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    P = union.pvalues(X[:3], per_detector=True)
    assert [[float(r["p_" + n]) for n in names] for r in rows] == P.tolist()
    doc = json.loads(table.to_json())
    assert [[r["p_" + n] for n in names] for r in doc["verdicts"]] == P.tolist()
    assert set(doc["detector"]["members"]) == set(names)


def test_a_file_holding_neither_a_pipeline_nor_a_union_is_refused(tmp_path, capsys):
    guard, X = _guard()
    persistence.save(guard[-1], tmp_path / "det.flipad")
    _write_pngs(X[:1], tmp_path / "imgs", "x")
    assert cli.main(["score", str(tmp_path / "det.flipad"), str(tmp_path / "imgs")]) \
        == cli.EXIT_ERROR
    assert "ConformalUnion" in capsys.readouterr().err


def test_a_union_fitted_on_cuda_scores_on_cpu_with_device_cpu(calibrated, files, capsys):
    # fitted elsewhere on a GPU: every inverter and Deep SAD says device="cuda"
    union, _, _ = calibrated
    tmp, paths = files
    steps = [union.estimators_[0][1][0], union.estimators_[0][1][-1],
             union.estimators_[1][1][-1]]
    saved = [s.device for s in steps]
    try:
        for s in steps:
            s.set_params(device="cuda")
        persistence.save(union, tmp / "cuda.flipad")
    finally:
        for s, d in zip(steps, saved):
            s.set_params(device=d)
    rows = _score([tmp / "cuda.flipad", *paths[:4], "--device", "cpu"], capsys)
    expected = _score([tmp / "union.flipad", *paths[:4], "--device", "cpu"], capsys)
    assert rows == expected
