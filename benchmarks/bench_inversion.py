"""Speed and accuracy of the final-layer inversion at its defaults, beside the baselines.

Every table measures, in the same run, the FLIPAD authors' published FISTA
settings re-implemented (fixed step, soft-threshold ``alpha * step``, float32,
plain layout) and ``FinalLayerInverter`` **at its defaults** (``solver="auto"``,
``progress_tol``, ``batch_size="auto"``: nothing hand-picked), per sample:

1. DCGAN 64x64 ``ConvTranspose2d(64, 3, 4, 2, 1)``, alpha 5e-4, tanh; baseline
   step 0.025, stop when the largest per-sample mean ``|dz|`` is <= 1e-5
   (at most 10,000 iterations).
2. LSGAN ``Conv2d(64, 3, 3, 1, 1)`` on 64x64 activations (the authors' LSGAN
   final layer), alpha 5e-4, tanh, same baseline rule.
3. Stable Diffusion's VAE ``conv_out`` ``Conv2d(128, 3, 3, 1, 1)`` at 128x128,
   identity output, alpha 1e-5; baseline step 0.01 for its full 1000
   iterations (no early stop), the authors' SD setting.  Also one 512x512
   sample at the defaults: its time and peak memory.
4. The tabular generator's ``Linear(300, 11)`` on 10,000 samples, identity
   output, beside scikit-learn's ``sparse_encode(algorithm="lasso_cd")`` and
   celer's / skglm's Lasso when they are installed (same problem: their
   penalty is divided by the number of outputs inside).
5. A diffusers ``AutoencoderKL`` decoder (random weights from a config, no
   download: 128 channels, 8x8x4 latents to 64x64 images), when diffusers is
   installed: its ``conv_out`` inverted from the decoder's own activations and
   images (anchor: the mean over 16 latents), alpha 1e-5, identity output,
   beside the authors' SD setting (1000 iterations, step ``0.09 / L``) and
   each solver forced, all at the other defaults.

Conv weights are torch's default initialisation (seed 0) scaled so that the
authors' step means what it does on the DCGAN layer: ``step * L = 0.09``.
Activations are ReLU of standard normals, the anchor their mean.  "samples
<= baseline" counts the samples whose objective is at most the baseline's;
"gap / obj" is the certified duality gap relative to the objective, "gap /
P(0)" relative to the objective at the anchor (the units of ``tol`` and
``progress_tol``).  Each conv table also
prints milliseconds per iteration of plain torch convolutions (one ``W`` and
one ``Wᵀ``, the baseline's iteration) beside the default solver's, and the
peak memory of the process.  Times are the best of ``--repeat`` runs (the
baseline's of ``--baseline-repeat``; defaults 5 and 2: a default run lasts
a fraction of a second, where one slow spell of a shared machine moves its
time by 30 %, the baseline's seconds average it out), the two alternating so
that a slow spell biases neither.  Torch threads must not exceed the
free cores: with one of two cores busy, two threads made every run ~30x slower.

Run:
``python -m benchmarks.bench_inversion [--quick] [--only NAME...] [--device cuda] [--out FILE]``
(writes ``benchmarks/results/bench_inversion.md``; ``--quick`` writes to a
temporary folder unless ``--results-dir`` is given).
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
from flipad_sklearn.lasso import primal_objective

from ._harness import best_time, paper_layer, peak_mb, problem, scaled_layer
from ._results import add_result_args, results_dir, tee_result


def baseline_fista(layer, y_img, in_shape, step, alpha, stop, max_iter, device):
    """The authors' settings: fixed step, float32, stop on the largest mean |dz|."""
    w = layer.weight.detach().float().to(device)
    conv = isinstance(layer, nn.Conv2d)
    kw = dict(stride=layer.stride, padding=layer.padding)
    fwd = (lambda v: F.conv2d(v, w, **kw)) if conv else (lambda v: F.conv_transpose2d(v, w, **kw))
    adj = (lambda r: F.conv_transpose2d(r, w, **kw)) if conv else (lambda r: F.conv2d(r, w, **kw))
    yy = torch.as_tensor(y_img, dtype=torch.float32, device=device)
    d = torch.zeros((len(yy),) + in_shape, device=device)
    v, t = d.clone(), 1.0
    it = 0
    for it in range(1, max_iter + 1):
        d_new = F.softshrink(v - step * adj(fwd(v) - yy), alpha * step)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        v = d_new + (t - 1) / t_new * (d_new - d)
        change = (d_new - d).abs().mean(dim=(1, 2, 3)).max().item() if stop else 1.0
        d, t = d_new, t_new
        if change <= stop:
            break
    return d.reshape(len(yy), -1).double().cpu(), it


def plain_iteration_ms(layer, in_shape, n, device, repeat=5):
    """Milliseconds per sample of one ``W`` and one ``Wᵀ`` plain torch convolution."""
    w = layer.weight.detach().float().to(device)
    kw = dict(stride=layer.stride, padding=layer.padding)
    conv = isinstance(layer, nn.Conv2d)
    v = torch.randn((n,) + in_shape, device=device)

    def step():
        out = F.conv2d(v, w, **kw) if conv else F.conv_transpose2d(v, w, **kw)
        back = F.conv_transpose2d(out, w, **kw) if conv else F.conv2d(out, w, **kw)
        if device != "cpu":
            torch.cuda.synchronize()
        return back

    el, _ = best_time(lambda: [step() for _ in range(10)], repeat)
    return el / 10 / n * 1e3


def conv_table(title, layer, in_shape, *, activation, alpha, step, stop, max_iter, n,
               device, repeat, baseline_repeat, variants=None):
    """One layer's table: the baseline, the defaults and, per ``variants``
    (``{label: FinalLayerInverter parameters}``, the others at the defaults),
    one more row, all timed in the same alternating loop.  Returns the
    default inverter and ``{row label: speed-up over the baseline}``."""
    x, anchor = problem(layer, in_shape, n, activation)
    invs = {"flipad defaults": {}}
    invs.update({f"flipad defaults, {label}": params
                 for label, params in (variants or {}).items()})
    fit_s = {}
    for label, params in invs.items():
        t0 = time.perf_counter()
        invs[label] = FinalLayerInverter(layer=layer, activation=activation, alpha=alpha,
                                         anchor=anchor, device=device, **params).fit(x)
        fit_s[label] = time.perf_counter() - t0
    inv = invs["flipad defaults"]
    y = inv._targets(x.reshape(n, -1))
    y_img = y.reshape((n,) + inv.output_shape_)

    def run_baseline():
        return baseline_fista(layer, y_img, in_shape, step, alpha, stop, max_iter, device)

    el_def = dict.fromkeys(invs, float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # one-off per-layer set-up (the factorisations of every rho stage): a
        # first transform of one sample, not in the timings below
        t0 = time.perf_counter()
        inv.transform(x[:1])
        setup_s = time.perf_counter() - t0
        for other in invs.values():
            other.transform(x[:1])
        # the baseline's runs and the defaults' alternate, and each keeps its
        # best: a slow spell of a shared machine then biases neither
        el_base = float("inf")
        for k in range(max(repeat, baseline_repeat)):
            if k < baseline_repeat:
                el, (d_base, it_base) = best_time(run_baseline, 1)
                el_base = min(el_base, el)
            if k < repeat:
                for label, est in invs.items():
                    el_def[label] = min(el_def[label],
                                        best_time(lambda: est.transform(x), 1)[0])
    t_base = el_base / n
    p_base = primal_objective(torch.as_tensor(y) - inv.operator_.matvec(d_base), d_base,
                              alpha).numpy()
    ms_plain = plain_iteration_ms(layer, in_shape, n, device)
    print(f"\n## {title}\n")
    print(f"alpha={alpha}, ridge={inv.ridge_:.2e}, {n} samples, device={device}, "
          f"L={inv.lipschitz_:.3f} "
          f"(baseline step {step}: step*L = {step * inv.lipschitz_:.3f}); "
          f"default solver: {inv.solver_} ({inv.solver_reason_}); batch_size={inv.batch_size_}; "
          f"fit {fit_s['flipad defaults']:.1f} s, first transform of one sample (per-layer "
          f"set-up included, not in s / sample) {setup_s:.1f} s\n")
    print("| method | iterations | s / sample | speed-up | samples <= baseline "
          "| lasso objective / baseline - 1 (max) | gap / obj (max) | gap / P(0) (max) "
          "| certified feature error (max) | stop |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rule = f"|dz| <= {stop:g}" if stop else "no early stop"
    print(f"| baseline (step {step}, {rule}, <= {max_iter} it) | {it_base} | {t_base:.3f} "
          f"| 1.0x | - | 0 | - | - | none | - |")
    ms_def, speedup = {}, {}
    for label, est in invs.items():
        t_def = el_def[label] / n
        speedup[label] = t_base / t_def
        # the defaults solve the elastic net (ridge_): its lasso part against the baseline's
        d_def = torch.as_tensor(est.transform(x).astype(np.float64) - est.anchor_)
        p = primal_objective(torch.as_tensor(y) - est.operator_.matvec(d_def), d_def,
                             alpha).numpy()
        rel_gap = est.duality_gap_ / est.objective_
        rel_gap0 = est.duality_gap_ / (0.5 * (y * y).sum(axis=1))      # the units of tol
        reasons = ", ".join(f"{r} {c}" for r, c in zip(*np.unique(est.stop_reason_,
                                                                  return_counts=True)))
        ms_def[label] = t_def / float(est.n_iter_.mean()) * 1e3
        print(f"| {label} | {est.n_iter_.mean():.0f} | {t_def:.3f} | {t_base / t_def:.1f}x "
              f"| {np.mean(p <= p_base):.0%} | {(p / p_base - 1).max():+.2e} "
              f"| {rel_gap.max():.2e} | {rel_gap0.max():.1e} | {est.feature_error_.max():.1e} "
              f"| {reasons} |")
    per_it = ", ".join(f"{label.replace('flipad defaults', 'flipad default')} {ms:.2f}"
                       for label, ms in ms_def.items())
    print(f"\nms per iteration and sample: plain torch W + Wᵀ {ms_plain:.2f}, "
          f"{per_it}; peak memory of the process {peak_mb():.0f} MB")
    return inv, speedup


def sd_large(device, side=512):
    """One SD-sized sample at the defaults: seconds and peak memory."""
    torch.manual_seed(0)
    layer = scaled_layer(nn.Conv2d(128, 3, 3, 1, 1), 0.01, (128, 32, 32))
    in_shape = (128, side, side)
    x, anchor = problem(layer, in_shape, 1, "identity")
    before = peak_mb()
    inv = FinalLayerInverter(layer=layer, activation="identity", alpha=1e-5, anchor=anchor,
                             device=device)
    t0 = time.perf_counter()
    inv.fit(x)
    fit_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        inv.transform(x)
    el = time.perf_counter() - t0
    print(f"\n## SD conv_out at {side}x{side} ({128 * side * side:,} activations), defaults, "
          f"one sample\n")
    print(f"solver {inv.solver_}, batch_size={inv.batch_size_}: fit {fit_s:.1f} s, transform "
          f"{el:.1f} s ({inv.n_iter_[0]} iterations, stop: {inv.stop_reason_[0]}, gap / obj "
          f"{inv.duality_gap_[0] / inv.objective_[0]:.2e}); peak memory of the process "
          f"{peak_mb():.0f} MB (before: {before:.0f} MB)")


def vae_table(device, n=4):
    """The conv_out of a diffusers AutoencoderKL decoder, on its own activations."""
    try:
        import diffusers
    except ImportError:
        print("\n## diffusers AutoencoderKL decoder: skipped (diffusers is not installed)")
        return
    from flipad_sklearn import mean_activation, sample_activations

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128,) * 4,
        latent_channels=4, layers_per_block=1, sample_size=64).eval()
    gen = torch.Generator().manual_seed(1)
    anchor = mean_activation(vae.decode, inputs=torch.randn((16, 4, 8, 8), generator=gen))
    _, x = sample_activations(vae.decode, inputs=torch.randn((n, 4, 8, 8), generator=gen))
    layer, alpha = vae.decoder.conv_out, 1e-5
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in ("auto", "admm", "split_admm", "fista"):
            inv = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha,
                                     anchor=anchor, solver=solver, device=device).fit(x)
            inv.transform(x[:1])                       # per-layer set-up, not timed
            el, _ = best_time(lambda: inv.transform(x), 2)
            rows.append((solver, inv, el / n))
        auto = rows[0][1]
        y = auto._targets(x.reshape(n, -1))
        y_img = y.reshape((n,) + auto.output_shape_)
        step = 0.09 / auto.lipschitz_
        el, (d_base, it_base) = best_time(lambda: baseline_fista(
            layer, y_img, auto.activation_shape_, step, alpha, 0.0, 1000, device), 1)
    p_base = primal_objective(torch.as_tensor(y) - auto.operator_.matvec(d_base), d_base,
                              alpha).numpy()
    print(f"\n## diffusers AutoencoderKL decoder conv_out {layer}, 64x64, identity\n")
    print(f"alpha={alpha}, {n} images, device={device}, L={auto.lipschitz_:.3f}; "
          f"solver='auto' -> {auto.solver_} ({auto.solver_reason_})\n")
    print("| method | iterations | s / image | speed-up | objective / baseline - 1 (max) "
          "| gap / obj (max) |")
    print("|---|---|---|---|---|---|")
    print(f"| baseline (step 0.09/L, no early stop, 1000 it) | {it_base} | {el / n:.3f} | 1.0x "
          "| 0 | - |")
    for solver, inv, t in rows:
        p = inv.objective_
        print(f"| {solver}{' (' + inv.solver_ + ')' if solver == 'auto' else ''} "
              f"| {np.median(inv.n_iter_):.0f} | {t:.3f} | {el / n / t:.1f}x "
              f"| {(p / p_base - 1).max():+.2e} | {(inv.duality_gap_ / p).max():.2e} |")


def linear_table(n_samples, device):
    torch.manual_seed(0)
    layer = nn.Linear(300, 11)
    rng = np.random.default_rng(0)
    anchor = np.maximum(rng.normal(size=(5000, 300)), 0).mean(axis=0)
    h = np.maximum(rng.normal(size=(n_samples, 300)), 0)
    with torch.no_grad():
        x = layer(torch.tensor(h, dtype=torch.float32)).numpy().astype(np.float64)
    alpha = 5e-4
    inv = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha, anchor=anchor,
                             device=device).fit(x)
    y = inv._targets(x)
    W = inv.operator_.to_dense()
    M = W.shape[0]

    def obj(D):
        D = torch.as_tensor(np.asarray(D, dtype=np.float64))
        return primal_objective(torch.as_tensor(y) - inv.operator_.matvec(D), D, alpha).numpy()

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        el, code = best_time(lambda: sparse_encode(y, W.T, algorithm="lasso_cd", alpha=alpha,
                                                   max_iter=1000), 2)
        rows.append(("sklearn sparse_encode lasso_cd", el, obj(code)))
        try:
            from celer import Lasso as CelerLasso

            def celer_all():
                est = CelerLasso(alpha=alpha / M, fit_intercept=False, tol=1e-6)
                return np.stack([est.fit(W, row).coef_.copy() for row in y])
            el, D = best_time(celer_all, 1)
            rows.append(("celer Lasso (one fit per sample)", el, obj(D)))
        except ImportError:
            rows.append(("celer (not installed)", float("nan"), None))
        try:
            from skglm import Lasso as SkglmLasso

            def skglm_all():
                est = SkglmLasso(alpha=alpha / M, fit_intercept=False, tol=1e-6)
                return np.stack([est.fit(W, row).coef_.copy() for row in y])
            el, D = best_time(skglm_all, 1)
            rows.append(("skglm Lasso (one fit per sample)", el, obj(D)))
        except ImportError:
            rows.append(("skglm (not installed)", float("nan"), None))
        el, _ = best_time(lambda: inv.transform(x), 2)
        rows.append((f"flipad defaults ({inv.solver_})", el, inv.objective_))
    p_sk = rows[0][2]
    print(f"\n## Tabular final layer Linear(300, 11), identity output, alpha={alpha}, "
          f"{n_samples} samples\n")
    print("| method | total s | samples / s | mean objective | objective - sklearn (mean) |")
    print("|---|---|---|---|---|")
    for name, el, p in rows:
        if p is None:
            print(f"| {name} | - | - | - | - |")
            continue
        print(f"| {name} | {el:.2f} | {n_samples / el:,.0f} | {p.mean():.6f} "
              f"| {(p - p_sk).mean():+.2e} |")
    gap = inv.duality_gap_ / inv.objective_
    print(f"\nflipad defaults: certified gap / objective max {gap.max():.1e}")
    # the features' certificate of the defaults, beside coordinate descent on the
    # same elastic net (the solver "auto" took for Linear layers before the ridge)
    print("\n| solver (other parameters at the defaults) | total s | stop reasons "
          "| certified feature error (max) | ConvergenceWarning |")
    print("|---|---|---|---|---|")
    for solver in ("auto", "cd"):
        est = FinalLayerInverter(layer=layer, activation="identity", alpha=alpha, anchor=anchor,
                                 solver=solver, device=device).fit(x)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            el, _ = best_time(lambda: est.transform(x), 1)
        reasons = ", ".join(f"{r} {c}" for r, c in zip(*np.unique(est.stop_reason_,
                                                                  return_counts=True)))
        warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
        print(f"| {solver}{' (' + est.solver_ + ')' if solver == 'auto' else ''} | {el:.2f} "
              f"| {reasons} | {est.feature_error_.max():.1e} | {'yes' if warned else 'no'} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-repeat", type=int, default=2)
    parser.add_argument("--tabular-samples", type=int, default=10_000)
    parser.add_argument("--only", choices=["dcgan", "lsgan", "sd", "sd512", "tabular", "vae"],
                        default=None, nargs="+")
    parser.add_argument("--out", default="bench_inversion.md",
                        help="name of the result file (with the commit, threads, device "
                             "and date) in --results-dir")
    add_result_args(parser)
    args = parser.parse_args(argv)
    tee_result(args.out, run, args, device=args.device, results_dir=results_dir(args))


def run(args):
    want = (lambda name: args.only is None or name in args.only)
    n, dev = args.n_samples, args.device
    rep = dict(repeat=args.repeat, baseline_repeat=args.baseline_repeat)
    if args.quick:
        n, rep = 2, dict(repeat=1, baseline_repeat=1)
    if want("dcgan"):
        layer, shape, act, alpha, step = paper_layer("dcgan")
        conv_table("DCGAN final layer ConvTranspose2d(64, 3, 4, 2, 1), 64x64 output",
                   layer, shape, activation=act, alpha=alpha, step=step,
                   stop=1e-5, max_iter=10_000, n=n, device=dev, **rep)
    if want("lsgan"):
        side = 32 if args.quick else 64
        layer, shape, act, alpha, step = paper_layer("lsgan", side)
        conv_table(f"LSGAN final layer Conv2d(64, 3, 3, 1, 1) on 64x{side}x{side}",
                   layer, shape, activation=act, alpha=alpha, step=step,
                   stop=1e-5, max_iter=10_000, n=n, device=dev, **rep)
    if want("sd"):
        side = 32 if args.quick else 128
        layer, shape, act, alpha, step = paper_layer("sd", side)
        conv_table(f"SD VAE conv_out Conv2d(128, 3, 3, 1, 1) at {side}x{side}, identity",
                   layer, shape, activation=act, alpha=alpha, step=step,
                   stop=0.0, max_iter=1000, n=n, device=dev, **rep)
    if want("sd512") and not args.quick:
        sd_large(dev)
    if want("tabular"):
        linear_table(500 if args.quick else args.tabular_samples, dev)
    if want("vae"):
        vae_table(dev, 2 if args.quick else n)


if __name__ == "__main__":
    main()
