"""The operating point at fnr = 0.005 with 500 own samples: before and after issue 13.

A small synthetic case (about 4 minutes on one CPU thread): G's samples are
standard normal in 8 dimensions, another generator's are shifted by 2.2 on
two coordinates (ROC AUC ~0.98 with a small Deep SAD); 500 samples of G and
200 of the other train the detector, 20000 fresh samples of each test it,
8 seeds.  Settings:

* ``before``: ``validation_size=None``, the share ``validation_fraction=0.2``:
  100 held out, fewer than the 199 fnr = 0.005 needs, so the threshold is
  the largest of them (a ThresholdWarning);
* ``auto``: the default ``validation_size="auto"``: 199 of the 500 held out;
* ``freshN``: ``validation_size=0`` (all 500 train) and
  :func:`flipad_sklearn.detection.conformal.calibrate` on N fresh samples of G
  (``flipad fit`` draws 1000).

Printed: mean ± std over the seeds of the threshold, the share of G's
fresh samples rejected (promised: at most 0.005), the balanced accuracy
and the ROC AUC.  The table is quoted in ``docs/user_guide/method.rst``.

Usage::

    python -m benchmarks.bench_operating_point
"""
import argparse
import copy
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from flipad_sklearn import FLIPADDetector, calibrate

from ._results import add_result_args, results_dir, write_result


D = 8
SETTINGS = ("before", "auto", "fresh199", "fresh1000", "fresh2000")


def sample_G(n, rng):
    return rng.normal(size=(n, D))


def sample_other(n, rng):
    """Another generator close to G (ROC AUC ~0.98)."""
    return rng.normal(size=(n, D)) + np.r_[2.2, 2.2, np.zeros(D - 2)]


def run(seeds=range(8), n_own=500, n_other=200, n_test=20000):
    torch.set_num_threads(1)
    rows = {k: [] for k in SETTINGS}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        X = np.vstack([sample_G(n_own, rng), sample_other(n_other, rng)])
        y = np.r_[np.ones(n_own), -np.ones(n_other)]
        X_g, X_o = sample_G(n_test, rng), sample_other(n_test, rng)
        base = dict(hidden_sizes=(32,), rep_dim=8, n_epochs=30, batch_size=64, fnr=0.005,
                    device="cpu", random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "before" warns: 100 < 199
            fits = {"before": FLIPADDetector(**base, validation_size=None).fit(X, y),
                    "auto": FLIPADDetector(**base).fit(X, y)}
        all_own = FLIPADDetector(**base, validation_size=0).fit(X, y)
        for n in (199, 1000, 2000):
            fits[f"fresh{n}"] = calibrate(copy.deepcopy(all_own), lambda m: sample_G(m, rng),
                                          n_samples=n)
        for key, det in fits.items():
            s_g, s_o = det.score_samples(X_g), det.score_samples(X_o)
            rejected = np.mean(s_g < det.offset_)
            acc = 0.5 * ((1 - rejected) + np.mean(s_o < det.offset_))
            auc = roc_auc_score(np.r_[np.ones(n_test), np.zeros(n_test)], np.r_[s_g, s_o])
            rows[key].append((det.validation_scores_.size, det.threshold_, rejected, acc, auc))
    return rows


def markdown(rows):
    lines = ["| setting | n_val | threshold | G rejected (promised <= 0.005) | accuracy | "
             "AUC |", "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        m, s = np.mean(r, axis=0), np.std(r, axis=0)
        lines.append(f"| {key} | {m[0]:.0f} | {m[1]:.3f} ± {s[1]:.3f} | {m[2]:.4f} ± "
                     f"{s[2]:.4f} | {m[3]:.3f} ± {s[3]:.3f} | {m[4]:.3f} ± {s[4]:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_result_args(p)
    args = p.parse_args(argv)
    text = markdown(run())
    print(text)
    print(f"written: {write_result('operating_point.md', text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
