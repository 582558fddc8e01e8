"""A generator family the recipe never saw: both protocols against it (issue 32).

G is a generator of the image zoo (:mod:`benchmarks.train_zoo`: DCGAN or
LSGAN on the MNIST subset at 32x32, seed 0).  The recipe is trained on
``--n-own`` samples of G against real digits and two shadow copies of G
(seeds 2 and 3: the recommended open-world recipe, the "shadows" protocol),
or against real digits only (the paper's protocol), and tested on fresh
samples of G, other real digits (the subset's 5000 digits all trained the
zoo: there are no unseen ones), G's architecture with an unseen seed
(1), the zoo's other family (seed 0) and a family *left out of the zoo
and of every choice of the defaults*: an upsample + ``Conv2d`` generator
(nearest-neighbour upsampling and 3x3 convolutions, a 1x1 ``Conv2d`` as
final layer), trained here by the package's :func:`train_shadows` recipe on
the same digits, two seeds.  Side by side, in one run:

* FLIPAD at its defaults (:func:`~flipad_sklearn.make_flipad`);
* FLIPAD with five Deep SAD networks averaged
  (``detector_params=dict(n_networks=5)``, :class:`~flipad_sklearn.FLIPADDetector`);
* RAWPAD (:func:`~flipad_sklearn.make_rawpad`);
* DCTPAD (:func:`~flipad_sklearn.make_dctpad`);
* the open-world union as the user guide's recipe makes it,
  :func:`~flipad_sklearn.make_open_world_union` (FLIPAD, DCTPAD and a pixel
  guard at shares 0.5 / 0.3 / 0.2, set before any union was measured;
  ``validation_size=0``), each detector's threshold set on fresh samples
  of G with ``calibrate(..., max_fnr=0.01)``.  (Until the recipe dropped
  DCTPAD's immunisation, this row's DCTPAD was immunised and calibrated on
  the fewest samples its share needs; before, the union was FLIPAD +
  RAWPAD + pixel guard at the same shares.)

``--detectors dctpad8 union_blocks`` add DCTPAD reading JPEG's 8 x 8
blocks' spectra beside the whole image's (``block_size=8``) alone and in
the union (the immunised union's default; this benchmark's images are not
files, and its union is not immunised).

Cells: accuracy at fnr 0.005 (the mean of G accepted and the source
rejected) / ROC AUC.  ``--seeds 0 1 2 3 4`` fits every detector once per
``random_state`` on the same data and reports each accuracy as mean
[min-max] over them: how much of a cell is the training's draw (Deep SAD's
initialisation and batches) rather than the method.  Run: ``python -m
benchmarks.bench_family_left_out [--threads 2] [--seeds 0 1 2 3 4]``
(trains what the zoo cache lacks; about 20 minutes on one thread with the
zoo's DCGAN and LSGAN cached).  Writes
``benchmarks/results/bench_family_left_out.md`` (several seeds:
``bench_family_left_out_<n>seeds_<threads>threads.md``).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from flipad_sklearn import (
    ConformalUnion, make_dctpad, make_open_world_union, make_rawpad, mean_activation,
)
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import train_shadows
from flipad_sklearn.pipeline import OPEN_WORLD_SHARES, make_flipad

from ._results import add_result_args, results_dir, tee_result
from .train_zoo import DEFAULT_CACHE, ensure_image_zoo, mnist_train_images

FNR = 0.005
#: labelled others: real digits and shadow copies of G (the recommended recipe), or
#: real digits only (the paper's)
PROTOCOLS = ("shadows", "paper")
#: the zoo's generators that play G (each one's "other family" is the other)
KINDS = ("dcgan", "lsgan")
LATENT = (64,)


class UpsampleConv32(nn.Module):
    """The left-out family: linear -> 128 x 4x4, (upsample x2, 3x3 conv, BN, ReLU) x 3,
    then a 1x1 ``Conv2d`` to one channel and tanh (32x32 digits)."""

    def __init__(self, latent_dim=64, width=128):
        super().__init__()
        self.fc = nn.Linear(latent_dim, width * 16)
        blocks, c = [], width
        for _ in range(3):
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(c, c // 2, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, 1, 1)
        self.width = width

    def forward(self, z):
        h = torch.relu(self.fc(z.reshape(len(z), -1))).reshape(len(z), self.width, 4, 4)
        return torch.tanh(self.out(self.body(h)))


def _sample_module(G, n, seed):
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        z = torch.from_numpy(rng.standard_normal((n,) + LATENT, dtype=np.float32))
        return G(z).numpy()


def _upconv_family(X, cache, log):
    """Two generators of the left-out family (cached)."""
    out = []
    for seed in (0, 1):
        path = os.path.join(cache, f"upconv32-seed{seed}-e5-n{len(X)}.pt")
        G = UpsampleConv32()
        if os.path.exists(path):
            G.load_state_dict(torch.load(path, weights_only=True))
        else:
            t = time.time()
            (G,) = train_shadows(UpsampleConv32(), X, seeds=[100 + seed], latent_shape=LATENT,
                                 epochs=5)
            torch.save(G.state_dict(), path + ".tmp")
            os.replace(path + ".tmp", path)
            log(f"trained upconv32 seed {seed} in {time.time() - t:.0f} s -> {path}")
        out.append(G.eval())
    return out


#: --detectors: short name -> the row label of each detector compared
DETECTORS = {
    "flipad": "FLIPAD (`make_flipad`)",
    "flipad5": "FLIPAD, 5 networks (`detector_params=dict(n_networks=5)`)",
    "rawpad": "RAWPAD (`make_rawpad`)",
    "dctpad": "DCTPAD (`make_dctpad`)",
    "dctpad8": "DCTPAD with JPEG's blocks (`block_size=8`)",
    "union": "union (`make_open_world_union`, the guide's recipe)",
    "union_blocks": "union, DCTPAD with JPEG's blocks (`dctpad_params=dict(block_size=8)`)",
}


def _detectors(G, anchor, seed, chosen):
    """The ``chosen`` detectors (keys of :data:`DETECTORS`), by row label, every one
    seeded with ``seed``."""
    make = {
        "flipad": lambda: make_flipad(G.final_layer, "tanh", anchor, positive=True,
                                      fnr=FNR, random_state=seed, device="cpu"),
        "flipad5": lambda: make_flipad(
            G.final_layer, "tanh", anchor, positive=True, fnr=FNR, random_state=seed,
            device="cpu", detector_params=dict(n_networks=5)),
        "rawpad": lambda: make_rawpad(fnr=FNR, random_state=seed, device="cpu"),
        "dctpad": lambda: make_dctpad(fnr=FNR, random_state=seed, device="cpu"),
        "dctpad8": lambda: make_dctpad(fnr=FNR, random_state=seed, device="cpu",
                                       block_size=8),
        "union": lambda: make_open_world_union(
            G.final_layer, "tanh", anchor, image_shape=(1, 32, 32), fnr=FNR,
            validation_size=0, random_state=seed, device="cpu",
            flipad_params=dict(positive=True)),
        "union_blocks": lambda: make_open_world_union(
            G.final_layer, "tanh", anchor, image_shape=(1, 32, 32), fnr=FNR,
            validation_size=0, random_state=seed, device="cpu",
            flipad_params=dict(positive=True), dctpad_params=dict(block_size=8)),
    }
    return {DETECTORS[k]: make[k]() for k in DETECTORS if k in chosen}


def _spread(values):
    """One value as is; several (one per seed) as mean [min-max]."""
    values = np.atleast_1d(values)
    if values.size == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} [{values.min():.3f}-{values.max():.3f}]"


def _fit_and_score(G, anchor, X_tr, y_tr, tests, names, seeds, chosen):
    """Per detector: its cells, G's rejected share and the left-out family's accuracy,
    each over the seeds (the detectors' ``random_state``), and the mean seconds."""
    per = {}
    for seed in seeds:
        for label, det in _detectors(G, anchor, seed, chosen).items():
            t = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det.fit(X_tr, y_tr)
                if isinstance(det, ConformalUnion):
                    det.calibrate(lambda k: G.sample(k, random_state=20 + k), max_fnr=0.01)
                scores = {k: det.decision_function(X) for k, X in tests.items()}
            per.setdefault(label, []).append((scores, time.time() - t))
    for label, runs in per.items():
        cells = []
        for k in names:
            acc = [0.5 * (np.mean(s["G"] >= 0) + np.mean(s[k] < 0)) for s, _ in runs]
            auc = [roc_auc_score(np.r_[np.ones(s["G"].size), np.zeros(s[k].size)],
                                 np.r_[s["G"], s[k]]) for s, _ in runs]
            cells.append(f"{_spread(acc)} / {np.mean(auc):.3f}")
        g_rej = [np.mean(s["G"] < 0) for s, _ in runs]
        left = [np.mean([0.5 * (np.mean(s["G"] >= 0) + np.mean(s[k] < 0))
                         for k in names[3:]]) for s, _ in runs]
        yield (label, cells, _spread(g_rej), np.array(left),
               float(np.mean([t for _, t in runs])))


def run(args):
    t0 = time.time()
    X_mnist = mnist_train_images(5000, 32)
    kinds = tuple(args.kinds)
    zoo = ensure_image_zoo(args.cache_dir, kinds=("dcgan", "lsgan"), seeds=(0, 1, 2, 3))
    upconv = _upconv_family(X_mnist, args.cache_dir, print)
    X_real, _ = load_mnist_subset(return_X_y=True, pad_to=32)
    X_real = X_real[np.random.default_rng(9).permutation(len(X_real))]
    n, n_neg, n_test = args.n_own, args.n_neg, args.n_test
    print("# A family left out: both protocols against generators they never saw\n")
    print(f"G: the zoo's generator (seed 0) on 32x32 digits; fit on {n} samples of G "
          f"against, under the shadows protocol, {n_neg} real digits and {n_neg} of two "
          f"shadow copies of G (seeds 2, 3), under the paper's protocol {2 * n_neg} real "
          f"digits; test {2 * n_test} fresh samples of G and {n_test} per other source.  "
          "Left out: an upsample + conv family (two seeds) never in the zoo.  Cells: "
          f"accuracy at fnr {FNR} / ROC AUC.  The union: the guide's recipe, "
          f"make_open_world_union(..., validation_size=0), shares "
          f"{dict(OPEN_WORLD_SHARES)}, then calibrate(sample_G, max_fnr=0.01).  "
          + (f"Every detector fitted {len(args.seeds)} times, random_state "
             f"{args.seeds} (the training data the same): accuracy as mean [min-max] over "
             "them, AUC the mean; fit + score the mean per fit; "
             if len(args.seeds) > 1 else "")
          + f"{torch.get_num_threads()} torch thread(s).\n")
    names = ["real digits", "unseen seed of G's family", "the zoo's other family",
             "left out: upsample + conv, seed 0", "left out: upsample + conv, seed 1"]
    print("| protocol | G | detector | G rejected | " + " | ".join(names) + " | mean over "
          "the left-out family | fit + score |")
    print("|---|---|---|---|" + "---|" * len(names) + "---|---|")
    summary = {}
    for protocol in args.protocols:
        for kind in kinds:
            G = zoo[kind, 0]
            other = zoo["lsgan" if kind == "dcgan" else "dcgan", 0]
            shadows = [zoo[kind, 2], zoo[kind, 3]]
            X_g = G.sample(n + 2 * n_test, random_state=10)
            if protocol == "shadows":
                negatives = [X_real[:n_neg], shadows[0].sample(n_neg // 2, random_state=11),
                             shadows[1].sample(n_neg - n_neg // 2, random_state=12)]
            else:
                # the paper's: real data only (the test's real digits come after these)
                negatives = [X_real[:n_neg], X_real[-n_neg:]]
            X_tr = np.concatenate([X_g[:n], *negatives])
            y_tr = np.r_[np.ones(n), -np.ones(2 * n_neg)]
            tests = {"G": X_g[n:], names[0]: X_real[n_neg:n_neg + n_test],
                     names[1]: zoo[kind, 1].sample(n_test, random_state=13),
                     names[2]: other.sample(n_test, random_state=14),
                     names[3]: _sample_module(upconv[0], n_test, 15),
                     names[4]: _sample_module(upconv[1], n_test, 16)}
            anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer,
                                     random_state=0)
            for label, cells, g_rej, left, secs in _fit_and_score(
                    G, anchor, X_tr, y_tr, tests, names, args.seeds, args.detectors):
                summary.setdefault((protocol, label), []).append(left)
                print(f"| {protocol} | {kind} | {label} | {g_rej} | " + " | ".join(cells)
                      + f" | {_spread(left)} | {secs:.0f} s |", flush=True)
    print("\nMean accuracy at fnr 0.005 on the left-out family, over G = "
          + " and ".join(kinds) + ":\n")
    for (protocol, label), vals in summary.items():
        # the mean over both G of each seed's value, then across seeds
        print(f"* {protocol} protocol, {label}: {_spread(np.mean(vals, axis=0))}")
    print(f"\n{time.time() - t0:.0f} s in all.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--n-neg", type=int, default=200)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="the detectors' random_state: with several, each cell is the mean "
                        "[min-max] over them (the AUC: the mean); writes "
                        "bench_family_left_out_<n>seeds_<threads>threads.md")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="the zoo's generators that play G")
    p.add_argument("--detectors", nargs="+", choices=list(DETECTORS),
                   default=list(DETECTORS),
                   help="the rows (a subset names the result file after it)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = "bench_family_left_out"
    if args.seeds != [0]:
        name += f"_{len(args.seeds)}seeds_{args.threads}threads"
    for chosen, every in ((args.protocols, PROTOCOLS), (args.kinds, KINDS),
                          (args.detectors, tuple(DETECTORS))):
        if tuple(chosen) != tuple(every):
            name += "_" + "_".join(chosen)
    tee_result(name + ".md", run, args, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
