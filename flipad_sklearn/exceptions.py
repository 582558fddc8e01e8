"""Warnings of the package that have no scikit-learn counterpart."""

__all__ = ["InputContractWarning", "LabelConventionWarning", "OutOfRangeWarning"]


class OutOfRangeWarning(UserWarning):
    """Many input values lie outside the range the step expects.

    Raised, for example, when images in ``[0, 255]`` are given to a
    :class:`~flipad_sklearn.FinalLayerInverter` of a tanh generator (whose
    outputs lie in ``[-1, 1]``): the values are clipped into the range, so the
    images lose their content.  Scale the inputs to the generator's range.
    """


class LabelConventionWarning(UserWarning):
    """``y`` looks like scikit-learn's binary labels, not FLIPAD's convention.

    FLIPAD reads ``1`` as made by G, ``-1`` as known not made by G and ``0``
    as unlabelled (trained on like G's samples).  A ``y`` in {0, 1} (or
    boolean) with no ``-1`` usually means "0 = not G" (scikit-learn's binary
    convention): those samples would then be learnt as G's, not rejected.
    Map it with ``np.where(y == 1, 1, -1)``.
    """


class InputContractWarning(UserWarning):
    """Inputs do not match what a fitted pipeline was trained on.

    For example images read from 8-bit files (every value on the 256-level
    grid of the generator's range) given to a pipeline fitted on G's
    unquantised float outputs: the quantisation alone moves G's own images
    out of the accepted region.  See
    :class:`~flipad_sklearn.ConformalPipeline`'s ``quantize``.
    """
