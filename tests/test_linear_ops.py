"""The channels-last view of convolutional operators (what FISTA runs on, on CPU)."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn.lasso import fista, solve_batch
from flipad_sklearn.operators import ChannelsLastOperator, LayerOperator


def _transposed_layers():
    out = []
    for k, s, p, op, d in itertools.product((1, 3, 4), (1, 2, 3), (0, 2), (0, 1), (1, 2)):
        if op >= max(s, d):
            continue
        out.append(((5, 2, (k, 2)), dict(stride=(s, 1), padding=(p, 0),
                                         output_padding=(op, 0), dilation=(d, 1))))
    return out


LAYERS = (
    [("convT", a, kw) for a, kw in _transposed_layers()]
    + [("convT", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
       ("conv", (4, 6, 3), dict(stride=2, padding=1)),
       ("conv", (4, 6, 3), dict(padding="same", dilation=2, groups=2))]
)


def _operator(kind, args, kw, shape=(None, 6, 5)):
    torch.manual_seed(0)
    layer = (nn.ConvTranspose2d if kind == "convT" else nn.Conv2d)(*args, **kw).double()
    return LayerOperator.from_layer(layer, (args[0],) + shape[1:])


@pytest.mark.parametrize("kind, args, kw", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_view_matches_the_operator(kind, args, kw, dtype):
    op = _operator(kind, args, kw)
    cl = ChannelsLastOperator(op)
    gen = torch.Generator().manual_seed(1)
    d = torch.randn((3, op.n_inputs), generator=gen, dtype=dtype)
    r = torch.randn((3, op.n_outputs), generator=gen, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(cl.matvec(cl.to_native_inputs(d)),
                               cl.to_native_outputs(op.matvec(d)), atol=tol, rtol=tol)
    torch.testing.assert_close(cl.rmatvec(cl.to_native_outputs(r)),
                               cl.to_native_inputs(op.rmatvec(r)), atol=tol, rtol=tol)
    assert torch.equal(cl.from_native_inputs(cl.to_native_inputs(d)), d)


def test_channels_last_view_is_a_permutation():
    op = _operator("convT", (3, 2, 4), dict(stride=2, padding=1))
    cl = ChannelsLastOperator(op)
    idx = torch.arange(op.n_inputs, dtype=torch.float64)[None]
    perm = cl.to_native_inputs(idx)[0]
    assert sorted(perm.tolist()) == idx[0].tolist()
    c, h, w = op.input_shape
    # first native entries are the channels of pixel (0, 0)
    assert perm[:c].tolist() == [float(k * h * w) for k in range(c)]


def test_channels_last_view_rejects_linear_layers():
    op = LayerOperator.from_layer(nn.Linear(4, 3), (4,))
    with pytest.raises(ValueError, match="convolutional"):
        ChannelsLastOperator(op)


@pytest.mark.parametrize("positive", [False, True])
def test_solve_batch_on_the_view_equals_fista_on_the_operator(positive):
    """solve_batch permutes in and out: same iterates as FISTA on the plain layout."""
    op = _operator("convT", (4, 3, 4), dict(stride=2, padding=1))
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(3, op.n_outputs))
    lower = -0.2 * np.ones(op.n_inputs) if positive else None
    L = op.lipschitz()
    kw = dict(tol=1e-9, max_iter=400, dtype=torch.float64)
    D, primal, gap, n_iter = solve_batch(op, Y, 1e-2, solver="fista", lower=lower,
                                         lipschitz=L, continuation=False, **kw)
    low = None if lower is None else torch.from_numpy(lower)
    d2, p2, g2, n2 = fista(op, torch.from_numpy(Y), 1e-2, L, lower=low, **kw)
    np.testing.assert_allclose(D, d2.numpy(), atol=1e-10)
    np.testing.assert_allclose(primal, p2.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(n_iter, n2.numpy())
