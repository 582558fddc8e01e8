"""Is the open-world union's threshold honest on the face DCGAN at the paper's scale?

Issue 32, item 1, for the recipe an owner is told to use.  The union of
``bench_full_scale --generator face --recipe open-world`` (same training
samples and seeds: ``make_open_world_union`` fitted on 1500 samples of the
published face DCGAN against 1500 of the competitor and the one-call
shadows) scores a pool of ``--n-pool`` fresh samples of G (where
calibrations draw from) and ``--n-test`` other fresh samples of G.  Per
detector: the two-sample KS p-value of pool against test scores (they come
from one law, so it should be uniform).  Then ``--repeats`` calibrations,
each detector's threshold set with the package's conformal rule on a random
subset of the pool of the size ``union.calibrate`` draws by default (the
fewest its share of fnr 0.005 needs) and of the sizes ``max_fnr=0.01``
asks for: the share of the test samples each calibration's union rejects,
mean and 5 % / 95 %, against the law's interval (``union_fnr_interval``)
and mean.  A honest calibration rejects ``fnr`` on average.  (Subsets of
one finite pool are not independent draws: the spread is a lower bound of
the real one, the mean is not biased.)

Run: ``python -m benchmarks.bench_face_union_calibration [--threads 2]``
(about 8 minutes on 2 cores, mostly inverting the pool and test samples);
writes ``benchmarks/results/bench_face_union_calibration.md``.
"""

import argparse

import numpy as np
import torch
from scipy.stats import ks_2samp

from flipad_sklearn.detection.conformal import (
    _head_transform, _unwrap, conformal_threshold, required_validation_size,
    union_calibration_size, union_fnr_interval,
)

from ._results import add_result_args, results_dir, tee_result
from .bench_face_dcgan import FACE_CACHE, load_face_dcgan, sample, trained_other
from .bench_full_scale import open_world_others, open_world_training_set
from .bench_open_world_face import OTHERS, open_world_union


def detector_scores(union, X):
    """Each detector's scores of ``X`` (higher = more like G), one column each."""
    cols = []
    for _, est in union.estimators_:
        det, head = _unwrap(est)
        cols.append(np.asarray(det.score_samples(_head_transform(head, X)), dtype=np.float64))
    return np.column_stack(cols)


def realised(pool, test, sizes, fnrs, repeats, rng):
    """Share of ``test`` the union rejects, for ``repeats`` calibrations drawn from ``pool``."""
    out = np.empty(repeats)
    for r in range(repeats):
        rejected = np.zeros(len(test), dtype=bool)
        for j, (n, f) in enumerate(zip(sizes, fnrs)):
            cal = pool[rng.choice(len(pool), size=n, replace=False), j]
            # on distances (-score), as the detectors: reject beyond the threshold
            t = conformal_threshold(-cal, f)
            rejected |= -test[:, j] > t
        out[r] = rejected.mean()
    return out


def run(args):
    G = load_face_dcgan()
    comp = trained_other(G, "comp", *OTHERS["comp"], args.cache_dir)
    labelled = open_world_others(G, comp, args.cache_dir)
    seed = 100 * args.seed
    train = open_world_training_set(G, labelled, seed)
    union = open_world_union(G)
    X = np.concatenate([train["own"], train["others"]])
    y = np.r_[np.ones(len(train["own"])), -np.ones(len(train["others"]))]
    union.fit(X, y)
    names = [n for n, _ in union.estimators_]
    fnrs = [float(det.fnr) for det in union._detectors()]
    # fresh samples of G none of which trained anything (seeds unused by the fit)
    pool = detector_scores(union, sample(G, args.n_pool, seed + 50))
    test = detector_scores(union, sample(G, args.n_test, seed + 51))
    print("# The open-world union's calibration on the face DCGAN, fresh samples of G\n")
    print(f"The union of bench_full_scale's open-world run (1500 samples of G against 1500 "
          f"labelled others), detectors {', '.join(names)} at fnrs "
          f"{', '.join(f'{f:g}' for f in fnrs)}; {args.n_pool} fresh samples of G to "
          f"calibrate from, {args.n_test} other fresh samples of G to test.\n")
    print("| detector | KS p-value, pool vs test scores | pool scores: 0.1 % / 1 % / median "
          "| test scores: 0.1 % / 1 % / median |")
    print("|---|---|---|---|")
    for j, name in enumerate(names):
        qp = np.quantile(pool[:, j], [0.001, 0.01, 0.5])
        qt = np.quantile(test[:, j], [0.001, 0.01, 0.5])
        print(f"| {name} | {ks_2samp(pool[:, j], test[:, j]).pvalue:.3f} | "
              f"{' / '.join(f'{v:.4g}' for v in qp)} | {' / '.join(f'{v:.4g}' for v in qt)} |")
    rng = np.random.default_rng(args.seed)
    print(f"\n{args.repeats} calibrations, each drawing its samples per detector from the "
          "pool without replacement: the share of the test samples of G the union rejects "
          "(an honest threshold rejects fnr 0.005 on average), and each detector's share.\n")
    print("| calibration samples per detector | union interval 5 % - 95 % (law) | "
          "realised: mean / 5 % / 95 % | " + " | ".join(f"{n}: mean" for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    rows = [("fewest (default)", [required_validation_size(f) for f in fnrs]),
            ("max_fnr 0.01", union_calibration_size(fnrs, 0.01))]
    for label, sizes in rows:
        if max(sizes) > len(pool):
            print(f"| {label}: {sizes} | more than the pool of {len(pool)} | | |")
            continue
        lo, hi = union_fnr_interval(sizes, fnrs)
        shares = realised(pool, test, sizes, fnrs, args.repeats, rng)
        each = [realised(pool[:, [j]], test[:, [j]], [n], [f], args.repeats, rng).mean()
                for j, (n, f) in enumerate(zip(sizes, fnrs))]
        q5, q95 = np.quantile(shares, [0.05, 0.95])
        print(f"| {label}: {', '.join(map(str, sizes))} | {lo:.4f} - {hi:.4f} | "
              f"{shares.mean():.4f} / {q5:.4f} / {q95:.4f} | "
              + " | ".join(f"{v:.4f} (fnr {f:g})" for v, f in zip(each, fnrs)) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pool", type=int, default=7000,
                   help="fresh samples of G calibrations draw from (7000)")
    p.add_argument("--n-test", type=int, default=3000,
                   help="other fresh samples of G, the test (3000)")
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--cache-dir", default=FACE_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_face_union_calibration.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
