"""Verdicts of a ConformalUnion: one pass per detector, the evidence table, ``flipad score``."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from flipad_sklearn import (
    ConformalDetector, ConformalUnion, cli, make_open_world_union, make_pixel_guard,
    persistence,
)
from flipad_sklearn.inversion import FinalLayerInverter
from flipad_sklearn.pipeline import OPEN_WORLD_SHARES, ImmunisedPipeline, make_flipad
from flipad_sklearn.verdicts import image_shape, read_images, verdict_table

Image = pytest.importorskip("PIL.Image")


def _generator(seed):
    """A tiny image generator (8 latent dimensions -> 1 x 8 x 8, tanh), as in test_cli."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 8 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (8, 4, 4)),
                        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Tanh())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net.eval()


def _samples(net, n, seed):
    """``n`` images of ``net`` as 8-bit files hold them (on the 256 levels of [-1, 1]),
    and the penultimate activations."""
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32))
    with torch.no_grad():
        A = net[:3](z)
        X = net[3:](A).numpy()
    return (np.round((X + 1) * 127.5) / 127.5 - 1).astype(np.float32), A.numpy()


def _write_pngs(X, folder, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(X):
        pixels = np.clip(np.round((im[0] + 1) * 127.5), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}{i:02d}.png")


@pytest.fixture(scope="module")
def union_and_data():
    """FLIPAD and a pixel guard of G, fitted with another generator's images as others."""
    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 240, 1)
    X_h, _ = _samples(H, 80, 2)
    flipad = make_flipad(G[3], "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                         max_iter=50, n_channels=4, random_state=0, device="cpu",
                         detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    union = ConformalUnion([("flipad", flipad),
                            ("pixels", make_pixel_guard((1, 8, 8), size=4, random_state=0))],
                           fnr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # few held-out samples for the shares
        union.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])
    X_test = np.concatenate([_samples(G, 6, 3)[0], _samples(H, 6, 4)[0]])
    return union, X_test


def _count_transforms(monkeypatch, union):
    """Count the calls of each detector's first step's ``transform``."""
    calls = {}
    for name, member in union.estimators_:
        step = member.steps[0][1]
        real = step.transform
        calls[name] = 0

        def counted(X, *args, _name=name, _real=real, **kwargs):
            calls[_name] += 1
            return _real(X, *args, **kwargs)

        monkeypatch.setattr(step, "transform", counted)
    return calls


def test_pvalues_with_the_decision_transform_once_per_detector(union_and_data, monkeypatch):
    # before: no return_decision; pvalues then predict inverted every image twice
    union, X = union_and_data
    P_alone = union.pvalues(X, per_detector=True)
    p_alone, d_alone = union.pvalues(X), union.decision_function(X)
    calls = _count_transforms(monkeypatch, union)
    p, d = union.pvalues(X, return_decision=True)
    assert calls == {"flipad": 1, "pixels": 1}
    P, d2 = union.pvalues(X, per_detector=True, return_decision=True)
    np.testing.assert_array_equal(p, p_alone)
    np.testing.assert_array_equal(d, d_alone)
    np.testing.assert_array_equal(P, P_alone)
    np.testing.assert_array_equal(d2, d_alone)
    np.testing.assert_array_equal(union.combine_pvalues(P), p_alone)
    assert isinstance(p, np.ndarray) and not isinstance(union.pvalues(X[:2]), tuple)


def test_verdict_table_of_a_union_is_its_predict_and_pvalues(union_and_data, monkeypatch):
    # before: verdict_table indexed the union as a pipeline (TypeError)
    union, X = union_and_data
    expected_p, expected_P = union.pvalues(X), union.pvalues(X, per_detector=True)
    expected_d, expected_v = union.decision_function(X), union.predict(X)
    calls = _count_transforms(monkeypatch, union)
    table = verdict_table(union, X)
    assert calls == {"flipad": 1, "pixels": 1}
    assert table.columns == ["path", "score", "verdict", "decision", "pvalue",
                             "p_flipad", "p_pixels", "status"]
    np.testing.assert_array_equal([r["verdict"] for r in table], expected_v)
    np.testing.assert_array_equal([r["score"] for r in table], expected_d)
    np.testing.assert_array_equal([r["pvalue"] for r in table], expected_p)
    np.testing.assert_array_equal([[r["p_flipad"], r["p_pixels"]] for r in table], expected_P)
    assert [r["decision"] for r in table] == ["G" if v == 1 else "not G" for v in expected_v]
    assert {1, -1} <= set(expected_v.tolist())   # both verdicts are exercised
    meta = table.metadata
    assert meta["fnr"] == 0.1 and meta["weights"] == {"flipad": 0.5, "pixels": 0.5}
    assert meta["fnr_bound"] == pytest.approx(union.fnr_bound_)
    assert meta["fnr_interval"] == pytest.approx(list(union.fnr_interval_))
    for name, member in union.estimators_:
        assert meta["members"][name]["fnr"] == pytest.approx(0.05)
        assert meta["members"][name]["threshold"] == float(member[-1].threshold_)
        assert meta["members"][name]["n_validation"] == member[-1].validation_scores_.size
    doc = json.loads(table.to_json())
    assert doc["verdicts"][0]["p_pixels"] == table[0]["p_pixels"]
    assert set(doc["detector"]["members"]) == {"flipad", "pixels"}


def test_flipad_score_of_a_saved_union_matches_python(union_and_data, tmp_path, capsys):
    # before: "is not a detector written by `flipad fit`" (exit 1)
    union, X = union_and_data
    path = tmp_path / "union.flipad"
    persistence.save(union, path)
    _write_pngs(X[:6], tmp_path / "imgs", "g")
    _write_pngs(X[6:], tmp_path / "imgs", "h")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "v.csv"
    code = cli.main(["score", str(path), str(tmp_path / "imgs"), "--csv", str(out), "-q",
                     "--device", "cpu", "--batch-size", "4"])
    assert code == cli.EXIT_PARTIAL
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["path", "score", "decision", "p-value", "p_flipad",
                                  "p_pixels"]
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "score", "verdict", "decision", "pvalue", "p_flipad",
                             "p_pixels", "status"]
    assert rows[0]["status"].startswith("unreadable") and rows[0]["score"] == ""
    rows = rows[1:]
    files = [r["path"] for r in rows]
    # the same 8-bit images, read back as the command reads them
    X_read, ok, _ = read_images(files, (1, 8, 8))
    assert ok == files
    np.testing.assert_allclose(X_read, X, atol=1e-6)     # float32 roundings of one level
    loaded = persistence.load(path)
    np.testing.assert_array_equal([int(r["verdict"]) for r in rows], union.predict(X_read))
    np.testing.assert_allclose([float(r["pvalue"]) for r in rows], union.pvalues(X_read))
    np.testing.assert_allclose([[float(r["p_flipad"]), float(r["p_pixels"])] for r in rows],
                               loaded.pvalues(X_read, per_detector=True))
    python = verdict_table(union, files)
    for cli_row, row in zip(rows, python):
        assert float(cli_row["score"]) == pytest.approx(row["score"], rel=1e-9, abs=1e-12)
        assert int(cli_row["verdict"]) == row["verdict"]
        assert cli_row["decision"] == row["decision"]
    # JSON: the union's and its detectors' metadata
    assert cli.main(["score", str(path), *files[:2], "--format", "json", "-q",
                     "--device", "cpu"]) == cli.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["detector"]["fnr"] == 0.1 and set(doc["detector"]["members"]) == {
        "flipad", "pixels"}
    assert doc["verdicts"][1]["p_flipad"] == pytest.approx(float(rows[1]["p_flipad"]))


def test_score_options_reach_every_inverter_and_network(union_and_data, monkeypatch):
    union, _ = union_and_data
    moved = []
    network = union.estimators_[0][1][-1].network_
    monkeypatch.setattr(network, "to", lambda device: moved.append(str(device)) or network)
    inv = union.estimators_[0][1][0]
    before = inv.get_params()
    try:
        cli._set_scoring_options(union, "cpu", 3)
        assert isinstance(inv, FinalLayerInverter)
        assert inv.batch_size == 3 and inv.device == "cpu" and moved == ["cpu"]
    finally:
        inv.set_params(batch_size=before["batch_size"], device=before["device"])


def test_stored_device_is_checked_over_every_detector(union_and_data, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    union, X = union_and_data
    inv = union.estimators_[0][1][0]
    device = inv.device
    inv.set_params(device="cuda")
    try:
        persistence.save(union, tmp_path / "cuda.flipad")
    finally:
        inv.set_params(device=device)
    _write_pngs(X[:1], tmp_path / "imgs", "g")
    code = cli.main(["score", str(tmp_path / "cuda.flipad"), str(tmp_path / "imgs"), "-q"])
    assert code == cli.EXIT_ERROR
    assert "re-run with --device cpu" in capsys.readouterr().err


def test_union_whose_detectors_disagree_on_the_image_shape_is_refused(tmp_path, capsys):
    # 64 pixels read as 1 x 8 x 8 by one guard, 1 x 4 x 16 by the other
    X = np.round(np.tanh(np.random.default_rng(0).normal(size=(200, 1, 8, 8))) * 127.5) \
        / 127.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union = ConformalUnion([("square", make_pixel_guard((1, 8, 8), size=4)),
                                ("wide", make_pixel_guard((1, 4, 16), size=4))],
                               fnr=0.1).fit(X.reshape(200, -1))
    with pytest.raises(ValueError, match="different shapes"):
        image_shape(union)
    persistence.save(union, tmp_path / "u.flipad")
    _write_pngs(X[:2].astype(np.float32), tmp_path / "imgs", "x")
    code = cli.main(["score", str(tmp_path / "u.flipad"), str(tmp_path / "imgs"), "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert "different shapes" in err and "(1, 8, 8)" in err and "(1, 4, 16)" in err


def test_union_that_tells_no_image_shape_is_refused(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(200, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union = ConformalUnion([("a", ConformalDetector("gaussian", random_state=0)),
                                ("b", ConformalDetector("gaussian", random_state=1))],
                               fnr=0.1).fit(X)
    persistence.save(union, tmp_path / "u.flipad")
    (tmp_path / "a.png").write_bytes(b"")
    code = cli.main(["score", str(tmp_path / "u.flipad"), str(tmp_path / "a.png"), "-q"])
    assert code == cli.EXIT_ERROR
    assert "No detector of the union tells the shape" in capsys.readouterr().err


def test_the_documented_union_with_dctpad_scores_from_its_file(tmp_path, capsys):
    # open_world.rst's union (make_open_world_union): FLIPAD, DCTPAD and the pixel guard;
    # the secure file must hold DCTPAD's DCT step
    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 240, 1)
    X_h, _ = _samples(H, 80, 2)
    small = dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3)
    union = make_open_world_union(
        G[3], "tanh", A_g.mean(axis=0), image_shape=(1, 8, 8), fnr=0.1, random_state=0,
        device="cpu", flipad_params=dict(positive=True, tol=1e-3, max_iter=50, n_channels=4,
                                         detector_params=small),
        dctpad_params=dict(detector_params=small))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])
    X = np.concatenate([_samples(G, 6, 3)[0], _samples(H, 6, 4)[0]])
    path = tmp_path / "union.flipad"
    persistence.save(union, path)
    _write_pngs(X, tmp_path / "imgs", "x")
    out = tmp_path / "v.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(["score", str(path), str(tmp_path / "imgs"), "--csv", str(out), "-q",
                         "--device", "cpu"])
        expected = union.pvalues(X, per_detector=True)
        verdicts = union.predict(X)
    assert code == cli.EXIT_OK
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"][-7:] for r in rows] == [f"x{i:02d}.png" for i in range(12)]
    np.testing.assert_array_equal([int(r["verdict"]) for r in rows], verdicts)
    np.testing.assert_allclose([[float(r[f"p_{k}"]) for k in ("flipad", "dctpad", "pixels")]
                                for r in rows], expected)
    assert (verdicts == -1).any() and (verdicts == 1).any()


def test_open_world_union_builds_the_documented_members():
    """Three members at OPEN_WORLD_SHARES; immunise goes to DCTPAD, FLIPAD's own through
    flipad_params; one input contract; the guard keeps every pixel of a small image."""
    G = _generator(0)
    union = make_open_world_union(G[3], "tanh", np.zeros((8, 4, 4), np.float32),
                                  image_shape=(1, 8, 8), immunise="published",
                                  random_state=3, flipad_params=dict(alpha=1e-3),
                                  dctpad_params=dict(detector_params=dict(n_epochs=7)))
    members = dict(union.estimators)
    assert list(members) == ["flipad", "dctpad", "pixels"]
    assert union.weights == OPEN_WORLD_SHARES and union.fnr == 0.005
    assert isinstance(members["dctpad"], ImmunisedPipeline)
    assert not isinstance(members["flipad"], ImmunisedPipeline)
    assert members["flipad"].named_steps["inv"].alpha == 1e-3
    assert members["dctpad"].named_steps["det"].n_epochs == 7
    assert members["pixels"].named_steps["pool"].kernel_size == 1     # 8x8: every pixel
    for est in members.values():
        assert est.quantize == "uint8" and est.input_range == (-1.0, 1.0)
    immune = make_open_world_union(G[3], "tanh", np.zeros((8, 4, 4), np.float32),
                                   image_shape=(1, 8, 8),
                                   flipad_params=dict(immunise="published"))
    assert isinstance(dict(immune.estimators)["flipad"], ImmunisedPipeline)
    assert not isinstance(dict(immune.estimators)["dctpad"], ImmunisedPipeline)
    for bad in [(8, 8), (1, 0, 8), (1.0, 8, 8)]:
        with pytest.raises(ValueError, match="image_shape"):
            make_open_world_union(G[3], "tanh", image_shape=bad,
                                  flipad_params=dict(activation_shape=(8, 4, 4)))
    with pytest.raises(NotFittedError):
        union.predict(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="weights must be a dict"):
        make_open_world_union(G[3], "tanh", np.zeros((8, 4, 4)), image_shape=(1, 8, 8),
                              weights=[0.5, 0.3, 0.2])
    for key in ("flipad_params", "dctpad_params"):
        with pytest.raises(ValueError, match=f"{key} sets \\['input_range'\\]"):
            make_open_world_union(G[3], "tanh", np.zeros((8, 4, 4)), image_shape=(1, 8, 8),
                                  **{key: dict(input_range=(0, 1))})


def test_open_world_union_with_validation_size_0_trains_on_every_sample_then_calibrates():
    """validation_size=0: every sample of G trains the three detectors (the default holds
    out what each share needs), nothing predicts before calibrate, which sets the
    thresholds on fresh samples of G (the guide's recipe for an owner who can sample G)."""
    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 240, 1)
    X_h, _ = _samples(H, 80, 2)
    small = dict(hidden_sizes=(16,), rep_dim=4, n_epochs=2)
    params = dict(image_shape=(1, 8, 8), fnr=0.1, random_state=0, device="cpu",
                  flipad_params=dict(positive=True, tol=1e-3, max_iter=50, n_channels=4,
                                     detector_params=small),
                  dctpad_params=dict(detector_params=small))
    X, y = np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        held = make_open_world_union(G[3], "tanh", A_g.mean(axis=0), **params).fit(X, y)
        union = make_open_world_union(G[3], "tanh", A_g.mean(axis=0), validation_size=0,
                                      **params).fit(X, y)
    # the guard's Gaussian: fitted on all 240 samples of G, not on those left after holding out
    for fitted, all_of_g in ((union, True), (held, False)):
        guard = fitted.estimators_[2][1]
        mean_of_all = guard[:1].transform(X_g).reshape(240, -1).mean(axis=0)
        assert np.allclose(guard["scaler"].mean_, mean_of_all) == all_of_g
    with pytest.raises(NotFittedError, match="calibrate"):
        union.predict(X_g[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        union.calibrate(lambda n: _samples(G, n, 7)[0])
        accepted = np.mean(union.predict(_samples(G, 60, 8)[0]) == 1)
    assert union.fnr_bound_ <= 0.1 + 1e-12 and accepted >= 0.75
    for bad in (1, 0.0, False, "none"):
        with pytest.raises(ValueError, match="validation_size must be 'auto' or 0"):
            make_open_world_union(G[3], "tanh", A_g.mean(axis=0), validation_size=bad,
                                  **params)


def _union_of(own, other, seed):
    """FLIPAD and a pixel guard of the generator ``own`` against ``other``'s images."""
    X_g, A_g = _samples(own, 240, seed)
    X_h, _ = _samples(other, 80, seed + 1)
    flipad = make_flipad(own[3], "tanh", A_g.mean(axis=0), positive=True, tol=1e-3,
                         max_iter=50, n_channels=4, random_state=0, device="cpu",
                         detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    union = ConformalUnion([("flipad", flipad),
                            ("pixels", make_pixel_guard((1, 8, 8), size=4, random_state=0))],
                           fnr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # few held-out samples for the shares
        return union.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])


@pytest.fixture(scope="module")
def two_unions():
    """One open-world style union per owned model (G and H), and images of G, H and K."""
    G, H, K = _generator(0), _generator(1), _generator(5)
    unions = {"G": _union_of(G, H, 1), "H": _union_of(H, G, 11)}
    X = np.concatenate([_samples(G, 6, 3)[0], _samples(H, 6, 4)[0], _samples(K, 6, 6)[0]])
    return unions, X


def test_attributor_takes_unions_and_uses_their_verdicts(two_unions):
    # before: from_fitted refused a union ("is not a conformal detector of flipad_sklearn")
    from flipad_sklearn import OwnedModelsAttributor

    unions, X = two_unions
    attr = OwnedModelsAttributor.from_fitted(unions)
    res = attr.attribute(X)
    for j, name in enumerate(attr.classes_):
        np.testing.assert_array_equal(res.pvalues[:, j], unions[name].pvalues(X))
        np.testing.assert_array_equal(res.sets[:, j], unions[name].predict(X) == 1)
    np.testing.assert_array_equal(attr.pvalues(X), res.pvalues)
    np.testing.assert_array_equal(attr.predict_set(X), res.sets)
    np.testing.assert_array_equal(attr.predict_set(X, alpha=0.2), res.pvalues > 0.2)
    assert res.sets[:6, 0].mean() > 0.5 and res.sets[6:12, 1].mean() > 0.5
    assert res.sets[6:12, 0].mean() < 0.5    # the union of G rejects most of H's images
    with pytest.raises(ValueError, match="alpha must be"):
        attr.predict_set(X, alpha=1.5)
    # frozen unions (how a fitted detector joins an attributor that is fitted again)
    from sklearn.frozen import FrozenEstimator

    frozen = OwnedModelsAttributor.from_fitted({n: FrozenEstimator(u) for n, u in unions.items()})
    np.testing.assert_array_equal(frozen.attribute(X).sets, res.sets)


def test_attributor_fits_and_recalibrates_unions():
    from flipad_sklearn import OwnedModelsAttributor

    G, H = _generator(0), _generator(1)
    X_g, A_g = _samples(G, 200, 1)
    X_h, A_h = _samples(H, 200, 2)

    def union(net, A):
        flipad = make_flipad(net[3], "tanh", A.mean(axis=0), positive=True, tol=1e-3,
                             max_iter=50, n_channels=4, random_state=0, device="cpu",
                             detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=2))
        return ConformalUnion([("flipad", flipad), ("pixels", make_pixel_guard(
            (1, 8, 8), size=4, random_state=0))], fnr=0.2)
    attr = OwnedModelsAttributor({"G": union(G, A_g), "H": union(H, A_h)}, fnr=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr.fit(np.concatenate([X_g, X_h]), np.array(["G"] * 200 + ["H"] * 200))
    fitted = attr.estimators_["G"]
    assert isinstance(fitted, ConformalUnion) and fitted.fnr == 0.3   # set on the union
    # each detector at its share of the union's fnr (before: set_params on a union's
    # "last step" failed)
    assert [e[-1].fnr for _, e in fitted.estimators_] == pytest.approx([0.15, 0.15])
    attr.calibrate({"G": _samples(G, 100, 7)[0]}, fnr=0.2)
    assert fitted.fnr == 0.2
    assert [e[-1].fnr for _, e in fitted.estimators_] == pytest.approx([0.1, 0.1])
    assert all(e[-1].validation_scores_.size == 100 for _, e in fitted.estimators_)


def test_flipad_attribute_reads_union_files(two_unions, tmp_path, capsys):
    # before: "is not a detector written by `flipad fit`" (exit 1) for a union file
    unions, X = two_unions
    paths = {}
    for name, union in unions.items():
        paths[name] = tmp_path / f"{name}.flipad"
        persistence.save(union, paths[name])
    _write_pngs(X, tmp_path / "imgs", "x")
    out = tmp_path / "sets.json"
    code = cli.main(["attribute", "--model", f"G={paths['G']}", "--model",
                     f"H={paths['H']}", str(tmp_path / "imgs"), "-o", str(out),
                     "--format", "json", "-q", "--device", "cpu", "--batch-size", "4"])
    assert code == cli.EXIT_OK
    doc = json.loads(out.read_text())
    files = [r["path"] for r in doc["verdicts"]]
    X_read, ok, _ = read_images(files, (1, 8, 8))
    assert ok == files
    python = verdict_table(unions, files)
    for row, expected in zip(doc["verdicts"], python):
        assert row["set"] == expected["set"] and row["prediction"] == expected["prediction"]
        assert row["p_G"] == pytest.approx(expected["p_G"])
    np.testing.assert_allclose([r["p_H"] for r in doc["verdicts"]], unions["H"].pvalues(X_read))
    assert {r["set"] for r in doc["verdicts"]} >= {"{G}", "{H}"}
    # each model's metadata is its union's: shares, bound, members
    meta = doc["detector"]["models"]["G"]
    assert meta["fnr"] == 0.1 and set(meta["members"]) == {"flipad", "pixels"}
    assert meta["fnr_bound"] == pytest.approx(unions["G"].fnr_bound_)
    assert cli.main(["attribute", "--model", f"G={paths['G']}", str(tmp_path / "imgs"),
                     "--batch-size", "0"]) == 2
    assert "--batch-size must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["dctpad", "pixels"])
def test_flipad_score_reads_a_lone_image_detector(kind, tmp_path, capsys):
    # before: a DCTPAD or pixel-guard pipeline saved from Python was "not a detector
    # written by `flipad fit`" (exit 1), though a union of them was scored
    from flipad_sklearn import make_dctpad

    G, H = _generator(0), _generator(1)
    X_g, X_h = _samples(G, 240, 1)[0], _samples(H, 80, 2)[0]
    if kind == "dctpad":
        det = make_dctpad((1, 8, 8), fnr=0.1, random_state=0, device="cpu",
                          detector_params=dict(hidden_sizes=(16,), rep_dim=4, n_epochs=3))
    else:
        det = make_pixel_guard((1, 8, 8), size=4, fnr=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(np.concatenate([X_g, X_h]), np.r_[np.ones(240), -np.ones(80)])
    path = tmp_path / f"{kind}.flipad"
    persistence.save(det, path)
    X = np.concatenate([_samples(G, 5, 3)[0], _samples(H, 5, 4)[0]])
    _write_pngs(X, tmp_path / "imgs", "x")
    out = tmp_path / "v.csv"
    assert cli.main(["score", str(path), str(tmp_path / "imgs"), "--csv", str(out), "-q",
                     "--device", "cpu"]) == cli.EXIT_OK
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    X_read, ok, _ = read_images([r["path"] for r in rows], (1, 8, 8))
    np.testing.assert_array_equal([int(r["verdict"]) for r in rows], det.predict(X_read))
    np.testing.assert_allclose([float(r["pvalue"]) for r in rows], det.pvalues(X_read))
    assert image_shape(det) == (1, 8, 8)


def test_flipad_score_refuses_a_detector_that_tells_no_image_shape(tmp_path, capsys):
    from flipad_sklearn import make_rawpad

    G = _generator(0)
    X = _samples(G, 60, 1)[0].reshape(60, -1)
    det = make_rawpad(fnr=0.2, random_state=0, device="cpu",
                      detector_params=dict(hidden_sizes=(8,), rep_dim=2, n_epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(X, np.ones(60))
    path = tmp_path / "rawpad.flipad"
    persistence.save(det, path)
    _write_pngs(_samples(G, 2, 3)[0], tmp_path / "imgs", "x")
    assert cli.main(["score", str(path), str(tmp_path / "imgs"), "-q"]) == 1
    assert "does not tell the shape of the images" in capsys.readouterr().err


def test_attribution_table_of_frozen_unions_matches_the_unions(two_unions, tmp_path):
    # before: verdict_table took a frozen union for a pipeline ("does not tell the shape
    # of the images") and its metadata for a bare detector's (threshold None)
    from sklearn.frozen import FrozenEstimator

    unions, X = two_unions
    _write_pngs(X, tmp_path / "imgs", "x")
    files = [str(tmp_path / "imgs")]
    plain = verdict_table(unions, files)
    frozen = verdict_table({n: FrozenEstimator(u) for n, u in unions.items()}, files)
    assert [r["set"] for r in frozen] == [r["set"] for r in plain]
    assert [r["p_G"] for r in frozen] == [r["p_G"] for r in plain]
    meta = frozen.metadata["models"]["G"]
    assert meta["fnr_bound"] == pytest.approx(unions["G"].fnr_bound_)
    assert set(meta["members"]) == {"flipad", "pixels"}
    alone = verdict_table(FrozenEstimator(unions["G"]), files)
    assert [r["verdict"] for r in alone] == [r["verdict"] for r in verdict_table(
        unions["G"], files)]


def test_attributor_refuses_a_pipeline_that_ends_in_a_union(two_unions):
    # before: accepted, and its steps were skipped when scoring (wrong sets, silently)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from flipad_sklearn import OwnedModelsAttributor

    unions, _ = two_unions
    piped = make_pipeline(FunctionTransformer(), unions["G"])
    with pytest.raises(TypeError, match="pipeline ending in a ConformalUnion"):
        OwnedModelsAttributor.from_fitted({"G": piped, "H": unions["H"]})
    with pytest.raises(TypeError, match="pipeline ending in a ConformalUnion"):
        OwnedModelsAttributor({"G": piped, "H": unions["H"]}).fit(
            np.zeros((4, 1, 8, 8)), ["G", "G", "H", "H"])


@pytest.mark.parametrize("fnr", [1.5, 0, -0.1, "a", True])
def test_attributor_calibrate_checks_fnr_before_any_change(two_unions, fnr):
    # before: a union took fnr=1.5 (members at 0.75) and "a" failed inside numpy
    from flipad_sklearn import OwnedModelsAttributor

    unions, X = two_unions
    attr = OwnedModelsAttributor.from_fitted(unions)
    with pytest.raises(ValueError, match="fnr must be None or a number in"):
        attr.calibrate({"G": X[:6]}, fnr=fnr)
    assert unions["G"].fnr == 0.1


def test_labels_do_not_depend_on_the_order_of_unions_that_tie_at_one(two_unions):
    # a union's p-value is capped at 1, where many of G's samples lie: two unions of G
    # that both gave 1 were ranked by their order in the attributor (the first won)
    from flipad_sklearn import OwnedModelsAttributor

    unions, _ = two_unions
    A, B = unions["G"], _union_of(_generator(0), _generator(1), 21)
    X = _samples(_generator(0), 60, 8)[0]
    first = OwnedModelsAttributor.from_fitted({"A": A, "B": B}).attribute(X)
    second = OwnedModelsAttributor.from_fitted({"B": B, "A": A}).attribute(X)
    ratio = {n: (u.pvalues(X, per_detector=True) / u.weights_).min(axis=1)
             for n, u in (("A", A), ("B", B))}
    tied = first.sets.all(axis=1) & (A.pvalues(X) == 1) & (B.pvalues(X) == 1) \
        & (ratio["A"] != ratio["B"])
    assert tied.sum() >= 3                     # the case this test is about occurs
    # equal ratios (every detector at p = 1, say) still go to the model listed first
    ranked = ~first.sets.all(axis=1) | (ratio["A"] != ratio["B"])
    np.testing.assert_array_equal(first.labels[ranked], second.labels[ranked])
    np.testing.assert_array_equal(first.labels[tied],
                                  np.where(ratio["A"] > ratio["B"], "A", "B")[tied])


def test_attributor_with_unions_refuses_bad_input_clearly(two_unions):
    from sklearn.exceptions import NotFittedError

    from flipad_sklearn import OwnedModelsAttributor

    unions, X = two_unions
    attr = OwnedModelsAttributor.from_fitted(unions)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attr.attribute(bad)
    with pytest.raises(ValueError, match="shape|features"):
        attr.attribute(X[:, :, :4, :4])
    with pytest.raises(TypeError, match="not a conformal detector"):
        OwnedModelsAttributor.from_fitted({"G": unions["G"], "H": "a string"})
    unfitted = ConformalUnion([("pixels", make_pixel_guard((1, 8, 8), size=4))])
    with pytest.raises(NotFittedError):
        OwnedModelsAttributor.from_fitted({"G": unions["G"], "H": unfitted})
