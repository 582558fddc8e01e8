"""Shared toy data: activation-like features of "G" and of "other" sources."""

import os

import numpy as np
import pytest


def pytest_configure(config):
    # one BLAS/OpenMP thread per worker: the workers already take every core
    # (set before the workers start, which inherit it)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def make_activations(n, shape=(4, 6, 6), shift=0.0, seed=0):
    """ReLU'd Gaussian maps; ``shift`` moves the mean of the first two channels."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, *shape))
    A[:, :2] += shift
    return np.maximum(A, 0).reshape(n, -1)


@pytest.fixture
def toy_labelled():
    """300 samples of G (y=1) and 150 of others (y=-1), flat (4, 6, 6) activations."""
    X = np.vstack([make_activations(300, seed=1), make_activations(150, shift=1.0, seed=2)])
    y = np.r_[np.ones(300, dtype=int), -np.ones(150, dtype=int)]
    return X, y, (4, 6, 6)


@pytest.fixture(scope="session", autouse=True)
def torch_single_thread():
    """One intra-op torch thread for the whole suite.

    On 2 shared cores, torch's default of one thread per core makes the tiny
    networks of the tests 10-50x slower (threads spin waiting for each other)
    whenever another process is busy.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
