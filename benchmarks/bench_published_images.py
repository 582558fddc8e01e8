"""Issue 27: does a FLIPAD pipeline accept G's images as they are published?

The demo's generators (:mod:`flipad_sklearn.demo`): a pipeline from
:func:`flipad_sklearn.pipeline.make_flipad` with its defaults is fitted on G's
samples as the generator returns them (floats), against real digits and a
shadow of G, at fnr 0.005.  It then scores fresh samples of G as floats, the
same images after an 8-bit PNG round trip (saved with Pillow, read back with
:func:`flipad_sklearn.datasets.load_image_folder`), and the two unseen
generators' samples, floats and PNG.  Prints one markdown row per variant.

    python -m benchmarks.bench_published_images [--float] [--n-test 400]

``--float`` fits with ``quantize=None`` (a float pipeline, what every
pipeline was before issue 27).  ``--recipe rawpad`` / ``dctpad`` fits the
baselines' recipes (:func:`flipad_sklearn.make_rawpad`,
:func:`flipad_sklearn.make_dctpad`) instead of FLIPAD's; the result file is
``published_images[_RECIPE][_float].md`` unless ``--name`` says otherwise.
Run it against another checkout with ``PYTHONPATH=<checkout>``; the script
only uses options older code also has.
"""

import argparse
import inspect
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image

from ._results import add_result_args, results_dir, tee_result


def png_round_trip(X):
    """``X`` (n, 1, H, W) in [-1, 1] → 8-bit PNG files → loader → floats in [-1, 1]."""
    from flipad_sklearn.datasets import load_image_folder

    with tempfile.TemporaryDirectory() as tmp:
        for i, x in enumerate(X):
            pix = np.clip(np.round((x[0] + 1) * 127.5), 0, 255).astype(np.uint8)
            Image.fromarray(pix, mode="L").save(f"{tmp}/{i:05d}.png")
        Xr, _, _ = load_image_folder(tmp, X.shape[-2:], "L")
    return Xr


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--float", action="store_true", help="fit with quantize=None")
    p.add_argument("--recipe", choices=("flipad", "rawpad", "dctpad"), default="flipad")
    p.add_argument("--name", default=None, help="result file name")
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--n-neg", type=int, default=150)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip-eps", default=None, help="the inverter's clip_eps (default: "
                   "make_flipad's)")
    add_result_args(p)
    args = p.parse_args(argv)
    name = args.name or ("published_images" + ("" if args.recipe == "flipad"
                                               else "_" + args.recipe)
                         + ("_float" if args.float else "") + ".md")
    return tee_result(name, _run, args,
                      results_dir=results_dir(args))


def _run(args):
    """The benchmark itself: prints its tables."""
    import flipad_sklearn
    from flipad_sklearn import mean_activation
    from flipad_sklearn.datasets import load_mnist_subset
    from flipad_sklearn.generators._demo_checkpoints import load_demo_generator
    from flipad_sklearn.pipeline import make_dctpad, make_flipad, make_rawpad

    torch.set_num_threads(1)
    print(f"(package: {os.path.dirname(flipad_sklearn.__file__)})")
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
    make = {"flipad": make_flipad, "rawpad": make_rawpad, "dctpad": make_dctpad}[args.recipe]
    kw = {}
    if "quantize" in inspect.signature(make).parameters:
        kw["quantize"] = None if args.float else "auto"
    elif args.float is False:
        kw = {}                                  # older code: its only (float) recipe
    if args.clip_eps is not None:
        kw["inverter_params"] = dict(clip_eps=float(args.clip_eps))
    detector_params = dict(n_epochs=args.epochs, validation_fraction=0.5)
    if args.recipe == "flipad":
        pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True, fnr=0.005,
                           random_state=rs, device="cpu", detector_params=detector_params,
                           **kw)
    else:
        pipe = make(fnr=0.005, random_state=rs, device="cpu",
                    detector_params=detector_params, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X, y)
    tests = {"G": X_own[args.n_own:],
             "unseen": gens["unseen"].sample(args.n_test, random_state=rs + 102),
             "other": gens["other"].sample(args.n_test, random_state=rs + 103),
             "real": X_real[args.n_neg:args.n_neg + args.n_test]}
    row = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, Xt in tests.items():
            for form, Xf in (("float", Xt), ("png", png_round_trip(Xt))):
                if name == "real" and form == "float":
                    continue                     # real digits are 8-bit already
                acc = pipe.predict(Xf) == 1
                row[f"{name} {form}"] = acc.mean() if name == "G" else 1 - acc.mean()
    contract = sorted({type(w.message).__name__ for w in caught
                       if "Contract" in type(w.message).__name__})
    print("| recipe | " + " | ".join(row) + " | warnings | s |")
    print("|---|" + "---|" * (len(row) + 2))
    recipe = (("quantize=None" if args.float else "default")
              + f" (make_{args.recipe}{kw or ''})")
    print(f"| {recipe} | " + " | ".join(f"{v:.3f}" for v in row.values())
          + f" | {', '.join(contract) or '-'} | {time.perf_counter() - t0:.0f} |")
    print("(G: share accepted; the others: share rejected; fnr 0.005)")


if __name__ == "__main__":
    main()
