"""The methods of the attribution benchmark: name -> factory, input kind, supervision.

Every factory takes a :class:`Context` (G, its anchor, the part's config,
the replicate's seed) and returns an unfitted estimator with
``fit(X, y)`` and ``score_samples`` (higher = more like G) whose detector
step has ``validation_scores_``.

Input kinds:

* ``"features"``: FLIPAD's pipeline.  The factory returns the whole
  pipeline from images; ``estimator[1:]`` is the part after the inversion,
  which a part fits on activations it inverted once (:func:`after_inversion`)
  with :func:`inverter`: the inversion *and the pipeline's input contract*
  (8-bit rounding), so such a part scores what the whole pipeline scores.
* ``"pixels"``: fitted on the images themselves.
* ``"generator"``: fitted on images, and needs G itself (latent inversion).

``supervised=False`` methods ignore the labelled negatives (y = -1), so
their numbers are the same under every protocol and are computed once.
"""

from dataclasses import dataclass

from flipad_sklearn import (
    FingerprintCorrelation,
    LatentInversionDistance,
    make_dctpad,
    make_flipad,
    make_rawpad,
)

from .attribution_protocol import FNRS


@dataclass
class Context:
    """What a factory may use: G, its anchor, the part's config, a seed."""

    G: object
    anchor: object
    cfg: dict
    random_state: int = 0

    @property
    def deep_sad(self):
        """Deep SAD parameters: the config's ``deep_sad`` (None: the
        detector's defaults) with its ``validation_fraction``."""
        return dict(self.cfg["deep_sad"] or {},
                    validation_fraction=self.cfg["validation_fraction"])


@dataclass(frozen=True)
class Method:
    name: str
    factory: object
    input: str
    supervised: bool

    def build(self, ctx):
        return self.factory(ctx)


def _flipad(detector=None):
    def factory(ctx):
        c = ctx.cfg
        # tol / max_iter None: the inverter's defaults
        budget = {k: c[k] for k in ("tol", "max_iter") if c.get(k) is not None}
        pipe = make_flipad(ctx.G.final_layer, "tanh", ctx.anchor, alpha=c["alpha"],
                           kernel_size=c["kernel_size"], fnr=FNRS[0],
                           random_state=ctx.random_state, device="cpu", detector=detector,
                           detector_params=ctx.deep_sad, **budget)
        if detector is not None:
            pipe[-1].set_params(validation_fraction=c["validation_fraction"])
        return pipe
    return factory


def _rawpad(ctx):
    return make_rawpad(fnr=FNRS[0], random_state=ctx.random_state, device="cpu",
                       detector_params=ctx.deep_sad)


def _dctpad(ctx):
    return make_dctpad(fnr=FNRS[0], random_state=ctx.random_state, device="cpu",
                       detector_params=ctx.deep_sad)


def _fingerprint(ctx):
    return FingerprintCorrelation(fnr=FNRS[0], validation_fraction=ctx.cfg["validation_fraction"],
                                  random_state=ctx.random_state)


def _latent(ctx):
    c = ctx.cfg
    return LatentInversionDistance(ctx.G, n_steps=c["latent_steps"], lr=c["latent_lr"],
                                   fnr=FNRS[0], validation_fraction=c["validation_fraction"],
                                   random_state=ctx.random_state)


REGISTRY = {m.name: m for m in (
    Method("FLIPAD", _flipad(), "features", True),
    Method("FLIPAD+IForest", _flipad("iforest"), "features", False),
    Method("FLIPAD+OCSVM", _flipad("ocsvm"), "features", False),
    Method("RAWPAD", _rawpad, "pixels", True),
    Method("DCTPAD", _dctpad, "pixels", True),
    Method("Fingerprint", _fingerprint, "pixels", False),
    Method("LatentInversion", _latent, "generator", False),
)}
UNSUPERVISED = frozenset(name for name, m in REGISTRY.items() if not m.supervised)


def build(name, ctx, *, inverted=False, registry=None):
    """An unfitted estimator of method ``name`` (looked up in ``registry``,
    default :data:`REGISTRY`).  ``inverted``: for a ``"features"`` method,
    only the steps after the inversion."""
    registry = REGISTRY if registry is None else registry
    est = registry[name].build(ctx)
    return after_inversion(est) if inverted and registry[name].input == "features" else est


def after_inversion(pipe):
    """FLIPAD's pipeline without its inversion step (fitted on activations)."""
    return pipe[1:]


def inverter(ctx, registry=None):
    """FLIPAD's inversion for ``ctx`` with its pipeline's input contract.

    ``pipe[:1]``: a :class:`~flipad_sklearn.ConformalPipeline` holding the
    inversion step and the pipeline's ``input_range`` / ``quantize``, so the
    images a part inverts once are rounded to 8 bits exactly as the whole
    pipeline rounds them (``pipe[0]`` alone would invert the floats).  Its
    ``[0]`` is the inverter (``objective_``, ``inverse_transform``).
    """
    return (REGISTRY if registry is None else registry)["FLIPAD"].build(ctx)[:1]
