"""Deprecated: moved to :mod:`flipad_sklearn.operators.embedding`."""

from .._deprecated import moved
from ..operators.embedding import (  # noqa: F401
    Conv2dEmbedding, ConvTranspose2dEmbedding, PeriodicEmbedding, periodic_embedding,
)

moved("flipad_sklearn.lasso.embedding", "flipad_sklearn.operators.embedding")
