"""Warnings of the package that have no scikit-learn counterpart."""

__all__ = ["OutOfRangeWarning"]


class OutOfRangeWarning(UserWarning):
    """Many input values lie outside the range the step expects.

    Raised, for example, when images in ``[0, 255]`` are given to a
    :class:`~flipad_sklearn.FinalLayerInverter` of a tanh generator (whose
    outputs lie in ``[-1, 1]``): the values are clipped into the range, so the
    images lose their content.  Scale the inputs to the generator's range.
    """
