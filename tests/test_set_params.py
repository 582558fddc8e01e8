"""``set_params`` on a fitted inverter takes effect on the next ``transform``.

The Dask recipe of docs/user_guide/scaling.rst fits the inverter, then sets
``n_jobs`` and ``batch_size`` and transforms under joblib's Dask backend: the
batches must be those of the current parameters, not of the fit.
"""
import joblib
import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter


def _problem(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(16, 24).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(24, 16, generator=gen, dtype=torch.float64) / 4)
        layer.bias.zero_()
        h = torch.relu(torch.randn(n, 16, generator=gen, dtype=torch.float64))
        x = torch.tanh(layer(h)).numpy()
    return layer, x


def _counting_solve(monkeypatch):
    """Record the size of each batch the inverter hands to the solver."""
    import flipad_sklearn.inversion.final_layer as inversion
    sizes = []
    real = inversion.solve

    def solve(problem, *args, **kwargs):
        sizes.append(len(problem.targets))
        return real(problem, *args, **kwargs)

    monkeypatch.setattr(inversion, "solve", solve)
    return sizes


def test_set_params_batch_size_after_fit(monkeypatch):
    layer, x = _problem()
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, precision="float64").fit(x)
    sizes = _counting_solve(monkeypatch)
    z_one = inv.transform(x)
    assert sizes == [12]                    # "auto": one batch for a small layer
    sizes.clear()
    z_four = inv.set_params(batch_size=4).transform(x)
    assert sizes == [4, 4, 4]
    assert inv.batch_size_ == 4
    sizes.clear()
    inv.set_params(batch_size="auto").transform(x)   # "auto" again, resolved now
    assert sizes == [12]
    np.testing.assert_allclose(z_four, z_one, atol=1e-8)


def test_set_params_memory_budget_after_fit(monkeypatch):
    """``batch_size="auto"`` is resolved from the current ``memory_budget``."""
    from flipad_sklearn.lasso.solvers import bytes_per_sample
    layer, x = _problem()
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, precision="float64").fit(x)
    per_sample = bytes_per_sample(inv.operator_, "float64")
    sizes = _counting_solve(monkeypatch)
    inv.set_params(memory_budget=5 * per_sample).transform(x)
    assert sizes == [5, 5, 2]


def test_dask_recipe_spreads_batches_after_set_params():
    """scaling.rst, as written: fit, then ``set_params(n_jobs=-1, batch_size=...)``
    and transform under ``joblib.parallel_backend("dask")``; every batch is a
    task on the cluster (before, the fitted one-batch size sent none there)."""
    distributed = pytest.importorskip("distributed")
    layer, x = _problem()
    inv = FinalLayerInverter(layer=layer, alpha=1e-2, precision="float64").fit(x)
    z_ref = inv.transform(x)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        inv.set_params(n_jobs=-1, batch_size=3)
        with distributed.get_task_stream(client) as stream, \
                joblib.parallel_backend("dask"):
            z = inv.transform(x)
        workers = {task["worker"] for task in stream.data}
    # joblib may group calls into one task; with 4 batches and 2 workers it
    # sends at least one task to each
    assert len(stream.data) >= 2
    assert len(workers) == 2
    np.testing.assert_allclose(z, z_ref, atol=1e-8)
