"""Real tabular synthesisers from the ``sdv`` package as "others" (optional extra).

The authors' tabular attribution compares a KL-WGAN against the deep
synthesisers of the Synthetic Data Vault: TVAE (a variational autoencoder),
CTGAN (a conditional GAN with mode-specific normalisation) and CopulaGAN
(CTGAN on Gaussian-copula-transformed columns).  :class:`SDVSynthesizer`
wraps one of them as a scikit-learn estimator: ``fit(X)`` on a numeric table,
then ``sample(n, random_state)`` returns a float array with the columns of
``X`` in the same order and units (like the KL-WGAN's ``G.sample``, so
``G.standardize`` applies to both).

Install with ``pip install flipad-sklearn[sdv]``; everything runs on the CPU
and nothing is downloaded.  The synthesisers draw from torch's and numpy's
global RNGs: fitting and sampling seed them and restore them afterwards, so
the caller's random streams are left as they were.
"""

import contextlib
import random
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._common import latent_seed, seed_to_int

__all__ = ["SDV_KINDS", "SDVSynthesizer"]

#: The synthesisers :class:`SDVSynthesizer` wraps.
SDV_KINDS = ("tvae", "ctgan", "copulagan")


def _import_sdv():
    try:
        from sdv.metadata import Metadata
        from sdv.single_table import (
            CopulaGANSynthesizer,
            CTGANSynthesizer,
            TVAESynthesizer,
        )
    except ImportError as exc:  # pragma: no cover - exercised only without sdv
        raise ImportError(
            "SDVSynthesizer needs the optional 'sdv' package: "
            "pip install flipad-sklearn[sdv] (or pip install sdv).") from exc
    return Metadata, {"tvae": TVAESynthesizer, "ctgan": CTGANSynthesizer,
                      "copulagan": CopulaGANSynthesizer}


@contextlib.contextmanager
def _seeded_global_rngs(seed):
    """Seed python's, numpy's and torch's global RNGs; restore them on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SDVSynthesizer(BaseEstimator):
    """A TVAE, CTGAN or CopulaGAN synthesiser (``sdv``) fitted to a numeric table.

    Parameters
    ----------
    kind : {"tvae", "ctgan", "copulagan"}, default="tvae"
        Which SDV single-table synthesiser.
    epochs : int, default=100
        Training epochs (SDV's default is 300; on the 1 599 red-wine rows,
        100 epochs take about 10 s for TVAE and 30 s for CTGAN on one CPU
        thread).
    batch_size : int, default=500
        SDV's batch size; CTGAN and CopulaGAN need a multiple of their
        ``pac`` (10), so it is rounded down to one.
    random_state : int, RandomState instance or None, default=None
        Seeds the fit (the network's initialisation and batches).
    synthesizer_params : dict or None, default=None
        Further constructor arguments of the SDV synthesiser
        (``embedding_dim``, ``generator_dim``, ...).

    Attributes
    ----------
    synthesizer_ : sdv.single_table.BaseSingleTableSynthesizer
        The fitted SDV synthesiser.
    columns_ : list of str
        The column names it was fitted on (``"c0"``, ``"c1"``, ...).
    n_features_in_ : int

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_wine_quality
    >>> from flipad_sklearn.generators import SDVSynthesizer
    >>> X = load_wine_quality().data
    >>> gen = SDVSynthesizer("tvae", epochs=5, random_state=0).fit(X)  # doctest: +SKIP
    >>> gen.sample(3, random_state=0).shape  # doctest: +SKIP
    (3, 11)
    """

    _parameter_constraints = {
        "kind": [StrOptions(set(SDV_KINDS))],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 10, None, closed="left")],
        "random_state": ["random_state"],
        "synthesizer_params": [None, dict],
    }

    def __init__(self, kind="tvae", epochs=100, batch_size=500, random_state=None,
                 synthesizer_params=None):
        self.kind = kind
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.synthesizer_params = synthesizer_params

    def fit(self, X, y=None):
        """Fit the synthesiser to the rows of ``X`` (finite numbers; ``y`` is ignored).

        Returns
        -------
        self : SDVSynthesizer
        """
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        Metadata, classes = _import_sdv()
        import pandas as pd

        self.columns_ = [f"c{j}" for j in range(X.shape[1])]
        metadata = Metadata.load_from_dict({"tables": {"table": {"columns": {
            c: {"sdtype": "numerical"}
            for c in self.columns_}}}})
        batch = int(self.batch_size)
        if self.kind != "tvae":
            batch -= batch % 10     # CTGAN's pac = 10 samples per critic input
        params = dict(epochs=int(self.epochs), batch_size=batch, enable_gpu=False,
                      enforce_rounding=False)
        params.update(self.synthesizer_params or {})
        with _seeded_global_rngs(seed_to_int(self.random_state)):
            synth = classes[self.kind](metadata, **params)
            # sdv 2 takes {table name: DataFrame}
            synth.fit({"table": pd.DataFrame(X, columns=self.columns_)})
        self.synthesizer_ = synth
        return self

    def sample(self, n, random_state=None):
        """Draw ``n`` rows, columns in the order and units of the fitted ``X``.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None
            The same seed gives the same rows.

        Returns
        -------
        X : ndarray of shape (n, n_features_in_), float32
        """
        check_is_fitted(self)
        if not isinstance(n, Integral) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}.")
        if n == 0:
            return np.empty((0, self.n_features_in_), dtype=np.float32)
        seed = latent_seed(random_state)
        with _seeded_global_rngs(seed):
            # SDV seeds its model from a fixed seed on the first sample unless told
            # otherwise, and then continues that stream: restart from the caller's seed
            self.synthesizer_.reset_sampling()
            self.synthesizer_._set_random_state(seed)
            df = self.synthesizer_.sample(num_rows=int(n))
        if isinstance(df, dict):
            (df,) = df.values()
        return df[self.columns_].to_numpy(dtype=np.float32)
