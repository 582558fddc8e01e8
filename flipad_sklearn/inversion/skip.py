"""SkipInverter: joint inversion of a final layer and an upsampled skip image (StyleGAN2)."""

from numbers import Real

import numpy as np
import torch
from sklearn.utils import metadata_routing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ..activations import DEFAULT_CLIP_EPS, get_activation
from .final_layer import DEFAULT_FEATURE_TOL, FinalLayerInverter
from ..operators import UPSAMPLINGS, LayerOperator, SkipProjectedOperator, layer_adapter


class SkipInverter(FinalLayerInverter):
    """Invert a final layer whose output adds an upsampled skip image (StyleGAN2).

    StyleGAN2's image is ``x = sigma(up(s) + W u + b)``: ``u = style ⊙ h`` the
    modulated input of the last toRGB layer (a 1x1 convolution ``W``, no
    demodulation), ``s`` the image of the previous resolution, upsampled 2x.
    A lasso on ``W`` alone is misspecified (the skip is taken for part of
    ``W u``).  This transformer solves, per sample, the joint problem::

        min_{u, s} 1/2 ||sigma^-1(clip(x)) - b - W u - up(s)||^2 + alpha ||u - anchor||_1

    with the skip ``s`` free.  For fixed ``u`` the best skip is
    ``(UᵀU)⁻¹Uᵀ (y - W u)``; eliminating it leaves a standard lasso with the
    operator ``P⊥ W`` (``P⊥`` projects out the images an upsampled skip can
    make), solved by the same solvers with the same duality-gap certificate,
    which bounds the joint problem's suboptimality
    (:class:`flipad_sklearn.operators.SkipProjectedOperator`).

    Parameters
    ----------
    layer : torch.nn.Conv2d or torch.nn.ConvTranspose2d
        The final layer ``W`` (StyleGAN2: the last toRGB's 1x1 convolution
        with its weight gain folded in, and its bias).  For the generator of
        this package: ``G.final_layer``.
    upsample : {"nearest", "bilinear"} or array or (array, array), default="nearest"
        The skip image's 2x upsampling (separable): torch's nearest or
        bilinear (``align_corners=False``) interpolation, or the 1-D
        matrices ``U1`` (``H x h``; one for both axes of a square image, or a
        pair for rows and columns): ``up(s) = U1h s U1wᵀ`` per channel.
        StyleGAN2's FIR upsampling is such a matrix.
    append_skip : bool, default=False
        Return, after ``u``, the upsampled skip image ``up(s)`` as
        ``C_out`` more channels of the same ``(H, W)`` grid: the features
        then have shape ``(C_in + C_out, H, W)`` (``feature_shape_``), and
        pooling and channel selection treat the skip like any channel.  The
        skip carries most of the image's coarse structure, which ``u`` no
        longer explains; FLIPAD on ``u`` and the skip attributes far better
        than on ``u`` alone against other generators
        (``benchmarks/results/bench_stylegan.md``).
    activation : {"tanh", "sigmoid", "identity"}, callable or (callable, callable), \
            default="identity"
        The output activation (StyleGAN2 has none: ``"identity"``).  See
        :class:`~flipad_sklearn.FinalLayerInverter`.
    alpha, ridge, anchor, positive, feature_tol, tol, progress_tol, max_iter, continuation, \
            activation_shape, clip_eps, batch_size, memory_budget, n_jobs, \
            device, precision, verbose
        As in :class:`~flipad_sklearn.FinalLayerInverter`.  ``anchor`` is the
        mean of ``u`` (:func:`~flipad_sklearn.mean_activation` with
        ``layer=`` the final layer hooks its input, which is ``u``).
        ``solver`` is ``"auto"`` (FISTA), ``"fista"`` or ``"cvxpy"`` /
        ``"scipy"`` (verification of small problems).

    Attributes
    ----------
    skip_shape_ : tuple of int
        Shape ``(C, h, w)`` of the skip image.
    feature_shape_ : tuple of int
        Shape of one row of ``transform``'s output: ``activation_shape_``, or
        ``(C_in + C_out, H, W)`` with ``append_skip``.
    skip_ : ndarray of shape (n_samples, C*h*w)
        The best skip image of each sample of the last ``transform`` (before
        the bias: ``x = sigma(up(skip_) + W u + b)``).
    operator_ : SkipProjectedOperator
        ``P⊥ W`` as a CPU float64 operator (``operator_.base`` is ``W``).
    anchor_, activation_shape_, output_shape_, bias_, lipschitz_, solver_, \
            solver_reason_, batch_size_, n_features_in_, n_iter_, duality_gap_, \
            objective_, stop_reason_
        As in :class:`~flipad_sklearn.FinalLayerInverter`; ``lipschitz_`` is
        that of ``P⊥ W`` and ``objective_`` the joint problem's value at the
        best skip.

    See Also
    --------
    flipad_sklearn.generators.StyleGANGenerator : a small StyleGAN2-like generator.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from flipad_sklearn import SkipInverter
    >>> to_rgb = torch.nn.Conv2d(4, 1, 1)
    >>> x = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    >>> inv = SkipInverter(to_rgb, alpha=1e-3).fit(x)
    >>> inv.transform(x).shape, inv.skip_.shape
    ((3, 256), (3, 16))
    """

    _parameter_constraints = {
        **FinalLayerInverter._parameter_constraints,
        "upsample": [StrOptions(set(UPSAMPLINGS)), "array-like", tuple],
        "append_skip": ["boolean"],
        "clip_eps": [Interval(Real, 0, 0.5, closed="neither")],
    }

    # options of transform / inverse_transform, not metadata to route
    # (no set_transform_request / set_inverse_transform_request methods)
    __metadata_request__transform = {"return_skip": metadata_routing.UNUSED}
    __metadata_request__inverse_transform = {"skip": metadata_routing.UNUSED}

    def __init__(self, layer=None, *, upsample="nearest", append_skip=False,
                 activation="identity", alpha=5e-4, ridge="auto",
                 anchor="zeros", positive=False, solver="auto",
                 feature_tol=DEFAULT_FEATURE_TOL, tol=None,
                 progress_tol=None, max_iter=1000, continuation=True,
                 activation_shape=None, clip_eps=DEFAULT_CLIP_EPS, batch_size="auto",
                 memory_budget=2**31, n_jobs=None, device="auto", precision="float32",
                 verbose=0):
        super().__init__(layer, activation=activation, alpha=alpha, ridge=ridge,
                         anchor=anchor, positive=positive, solver=solver,
                         feature_tol=feature_tol, tol=tol,
                         progress_tol=progress_tol, max_iter=max_iter,
                         continuation=continuation, activation_shape=activation_shape,
                         clip_eps=clip_eps, batch_size=batch_size,
                         memory_budget=memory_budget, n_jobs=n_jobs, device=device,
                         precision=precision, verbose=verbose)
        self.upsample = upsample
        self.append_skip = append_skip

    def fit(self, X, y=None):
        """Check that ``X`` matches the layer; build ``P⊥ W``.

        Parameters
        ----------
        X : array-like of shape (n_samples, C*H*W) or (n_samples, C, H, W)
            Generator outputs (only their shape is used).
        y : ignored

        Returns
        -------
        self
        """
        if self.layer is not None and not layer_adapter(self.layer).image_output:
            raise TypeError("SkipInverter needs a convolutional final layer (its output "
                            "is an image the skip is added to), got a "
                            f"{type(self.layer).__name__} layer; use FinalLayerInverter "
                            "for it.")
        super().fit(X, y)
        op = self.operator_
        self.skip_shape_ = op.skip_shape
        c_in, h, w = self.activation_shape_
        self.feature_shape_ = ((c_in + op.output_shape[0], h, w) if self.append_skip
                               else self.activation_shape_)
        return self

    # the two hooks on FinalLayerInverter: the operator and the targets
    def _operator(self, layer_op):
        """``P⊥ W``: the final layer with the upsampled skip image projected out."""
        return SkipProjectedOperator(layer_op, self.upsample)

    def _project(self, y):
        """``P⊥ y``: the part of the targets no upsampled skip image explains."""
        y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
        with torch.no_grad():
            return self.operator_.project_out(y).numpy()

    def transform(self, X, return_skip=False):
        """Recover ``u`` (and the skip image) of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, C*H*W) or (n_samples, C, H, W)
            Generator outputs.
        return_skip : bool, default=False
            Also return the skip images (also kept in ``skip_``).

        Returns
        -------
        U : ndarray of shape (n_samples, n_activations) or (n_samples, n_features_out)
            The lasso solutions ``u``, flattened; with ``append_skip``,
            followed by the upsampled skip images (``feature_shape_``).
            float32 if X is float32.
        skip : ndarray of shape (n_samples, C*h*w)
            Only with ``return_skip``: the best skip image of each sample.
        """
        U = super().transform(X)
        self.skip_ = self.recover_skip(X, U)
        if self.append_skip:
            with torch.no_grad():
                up = self.operator_.upsample_skip(torch.from_numpy(
                    self.skip_.astype(np.float64))).numpy()
            U = np.concatenate([U, up.astype(U.dtype, copy=False)], axis=1)
        return (U, self.skip_) if return_skip else U

    def recover_skip(self, X, U):
        """The best skip image ``(UᵀU)⁻¹Uᵀ (sigma^-1(x) - b - W u)`` for given ``u``.

        Parameters
        ----------
        X : array-like of shape (n_samples, C*H*W) or (n_samples, C, H, W)
        U : array-like of shape (n_samples, n_activations)

        Returns
        -------
        skip : ndarray of shape (n_samples, C*h*w), dtype of ``U``
        """
        check_is_fitted(self, "operator_")
        X, _ = self._check_X(X, reset=False)
        U = self._check_activations(U)
        if U.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but U has {U.shape[0]}.")
        y = get_activation(self.activation).invert(X, self._clip_eps()) - self.bias_
        with torch.no_grad():
            u = torch.from_numpy(U.astype(np.float64))
            r = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64)) \
                - self.operator_.base.matvec(u)
            skip = self.operator_.skip_from_residual(r).numpy()
        return skip.astype(U.dtype, copy=False)

    def inverse_transform(self, X, skip=None):
        """Map ``u`` and skip images back to outputs: ``sigma(up(skip) + W u + b)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_activations) or (n_samples, n_features_out)
            The activations ``u``; with ``append_skip``, ``transform``'s
            output (``u`` and the upsampled skip), and ``skip`` is not needed.
        skip : array-like of shape (n_samples, C*h*w) or None, default=None
            The skip images; None: ``skip_`` of the last ``transform`` (when it
            has as many samples), else an error.

        Returns
        -------
        outputs : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self, "operator_")
        op = self.operator_
        Z = check_array(X, dtype=[np.float64, np.float32], input_name="X")
        up = None
        if self.append_skip and Z.shape[1] == self._n_features_out:
            Z, up = Z[:, :self.anchor_.size], Z[:, self.anchor_.size:].astype(np.float64)
        Z = self._check_activations(Z)
        if up is None:
            if skip is None:
                skip = getattr(self, "skip_", None)
                if skip is None or len(skip) != len(Z):
                    raise ValueError(
                        "inverse_transform needs the skip images: pass skip= (e.g. from "
                        "transform(X, return_skip=True)); the last transform's skip_ does "
                        "not match these samples.")
            S = check_array(skip, dtype=[np.float64, np.float32], input_name="skip")
            n_skip = int(np.prod(self.skip_shape_))
            if S.shape != (len(Z), n_skip):
                raise ValueError(f"skip must have shape ({len(Z)}, {n_skip}) (skip images "
                                 f"of shape {self.skip_shape_}), got {S.shape}.")
            with torch.no_grad():
                up = op.upsample_skip(torch.from_numpy(S.astype(np.float64))).numpy()
        with torch.no_grad():
            pre = op.base.matvec(torch.from_numpy(Z.astype(np.float64))).numpy() + up
        out = get_activation(self.activation).apply(pre + self.bias_)
        return out.astype(Z.dtype, copy=False)

    @property
    def _n_features_out(self):
        return int(np.prod(self.feature_shape_))

    def _check_activations(self, U):
        U = check_array(U, dtype=[np.float64, np.float32], input_name="X")
        if U.shape[1] != self.anchor_.size:
            raise ValueError(
                f"X has {U.shape[1]} features, but the inverter's activations have "
                f"{self.anchor_.size} (shape {self.activation_shape_}).")
        return U

    def __setstate__(self, state):
        super().__setstate__(state)
        # FinalLayerInverter rebuilds the plain layer operator from its description
        if isinstance(getattr(self, "operator_", None), LayerOperator):
            self.operator_ = SkipProjectedOperator(self.operator_, self.upsample)
