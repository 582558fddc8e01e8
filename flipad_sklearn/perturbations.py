"""Image perturbations as scikit-learn transformers: blur, noise, JPEG, crop, resize,
and a random mixture of them.

They model what happens to a generated image after release and are used to
measure robustness, and for "immunisation": the same perturbation applied to
the training samples (put the transformer in front of the training data, or
in the pipeline, so that it runs on both training and test images).

Input: float images in [-1, 1] (the range of a tanh generator), either 4-D
``(n, C, H, W)`` or flattened 2-D ``(n, C*H*W)`` with ``input_shape=(C, H, W)``.
As every transformer of the package, they return a 2-D float array
``(n, C*H*W)`` so that any scikit-learn step can follow; reshape with
``Xt.reshape(-1, *est.input_shape_)`` to view images.  A flattened input
without ``input_shape`` is read as one-row images ``(1, 1, n_features)`` (the
package's convention, as in :class:`~flipad_sklearn.DCTFeatures`): pass
``input_shape`` for flattened images.

``fit`` only validates and records the shape: the transformers learn nothing.

:class:`RandomPerturbation` passes each image through one perturbation drawn
from a mixture (by default :func:`published_mixture`: what happens to
published images, with none named), for immunisation without naming the
perturbation (``make_flipad(..., immunise="published")``).

:class:`JPEGCompression`, :class:`Resize` and :class:`GaussianNoise` clip into [-1, 1] (and
the noise's ``std`` is in its units): they refuse integer images (scale
``uint8`` pixels with ``X / 127.5 - 1``) and warn with
:class:`~flipad_sklearn.exceptions.OutOfRangeWarning` when more than 1% of
the values lie outside [-1, 1].  Blur and crop are linear and work on any
scale.
"""

import functools
import hashlib
import io
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.base import (
    BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context, clone,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import flatten_images, resolve_input_shape
from .activations import BUILTIN_ACTIVATIONS

__all__ = ["GaussianBlur", "GaussianNoise", "JPEGCompression", "JPEGQuality",
           "RandomPerturbation", "Resize", "ResizedCrop", "jpeg_quality", "published_mixture"]

_FLOATS = [np.float64, np.float32]
_UNIT_RANGE = BUILTIN_ACTIVATIONS["tanh"]   # images in [-1, 1]


class _ImagePerturbation(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Shared validation: shapes, finiteness, dtype."""

    _parameter_constraints = {"input_shape": [None, tuple, list]}

    # Subclasses may restrict the number of channels (JPEG: 1 or 3).
    _allowed_channels = None
    # Perturbations that clip into [-1, 1] (or work in its units) refuse integer
    # images and warn on 0-255 floats: clipped, those would lose their content.
    # Blur and crop are linear, so right on any scale.
    _needs_unit_range = False

    def _file_kinds(self):
        """How the images this perturbation makes are stored as files (the kinds of
        :func:`flipad_sklearn.verdicts.file_channel`): None, a lossless file of the
        perturbed image; a JPEG codec overrides it with its quality."""
        return {None}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X`` and record the image shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, C*H*W)
            Images in [-1, 1]; NaN and infinity are rejected.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        if self._needs_unit_range:
            _UNIT_RANGE.check_dtype(X, type(self).__name__)
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS)
        self.input_shape_ = resolve_input_shape(self.input_shape, nd_shape, X.shape[1], "row")
        self._check_channels(self.input_shape_)
        return self

    def _check_channels(self, shape):
        if self._allowed_channels is not None and shape[0] not in self._allowed_channels:
            raise ValueError(
                f"{type(self).__name__} needs {' or '.join(map(str, self._allowed_channels))} "
                f"channels, got images of shape {shape} (C, H, W)."
            )

    def _validate_transform(self, X):
        check_is_fitted(self)
        if self._needs_unit_range:
            _UNIT_RANGE.check_dtype(X, type(self).__name__)
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        if nd_shape is not None and nd_shape != self.input_shape_:
            raise ValueError(
                f"X has images of shape {nd_shape} but {type(self).__name__} was fitted "
                f"on images of shape {self.input_shape_}."
            )
        if self._needs_unit_range:
            _UNIT_RANGE.check_range(X, type(self).__name__)
        return X.reshape(X.shape[0], *self.input_shape_)

    def transform(self, X):
        """Perturb every image.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, C*H*W)
            Images of the fitted shape, in [-1, 1].

        Returns
        -------
        X_new : ndarray of shape (n_samples, C*H*W)
            The perturbed images, flattened, in the input's float dtype.
        """
        images = self._validate_transform(X)
        out = self._perturb(images)
        return np.asarray(out, dtype=images.dtype).reshape(images.shape[0], -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class GaussianBlur(_ImagePerturbation):
    """Gaussian blur of every channel of every image.

    Parameters
    ----------
    sigma : float, default=1.0
        Standard deviation of the Gaussian kernel, in pixels (0: identity).
    truncate : float, default=4.0
        The kernel is cut at ``truncate * sigma`` pixels.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.

    See Also
    --------
    GaussianNoise, JPEGCompression, ResizedCrop

    Notes
    -----
    Borders are reflected (:func:`scipy.ndimage.gaussian_filter` with
    ``mode="reflect"``); channels are blurred independently.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import GaussianBlur
    >>> X = np.zeros((1, 1, 5, 5)); X[0, 0, 2, 2] = 1.0
    >>> Xt = GaussianBlur(sigma=1.0).fit_transform(X)
    >>> Xt.shape, round(float(Xt.sum()), 6)
    ((1, 25), 1.0)
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "sigma": [Interval(Real, 0, None, closed="left")],
        "truncate": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, sigma=1.0, *, truncate=4.0, input_shape=None):
        self.sigma = sigma
        self.truncate = truncate
        self.input_shape = input_shape

    def _perturb(self, images):
        if self.sigma == 0:
            return images.copy()
        return scipy.ndimage.gaussian_filter(
            images, sigma=(0, 0, self.sigma, self.sigma), mode="reflect",
            truncate=self.truncate)


class GaussianNoise(_ImagePerturbation):
    """Additive Gaussian noise, clipped back into [-1, 1].

    Parameters
    ----------
    std : float, default=0.05
        Standard deviation of the noise, in the units of the [-1, 1] images
        (``std=0.1`` is about 13 grey levels of 255).
    clip : bool, default=True
        Clip the result into [-1, 1], as saving the image would.
    random_state : int, RandomState instance or None, default=None
        Seeds the noise.  With an int, each image's noise is drawn from the
        seed and the image's values: the same image gets the same noise in any
        batch, order or call (reproducible; identical images identical noise),
        another image independent noise.
        None (or a RandomState) draws fresh noise, by position in the batch.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.

    See Also
    --------
    GaussianBlur, JPEGCompression, ResizedCrop

    Notes
    -----
    A seed drawn by position would give the fresh samples of G that set an
    immunised detector's threshold (:func:`~flipad_sklearn.calibrate`) the
    noise vectors its training samples had: they would score too well and
    the threshold would reject more of G's newly noised images than its fnr.
    Seeding by image keeps them independent.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import GaussianNoise
    >>> X = np.zeros((2, 1, 8, 8))
    >>> Xt = GaussianNoise(std=0.1, random_state=0).fit_transform(X)
    >>> Xt.shape, bool(np.abs(Xt).max() <= 1)
    ((2, 64), True)
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "std": [Interval(Real, 0, None, closed="left")],
        "clip": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, std=0.05, *, clip=True, random_state=None, input_shape=None):
        self.std = std
        self.clip = clip
        self.random_state = random_state
        self.input_shape = input_shape

    _needs_unit_range = True

    def _perturb(self, images):
        if isinstance(self.random_state, Integral):
            noise = np.stack([self._seeded_noise(img) for img in images]) if len(images) \
                else np.zeros(images.shape)
        else:
            noise = check_random_state(self.random_state).standard_normal(images.shape)
        out = images + self.std * noise
        if self.clip:
            np.clip(out, -1.0, 1.0, out=out)
        return out

    def _seeded_noise(self, image):
        """The noise of one image, from the seed and the image's values: the same in
        any batch, and independent for another image (a fresh sample of G at
        calibration must not get the noise a training sample had)."""
        digest = hashlib.blake2b(np.ascontiguousarray(image, dtype=np.float64).tobytes(),
                                 digest_size=8).digest()
        rng = np.random.default_rng([int(self.random_state), int.from_bytes(digest, "little")])
        return rng.standard_normal(image.shape)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class JPEGCompression(_ImagePerturbation):
    """JPEG compression and decompression with Pillow.

    Each image is clipped into [-1, 1], quantised to 8 bits
    (``round((x + 1) * 127.5)``), saved as JPEG at ``quality`` in memory,
    decoded and scaled back into [-1, 1].

    Parameters
    ----------
    quality : int, default=90
        JPEG quality, 1 (worst) to 100 (Pillow advises at most 95).
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.  ``C`` must be 1
        (grey) or 3 (RGB).

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.

    See Also
    --------
    GaussianBlur, GaussianNoise, ResizedCrop

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import JPEGCompression
    >>> X = np.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    >>> Xt = JPEGCompression(quality=75).fit_transform(X)
    >>> bool(np.abs(Xt - X.reshape(1, -1)).max() < 0.2)
    True
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "quality": [Interval(Integral, 1, 100, closed="both")],
    }
    _allowed_channels = (1, 3)
    _needs_unit_range = True

    def __init__(self, quality=90, *, input_shape=None):
        self.quality = quality
        self.input_shape = input_shape

    def _file_kinds(self):
        return {int(self.quality)}

    def _perturb(self, images):
        from PIL import Image

        mode = "L" if images.shape[1] == 1 else "RGB"
        pixels = np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
        out = np.empty(images.shape, dtype=np.float64)
        for i, img in enumerate(pixels):
            arr = img[0] if mode == "L" else img.transpose(1, 2, 0)
            buf = io.BytesIO()
            # uint8 (H, W) is read as "L", (H, W, 3) as "RGB"
            Image.fromarray(np.ascontiguousarray(arr)).save(
                buf, format="JPEG", quality=int(self.quality))
            buf.seek(0)
            with Image.open(buf) as decoded:
                dec = np.asarray(decoded.convert(mode), dtype=np.float64)
            out[i] = dec[None] if mode == "L" else dec.transpose(2, 0, 1)
        return out / 127.5 - 1.0


class ResizedCrop(_ImagePerturbation):
    """Centre crop, then bilinear resize back to the original size.

    Parameters
    ----------
    scale : float, default=0.9
        Side of the crop as a fraction of each image side, in (0, 1]
        (``scale=0.9`` keeps the central 90% of the height and of the width,
        81% of the area; at least one pixel).  1 is the identity.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.

    See Also
    --------
    GaussianBlur, GaussianNoise, JPEGCompression

    Notes
    -----
    The resize is :func:`torch.nn.functional.interpolate` with
    ``mode="bilinear", align_corners=False`` in float64, so values stay in
    the range of the input.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import ResizedCrop
    >>> X = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16))
    >>> ResizedCrop(scale=0.75).fit_transform(X).shape
    (2, 768)
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "scale": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(self, scale=0.9, *, input_shape=None):
        self.scale = scale
        self.input_shape = input_shape

    def _perturb(self, images):
        n, c, h, w = images.shape
        ch = min(h, max(1, int(round(self.scale * h))))
        cw = min(w, max(1, int(round(self.scale * w))))
        if (ch, cw) == (h, w):
            return images.copy()
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = torch.from_numpy(
            np.ascontiguousarray(images[:, :, top:top + ch, left:left + cw], dtype=np.float64))
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).numpy()


class Resize(_ImagePerturbation):
    """Resize by a factor and back, as an image tool does to an 8-bit image.

    Each image is clipped into [-1, 1], quantised to 8 bits
    (``round((x + 1) * 127.5)``), resized with Pillow's bicubic filter to
    ``round(scale * H) x round(scale * W)`` (at least one pixel), resized
    back to ``H x W`` the same way (a detector scores images of G's size)
    and scaled back into [-1, 1]: the output is an 8-bit image.  A published
    image shown or re-uploaded at another size goes through both steps.

    Parameters
    ----------
    scale : float, default=0.9
        Resize factor of each side, > 0 (0.9: 10 % smaller, 1.1: 10 %
        larger).  At 1 only the 8-bit quantisation remains.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.  ``C`` must be 1
        (grey) or 3 (RGB).

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.

    See Also
    --------
    ResizedCrop, JPEGCompression

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import Resize
    >>> X = np.linspace(-1, 1, 256).reshape(1, 1, 16, 16)
    >>> Xt = Resize(scale=1.1).fit_transform(X)
    >>> Xt.shape, bool(np.abs(Xt - X.reshape(1, -1)).max() < 0.1)
    ((1, 256), True)
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "scale": [Interval(Real, 0, None, closed="neither")],
    }
    _allowed_channels = (1, 3)
    _needs_unit_range = True

    def __init__(self, scale=0.9, *, input_shape=None):
        self.scale = scale
        self.input_shape = input_shape

    def _perturb(self, images):
        from PIL import Image

        n, c, h, w = images.shape
        size = (max(1, int(round(self.scale * w))), max(1, int(round(self.scale * h))))
        bicubic = Image.Resampling.BICUBIC
        pixels = np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
        out = np.empty(images.shape, dtype=np.float64)
        for i, img in enumerate(pixels):
            arr = img[0] if c == 1 else img.transpose(1, 2, 0)
            pil = Image.fromarray(np.ascontiguousarray(arr))
            if size != (w, h):
                pil = pil.resize(size, bicubic).resize((w, h), bicubic)
            back = np.asarray(pil, dtype=np.float64)
            out[i] = back[None] if c == 1 else back.transpose(2, 0, 1)
        return out / 127.5 - 1.0


class JPEGQuality(NamedTuple):
    """What :func:`jpeg_quality` read from a JPEG file."""

    #: The quality whose tables are closest (1 to 100).
    quality: int
    #: True when the file's tables are exactly those Pillow (libjpeg) writes at
    #: ``quality`` and its colours are subsampled as Pillow does by default
    #: (4:2:0): :class:`JPEGCompression` at that quality writes the same kind of file.
    exact: bool
    #: Chroma subsampling, "4:4:4", "4:2:2" or "4:2:0" (None: grey or other).
    subsampling: object = None


#: Pillow's get_sampling codes
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


@functools.lru_cache(maxsize=2)
def _pillow_tables(n_channels):
    """``{quality: quantisation tables}`` as Pillow writes them, for 1 to 100."""
    from PIL import Image

    # uint8 (8, 8) is read as "L", (8, 8, 3) as "RGB"
    blank = np.zeros((8, 8) if n_channels == 1 else (8, 8, 3), np.uint8)
    tables = {}
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(blank).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as img:
            tables[q] = {k: tuple(v) for k, v in img.quantization.items()}
    return tables


def jpeg_quality(file):
    """The JPEG quality a file was saved at, read from its quantisation tables.

    A detector scores a JPEG file honestly only when it was trained and
    calibrated on G's images saved the same way
    (``make_flipad(..., immunise=JPEGCompression(quality=q))``, and likewise
    in :func:`~flipad_sklearn.make_open_world_union`): this tells ``q``.
    Pillow (libjpeg, baseline) scales one standard pair of tables by the
    quality, so a file it wrote is matched exactly; other encoders and
    layouts (cameras, one table per component, 16-bit steps) get the
    nearest quality, with ``exact=False``.  An image opened from a file is
    read as the file; a copy or conversion of it is no longer a JPEG (None).

    Parameters
    ----------
    file : str, path-like, file object or PIL.Image.Image
        An image file (opened with Pillow), or an opened image.

    Returns
    -------
    quality : JPEGQuality or None
        ``(quality, exact, subsampling)``, or None when the file is not a JPEG
        (a PNG holds the 8-bit image as it is).

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> from flipad_sklearn.perturbations import jpeg_quality
    >>> buf = io.BytesIO()
    >>> Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG", quality=85)
    >>> jpeg_quality(buf)
    JPEGQuality(quality=85, exact=True, subsampling='4:2:0')
    """
    import os

    from PIL import Image

    if isinstance(file, Image.Image):
        return _image_jpeg_quality(file)
    if not (isinstance(file, (str, bytes, os.PathLike)) or hasattr(file, "read")):
        raise TypeError(f"jpeg_quality takes an image file (a path or a file object) or "
                        f"an opened PIL image, got {type(file).__name__}.")
    with Image.open(file) as img:
        return _image_jpeg_quality(img)


def _image_jpeg_quality(img):
    if img.format not in ("JPEG", "MPO"):        # MPO: a camera's JPEG with extra images
        return None
    found = {k: tuple(v) for k, v in getattr(img, "quantization", {}).items()}
    if 0 not in found or any(len(t) != 64 for t in found.values()):
        raise ValueError(f"The JPEG image has no readable 8x8 quantisation tables "
                         f"({sorted(found)}); its quality cannot be told.")
    from PIL import JpegImagePlugin

    grey = img.mode == "L"
    try:
        subsampling = None if grey else _SUBSAMPLING.get(JpegImagePlugin.get_sampling(img))
    except Exception:                   # noqa: BLE001 -- a frame header that lies
        subsampling = None
    reference = _pillow_tables(1 if grey else 3)
    as_pillow = grey or subsampling == "4:2:0"
    for q in range(100, 0, -1):      # tables unique per quality (tests/test_perturbations.py)
        if reference[q] == found:
            return JPEGQuality(q, as_pillow, subsampling)
    # the nearest quality, in log step size (a quality scales every step alike): the
    # first table against the luma table, any other against the chroma one
    roles = {k: 0 if k == 0 or grey else 1 for k in found}
    found_log = {k: np.log(np.maximum(np.array(t, dtype=float), 1.0)) for k, t in found.items()}

    def distance(q):
        ref = reference[q]
        return sum(float(np.abs(np.log(np.array(ref[min(roles[k], len(ref) - 1)],
                                                dtype=float)) - found_log[k]).sum())
                   for k in found)
    return JPEGQuality(min(range(1, 101), key=distance), False, subsampling)


def is_single_perturbation(transformer):
    """True for one of the package's perturbations of one kind (not a mixture):
    JPEG, resize, crop, blur or noise at one strength."""
    return isinstance(transformer, _ImagePerturbation) \
        and not isinstance(transformer, RandomPerturbation)


def published_mixture():
    """The perturbations a published image goes through, as a mixture.

    Four kinds drawn with equal weights, each with its strengths drawn
    uniformly: none (the image as published: an 8-bit file, PNG, read back),
    JPEG at quality 70-95 (:class:`JPEGCompression`), a resize by 0.90-1.10
    and back (:class:`Resize`, steps of 0.01) and a centre crop of 90-100 %
    of each side resized back (:class:`ResizedCrop`, steps of 0.01).  The
    default of :class:`RandomPerturbation`; measured in
    ``benchmarks/results/published_zoo/published_immunise.md``.

    Returns
    -------
    perturbations : list
        ``[None, [JPEGCompression, ...], [Resize, ...], [ResizedCrop, ...]]``,
        the ``perturbations`` parameter of :class:`RandomPerturbation`.
    """
    scales = np.round(np.arange(0, 21) * 0.01 + 0.9, 2)
    return [None,
            [JPEGCompression(quality=q) for q in range(70, 96)],
            [Resize(scale=float(v)) for v in scales],
            [ResizedCrop(scale=float(v)) for v in scales[scales <= 1.0]]]


class RandomPerturbation(_ImagePerturbation):
    """Each image through one perturbation drawn at random from a mixture.

    For immunisation without naming the perturbation: trained on G's samples
    and the labelled others each passed through a random draw of what
    published images go through, and thresholded on held-out samples of G
    perturbed the same way, a detector's fnr guarantee covers the mixture
    (:func:`~flipad_sklearn.pipeline.make_flipad` with ``immunise=``).

    Parameters
    ----------
    perturbations : "published" or list, default="published"
        The mixture's kinds.  Each entry is None (the image unchanged), a
        transformer of images (such as :class:`JPEGCompression`) or a
        non-empty list of them (the kind at several strengths: one drawn
        uniformly per image).  ``"published"``: :func:`published_mixture`
        (none, JPEG q 70-95, resize 0.9-1.1, centre crop 0.9-1.0).
    weights : array-like of shape (n_kinds,) or None, default=None
        Probability of each kind (normalised to sum 1); None: equal weights.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws.  With an int every call of ``transform`` draws the
        same perturbations for the same batch; None draws afresh.
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image, needed for flattened input.

    Attributes
    ----------
    input_shape_ : tuple of int
        ``(C, H, W)`` of one image.
    n_features_in_ : int
        ``C * H * W``.
    perturbations_ : list of list
        The mixture's kinds, each a list of its strengths (None: unchanged).
    weights_ : ndarray of shape (n_kinds,)
        The normalised weights.

    See Also
    --------
    published_mixture, JPEGCompression, Resize, ResizedCrop

    Notes
    -----
    Images that draw the same perturbation are perturbed as one batch by a
    fresh clone of it.  The kind and strength of a sample are drawn by its
    position in the batch (independent of the image, so a fresh sample's draw
    is as good as a new one).  Every kind of the mixture must
    accept the images (JPEG and resize: 1 or 3 channels, values in
    [-1, 1]); ``fit`` checks the channels.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn.perturbations import RandomPerturbation
    >>> X = np.linspace(-1, 1, 4 * 256).reshape(4, 1, 16, 16)
    >>> Xt = RandomPerturbation(random_state=0).fit_transform(X)
    >>> Xt.shape, bool(np.abs(Xt).max() <= 1)
    ((4, 256), True)
    """

    _parameter_constraints = {
        **_ImagePerturbation._parameter_constraints,
        "perturbations": [StrOptions({"published"}), list],
        "weights": ["array-like", None],
        "random_state": ["random_state"],
    }
    _needs_unit_range = True

    def __init__(self, perturbations="published", *, weights=None, random_state=None,
                 input_shape=None):
        self.perturbations = perturbations
        self.weights = weights
        self.random_state = random_state
        self.input_shape = input_shape

    def _kinds(self):
        """The mixture as a list of kinds, each a non-empty list (None: unchanged)."""
        entries = (published_mixture() if isinstance(self.perturbations, str)
                   else self.perturbations)
        if len(entries) == 0:
            raise ValueError("perturbations must hold at least one kind, got an empty list.")
        kinds = []
        for i, entry in enumerate(entries):
            strengths = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            if not strengths:
                raise ValueError(f"perturbations[{i}] is an empty list: give at least one "
                                 "transformer (or None for the unchanged image).")
            for t in strengths:
                if t is not None and not (hasattr(t, "fit") and hasattr(t, "transform")):
                    raise TypeError(f"perturbations[{i}] holds {t!r}: each entry must be "
                                    "None, a transformer of images or a list of them.")
            kinds.append(strengths)
        return kinds

    def _weights(self, n_kinds):
        if self.weights is None:
            return np.full(n_kinds, 1.0 / n_kinds)
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (n_kinds,) or not np.all(np.isfinite(w)) or np.any(w < 0) \
                or w.sum() <= 0:
            raise ValueError(f"weights must be {n_kinds} finite non-negative numbers (one per "
                             f"kind of perturbations) with a positive sum, got {self.weights!r}.")
        return w / w.sum()

    def fit(self, X, y=None):
        """Validate ``X`` and the mixture and record the image shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, C*H*W)
            Images in [-1, 1]; NaN and infinity are rejected.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._validate_params()
        kinds = self._kinds()
        weights = self._weights(len(kinds))
        super().fit(X, y)
        for strengths in kinds:
            for t in strengths:
                allowed = getattr(t, "_allowed_channels", None)
                if allowed is not None and self.input_shape_[0] not in allowed:
                    raise ValueError(
                        f"{type(t).__name__} in the mixture needs "
                        f"{' or '.join(map(str, allowed))} channels, got images of shape "
                        f"{self.input_shape_} (C, H, W).")
        self.perturbations_, self.weights_ = kinds, weights
        return self

    def _file_kinds(self):
        """Those of every perturbation drawn with a positive weight (None when one of
        them is not the package's: its files are not known)."""
        kinds = self._kinds()
        out = set()
        for strengths, w in zip(kinds, self._weights(len(kinds))):
            for t in strengths if w > 0 else ():
                files = {None} if t is None else getattr(t, "_file_kinds", lambda: None)()
                if files is None:
                    return None
                out |= files
        return out

    def _perturb(self, images):
        rng = check_random_state(self.random_state)
        kinds, n = self.perturbations_, images.shape[0]
        kind = rng.choice(len(kinds), size=n, p=self.weights_)
        strength = np.array([rng.randint(len(kinds[k])) for k in kind], dtype=int)
        return self._apply(images, kind, strength)

    def _apply(self, images, kind, strength):
        """Image i through strength ``strength[i]`` of kind ``kind[i]``."""
        out = np.array(images, dtype=np.float64)
        for k, strengths in enumerate(self.perturbations_):
            for j, t in enumerate(strengths):
                idx = np.flatnonzero((kind == k) & (strength == j))
                if idx.size == 0 or t is None:
                    continue
                Xt = clone(t).fit_transform(images[idx])
                out[idx] = np.asarray(Xt, dtype=np.float64).reshape((idx.size,) + images.shape[1:])
        return out

    def transform_each_kind(self, X):
        """Every image through each kind of the mixture: one perturbed copy per kind.

        For a guarantee per kind (:func:`~flipad_sklearn.calibrate` with
        ``each_kind=True``): a threshold set on each image's lowest score over
        these copies rejects G's images at most at its fnr under every kind,
        not only on average over the mixture.  A kind of several strengths
        draws one per image (seeded by ``random_state`` as ``transform``);
        kinds of weight 0 are left out.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, C*H*W)
            Images of the fitted shape, in [-1, 1].

        Returns
        -------
        copies : list of ndarray of shape (n_samples, C*H*W)
            One per kind of positive weight, in the mixture's order.
        """
        images = self._validate_transform(X)
        rng = check_random_state(self.random_state)
        n, out = images.shape[0], []
        for k, strengths in enumerate(self.perturbations_):
            if self.weights_[k] <= 0:
                continue
            strength = rng.randint(len(strengths), size=n)
            copy = self._apply(images, np.full(n, k), strength)
            out.append(np.asarray(copy, dtype=images.dtype).reshape(n, -1))
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
