"""How far one conformal threshold's false-negative rate can be from ``fnr``.

The conformal threshold guarantees ``fnr`` on average over the held-out draw;
the share of G's samples that *one* fitted threshold rejects is
``Beta(n + 1 - k, k)`` (:func:`flipad_sklearn.fnr_interval`).  This benchmark
prints that law's 90 % interval for calibration sizes a user meets (199, the
fewest at ``fnr=0.005``; the default split of a few hundred samples; the
1000 fresh samples ``flipad fit`` draws; more), and checks it by simulation:
``--draws`` held-out sets of G's scores (a normal and a heavy-tailed
Student-t(1) law: the law is distribution-free), each thresholded with the
package's own :func:`~flipad_sklearn.detection.conformal.conformal_threshold`,
the share of the scores' law beyond it computed exactly.  Then
:func:`flipad_sklearn.calibration_size`: how many samples of G keep the
rejected share below a bound in 19 draws of 20.  Last, the same for the
open-world union (:func:`flipad_sklearn.make_open_world_union`'s shares of
``fnr=0.005``): the sizes per detector that
:func:`flipad_sklearn.union_calibration_size` gives for a ``max_fnr``, the
union's interval (:func:`~flipad_sklearn.detection.conformal.union_fnr_interval`)
and simulated calibrations of three detectors, their rejections independent
or disjoint (the worst case: the union rejects the sum of their shares).

Run: ``python -m benchmarks.bench_threshold_spread [--draws 5000]`` (seconds;
writes ``benchmarks/results/bench_threshold_spread.md``).
"""

import argparse

import numpy as np
from scipy import stats

from flipad_sklearn import calibration_size, fnr_interval, union_calibration_size
from flipad_sklearn.detection.conformal import (
    conformal_threshold, required_validation_size, union_fnr_interval,
)
from flipad_sklearn.pipeline import OPEN_WORLD_SHARES

from ._results import add_result_args, results_dir, tee_result

SIZES = (199, 300, 500, 1000, 2000, 5000)
LAWS = {"normal": stats.norm(), "Student-t(1)": stats.t(1)}


def simulate(n, fnr, law, draws, rng):
    """The share of ``law`` a threshold set on ``n`` of its samples rejects, per draw."""
    scores = law.rvs(size=(draws, n), random_state=rng)   # higher = more like G
    # on -score, as the detectors; P(score < -t) is the share rejected
    t = np.array([conformal_threshold(-row, fnr) for row in scores])
    return law.cdf(-t)


def run(args):
    rng = np.random.default_rng(args.seed)
    print("# The spread of one conformal threshold\n")
    print(f"Share of G's samples rejected by one threshold set on n held-out samples of G: "
          f"the Beta law's central 90 % interval (`fnr_interval`) against {args.draws} "
          "simulated held-out draws per law (5 % / mean / 95 % of the simulated shares).\n")
    print("| fnr | n | Beta law 5 % - 95 % | " +
          " | ".join(f"simulated, {k}" for k in LAWS) + " |")
    print("|---|---|---|" + "---|" * len(LAWS))
    for fnr in args.fnr:
        for n in SIZES:
            lo, hi = fnr_interval(n, fnr)
            cells = []
            for law in LAWS.values():
                s = simulate(n, fnr, law, args.draws, rng)
                q = np.quantile(s, [0.05, 0.95])
                cells.append(f"{q[0]:.4f} / {s.mean():.4f} / {q[1]:.4f}")
            print(f"| {fnr} | {n} | {lo:.4f} - {hi:.4f} | " + " | ".join(cells) + " |")
    print("\nSamples of G needed (`calibration_size`) so that one threshold rejects at most "
          "max_fnr of G's samples in 19 draws of 20:\n")
    print("| fnr | max_fnr | samples of G |")
    print("|---|---|---|")
    for fnr in args.fnr:
        for factor in (3.0, 2.0, 1.5, 1.2):
            print(f"| {fnr} | {factor * fnr:g} | {calibration_size(fnr, factor * fnr)} |")
    union_table(args.union_draws, rng)


def union_table(draws, rng, fnr=0.005):
    """Sizes per detector of the open-world union for a max_fnr, and simulated calibrations."""
    shares = np.array(list(OPEN_WORLD_SHARES.values()), dtype=np.float64)
    fnrs = fnr * shares / shares.sum()
    names = ", ".join(OPEN_WORLD_SHARES)
    print(f"\n## The open-world union at fnr {fnr}\n")
    print(f"Detectors {names} at fnrs {', '.join(f'{f:g}' for f in fnrs)}.  Samples of G per "
          "detector: the fewest each share needs (`calibrate`'s default), 1000 each (`flipad "
          "fit`'s default), or `union_calibration_size(fnrs, max_fnr)` (`union.calibrate(..., "
          f"max_fnr=...)`).  Simulated: {draws} calibrations of three detectors with normal "
          "scores, the share of G's samples the union rejects when the detectors' rejections "
          "are independent, and when they are disjoint (the worst case, the sum of the three "
          "shares): mean / 95 % / share of calibrations above max_fnr.\n")
    print("| samples of G asked | per detector | union interval 5 % - 95 % | simulated, "
          "independent | simulated, disjoint |")
    print("|---|---|---|---|---|")
    rows = [("fewest (default)", [required_validation_size(f) for f in fnrs], None),
            ("1000 each", [1000] * len(fnrs), None)]
    rows += [(f"max_fnr {m:g}", union_calibration_size(fnrs, m), m)
             for m in (0.02, 0.015, 0.01, 0.0075)]
    law = stats.norm()
    for label, sizes, max_fnr in rows:
        lo, hi = union_fnr_interval(sizes, fnrs)
        shares_rejected = np.stack([simulate(n, f, law, draws, rng)
                                    for n, f in zip(sizes, fnrs)])
        cells = []
        for union in (1 - np.prod(1 - shares_rejected, axis=0),
                      np.minimum(shares_rejected.sum(axis=0), 1.0)):
            above = "-" if max_fnr is None else f"{np.mean(union > max_fnr):.3f}"
            cells.append(f"{union.mean():.4f} / {np.quantile(union, 0.95):.4f} / {above}")
        print(f"| {label} | {', '.join(map(str, sizes))} | {lo:.4f} - {hi:.4f} | "
              + " | ".join(cells) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=5000)
    p.add_argument("--fnr", type=float, nargs="+", default=[0.005, 0.05])
    p.add_argument("--union-draws", type=int, default=1000,
                   help="simulated calibrations of the union per row (1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="200 draws, to a temporary folder")
    add_result_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.draws = args.union_draws = 200
    tee_result("bench_threshold_spread.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
