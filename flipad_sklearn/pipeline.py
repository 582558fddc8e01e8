"""The FLIPAD recipe, in one place: :func:`make_flipad`.

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

import numpy as np
from sklearn.pipeline import Pipeline
from torch import nn

from .deepsad import FLIPADDetector
from .features import ActivationPooling, ChannelSelector, GeneratorStandardScaler
from .inversion import FinalLayerInverter

__all__ = ["make_flipad"]


def make_flipad(layer, activation="tanh", anchor="zeros", *, alpha=5e-4,
                activation_shape=None, positive=False, tol=1e-6, max_iter=1000,
                pooling="max", kernel_size=2, n_channels=None, detector=None,
                fnr=0.005, random_state=None, device="auto", inverter_params=None,
                detector_params=None):
    """The FLIPAD pipeline: inversion, pooling, channel selection, scaling, detector.

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
    detector : None, {"iforest", "ocsvm", "lof"} or estimator, default=None
        None: :class:`~flipad_sklearn.FLIPADDetector` (Deep SAD, MLP, with its
        default one-class SVM guard; ``detector_params={"one_class": None}``
        gives the paper's Deep SAD alone).
        A string or an estimator with ``score_samples``: wrapped in
        :class:`~flipad_sklearn.ConformalDetector` (fitted on G's samples only).
    fnr : float, default=0.005
    random_state : int, RandomState instance or None, default=None
    device : {"auto", "cpu", "cuda"}, default="auto"
    inverter_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FinalLayerInverter` parameters.
    detector_params : dict or None, default=None
        Further :class:`~flipad_sklearn.FLIPADDetector` parameters (Deep SAD only).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps ``inv``, ``pool`` (if pooling), ``select``, ``scaler``, ``det``.
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
        elif isinstance(layer, nn.Linear):
            activation_shape = (layer.in_features,)
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
    inv_params = dict(alpha=alpha, positive=positive, tol=tol, max_iter=max_iter,
                      activation_shape=activation_shape, device=device)
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
        params = dict(fnr=fnr, random_state=random_state, device=device, network="mlp")
        params.update(detector_params or {})
        det = FLIPADDetector(**params)
    else:
        from .baselines import ConformalDetector  # baselines re-exports make_flipad

        det = ConformalDetector(detector, fnr=fnr, random_state=random_state)
    steps.append(("det", det))
    return Pipeline(steps)
