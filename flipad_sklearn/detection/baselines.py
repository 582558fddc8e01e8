"""The baselines FLIPAD is compared with, as detectors.

* :class:`FingerprintCorrelation`: Marra et al. (2019), "Do GANs leave
  artificial fingerprints?": the mean noise residual of G's images is G's
  fingerprint; a sample's score is the correlation of its residual with it.
* :class:`LatentInversionDistance`: optimise a latent code to reconstruct the
  sample with G; the score is minus the reconstruction error.
* :class:`ReconstructionDistance`: the AEROBLADE idea (Ricker et al., CVPR
  2024) for latent-diffusion decoders: minus the distance between an image and
  its encode -> decode reconstruction through the owner's autoencoder.

The recipes (:func:`~flipad_sklearn.pipeline.make_rawpad`,
:func:`~flipad_sklearn.pipeline.make_dctpad` and every other ``make_*``) live
in :mod:`flipad_sklearn.pipeline`; :class:`~flipad_sklearn.ConformalDetector`
(any scikit-learn outlier detector behind the conformal rule) in
:mod:`flipad_sklearn.detection.conformal_detector`.

Every detector here follows the package's conventions: ``y`` = 1 for G's
samples, -1 for known others, 0 for unlabelled; ``score_samples`` higher =
more like G; ``decision_function = score_samples - offset_``; ``predict`` in
{+1, -1}; ``pvalues`` the conformal p-values; the split, the threshold and
the p-values are those of :mod:`flipad_sklearn.detection.conformal` (the conformal
``(1 - fnr)`` rule on held-out samples of G, ``validation_size``), the same
for every detector of the package.
"""

import copy
from numbers import Integral, Real

import numpy as np
import scipy.ndimage
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .._device import resolve_device
from .._validation import check_labels, flatten_images, resolve_input_shape
from ..generator_utils import _module_device, _select_output
from .conformal import CONFORMAL_CONSTRAINTS, ConformalDecisionMixin

__all__ = ["FingerprintCorrelation", "LatentInversionDistance", "ReconstructionDistance"]

_FLOATS = [np.float64, np.float32]


_CONFORMAL_CONSTRAINTS = {**CONFORMAL_CONSTRAINTS, "random_state": ["random_state"]}


# --------------------------------------------------------------------------- fingerprint
class FingerprintCorrelation(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """Fingerprint-correlation baseline (Marra et al., 2019).

    A GAN leaves a fixed pattern in the noise residual of its images.  The
    residual of an image is ``x - denoise(x)``; G's fingerprint is the mean
    residual of G's training samples; the score of a sample is the
    normalised (Pearson) correlation of its residual with the fingerprint.
    Labelled others (``y == -1``) are not used: the method only models G.

    Parameters
    ----------
    denoiser : {"gaussian", "median"}, default="gaussian"
        The denoising filter, applied per channel over the two spatial axes
        (:func:`scipy.ndimage.gaussian_filter` / :func:`~scipy.ndimage.median_filter`).
    sigma : float, default=1.0
        Standard deviation of the Gaussian filter.
    size : int, default=3
        Window side of the median filter.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image.  None: taken from 4-D input; flat input is then
        read as a single-channel ``1 x n_features`` image (1-D filtering).
    fnr : float, default=0.005
        Tolerated false-negative rate: the threshold is the conformal
        ``(1 - fnr)`` quantile of the held-out samples' ``-score``.
    validation_size : "auto", int or None, default="auto"
        Samples of G held out for the threshold
        (:func:`flipad_sklearn.detection.conformal.validation_split`): ``"auto"`` as
        many as ``fnr`` needs (at most half of G's samples), an int that many
        (0: none; set the threshold with
        :func:`~flipad_sklearn.detection.conformal.calibrate`), None
        ``validation_fraction`` of them.
    validation_fraction : float, default=0.2
        Share of G's samples held out for the threshold (the least share
        with ``"auto"``; not used for the fingerprint).
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split.

    Attributes
    ----------
    fingerprint_ : ndarray of shape (n_features,)
        The mean residual of G's training samples, flattened.
    input_shape_ : tuple
        ``(C, H, W)`` used.
    threshold_ : float
        Samples with ``-score > threshold_`` are rejected.
    offset_ : float
        ``-threshold_``.
    fnr_bound_ : float
        The false-negative rate the threshold guarantees (``fnr`` or less
        with enough held-out samples, else ``1/(n+1)``).
    validation_scores_ : ndarray
        Sorted scores of the held-out samples of G.
    fnr_interval_ : tuple of float
        The central 90 % interval of the share of G's samples that this
        threshold rejects (:func:`~flipad_sklearn.fnr_interval`): ``fnr`` is
        its mean over held-out draws, not a bound on one threshold.
    n_calibration_kinds_ : int
        1: the threshold is set on held-out samples of G as they came (or
        perturbed once, as at fit).  k > 1: on each sample's lowest score over
        the k kinds of a mixture of perturbations
        (:func:`~flipad_sklearn.calibrate` with ``each_kind=True``), so that
        the fnr holds under each kind.
    n_features_in_ : int
    decision_scores_ : ndarray of shape (n_samples,)
        PyOD's outlier scores of the samples given to ``fit`` (``-score``,
        higher = less like G); ``labels_`` (PyOD's 0 inlier / 1 outlier)
        follows from them and ``threshold_``
        (:class:`~flipad_sklearn.detection.conformal.ConformalDecisionMixin`).

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.detection import FingerprintCorrelation
    >>> rng = np.random.default_rng(0)
    >>> pattern = rng.normal(size=(1, 8, 8))
    >>> X_G = rng.normal(size=(100, 1, 8, 8)) * 0.1 + pattern
    >>> det = FingerprintCorrelation(fnr=0.05, random_state=0).fit(X_G)
    >>> det.predict(X_G[:3])
    array([1, 1, 1])
    """

    _parameter_constraints = {
        "denoiser": [StrOptions({"gaussian", "median"})],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "size": [Interval(Integral, 1, None, closed="left")],
        "input_shape": [None, tuple, list],
        **_CONFORMAL_CONSTRAINTS,
    }

    def __init__(self, denoiser="gaussian", *, sigma=1.0, size=3, input_shape=None,
                 fnr=0.005, validation_size="auto", validation_fraction=0.2,
                 random_state=None):
        self.denoiser = denoiser
        self.sigma = sigma
        self.size = size
        self.input_shape = input_shape
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _residuals(self, X):
        A = X.reshape(X.shape[0], *self.input_shape_).astype(np.float64)
        if self.denoiser == "gaussian":
            den = scipy.ndimage.gaussian_filter(A, sigma=(0, 0, self.sigma, self.sigma),
                                                mode="reflect")
        else:
            den = scipy.ndimage.median_filter(A, size=(1, 1, self.size, self.size),
                                              mode="reflect")
        return (A - den).reshape(X.shape[0], -1)

    @staticmethod
    def _normalise(R):
        R = R - R.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(R, axis=1, keepdims=True)
        return R / np.where(norm > 0, norm, 1.0)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Estimate G's fingerprint and the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Images.
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G (ignored), 0 = unlabelled.
            None: all samples are G's.

        Returns
        -------
        self : FingerprintCorrelation
        """
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        self.input_shape_ = resolve_input_shape(self.input_shape, nd_shape, X.shape[1], "row")
        rng = check_random_state(self.random_state)
        train_idx, val_idx = self._validation_split(labels, rng)
        train_idx = train_idx[labels[train_idx] != -1]  # G's (and unlabelled) samples
        self.fingerprint_ = self._residuals(X[train_idx]).mean(axis=0)
        self._fit_threshold(X[val_idx], self._correlation, X_fit=X, val_idx=val_idx)
        return self

    def _correlation(self, X):
        f = self._normalise(self.fingerprint_[None])[0]
        return self._normalise(self._residuals(X)) @ f

    def score_samples(self, X):
        """Correlation of each sample's residual with the fingerprint (higher = more like G).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64, in [-1, 1]
        """
        check_is_fitted(self)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._correlation(X).astype(np.float64)


# ------------------------------------------------------------------- latent inversion
class LatentInversionDistance(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """Latent-inversion baseline: how well can G reconstruct the sample?

    For each sample ``x`` a latent code is optimised with Adam (batched, from
    one seeded standard-normal start shared by all samples, so that a sample's
    score does not depend on its position in ``X`` or on the others scored
    with it, up to the float32 rounding of batched products) to minimise the
    mean squared error
    ``||G(z) - x||^2 / n_features``; the score is minus the smallest error
    reached.  A sample G made has a latent code that reproduces it exactly;
    other samples usually do not.

    Parameters
    ----------
    generator : torch.nn.Module
        Maps latent codes of shape ``(n, *latent_shape)`` to outputs with
        ``n_features`` entries per sample (e.g. images ``(n, C, H, W)``).  A
        CPU copy in eval mode is stored at ``fit``.
    latent_shape : tuple of int or None, default=None
        Shape of one latent code; None: ``generator.latent_shape``.
    n_steps : int, default=200
        Adam steps per sample.
    lr : float, default=0.05
        Adam learning rate.
    batch_size : int, default=256
        Samples optimised together.
    fnr : float, default=0.005
    validation_size : "auto", int or None, default="auto"
        Samples of G held out for the threshold
        (:func:`flipad_sklearn.detection.conformal.validation_split`): ``"auto"`` as
        many as ``fnr`` needs (at most half of G's samples), an int that many
        (0: none; set the threshold with
        :func:`~flipad_sklearn.detection.conformal.calibrate`), None
        ``validation_fraction`` of them.
    validation_fraction : float, default=0.2
        Share of G's samples held out for the threshold.  Only the held-out
        samples are inverted at ``fit`` (nothing else needs training).
    device : {"auto", "cpu", "cuda"} or str, default="cpu"
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split and the starting code (a local numpy
        generator; global RNGs are untouched).  The same seed gives the same
        scores.
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    generator_ : torch.nn.Module
        CPU copy of the generator.
    latent_shape_ : tuple of int
    output_shape_ : tuple of int
    latent_start_ : ndarray of shape latent_shape_, float32
        The starting code of every sample's optimisation (drawn from
        ``random_state``).
    threshold_, offset_, validation_scores_, n_features_in_
        As in :class:`FingerprintCorrelation`.  No ``decision_scores_`` or
        ``labels_`` (PyOD's scores of the training samples): ``fit`` scores
        only the held-out samples of G, each score costing a latent optimisation.  The rest
        of PyOD's API (``predict_proba``, ``predict_confidence``) is there.
    """

    _parameter_constraints = {
        "generator": [nn.Module, None],
        "latent_shape": [None, tuple, list],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        **_CONFORMAL_CONSTRAINTS,
    }

    def __init__(self, generator=None, *, latent_shape=None, n_steps=200, lr=0.05,
                 batch_size=256, fnr=0.005, validation_size="auto",
                 validation_fraction=0.2, device="cpu", random_state=None, verbose=0):
        self.generator = generator
        self.latent_shape = latent_shape
        self.n_steps = n_steps
        self.lr = lr
        self.batch_size = batch_size
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store the generator and set the threshold on held-out samples of G.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G (ignored), 0 = unlabelled.

        Returns
        -------
        self : LatentInversionDistance
        """
        if self.generator is None:
            raise ValueError("LatentInversionDistance needs generator=<a torch generator>.")
        shape = self.latent_shape
        if shape is None:
            shape = getattr(self.generator, "latent_shape", None)
            if shape is None:
                raise ValueError("Pass latent_shape: the generator has no latent_shape "
                                 "attribute.")
        self.latent_shape_ = tuple(int(s) for s in shape)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        self.generator_ = copy.deepcopy(self.generator).cpu().eval()
        for p in self.generator_.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            out = self.generator_(torch.zeros((1,) + self.latent_shape_))
        self.output_shape_ = tuple(out.shape[1:])
        if out[0].numel() != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} feature(s) per sample, but the generator outputs "
                f"samples of shape {self.output_shape_} ({out[0].numel()} values).")
        rng = check_random_state(self.random_state)
        _, val_idx = self._validation_split(labels, rng)
        # one starting code shared by every sample: a sample's score then depends on
        # the sample only, not on its position in X or on the batch it is scored in
        self.latent_start_ = rng.standard_normal(self.latent_shape_).astype(np.float32)
        self._fit_threshold(X[val_idx], self._scores)
        return self

    def _scores(self, X):
        dev = resolve_device(self.device)
        G = self.generator_.to(dev)
        out = np.empty(X.shape[0], dtype=np.float64)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=X.shape[0], desc="latent inversion", unit="sample")
        try:
            for start in range(0, X.shape[0], self.batch_size):
                # contiguous: torch refuses the negative strides of e.g. X[::-1]
                xb = torch.tensor(np.ascontiguousarray(X[start:start + self.batch_size]),
                                  dtype=torch.float32, device=dev)
                m = xb.shape[0]
                z0 = np.broadcast_to(self.latent_start_, (m,) + self.latent_shape_)
                z = torch.tensor(z0, device=dev, requires_grad=True)
                opt = torch.optim.Adam([z], lr=self.lr)
                best = torch.full((m,), float("inf"), dtype=torch.float64, device=dev)
                for _ in range(self.n_steps + 1):
                    err = ((G(z).reshape(m, -1) - xb) ** 2).mean(dim=1)
                    best = torch.minimum(best, err.detach().double())
                    if _ == self.n_steps:
                        break
                    opt.zero_grad()
                    err.sum().backward()
                    opt.step()
                out[start:start + m] = best.cpu().numpy()
                if bar is not None:
                    bar.update(m)
        finally:
            if bar is not None:
                bar.close()
            self.generator_.cpu()
        return -out

    def score_samples(self, X):
        """Minus the smallest reconstruction error reached (higher = more like G).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64
        """
        check_is_fitted(self)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._scores(X)


# ------------------------------------------------------------ reconstruction distance
_DISTANCES = ("l2", "l1")


def _default_encode(autoencoder):
    def encode(x):
        out = autoencoder.encode(x)
        dist = getattr(out, "latent_dist", None)      # diffusers' AutoencoderKLOutput
        if dist is not None:
            return dist.mode()
        return out
    return encode


class ReconstructionDistance(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """Reconstruction baseline for latent-diffusion decoders (the AEROBLADE idea).

    An image made by a latent diffusion model is a decode of a latent, so the
    owner's autoencoder reconstructs it well: ``decode(encode(x))`` is close
    to ``x``; other images lose detail in the round trip.  The score is minus
    the mean pixel distance between ``x`` and its reconstruction (no
    downloaded perceptual weights); the threshold is the conformal
    ``(1 - fnr)`` rule on held-out samples of G, like the other baselines.
    Nothing is trained: ``fit`` only scores the held-out samples.

    Parameters
    ----------
    autoencoder : torch.nn.Module or None, default=None
        A module with ``encode`` and ``decode`` methods, e.g. diffusers'
        ``AutoencoderKL`` (``encode(x).latent_dist.mode()``, the posterior
        mean, and ``decode(z).sample`` are used).  Used in place (not
        copied): moved to ``device`` while scoring and back afterwards.
    encode, decode : callable or None, default=None
        Override (or, without ``autoencoder``, provide) the two maps; they
        take and return torch tensors.  A decoder output that is a tuple,
        dict or dataclass is read like :func:`~flipad_sklearn.find_final_layer`
        reads it (``.sample``, the first element, ...).  Plain functions must
        be importable for the estimator to pickle.
    distance : {"l2", "l1"} or callable, default="l2"
        ``"l2"``: mean squared error per sample; ``"l1"``: mean absolute
        error.  A callable ``distance(x, x_rec)`` returns one value per sample
        (torch tensors of shape ``(n, C, H, W)``), e.g. a distance between
        the autoencoder's own encoder features of both.
    input_shape : tuple of (C, H, W) or None, default=None
        Image shape for flat input; None: taken from 4-D input.
    batch_size : int, default=16
        Images reconstructed together.
    fnr : float, default=0.005
    validation_size : "auto", int or None, default="auto"
        Samples of G held out for the threshold, as in :class:`ConformalDetector`.
    validation_fraction : float, default=0.2
        Share of G's samples held out for the threshold (the only samples
        reconstructed at ``fit``).
    device : {"auto", "cpu", "cuda"} or str, default="cpu"
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split.
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    input_shape_ : tuple
        ``(C, H, W)`` of the images.
    threshold_, offset_, validation_scores_, n_features_in_
        As in :class:`FingerprintCorrelation`.  No ``decision_scores_`` or
        ``labels_`` (PyOD's scores of the training samples): ``fit`` scores
        only the held-out samples of G, each score costing an encoding and a decoding.  The rest
        of PyOD's API (``predict_proba``, ``predict_confidence``) is there.

    Examples
    --------
    >>> from diffusers import AutoencoderKL  # doctest: +SKIP
    >>> vae = AutoencoderKL.from_pretrained(
    ...     "stabilityai/sd-vae-ft-mse")  # doctest: +SKIP
    >>> det = ReconstructionDistance(vae, fnr=0.05).fit(X_sd)  # doctest: +SKIP
    >>> det.predict(X_new)  # doctest: +SKIP
    """

    _parameter_constraints = {
        "autoencoder": [nn.Module, None],
        "encode": [callable, None],
        "decode": [callable, None],
        "distance": [StrOptions(set(_DISTANCES)), callable],
        "input_shape": [None, tuple, list],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        **_CONFORMAL_CONSTRAINTS,
    }

    def __init__(self, autoencoder=None, *, encode=None, decode=None, distance="l2",
                 input_shape=None, batch_size=16, fnr=0.005, validation_size="auto",
                 validation_fraction=0.2, device="cpu", random_state=None, verbose=0):
        self.autoencoder = autoencoder
        self.encode = encode
        self.decode = decode
        self.distance = distance
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _maps(self):
        ae = self.autoencoder
        encode, decode = self.encode, self.decode
        if encode is None:
            if ae is None or not hasattr(ae, "encode"):
                raise ValueError("ReconstructionDistance needs autoencoder=<a module with "
                                 "encode and decode> or encode=<callable>.")
            encode = _default_encode(ae)
        if decode is None:
            if ae is None or not hasattr(ae, "decode"):
                raise ValueError("ReconstructionDistance needs autoencoder=<a module with "
                                 "encode and decode> or decode=<callable>.")
            decode = ae.decode
        return encode, decode

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Set the threshold on the reconstruction distances of held-out samples of G.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Images in the decoder's output range (``[-1, 1]`` for Stable
            Diffusion's VAE).
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G (ignored), 0 = unlabelled.

        Returns
        -------
        self : ReconstructionDistance
        """
        self._maps()
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        self.input_shape_ = resolve_input_shape(self.input_shape, nd_shape, X.shape[1], "row")
        rng = check_random_state(self.random_state)
        _, val_idx = self._validation_split(labels, rng)
        self._fit_threshold(X[val_idx], self._scores)
        return self

    def _scores(self, X):
        encode, decode = self._maps()
        dev = resolve_device(self.device)
        ae = self.autoencoder
        if ae is not None:
            original, was_training = _module_device(ae), ae.training
            ae.eval().to(dev)
        out = np.empty(X.shape[0], dtype=np.float64)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=X.shape[0], desc="reconstruction", unit="sample")
        try:
            with torch.no_grad():
                for start in range(0, X.shape[0], self.batch_size):
                    xb = torch.tensor(np.ascontiguousarray(X[start:start + self.batch_size]),
                                      dtype=torch.float32,
                                      device=dev).reshape(-1, *self.input_shape_)
                    rec = _select_output(decode(_select_output(encode(xb))))
                    if rec.shape != xb.shape:
                        raise ValueError(
                            f"decode(encode(x)) has shape {tuple(rec.shape[1:])} per "
                            f"sample, but the images have shape {self.input_shape_}.")
                    out[start:start + xb.shape[0]] = self._distance(xb, rec.to(xb.dtype))
                    if bar is not None:
                        bar.update(xb.shape[0])
        finally:
            if bar is not None:
                bar.close()
            if ae is not None:
                ae.to(original).train(was_training)
        return -out

    def _distance(self, x, rec):
        if callable(self.distance):
            d = torch.as_tensor(self.distance(x, rec)).reshape(-1)
            if d.numel() != x.shape[0]:
                raise ValueError(f"distance returned {d.numel()} values for {x.shape[0]} "
                                 "samples; it must return one per sample.")
        else:
            diff = (rec - x).reshape(x.shape[0], -1).double()
            d = (diff ** 2).mean(dim=1) if self.distance == "l2" else diff.abs().mean(dim=1)
        return d.detach().cpu().double().numpy()

    def score_samples(self, X):
        """Minus the reconstruction distance (higher = more like G).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64
        """
        check_is_fitted(self)
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._scores(X)
