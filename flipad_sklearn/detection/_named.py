"""Meta-estimators over named detectors: ``estimators`` as a dict or (name, estimator) pairs.

:class:`~flipad_sklearn.OwnedModelsAttributor` and
:class:`~flipad_sklearn.ConformalUnion` both take their detectors by name
and expose them to ``get_params`` / ``set_params`` as ``<name>`` and
``<name>__<param>`` (so ``GridSearchCV`` and ``clone`` reach inside).
"""


def named(estimators):
    """``[(name, estimator), ...]`` from a dict or a list of pairs."""
    if isinstance(estimators, dict):
        return list(estimators.items())
    try:
        pairs = [tuple(p) for p in estimators]
    except TypeError:
        pairs = None
    if pairs is None or not all(len(p) == 2 for p in pairs):
        raise TypeError("estimators must be a dict {name: estimator} or a list of "
                        "(name, estimator) pairs.")
    return pairs


class NamedEstimatorsMixin:
    """``get_params`` / ``set_params`` with every named estimator's parameters."""

    def get_params(self, deep=True):
        """Parameters, with ``<name>`` and ``<name>__<param>`` of every named estimator.

        Parameters
        ----------
        deep : bool, default=True

        Returns
        -------
        params : dict
        """
        out = super().get_params(deep=False)
        if not deep:
            return out
        try:
            pairs = named(self.estimators)
        except TypeError:  # validated in fit
            pairs = []
        for name, est in pairs:
            out[name] = est
            if hasattr(est, "get_params") and not isinstance(est, type):
                for key, value in est.get_params(deep=True).items():
                    out[f"{name}__{key}"] = value
        return out

    def set_params(self, **params):
        """Set parameters; ``<name>`` replaces an estimator, ``<name>__<p>`` sets inside it.

        Parameters
        ----------
        **params : dict

        Returns
        -------
        self
        """
        if "estimators" in params:
            self.estimators = params.pop("estimators")
        if not params:
            return self
        try:
            pairs = named(self.estimators)
        except TypeError:  # validated in fit
            pairs = []
        names = [n for n, _ in pairs]
        replaced, nested, own = {}, {}, {}
        for key, value in params.items():
            head, sep, rest = key.partition("__")
            if head in names and not sep:
                replaced[head] = value
            elif head in names:
                nested.setdefault(head, {})[rest] = value
            else:
                own[key] = value
        if replaced:
            pairs = [(n, replaced.get(n, e)) for n, e in pairs]
            self.estimators = dict(pairs) if isinstance(self.estimators, dict) \
                else [(n, e) for n, e in pairs]
        for name, sub in nested.items():
            dict(pairs)[name].set_params(**sub)
        return super().set_params(**own) if own else self

    def _check_names(self, reserved=()):
        """The (name, estimator) pairs, names unique and usable as parameter prefixes."""
        pairs = named(self.estimators)
        if not pairs:
            raise ValueError("estimators is empty: give at least one detector.")
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"Names must be unique, got {names}.")
        params = set(self._get_param_names())
        for n in names:
            if not isinstance(n, str) or "__" in n or n in params or n in reserved:
                raise ValueError(
                    f"Name {n!r} is not usable: names must be strings without '__', other "
                    f"than the parameters {sorted(params)}"
                    + (f" and {sorted(reserved)}" if reserved else "") + ".")
        return pairs
