"""The recipes, in one place: every ``make_*`` of the package.

:func:`make_flipad` (images), :func:`make_flipad_tabular` (table rows), and
the baselines' :func:`make_rawpad` (Deep SAD on raw pixels) and
:func:`make_dctpad` (Deep SAD on ``log |DCT|``), and :func:`make_pixel_guard`
(a one-class Gaussian of G's downsampled pixels, to join a FLIPAD pipeline in
a :class:`~flipad_sklearn.ConformalUnion`), and :func:`make_open_world_union`
(the three image detectors in one union).

Everything that builds the FLIPAD pipeline (the command line tool, the demo,
the README, the examples and the benchmarks) calls :func:`make_flipad`, so
there is one recipe: final-layer inversion
(:class:`~flipad_sklearn.FinalLayerInverter`), spatial pooling
(:class:`~flipad_sklearn.ActivationPooling`), channel selection
(:class:`~flipad_sklearn.ChannelSelector`), standardisation with G's own
statistics (:class:`~flipad_sklearn.GeneratorStandardScaler`) and the Deep SAD
detector (:class:`~flipad_sklearn.FLIPADDetector`) or a classic detector on
the same features.  Its defaults are those of the attribution benchmark.
"""

import warnings
from numbers import Integral

import numpy as np
import scipy.sparse
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if

from .activations import get_activation
from .detection.conformal import ConformalDecisionMixin, ThresholdWarning
from .detection.conformal_detector import ConformalDetector
from .detection.conformal_pipeline import UINT8_LEVELS, ConformalPipeline
from .detection.deepsad import FLIPADDetector
from .detection.gaussian_density import GaussianDensity
from .detection.union import ConformalUnion
from .features import ActivationPooling, ChannelSelector, DCTFeatures, GeneratorStandardScaler
from .generator_utils import mean_activation
from .inversion import FinalLayerInverter
from .operators import layer_adapter, operator_for
from .perturbations import RandomPerturbation, is_single_perturbation

__all__ = ["ImmunisedPipeline", "OPEN_WORLD_DCT_BLOCK", "OPEN_WORLD_SHARES", "TABULAR_DETECTOR",
           "TABULAR_RECIPE",
           "make_dctpad", "make_flipad", "make_flipad_tabular", "make_open_world_union",
           "make_pixel_guard", "make_rawpad"]

#: each detector's share of ``fnr`` in :func:`make_open_world_union` (set before the
#: face benchmarks measured the union, and kept since)
OPEN_WORLD_SHARES = {"flipad": 0.5, "dctpad": 0.3, "pixels": 0.2}
#: DCTPAD's ``block_size`` in :func:`make_open_world_union` with ``immunise``: JPEG's
#: blocks
OPEN_WORLD_DCT_BLOCK = 8


def make_flipad(layer, activation="tanh", anchor="zeros", *, alpha=5e-4,
                activation_shape=None, positive=False, datafit="preactivation", tol=None,
                max_iter=1000, pooling="max", kernel_size=2, n_channels=None, detector=None,
                fnr=0.005, random_state=None, device="auto", inverter_params=None,
                detector_params=None, quantize="auto", input_range="auto", immunise=None,
                verbose=0):
    """The FLIPAD pipeline: inversion, pooling, channel selection, scaling, detector.

    Trained on what it will score: for a generator of images (a tanh or
    sigmoid output) the pipeline rounds every input, at fit and at predict,
    to the 256 levels of the activation's range, i.e. it trains and scores on
    G's samples as they are published (8-bit PNG/JPEG/WebP files), so G's
    float outputs and G's saved images get the same verdict (on the demo GAN
    at fnr 0.005, G's images after an 8-bit PNG round trip were accepted
    0.000 of the time by a float-trained pipeline).  ``quantize=None`` keeps a
    float pipeline (for outputs that are never quantised); it then warns when
    given 8-bit images.  See :class:`~flipad_sklearn.ConformalPipeline`.

    Parameters
    ----------
    layer : torch.nn.Linear, Conv2d or ConvTranspose2d
        G's final layer.
    activation : str or callable, default="tanh"
        G's output activation (see :class:`~flipad_sklearn.FinalLayerInverter`).
    anchor : "zeros" or array-like, default="zeros"
        Typically :func:`~flipad_sklearn.mean_activation` of G; an array of
        the activation's shape ``(C, H, W)`` also fixes that shape.
    alpha, positive, tol, max_iter : see :class:`~flipad_sklearn.FinalLayerInverter`
    datafit : {"preactivation", "output"}, default="preactivation"
        The inversion's data term (see :class:`~flipad_sklearn.FinalLayerInverter`).
        ``"output"`` weighs it by the activation's slope: much steadier under
        JPEG and noise on saturated pixels, but it gives up what the most
        saturated pixels say about ``G`` (on the demo's 28x28 generators
        unseen / other-architecture accuracy 0.91 / 0.79 against 1.00; see
        the attribution benchmark).  No effect with an identity activation.
    activation_shape : tuple of int or None, default=None
        Shape of one penultimate activation; None: from ``anchor`` (when it
        is a ``(C, H, W)`` array) or ``(layer.in_features,)`` for a Linear layer.
    pooling : {"max", "avg", "center_crop", None}, default="max"
        :class:`~flipad_sklearn.ActivationPooling` method; None: no pooling.
    kernel_size : int, default=2
        Pooling window.
    n_channels : int or None, default=None
        Channels kept by :class:`~flipad_sklearn.ChannelSelector` (fitted on
        ``y``); None keeps all.
    detector : None, {"iforest", "ocsvm", "lof", "gaussian"} or estimator, default=None
        None: :class:`~flipad_sklearn.FLIPADDetector` (Deep SAD, MLP, at its
        defaults: the paper's Deep SAD alone when labelled others are given,
        with a one-class SVM guard when they are not, ``combine="auto"``).
        A conformal detector (one with the package's conformal rule, e.g. a
        configured :class:`~flipad_sklearn.FLIPADDetector` or a subclass of
        :class:`~flipad_sklearn.detection.conformal.ConformalDecisionMixin`):
        used as given, with its own ``fnr``, labelled others included.
        A string, another estimator with ``score_samples`` or a PyOD detector
        (``IForest()``, ``KNN()``, ...: scored with minus its
        ``decision_function``): wrapped in
        :class:`~flipad_sklearn.ConformalDetector` (fitted on G's samples
        only), whose parameters are checked here: an estimator with neither
        ``score_samples`` nor ``decision_function`` is refused at once.
    fnr : float, default=0.005
    random_state : int, RandomState instance or None, default=None
    device : {"auto", "cpu", "cuda"}, default="auto"
    inverter_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FinalLayerInverter` parameters.
    detector_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FLIPADDetector` parameters (Deep SAD only).
    quantize : {"auto", "uint8"} or None, default="auto"
        The input contract (:class:`~flipad_sklearn.ConformalPipeline`):
        ``"uint8"`` rounds inputs to the 256 levels of ``input_range`` before
        the inversion; None uses them as they are.  ``"auto"``: ``"uint8"``
        when ``input_range`` is known (tanh, sigmoid: images), else None
        (identity: tabular data, or pass ``input_range``).
    input_range : "auto", (float, float) or None, default="auto"
        The inputs' value range; ``"auto"``: the activation's (``(-1, 1)`` for
        tanh, ``(0, 1)`` for sigmoid, None for the identity or a custom one).
    immunise : None, "published" or transformer, default=None
        Immunisation against what happens to published images, with no
        perturbation named: at ``fit`` every training image (G's samples,
        the labelled others, and the held-out samples of G that set the
        threshold) first goes through a random perturbation; ``predict``
        scores images as they come.  The fnr guarantee then covers the
        mixture.  ``"published"``: a
        :class:`~flipad_sklearn.RandomPerturbation` of
        :func:`~flipad_sklearn.perturbations.published_mixture` (none, JPEG
        q 70-95, resize 0.9-1.1, centre crop 0.9-1.0, equal weights) seeded
        with ``random_state``; a transformer of images (a configured
        ``RandomPerturbation``, or one perturbation you know your images go
        through, e.g. ``JPEGCompression(quality=90)``) is used as given.
        None: no immunisation.  Measured on the image zoo
        (``benchmarks/results/published_zoo/published_immunise.md``): with
        shadow generators among the labelled others it keeps the clean
        accuracy and holds it under JPEG and resizing; with real images
        alone as the others it lets the unseen generator of G's
        architecture through.  Returns an
        :class:`ImmunisedPipeline`.
    verbose : int, default=0
        Progress on stderr, passed to the inverter (a bar over the samples
        inverted) and to the Deep SAD detector (a bar over the epochs); 0 is
        silent.  ``inverter_params`` / ``detector_params`` with their own
        ``verbose`` take precedence; a detector given as ``detector`` is used
        as it is.

    Returns
    -------
    pipeline : ConformalPipeline
        An :class:`ImmunisedPipeline` (a ``ConformalPipeline``) with
        ``immunise``.
        Steps ``inv``, ``pool`` (if pooling), ``select``, ``scaler``, ``det``;
        the detector's held-out samples of G fit none of them, so that the fnr
        guarantee holds for the whole pipeline.
        ``pipeline[:1]`` is the inversion alone (``pipeline[1:]`` can then be
        fitted on precomputed activations).

    Examples
    --------
    >>> from flipad_sklearn.pipeline import make_flipad
    >>> pipe = make_flipad(G.final_layer, "tanh", anchor)  # doctest: +SKIP
    >>> pipe.fit(X, y).predict(X_new)  # doctest: +SKIP
    """
    if activation_shape is None:
        if not (isinstance(anchor, str)) and np.ndim(anchor) > 1:
            activation_shape = tuple(np.shape(anchor))
        elif not layer_adapter(layer).image_output:
            activation_shape = layer_adapter(layer).infer_input_shape(layer, None)
        else:
            raise ValueError(
                "make_flipad needs the activation's shape for a convolutional final "
                "layer: pass activation_shape=(C, H, W) or an anchor array of that shape.")
    activation_shape = tuple(int(s) for s in activation_shape)
    if len(activation_shape) == 1:
        shape3 = (activation_shape[0], 1, 1)
    elif len(activation_shape) == 3:
        shape3 = activation_shape
    else:
        raise ValueError(f"activation_shape must be (K,) or (C, H, W), got {activation_shape}.")
    input_range, quantize = _input_contract(activation, input_range, quantize)
    immunise = _immunisation(immunise, layer, activation_shape, random_state)
    inv_params = dict(alpha=alpha, positive=positive, datafit=datafit, tol=tol, max_iter=max_iter,
                      activation_shape=activation_shape, device=device, verbose=verbose)
    if quantize == "uint8" and datafit == "preactivation":
        # an 8-bit level at the edge of the range stands for the half step next to
        # it: clip there, not at 1e-6 (atanh(1 - 1e-6) = 7.3 against 3.1), or the
        # rounding of a saturated pixel moves its pre-activation by several units
        # (demo GAN at fnr 0.005, unseen / other-architecture rejection 0.875 /
        # 0.510 with 1e-6, 0.985 / 0.965 with the half step)
        inv_params["clip_eps"] = (input_range[1] - input_range[0]) / (2 * UINT8_LEVELS)
    inv_params.update(inverter_params or {})
    steps = [("inv", FinalLayerInverter(layer, activation=activation, anchor=anchor,
                                        **inv_params))]
    c, h, w = shape3
    if pooling is not None:
        pool = ActivationPooling(shape3, method=pooling, kernel_size=kernel_size)
        if pooling == "center_crop":
            h, w = -(-h // 2), -(-w // 2)
        else:
            h, w = h // min(kernel_size, h), w // min(kernel_size, w)
        steps.append(("pool", pool))
    steps.append(("select", ChannelSelector(c if n_channels is None else n_channels,
                                            input_shape=(c, h, w))))
    steps.append(("scaler", GeneratorStandardScaler()))
    if detector is None:
        det = _deep_sad(fnr, random_state, device,
                        dict({"verbose": verbose}, **(detector_params or {})))
    elif isinstance(detector, ConformalDecisionMixin):
        det = detector                      # already conformal: taken unchanged
    else:
        det = ConformalDetector(detector, fnr=fnr, random_state=random_state)
        det._validate_params()              # a wrong detector fails here, not at fit
    steps.append(("det", det))
    if immunise is not None:
        return ImmunisedPipeline(steps, immunise=immunise, input_range=input_range,
                                 quantize=quantize)
    return ConformalPipeline(steps, input_range=input_range, quantize=quantize)


def _immunisation(immunise, layer, activation_shape, random_state):
    """:func:`make_flipad`'s ``immunise``: None, or the transformer to fit with."""
    if isinstance(immunise, str) and immunise == "published":
        adapter = layer_adapter(layer)
        shape = (tuple(operator_for(layer, activation_shape).output_shape)
                 if adapter.image_output else None)
        return _image_immunisation(immunise, shape, random_state)
    return _image_immunisation(immunise, None, random_state)


def _image_immunisation(immunise, image_shape, random_state):
    """``immunise`` of the recipes on images of ``image_shape`` (None: 4-D input)."""
    if immunise is None:
        return None
    if isinstance(immunise, str):
        if immunise != "published":
            raise ValueError(f"immunise must be None, 'published' or a transformer of "
                             f"images, got {immunise!r}.")
        return RandomPerturbation("published", random_state=random_state,
                                  input_shape=image_shape)
    if not (hasattr(immunise, "fit") and hasattr(immunise, "transform")):
        raise TypeError(f"immunise must be None, 'published' or a transformer of images "
                        f"(fit / transform, e.g. RandomPerturbation()), got {immunise!r}.")
    return immunise


class ImmunisedPipeline(ConformalPipeline):
    """A :class:`~flipad_sklearn.ConformalPipeline` trained on perturbed inputs.

    ``fit`` passes every training input through a fresh clone of
    ``immunise`` first (G's samples, the labelled others, and the samples
    of G that the detector holds out for its threshold, so that the fnr
    guarantee covers the perturbations), then fits as a
    ``ConformalPipeline`` (input contract included).  ``predict``,
    ``decision_function``, ``score_samples``, ``pvalues`` and ``transform``
    take the inputs as they come; :func:`~flipad_sklearn.calibrate` on fresh
    samples of G perturbs them as ``fit`` does.  :func:`make_flipad` with
    ``immunise=`` returns one.

    Parameters
    ----------
    steps, input_range, quantize, transform_input, memory, verbose
        As in :class:`~flipad_sklearn.ConformalPipeline`.
    immunise : transformer or None, default=None
        A transformer of images (e.g. a
        :class:`~flipad_sklearn.RandomPerturbation`) whose ``fit_transform``
        perturbs the training inputs; its output is reshaped to the input's
        shape.  None: a plain ``ConformalPipeline``.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler
    >>> from flipad_sklearn import RandomPerturbation
    >>> from flipad_sklearn.detection import ConformalDetector
    >>> from flipad_sklearn.pipeline import ImmunisedPipeline
    >>> X = np.random.default_rng(0).uniform(-1, 1, (300, 1, 4, 4))
    >>> pipe = ImmunisedPipeline(
    ...     [("flat", GeneratorStandardScaler()),
    ...      ("det", ConformalDetector(fnr=0.05, random_state=0))],
    ...     immunise=RandomPerturbation(random_state=0))
    >>> pipe.fit(X.reshape(300, -1))[-1].validation_scores_.size
    60
    """

    def __init__(self, steps, *, immunise=None, input_range=None, quantize=None,
                 transform_input=None, memory=None, verbose=False):
        super().__init__(steps, input_range=input_range, quantize=quantize,
                         transform_input=transform_input, memory=memory, verbose=verbose)
        self.immunise = immunise

    def _immunised(self, X):
        if self.immunise is None:
            return X
        if scipy.sparse.issparse(X):
            raise TypeError("ImmunisedPipeline perturbs images: sparse input is not "
                            "supported; pass a dense array.")
        Xa = np.asarray(X)
        Xt = np.asarray(clone(self.immunise).fit_transform(Xa))
        if Xt.shape[0] != Xa.shape[0] or Xt.size != Xa.size:
            raise ValueError(f"immunise must return one perturbed input per input, of the "
                             f"same size: {Xa.shape} gave {Xt.shape}.")
        return Xt.reshape(Xa.shape).astype(Xa.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.immunise is not None:
            tags.input_tags.sparse = False      # images: perturbed as dense arrays
        return tags

    def __getitem__(self, ind):
        """A step, or a sub-pipeline; a slice keeping the first step keeps ``immunise``."""
        out = super().__getitem__(ind)
        if isinstance(ind, slice) and isinstance(out, ImmunisedPipeline) \
                and ind.start in (None, 0):
            out.immunise = self.immunise
        return out

    def _calibration_input(self, X):
        """Fresh samples of G for :func:`~flipad_sklearn.calibrate`, perturbed as at fit."""
        return self._immunised(X)

    def _calibration_kinds(self, X):
        """Fresh samples of G once per kind of ``immunise`` (``calibrate(each_kind=True)``):
        a mixture's ``transform_each_kind``, or the one perturbed copy of another
        transformer."""
        if self.immunise is None:
            return [X]
        each = getattr(self.immunise, "transform_each_kind", None)
        if each is None:
            if not is_single_perturbation(self.immunise):
                # a mixture wrapped (in a Pipeline, say) or the user's own: one draw
                # per sample would hold the fnr on average over it only
                warnings.warn(
                    f"calibrate(each_kind=True): immunise ({type(self.immunise).__name__}) "
                    "has no transform_each_kind, so it is taken as one kind (one "
                    "perturbed copy per fresh sample); if it draws among several "
                    "perturbations, the fnr holds on average over them, not under each. "
                    "Give the mixture as a RandomPerturbation.", ThresholdWarning,
                    stacklevel=3)
            return [self._immunised(X)]
        if scipy.sparse.issparse(X):
            raise TypeError("ImmunisedPipeline perturbs images: sparse input is not "
                            "supported; pass a dense array.")
        Xa = np.asarray(X)
        copies = clone(self.immunise).fit(Xa).transform_each_kind(Xa)
        return [np.asarray(c).reshape(Xa.shape).astype(Xa.dtype, copy=False) for c in copies]

    def fit(self, X, y=None, **params):
        """Fit as :meth:`ConformalPipeline.fit` on the inputs perturbed by ``immunise``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training input of the first step (images).
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled; None: all G's.
        **params : dict
            As in :meth:`ConformalPipeline.fit`.

        Returns
        -------
        self : ImmunisedPipeline
        """
        return super().fit(self._immunised(X), y, **params)

    @available_if(Pipeline._can_fit_transform)
    def fit_transform(self, X, y=None, **params):
        """:meth:`ConformalPipeline.fit_transform` on the perturbed inputs (the
        returned features are those of the perturbed inputs)."""
        return super().fit_transform(self._immunised(X), y, **params)


def _input_contract(activation, input_range, quantize):
    """``(input_range, quantize)`` of :func:`make_flipad`'s ``"auto"`` values."""
    if isinstance(input_range, str):
        if input_range != "auto":
            raise ValueError(f"input_range must be 'auto', (low, high) or None, got "
                             f"{input_range!r}.")
        act = get_activation(activation)
        input_range = ((float(act.low), float(act.high))
                       if np.isfinite(act.low) and np.isfinite(act.high) else None)
    elif input_range is not None:
        input_range = tuple(float(v) for v in input_range)
    if isinstance(quantize, str) and quantize == "auto":
        quantize = "uint8" if input_range is not None else None
    if quantize not in (None, "uint8"):
        raise ValueError(f"quantize must be 'auto', 'uint8' or None, got {quantize!r}.")
    if quantize is not None and input_range is None:
        raise ValueError("quantize='uint8' needs a bounded input range: the activation's "
                         "(tanh, sigmoid) or input_range=(low, high).")
    return input_range, quantize


#: Defaults of :func:`make_flipad_tabular`, chosen by the tabular benchmark's
#: ablation (``benchmarks/results/tabular_ablation.md`` and ``tabular_alpha.md``):
#: every unit and alpha = 1e-5 beat the paper's top 100 of 300 units at alpha = 1e-3.
#: ``solver="auto"`` runs FISTA here (positive=True with a non-zero anchor).
TABULAR_RECIPE = dict(alpha=1e-5, positive=True, n_channels=None, solver="auto", tol=1e-5,
                      max_iter=300, scale=True)
#: The FLIPAD paper's tabular Deep SAD network.
TABULAR_DETECTOR = dict(network="mlp", hidden_sizes=(512, 1024, 512, 256, 128), rep_dim=32,
                        lr=1e-3, n_epochs=20, batch_size=128)


def make_flipad_tabular(generator, anchor=None, *, alpha=TABULAR_RECIPE["alpha"],
                        positive=TABULAR_RECIPE["positive"],
                        n_channels=TABULAR_RECIPE["n_channels"],
                        solver=TABULAR_RECIPE["solver"], tol=TABULAR_RECIPE["tol"],
                        max_iter=TABULAR_RECIPE["max_iter"], scale=TABULAR_RECIPE["scale"],
                        detector=None, fnr=0.005, random_state=None, device="auto",
                        detector_params=None, n_anchor=5000, verbose=0):
    """FLIPAD for a tabular generator, in its standardised units.

    :func:`make_flipad` with the tabular defaults: the inversion of
    ``generator.standardized_final_layer()`` (``activation="identity"``) with
    ``positive=True`` (the penultimate layer is a ReLU), no pooling, the
    ``n_channels`` units whose means differ most between G's rows and the
    labelled others (default: all of them), G-standardisation and Deep SAD with the FLIPAD paper's
    tabular MLP (:data:`TABULAR_DETECTOR`).  Fit and score rows in G's
    standardised units (``generator.standardize(X)``).

    Parameters
    ----------
    generator : TabularGenerator
        With ``standardize`` and ``standardized_final_layer`` (see
        :func:`~flipad_sklearn.generators.train_tabular_gan`).
    anchor : array-like or None, default=None
        None: :func:`~flipad_sklearn.mean_activation` of ``n_anchor`` samples.
    alpha, positive, solver, tol, max_iter : see :class:`~flipad_sklearn.FinalLayerInverter`
    n_channels : int or None, default=None
        Units kept by :class:`~flipad_sklearn.ChannelSelector`; None keeps all
        (the paper keeps the top 100 of 300: worse in the ablation).
    scale : bool, default=True
        Standardise the features with G's statistics
        (:class:`~flipad_sklearn.GeneratorStandardScaler`); False drops that step.
    detector, fnr, random_state, device : see :func:`make_flipad`
    detector_params : dict or None, default=None
        Overrides of :data:`TABULAR_DETECTOR` (Deep SAD only).
    n_anchor : int, default=5000
    verbose : int, default=0
        Progress on stderr, as in :func:`make_flipad` (the inversion's bar
        over the rows, Deep SAD's over the epochs); ``detector_params`` with
        its own ``verbose`` takes precedence.

    Returns
    -------
    pipeline : ConformalPipeline
    """
    layer = generator.standardized_final_layer()
    if anchor is None:
        anchor = mean_activation(generator, n_anchor, generator.latent_shape,
                                 layer=generator.final_layer, random_state=0, device="cpu")
    params = dict(TABULAR_DETECTOR, **(detector_params or {}))
    pipe = make_flipad(layer, "identity", anchor, alpha=alpha, positive=positive, tol=tol,
                       max_iter=max_iter, pooling=None,
                       n_channels=None if n_channels is None else min(n_channels,
                                                                      layer.in_features),
                       detector=detector, fnr=fnr, random_state=random_state, device=device,
                       inverter_params=dict(solver=solver),
                       detector_params=params if detector is None else None,
                       verbose=verbose)
    if not scale:
        pipe.steps = [s for s in pipe.steps if s[0] != "scaler"]
    return pipe


# ------------------------------------------------------------------ baselines' recipes
def _deep_sad(fnr, random_state, device, detector_params, verbose=0):
    params = dict(fnr=fnr, random_state=random_state, device=device, network="mlp",
                  verbose=verbose)
    params.update(detector_params or {})
    return FLIPADDetector(**params)


def make_rawpad(*, activation="tanh", input_range="auto", quantize="auto", fnr=0.005,
                random_state=None, device="auto", detector_params=None, verbose=0):
    """RAWPAD: Deep SAD on the raw pixels, standardised with G's statistics.

    The input contract is :func:`make_flipad`'s: for a generator of images
    (a tanh or sigmoid output) every input is rounded, at fit and at predict,
    to the 256 levels of the activation's range, so the baseline too trains
    and scores on G's samples as they are published (8-bit files);
    ``quantize=None`` keeps a float pipeline, which warns
    (:class:`~flipad_sklearn.InputContractWarning`) when given 8-bit images.

    Parameters
    ----------
    activation : str or callable, default="tanh"
        G's output activation: it sets ``input_range="auto"`` (``(-1, 1)``
        for tanh, ``(0, 1)`` for sigmoid, none for ``"identity"``: table
        rows, no contract).
    input_range : "auto", (float, float) or None, default="auto"
        The inputs' value range (see :func:`make_flipad`).
    quantize : {"auto", "uint8"} or None, default="auto"
        ``"uint8"`` rounds inputs to the 256 levels of ``input_range``;
        ``"auto"``: ``"uint8"`` when the range is known (see :func:`make_flipad`).
    fnr : float, default=0.005
    random_state : int, RandomState instance or None, default=None
    device : {"auto", "cpu", "cuda"}, default="auto"
    detector_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FLIPADDetector` parameters
        (``hidden_sizes``, ``n_epochs``, ...); the network is an MLP.
    verbose : int, default=0
        Progress of Deep SAD's training on stderr (a bar over the epochs at
        1, also a line per epoch at 2); 0 is silent.  ``detector_params``
        with its own ``verbose`` takes precedence.

    Returns
    -------
    pipeline : ConformalPipeline
        ``scaler`` (:class:`~flipad_sklearn.GeneratorStandardScaler`) then
        ``det`` (:class:`~flipad_sklearn.FLIPADDetector`).  Fit with
        ``fit(X, y)``, ``y`` = 1 for G's samples, -1 for known others.
    """
    input_range, quantize = _input_contract(activation, input_range, quantize)
    return ConformalPipeline([("scaler", GeneratorStandardScaler()),
                              ("det", _deep_sad(fnr, random_state, device, detector_params,
                                                verbose))],
                             input_range=input_range, quantize=quantize)


def make_dctpad(input_shape=None, *, activation="tanh", input_range="auto", quantize="auto",
                fnr=0.005, random_state=None, device="auto", detector_params=None,
                immunise=None, block_size=None, verbose=0):
    """DCTPAD: Deep SAD on ``log |DCT|`` of the pixels, standardised with G's statistics.

    The input contract is :func:`make_rawpad`'s (8-bit images by default for
    a tanh or sigmoid generator).  The spectrum shows traces of how a
    generator upsamples that the final layer's sparse code hides, so it is
    the second detector of the open-world union
    (:class:`~flipad_sklearn.ConformalUnion` with :func:`make_flipad` and
    :func:`make_pixel_guard`); measured in
    ``benchmarks/results/bench_face_architectures.md``.

    Parameters
    ----------
    input_shape : tuple of (C, H, W) or None, default=None
        Image shape; None: taken from 4-D input.
    activation, input_range, quantize : see :func:`make_rawpad`
    fnr : float, default=0.005
    random_state : int, RandomState instance or None, default=None
    device : {"auto", "cpu", "cuda"}, default="auto"
    detector_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FLIPADDetector` parameters.
    immunise : None, "published" or transformer, default=None
        As in :func:`make_flipad`: every training image first goes through
        a random perturbation (``"published"``: JPEG, resizing, cropping or
        none).  The spectrum is what compression changes, so a DCTPAD trained
        against generators of other architectures can reject G's own JPEG
        images too; immunised it accepts them, but against a competitor
        alone it also loses what only the spectrum's fine detail showed
        (measured in ``benchmarks/results/bench_face_architectures.md``).
    block_size : int or None, default=None
        :class:`~flipad_sklearn.DCTFeatures`' ``block_size``: 8 adds the
        spectra of JPEG's 8 x 8 blocks to the whole image's, which keeps
        an upsampling trace in recompressed files.
    verbose : int, default=0
        As in :func:`make_rawpad`.

    Returns
    -------
    pipeline : ConformalPipeline
        ``dct`` (:class:`~flipad_sklearn.DCTFeatures`), ``scaler``, ``det``;
        an :class:`ImmunisedPipeline` with ``immunise``.
    """
    input_range, quantize = _input_contract(activation, input_range, quantize)
    steps = [("dct", DCTFeatures(input_shape, block_size=block_size)),
             ("scaler", GeneratorStandardScaler()),
             ("det", _deep_sad(fnr, random_state, device, detector_params, verbose))]
    immunise = _image_immunisation(immunise, input_shape, random_state)
    if immunise is not None:
        return ImmunisedPipeline(steps, immunise=immunise, input_range=input_range,
                                 quantize=quantize)
    return ConformalPipeline(steps, input_range=input_range, quantize=quantize)


def _check_image_shape(image_shape):
    """``image_shape`` as a tuple ``(C, H, W)`` of positive ints, else a ValueError."""
    dims = np.atleast_1d(image_shape)
    if dims.ndim != 1 or dims.size != 3 or dims.dtype.kind not in "iu" or dims.min() < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive integer sizes, got "
                         f"{image_shape!r}.")
    return tuple(int(v) for v in dims)


def make_pixel_guard(image_shape, *, size=16, shrinkage=0.1, activation="tanh",
                     input_range="auto", quantize="auto", fnr=0.005, random_state=None):
    """A one-class Gaussian of G's downsampled pixels: rejects what is far from all of G.

    FLIPAD's Deep SAD learns what separates G from the labelled others it
    was shown; an image of another domain can sit where neither was (issue
    32: digits resized to 64x64 were accepted as the published face DCGAN's
    at fnr 0.005).  This guard averages each image over ``size`` x ``size``
    blocks per channel, standardises with G's statistics and scores by the
    log-density of a Gaussian with a shrunk covariance
    (:class:`~flipad_sklearn.GaussianDensity`), fitted on G's
    samples alone (labelled others are ignored), with the conformal
    threshold at ``fnr``.  It is cheap (no inversion), so it can be
    calibrated on many fresh samples of G.  Use it next to a FLIPAD
    pipeline in a :class:`~flipad_sklearn.ConformalUnion`, which rejects
    what either rejects; its measured effect is in
    ``benchmarks/results/bench_open_world_face.md``.

    Parameters
    ----------
    image_shape : tuple of (C, H, W)
        Shape of G's images.
    size : int, default=16
        Side of the downsampled image, at most ``min(H, W)``: blocks of ``k =
        min(H, W) // size`` pixels are averaged (``C * (H // k) * (W // k)``
        features, ``C * size**2`` when ``size`` divides square images; keep
        it well below the number of samples of G for a stable covariance).
    shrinkage : float in [0, 1] or "ledoit_wolf", default=0.1
        Weight of the scaled identity in the covariance
        (:class:`~flipad_sklearn.GaussianDensity`).  Fixed, not Ledoit and
        Wolf's estimate: that one falls as samples of G grow, the
        covariance then follows G's directions of large variance, and the
        guard fitted on more samples passes more of another domain.  The
        value and what it rejects are measured in
        ``benchmarks/results/bench_face_pixel_guard.md`` (user guide, "Open
        world", "The pixel guard's shrinkage").
    activation, input_range, quantize : see :func:`make_rawpad`
        The input contract (8-bit images by default for tanh or sigmoid).
    fnr : float, default=0.005
        Its tolerated false-negative rate (in a union: set by the union).
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split.

    Returns
    -------
    pipeline : ConformalPipeline
        ``pool`` (:class:`~flipad_sklearn.ActivationPooling`, average),
        ``scaler`` (:class:`~flipad_sklearn.GeneratorStandardScaler`: G's
        statistics only) and
        ``det`` (:class:`~flipad_sklearn.ConformalDetector` with a
        :class:`~flipad_sklearn.GaussianDensity`).

    Examples
    --------
    >>> from flipad_sklearn import ConformalUnion, make_pixel_guard
    >>> from flipad_sklearn.pipeline import make_flipad
    >>> # union = ConformalUnion([("flipad", make_flipad(layer, "tanh", anchor)),
    >>> #                         ("pixels", make_pixel_guard((3, 64, 64)))],
    >>> #                        fnr=0.005).fit(X, y)
    >>> make_pixel_guard((3, 64, 64)).named_steps["pool"].kernel_size
    4
    """
    shape = _check_image_shape(image_shape)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 \
            or size > min(shape[1:]):
        raise ValueError(f"size must be a positive int at most min(H, W) = "
                         f"{min(shape[1:])}, got {size!r}.")
    if isinstance(shrinkage, bool):
        raise ValueError(f"shrinkage must be a float in [0, 1] or 'ledoit_wolf', got "
                         f"{shrinkage!r}.")
    GaussianDensity(shrinkage=shrinkage)._validate_params()   # a wrong one fails here
    input_range, quantize = _input_contract(activation, input_range, quantize)
    kernel = max(1, min(shape[1:]) // int(size))
    return ConformalPipeline(
        [("pool", ActivationPooling(shape, method="avg", kernel_size=kernel)),
         ("scaler", GeneratorStandardScaler()),
         ("det", ConformalDetector(GaussianDensity(shrinkage=shrinkage), fnr=fnr,
                                   random_state=random_state))],
        input_range=input_range, quantize=quantize)


def make_open_world_union(layer, activation="tanh", anchor="zeros", *, image_shape,
                          fnr=0.005, weights=None, immunise=None, random_state=None,
                          device="auto", input_range="auto", quantize="auto",
                          validation_size="auto", flipad_params=None, dctpad_params=None,
                          verbose=0):
    """FLIPAD, DCTPAD and a pixel guard in one union: G's only when all three accept.

    Each detector sees the image differently and misses different sources:
    FLIPAD (:func:`make_flipad`) learns what separates G from the labelled
    others in the final layer's sparse code, DCTPAD (:func:`make_dctpad`)
    the spectral traces of how a generator upsamples, the pixel guard
    (:func:`make_pixel_guard`) what is far from all of G's images whatever
    the others were.  The :class:`~flipad_sklearn.ConformalUnion` keeps
    each one's conformal threshold at its share of ``fnr``, so a fresh
    sample of G is rejected with probability at most ``fnr`` once each has
    the held-out samples of G its share needs
    (:meth:`~flipad_sklearn.ConformalUnion.calibrate` on fresh samples).
    Which sources each catches, and what the union still misses, is
    measured on a published face generator in the user guide ("Open
    world").

    Parameters
    ----------
    layer, activation, anchor : see :func:`make_flipad`
    image_shape : tuple of (C, H, W)
        Shape of G's images (DCTPAD's input and the pixel guard's).
    fnr : float, default=0.005
        The union's tolerated false-negative rate.
    weights : dict or None, default=None
        Shares of ``fnr`` for ``"flipad"``, ``"dctpad"`` and ``"pixels"``;
        None: :data:`~flipad_sklearn.pipeline.OPEN_WORLD_SHARES` (0.5, 0.3, 0.2).
    immunise : None, "published" or transformer, default=None
        DCTPAD's (:func:`make_dctpad`): trained and thresholded on
        perturbed images, it accepts G's recompressed images, and then
        accepts smooth images of other domains too (their spectra look like
        compressed ones), which the pixel guard must then reject alone.
        FLIPAD's own immunisation goes in ``flipad_params`` (``flipad fit
        --detector union --immunise`` sets both; for JPEG files of one
        quality, ``JPEGCompression(quality=q)`` in both matches the union to
        them).  Which immunisation suits images as generated and which
        suits files is measured in the user guide ("Open world": "At the
        paper's scale" and "Files").
    random_state : int or None, default=None
        Seeds every detector.
    device : {"auto", "cpu", "cuda"}, default="auto"
        FLIPAD's inversion and both Deep SAD networks.
    input_range, quantize : see :func:`make_flipad`
        The input contract, the same for the three detectors (8-bit images
        in the activation's range by default).
    validation_size : "auto" or 0, default="auto"
        ``"auto"``: each detector holds out of ``X`` the samples of G its
        share of ``fnr`` needs, to set its threshold at ``fit``.  ``0``: every
        sample of G trains every detector, and the thresholds are set on
        fresh samples of G with :meth:`ConformalUnion.calibrate` (what an
        owner who can sample G should do; the union predicts nothing before).
    flipad_params, dctpad_params : dict or None, default=None
        Further keyword arguments of :func:`make_flipad` (``alpha``,
        ``activation_shape``, ``positive``, ``immunise``, ...) and
        :func:`make_dctpad` (``detector_params``, ...).  With ``immunise``
        (a union for files), DCTPAD's ``block_size`` is 8 unless
        ``dctpad_params`` says otherwise: the spectra of JPEG's 8 x 8
        blocks beside the whole image's, which keep a generator's
        upsampling visible in recompressed files; without, None (the whole
        image's alone, which did better on images as generated against a
        competitor alone).  Both measured in the user guide ("Open world":
        "JPEG's blocks").
    verbose : int, default=0
        Progress bars of the inversion and of both Deep SAD trainings.

    Returns
    -------
    union : ConformalUnion
        Members ``flipad``, ``dctpad`` and ``pixels``, unfitted.

    Examples
    --------
    >>> from flipad_sklearn.pipeline import make_open_world_union
    >>> union = make_open_world_union(G.final_layer, "tanh", anchor, image_shape=(3, 64, 64),
    ...                               validation_size=0)  # doctest: +SKIP
    >>> union.fit(X, y).calibrate(sample_G, max_fnr=0.01)  # doctest: +SKIP
    >>> union.predict(X_new)  # doctest: +SKIP
    """
    shape = _check_image_shape(image_shape)
    if not (isinstance(validation_size, str) and validation_size == "auto") \
            and not (isinstance(validation_size, Integral)
                     and not isinstance(validation_size, bool) and validation_size == 0):
        raise ValueError(f"validation_size must be 'auto' or 0 (then calibrate on fresh "
                         f"samples of G), got {validation_size!r}.")
    if weights is not None and not isinstance(weights, dict):
        raise ValueError(f"weights must be a dict {{name: share}} of 'flipad', 'dctpad' and "
                         f"'pixels', or None, got {weights!r}.")
    for name, params in (("flipad_params", flipad_params), ("dctpad_params", dctpad_params)):
        # one input contract for the three: a detector reading pixels otherwise would
        # score another image than the others
        clash = sorted({"input_range", "quantize"} & set(params or {}))
        if clash:
            raise ValueError(f"{name} sets {clash}: pass input_range / quantize to "
                             "make_open_world_union, which gives them to every detector.")
    contract = dict(input_range=input_range, quantize=quantize)
    flipad = make_flipad(layer, activation, anchor, fnr=fnr, random_state=random_state,
                         device=device, verbose=verbose, **contract, **(flipad_params or {}))
    dctpad = make_dctpad(shape, activation=activation, fnr=fnr, random_state=random_state,
                         device=device, immunise=immunise, verbose=verbose, **contract,
                         **{"block_size": None if immunise is None else OPEN_WORLD_DCT_BLOCK,
                            **(dctpad_params or {})})
    # 16x16 blocks' averages by default; a smaller image keeps every pixel
    guard = make_pixel_guard(shape, size=min(16, *shape[1:]), activation=activation,
                             fnr=fnr, random_state=random_state, **contract)
    if validation_size == 0:
        for member in (flipad, dctpad, guard):
            member.steps[-1][1].set_params(validation_size=0)
    return ConformalUnion([("flipad", flipad), ("dctpad", dctpad), ("pixels", guard)],
                          fnr=fnr, weights=dict(OPEN_WORLD_SHARES if weights is None
                                                else weights))
