"""The solver design: embeddings, split ADMM, solver="auto", stop rules, certificates."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.inversion import DEFAULT_PROGRESS_TOL
from flipad_sklearn.activations import get_activation
from flipad_sklearn.lasso import (
    STOP_REASONS, Certificate, L1Penalty, auto_solver, fista_path, solve_batch, split_admm,
)
from flipad_sklearn.operators.embedding import periodic_embedding
from flipad_sklearn.lasso.solvers import CPU_BATCH_BYTES, auto_batch_size, bytes_per_sample
from flipad_sklearn.operators import Conv2dOperator, ConvTranspose2dOperator, LayerOperator

CONV_LAYERS = {
    "conv_s1": (lambda: nn.Conv2d(4, 3, 3, padding=1), (4, 5, 5)),
    "conv_s2": (lambda: nn.Conv2d(4, 3, 4, stride=2, padding=1), (4, 6, 6)),
    "conv_dil_groups": (lambda: nn.Conv2d(4, 2, 3, dilation=2, padding=2, groups=2), (4, 5, 5)),
    "conv_same_even": (lambda: nn.Conv2d(4, 3, 2, padding="same"), (4, 5, 4)),
    "conv_valid_s3_groups": (lambda: nn.Conv2d(6, 3, 3, stride=3, groups=3), (6, 7, 6)),
    "convT_s2": (lambda: nn.ConvTranspose2d(4, 3, 4, 2, 1), (4, 3, 3)),
    "convT_groups_op": (lambda: nn.ConvTranspose2d(4, 2, 3, 2, 1, output_padding=1, groups=2),
                        (4, 3, 3)),
}


def _outputs(layer, shape, n=3, activation="tanh", seed=0):
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(n,) + shape), 0)
    with torch.no_grad():
        pre = layer(torch.tensor(h)).reshape(n, -1).numpy()
    return get_activation(activation).apply(pre)


def _solve(layer, shape, x, solver, **kw):
    params = dict(layer=layer, alpha=1e-2, solver=solver, activation_shape=shape,
                  anchor=np.full(shape, 0.2))
    params.update(kw)
    inv = FinalLayerInverter(**params).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        z = inv.transform(x)
    return inv, z


def _elastic_net_cvxpy(inv, x):
    """The exact elastic-net solution of each row, stated in cvxpy from the dense
    matrix (no code shared with the package's solvers or its augmented form)."""
    import cvxpy as cp

    W, Y = inv.operator_.to_dense(), inv._targets(x)
    d = cp.Variable(W.shape[1])
    y = cp.Parameter(W.shape[0])
    objective = (0.5 * cp.sum_squares(y - W @ d) + inv.alpha * cp.norm1(d)
                 + 0.5 * inv.ridge_ * cp.sum_squares(d))
    problem = cp.Problem(cp.Minimize(objective))
    out = []
    for row in Y:
        y.value = row
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                      tol_feas=1e-12)
        out.append(d.value + inv.anchor_)
    return np.array(out)


@pytest.mark.parametrize("name", sorted(CONV_LAYERS))
def test_periodic_embedding_is_the_layer(name):
    """S T E equals the layer, TH is T's adjoint, and F_k F_kᴴ is T Tᴴ per frequency."""
    factory, shape = CONV_LAYERS[name]
    op = LayerOperator.from_layer(factory().double(), shape)
    emb = periodic_embedding(op)
    wf, wa = emb.weights(torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn((2,) + shape, generator=gen, dtype=torch.float64)
    ref = op.matvec(d.reshape(2, -1)).reshape((2,) + op.output_shape)
    np.testing.assert_allclose(emb.crop(emb.T(emb.embed(d), wf)), ref, atol=1e-12)
    # the extended grid gives the same products
    ext = emb.T_ext(emb.extend(emb.embed(d)), wf)
    np.testing.assert_allclose(ext, emb.T(emb.embed(d), wf), atol=1e-12)
    v = torch.randn((2, emb.cin) + emb.N, generator=gen, dtype=torch.float64)
    u = torch.randn((2, emb.m) + emb.N, generator=gen, dtype=torch.float64)
    lhs, rhs = (emb.T(v, wf) * u).sum(), (v * emb.TH(u, wa)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(abs(lhs))
    np.testing.assert_allclose(emb.interior_ext(emb.TH_ext(u, wa)),
                               emb.interior(emb.TH(u, wa)), atol=1e-12)
    uh = torch.fft.rfft2(u).permute(2, 3, 0, 1).reshape(-1, 2, emb.m)
    back = (uh @ emb.gram().mT).reshape(emb.N[0], emb.Nw2, 2, emb.m).permute(2, 3, 0, 1)
    np.testing.assert_allclose(torch.fft.irfft2(back, s=emb.N), emb.T(emb.TH(u, wa), wf),
                               atol=1e-11)


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name", ["conv_s1", "conv_s2", "conv_dil_groups", "convT_groups_op"])
def test_split_admm_matches_cvxpy(name, positive):
    factory, shape = CONV_LAYERS[name]
    layer = factory().double()
    x = _outputs(layer, shape)
    ref, z_ref = _solve(layer, shape, x, "cvxpy", positive=positive)
    inv, z = _solve(layer, shape, x, "split_admm", positive=positive, tol=1e-10,
                    max_iter=20_000, precision="float64", progress_tol=None)
    np.testing.assert_allclose(inv.objective_, ref.objective_, rtol=1e-7)
    assert np.all(inv.duality_gap_ >= inv.objective_ - ref.objective_ - 1e-12)
    if positive:
        assert z.min() >= -1e-12


def test_split_admm_alone_converges_and_its_dual_certifies():
    """Split ADMM by itself (no FISTA finish) reaches a tight certified gap."""
    torch.manual_seed(1)
    layer = nn.Conv2d(4, 3, 3, padding=1).double()
    op = LayerOperator.from_layer(layer, (4, 5, 5))
    y = torch.as_tensor(_outputs(layer, (4, 5, 5), activation="identity"))
    pen = L1Penalty(1e-2)
    cert = Certificate(op, y, pen, tol=1e-9)
    with torch.no_grad():
        split_admm(op, y, pen, op.lipschitz(), cert, max_iter=5000, dtype=torch.float64)
    d, primal, gap, n_iter, reason = cert.results()
    assert (gap / cert.scale <= 1e-9).all() and (reason == 0).all()
    _, p_ref, _, _ = solve_batch(op, y.numpy(), 1e-2, solver="cvxpy")
    np.testing.assert_allclose(primal.numpy(), p_ref, rtol=1e-8)


@pytest.mark.parametrize("solver", ["auto", "split_admm", "admm"])
@pytest.mark.parametrize("name", ["conv_s1", "convT_s2", "convT_groups_op"])
def test_default_float32_path_against_cvxpy(name, solver):
    """The defaults (float32, progress stop) are near the optimum and their
    float64 certificate bounds the true suboptimality."""
    factory, shape = CONV_LAYERS[name]
    layer = factory().double()
    x = _outputs(layer, shape)
    ref, _ = _solve(layer, shape, x, "cvxpy")
    inv, z = _solve(layer, shape, x, solver)
    sub = inv.objective_ - ref.objective_
    assert np.all(sub >= -1e-9)
    assert np.all(sub <= inv.duality_gap_ + 1e-9)           # the certificate holds
    assert np.all(sub <= 1e-3 * ref.objective_)
    assert set(inv.stop_reason_) == {"feature"}
    # the features: within the reported bound of an independent exact solution
    z_star = _elastic_net_cvxpy(inv, x)
    dist = np.linalg.norm(z - z_star, axis=1) / np.linalg.norm(z_star, axis=1)
    assert np.all(dist <= inv.feature_error_) and np.all(inv.feature_error_ <= 5e-4)


@pytest.mark.parametrize("ridge", [0.0, 0.3, "auto"])
def test_orthonormal_layer_has_the_soft_threshold_solution(ridge):
    """W with orthonormal columns: the elastic net's solution is soft-thresholding
    of Wᵀy', scaled by 1 / (1 + ridge) (the lasso's: ridge 0)."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 6)))
    layer = nn.Linear(6, 12, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(Q))
    x = rng.normal(size=(4, 12)) * 0.5
    alpha, anchor = 0.1, rng.normal(size=6) * 0.1
    c = Q.T @ (x - Q @ anchor).T
    lam = 1e-3 if ridge == "auto" else ridge                # L = 1 here
    want = (np.sign(c) * np.maximum(np.abs(c) - alpha, 0)).T / (1 + lam) + anchor
    stop = dict(tol=1e-12, feature_tol=None) if ridge == 0 else dict(feature_tol=1e-10)
    for solver in ("auto", "fista", "cd"):
        inv = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha,
                                 ridge=ridge, anchor=anchor, solver=solver,
                                 precision="float64", **stop).fit(x)
        np.testing.assert_allclose(inv.ridge_, lam, rtol=1e-9)
        np.testing.assert_allclose(inv.transform(x), want, atol=1e-8)


def test_auto_picks_per_layer_and_says_why():
    cases = [
        (nn.Linear(8, 3), None, "fista"),              # the default ridge: see below
        (nn.ConvTranspose2d(64, 3, 4, 2, 1), (64, 32, 32), "admm"),
        (nn.ConvTranspose2d(64, 2, 4, 2, 1, groups=2), (64, 32, 32), "admm"),   # 8 per output
        (nn.ConvTranspose2d(16, 4, 4, 2, 1, groups=2), (16, 16, 16), "fista"),  # 1, grouped
        (nn.Conv2d(64, 3, 3, padding=1), (64, 24, 24), "admm"),
        (nn.Conv2d(64, 3, 4, stride=2, padding=1), (64, 32, 32), "fista"),  # strided: big boundary
        (nn.Conv2d(4, 3, 3, padding=1), (4, 5, 5), "fista"),             # 1.3 per output
        (nn.Conv2d(3, 3, 3, padding=1), (3, 32, 32), "fista"),           # 1 per output
        (nn.Conv2d(8, 3, 3, padding=1), (8, 32, 32), "admm"),            # 2.7 per output
        (nn.Conv2d(16, 1, 3, padding=1), (16, 28, 28), "admm"),          # 16, small image
        (nn.Conv2d(16, 3, 3, padding=1), (16, 128, 128), "split_admm"),  # boundary 1548
        (nn.ConvTranspose2d(8, 1, 4, 2, 1), (8, 14, 14), "admm"),        # 2 per output
        (nn.ConvTranspose2d(16, 1, 4, 2, 1), (16, 14, 14), "admm"),      # the demo's G
        (nn.ConvTranspose2d(4, 1, 4, 2, 1), (4, 14, 14), "admm"),        # 1 per output
        (nn.ConvTranspose2d(2, 1, 4, 2, 1), (2, 14, 14), "fista"),       # 0.5 per output
    ]
    for layer, shape, want in cases:
        n_out = int(np.prod(layer(torch.zeros((1,) + (shape or (8,)))).shape[1:]))
        inv = FinalLayerInverter(layer=layer, activation_shape=shape).fit(np.zeros((2, n_out)))
        assert inv.solver_ == want, (layer, inv.solver_)
        assert isinstance(inv.solver_reason_, str) and inv.solver_reason_
    op = LayerOperator.from_layer(nn.Linear(8, 3), (8,))
    assert auto_solver(op, "cuda")[0] == "fista"
    assert auto_solver(op, "cpu")[0] == "cd"                      # the plain lasso
    plain = FinalLayerInverter(layer=nn.Linear(8, 3), ridge=0, feature_tol=None, tol=1e-6)
    assert plain.fit(np.zeros((2, 3))).solver_ == "cd"


def test_unsupported_solver_is_refused_at_fit():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    x = np.zeros((2, 2 * 4 * 4))
    with pytest.raises(ValueError, match="solver='cd' handles fully connected"):
        FinalLayerInverter(layer=conv, solver="cd", activation_shape=(2, 4, 4)).fit(x)
    with pytest.raises(ValueError, match="solver='split_admm' handles Conv2d"):
        FinalLayerInverter(layer=nn.Linear(4, 8), solver="split_admm").fit(np.zeros((2, 8)))


def test_batch_size_auto_follows_the_memory_budget():
    layer = nn.Conv2d(16, 3, 3, padding=1)
    x = np.zeros((3, 3 * 16 * 16))
    inv = FinalLayerInverter(layer=layer, activation_shape=(16, 16, 16)).fit(x)
    assert inv.batch_size_ == 256                      # small layer: the cap
    small = FinalLayerInverter(layer=layer, activation_shape=(16, 16, 16),
                               memory_budget=3 * bytes_per_sample(inv.operator_)).fit(x)
    assert small.batch_size_ == 3
    # the 512x512 Stable Diffusion layer runs one sample per batch by default
    sd = Conv2dOperator(torch.zeros(3, 128, 3, 3), (128, 8, 8),
                        dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1))
    sd.n_inputs, sd.n_outputs = 128 * 512 * 512, 3 * 512 * 512
    assert auto_batch_size(sd) == 1
    # on CPU a batch's state also stays within CPU_BATCH_BYTES (cache-sized
    # batches run faster per sample); not on CUDA
    dcgan = ConvTranspose2dOperator(torch.zeros(64, 3, 4, 4), (64, 32, 32),
                                    dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1),
                                         groups=1, output_padding=(0, 0)))
    per = bytes_per_sample(dcgan)
    assert auto_batch_size(dcgan) == CPU_BATCH_BYTES // per < 64
    assert auto_batch_size(dcgan, device="cuda") == 256
    assert auto_batch_size(dcgan, budget=3 * per) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rng = np.random.default_rng(0)
        xs = np.tanh(rng.normal(size=(5, 3 * 16 * 16)))
        z1 = FinalLayerInverter(layer=layer, activation_shape=(16, 16, 16), tol=1e-9,
                                precision="float64", progress_tol=None, max_iter=3000)
        z2 = FinalLayerInverter(layer=layer, activation_shape=(16, 16, 16), tol=1e-9,
                                precision="float64", progress_tol=None, max_iter=3000,
                                batch_size=2)
        z1.fit(xs).transform(xs)
        z2.fit(xs).transform(xs)
        np.testing.assert_allclose(z1.objective_, z2.objective_, rtol=1e-4)


def test_progress_stop_ends_early_and_keeps_the_certificate():
    factory, shape = CONV_LAYERS["conv_s1"]
    layer = factory().double()
    x = _outputs(layer, shape, n=4)
    ref, _ = _solve(layer, shape, x, "cvxpy")
    common = dict(tol=0.0, max_iter=5000, precision="float64", ridge=0.0, feature_tol=None)
    stopped, _ = _solve(layer, shape, x, "split_admm", progress_tol=1e-4, **common)
    full, _ = _solve(layer, shape, x, "split_admm", progress_tol=None, **common)
    assert set(stopped.stop_reason_) == {"progress"}
    assert set(full.stop_reason_) == {"max_iter"}
    assert stopped.n_iter_.max() < full.n_iter_.min()
    assert np.all(stopped.objective_ - ref.objective_ <= stopped.duality_gap_ + 1e-12)
    assert tuple(STOP_REASONS[:3]) == ("gap", "progress", "max_iter")


def test_fast_float32_checks_report_exact_certificates():
    """float32 products along the way; the reported primal and gap are float64-exact."""
    layer = nn.Conv2d(4, 3, 3, padding=1)
    shape = (4, 6, 6)
    x = _outputs(layer.double(), shape)
    inv, z = _solve(layer, shape, x, "split_admm", tol=1e-4)
    d = torch.as_tensor(z, dtype=torch.float64) - torch.as_tensor(inv.anchor_)
    y = torch.as_tensor(inv._targets(x))
    r = y - inv.operator_.matvec(d)
    primal = (0.5 * (r * r).sum(1) + inv.alpha * d.abs().sum(1)
              + 0.5 * inv.ridge_ * (d * d).sum(1))
    np.testing.assert_allclose(inv.objective_, primal.numpy(), rtol=1e-6)
    ref, _ = _solve(layer, shape, x, "cvxpy")
    assert np.all(inv.objective_ - ref.objective_ <= inv.duality_gap_ + 1e-9)


def test_progress_stop_ends_near_basis_pursuit_layers():
    """At a tiny penalty (the objective a small fraction of 1/2||y||^2) the
    opt-in progress rule, in units of 1/2||y||^2, ends the plain lasso before
    max_iter, with a settled reconstruction and a valid certificate."""
    layer = nn.Conv2d(8, 3, 3, padding=1).double()
    shape = (8, 10, 10)
    x = _outputs(layer, shape, n=3, activation="identity")
    common = dict(activation="identity", alpha=1e-5, tol=1e-12, max_iter=2000,
                  precision="float64", solver="fista", progress_tol=DEFAULT_PROGRESS_TOL,
                  ridge=0.0, feature_tol=None)
    ref, _ = _solve(layer, shape, x, "cvxpy", activation="identity", alpha=1e-5,
                    ridge=0.0, feature_tol=None, tol=1e-10)
    inv, z = _solve(layer, shape, x, **common)
    assert set(inv.stop_reason_) == {"progress"}
    assert inv.n_iter_.max() < 2000
    assert np.all(inv.objective_ - ref.objective_ <= inv.duality_gap_ + 1e-12)
    recon = inv.inverse_transform(z)
    assert np.abs(recon - x).max() <= 1e-2 * np.abs(x).max()
    assert np.median(0.5 * (inv._targets(x) ** 2).sum(axis=1) / inv.objective_) > 100


def test_auto_takes_fista_for_a_linear_layer_with_a_shifted_bound():
    """positive=True with a non-zero anchor gives d >= -anchor, which scikit-learn's
    compiled coordinate descent cannot take (the Python loop is ~30x slower)."""
    layer = nn.Linear(12, 3).double()
    rng = np.random.default_rng(0)
    x = layer(torch.tensor(np.maximum(rng.normal(size=(5, 12)), 0))).detach().numpy()
    shifted = FinalLayerInverter(layer=layer, activation="identity", positive=True,
                                 anchor=np.full(12, 0.3)).fit(x)
    assert shifted.solver_ == "fista" and "shifted bound" in shifted.solver_reason_
    lasso = dict(ridge=0, feature_tol=None, tol=1e-6)          # cd is the plain lasso's
    for kw in (dict(positive=True), dict(anchor=np.full(12, 0.3))):
        assert FinalLayerInverter(layer=layer, activation="identity", **kw,
                                  **lasso).fit(x).solver_ == "cd"
    ref = FinalLayerInverter(layer=layer, activation="identity", positive=True, solver="cvxpy",
                             anchor=np.full(12, 0.3), alpha=1e-2).fit(x)
    auto = shifted.set_params(alpha=1e-2, feature_tol=1e-8).fit(x)
    np.testing.assert_allclose(auto.transform(x), ref.transform(x), atol=1e-4)


def test_a_linear_layer_at_the_defaults_certifies_its_features():
    """The tabular generator's final layer (Linear(300, 11)) at the defaults: auto
    ran coordinate descent, which ended every sample at max_iter with a certified
    feature error of ~0.3 and a ConvergenceWarning; FISTA certifies feature_tol."""
    layer = nn.Linear(300, 11)
    rng = np.random.default_rng(0)
    anchor = np.maximum(rng.normal(size=(2000, 300)), 0).mean(axis=0)
    h = np.maximum(rng.normal(size=(20, 300)), 0)
    with torch.no_grad():
        x = layer(torch.tensor(h, dtype=torch.float32)).numpy().astype(np.float64)
    inv = FinalLayerInverter(layer=layer, activation="identity", anchor=anchor).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        inv.transform(x)
    assert inv.solver_ == "fista" and "ridge" in inv.solver_reason_
    assert set(inv.stop_reason_) == {"feature"}
    assert inv.feature_error_.max() <= inv.feature_tol


@pytest.mark.parametrize("path", ["solver", "fista_path"])
def test_continuation_result_of_a_row_does_not_depend_on_its_batch(path):
    # rows that stop at max_iter: before the fix the last stage got max_iter minus the
    # most iterations any row of the batch spent in the earlier stages, so a row came
    # out differently alone and in a batch
    rng = np.random.default_rng(0)
    weight = torch.from_numpy(rng.normal(size=(4, 1, 4, 4)))
    op = ConvTranspose2dOperator(weight, (4, 6, 6),
                                 dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1,
                                      output_padding=(0, 0)))
    Y = rng.normal(size=(12, op.n_outputs)) * rng.uniform(0.05, 3.0, size=(12, 1))
    if path == "solver":
        def run(Yb):
            return solve_batch(op, Yb, 1e-3, solver="fista", continuation=True, max_iter=200,
                               tol=1e-12, dtype=torch.float64)[0]
    else:
        L = float(op.lipschitz())

        def run(Yb):
            d = fista_path(op, torch.from_numpy(Yb), 1e-3, L, max_iter=200, tol=1e-12,
                           dtype=torch.float64)[0]
            return np.asarray(d)
    batch = run(Y)
    alone = np.concatenate([run(Y[i:i + 1]) for i in range(len(Y))])
    np.testing.assert_array_equal(alone, batch)
