"""The attribution benchmark's protocol: data sources, training and test sets,
evaluation at each fnr, summaries and writers.

It knows nothing about the methods (``attribution_methods.REGISTRY``) or the
parts (``attribution.py``): every part builds an :class:`ImageSetup` for its
own generator ``G``, fits the methods it needs, scores the test sources with
:func:`score_sources` and writes its rows with :func:`write_csv` /
:func:`write_markdown`.

Seeds of the draws (fixed, shared by every part): training samples of any
generator ``random_state=1001``, test samples ``1002``, real images a fixed
permutation (seed 1) of the vendored MNIST subset, the first ``n_real`` for
training and the next ``n_test`` for testing.
"""

import csv
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from flipad_sklearn import mean_activation
from flipad_sklearn.detection.conformal import conformal_threshold
from flipad_sklearn.datasets import load_mnist_subset

from .train_zoo import ensure_image_zoo
from ._results import write_result

FNRS = (0.005, 0.05)
METRICS = tuple(f"acc@{f}" for f in FNRS) + ("auc",)
TRAIN_DRAW, TEST_DRAW = 1001, 1002


# -------------------------------------------------------------------- data sources
def load_zoo(zcfg, cache_dir, log=print):
    """The image zoo of a config's ``zoo`` entry (trained once, then cached)."""
    return ensure_image_zoo(cache_dir, zcfg["kinds"], zcfg["seeds"], n_train=zcfg["n_train"],
                            image_size=zcfg["image_size"], epochs=zcfg["epochs"], log=log)


def real_pool(image_size, seed=1):
    """The MNIST subset in a fixed random order (the zoo is trained on all of it)."""
    X, _ = load_mnist_subset(return_X_y=True, pad_to=None if image_size == 28 else image_size)
    return X[np.random.default_rng(seed).permutation(len(X))]


def anchor_of(G, n_anchor):
    """FLIPAD's anchor: G's mean penultimate activation over ``n_anchor`` samples."""
    return mean_activation(G, n_anchor, G.latent_shape, layer=G.final_layer,
                           random_state=7, device="cpu")


@dataclass
class ImageSetup:
    """One own generator ``G`` with its training material and test sources.

    ``test`` maps a source name to its test images (``"G"`` first, then
    ``"real"``, the unseen seed of G's kind, the other kinds of that seed);
    ``groups`` maps every source but ``"G"`` to its group.
    """

    kind: str
    seed: int
    G: object
    unseen: int
    shadow_seeds: list
    X_g: np.ndarray
    X_real: np.ndarray
    X_shadows: list
    test: dict
    groups: dict
    anchor: np.ndarray = field(default=None, repr=False)

    @property
    def name(self):
        return f"{self.kind}-s{self.seed}"

    @property
    def X_sh(self):
        return np.concatenate(self.X_shadows) if self.X_shadows else self.X_g[:0]

    def training_set(self, n_g=None, n_shadows=None):
        """``(X, y)``: G's first ``n_g`` samples (y = 1), the real images and the
        first ``n_shadows`` shadows' samples (y = -1).  None: all of them."""
        X_g = self.X_g if n_g is None else self.X_g[:n_g]
        sh = self.X_shadows if n_shadows is None else self.X_shadows[:n_shadows]
        X = np.concatenate([X_g, self.X_real] + list(sh))
        return X, np.r_[np.ones(len(X_g)), -np.ones(len(X) - len(X_g))]

    def protocols(self):
        """The paper's protocol (real negatives) and, with shadows, the shadows one."""
        out = {"paper": self.training_set(n_shadows=0)}
        if self.X_shadows:
            out["shadows"] = self.training_set()
        return out


def image_setup(zoo, kinds, seeds, kind, seed, real, *, n_g, n_real, n_shadow, n_test,
                n_anchor=None):
    """G = ``zoo[kind, seed]``: the next seed in ``seeds`` stays unseen, the
    others are G's shadows (``n_shadow`` samples in all); test sources: real
    images, the unseen seed of G's kind and every other kind of that seed
    (generators of one seed share G's initial weights)."""
    i = seeds.index(seed)
    unseen = seeds[(i + 1) % len(seeds)]
    shadow_seeds = [s for s in seeds if s not in (seed, unseen)]
    G = zoo[kind, seed]
    per_shadow = max(1, n_shadow // max(1, len(shadow_seeds)))
    test = {"G": G.sample(n_test, random_state=TEST_DRAW),
            "real": real[n_real:n_real + n_test],
            f"{kind}-s{unseen}": zoo[kind, unseen].sample(n_test, random_state=TEST_DRAW)}
    groups = {"real": "real", f"{kind}-s{unseen}": "same-arch-unseen"}
    for k2 in kinds:
        if k2 != kind:
            test[f"{k2}-s{unseen}"] = zoo[k2, unseen].sample(n_test, random_state=TEST_DRAW)
            groups[f"{k2}-s{unseen}"] = "other-arch"
    return ImageSetup(
        kind=kind, seed=seed, G=G, unseen=unseen, shadow_seeds=shadow_seeds,
        X_g=G.sample(n_g, random_state=TRAIN_DRAW), X_real=real[:n_real],
        X_shadows=[zoo[kind, s].sample(per_shadow, random_state=TRAIN_DRAW)
                   for s in shadow_seeds],
        test=test, groups=groups,
        anchor=None if n_anchor is None else anchor_of(G, n_anchor))


def invert_all(inverter, arrays):
    """FLIPAD's inversion once for several image sets: fit on and transform
    their concatenation, return one activation array per input.

    ``inverter``: :func:`attribution_methods.inverter`, the inversion with
    the pipeline's input contract (the images are rounded to 8 bits as the
    whole pipeline rounds them)."""
    X = np.concatenate(arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Z = inverter.fit(X).transform(X)
    out, start = [], 0
    for A in arrays:
        out.append(Z[start:start + len(A)])
        start += len(A)
    return out


# ----------------------------------------------------------------------- evaluation
def detector_of(estimator):
    """The step that holds the held-out scores (a pipeline's last step)."""
    return estimator[-1] if hasattr(estimator, "steps") else estimator


def evaluate(det, s_g, s_o):
    """Accuracy at each fnr (balanced test set) and ROC AUC from scores."""
    d_val = -det.validation_scores_  # every detector: held-out scores, higher = more like G
    row = {}
    for fnr in FNRS:
        t = conformal_threshold(d_val, fnr)
        acc_g = np.mean(-s_g <= t)
        acc_o = np.mean(-s_o > t)
        row[f"acc@{fnr}"] = 0.5 * (acc_g + acc_o)
    row["auc"] = roc_auc_score(np.r_[np.ones(len(s_g)), np.zeros(len(s_o))], np.r_[s_g, s_o])
    return row


def attribution_rate(det, s):
    """The share of samples with scores ``s`` attributed to G, at each fnr."""
    d_val = -det.validation_scores_
    return {f"attr@{fnr}": float(np.mean(-s <= conformal_threshold(d_val, fnr)))
            for fnr in FNRS}


def score_sources(estimator, tests, names=None):
    """Scores of ``tests["G"]`` and :func:`evaluate` of G against each other source.

    Returns ``(s_g, {name: (s_o, row)})``.
    """
    det = detector_of(estimator)
    s_g = estimator.score_samples(tests["G"])
    out = {}
    for name in (names if names is not None else [n for n in tests if n != "G"]):
        s_o = estimator.score_samples(tests[name])
        out[name] = (s_o, evaluate(det, s_g, s_o))
    return s_g, out


def mean_rows(rows, keys=METRICS):
    """The mean of each metric over a list of result rows."""
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def summarise(pairs, methods, groups, protocols=("paper", "shadows")):
    """Mean and std over the seeds of each (protocol, method, group).

    A seed is one replicate: G's seed, which also seeds the detectors.  Each
    seed's value is the mean over its (G, source) pairs of the group (the
    kinds of G, the other architectures); the std is over the seeds' values.
    """
    out = []
    for proto in protocols:
        for method in methods:
            for group in groups:
                rows = [r for r in pairs if r["protocol"] == proto and r["method"] == method
                        and r["group"] == group]
                if not rows:
                    continue
                seeds = sorted({r["seed"] for r in rows})
                s = {"protocol": proto, "method": method, "group": group,
                     "n_seeds": len(seeds), "n_pairs": len(rows)}
                for m in METRICS:
                    v = np.array([np.mean([r[m] for r in rows if r["seed"] == sd])
                                  for sd in seeds])
                    s[m + "_mean"], s[m + "_std"] = float(v.mean()), float(v.std())
                out.append(s)
    return out


# -------------------------------------------------------------------------- writers
def write_csv(path, rows, keys=None, float_format=None):
    """Rows (dicts) to a CSV file; floats as ``float_format`` if given."""
    keys = list(rows[0]) if keys is None else list(keys)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (float_format.format(r[k])
                            if float_format and isinstance(r[k], float) else r[k])
                        for k in keys})


def markdown_table(rows, keys, fmt="{:.3f}"):
    """A Markdown table of ``rows`` over ``keys`` (floats formatted with ``fmt``)."""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[k]) if isinstance(r[k], float)
                                       else str(r[k]) for k in keys) + " |")
    return lines


def write_markdown(path, title, body_lines, log=print):
    """``# title``, a blank line and ``body_lines`` to ``path`` (through
    :func:`~benchmarks._results.write_result`); returns the text."""
    md = "\n".join([f"# {title}", ""] + list(body_lines)) + "\n"
    write_result(os.path.basename(path), md, results_dir=os.path.dirname(path) or ".")
    log(md)
    return md


def write_pairs_tables(pairs, out_dir, config, seconds, *, methods, groups, unsupervised,
                       prefix="", title="Attribution benchmark"):
    """``pairs.csv``, ``summary.csv`` and ``results.md`` (with ``prefix``)."""
    os.makedirs(out_dir, exist_ok=True)
    keys = ["protocol", "method", "G", "seed", "source", "group", "n_test"] + list(METRICS)
    write_csv(os.path.join(out_dir, prefix + "pairs.csv"), pairs, keys, float_format="{:.4f}")
    summary = summarise(pairs, methods, groups)
    write_csv(os.path.join(out_dir, prefix + "summary.csv"), summary)
    lines = [f"# {title} ({config}, {seconds / 60:.1f} min)", "",
             f"Mean ± std over {summary[0]['n_seeds']} seed(s) (each seed: the mean over "
             "its (G, test source) pairs of the group); balanced test sets; "
             "thresholds from held-out samples of G. Unsupervised methods "
             "(*) ignore the labelled negatives, so both protocols coincide.", "",
             "| protocol | method | " + " | ".join(
                 f"{g} {m}" for g in groups for m in METRICS) + " |",
             "|---|---|" + "---|" * (len(groups) * len(METRICS))]
    for proto in ("paper", "shadows"):
        for method in methods:
            cells = []
            for g in groups:
                s = [r for r in summary if r["protocol"] == proto and r["method"] == method
                     and r["group"] == g]
                for m in METRICS:
                    cells.append(f"{s[0][m + '_mean']:.3f} ± {s[0][m + '_std']:.3f}"
                                 if s else "–")
            if any(c != "–" for c in cells):
                star = "*" if method in unsupervised else ""
                lines.append(f"| {proto} | {method}{star} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    write_result(prefix + "results.md", md, results_dir=out_dir)
    return md


def elapsed_min(t_start):
    return (time.perf_counter() - t_start) / 60


def plot_curves(path, curves, *, xlabel, ylabel, title, xlog=False, panels=None):
    """Line plots: ``curves[panel][method] = (x, y, yerr or None)``; one panel
    per key.  Skipped (with a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures.")
        return
    panels = list(curves) if panels is None else panels
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for method, (x, y, err) in curves[panel].items():
            ax.errorbar(x, y, yerr=err, label=method, lw=1, marker="o", ms=3, capsize=2)
        if xlog:
            ax.set_xscale("symlog", linthresh=1)
        ax.set_title(panel, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
