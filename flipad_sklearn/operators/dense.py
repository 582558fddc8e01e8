"""A fully connected layer's weight ``(M, K)`` as an operator."""

import torch

from .base import LayerOperator


class DenseOperator(LayerOperator):
    """A ``Linear`` layer's weight ``(M, K)`` as an operator (exact Lipschitz constant)."""

    layer_name = "Linear"

    def _compute_output_shape(self):
        return (int(self.weight.shape[0]),)

    def matvec(self, z):
        """``W z`` for a batch ``z`` of shape ``(B, n_inputs)``."""
        return z @ self.weight_as(z.device, z.dtype).T

    def rmatvec(self, r):
        """``Wᵀ r`` for a batch ``r`` of shape ``(B, n_outputs)``."""
        return r @ self.weight_as(r.device, r.dtype)

    def stored_matrix(self):
        return self.weight.numpy()

    def to_dense(self, max_entries=None):
        return self.weight.numpy().copy()

    def lipschitz(self, *args, **kwargs):
        return float(torch.linalg.matrix_norm(self.weight, ord=2) ** 2)

    def column_norms_sq(self):
        """Squared column norms of ``W`` (one per input coordinate), float64."""
        return (self.weight ** 2).sum(dim=0)
