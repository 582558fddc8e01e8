"""SDVSynthesizer: TVAE / CTGAN / CopulaGAN from sdv as tabular "others" (optional extra)."""

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

pytest.importorskip("sdv")

from flipad_sklearn.generators import SDV_KINDS, SDVSynthesizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 2.0, n)
    return np.c_[a, 0.5 * a + rng.normal(0, 0.1, n), rng.exponential(30.0, n)]


@pytest.fixture(scope="module")
def fitted():
    X = _table()
    return X, {k: SDVSynthesizer(k, epochs=2, batch_size=60, random_state=0).fit(X)
               for k in SDV_KINDS}


@pytest.mark.parametrize("kind", SDV_KINDS)
def test_sample_shape_order_units_and_seed(fitted, kind):
    X, gens = fitted
    g = gens[kind]
    a = g.sample(50, random_state=1)
    assert a.shape == (50, 3) and a.dtype == np.float32
    # same seed, same rows; another seed, other rows
    np.testing.assert_array_equal(a, g.sample(50, random_state=1))
    assert not np.allclose(a, g.sample(50, random_state=2))
    # columns in the order and units of X (enforce_min_max_values keeps them in range)
    assert np.all(a >= X.min(axis=0) - 1e-4) and np.all(a <= X.max(axis=0) + 1e-4)
    assert a[:, 2].mean() > a[:, 0].mean() > a[:, 1].mean()
    assert g.sample(0).shape == (0, 3)


def test_fit_is_seeded_and_leaves_global_rngs_alone():
    X = _table(80)
    torch.manual_seed(123)
    np.random.seed(123)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = SDVSynthesizer("tvae", epochs=1, batch_size=40, random_state=3).fit(X)
    assert torch.equal(torch.get_rng_state(), t_state)
    np.testing.assert_array_equal(np.random.get_state()[1], n_state)
    b = SDVSynthesizer("tvae", epochs=1, batch_size=40, random_state=3).fit(X)
    np.testing.assert_allclose(a.sample(20, random_state=0), b.sample(20, random_state=0))


def test_bad_input():
    with pytest.raises(ValueError, match="kind"):
        SDVSynthesizer("vae").fit(_table())
    with pytest.raises(ValueError, match="NaN|infinity"):
        SDVSynthesizer(epochs=1).fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    g = SDVSynthesizer("tvae", epochs=1, batch_size=40, random_state=0).fit(_table(40))
    with pytest.raises(ValueError, match="non-negative integer"):
        g.sample(-1)


# a tiny TVAE, one epoch: the checks fit it about 25 times (about 0.4 s a fit, most of it
# sdv's per-column mode-specific normalisation)
@parametrize_with_checks([SDVSynthesizer(
    "tvae", epochs=1, batch_size=10, random_state=0,
    synthesizer_params=dict(embedding_dim=4, compress_dims=(4,), decompress_dims=(4,)))])
def test_sklearn_compatible(estimator, check):
    check(estimator)
