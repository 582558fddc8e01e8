"""A runnable demo of the main job: ``python -m flipad_sklearn.demo``.

Was this digit made by *my* GAN?  The demo loads four small GANs trained on
the bundled MNIST subset, shipped with the package
(:mod:`flipad_sklearn.generators._demo_checkpoints`): ``G``, the owner's
DCGAN; a shadow of ``G`` (same recipe, another seed: the owner can always
train one); an unseen DCGAN of the same recipe and an unseen LSGAN of another
width, neither ever shown to the detector.

It fits the FLIPAD pipeline (:func:`flipad_sklearn.pipeline.make_flipad`, which
trains and scores on 8-bit images, as they are published) on
samples of ``G`` (label 1) against real digits and the shadow's samples
(label -1), with the threshold set for a false-negative rate of 0.005, then
attributes fresh samples of ``G``, held-out real digits and the samples of
the two unseen generators.  It prints the accuracy at that threshold per
source (G: share accepted; the others: share rejected) and the ROC AUC of G
against each source, and writes a figure (score histograms and ROC curves;
needs matplotlib) to the file it names.

Options: ``--figure PATH`` (default ``flipad_demo.png``; ``--figure ''``
for none), ``--n-own``, ``--n-test`` and ``--epochs`` for a smaller run.
About 30 s on a CPU core with the defaults (one torch thread, ``--threads``).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

SOURCES = ("G", "real", "unseen", "other")
SOURCE_NAMES = {
    "G": "G (own DCGAN)",
    "real": "real MNIST",
    "unseen": "unseen DCGAN (other seed)",
    "other": "unseen LSGAN (other architecture)",
}
SHORT_NAMES = {"G": "G", "real": "real MNIST", "unseen": "unseen DCGAN",
               "other": "unseen LSGAN"}
FNR = 0.005


def run(n_own=400, n_neg=150, n_test=200, epochs=40, max_iter=None, tol=None,
        datafit="preactivation", figure="flipad_demo.png", random_state=0, verbose=True):
    """Fit FLIPAD for the demo's generator ``G`` and attribute the test sources.

    Parameters
    ----------
    n_own : int, default=400
        Training samples of G; half of them are held out to set the
        threshold (at least 199 are needed to guarantee fnr=0.005).
    n_neg : int, default=150
        Real digits and shadow samples each, labelled -1.
    n_test : int, default=200
        Test samples per source.
    epochs : int, default=40
        Deep SAD epochs.
    max_iter, tol : int, float or None, default=None
        Inversion budget (see :class:`~flipad_sklearn.FinalLayerInverter`);
        None: the inverter's defaults (what a user gets).
    datafit : {"preactivation", "output"}, default="preactivation"
        The inversion's data term (:func:`~flipad_sklearn.make_flipad`).  The
        demo's generators draw digits whose background is saturated at -1,
        where ``"output"`` gives little weight: it separates them less well.
    figure : str or None, default="flipad_demo.png"
        Where to write the figure; None or "" for none.
    random_state : int, default=0
    verbose : bool, default=True
        Print the results.

    Returns
    -------
    results : dict
        ``"accuracy"`` and ``"auc"`` (dicts per source), ``"threshold"``,
        ``"accepted_8bit"`` (share of G's test images accepted after an 8-bit
        PNG round trip: the same as the float ones, since the pipeline trains
        and scores on 8-bit images),
        ``"figure"`` (the path written, or None) and ``"seconds"``.
    """
    import torch

    from . import mean_activation
    from .datasets import load_mnist_subset
    from .generators._demo_checkpoints import load_demo_generator
    from .pipeline import make_flipad

    say = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    gens = {name: load_demo_generator(name) for name in ("G", "shadow", "unseen", "other")}
    G = gens["G"]
    X_real, _ = load_mnist_subset(return_X_y=True)
    X_real = X_real[np.random.default_rng(random_state).permutation(len(X_real))]
    rs = random_state
    # fresh latent seeds for every set (the generators were trained on other draws)
    X_own = G.sample(n_own + n_test, random_state=rs + 100)
    X_train = np.concatenate([X_own[:n_own], X_real[:n_neg],
                              gens["shadow"].sample(n_neg, random_state=rs + 101)])
    y_train = np.r_[np.ones(n_own), -np.ones(2 * n_neg)].astype(int)
    tests = {
        "G": X_own[n_own:],
        "real": X_real[n_neg:n_neg + n_test],
        "unseen": gens["unseen"].sample(n_test, random_state=rs + 102),
        "other": gens["other"].sample(n_test, random_state=rs + 103),
    }
    X_test = np.concatenate([tests[s] for s in SOURCES])
    source = np.repeat(np.array(SOURCES), [len(tests[s]) for s in SOURCES])
    say(f"generators: G = {G.info.get('kind')} ngf={G.ngf}, final layer {G.final_layer}")
    say(f"training: {n_own} images of G (label 1), {n_neg} real digits and {n_neg} of "
        f"a shadow of G (label -1); testing {n_test} per source")

    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer,
                             random_state=rs)
    # the penultimate layer is a ReLU: positive=True
    budget = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, datafit=datafit,
                       fnr=FNR, random_state=rs, device="cpu", **budget,
                       detector_params=dict(n_epochs=epochs, validation_fraction=0.5))
    with warnings.catch_warnings():
        # a small budget (tests) is plenty for detection; certificates are in
        # duality_gap_, their warning is not the point here
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X_train, y_train)
        Z_test = pipe[:-1].transform(X_test)
    inv = pipe["inv"]
    gap = inv.duality_gap_ / np.maximum(inv.objective_, 1e-300)
    det = pipe[-1]
    scores = det.decision_function(Z_test)
    accepted = scores >= 0
    say(f"inversion: activations of shape {inv.activation_shape_} per {inv.output_shape_} "
        f"image, median {np.median(inv.n_iter_):.0f} iterations, relative duality gap "
        f"median {np.median(gap):.1e}")
    say(f"threshold at fnr={FNR} from {det.validation_scores_.size} held-out images "
        f"of G")
    accuracy, aucs = {}, {}
    say(f"\n{'source':<36} {'accuracy at fnr=' + str(FNR):>22} {'ROC AUC (G vs it)':>18}")
    for s in SOURCES:
        mask = source == s
        accuracy[s] = float(np.mean(accepted[mask] if s == "G" else ~accepted[mask]))
        what = "accepted as G" if s == "G" else "rejected"
        if s != "G":
            both = mask | (source == "G")
            aucs[s] = float(roc_auc_score(source[both] == "G", scores[both]))
        auc = f"{aucs[s]:.3f}" if s in aucs else ""
        say(f"{SOURCE_NAMES[s]:<36} {accuracy[s]:>8.3f} ({what:>13}) {auc:>18}")
    aucs["all"] = float(roc_auc_score(source == "G", scores))
    say(f"{'all others':<36} {'':>22} {aucs['all']:>18.3f}")
    # as published: G's test images saved as 8-bit PNG files and read back
    png = np.clip(np.round((tests["G"] + 1) * 127.5), 0, 255) / 127.5 - 1
    accepted_8bit = float(np.mean(pipe.predict(png.astype(np.float32)) == 1))
    say(f"G's test images as 8-bit PNG files: {accepted_8bit:.3f} accepted (the pipeline "
        f"trains and scores on 8-bit images: quantize={pipe.quantize!r})")

    written = None
    if figure:
        written = _figure(source, scores, figure, say)
    elapsed = time.perf_counter() - t0
    say(f"total {elapsed:.1f} s ({torch.get_num_threads()} torch threads)")
    return {"accuracy": accuracy, "auc": aucs, "threshold": float(det.threshold_),
            "accepted_8bit": accepted_8bit, "figure": written, "seconds": elapsed}


def _figure(source, scores, path, say):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is not installed, so no figure was written "
            "(pip install matplotlib, or the package's [plot] extra).")
        return None
    from .plotting import AttributionRocDisplay, ScoreHistogramDisplay

    # the ROC panel is square: a narrower second column leaves no blank strip
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained",
                             gridspec_kw={"width_ratios": [1.55, 1]})
    ScoreHistogramDisplay.from_predictions(source, scores, threshold=0.0,
                                           source_names=SHORT_NAMES, ax=axes[0],
                                           xscale="symlog")
    AttributionRocDisplay.from_predictions(source, scores, pos_label="G", threshold=0.0,
                                           source_names=SHORT_NAMES, ax=axes[1])
    axes[0].set_title(f"decision_function per source (threshold at fnr={FNR})")
    axes[1].set_title("ROC: G against each source")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    say(f"figure (score histograms, ROC curves): {os.path.abspath(path)}")
    return os.fspath(path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m flipad_sklearn.demo",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--figure", default="flipad_demo.png",
                   help="where to write the figure ('' for none; default flipad_demo.png)")
    p.add_argument("--n-own", type=int, default=400, help="training images of G (400)")
    p.add_argument("--n-test", type=int, default=200, help="test images per source (200)")
    p.add_argument("--epochs", type=int, default=40, help="Deep SAD epochs (40)")
    p.add_argument("--datafit", choices=("preactivation", "output"), default="preactivation",
                   help="the inversion's data term (preactivation: FLIPAD's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the networks and batches are small, and "
                        "more threads mostly wait for each other)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    run(n_own=args.n_own, n_test=args.n_test, epochs=args.epochs, datafit=args.datafit,
        figure=args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
