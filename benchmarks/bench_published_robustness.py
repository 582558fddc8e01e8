"""Issue 27, part 2: G's images after what happens to published images.

The demo's generators (:mod:`flipad_sklearn.demo`) and :func:`make_flipad`'s
defaults (8-bit input contract), fitted once at fnr 0.005.  Each test source
(G, the unseen same-recipe DCGAN, the unseen LSGAN, real digits) is scored
clean (8-bit PNG) and after JPEG q90 / q75, a resize to 90 % / 110 % and back
(bicubic), and a 90 % centre crop resized back; no perturbation is named at
fit.  Two thresholds:

``clean``
    the pipeline's own: the (1 - fnr) quantile of held-out clean samples of G;
``mixture``
    :func:`~flipad_sklearn.detection.conformal.calibrate` on fresh samples of G, each
    passed through one perturbation drawn from a fixed family of what
    published images go through (JPEG q 70-95, resize 0.9-1.1, crop 0.9-1,
    or none), so the fnr guarantee covers that family.

``--immunise`` trains on the training set plus a copy of it through the same
mixture (immunisation without naming one perturbation).

Prints one markdown table: G accepted, others rejected, per perturbation,
and writes it to ``published_robustness.md`` (``published_robustness_immunised.md``
with ``--immunise``).

    python -m benchmarks.bench_published_robustness [--n-test 200]
"""

import argparse
import io
import time
import warnings

import numpy as np
import torch
from PIL import Image

from ._results import add_result_args, results_dir, tee_result


def _pil(x):
    return Image.fromarray(np.clip(np.round((x[0] + 1) * 127.5), 0, 255).astype(np.uint8))


def _back(img):
    return np.asarray(img, dtype=np.float32)[None] / 127.5 - 1


def jpeg(X, q):
    out = []
    for x in X:
        buf = io.BytesIO()
        _pil(x).save(buf, format="JPEG", quality=int(q))
        out.append(_back(Image.open(io.BytesIO(buf.getvalue())).convert("L")))
    return np.stack(out)


def resize(X, s):
    h, w = X.shape[-2:]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.stack([_back(_pil(x).resize(size, Image.Resampling.BICUBIC)
                           .resize((w, h), Image.Resampling.BICUBIC)) for x in X])


def crop(X, s):
    h, w = X.shape[-2:]
    ch, cw = round(h * s), round(w * s)
    t, left = (h - ch) // 2, (w - cw) // 2
    return np.stack([_back(_pil(x).crop((left, t, left + cw, t + ch))
                           .resize((w, h), Image.Resampling.BICUBIC)) for x in X])


PERTURBATIONS = {
    "clean (PNG)": lambda X: X,
    "JPEG q90": lambda X: jpeg(X, 90),
    "JPEG q75": lambda X: jpeg(X, 75),
    "resize 90%": lambda X: resize(X, 0.9),
    "resize 110%": lambda X: resize(X, 1.1),
    "crop 90%": lambda X: crop(X, 0.9),
}


def mixture(X, rng):
    """Each sample through one perturbation of the family (or none)."""
    out = np.empty_like(X)
    kind = rng.integers(0, 4, size=len(X))
    for i, x in enumerate(X):
        x = x[None]
        if kind[i] == 1:
            x = jpeg(x, rng.integers(70, 96))
        elif kind[i] == 2:
            x = resize(x, rng.uniform(0.9, 1.1))
        elif kind[i] == 3:
            x = crop(x, rng.uniform(0.9, 1.0))
        out[i] = x[0]
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--n-neg", type=int, default=150)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-cal", type=int, default=400)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--immunise", action="store_true",
                   help="train on the 8-bit training set plus a copy of it through the "
                        "perturbation mixture (G's and the negatives alike)")
    add_result_args(p)
    args = p.parse_args(argv)
    name = "published_robustness" + ("_immunised" if args.immunise else "") + ".md"
    return tee_result(name, _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    from flipad_sklearn import mean_activation
    from flipad_sklearn.detection.conformal import calibrate
    from flipad_sklearn.datasets import load_mnist_subset
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator
    from flipad_sklearn.pipeline import make_flipad

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rs = args.seed
    gens = {n: load_demo_generator(n) for n in ("G", "shadow", "unseen", "other")}
    G = gens["G"]
    X_real, _ = load_mnist_subset(return_X_y=True)
    X_real = X_real[np.random.default_rng(rs).permutation(len(X_real))]
    X_own = G.sample(args.n_own + args.n_test, random_state=rs + 100)
    X = np.concatenate([X_own[:args.n_own], X_real[:args.n_neg],
                        gens["shadow"].sample(args.n_neg, random_state=rs + 101)])
    y = np.r_[np.ones(args.n_own), -np.ones(2 * args.n_neg)].astype(int)
    anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=rs)
    pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=0.005,
                       random_state=rs, device="cpu",
                       detector_params=dict(n_epochs=args.epochs, validation_fraction=0.5))
    warnings.simplefilter("ignore")
    if args.immunise:
        X8 = (np.clip(np.round((X + 1) * 127.5), 0, 255) / 127.5 - 1).astype(np.float32)
        X = np.concatenate([X8, mixture(X8, np.random.default_rng(rs + 300))])
        y = np.r_[y, y]
    pipe.fit(X, y)
    tests = {"G": X_own[args.n_own:],
             "unseen": gens["unseen"].sample(args.n_test, random_state=rs + 102),
             "other": gens["other"].sample(args.n_test, random_state=rs + 103),
             "real": X_real[args.n_neg:args.n_neg + args.n_test]}
    # 8-bit first: what is published; then each perturbation
    tests = {k: np.clip(np.round((v + 1) * 127.5), 0, 255) / 127.5 - 1 for k, v in tests.items()}
    scores = {}
    head, det = pipe[:-1], pipe[-1]
    for pname, f in PERTURBATIONS.items():
        for s, Xs in tests.items():
            scores[pname, s] = det.score_samples(head.transform(f(Xs).astype(np.float32)))
    thresholds = {"clean": det.offset_}   # accepted: score_samples >= offset_
    X_cal = G.sample(args.n_cal, random_state=rs + 200)
    X_cal = np.clip(np.round((X_cal + 1) * 127.5), 0, 255) / 127.5 - 1
    calibrate(pipe, mixture(X_cal, np.random.default_rng(rs + 201)).astype(np.float32))
    thresholds["mixture"] = det.offset_
    print("| threshold | perturbation | G accepted | unseen rejected | other rejected | "
          "real rejected | mean accuracy |")
    print("|---|---|---|---|---|---|---|")
    for tname, thr in thresholds.items():
        for pname in PERTURBATIONS:
            acc = {s: np.mean(scores[pname, s] >= thr) if s == "G"
                   else np.mean(scores[pname, s] < thr) for s in tests}
            print(f"| {tname} | {pname} | " + " | ".join(f"{acc[s]:.3f}" for s in tests)
                  + f" | {np.mean(list(acc.values())):.3f} |")
    print(f"({time.perf_counter() - t0:.0f} s; fnr 0.005; {args.n_test} test images per "
          f"source; mixture calibration on {args.n_cal} fresh samples of G)")


if __name__ == "__main__":
    main()
