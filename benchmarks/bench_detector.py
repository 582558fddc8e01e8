"""Speed of FLIPADDetector on DCGAN-sized activations (64 x 32 x 32), beside IsolationForest.

Prints a table: seconds per training epoch and scoring throughput, for

* ``pool+mlp``: 4x4 max pooling (-> 64 x 8 x 8 = 4096 features), G-standardisation,
  Deep SAD MLP (the default FLIPAD recipe on large activations);
* ``raw+mlp``: the MLP straight on the 65,536 raw features;
* ``raw+lenet``: the LeNet-style conv net on the 64 x 32 x 32 maps (on a subset,
  ``--conv-samples``: it is two orders of magnitude slower on a CPU); the last
  column extrapolates its epoch time to ``--n-samples``;
* ``pool+iforest``: IsolationForest (100 trees) on the pooled features.

Usage::

    python -m benchmarks.bench_detector                 # 10,000 samples, CPU, 1 thread
    python -m benchmarks.bench_detector --n-samples 2000 --epochs 1
    python -m benchmarks.bench_detector --device cuda --threads 8

The activations are synthetic (ReLU of Gaussian noise): speed does not depend
on their content.  Scoring throughput is shown in float64 (the default) and float32.
"""

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from sklearn.ensemble import IsolationForest

from flipad_sklearn import (
    ActivationPooling,
    FLIPADDetector,
    GeneratorStandardScaler,
    ThresholdWarning,

)

from ._results import add_result_args, results_dir, tee_result


SHAPE = (64, 32, 32)


def make_activations(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, int(np.prod(SHAPE))), dtype=np.float32)
    np.maximum(X, 0, out=X)
    return X


def time_detector(name, det, X_train, X_score, n_target):
    t0 = time.perf_counter()
    det.fit(X_train)
    fit_s = time.perf_counter() - t0
    epochs = det.history_["time"]
    # The first epoch pays one-off allocation costs; report the later ones if any.
    per_epoch = float(np.median(epochs[1:] if len(epochs) > 1 else epochs))
    rates = {}
    for dtype in ("float64", "float32"):
        # Same weights, other scoring precision (score_dtype follows the network).
        d = copy.deepcopy(det)
        d.network_ = d.network_.to(getattr(torch, dtype))
        t0 = time.perf_counter()
        d.score_samples(X_score)
        rates[dtype] = len(X_score) / (time.perf_counter() - t0)
    return dict(method=name, n_train=len(X_train), epoch_s=per_epoch, fit_s=fit_s,
                score64=rates["float64"], score32=rates["float32"],
                epoch_s_at_n=per_epoch * n_target / len(X_train))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--conv-samples", type=int, default=1000,
                   help="training samples for the conv net (0 to skip)")
    p.add_argument("--skip-raw", action="store_true", help="skip the MLP on raw features")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    add_result_args(p)
    args = p.parse_args(argv)
    return tee_result("bench_detector.md", _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    torch.set_num_threads(args.threads)
    n = args.n_samples

    t0 = time.perf_counter()
    X = make_activations(n)
    gen_s = time.perf_counter() - t0
    common = dict(n_epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                  random_state=0, fnr=0.005)
    warnings.simplefilter("ignore", ThresholdWarning)  # small --n-samples runs

    # Warm-up: the first fit imports torch's optimiser machinery (~2 s, once).
    FLIPADDetector(n_epochs=1, device=args.device).fit(np.ones((8, 4)) + np.eye(8, 4))
    rows = []
    t0 = time.perf_counter()
    pool = ActivationPooling(SHAPE, method="max", kernel_size=4).fit(X)
    X_pool = GeneratorStandardScaler().fit_transform(pool.transform(X))
    feat_s = time.perf_counter() - t0

    rows.append(time_detector("pool+mlp", FLIPADDetector(**common), X_pool, X_pool, n))
    if not args.skip_raw:
        rows.append(time_detector("raw+mlp", FLIPADDetector(**common), X, X, n))
    if args.conv_samples:
        m = min(args.conv_samples, n)
        rows.append(time_detector(
            "raw+lenet", FLIPADDetector(input_shape=SHAPE, **common), X[:m], X[:m], n))

    t0 = time.perf_counter()
    iforest = IsolationForest(n_estimators=100, random_state=0).fit(X_pool)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    iforest.score_samples(X_pool)
    score_s = time.perf_counter() - t0
    rows.append(dict(method="pool+iforest", n_train=n, epoch_s=float("nan"), fit_s=fit_s,
                     score64=n / score_s, score32=float("nan"), epoch_s_at_n=float("nan")))

    print(f"\n{n} samples of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} activations, "
          f"device={args.device}, torch threads={torch.get_num_threads()}, "
          f"batch={args.batch_size}, epochs={args.epochs}")
    print(f"data generation {gen_s:.1f}s; pooling 4x4 + standardisation "
          f"{feat_s:.2f}s ({n / feat_s:,.0f} samples/s)\n")
    head = (f"| {'method':<13}| {'n_train':>8} | {'s/epoch':>8} | {'fit s':>7} | "
            f"{'scored/s f64':>12} | {'scored/s f32':>12} | {f's/epoch @ {n}':>15} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['method']:<13}| {r['n_train']:>8} | {r['epoch_s']:>8.2f} | "
              f"{r['fit_s']:>7.2f} | {r['score64']:>12,.0f} | {r['score32']:>12,.0f} | "
              f"{r['epoch_s_at_n']:>15.1f} |")
    print("\nfit s: whole fit (epochs, centre, validation scoring); scored/s: score_samples "
          "throughput in float64 (default) and float32 (score_dtype='float32'); "
          "iforest: 100 trees, scored/s under f64.")
    return rows


if __name__ == "__main__":
    main()
