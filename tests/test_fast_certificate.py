"""The cheap parts of a solve: float32 checks, FFT float64 products, padding fills.

Each must give the same answer as the slow path it replaces: products equal
to the layer, a zeroed padding equal to the mask, and certificates that
still bound the suboptimality against cvxpy.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.lasso import Certificate, L1Penalty
from flipad_sklearn.operators import spectral
from flipad_sklearn.lasso.certificate import FastProducts
from flipad_sklearn.operators.embedding import periodic_embedding
from flipad_sklearn.operators.spectral import SpectralProducts
from flipad_sklearn.operators import ChannelsLastOperator, LayerOperator

from test_solvers import CONV_LAYERS, _outputs


def _op(name, seed=0):
    torch.manual_seed(seed)
    factory, shape = CONV_LAYERS[name]
    return LayerOperator.from_layer(factory().double(), shape), shape


@pytest.mark.parametrize("name", sorted(CONV_LAYERS))
def test_spectral_products_equal_the_layer(name):
    """W d and Wᵀ r by FFT equal the direct float64 convolutions to rounding."""
    op, _ = _op(name)
    sp = SpectralProducts(op)
    gen = torch.Generator().manual_seed(1)
    # more samples than one FFT chunk, so the chunking is exercised
    n = spectral._SAMPLES_PER_CHUNK + 3
    d = torch.randn((n, op.n_inputs), generator=gen, dtype=torch.float64)
    r = torch.randn((n, op.n_outputs), generator=gen, dtype=torch.float64)
    ref_mv, ref_rmv = op.matvec(d), op.rmatvec(r)
    assert sp.matvec(d).shape == ref_mv.shape and sp.rmatvec(r).shape == ref_rmv.shape
    assert float((sp.matvec(d) - ref_mv).abs().max()) <= 1e-12 * float(ref_mv.abs().max())
    assert float((sp.rmatvec(r) - ref_rmv).abs().max()) <= 1e-12 * float(ref_rmv.abs().max())


def test_exact_products_takes_the_fft_only_where_it_wins(monkeypatch):
    cpu = torch.device("cpu")
    conv3 = LayerOperator.from_layer(nn.Conv2d(8, 3, 3, padding=1), (8, 6, 6))
    assert isinstance(conv3.exact_products(cpu), SpectralProducts)
    assert conv3.exact_products(cpu) is conv3.exact_products(cpu)          # cached
    for other in (LayerOperator.from_layer(nn.Conv2d(8, 3, 1), (8, 6, 6)),
                  LayerOperator.from_layer(nn.Conv2d(8, 3, 3, stride=2), (8, 7, 7)),
                  LayerOperator.from_layer(nn.ConvTranspose2d(8, 3, 4, 2, 1), (8, 4, 4)),
                  LayerOperator.from_layer(nn.Linear(5, 3), (5,))):
        assert other.exact_products(cpu) is other
    monkeypatch.setattr(spectral, "SPECTRAL_MAX_BYTES", 1000)
    big = LayerOperator.from_layer(nn.Conv2d(8, 3, 3, padding=1), (8, 6, 6))
    assert big.exact_products(cpu) is big


@pytest.mark.parametrize("name", sorted(CONV_LAYERS))
def test_zero_padding_is_the_free_mask(name):
    op, _ = _op(name)
    emb = periodic_embedding(op)
    gen = torch.Generator().manual_seed(2)
    x = emb.extend(torch.randn((2, emb.cin) + emb.N, generator=gen, dtype=torch.float64))
    x = x.contiguous(memory_format=torch.channels_last)
    want = x * emb.extend(emb.free_mask().to(torch.float64))
    got = emb.zero_padding_(x.clone(memory_format=torch.channels_last))
    assert torch.equal(got, want)


@pytest.mark.parametrize("use_view", [True, False])       # False: the CUDA set-up
@pytest.mark.parametrize("positive", [False, True])
def test_float32_check_on_a_channels_last_view_equals_the_float64_check(positive, use_view):
    """The fast check takes a strided (B, C, H, W) view: same values as float64 on flat."""
    op, shape = _op("conv_s1")
    gen = torch.Generator().manual_seed(3)
    y = torch.randn((3, op.n_outputs), generator=gen, dtype=torch.float64)
    lower = -torch.full((op.n_inputs,), 0.2, dtype=torch.float64) if positive else None
    pen = L1Penalty(1e-2, lower)
    big = torch.rand((3, shape[0], shape[1] + 2, shape[2] + 3), generator=gen)
    big = big.contiguous(memory_format=torch.channels_last)
    view = big[:, :, 1:1 + shape[1], 2:2 + shape[2]]             # not contiguous
    assert not view.is_contiguous()
    fast = Certificate(op, y, pen, tol=1e-12,
                       fast=FastProducts(op, ChannelsLastOperator(op) if use_view else None))
    slow = Certificate(op, y, pen, tol=1e-12)
    fast.check(5, view)
    slow.check(5, view.reshape(3, -1).double())
    np.testing.assert_allclose(fast.primal, slow.primal, rtol=1e-6)
    np.testing.assert_allclose(fast.best_dual, slow.best_dual, rtol=1e-5)
    assert fast.d.dtype == torch.float32                        # best iterates kept in float32
    np.testing.assert_array_equal(fast.results()[0], slow.results()[0])
    assert fast.results()[0].dtype == torch.float64


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name,solver", [("conv_s1", "split_admm"), ("convT_s2", "admm"),
                                         ("conv_s2", "fista"), ("convT_groups_op", "split_admm")])
def test_default_float32_certificate_bounds_the_suboptimality(name, solver, positive):
    """Float32 iterations, float32 checks, exact float64 finish: a valid bound vs cvxpy."""
    torch.manual_seed(0)
    factory, shape = CONV_LAYERS[name]
    layer = factory().double()
    x = _outputs(layer, shape, n=4)
    common = dict(layer=layer, alpha=1e-2, activation_shape=shape, positive=positive,
                  anchor=np.full(shape, 0.2))
    ref = FinalLayerInverter(solver="cvxpy", **common).fit(x)
    ref.transform(x)
    inv = FinalLayerInverter(solver=solver, tol=1e-4, max_iter=60, **common).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        inv.transform(x)
    excess = inv.objective_ - ref.objective_
    assert np.all(np.isfinite(inv.duality_gap_))
    assert np.all(inv.duality_gap_ >= excess - 1e-9 * np.abs(ref.objective_))
    assert np.all(excess >= -1e-9 * np.abs(ref.objective_))


@pytest.mark.parametrize("final", [False, True])
def test_float32_screen_near_the_goal_is_decided_in_float64(final):
    """A row within FAST_SCREEN of feature_tol in float32 is finalised in float64: it goes
    on (or, at the last check, stops as max_iter) when the exact bound misses the goal."""
    from flipad_sklearn.lasso.certificate import FAST_SCREEN, MAX_ITER
    from flipad_sklearn.lasso.penalty import ElasticNetPenalty
    from flipad_sklearn.lasso.solve import solve_batch

    op, shape = _op("conv_s1")
    gen = torch.Generator().manual_seed(3)
    y = torch.randn((2, op.n_outputs), generator=gen, dtype=torch.float64)
    pen = ElasticNetPenalty(1e-2, 0.05)
    # an iterate near the solution (certified to about 1e-2), in float32
    D = solve_batch(op, y.numpy(), 1e-2, solver="fista", ridge=0.05, tol=None,
                    feature_tol=1e-2, dtype=torch.float64)[0]
    d = torch.from_numpy(D).float()
    exact = Certificate(op, y, pen, tol=None, feature_tol=1e9)
    exact.check(5, d.double())
    err = exact.feature_error(exact.gap, d.double(), torch.arange(2))
    assert torch.all(err < 0.1)
    tol = float(err.max()) / (1 + (FAST_SCREEN - 1) / 2)        # missed, but inside the screen
    fast = Certificate(op, y, pen, tol=None, feature_tol=tol, fast=FastProducts(op))
    done = fast.check(5, d, final=final)
    np.testing.assert_allclose(fast.gap, exact.gap, rtol=1e-4)   # the float64 gap is reported
    worst = int(err.argmax())
    assert bool(done[worst]) == final
    if final:
        assert int(fast.reason[worst]) == MAX_ITER
