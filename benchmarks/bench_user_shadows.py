"""Which shadows help for a generator the package did not train (issue 32)?

The owner's generator G is the demo's MNIST DCGAN
(:func:`~flipad_sklearn.generators.load_demo_generator`), wrapped as a plain
``torch.nn.Module`` so that :func:`~flipad_sklearn.generators.train_shadows`
treats it as a user's model: it knows neither G's recipe nor its seed.  FLIPAD
(the design card's ``Pipeline``: ``FinalLayerInverter`` at its defaults with
``mean_activation`` over 2000 samples, then ``FLIPADDetector(fnr=0.005)`` at
its defaults) is trained on ``--n-own`` samples of G against labelled others
from one of these sources:

* ``real``: MNIST images (the paper's protocol, no shadows);
* ``recipe``: two shadows retrained with G's own recipe (the package's
  generators only; the reference the user path is measured against);
* ``user-data``: two user-recipe shadows (copies of G's architecture,
  re-initialised, trained as a DCGAN) on the MNIST images, when the owner has
  G's training data;
* ``user-samples``: the same, trained on samples of G, when the owner does not.

Each test source holds ``--n-test`` samples none of the detectors saw: fresh
samples of G, the demo's unseen seed of G's recipe, its LSGAN of another
architecture, and real MNIST images.  Writes ``--out`` (markdown) with
accuracy at fnr 0.005 and ROC AUC per source, the commit, threads, device
and date.

Run: ``python -m benchmarks.bench_user_shadows [--n-own 600 --n-neg 200 --n-test 200]``
(one thread; the result file records the run's time, mostly training the
shadows).
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from torch import nn

from flipad_sklearn import FinalLayerInverter, FLIPADDetector, mean_activation
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import load_demo_generator, train_shadows

from ._results import add_result_args, results_dir, write_result


HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("real", "recipe", "user-data", "user-samples")


class UserGenerator(nn.Module):
    """A generator the package did not train: z (latent_dim,) -> image."""

    def __init__(self, net, latent_dim):
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, z):
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def sample(G, n, seed):
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal(
        (n, G.latent_dim), dtype=np.float32))
    with torch.no_grad():
        return G(z).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-own", type=int, default=600)
    p.add_argument("--n-neg", type=int, default=200, help="per shadow (two shadows)")
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--shadow-epochs", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                   help="which labelled others to compare")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="user_shadows.md",
                   help="the result file's name in --results-dir (or a path)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t_start = time.time()

    demo = load_demo_generator("G")
    G = UserGenerator(demo.net, demo.latent_dim).eval()
    real, _ = load_mnist_subset(return_X_y=True)
    real = real[np.random.default_rng(0).permutation(real.shape[0])]
    real_train, real_test = real[:2 * args.n_neg], real[-args.n_test:]

    negatives = {"real": real_train} if "real" in args.variants else {}
    shadows = {}
    if "recipe" in args.variants:
        shadows["recipe"] = train_shadows(demo, real, n_shadows=2)
    own_samples = sample(G, 2000, seed=100)
    for name, X_shadow in (("user-data", real), ("user-samples", own_samples)):
        if name in args.variants:
            shadows[name] = train_shadows(G, X_shadow, n_shadows=2,
                                          latent_shape=demo.latent_dim,
                                          epochs=args.shadow_epochs)
    for name, pair in shadows.items():
        negatives[name] = np.concatenate([sample(S, args.n_neg, seed=200 + i)
                                          if not hasattr(S, "config") else
                                          S.sample(args.n_neg, random_state=200 + i)
                                          for i, S in enumerate(pair)])
    t_shadows = time.time() - t_start

    final = demo.final_layer
    anchor = mean_activation(G, 2000, demo.latent_dim, random_state=1, device="cpu")
    X_own = sample(G, args.n_own, seed=2)
    tests = {
        "G, fresh samples": sample(G, args.n_test, seed=3),
        "unseen seed of G's recipe": load_demo_generator("unseen").sample(args.n_test,
                                                                          random_state=4),
        "LSGAN (other architecture)": load_demo_generator("other").sample(args.n_test,
                                                                          random_state=5),
        "real MNIST": real_test,
    }
    rows = []
    for neg_name, X_neg in negatives.items():
        pipe = Pipeline([
            ("inv", FinalLayerInverter(layer=final, activation="tanh", anchor=anchor,
                                       device="cpu")),
            ("det", FLIPADDetector(fnr=0.005, random_state=0, device="cpu"))])
        X = np.concatenate([X_own, X_neg]).reshape(len(X_own) + len(X_neg), -1)
        pipe.fit(X, np.r_[np.ones(len(X_own)), -np.ones(len(X_neg))])
        s = {k: pipe.score_samples(v.reshape(len(v), -1)) for k, v in tests.items()}
        offset = pipe[-1].offset_
        g = s["G, fresh samples"]
        for k, v in s.items():
            if k == "G, fresh samples":
                rows.append((neg_name, k, float(np.mean(v >= offset)), float("nan")))
            else:
                acc = 0.5 * (np.mean(g >= offset) + np.mean(v < offset))
                auc = roc_auc_score(np.r_[np.ones(g.size), np.zeros(v.size)], np.r_[g, v])
                rows.append((neg_name, k, float(acc), float(auc)))
        print(neg_name, pipe[-1].combine_, [f"{r[2]:.3f}/{r[3]:.3f}" for r in rows[-4:]],
              flush=True)

    lines = [
        f"<!-- python -m benchmarks.bench_user_shadows --variants {' '.join(args.variants)} "
        f"--n-own {args.n_own} --n-neg "
        f"{args.n_neg} --n-test {args.n_test} --shadow-epochs {args.shadow_epochs} "
        f"--threads {args.threads}; {platform.processor() or 'cpu'}, "
        f"torch threads {args.threads}, device cpu; "
        f""
        f"{time.time() - t_start:.0f} s ({t_shadows:.0f} s training shadows) -->",
        "# Which labelled others help for a generator the package did not train",
        "",
        f"G: the demo's MNIST DCGAN as a plain torch module; {args.n_own} samples of G, "
        f"labelled others: {2 * args.n_neg} per row; {args.n_test} test samples per source. "
        "Cells: accuracy at fnr 0.005 (G's row: share of fresh samples accepted) / ROC AUC.",
        "",
        "| labelled others | " + " | ".join(tests) + " | mean acc over the non-G sources |",
        "|---|" + "---|" * (len(tests) + 1),
    ]
    for neg_name in negatives:
        cells = [r for r in rows if r[0] == neg_name]
        fmt = [f"{a:.3f}" if np.isnan(u) else f"{a:.3f} / {u:.3f}" for _, _, a, u in cells]
        mean = np.mean([a for _, k, a, _ in cells if k != "G, fresh samples"])
        lines.append(f"| {neg_name} | " + " | ".join(fmt) + f" | {mean:.3f} |")
    text = "\n".join(lines)
    print(text)
    print(f"written: {write_result(args.out, text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
