"""A Gaussian model of G's samples with a shrunk covariance: a typicality score.

Deep SAD, trained with labelled others, learns what separates G from *them*;
nothing in it rejects what lies far from all of G's samples (issue 32: on the
published face DCGAN, digits of another domain resized to 64x64 were accepted
as G's at fnr 0.005).  A plain Gaussian of G's downsampled pixels, fitted on
G alone, rejects them (both measured in ``benchmarks/results/
bench_open_world_face.md``).  With more dimensions than samples the sample
covariance is singular; Ledoit and Wolf's shrinkage towards a scaled
identity makes it invertible, with the amount of shrinkage estimated from
the data.
"""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import flatten_images

__all__ = ["GaussianDensity"]

# eigenvalues below this share of the largest count as this share of it:
# keeps the precision finite when G's samples are degenerate (constant pixels)
_EIG_FLOOR = 1e-10


class GaussianDensity(BaseEstimator):
    """Gaussian log-density with a Ledoit-Wolf shrunk covariance.

    A density estimator in scikit-learn's sense (like
    :class:`~sklearn.neighbors.KernelDensity`): ``score_samples`` is the
    log-density of each sample (higher = more typical of the training
    samples).  Wrapped in :class:`~flipad_sklearn.ConformalDetector`
    (``estimator="gaussian"``) it is thresholded at a false-negative rate;
    :func:`~flipad_sklearn.make_pixel_guard` applies it to G's downsampled
    pixels.

    Parameters
    ----------
    shrinkage : "ledoit_wolf" or float in [0, 1], default="ledoit_wolf"
        Weight of the scaled identity in the covariance,
        ``(1 - s) S + s tr(S)/d I``: estimated from the data (Ledoit and
        Wolf 2004), or given.

    Attributes
    ----------
    location_ : ndarray of shape (n_features,)
        Mean of the training samples.
    precision_ : ndarray of shape (n_features, n_features)
        Inverse of the shrunk covariance.
    log_det_ : float
        Log-determinant of the shrunk covariance.
    shrinkage_ : float
        The shrinkage used.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import GaussianDensity
    >>> X = np.random.default_rng(0).normal(size=(100, 3))
    >>> g = GaussianDensity().fit(X)
    >>> bool(g.score_samples([[0.0, 0.0, 0.0]])[0] > g.score_samples([[5.0, 5.0, 5.0]])[0])
    True
    """

    _parameter_constraints = {
        "shrinkage": [StrOptions({"ledoit_wolf"}), Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, shrinkage="ledoit_wolf"):
        self.shrinkage = shrinkage

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the mean and the shrunk covariance.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : ignored

        Returns
        -------
        self : GaussianDensity
        """
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.location_ = X.mean(axis=0)
        Xc = X - self.location_
        d = X.shape[1]
        with np.errstate(over="ignore", invalid="ignore"):
            emp = Xc.T @ Xc / X.shape[0]
        if not np.isfinite(emp).all():
            raise ValueError("The covariance of X overflows float64 (values up to "
                             f"{np.abs(X).max():.3g}): rescale the features.")
        mu = np.trace(emp) / d
        if self.shrinkage == "ledoit_wolf":
            s = float(ledoit_wolf_shrinkage(Xc, assume_centered=True)) if mu > 0 else 1.0
        else:
            s = float(self.shrinkage)
        cov = (1.0 - s) * emp
        cov.flat[::d + 1] += s * mu
        w, V = np.linalg.eigh(cov)
        # relative to the largest eigenvalue (scale-free: features in other units keep
        # their ranking); 1 only when every sample is the same
        top = float(w[-1])
        w = np.maximum(w, _EIG_FLOOR * (top if top > 0 else 1.0))
        self.precision_ = (V / w) @ V.T
        self.precision_ = 0.5 * (self.precision_ + self.precision_.T)
        self.log_det_ = float(np.sum(np.log(w)))
        self.shrinkage_ = s
        return self

    def mahalanobis(self, X):
        """Squared Mahalanobis distance of each sample to ``location_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        dist : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        Xc = X - self.location_
        # float64 throughout: a batch's BLAS path moves a score by ~1e-15 relative,
        # far inside the conformal threshold's tie margin
        return np.einsum("ij,ij->i", Xc @ self.precision_, Xc)

    def score_samples(self, X):
        """Log-density of each sample under the fitted Gaussian.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        m = self.mahalanobis(X)
        return -0.5 * (m + self.log_det_ + self.n_features_in_ * np.log(2 * np.pi))

    def score(self, X, y=None):
        """Mean log-density of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : ignored

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))
