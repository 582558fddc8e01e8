"""Shared input checks for the feature steps and the detector.

Two conventions live here so every step reads them the same way:

* images/activations arrive either flat ``(n, C*H*W)`` or 4-D ``(n, C, H, W)``;
  4-D input is flattened before scikit-learn's validation, so ``n_features_in_``
  always counts the flat features;
* labels: ``1`` = made by G, ``-1`` = known not made by G, ``0`` = unlabelled.
"""

import warnings
from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_consistent_length, column_or_1d

from .exceptions import LabelConventionWarning


def flatten_images(X):
    """Flatten a 4-D ``(n, C, H, W)`` array; return ``(X_flat, shape or None)``.

    Anything that is not 4-D is returned untouched so that scikit-learn's own
    validation produces its usual messages (1-D, 3-D, sparse, lists, ...).
    """
    if getattr(X, "ndim", None) == 4 and not hasattr(X, "tocsr"):
        X = np.asarray(X)
        return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])
    return X, None


def check_image_shape(nd_shape, fitted_shape, what):
    """Refuse 4-D input whose per-sample shape differs from the one used at fit.

    Comparing only the flat number of features would accept NHWC images for a
    step fitted on NCHW ones (same size, another layout) and give wrong
    results silently.  ``fitted_shape`` None (a step fitted on flat input
    without a shape) accepts any 4-D input of the right size.
    """
    if nd_shape is None or fitted_shape is None:
        return
    nd_shape, fitted_shape = tuple(nd_shape), tuple(fitted_shape)
    if nd_shape != fitted_shape:
        hint = ""
        if sorted(nd_shape) == sorted(fitted_shape):
            hint = (" It holds the same values in another layout (channels last?): "
                    "transpose it, e.g. X.transpose(0, 3, 1, 2) for NHWC images.")
        raise ValueError(
            f"X has samples of shape {nd_shape}, but {what} was fitted on samples of "
            f"shape {fitted_shape} (C, H, W).{hint}"
        )


def resolve_input_shape(input_shape, nd_shape, n_features, default):
    """Return the ``(C, H, W)`` shape of one flattened sample.

    Parameters
    ----------
    input_shape : tuple of 3 int or None
        The user's parameter.
    nd_shape : tuple or None
        Shape seen on a 4-D input, if any.
    n_features : int
        Number of flat features.
    default : {"channels", "row"}
        What a flat input without ``input_shape`` means: ``"channels"`` reads
        every feature as a channel of size 1x1, ``"row"`` reads a sample as a
        single-channel 1 x n_features image.
    """
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(
            isinstance(s, Integral) and not isinstance(s, bool) and s >= 1
            for s in shape
        ):
            raise ValueError(
                f"input_shape must be three positive integers (C, H, W); "
                f"got {input_shape!r}."
            )
        shape = tuple(int(s) for s in shape)
        if nd_shape is not None and nd_shape != shape:
            raise ValueError(
                f"X has per-sample shape {nd_shape} but input_shape={shape}."
            )
        if int(np.prod(shape)) != n_features:
            raise ValueError(
                f"input_shape={shape} holds {int(np.prod(shape))} values but X "
                f"has {n_features} features per sample."
            )
        return shape
    if nd_shape is not None:
        return nd_shape
    if default == "channels":
        return (n_features, 1, 1)
    return (1, 1, n_features)


def check_labels(y, n_samples):
    """Validate ``y`` against the FLIPAD label convention.

    Returns an int array in {-1, 0, 1} (all zeros when ``y`` is None).
    Values other than -1, 0 and 1 are read as unlabelled, with a warning:
    scikit-learn's generic checks pass arbitrary class labels, and refusing
    them would make the steps unusable in generic tooling, but a silent
    reinterpretation would hide a user's mistake.
    """
    if y is None:
        return np.zeros(n_samples, dtype=np.int64)
    y = column_or_1d(y, warn=True)
    check_consistent_length(np.empty((n_samples, 0)), y)
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"Unknown label type: y has dtype {y.dtype}; it must be numeric: "
            "1 = made by G, -1 = known not made by G, 0 = unlabelled."
        )
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinity.")
    _warn_binary_labels(y)
    out = np.zeros(n_samples, dtype=np.int64)
    out[y == 1] = 1
    out[y == -1] = -1
    unknown = ~np.isin(y, (-1, 0, 1))
    if unknown.any():
        warnings.warn(
            f"{int(unknown.sum())} labels are not in {{-1, 0, 1}} (found "
            f"{np.unique(y[unknown])[:5].tolist()}); they are treated as "
            "unlabelled (0). Convention: 1 = made by G, -1 = known not made "
            "by G, 0 = unlabelled.",
            UserWarning,
            stacklevel=3,
        )
    return out


def _warn_binary_labels(y):
    """Warn when ``y`` looks like scikit-learn's binary labels (0 = not G).

    A boolean ``y`` with a ``False``, or a numeric ``y`` holding both 0 and 1
    and no -1, is most likely "1 = G, 0 = not G"; FLIPAD reads 0 as
    *unlabelled* and trains on those samples like G's, so the known
    negatives would be accepted instead of rejected (the rejection of a
    known other source fell from 0.97 to 0.21 in issue 27's measurement).
    Not refused: a mix of G's samples and unlabelled ones is a legitimate
    semi-supervised use (and scikit-learn's generic checks fit on {0, 1}).
    """
    if y.size == 0:
        return
    if y.dtype.kind == "b":
        if y.all():
            return
        what = "y is boolean"
    elif np.isin(y, (0, 1)).all() and (y == 0).any() and (y == 1).any():
        what = "y holds only 0 and 1"
    else:
        return
    n0 = int(np.sum(y == 0))
    warnings.warn(
        f"{what}: {n0} sample(s) labelled 0/False are read as UNLABELLED and trained on "
        "like G's samples, not as known negatives. flipad_sklearn's convention: 1 = made "
        "by G, -1 = known not made by G, 0 = unlabelled. If 0 means 'not made by G' "
        "(scikit-learn's binary convention), pass y = np.where(y == 1, 1, -1).",
        LabelConventionWarning,
        stacklevel=4,
    )


def normal_mask(labels):
    """Samples that stand for G: the ``y == 1`` ones, else all unlabelled.

    Raises a ValueError when only labelled non-G samples are present.
    """
    if np.any(labels == 1):
        return labels == 1
    if np.any(labels == 0):
        return labels == 0
    raise ValueError(
        "y contains only one class (-1, known not made by G): at least one "
        "sample of G (y=1) or unlabelled sample (y=0) is needed."
    )
