"""Speed and accuracy of the final-layer inversion, beside the baselines.

Two tables, each with its baseline measured in the same run:

1. The DCGAN 64x64 final layer ``ConvTranspose2d(64, 3, 4, stride=2, padding=1)``
   (torch's default initialisation, seed 0), alpha = 5e-4, anchor = mean of
   2000 activations, activations drawn as ReLU of standard normals, tanh
   outputs.  Baseline: the FLIPAD authors' public settings, FISTA with a fixed
   step of 0.025, stopped when the largest per-sample mean |dz| is <= 1e-5,
   at most 10000 iterations.  The optimum comes from a long float64 run.
   Row ``baseline, channels-last``: the same algorithm with the tensors in
   the memory layout flipad_sklearn uses on CPU, to show how much of the
   speed-up is layout and how much is algorithm.
   Rows ``flipad admm``: ``solver="admm"``, ADMM with exact FFT solves of the
   periodic embedding of the layer and a continuation on rho (an ADMM
   iteration costs about two FISTA iterations; the iteration column counts
   both alike).
   Times are the best of ``--repeat`` runs (the baseline: of
   ``--baseline-repeat``), as ``timeit`` does: on a shared machine the
   slower runs measure the neighbours.
2. The paper's tabular generator's final ``Linear(300, 11)`` on 10,000
   samples, identity output, beside scikit-learn's
   ``sparse_encode(algorithm="lasso_cd")`` (same problem: its penalty is
   divided by n_features inside, so ``alpha`` is the same number).

Run: ``python benchmarks/bench_inversion.py [--quick] [--device cuda]``.
"""

import argparse
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import sparse_encode
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn.lasso import fista_path, primal_objective


def baseline_fista(layer, y, step=0.025, alpha=5e-4, stop=1e-5, max_iter=10_000,
                   channels_last=False):
    """The authors' settings: fixed step, stop on the largest mean |dz| (float32)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    w = layer.weight.detach().float().contiguous(memory_format=fmt)
    kw = dict(stride=layer.stride, padding=layer.padding)
    yy = torch.as_tensor(y, dtype=torch.float32).reshape(len(y), *layer_output_shape(layer))
    yy = yy.contiguous(memory_format=fmt)
    d = torch.zeros((len(y), layer.in_channels, 32, 32)).contiguous(memory_format=fmt)
    v, t = d.clone(), 1.0
    for it in range(1, max_iter + 1):
        grad = F.conv2d(F.conv_transpose2d(v, w, **kw) - yy, w, **kw)
        d_new = F.softshrink(v - step * grad, alpha * step)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        v = d_new + (t - 1) / t_new * (d_new - d)
        change = (d_new - d).abs().mean(dim=(1, 2, 3)).max().item()
        d, t = d_new, t_new
        if change <= stop:
            break
    return d.reshape(len(y), -1).double(), it


def layer_output_shape(layer):
    return (layer.out_channels, 64, 64)


def objective(inv, y, d):
    d = torch.as_tensor(d, dtype=torch.float64)
    r = torch.as_tensor(y) - inv.operator_.matvec(d)
    return primal_objective(r, d, inv.alpha).numpy()


def best_time(fn, repeat):
    """Best wall time of ``repeat`` calls of ``fn`` and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def dcgan_table(n_samples, iter_budgets, reference_iters, device, admm_budgets=(),
                repeat=3, baseline_repeat=2):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1)
    rng = np.random.default_rng(0)
    anchor = np.maximum(rng.normal(size=(2000, 64 * 32 * 32)), 0).mean(axis=0)
    h = np.maximum(rng.normal(size=(n_samples, 64 * 32 * 32)), 0)
    with torch.no_grad():
        x = torch.tanh(layer(torch.tensor(h, dtype=torch.float32).reshape(-1, 64, 32, 32)))
    x = x.numpy()
    alpha = 5e-4
    probe = FinalLayerInverter(layer=layer, alpha=alpha, anchor=anchor.reshape(64, 32, 32))
    probe.fit(x)
    y = probe._targets(x.reshape(n_samples, -1))

    rows = []
    el, (d_base, it_base) = best_time(lambda: baseline_fista(layer, y, alpha=alpha),
                                      baseline_repeat)
    t_base = el / n_samples
    p_base = objective(probe, y, d_base)
    rows.append(("baseline (step 0.025, |dz| stop)", it_base, t_base, p_base, None))
    if device == "cpu":
        el, (d_cl, it_cl) = best_time(
            lambda: baseline_fista(layer, y, alpha=alpha, channels_last=True),
            baseline_repeat)
        rows.append(("baseline, channels-last", it_cl, el / n_samples,
                     objective(probe, y, d_cl), None))

    runs = [("fista", b, t) for b, t in iter_budgets] + [("admm", b, t) for b, t in admm_budgets]
    for solver, budget, tol in runs:
        inv = FinalLayerInverter(layer=layer, alpha=alpha, anchor=anchor.reshape(64, 32, 32),
                                 max_iter=budget, tol=tol, device=device, batch_size=64,
                                 solver=solver)
        inv.fit(x)
        if device != "cpu" or solver == "admm":
            # CUDA warm-up; for admm also its one-off per-layer set-up (the
            # boundary's capacitance matrix), cached on the fitted operator
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                inv.transform(x[:1])
            if solver == "admm":
                setup = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            el, _ = best_time(lambda: inv.transform(x), repeat)
        el /= n_samples
        name = f"flipad {solver}, max_iter={budget}" + (f", tol={tol:g}" if tol else "")
        rows.append((name, float(inv.n_iter_.mean()), el,
                     inv.objective_, inv.duality_gap_ / inv.objective_))

    with torch.no_grad():
        d_ref, p_ref, _, _ = fista_path(
            probe.operator_, torch.as_tensor(y), alpha, probe.lipschitz_, tol=0.0,
            max_iter=reference_iters, dtype=torch.float64)
    p_star = np.minimum.reduce([p_ref.numpy()] + [r[3] for r in rows])

    print(f"\n## DCGAN final layer ConvTranspose2d(64, 3, 4, 2, 1), alpha={alpha}, "
          f"{n_samples} samples, device={device}, L={probe.lipschitz_:.3f}")
    print(f"optimum estimate: best of all runs and a {reference_iters}-iteration float64 run; "
          f"times: best of {repeat} runs (baseline rows: of {baseline_repeat})")
    if admm_budgets:
        print(f"admm: one-off set-up per layer (not in s / sample) about {setup:.2f} s, "
              "one sample's solve included")
    print()
    print("| method | iterations | s / sample | speed-up | objective - baseline (max) "
          "| samples <= baseline | gap / objective (max) | (obj - opt) / opt (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, it, el, p, gap in rows:
        diff = p - p_base
        gap_s = "-" if gap is None else f"{gap.max():.2e}"
        print(f"| {name} | {it:.0f} | {el:.3f} | {t_base / el:.1f}x | {diff.max():+.2e} "
              f"| {np.mean(diff <= 0):.0%} | {gap_s} | {((p - p_star) / p_star).max():.2e} |")


def linear_table(n_samples, device):
    torch.manual_seed(0)
    layer = nn.Linear(300, 11)
    rng = np.random.default_rng(0)
    anchor = np.maximum(rng.normal(size=(5000, 300)), 0).mean(axis=0)
    h = np.maximum(rng.normal(size=(n_samples, 300)), 0)
    with torch.no_grad():
        x = layer(torch.tensor(h, dtype=torch.float32)).numpy().astype(np.float64)
    alpha = 5e-4
    rows = []
    probe = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha,
                               anchor=anchor).fit(x)
    y = probe._targets(x)
    W = probe.operator_.to_dense()

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        code = sparse_encode(y, W.T, algorithm="lasso_cd", alpha=alpha, max_iter=1000)
    el = time.perf_counter() - t0
    p_sk = objective(probe, y, code)
    rows.append(("sklearn sparse_encode lasso_cd", el, p_sk, None))

    for solver, tol, precision in [("cd", 1e-4, "float64"), ("cd", 1e-6, "float64"),
                                   ("fista", 1e-4, "float32"), ("fista", 1e-5, "float32")]:
        inv = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha,
                                 anchor=anchor, solver=solver, tol=tol, max_iter=2000,
                                 batch_size=2000, device=device,
                                 precision=precision).fit(x)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            inv.transform(x)
        el = time.perf_counter() - t0
        rows.append((f"flipad {solver} ({precision}), tol={tol:g}", el, inv.objective_,
                     inv.duality_gap_ / inv.objective_))

    print(f"\n## Tabular final layer Linear(300, 11), identity output, alpha={alpha}, "
          f"{n_samples} samples\n")
    print("| method | total s | samples / s | mean objective | objective - sklearn (mean) "
          "| gap / objective (max) |")
    print("|---|---|---|---|---|---|")
    for name, el, p, gap in rows:
        gap_s = "-" if gap is None else f"{gap.max():.1e}"
        print(f"| {name} | {el:.2f} | {n_samples / el:,.0f} | {p.mean():.6f} "
              f"| {(p - p_sk).mean():+.2e} | {gap_s} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-samples", type=int, nargs="+", default=[4, 16],
                        help="one DCGAN table per sample count (all solved as one batch)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (best is kept)")
    parser.add_argument("--baseline-repeat", type=int, default=2)
    parser.add_argument("--tabular-samples", type=int, default=10_000)
    parser.add_argument("--only", choices=["dcgan", "tabular"], default=None)
    args = parser.parse_args()
    if args.quick:
        dcgan_table(2, [(300, 0.0)], 600, args.device, admm_budgets=[(140, 0.0)], repeat=1,
                    baseline_repeat=1)
        linear_table(500, args.device)
        return
    # budgets without a tolerance, then a certified stop (tol relative to the
    # objective at the anchor, 1/2 ||y'||^2)
    if args.only != "tabular":
        for n in args.n_samples:
            dcgan_table(n, [(1000, 0.0), (1200, 0.0), (1600, 0.0), (5000, 1e-5)],
                        8000, args.device,
                        admm_budgets=[(120, 0.0), (140, 0.0), (160, 0.0), (5000, 1e-5)],
                        repeat=args.repeat, baseline_repeat=args.baseline_repeat)
    if args.only != "dcgan":
        linear_table(args.tabular_samples, args.device)


if __name__ == "__main__":
    main()
