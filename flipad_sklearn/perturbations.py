"""Image perturbations as scikit-learn transformers: blur, noise, JPEG, crop, resize.

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

:class:`JPEGCompression`, :class:`Resize` and :class:`GaussianNoise` clip into [-1, 1] (and
the noise's ``std`` is in its units): they refuse integer images (scale
``uint8`` pixels with ``X / 127.5 - 1``) and warn with
:class:`~flipad_sklearn.exceptions.OutOfRangeWarning` when more than 1% of
the values lie outside [-1, 1].  Blur and crop are linear and work on any
scale.
"""

import io
from numbers import Integral, Real

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import flatten_images, resolve_input_shape
from .activations import BUILTIN_ACTIVATIONS

__all__ = ["GaussianBlur", "GaussianNoise", "JPEGCompression", "Resize", "ResizedCrop"]

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
        Seeds the noise.  With an int, every call of ``transform`` draws the
        same noise for the same batch (reproducible); None draws fresh noise.
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
    The noise of a sample depends on its position in the batch: transforming
    a subset or a reordered batch draws other noise (that is what noise is),
    so the result is not invariant to batch order.

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
        rng = check_random_state(self.random_state)
        out = images + self.std * rng.standard_normal(images.shape)
        if self.clip:
            np.clip(out, -1.0, 1.0, out=out)
        return out

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
