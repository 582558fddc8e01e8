"""The ``flipad`` command: fit a detector for your generator, score image files.

::

    flipad fit --generator mygan.py:G --latent-shape 100 1 1 \\
               --own samples_of_G/ --others real/ --others other_gan/ \\
               -o detector.flipad
    flipad score detector.flipad suspicious/ img1.png img2.png --csv scores.csv

``fit`` finds the generator's final layer and output activation
(:func:`~flipad_sklearn.find_final_layer`), computes the anchor from the
generator's own samples (:func:`~flipad_sklearn.mean_activation`) and fits
the FLIPAD pipeline of :func:`flipad_sklearn.pipeline.make_flipad`
(inversion, pooling, channel selection, scaling, Deep SAD) on the images of
``--own`` (label 1, made by G) and of every ``--others`` folder (label -1,
known not made by G).  The fitted pipeline is saved in the secure format of
:mod:`flipad_sklearn.persistence` (numpy arrays + a JSON spec, no pickle):
load it in Python with ``flipad_sklearn.persistence.load`` and use
``predict``/``decision_function`` directly.  An output name ending in
``.joblib``, ``.pkl`` or ``.pickle`` is saved with joblib instead (a pickle,
for trusted use only; a warning says so).

``score`` prints, for every file, its score (the detector's
``decision_function``: negative = not made by G), its decision and its
conformal p-value of "made by G" (small = unlikely to come from G; a sample
of G has ``P(p <= a) <= a``).

Images must have exactly the generator's output size (no silent resizing):
files that cannot be read, are not images or have another size are listed
on stderr with the reason (and in the CSV) and the others are still
processed.

Exit codes
----------
0
    Success: every file was used.
1
    Error: nothing was done (bad detector file, generator that does not
    import, no usable image, ...); the message is on stderr.
2
    Command-line usage error (argparse).
3
    Partial success: some files were skipped (listed with the reason); all
    the others were fitted on / scored.

Security
--------
``flipad score`` reads detector files in the secure format only: numpy
arrays and a JSON spec, loaded with ``numpy.load(allow_pickle=False)``,
rebuilding only an allow-list of the package's and scikit-learn's classes.
Scoring with such a file never runs code from it.  A pickle or joblib file
(which can run arbitrary code when loaded) is refused before it is read,
unless ``--trust-pickle`` is given: use that only for files you made
yourself or otherwise trust.  ``flipad fit --generator`` imports and runs the
given Python module: only name code you trust.
"""

import argparse
import csv
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
PICKLE_EXTENSIONS = (".joblib", ".pkl", ".pickle")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PARTIAL"]


class CLIError(Exception):
    """A fatal error: printed and exit code 1."""


# ------------------------------------------------------------------ images
def _expand(paths):
    """Files from files and folders (sorted, image extensions only in folders).

    Returns ``(files, errors)``; a path that does not exist is an error.
    """
    files, errors = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file())
            for f in found:
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(os.fspath(f))
                else:
                    errors.append((os.fspath(f), f"skipped: extension {f.suffix!r} is not "
                                                 "an image extension"))
        elif path.is_file():
            files.append(os.fspath(path))
        else:
            errors.append((os.fspath(path), "no such file or folder"))
    return files, errors


def _read_images(files, image_shape, verbose):
    """Read ``files`` as ``(n, C, H, W)`` float32 in [-1, 1], without resizing.

    Returns ``(X, ok_files, errors)``.
    """
    from PIL import Image, UnidentifiedImageError

    from .datasets._image_folder import _to_array, _UnsupportedImage

    c, h, w = image_shape
    if c not in (1, 3):
        raise CLIError(f"The generator outputs {c}-channel images; only grey (1) and "
                       "RGB (3) images can be read from files.")
    mode = "L" if c == 1 else "RGB"
    images, ok, errors = [], [], []
    bar = _bar(len(files), "reading images", "file", verbose and len(files) > 50)
    for f in files:
        try:
            with Image.open(f) as img:
                if img.size != (w, h):
                    raise _Missized(f"mis-sized: {img.size[0]}x{img.size[1]} pixels, the "
                                    f"generator makes {w}x{h}")
                img.load()
                arr = _to_array(img, mode, (w, h), Image.Resampling.BICUBIC)
        except _Missized as exc:
            errors.append((f, str(exc)))
        except _UnsupportedImage as exc:
            errors.append((f, f"unsupported: {exc}"))
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
                Image.DecompressionBombError) as exc:
            errors.append((f, f"unreadable: {type(exc).__name__}: {exc}"))
        else:
            images.append(arr)
            ok.append(f)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if images:
        X = (np.stack(images) / 127.5 - 1.0).astype(np.float32)
    else:
        X = np.empty((0, c, h, w), dtype=np.float32)
    return X, ok, errors


class _Missized(Exception):
    pass


def _bar(total, desc, unit, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


def _report_errors(errors, what):
    if not errors:
        return
    print(f"{len(errors)} file(s) {what}:", file=sys.stderr)
    for path, reason in errors:
        print(f"  {path}: {reason}", file=sys.stderr)


# --------------------------------------------------------------- generator
def load_generator_spec(spec, weights=None):
    """The torch module named by ``MODULE:ATTR``.

    ``MODULE`` is an importable module name (``mypkg.models``) or a path to
    a ``.py`` file; ``ATTR`` a (dotted) attribute of it: a ``torch.nn.Module``
    or a callable that returns one when called without arguments (a class or
    a factory function).  ``weights``: an optional state-dict file, loaded
    with ``torch.load(weights_only=True)``.
    """
    import torch

    if ":" not in spec:
        raise CLIError(f"--generator must be MODULE:ATTR (e.g. mygan.py:G), got {spec!r}.")
    module_part, attr = spec.rsplit(":", 1)
    if not attr:
        raise CLIError(f"--generator {spec!r} names no attribute after ':'.")
    try:
        if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise CLIError(f"--generator: no such file {module_part!r}.")
            name = "_flipad_user_generator_" + path.stem
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            sys.path.insert(0, os.fspath(path.resolve().parent))
            try:
                mod_spec.loader.exec_module(module)
            finally:
                sys.path.pop(0)
        else:
            sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_part)
            finally:
                sys.path.pop(0)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(f"--generator: could not import {module_part!r}: "
                       f"{type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"--generator: {module_part!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise CLIError(f"--generator: {attr!r} is a {type(obj).__name__}, not a "
                           "torch.nn.Module or a callable returning one.")
        try:
            obj = obj()
        except Exception as exc:
            raise CLIError(f"--generator: calling {attr}() failed: "
                           f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(obj, torch.nn.Module):
            raise CLIError(f"--generator: {attr}() returned a {type(obj).__name__}, not "
                           "a torch.nn.Module.")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            obj.load_state_dict(state)
        except Exception as exc:
            raise CLIError(f"--weights: could not load {weights!r} into the generator: "
                           f"{type(exc).__name__}: {exc}") from exc
    return obj.eval()


def _latent_shape(args, generator):
    if args.latent_shape:
        return tuple(args.latent_shape)
    shape = getattr(generator, "latent_shape", None)
    if shape is None:
        raise CLIError("--latent-shape is needed: the shape of one latent code, e.g. "
                       "--latent-shape 100 or --latent-shape 100 1 1.")
    return tuple(int(s) for s in shape)


# --------------------------------------------------------------------- fit
def cmd_fit(args):
    import torch

    from . import find_final_layer, mean_activation, sample_activations
    from .pipeline import make_flipad

    verbose = not args.quiet
    generator = load_generator_spec(args.generator, args.weights)
    latent = _latent_shape(args, generator)
    rng = np.random.default_rng(args.seed)
    probe = torch.from_numpy(rng.standard_normal((2,) + latent).astype(np.float32))
    try:
        final = find_final_layer(generator, probe)
    except Exception as exc:
        raise CLIError(f"Could not find the generator's final layer: {exc}") from exc
    with torch.no_grad():
        out_shape = tuple(generator(probe).shape[1:])
    if len(out_shape) != 3:
        raise CLIError(f"The generator outputs samples of shape {out_shape}; the command "
                       "line tool handles images (C, H, W). Use the Python API for "
                       "other data.")
    _log(verbose, f"generator: final layer {final.name or type(final.layer).__name__} "
                  f"({type(final.layer).__name__}), activation {final.activation}, "
                  f"activation shape {final.activation_shape}, output {out_shape}")

    own_files, errors = _expand([args.own])
    X_own, own_ok, err = _read_images(own_files, out_shape, verbose)
    errors += err
    others, other_ok = [], []
    for folder in args.others or []:
        files, err = _expand([folder])
        errors += err
        X, ok, err = _read_images(files, out_shape, verbose)
        errors += err
        others.append(X)
        other_ok += ok
    _report_errors(errors, "skipped")
    if len(own_ok) < 2:
        raise CLIError(f"--own {args.own!r}: {len(own_ok)} usable image(s) of the "
                       "generator; at least 2 are needed (several hundred recommended).")
    _log(verbose, f"training on {len(own_ok)} images of G and {len(other_ok)} of others")

    positive = args.positive
    if positive == "auto":
        h = sample_activations(generator, 64, latent, layer=final.layer,
                               device=args.device, random_state=args.seed,
                               return_outputs=False)
        positive = bool(h.min() >= 0)
    else:
        positive = positive == "yes"
    anchor = mean_activation(generator, args.anchor_samples, latent, layer=final.layer,
                             batch_size=args.batch_size, device=args.device,
                             random_state=args.seed, verbose=int(verbose))
    X = np.concatenate([X_own] + others)
    y = np.r_[np.ones(len(X_own), dtype=int), -np.ones(len(X) - len(X_own), dtype=int)]
    pipe = make_flipad(
        final.layer, final.activation, anchor, alpha=args.alpha,
        activation_shape=final.activation_shape, positive=positive, tol=args.tol,
        max_iter=args.max_iter, fnr=args.fnr, random_state=args.seed, device=args.device,
        inverter_params=dict(batch_size=args.batch_size, verbose=int(verbose)),
        detector_params=dict(n_epochs=args.epochs, verbose=0))
    _log(verbose, f"inverting {len(X)} images, then training the detector "
                  f"({args.epochs} epochs)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    pipe.set_params(inv__verbose=0)
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    _save_detector(pipe, out)
    det = pipe[-1]
    _log(True, f"saved {out} (threshold {det.threshold_:.4g} at fnr={args.fnr}, "
               f"{det.validation_distances_.size} validation samples of G)")
    return EXIT_PARTIAL if errors else EXIT_OK


def _save_detector(pipe, out):
    """Secure format, unless the name asks for joblib (then warn: trusted use only)."""
    if out.suffix.lower() in PICKLE_EXTENSIONS:
        import joblib

        print(f"warning: {os.fspath(out)!r} is saved with joblib, a pickle: loading it can "
              "run arbitrary code, so share it only with people who trust you (and "
              "`flipad score` needs --trust-pickle for it). Name the file *.flipad for "
              "the secure format.", file=sys.stderr)
        joblib.dump(pipe, out)
        return
    from . import persistence

    try:
        persistence.save(pipe, out)
    except TypeError as exc:
        raise CLIError(f"Could not save the detector securely: {exc} (name the output "
                       "*.joblib to save it with joblib, for trusted use)") from exc


def _log(enabled, msg):
    if enabled:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------- score
def _load_detector(path, trust_pickle=False):
    from sklearn.pipeline import Pipeline

    from . import persistence
    from .inversion import FinalLayerInverter

    name = os.fspath(path)
    try:
        kind = persistence.sniff(path)
        if kind == "pickle":
            if not trust_pickle:
                raise CLIError(
                    f"{name!r} is a pickle/joblib file: loading it can run arbitrary code, "
                    "so it is refused (nothing was read beyond its first bytes). If you "
                    "made it yourself or trust its source, re-run with --trust-pickle; "
                    "better, re-save it in the secure format (flipad fit -o NAME.flipad, "
                    "or flipad_sklearn.persistence.save).")
            import joblib

            pipe = joblib.load(path)
        else:
            pipe = persistence.load(path)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(f"Could not load the detector {name!r}: "
                       f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(pipe, Pipeline) or not isinstance(pipe[0], FinalLayerInverter) \
            or not hasattr(pipe[-1], "pvalues"):
        raise CLIError(f"{os.fspath(path)!r} is not a detector written by `flipad fit`.")
    return pipe


def cmd_score(args):
    pipe = _load_detector(args.detector, args.trust_pickle)
    verbose = not args.quiet
    inv = pipe[0]
    if args.device is not None:
        pipe.set_params(inv__device=args.device)
        pipe[-1].network_.to(_torch_device(args.device))
    if args.batch_size is not None:
        pipe.set_params(inv__batch_size=args.batch_size)
    shape = tuple(inv.output_shape_)
    files, errors = _expand(args.paths)
    X, ok, err = _read_images(files, shape, verbose)
    errors += err
    rows = []
    if len(ok):
        pipe.set_params(inv__verbose=int(verbose and len(ok) > 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence: the score is still defined
            feats = pipe[:-1].transform(X)
        det = pipe[-1]
        scores = det.decision_function(feats)
        pvals = det.pvalues(feats)
        for f, s, p in zip(ok, scores, pvals):
            rows.append({"path": f, "score": float(s),
                         "decision": "G" if s >= 0 else "not G", "pvalue": float(p),
                         "status": "ok"})
    for f, reason in errors:
        rows.append({"path": f, "score": "", "decision": "", "pvalue": "",
                     "status": reason})
    if ok:
        width = max(len(r["path"]) for r in rows if r["status"] == "ok")
        print(f"{'path':<{width}}  {'score':>11}  {'decision':<8}  {'p-value':>8}")
        for r in rows:
            if r["status"] == "ok":
                print(f"{r['path']:<{width}}  {r['score']:>11.4g}  {r['decision']:<8}  "
                      f"{r['pvalue']:>8.4f}")
    _report_errors(errors, "not scored")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["path", "score", "decision", "pvalue",
                                                    "status"])
            writer.writeheader()
            writer.writerows(rows)
    if not ok:
        raise CLIError("No file could be scored." if files or errors else
                       "No files given.")
    return EXIT_PARTIAL if errors else EXIT_OK


def _torch_device(device):
    from ._device import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------ parser
def build_parser():
    """The argparse parser of the ``flipad`` command."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="flipad",
        description="Was this image made by my generator? FLIPAD attribution "
                    "(final-layer inversion + Deep SAD) from the command line.",
        epilog="Exit codes: 0 success; 1 error (nothing done); 2 usage error; "
               "3 some files skipped (listed with the reason), the rest processed. "
               "flipad score reads the secure detector format (no pickle); a "
               "pickle/joblib detector needs --trust-pickle.",
    )
    parser.add_argument("--version", action="version", version=f"flipad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser(
        "fit", help="fit a detector for a generator from folders of images",
        description="Fit the FLIPAD pipeline (flipad_sklearn.pipeline.make_flipad) "
                    "on images of the generator (--own, label 1) and of other sources "
                    "(--others, label -1) and save it in the secure format (or with "
                    "joblib, for trusted use, when FILE ends in .joblib/.pkl).")
    fit.add_argument("--generator", required=True, metavar="MODULE:ATTR",
                     help="the generator: a torch.nn.Module, or a callable returning one, "
                          "in an importable module or a .py file (e.g. mygan.py:G)")
    fit.add_argument("--weights", metavar="FILE",
                     help="state dict to load into the generator (torch.load with "
                          "weights_only=True)")
    fit.add_argument("--latent-shape", type=int, nargs="+", metavar="N",
                     help="shape of one latent code, e.g. 100 or 100 1 1 (default: the "
                          "generator's latent_shape attribute)")
    fit.add_argument("--own", required=True, metavar="DIR",
                     help="folder of images made by the generator")
    fit.add_argument("--others", action="append", metavar="DIR",
                     help="folder of images not made by it (real data, other models); "
                          "repeat for several")
    fit.add_argument("--alpha", type=float, default=5e-4, help="lasso penalty (5e-4)")
    fit.add_argument("--tol", type=float, default=1e-4,
                     help="relative duality gap of the inversion (1e-4)")
    fit.add_argument("--max-iter", type=int, default=500,
                     help="FISTA iterations per sample at most (500)")
    fit.add_argument("--positive", choices=("auto", "yes", "no"), default="auto",
                     help="non-negative activations; auto: yes when the generator's "
                          "penultimate activations are (a ReLU)")
    fit.add_argument("--anchor-samples", type=int, default=2000,
                     help="generator samples averaged for the anchor (2000)")
    fit.add_argument("--fnr", type=float, default=0.005,
                     help="tolerated share of G's images rejected (0.005)")
    fit.add_argument("--epochs", type=int, default=50, help="Deep SAD epochs (50)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (0)")
    fit.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    fit.add_argument("--batch-size", type=int, default=256,
                     help="samples per batch for sampling and inversion (256)")
    fit.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="where to save the detector: the secure format (e.g. "
                          "detector.flipad), or joblib if FILE ends in .joblib/.pkl/.pickle "
                          "(a pickle: for trusted use only)")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(func=cmd_fit)

    score = sub.add_parser(
        "score", help="score image files with a fitted detector",
        description="Print for each file its score (negative: not made by G), the "
                    "decision and the conformal p-value of 'made by G'.")
    score.add_argument("detector", help="detector file written by `flipad fit` (the "
                                        "secure format; never runs code)")
    score.add_argument("paths", nargs="+", metavar="PATH",
                       help="image files or folders of images")
    score.add_argument("--csv", metavar="FILE",
                       help="also write path, score, decision, pvalue, status to a CSV")
    score.add_argument("--device", default=None, help="auto, cpu or cuda (default: cpu "
                                                      "unless the detector says otherwise)")
    score.add_argument("--batch-size", type=int, default=None,
                       help="samples per inversion batch")
    score.add_argument("--trust-pickle", action="store_true",
                       help="also load a pickle/joblib detector file; loading a pickle "
                            "can run arbitrary code: only for files you trust")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    score.set_defaults(func=cmd_score)
    return parser


def main(argv=None):
    """Run the ``flipad`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"flipad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
