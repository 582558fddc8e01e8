"""The demo (``python -m flipad_sklearn.demo``), on a reduced size."""

import sys

import numpy as np
import pytest

from flipad_sklearn import demo
from flipad_sklearn.generators._demo_checkpoints import (
    DEMO_GENERATORS,
    checkpoint_path,
    load_demo_generator,
)

pytestmark = [pytest.mark.filterwarnings("ignore::flipad_sklearn.ThresholdWarning"),
              pytest.mark.usefixtures("torch_single_thread")]

SMALL = dict(n_own=60, n_neg=20, n_test=20, epochs=3, max_iter=20)


def test_checkpoints_ship_and_load():
    for name in DEMO_GENERATORS:
        G = load_demo_generator(name)
        assert checkpoint_path(name).endswith(f"mnist_{name}.pt")
        X = G.sample(4, random_state=0)
        assert X.shape == (4, 1, 28, 28) and np.abs(X).max() <= 1
    G, other = load_demo_generator("G"), load_demo_generator("other")
    assert G.kind == "dcgan" and other.kind == "lsgan" and other.ngf != G.ngf
    # trained weights: real-looking digits are mostly background (-1), unlike noise
    assert np.mean(G.sample(32, random_state=1) < -0.9) > 0.5


def test_demo_runs_and_writes_a_figure(tmp_path, capsys):
    fig = tmp_path / "demo.png"
    res = demo.run(figure=str(fig), **SMALL)
    out = capsys.readouterr().out
    assert set(res["accuracy"]) == set(demo.SOURCES)
    assert all(0 <= a <= 1 for a in res["accuracy"].values())
    assert set(res["auc"]) == {"real", "unseen", "other", "all"}
    for name in demo.SOURCE_NAMES.values():
        assert name in out
    assert "accuracy at fnr=0.005" in out and str(fig) in out
    assert fig.is_file() and fig.stat().st_size > 10_000
    # even this tiny run tells real digits from G's
    assert res["auc"]["real"] > 0.9
    # G's images as published (8-bit PNG) get the verdict of its floats (issue 27:
    # a float-trained pipeline accepted none of them)
    assert res["accepted_8bit"] == res["accuracy"]["G"] and res["accepted_8bit"] >= 0.9
    assert "as 8-bit PNG files" in out


def test_demo_takes_the_output_data_term(tmp_path):
    res = demo.run(figure=None, datafit="output", verbose=False, **SMALL)
    assert set(res["auc"]) == {"real", "unseen", "other", "all"}
    assert all(0.5 < a <= 1 for a in res["auc"].values())


def test_demo_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import fails
    res = demo.run(figure=str(tmp_path / "x.png"), **SMALL)
    assert res["figure"] is None and not (tmp_path / "x.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().out
