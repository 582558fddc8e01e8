"""Feature steps between the inversion and the detector.

All steps take flat ``(n, C*H*W)`` (or 4-D ``(n, C, H, W)``) input and return
2-D float arrays, so any scikit-learn step can follow.  4-D input after
``fit`` must have the per-sample shape used at fit (``input_shape_``): the
same number of values in another layout (channels last) is refused with a
``ValueError`` rather than read wrongly.  Labels follow the
package convention: 1 = made by G, -1 = known not made by G, 0 = unlabelled.
"""

from numbers import Integral, Real

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import (
    check_image_shape, check_labels, flatten_images, normal_mask, resolve_input_shape,
)

_FLOATS = [np.float64, np.float32]


def _preserve_float_tags(tags):
    tags.transformer_tags.preserves_dtype = ["float64", "float32"]
    return tags


class ActivationPooling(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Spatial max/average pooling or centre crop of flattened activations.

    Parameters
    ----------
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one sample.  None: taken from 4-D input; flat input is then
        read as C = n_features channels of size 1x1 (pooling is the identity).
    method : {"max", "avg", "center_crop"}, default="max"
        Non-overlapping ``kernel_size`` pooling (trailing rows/columns that do
        not fill a window are dropped), or the central ``crop_size`` window.
    kernel_size : int, default=2
        Pooling window and stride; clipped to the spatial size.
    crop_size : int or None, default=None
        Side of the centre crop (clipped to the spatial size); None: half of
        each spatial side, rounded up.

    Attributes
    ----------
    input_shape_ : tuple
        ``(C, H, W)`` used.
    output_shape_ : tuple
        ``(C, H_out, W_out)`` of one transformed sample.
    n_features_in_ : int
        Number of flat input features.

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import ActivationPooling
    >>> X = np.arange(32.0).reshape(2, 16)
    >>> ActivationPooling(input_shape=(1, 4, 4)).fit_transform(X)[0]
    array([ 5.,  7., 13., 15.])
    """

    _parameter_constraints = {
        "input_shape": [None, tuple, list],
        "method": [StrOptions({"max", "avg", "center_crop"})],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "crop_size": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, input_shape=None, *, method="max", kernel_size=2, crop_size=None):
        self.input_shape = input_shape
        self.method = method
        self.kernel_size = kernel_size
        self.crop_size = crop_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the input shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : ignored

        Returns
        -------
        self : ActivationPooling
        """
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS)
        self.input_shape_ = resolve_input_shape(
            self.input_shape, nd_shape, X.shape[1], "channels")
        c, h, w = self.input_shape_
        if self.method == "center_crop":
            ch = min(self.crop_size or -(-h // 2), h)
            cw = min(self.crop_size or -(-w // 2), w)
            self.output_shape_ = (c, ch, cw)
        else:
            kh, kw = min(self.kernel_size, h), min(self.kernel_size, w)
            self._kernel = (kh, kw)
            self.output_shape_ = (c, h // kh, w // kw)
        self._n_features_out = int(np.prod(self.output_shape_))
        return self

    def transform(self, X):
        """Pool or crop each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        X_out : ndarray of shape (n_samples, C * H_out * W_out)
        """
        check_is_fitted(self)
        X, nd_shape = flatten_images(X)
        check_image_shape(nd_shape, self.input_shape_, type(self).__name__)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        n = X.shape[0]
        c, h, w = self.input_shape_
        _, ho, wo = self.output_shape_
        A = X.reshape(n, c, h, w)
        if self.method == "center_crop":
            top, left = (h - ho) // 2, (w - wo) // 2
            out = A[:, :, top:top + ho, left:left + wo]
        else:
            # torch's pooling is ~20x faster than a numpy reduction over strided axes.
            pool = F.max_pool2d if self.method == "max" else F.avg_pool2d
            A = np.ascontiguousarray(A)
            # from_numpy shares memory (no copy) but refuses read-only arrays.
            t = torch.from_numpy(A) if A.flags.writeable else torch.tensor(A)
            out = pool(t, self._kernel, self._kernel).numpy()
        return np.ascontiguousarray(out.reshape(n, -1), dtype=X.dtype)

    def __sklearn_tags__(self):
        return _preserve_float_tags(super().__sklearn_tags__())


class ChannelSelector(SelectorMixin, BaseEstimator):
    """Keep the channels whose means differ most between G's samples and others.

    A channel's score is ``|mean over y=1 - mean over y=-1|`` of its values
    (averaged over samples and spatial positions).  Without labelled others
    (``y`` None or no ``y == -1``) there is nothing to contrast, and the step
    keeps every feature.

    Parameters
    ----------
    n_channels : int, default=32
        Channels to keep (clipped to the number of channels).
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one sample.  None: taken from 4-D input; flat input is read
        as one channel per feature (features are selected individually).

    Attributes
    ----------
    input_shape_ : tuple
        ``(C, H, W)`` used.
    channels_ : ndarray of int
        Indices of the kept channels, in increasing order.
    scores_ : ndarray of shape (C,) or None
        Channel scores; None when fitted without labelled others.
    n_features_in_ : int
        Number of flat input features.
    """

    _parameter_constraints = {
        "n_channels": [Interval(Integral, 1, None, closed="left")],
        "input_shape": [None, tuple, list],
    }

    def __init__(self, n_channels=32, *, input_shape=None):
        self.n_channels = n_channels
        self.input_shape = input_shape

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Score the channels on the labelled samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled.

        Returns
        -------
        self : ChannelSelector
        """
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS)
        labels = check_labels(y, X.shape[0])
        self.input_shape_ = resolve_input_shape(
            self.input_shape, nd_shape, X.shape[1], "channels")
        c = self.input_shape_[0]
        pos, neg = labels == 1, labels == -1
        if not neg.any():
            self.scores_ = None
            self.channels_ = np.arange(c)
            return self
        if not pos.any():
            raise ValueError(
                "ChannelSelector needs samples of both classes to rank channels: "
                "y contains -1 (known not made by G) but no 1 (made by G).")
        A = X.reshape(X.shape[0], c, -1).astype(np.float64, copy=False)
        self.scores_ = np.abs(A[pos].mean(axis=(0, 2)) - A[neg].mean(axis=(0, 2)))
        k = min(self.n_channels, c)
        # Stable sort: ties keep the lower channel index.
        self.channels_ = np.sort(np.argsort(-self.scores_, kind="stable")[:k])
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        c, h, w = self.input_shape_
        mask = np.zeros(c, dtype=bool)
        mask[self.channels_] = True
        return np.repeat(mask, h * w)

    def transform(self, X):
        """Keep the selected channels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        X_out : ndarray of shape (n_samples, n_kept_channels * H * W)
        """
        check_is_fitted(self)
        X, nd_shape = flatten_images(X)
        check_image_shape(nd_shape, self.input_shape_, type(self).__name__)
        return super().transform(X)

    def __sklearn_tags__(self):
        return _preserve_float_tags(super().__sklearn_tags__())


class GeneratorStandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise with G's own mean and std: ``(x - mean_G) / (std_G + eps)``.

    The statistics come from the samples with ``y == 1`` (all unlabelled
    samples when there are none, all samples when ``y`` is None).  The
    ``eps`` in the denominator (0.05 in FLIPAD) keeps near-constant features
    of G from being blown up.

    Parameters
    ----------
    eps : float, default=0.05
        Added to the standard deviation.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of G's samples.
    scale_ : ndarray of shape (n_features,)
        ``std + eps``.
    n_samples_seen_ : int
        Samples used for the statistics.
    n_features_in_ : int
        Number of input features.
    """

    _parameter_constraints = {"eps": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, eps=0.05):
        self.eps = eps

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute G's mean and std.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled.

        Returns
        -------
        self : GeneratorStandardScaler
        """
        X, self._image_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS)
        G = X[normal_mask(check_labels(y, X.shape[0]))].astype(np.float64, copy=False)
        mean = G.mean(axis=0)
        self._set_moments(G.shape[0], mean, G.var(axis=0) * G.shape[0], min_n=1)
        self.mean_ = mean                       # exactly numpy's mean and std
        self.scale_ = G.std(axis=0) + self.eps
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Update G's mean and std with a batch (for data that do not fit in memory).

        The statistics are merged exactly (Chan et al.'s pairwise update of
        the mean and the sum of squared deviations), so fitting batch by
        batch gives :meth:`fit`'s numbers up to rounding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : array-like of shape (n_samples,), default=None
            The rows with ``y == 1`` are used; None: all rows.  Unlike
            :meth:`fit`, unlabelled rows are no fallback (a stream's labels
            are not known in advance): pass the rows that stand for G.

        Returns
        -------
        self : GeneratorStandardScaler
        """
        first = not hasattr(self, "_m2")
        X, _ = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS, reset=first,
                          ensure_min_samples=0 if not first else 1)
        if y is not None:
            X = X[check_labels(y, X.shape[0]) == 1]
        B = X.astype(np.float64, copy=False)
        n_b = B.shape[0]
        n, mean, m2 = (0, np.zeros(X.shape[1]), np.zeros(X.shape[1])) if first \
            else (self.n_samples_seen_, self.mean_, self._m2)
        if n_b:
            mean_b = B.mean(axis=0)
            m2_b = ((B - mean_b) ** 2).sum(axis=0)
            delta = mean_b - mean
            total = n + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta ** 2 * (n * n_b / total)
            n = total
        self._set_moments(n, mean, m2)
        return self

    def _set_moments(self, n, mean, m2, min_n=2):
        """Fitted state from a count, a mean and a sum of squared deviations
        (a zero std is an error from ``min_n`` samples on)."""
        self.n_samples_seen_ = int(n)
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self._m2 = np.asarray(m2, dtype=np.float64)
        self.scale_ = np.sqrt(self._m2 / max(n, 1)) + self.eps
        if n >= min_n and np.any(self.scale_ == 0):
            raise ValueError(
                "Some features are constant over G's samples and eps=0: "
                "division by zero. Use eps > 0.")

    def transform(self, X):
        """Standardise.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        X_out : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X, nd_shape = flatten_images(X)
        check_image_shape(nd_shape, getattr(self, "_image_shape", None), type(self).__name__)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return ((X - self.mean_) / self.scale_).astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """Undo the standardisation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_orig : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return (X * self.scale_ + self.mean_).astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        return _preserve_float_tags(super().__sklearn_tags__())


def _tile_grid(shape, k):
    """Tile height and width, and the padded image's height and width, of ``k`` x ``k``
    tiles of a ``(C, H, W)`` image: a side smaller than ``k`` is one tile (so padding
    never more than doubles a side)."""
    _, H, W = shape
    kh, kw = min(int(k), H), min(int(k), W)
    return kh, kw, -(-H // kh) * kh, -(-W // kw) * kw


def n_tile_features(shape, k):
    """The number of tile coefficients :class:`DCTFeatures` adds for ``block_size=k``."""
    _, _, Hp, Wp = _tile_grid(shape, k)
    return shape[0] * Hp * Wp


def _tile_dct(images, k):
    """The orthonormal DCT-II of each tile of ``(n, C, H, W)`` images, flat.

    Edges are padded by repetition to whole tiles (what a JPEG encoder does).
    """
    n, C, H, W = images.shape
    kh, kw, Hp, Wp = _tile_grid((C, H, W), k)
    if (Hp, Wp) != (H, W):
        images = np.pad(images, ((0, 0), (0, 0), (0, Hp - H), (0, Wp - W)), mode="edge")
    tiles = images.reshape(n, C, Hp // kh, kh, Wp // kw, kw)
    return scipy.fft.dctn(tiles, axes=(3, 5), norm="ortho").reshape(n, -1)


class DCTFeatures(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """``log(|DCT-II(x)| + eps)`` over the two spatial axes of each channel.

    The spectral features of the DCTPAD baseline (Frank et al., 2020:
    generated images leave traces in the DCT spectrum).  Orthonormal
    ``scipy.fft.dctn``.

    Parameters
    ----------
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one image.  None: taken from 4-D input; flat input is read as
        a single-channel 1 x n_features image (a 1-D DCT of each row).
    eps : float, default=1e-12
        Added to ``|DCT|`` before the log (exact zeros stay finite).
    block_size : int or None, default=None
        None: the spectrum of the whole image.  ``k``: that spectrum followed
        by the spectrum of each ``k`` x ``k`` tile, counted from the top-left
        corner (the last row and column of tiles padded by repeating the
        edge, as a JPEG encoder does; a side shorter than ``k`` is one
        tile), ``C * ceil(H/k) * k * ceil(W/k) * k`` more features when
        both sides are at least ``k``.  The tiles' coefficients are laid
        out as the image, like a JPEG decoder's coefficient planes:
        coefficient ``(u, v)`` of the tile in tile row ``i`` and column
        ``j`` of channel ``c`` at row ``i k + u``, column ``j k + v``
        (feature name ``tile_c{c}_y{row}_x{col}``).  At ``k = 8`` the tiles
        are JPEG's blocks: JPEG quantises each tile's coefficients, and an
        upsampling trace that the whole image's spectrum loses in a
        recompressed file stays in them (measured in
        ``benchmarks/results/bench_face_jpeg_grid.md``).

    Attributes
    ----------
    input_shape_ : tuple
        ``(C, H, W)`` used.
    n_features_in_ : int
        Number of flat input features.
    """

    _parameter_constraints = {
        "input_shape": [None, tuple, list],
        "eps": [Interval(Real, 0, None, closed="neither")],
        "block_size": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, input_shape=None, *, eps=1e-12, block_size=None):
        self.input_shape = input_shape
        self.eps = eps
        self.block_size = block_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the image shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : ignored

        Returns
        -------
        self : DCTFeatures
        """
        if isinstance(self.block_size, (bool, np.bool_)):
            # scikit-learn's Integral interval takes True as 1
            raise ValueError(f"block_size must be a positive integer or None, got "
                             f"{self.block_size!r}.")
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=_FLOATS)
        self.input_shape_ = resolve_input_shape(
            self.input_shape, nd_shape, X.shape[1], "row")
        return self

    def transform(self, X):
        """Log-magnitude DCT spectrum of each image, flattened.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        X_out : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X, nd_shape = flatten_images(X)
        check_image_shape(nd_shape, self.input_shape_, type(self).__name__)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        images = X.reshape(X.shape[0], *self.input_shape_)
        spec = scipy.fft.dctn(images, axes=(-2, -1), norm="ortho").reshape(X.shape[0], -1)
        if self.block_size is not None:
            spec = np.concatenate([spec, _tile_dct(images, self.block_size)], axis=1)
        out = np.log(np.abs(spec) + X.dtype.type(self.eps))
        return out.astype(X.dtype, copy=False)

    def _file_format_version(self):
        """The oldest format of :mod:`~flipad_sklearn.persistence` that holds this
        transformer: 3 with tiles (an older reader would compute the whole
        image's spectrum alone), else 1."""
        return 1 if self.block_size is None else 3

    def get_feature_names_out(self, input_features=None):
        """The input's names (one spectrum coefficient each), then
        ``tile_c{c}_y{row}_x{col}`` for the tiles' coefficients with
        ``block_size`` (their place in the coefficient planes, see the
        class's docstring).

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            As in :class:`~sklearn.base.OneToOneFeatureMixin`.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        names = super().get_feature_names_out(input_features)
        if self.block_size is None:
            return names
        C = self.input_shape_[0]
        _, _, rows, cols = _tile_grid(self.input_shape_, self.block_size)
        tiles = [f"tile_c{c}_y{y}_x{x}" for c in range(C) for y in range(rows)
                 for x in range(cols)]
        return np.concatenate([names, np.asarray(tiles, dtype=object)])

    def __sklearn_tags__(self):
        return _preserve_float_tags(super().__sklearn_tags__())
