"""The tabular generators of other families (the tabular benchmark's "others")."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.exceptions import NotFittedError

from flipad_sklearn.datasets import load_wine_quality
from flipad_sklearn.generators import GaussianCopulaGenerator, GaussianMixtureGenerator

GENERATORS = [GaussianMixtureGenerator, GaussianCopulaGenerator]
PARAMS = {GaussianMixtureGenerator: {"random_state": 0}, GaussianCopulaGenerator: {}}


@pytest.fixture(scope="module")
def wine():
    return load_wine_quality().data


@pytest.fixture(scope="module")
def fitted(wine):
    """Each generator fitted once to the wine table (EM takes a second or two)."""
    return {cls: cls(**PARAMS[cls]).fit(wine) for cls in GENERATORS}


@pytest.mark.parametrize("cls", GENERATORS, ids=lambda c: c.__name__)
def test_samples_follow_the_table(cls, fitted, wine):
    S = fitted[cls].sample(20000, random_state=0)
    assert S.shape == (20000, 11) and S.dtype == np.float32 and np.isfinite(S).all()
    # means within 0.05 standard deviations, rank correlations within 0.15
    assert np.abs((S.mean(0) - wine.mean(0)) / wine.std(0)).max() < 0.05
    assert np.abs(spearmanr(S).statistic - spearmanr(wine).statistic).max() < 0.15


@pytest.mark.parametrize("cls", GENERATORS, ids=lambda c: c.__name__)
def test_sampling_is_reproducible_and_local(cls, fitted):
    gen = fitted[cls]
    state = np.random.get_state()[1].copy()
    a, b, c = gen.sample(50, 3), gen.sample(50, 3), gen.sample(50, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert gen.sample(0, 0).shape == (0, 11)


def test_copula_keeps_the_marginals(wine):
    S = GaussianCopulaGenerator().fit(wine).sample(50000, random_state=1)
    for j in range(wine.shape[1]):
        assert S[:, j].min() >= wine[:, j].min() - 1e-6
        assert S[:, j].max() <= wine[:, j].max() + 1e-6
        q = [0.1, 0.25, 0.5, 0.75, 0.9]
        spread = wine[:, j].std()
        np.testing.assert_allclose(np.quantile(S[:, j], q), np.quantile(wine[:, j], q),
                                   atol=0.1 * spread)


def test_copula_recovers_a_known_correlation():
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal([0, 0], [[1, 0.7], [0.7, 1]], size=4000)
    X = np.c_[np.exp(z[:, 0]), z[:, 1] ** 3]           # monotone maps: same copula
    gen = GaussianCopulaGenerator().fit(X)
    assert gen.correlation_[0, 1] == pytest.approx(0.7, abs=0.03)
    assert GaussianCopulaGenerator(shrinkage=0.5).fit(X).correlation_[0, 1] == \
        pytest.approx(0.35, abs=0.02)


def test_copula_constant_column():
    X = np.c_[np.arange(10.0), np.ones(10)]
    S = GaussianCopulaGenerator().fit(X).sample(20, random_state=0)
    np.testing.assert_array_equal(S[:, 1], 1.0)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_mixture_covariance_types(cov, wine):
    Xs = (wine - wine.mean(0)) / wine.std(0)     # spherical components need one scale
    S = GaussianMixtureGenerator(3, covariance_type=cov, random_state=0).fit(Xs).sample(
        5000, random_state=0)
    assert np.abs(S.mean(0)).max() < 0.1
    assert np.abs(S.std(0) - 1).max() < 0.2


@pytest.mark.parametrize("cls", GENERATORS, ids=lambda c: c.__name__)
def test_bad_input(cls, fitted, wine):
    with pytest.raises(NotFittedError):
        cls().sample(3)
    bad = wine.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cls().fit(bad)
    gen = fitted[cls]
    for n in (-1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            gen.sample(n)


def test_parameter_validation(wine):
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianCopulaGenerator(shrinkage=1.5).fit(wine)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtureGenerator(covariance_type="banana").fit(wine)
    with pytest.raises(ValueError, match="needs at least as many rows"):
        GaussianMixtureGenerator(5).fit(wine[:3])
