"""What separates the upsample + conv family from the face DCGAN G? One-class probes (issue 32).

``bench_open_world_face`` leaves one gap: every detector it builds (FLIPAD,
RAWPAD, the pixel guard, their union) accepts about 40 % of the images of an
upsample + ``Conv2d`` generator trained on G's samples, although their AUCs
against it are 0.68-0.84.  This benchmark asks, on the same cached sources
and FLIPAD features, whether a score that models only G's own samples would
close it: a score whose AUC is high but whose G lower tail is heavy cannot,
since at fnr 0.005 the threshold sits at G's 0.5 % quantile.

Every probe is fitted on 500 of G's training samples (their FLIPAD features
or pixels) and its threshold is the 0.5 % quantile of 400 other samples of G
(the remaining 300 training samples and the 100 fresh ones; an oracle
threshold, kinder than a conformal one).  Cells: share of the source
rejected at that threshold / ROC AUC of G against the source; for G's own
transforms the share rejected is a false negative.

Probes on FLIPAD's recovered activations ``z`` (64 channels x 32 x 32):

* Gaussian (Ledoit-Wolf) and 5-nearest-neighbour distance on the per-channel
  mean of ``z`` and of ``|z - anchor|`` (128 numbers, standardised on G);
* the negative mass ``sum(max(-z, 0))``, one-sided: G's penultimate
  activation is a ReLU output, so a code that needs negative entries is
  suspect;
* the lasso's own cost, ``||z - anchor||_1``, one-sided.

Labelled negatives made from G itself (no other generator needed): the
recipe's detector head and RAWPAD trained against the competitor plus 200 of
G's samples blurred (Gaussian, sigma 1), against the competitor alone as the
baseline, each at its own conformal threshold.

Latent inversion (:class:`~flipad_sklearn.LatentInversionDistance`, 150 Adam
steps from one start): the distance of an image to G's range, on
``--n-latent`` images per source (slow on a CPU: about 2 s per image).

Run: ``python -m benchmarks.bench_open_world_probes`` after
``bench_open_world_face`` has filled its cache (a few minutes).  Writes
``benchmarks/results/bench_open_world_probes.md``.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from flipad_sklearn import GaussianBlur, LatentInversionDistance, make_rawpad, mean_activation

from ._results import add_result_args, results_dir, tee_result
from .bench_face_dcgan import (
    FACE_CACHE, FACE_OTHERS, LATENT, fingerprint_note, load_face_dcgan,
)
from .bench_open_world_face import NAMES, _inverter, build, head

N_FIT, N_BLUR = 500, 200
#: the sources of the table: G's own transforms first (their rejections are false negatives)
SOURCES = {"jpeg90": "G's samples after JPEG q90", **NAMES}


def _threshold(g_scores):
    """G's 0.5 % quantile (higher score = more like G)."""
    return np.quantile(g_scores, 0.005)


def _cells(score, g, tests, threshold=None):
    """'rejected / AUC' per source for a score function (higher = more like G): rejected
    below ``threshold``, by default G's 0.5 % quantile of ``score(g)`` (a detector's own
    decision: 0)."""
    sg = score(g)
    t = _threshold(sg) if threshold is None else threshold
    out = [f"{np.mean(sg < t):.3f}"]
    for key in SOURCES:
        s = score(tests[key])
        auc = roc_auc_score(np.r_[np.ones(sg.size), np.zeros(s.size)], np.r_[sg, s])
        out.append(f"{np.mean(s < t):.2f} / {auc:.3f}")
    return out


def _channel_stats(Z, anchor):
    z = Z.reshape(len(Z), *anchor.shape).astype(np.float64)
    return np.c_[z.mean((2, 3)), np.abs(z - anchor).mean((2, 3))]


def run(args):
    t0 = time.time()
    images, F = build(args.cache_dir)
    G = load_face_dcgan()
    anchor = np.asarray(mean_activation(G, 1000, LATENT, random_state=3, device="cpu"),
                        dtype=np.float64).reshape(64, 32, 32)
    # G's samples not used to fit a probe: they set its threshold
    g_feat = np.concatenate([F["g"][N_FIT:], F["fresh"]])
    g_img = np.concatenate([images["g"][N_FIT:], images["fresh"]])
    print("# What separates the upsample + conv family from G? One-class probes\n")
    print(f"G: the published face DCGAN; sources as in bench_open_world_face (others trained "
          f"on G's samples); every probe fitted on {N_FIT} of G's samples, threshold at the "
          f"0.5 % quantile of {len(g_feat)} other samples of G (an oracle threshold).  Cells: "
          "share rejected / ROC AUC of G against the source.\n")
    print("| probe | G rejected | " + " | ".join(SOURCES.values()) + " |")
    print("|---|---|" + "---|" * len(SOURCES))

    def row(name, cells):
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    S = {k: _channel_stats(v, anchor) for k, v in F.items()}
    mu, sd = S["g"][:N_FIT].mean(0), S["g"][:N_FIT].std(0) + 1e-9
    g_stats = _channel_stats(g_feat, anchor)
    stat_tests = {k: S[k] for k in SOURCES}
    gauss = LedoitWolf().fit((S["g"][:N_FIT] - mu) / sd)
    row("Gaussian on per-channel mean z and mean \\|z - anchor\\|",
        _cells(lambda A: -gauss.mahalanobis((A - mu) / sd), g_stats, stat_tests))
    knn = NearestNeighbors(n_neighbors=5).fit((S["g"][:N_FIT] - mu) / sd)
    row("5-NN distance on the same",
        _cells(lambda A: -knn.kneighbors((A - mu) / sd)[0].mean(1), g_stats, stat_tests))

    def negative_mass(Z):
        return -np.clip(-Z.astype(np.float64), 0, None).sum(1)

    def lasso_cost(Z):
        return -np.abs(Z.astype(np.float64) - anchor.reshape(1, -1)).sum(1)

    feat_tests = {k: F[k] for k in SOURCES}
    row("negative mass of z (one-sided)", _cells(negative_mass, g_feat, feat_tests))
    row("\\|z - anchor\\|_1, the lasso's penalty (one-sided)",
        _cells(lasso_cost, g_feat, feat_tests))

    # labelled negatives made from G: its own samples blurred
    blurred = GaussianBlur(sigma=1.0).fit_transform(
        images["g"][N_FIT - N_BLUR:N_FIT].reshape(N_BLUR, -1)).reshape(-1, 3, 64, 64)
    blurred_feat = _inverter(G).transform(blurred)
    n_own = N_FIT - N_BLUR
    y_base = np.r_[np.ones(n_own), -np.ones(len(F["comp"]))]
    y_blur = np.r_[y_base, -np.ones(N_BLUR)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, extra, y in (("competitor", [], y_base),
                                ("competitor + G blurred", [blurred_feat], y_blur)):
            pipe = head().fit(np.concatenate([F["g"][:n_own], F["comp"], *extra]), y)
            row(f"FLIPAD head against {label} (conformal threshold)",
                _cells(pipe.decision_function, g_feat, feat_tests, threshold=0.0))
        for label, extra, y in (("competitor", [], y_base),
                                ("competitor + G blurred", [blurred], y_blur)):
            raw = make_rawpad(fnr=0.005, random_state=0, device="cpu").fit(
                np.concatenate([images["g"][:n_own], images["comp"], *extra]), y)
            row(f"RAWPAD against {label} (conformal threshold)",
                _cells(raw.decision_function, g_img,
                       {k: images[k].reshape(-1, 3, 64, 64) for k in SOURCES}, threshold=0.0))

    if args.n_latent:
        n = args.n_latent
        lid = LatentInversionDistance(G, latent_shape=LATENT, n_steps=150, batch_size=4 * n,
                                      validation_size=0, random_state=0)
        lid.fit(images["g"][:2].reshape(2, -1))
        t = time.time()
        keys = ["fresh", *SOURCES]
        X = np.concatenate([images[k][:n].reshape(n, -1) for k in keys])
        scores = lid.score_samples(X)
        per = dict(zip(keys, scores.reshape(len(keys), n)))
        sg = per.pop("fresh")
        cells = [f"{np.mean(sg < sg.min()):.3f}"]
        for key in SOURCES:
            s = per[key]
            auc = roc_auc_score(np.r_[np.ones(n), np.zeros(n)], np.r_[sg, s])
            cells.append(f"{np.mean(s < sg.min()):.2f} / {auc:.3f}")
        row(f"latent inversion, {n} images per source (threshold: G's lowest of {n})", cells)
        print(f"\nLatent inversion: {time.time() - t:.0f} s for {len(X)} images; MSE of G's "
              f"own fresh images {np.quantile(-sg, 0.1):.4f}-{np.quantile(-sg, 0.9):.4f} "
              f"(10-90 %), of the upsample + conv family "
              f"{np.quantile(-per['upconv'], 0.1):.4f}-{np.quantile(-per['upconv'], 0.9):.4f}.")
    print(fingerprint_note(args.cache_dir, FACE_OTHERS))
    print(f"\n{time.time() - t0:.0f} s in all ({torch.get_num_threads()} torch threads).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-latent", type=int, default=30,
                   help="images per source for latent inversion (0: skip it)")
    p.add_argument("--cache-dir", default=FACE_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tee_result("bench_open_world_probes.md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
