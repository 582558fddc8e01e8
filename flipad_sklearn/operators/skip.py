"""A final layer with an unpenalised, upsampled skip image, as a lasso operator.

StyleGAN2 ends in ``y = U s + W u`` (after undoing the bias and the output
activation): ``u = s_style ⊙ h`` the modulated input of the last toRGB (a 1x1
convolution ``W``), ``s`` the previous resolution's image and ``U`` the
skip's linear 2x upsampling.  The joint problem::

    min_{u, s} 1/2 ||y - W u - U s||^2 + alpha ||u - anchor||_1

has, for fixed ``u``, the best skip ``s*(u) = (UᵀU)⁻¹ Uᵀ (y - W u)``, and the
value at ``s*`` is ``1/2 ||P⊥ (y - W u)||^2`` with ``P⊥ = I - U (UᵀU)⁻¹ Uᵀ``.
So the joint problem is a standard lasso in ``u`` with the operator
``A = P⊥ W`` and the target ``P⊥ y``: every solver and its duality-gap
certificate apply unchanged, and the gap bounds the joint problem's
suboptimality too (its value at ``(u, s*(u))`` is the lasso's at ``u``).

Separable upsamplings (nearest, bilinear, StyleGAN2's FIR ``[1, 3, 3, 1]``
upsampling) act as ``U1 X U1ᵀ`` on each channel's ``H/2 x W/2`` image
``X``, with ``U1`` a ``H x H/2`` matrix; then ``P = P1 ⊗ P1`` with
``P1 = U1 (U1ᵀU1)⁻¹ U1ᵀ``, an ``H x H`` matrix: exact and cheap at any
image size.
"""

import numpy as np
import torch
import torch.nn.functional as F

from .base import LayerOperator, Operator

#: the upsamplings of the skip image known by name
UPSAMPLINGS = ("nearest", "bilinear")


def upsampling_matrix(n, mode="nearest"):
    """The ``2n x n`` matrix ``U1`` of a 1-D 2x upsampling, float64.

    ``mode="nearest"`` repeats each entry; ``"bilinear"`` is torch's
    ``F.interpolate(..., scale_factor=2, mode="bilinear", align_corners=False)``
    along one axis (2-D bilinear upsampling is ``U1 X U1ᵀ``).
    """
    if mode not in UPSAMPLINGS:
        raise ValueError(f"upsample must be one of {UPSAMPLINGS} or a matrix, got {mode!r}.")
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]           # (n, 1, n): n signals
    if mode == "nearest":
        out = F.interpolate(eye, scale_factor=2, mode="nearest")
    else:
        out = F.interpolate(eye, scale_factor=2, mode="linear", align_corners=False)
    return out[:, 0, :].T.contiguous()                             # (2n, n)


def upsample2d(x, U1h, U1w):
    """``U1h X U1wᵀ`` on each channel of a batch ``x`` of shape ``(B, C, h, w)``."""
    return torch.einsum("ia,bcaj,kj->bcik", U1h, x, U1w)


def _check_matrix(U1, n_out, name):
    U1 = torch.as_tensor(np.asarray(U1, dtype=np.float64))
    if U1.ndim != 2 or U1.shape[0] != n_out or U1.shape[1] < 1 or U1.shape[1] > n_out:
        raise ValueError(
            f"{name} must be a matrix of shape ({n_out}, m) with 1 <= m <= {n_out} (the "
            f"1-D upsampling to the image's {n_out} rows/columns); got shape "
            f"{tuple(U1.shape)}.")
    if not torch.isfinite(U1).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    sv = torch.linalg.svdvals(U1)
    if float(sv.min()) <= 1e-10 * float(sv.max()):
        raise ValueError(f"{name} does not have full column rank: the skip image would "
                         "not be determined by its upsampling.")
    return U1


class SkipProjectedOperator(Operator):
    """``A = P⊥ W``: a final layer with the upsampled skip image projected out.

    An :class:`~.base.Operator` with no capability beyond the products (the
    projection breaks the convolution's structure): the solvers run it with
    FISTA.

    Parameters
    ----------
    base : LayerOperator
        ``W``: the final layer (e.g. StyleGAN2's last toRGB as a 1x1
        ``Conv2d``), with output shape ``(C, H, W)``, H and W even.
    upsample : {"nearest", "bilinear"} or (array, array) or array, default="nearest"
        The skip image's 2x upsampling, separable: a name, or the 1-D
        matrices ``(U1h, U1w)`` of shapes ``(H, h)`` and ``(W, w)`` (one matrix
        for both axes when the image is square), e.g. StyleGAN2's FIR
        upsampling.

    Attributes
    ----------
    skip_shape : tuple of int
        Shape ``(C, h, w)`` of the skip image.
    """

    def __init__(self, base, upsample="nearest"):
        if not isinstance(base, LayerOperator):
            raise TypeError(f"base must be a LayerOperator, got {type(base).__name__}.")
        if len(base.output_shape) != 3:
            raise ValueError(f"The skip image needs a final layer with image outputs "
                             f"(C, H, W); this one outputs {base.output_shape}.")
        c, H, W = base.output_shape
        if isinstance(upsample, str):
            if H % 2 or W % 2:
                raise ValueError(f"A 2x {upsample} upsampling needs even image sides; the "
                                 f"final layer outputs {H}x{W}.")
            U1h = upsampling_matrix(H // 2, upsample)
            U1w = U1h if W == H else upsampling_matrix(W // 2, upsample)
        else:
            if isinstance(upsample, (tuple, list)) and len(upsample) == 2 and all(
                    isinstance(m, (np.ndarray, torch.Tensor, list, tuple))
                    and np.ndim(m) == 2 for m in upsample):
                pair = tuple(upsample)                      # (rows, columns)
            elif np.ndim(upsample) == 2:
                pair = (upsample, upsample)
            else:
                raise ValueError(f"upsample must be one of {UPSAMPLINGS}, one matrix or a "
                                 "pair of matrices (rows, columns).")
            U1h = _check_matrix(pair[0], H, "upsample (rows)")
            U1w = _check_matrix(pair[1], W, "upsample (columns)")
        self.base = base
        self.upsample = upsample if isinstance(upsample, str) else "matrix"
        self.U1h, self.U1w = U1h, U1w
        # pseudo-inverses (UᵀU)⁻¹Uᵀ of the 1-D factors: the skip image from an image
        self.pinv_h = torch.linalg.solve(U1h.T @ U1h, U1h.T)
        self.pinv_w = torch.linalg.solve(U1w.T @ U1w, U1w.T)
        self.P1h, self.P1w = U1h @ self.pinv_h, U1w @ self.pinv_w
        self.input_shape, self.output_shape = base.input_shape, base.output_shape
        self.n_inputs, self.n_outputs = base.n_inputs, base.n_outputs
        self.skip_shape = (c, U1h.shape[1], U1w.shape[1])
        self._init_cache()

    @property
    def layer_name(self):
        return f"{self.base.layer_name} with a projected skip"

    # ------------------------------------------------------------- helpers

    def _mats(self, device, dtype):
        return self.cached(("mats", str(device), dtype), lambda: tuple(
            m.to(device, dtype) for m in (self.P1h, self.P1w, self.U1h, self.U1w,
                                          self.pinv_h, self.pinv_w)))

    def project(self, y):
        """``P y``: the part of images ``y`` ``(B, n_outputs)`` an upsampled skip explains."""
        P1h, P1w = self._mats(y.device, y.dtype)[:2]
        img = y.reshape((-1,) + self.output_shape)
        return upsample2d(img, P1h, P1w).reshape(y.shape[0], -1)

    def project_out(self, y):
        """``P⊥ y = y - P y`` (symmetric and idempotent)."""
        return y - self.project(y)

    def skip_from_residual(self, r):
        """The best skip image ``(UᵀU)⁻¹Uᵀ r`` for images ``r``: ``(B, C*h*w)``."""
        mats = self._mats(r.device, r.dtype)
        img = r.reshape((-1,) + self.output_shape)
        return upsample2d(img, mats[4], mats[5]).reshape(r.shape[0], -1)

    def upsample_skip(self, s):
        """``U s`` for skip images ``s`` ``(B, C*h*w)``: ``(B, n_outputs)``."""
        mats = self._mats(s.device, s.dtype)
        img = s.reshape((-1,) + self.skip_shape)
        return upsample2d(img, mats[2], mats[3]).reshape(s.shape[0], -1)

    # ------------------------------------------------------ the interface
    def matvec(self, z):
        """``P⊥ W z`` for a batch ``z`` of shape ``(B, n_inputs)``."""
        return self.project_out(self.base.matvec(z))

    def rmatvec(self, r):
        """``Wᵀ P⊥ r`` for a batch ``r`` of shape ``(B, n_outputs)``."""
        return self.base.rmatvec(self.project_out(r))

    def __getstate__(self):
        state = super().__getstate__()
        for k in ("U1h", "U1w", "pinv_h", "pinv_w", "P1h", "P1w"):
            state[k] = state[k].numpy()
        return state

    def __setstate__(self, state):
        for k in ("U1h", "U1w", "pinv_h", "pinv_w", "P1h", "P1w"):
            state[k] = torch.from_numpy(np.asarray(state[k], dtype=np.float64))
        state.setdefault("_cache", {})
        self.__dict__.update(state)
