"""make_flipad_tabular: the tabular FLIPAD recipe (benchmarks/attribution_tabular.py)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from flipad_sklearn.generators import TabularGenerator
from flipad_sklearn.pipeline import TABULAR_DETECTOR, TABULAR_RECIPE, make_flipad_tabular

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _generator(seed):
    torch.manual_seed(seed)
    return TabularGenerator(n_features=4, latent_dim=3, hidden_sizes=(16,)).eval()


def test_defaults_and_steps():
    G = _generator(0)
    pipe = make_flipad_tabular(G, n_anchor=200, device="cpu")
    assert [name for name, _ in pipe.steps] == ["inv", "select", "scaler", "det"]
    inv, det = pipe["inv"], pipe["det"]
    assert inv.positive is True and inv.activation == "identity"
    assert inv.alpha == TABULAR_RECIPE["alpha"] and inv.solver == TABULAR_RECIPE["solver"]
    # every unit by default; more than the layer has are clipped
    assert pipe["select"].n_channels == 16
    assert make_flipad_tabular(G, n_anchor=200, n_channels=100,
                               device="cpu")["select"].n_channels == 16
    assert det.hidden_sizes == TABULAR_DETECTOR["hidden_sizes"] and det.network == "mlp"
    no_scale = make_flipad_tabular(G, n_anchor=200, scale=False, n_channels=8,
                                   detector="ocsvm", device="cpu")
    assert [name for name, _ in no_scale.steps] == ["inv", "select", "det"]
    assert no_scale["select"].n_channels == 8


def test_attributes_rows_of_g():
    G, H = _generator(0), _generator(1)
    X_g = G.standardize(G.sample(300, random_state=0))
    X_h = G.standardize(H.sample(150, random_state=0))
    X = np.concatenate([X_g[:200], X_h[:100]])
    y = np.r_[np.ones(200), -np.ones(100)]
    pipe = make_flipad_tabular(G, n_anchor=200, n_channels=8, max_iter=200, random_state=0,
                               device="cpu", fnr=0.05,
                               detector_params=dict(hidden_sizes=(32, 16), rep_dim=8,
                                                    n_epochs=15, batch_size=64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
        Z = pipe["inv"].transform(X_g[200:])
        s = pipe.score_samples(np.concatenate([X_g[200:], X_h[100:]]))
    assert Z.min() >= -1e-6      # positive=True: a ReLU layer's activations
    assert pipe["inv"].solver_ == "fista"    # auto: a shifted bound rules out sklearn's cd
    assert roc_auc_score(np.r_[np.ones(100), np.zeros(50)], s) > 0.8
