"""Tabular generators of other model families: the "others" of the tabular benchmark.

FLIPAD attributes rows to one KL-WGAN; an open-world test needs rows from
generators that are not neural networks of G's family at all.  Two classical
synthesisers, both fitted to a table and sampled reproducibly:

* :class:`GaussianMixtureGenerator`: a Gaussian mixture of the rows
  (scikit-learn's EM), the usual density-model baseline;
* :class:`GaussianCopulaGenerator`: each column's empirical distribution
  joined by a Gaussian copula (the normal-scores correlation), the classic
  synthetic-data method behind e.g. SDV's GaussianCopula.

Both are scikit-learn estimators (``fit(X)`` then ``sample(n, random_state)``)
that draw from a local ``numpy.random.Generator``: no global RNG is touched.
"""

from numbers import Integral, Real

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._common import latent_seed


def _check_n(n):
    if not isinstance(n, Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    return int(n)


class GaussianMixtureGenerator(BaseEstimator):
    """Synthetic rows from a Gaussian mixture fitted to a table.

    Parameters
    ----------
    n_components : int, default=5
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    random_state : int, RandomState instance or None, default=None
        Seeds the EM initialisation (sampling takes its own seed).

    Attributes
    ----------
    mixture_ : sklearn.mixture.GaussianMixture
        The fitted mixture.
    n_features_in_ : int

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_wine_quality
    >>> from flipad_sklearn.generators import GaussianMixtureGenerator
    >>> X = load_wine_quality().data
    >>> gen = GaussianMixtureGenerator(random_state=0).fit(X)
    >>> gen.sample(3, random_state=0).shape
    (3, 11)
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "random_state": ["random_state"],
    }

    def __init__(self, n_components=5, covariance_type="full", random_state=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the mixture to the rows of ``X`` (finite values; ``y`` is ignored)."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(f"n_components={self.n_components} needs at least as many rows, "
                             f"got {X.shape[0]}.")
        self.mixture_ = GaussianMixture(self.n_components, covariance_type=self.covariance_type,
                                        random_state=self.random_state).fit(X)
        return self

    def sample(self, n, random_state=None):
        """Draw ``n`` rows.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator: the same seed gives the same rows.

        Returns
        -------
        X : ndarray of shape (n, n_features_in_), float32
        """
        check_is_fitted(self)
        n = _check_n(n)
        rng = np.random.default_rng(latent_seed(random_state))
        gm, d = self.mixture_, self.n_features_in_
        comp = rng.choice(gm.n_components, size=n, p=gm.weights_)
        # lower Cholesky factor of each component's covariance
        cov = {"full": lambda k: gm.covariances_[k],
               "tied": lambda k: gm.covariances_,
               "diag": lambda k: np.diag(gm.covariances_[k]),
               "spherical": lambda k: gm.covariances_[k] * np.eye(d)}[gm.covariance_type]
        out = np.empty((n, d))
        for k in range(gm.n_components):
            idx = np.flatnonzero(comp == k)
            if len(idx):
                chol = np.linalg.cholesky(cov(k))
                out[idx] = gm.means_[k] + rng.standard_normal((len(idx), d)) @ chol.T
        return out.astype(np.float32)


class GaussianCopulaGenerator(BaseEstimator):
    """Synthetic rows from the columns' empirical distributions and a Gaussian copula.

    Fitting maps every column to normal scores through its (mid-rank)
    empirical distribution function and estimates their correlation.
    Sampling draws correlated normals and maps them back through each column's
    empirical quantile function, linearly interpolated between the observed
    values: the marginals match the data's, the dependence is Gaussian.

    Parameters
    ----------
    shrinkage : float in [0, 1], default=0.0
        Shrinks the normal-scores correlation towards the identity (a ridge
        for small tables with near-collinear columns).

    Attributes
    ----------
    quantiles_ : list of ndarray
        The sorted values of each column.
    correlation_ : ndarray of shape (n_features_in_, n_features_in_)
        Correlation of the normal scores (after shrinkage).
    n_features_in_ : int

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_wine_quality
    >>> from flipad_sklearn.generators import GaussianCopulaGenerator
    >>> X = load_wine_quality().data
    >>> GaussianCopulaGenerator().fit(X).sample(3, random_state=0).shape
    (3, 11)
    """

    _parameter_constraints = {
        "shrinkage": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, shrinkage=0.0):
        self.shrinkage = shrinkage

    def fit(self, X, y=None):
        """Fit marginals and copula to the rows of ``X`` (``y`` is ignored)."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        n, d = X.shape
        self.quantiles_ = [np.sort(X[:, j]) for j in range(d)]
        # mid-rank normal scores (ties share the mean rank) keep them finite
        scores = np.empty_like(X)
        for j in range(d):
            order = np.argsort(X[:, j], kind="stable")
            ranks = np.empty(n)
            ranks[order] = np.arange(1, n + 1)
            _, inv, counts = np.unique(X[:, j], return_inverse=True, return_counts=True)
            mean_rank = np.bincount(inv, weights=ranks) / counts
            scores[:, j] = ndtri(mean_rank[inv] / (n + 1))
        # constant columns (zero spread) are made independent of the others
        centred = scores - scores.mean(axis=0)
        norms = np.linalg.norm(centred, axis=0)
        centred[:, norms > 0] /= norms[norms > 0]
        corr = centred.T @ centred
        np.fill_diagonal(corr, 1.0)
        self.correlation_ = (1 - self.shrinkage) * corr + self.shrinkage * np.eye(d)
        return self

    def sample(self, n, random_state=None):
        """Draw ``n`` rows.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator: the same seed gives the same rows.

        Returns
        -------
        X : ndarray of shape (n, n_features_in_), float32
        """
        check_is_fitted(self)
        n = _check_n(n)
        rng = np.random.default_rng(latent_seed(random_state))
        d = self.n_features_in_
        # eigh, not Cholesky: a rank-deficient correlation still samples
        w, v = np.linalg.eigh(self.correlation_)
        root = v * np.sqrt(np.clip(w, 0.0, None))
        u = ndtr(rng.standard_normal((n, d)) @ root.T)
        out = np.empty((n, d))
        for j, q in enumerate(self.quantiles_):
            # the empirical quantile function, interpolated between order statistics
            out[:, j] = np.interp(u[:, j] * (len(q) - 1), np.arange(len(q)), q)
        return out.astype(np.float32)
