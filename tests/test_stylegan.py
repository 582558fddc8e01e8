"""The StyleGAN2-like generator and the joint inversion of its final operation."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flipad_sklearn import FinalLayerInverter, make_flipad, mean_activation
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import (
    StyleGANGenerator,
    load_generator,
    save_generator,
    train_gan,
    train_stylegan,
)
from flipad_sklearn.operators import LayerOperator
from flipad_sklearn.inversion import SkipInverter
from flipad_sklearn.operators.skip import SkipProjectedOperator, upsampling_matrix

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _layer(c_in=3, c_out=1, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(c_in, c_out, 1, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        if bias:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return conv


def _operator(upsample, c_in=3, c_out=2, size=(6, 8)):
    base = LayerOperator.from_layer(_layer(c_in, c_out), (c_in,) + size)
    return SkipProjectedOperator(base, upsample)


# a separable FIR upsampling in the manner of StyleGAN2's [1, 3, 3, 1] filter
def _fir_matrix(n):
    U = np.zeros((2 * n, n))
    f = np.array([1.0, 3.0, 3.0, 1.0]) / 4
    for j in range(n):
        for k, v in enumerate(f):
            i = 2 * j - 1 + k
            if 0 <= i < 2 * n:
                U[i, j] += v
    return U


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "fir"])
def test_projection_is_symmetric_idempotent_and_fixes_upsampled_images(upsample):
    up = (_fir_matrix(3), _fir_matrix(4)) if upsample == "fir" else upsample
    op = _operator(up)
    eye = torch.eye(op.n_outputs, dtype=torch.float64)
    P = op.project(eye).numpy()
    np.testing.assert_allclose(P @ P, P, atol=1e-12)
    np.testing.assert_allclose(P, P.T, atol=1e-12)
    # rank: one free value per skip pixel
    assert np.linalg.matrix_rank(P) == int(np.prod(op.skip_shape))
    s = torch.randn((3, int(np.prod(op.skip_shape))), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    Us = op.upsample_skip(s)
    np.testing.assert_allclose(op.project(Us).numpy(), Us.numpy(), atol=1e-12)
    np.testing.assert_allclose(op.project_out(Us).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(op.skip_from_residual(Us).numpy(), s.numpy(), atol=1e-10)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsampling_matches_torch_interpolate(mode):
    op = _operator(mode)
    s = torch.randn((2,) + op.skip_shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    kw = {} if mode == "nearest" else {"align_corners": False}
    ref = F.interpolate(s, scale_factor=2, mode=mode, **kw)
    np.testing.assert_allclose(op.upsample_skip(s.reshape(2, -1)).numpy(),
                               ref.reshape(2, -1).numpy(), atol=1e-12)


def test_nearest_projection_is_block_averaging():
    op = _operator("nearest")
    y = torch.randn((1, op.n_outputs), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3))
    img = y.reshape((1,) + op.output_shape)
    block = F.avg_pool2d(img, 2).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    np.testing.assert_allclose(op.project(y).numpy(), block.reshape(1, -1).numpy(),
                               atol=1e-12)


def test_operator_adjoint_lipschitz_and_dense():
    op = _operator("bilinear")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((3, op.n_inputs), dtype=torch.float64, generator=gen)
    r = torch.randn((3, op.n_outputs), dtype=torch.float64, generator=gen)
    lhs = (op.matvec(x) * r).sum(dim=1)
    rhs = (x * op.rmatvec(r)).sum(dim=1)
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-12)
    A = op.to_dense()
    np.testing.assert_allclose(A @ x[0].numpy(), op.matvec(x)[0].numpy(), atol=1e-10)
    L = op.lipschitz()
    top = np.linalg.norm(A, 2) ** 2
    assert top <= L <= top * 1.002
    np.testing.assert_allclose(op.column_norms_sq().numpy(), (A ** 2).sum(axis=0))
    assert L <= op.base.lipschitz() * 1.001          # ||P⊥W|| <= ||W||
    op2 = pickle.loads(pickle.dumps(op))
    np.testing.assert_allclose(op2.matvec(x).numpy(), op.matvec(x).numpy())


def test_operator_errors():
    base = LayerOperator.from_layer(_layer(), (3, 5, 5))
    with pytest.raises(ValueError, match="even image sides"):
        SkipProjectedOperator(base, "nearest")
    base = LayerOperator.from_layer(_layer(), (3, 4, 4))
    with pytest.raises(ValueError, match="upsample must be one of"):
        SkipProjectedOperator(base, "bicubic")
    with pytest.raises(ValueError, match="shape \\(4, m\\)"):
        SkipProjectedOperator(base, np.ones((3, 2)))
    with pytest.raises(ValueError, match="full column rank"):
        SkipProjectedOperator(base, np.ones((4, 2)))
    with pytest.raises(TypeError, match="LayerOperator"):
        SkipProjectedOperator(np.eye(3))
    with pytest.raises(ValueError, match="one of"):
        upsampling_matrix(3, "cubic")


def _joint_problem(seed=0, n=3, c_in=3, size=4, upsample="nearest", c_out=1):
    """Outputs y = W u + up(s) + b with sparse-ish u around an anchor."""
    rng = np.random.default_rng(seed)
    layer = _layer(c_in, c_out, seed)
    anchor = rng.normal(size=(c_in, size, size)) * 0.3
    u = anchor[None] + rng.normal(size=(n, c_in, size, size)) * (
        rng.random((n, c_in, size, size)) < 0.3)
    s = rng.normal(size=(n, c_out, size // 2, size // 2))
    kw = {} if upsample == "nearest" else {"align_corners": False}
    with torch.no_grad():
        y = (layer(torch.from_numpy(u).float()).double()
             + F.interpolate(torch.from_numpy(s), scale_factor=2, mode=upsample, **kw))
    return layer, anchor, u, s, y.numpy()


@pytest.mark.parametrize("ridge", [0.0, "auto"])
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_joint_lasso_matches_cvxpy_on_the_original_joint_problem(upsample, ridge):
    cp = pytest.importorskip("cvxpy")
    # The minimiser u need not be unique: u constant on the skip's blocks (or,
    # bilinear, an upsampled map) makes W u an upsampled image the skip can
    # absorb, which the penalty alone decides.  Unique: the objective, the
    # prediction W u + up(s) and ||u - anchor||_1 (the lasso's fitted values).
    layer, anchor, _, _, X = _joint_problem(upsample=upsample, c_in=2, c_out=3)
    alpha = 0.05
    # with a ridge (the default) u is unique, and the feature bound certifies it
    stop = dict(feature_tol=None) if ridge == 0 else dict(feature_tol=1e-9)
    inv = SkipInverter(layer, upsample=upsample, anchor=anchor, alpha=alpha, solver="fista",
                       ridge=ridge, tol=1e-12, max_iter=20000, precision="float64",
                       device="cpu", **stop).fit(X)
    U, S = inv.transform(X, return_skip=True)
    assert (inv.stop_reason_ == ("gap" if ridge == 0 else "feature")).all()
    pred = inv.inverse_transform(U, S)
    # the original problem: u penalised, the skip free, stated independently
    W = layer.weight.detach().double().numpy()[:, :, 0, 0]            # (3, C)
    b = layer.bias.detach().double().numpy()[:, None]
    c, h, w = anchor.shape
    U1 = upsampling_matrix(h // 2, upsample).numpy()
    U2 = np.kron(U1, U1)                  # row-major vec(U1 S U1ᵀ) = (U1 ⊗ U1) vec(S)
    for i in range(len(X)):
        u = cp.Variable((c, h * w))
        s = cp.Variable((3, (h // 2) * (w // 2)))
        model = W @ u + s @ U2.T + b @ np.ones((1, h * w))
        obj = 0.5 * cp.sum_squares(X[i].reshape(3, -1) - model) \
            + alpha * cp.sum(cp.abs(u - anchor.reshape(c, -1))) \
            + 0.5 * inv.ridge_ * cp.sum_squares(u - anchor.reshape(c, -1))
        prob = cp.Problem(cp.Minimize(obj))
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        np.testing.assert_allclose(inv.objective_[i], prob.value, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(pred[i], model.value.reshape(-1), atol=1e-5)
        np.testing.assert_allclose(np.abs(U[i] - anchor.reshape(-1)).sum(),
                                   np.abs(u.value - anchor.reshape(c, -1)).sum(), rtol=1e-5)
        # the eliminated skip is the joint problem's skip at the joint optimum
        u_cvx = u.value.reshape(1, -1)
        np.testing.assert_allclose(inv.recover_skip(X[i:i + 1], u_cvx)[0],
                                   s.value.reshape(-1), atol=1e-6)
    # the dense cvxpy solver of the package on P⊥W agrees too
    cvx = SkipInverter(layer, upsample=upsample, anchor=anchor, alpha=alpha, ridge=ridge,
                       solver="cvxpy", tol=1e-12, **stop).fit(X)
    U_cvx, S_cvx = cvx.transform(X, return_skip=True)
    np.testing.assert_allclose(cvx.objective_, inv.objective_, rtol=1e-8)
    np.testing.assert_allclose(cvx.inverse_transform(U_cvx, S_cvx), pred, atol=1e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_small_alpha_reconstructs_outputs():
    layer, anchor, _, _, X = _joint_problem(seed=1, n=4)
    # the plain lasso (ridge 0): nothing shrinks the fit
    inv = SkipInverter(layer, anchor=anchor, alpha=1e-6, tol=1e-9, ridge=0.0, feature_tol=None,
                       max_iter=1500, precision="float64", device="cpu").fit(X)
    U, S = inv.transform(X, return_skip=True)
    rec = inv.inverse_transform(U, S)
    np.testing.assert_allclose(rec, X.reshape(len(X), -1), atol=1e-5)
    np.testing.assert_allclose(inv.inverse_transform(U), rec)          # skip_ of the last transform
    np.testing.assert_allclose(inv.recover_skip(X, U), S)
    # the upsampled skip as extra channels: same u, and the features alone rebuild X
    app = SkipInverter(layer, anchor=anchor, alpha=1e-6, tol=1e-9, ridge=0.0,
                       feature_tol=None, max_iter=1500, precision="float64", device="cpu",
                       append_skip=True).fit(X)
    Z = app.transform(X)
    assert app.feature_shape_ == (4, 4, 4) and Z.shape == (len(X), 64)
    assert app.get_feature_names_out().shape == (64,)
    np.testing.assert_allclose(Z[:, :48], U, atol=1e-8)
    np.testing.assert_allclose(Z[:, 48:], F.interpolate(
        torch.from_numpy(S.reshape(-1, 1, 2, 2)), scale_factor=2).reshape(len(X), -1).numpy(),
        atol=1e-8)
    np.testing.assert_allclose(app.inverse_transform(Z), X.reshape(len(X), -1), atol=1e-5)


def test_misspecified_fixed_w_inversion_fits_worse():
    """Ignoring the skip (FLIPAD's lasso on toRGB alone) is measurably worse."""
    layer, anchor, u_true, _, X = _joint_problem(seed=2, n=6, c_in=4, size=8)
    kw = dict(anchor=anchor, alpha=0.05, tol=1e-9, max_iter=5000, device="cpu",
              activation="identity")
    joint = SkipInverter(layer, **kw).fit(X)
    U_joint = joint.transform(X)
    fixed = FinalLayerInverter(layer, **kw).fit(X)
    U_fixed = fixed.transform(X)
    assert np.all(fixed.objective_ > 2 * joint.objective_)
    err = (lambda U: np.linalg.norm(U - u_true.reshape(len(X), -1), axis=1))
    # the recovered u is closer to the true one (the lasso, 4 unknowns per
    # pixel, does not recover it exactly either way)
    assert err(U_joint).mean() < 0.85 * err(U_fixed).mean()


def test_skip_inverter_errors_and_pickle():
    X = np.random.default_rng(0).normal(size=(3, 1, 4, 4))
    with pytest.raises(TypeError, match="convolutional final layer"):
        SkipInverter(torch.nn.Linear(4, 16)).fit(X.reshape(3, -1))
    with pytest.raises(ValueError, match="needs layer="):
        SkipInverter().fit(X)
    with pytest.raises(ValueError, match="even image sides"):
        SkipInverter(_layer()).fit(np.zeros((2, 1, 5, 5)))
    with pytest.raises(ValueError, match="solver"):
        SkipInverter(_layer(), solver="admm").fit(X)
    inv = SkipInverter(_layer(), alpha=1e-3, device="cpu").fit(X)
    U = inv.transform(X)
    with pytest.raises(ValueError, match="skip must have shape"):
        inv.inverse_transform(U, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="needs the skip images"):
        inv.inverse_transform(U[:2])
    with pytest.raises(ValueError, match="features"):
        inv.transform(np.zeros((2, 20)))
    inv2 = pickle.loads(pickle.dumps(inv))
    assert isinstance(inv2.operator_, SkipProjectedOperator)
    np.testing.assert_allclose(inv2.transform(X), U)


# ---------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def mnist32():
    X, _ = load_mnist_subset(return_X_y=True, pad_to=32)
    return X[np.random.default_rng(0).permutation(len(X))]


def test_generator_final_operation_is_exact():
    for skip_upsample, output in (("nearest", "identity"), ("bilinear", "tanh")):
        with torch.random.fork_rng(devices=[]):
            G = StyleGANGenerator(skip_upsample=skip_upsample, output=output)
        G._reset_parameters(torch.Generator().manual_seed(0))
        u, s, X = G.sample_final_unknowns(5, random_state=3, batch_size=2)
        # the same latent codes (float32 products may differ with the batch size)
        np.testing.assert_allclose(X, G.sample(5, random_state=3), atol=1e-5)
        fin = G.final_operation()
        assert u.shape == (5, int(np.prod(fin["activation_shape"])))
        assert s.shape == (5, int(np.prod(fin["skip_shape"])))
        inv = SkipInverter(G.final_layer, upsample=fin["upsample"],
                           activation=fin["activation"]).fit(X)
        rec = inv.inverse_transform(u.astype(np.float64), s.astype(np.float64))
        np.testing.assert_allclose(rec, X.reshape(5, -1), atol=1e-4)
        # the hooked input of the final layer is u
        A = G.sample_activations(5, random_state=3, return_outputs=False)
        np.testing.assert_allclose(A, u, rtol=1e-5, atol=1e-6)


def test_generator_trains_deterministically_and_round_trips(mnist32, tmp_path):
    state = torch.random.get_rng_state()
    G1 = train_stylegan(mnist32[:64], epochs=1, seed=5, batch_size=32, widths=(8, 8, 8, 4))
    G2 = train_stylegan(mnist32[:64], epochs=1, seed=5, batch_size=32, widths=(8, 8, 8, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, a), b in zip(G1.state_dict().items(), G2.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(G1.history["g_loss"]) == 2 and np.isfinite(G1.history["d_loss"]).all()
    fresh = StyleGANGenerator(widths=(8, 8, 8, 4))
    assert any(not torch.equal(a, b) for a, b in
               zip(G1.state_dict().values(), fresh.state_dict().values()))
    save_generator(G1, tmp_path / "g.pt")
    G3 = load_generator(tmp_path / "g.pt")
    np.testing.assert_array_equal(G3.sample(4, 0), G1.sample(4, 0))
    assert G3.info["kind"] == "stylegan2" and G3.widths == (8, 8, 8, 4)


def test_generator_errors(mnist32):
    with pytest.raises(ValueError, match="widths"):
        StyleGANGenerator(widths=(8, 8))
    with pytest.raises(ValueError, match="output"):
        StyleGANGenerator(output="sigmoid")
    with pytest.raises(ValueError, match="skip_upsample"):
        StyleGANGenerator(skip_upsample="area")
    X28, _ = load_mnist_subset(return_X_y=True)
    with pytest.raises(ValueError, match="32x32"):
        train_stylegan(X28[:8], epochs=1)


def test_joint_inversion_features_attribute_the_stylegan(mnist32):
    """FLIPAD on the joint inversion tells the StyleGAN's samples from a DCGAN's.

    Deep SAD alone (``one_class=None``): the test is about the features, and the
    DCGAN is a labelled negative here; the default one-class guard ignores the
    labels and, fitted on 64 samples of G, lowers this AUC to 0.7.
    """
    G = train_stylegan(mnist32[:128], epochs=1, seed=0, batch_size=32, widths=(8, 8, 8, 4))
    other = train_gan("dcgan", mnist32[:128], epochs=1, seed=0, batch_size=32, ngf=8)
    anchor = mean_activation(G, 200, G.latent_shape, layer=G.final_layer, random_state=7,
                             device="cpu")
    inv = SkipInverter(G.final_layer, anchor=anchor, alpha=5e-4, tol=1e-5, max_iter=60,
                       device="cpu")
    rest = make_flipad(G.final_layer, "identity", anchor, fnr=0.05, random_state=0,
                       device="cpu", kernel_size=4,
                       detector_params=dict(hidden_sizes=(32,), rep_dim=8, n_epochs=10,
                                            batch_size=32, one_class=None))[1:]
    X_g, X_o = G.sample(80, random_state=1), other.sample(48, random_state=1)
    T_g, T_o = G.sample(30, random_state=2), other.sample(30, random_state=2)
    X_all = np.concatenate([X_g, X_o, T_g, T_o])
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Z = inv.fit(X_all).transform(X_all)
    rest.fit(Z[:128], np.r_[np.ones(80), -np.ones(48)])
    scores = rest.score_samples(Z[128:])
    auc = roc_auc_score(np.r_[np.ones(30), np.zeros(30)], scores)
    assert auc > 0.9, auc
