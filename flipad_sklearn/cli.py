"""The ``flipad`` command: fit a detector for your generator, score image files.

::

    flipad sample --generator mygan.py:G --latent-shape 100 1 1 -n 2000 \\
                  -o samples_of_G/
    flipad shadows --generator mygan.py:G --latent-shape 100 1 1 \\
                   --own samples_of_G/ -o shadows/
    flipad fit --generator mygan.py:G --latent-shape 100 1 1 \\
               --own samples_of_G/ --others real/ --others other_gan/ \\
               [--detector union --others shadows/] -o detector.flipad
    flipad score detector.flipad suspicious/ img1.png img2.png --csv scores.csv
    flipad score detector.flipad suspicious/ -o verdicts.json --format json
    flipad attribute --model G1=g1.flipad --model G2=g2.flipad suspicious/

``sample`` writes ``-n`` seeded samples of the generator as 8-bit PNG files
into a new or empty folder, turning outputs into pixels exactly as ``fit``
and ``score`` read them back: that folder is what ``fit --own`` takes.

``shadows`` trains the open-world recipe's five shadows on the images of
``--own`` (:func:`~flipad_sklearn.generators.open_world_shadows`) and writes
``-n`` samples of each into a new or empty folder, for ``fit --others``.

``fit`` finds the generator's final layer and output activation
(:func:`~flipad_sklearn.find_final_layer`), computes the anchor from the
generator's own samples (:func:`~flipad_sklearn.mean_activation`) and fits
the FLIPAD pipeline of :func:`flipad_sklearn.pipeline.make_flipad`
(inversion, pooling, channel selection, scaling, Deep SAD) on the images of
``--own`` (label 1, made by G) and of every ``--others`` folder (label -1,
known not made by G); with ``--detector union``, the open-world union of
FLIPAD, DCTPAD and a pixel guard instead
(:func:`~flipad_sklearn.make_open_world_union`).  The threshold is set on 1000 fresh samples of the
generator, or more if ``--fnr`` needs them (``--validation-samples``;
:func:`~flipad_sklearn.detection.conformal.calibrate`), so that every image of
``--own`` trains the detector.  The fitted pipeline is saved in the secure
format of :mod:`flipad_sklearn.persistence` (numpy arrays + a JSON spec, no
pickle): load it in Python with ``flipad_sklearn.persistence.load`` and use
``predict``/``decision_function`` directly.  An output name ending in
``.joblib``, ``.pkl`` or ``.pickle`` is saved with joblib instead (a pickle,
for trusted use only; a warning says so).

``score`` prints, for every file, its score (the detector's
``decision_function``: negative = not made by G), its decision and its
conformal p-value of "made by G" (small = unlikely to come from G; a sample
of G has ``P(p <= a) <= a``).  The detector file may also hold a fitted
:class:`~flipad_sklearn.ConformalUnion` (e.g. FLIPAD and a pixel guard,
saved with :func:`flipad_sklearn.persistence.save`): its verdicts, and each
detector's own p-value in a column ``p_NAME``; or another image detector's
pipeline saved the same way (``make_dctpad``, ``make_pixel_guard``).
``--csv FILE`` or ``-o FILE [--format {csv,json}]`` writes the table (JSON:
the detector's metadata and one object per file); the table is
:func:`flipad_sklearn.verdicts.verdict_table`'s, the function Python users
call, so both give the same verdicts.

Pixels are scaled to the range of the output activation that ``fit`` found,
and that range is saved with the detector (the pipeline's ``input_range``) so
that ``score`` reads files the same way: tanh ``p / 127.5 - 1`` (``[-1, 1]``),
sigmoid ``p / 255`` (``[0, 1]``), identity ``p / 127.5 - 1`` (the convention
of generators with a linear output such as StyleGAN's, whose images are made
with ``(x + 1) * 127.5``).  The detector is trained and calibrated on 8-bit
images (:func:`~flipad_sklearn.pipeline.make_flipad`'s ``quantize="uint8"``),
like the files it scores.

Images must have exactly the generator's output size (no silent resizing;
:func:`~flipad_sklearn.datasets.load_image_folder` follows the same rule):
files that cannot be read, are not images or have another size, broken
symbolic links and sub-folders (folders are not searched recursively) are
listed on stderr with the reason (and in the CSV, in input order) and the
others are still processed.

Every option is checked, and the output file's folder is created and tested
for writing, before any work: a bad ``--fnr`` or an unwritable ``-o`` is
reported at once, not after the inversion.  The detector file and the CSV are
written to a temporary file in the same folder and moved into place at the
end (``os.replace``, from a unique temporary name), so an interrupted run
never leaves a truncated file that looks complete.  An output path that is
the detector or one of the input files is refused before any work.

Output
------
Every command writes one row per input file, in command-line order (folders
expanded in sorted order), skipped files included with the reason.  The CSV
is written before the table is printed, so a closed terminal or pipe
(``flipad score ... | head``) cannot lose it; the table then simply stops.
The CSV is UTF-8: a file name that is not valid UTF-8 is written with
``\\xNN`` escapes, and a text cell starting with ``=``, ``+``, ``-`` or ``@``
(a formula to a spreadsheet) is prefixed with ``'``.

Exit codes
----------
0
    Success: every file was used.
1
    Error: nothing was done (bad detector file, generator that does not
    import, no usable image, an output path that cannot be written, an
    unsupported device, any other ``ValueError`` or ``OSError``); a one-line
    message is on stderr.
2
    Command-line usage error: argparse's, or an option value out of its range
    (``--fnr 1.5``, ``--epochs 0``, ...).
3
    Partial success: some files were skipped (listed with the reason); all
    the others were fitted on / scored.
130
    Interrupted (Ctrl-C): one line on stderr; no output file was changed
    (``sample``: the images written so far are complete files).

Security
--------
``flipad score`` and ``flipad attribute`` read detector files in the secure
format only: numpy
arrays and a JSON spec, loaded with ``numpy.load(allow_pickle=False)``,
rebuilding only an allow-list of the package's and scikit-learn's classes.
Scoring with such a file never runs code from it, and every array in it is
checked against the estimator's invariants before use: a crafted file is
refused with one line (exit code 1).  ``--max-memory`` (GiB, default 2) bounds
what a file may make the command allocate: its arrays and the inversion of
one batch, estimated from the file before anything is allocated.  A pickle or joblib file
(which can run arbitrary code when loaded) is refused before it is read,
unless ``--trust-pickle`` is given: use that only for files you made
yourself or otherwise trust.  ``flipad fit --generator`` imports and runs the
given Python module: only name code you trust.
"""

import argparse
import importlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

# reading files, the pixel ranges and the table's rules live in verdicts (the
# standard library only at import), shared with flipad_sklearn.verdicts.verdict_table
from .verdicts import IMAGE_EXTENSIONS, PIXEL_RANGES  # noqa: F401 (kept as cli names)
from .verdicts import csv_cell as _csv_cell  # noqa: F401
from .verdicts import display_name as _display

# numpy, torch and the package's estimators are imported inside the commands,
# after the arguments are parsed: `flipad --help` and a usage error return
# at once (tests/test_lazy_import.py)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 130      # 128 + SIGINT, as shells report it
PICKLE_EXTENSIONS = (".joblib", ".pkl", ".pickle")

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PARTIAL",
           "EXIT_INTERRUPTED"]


class CLIError(Exception):
    """A fatal error: printed and exit code 1."""


class UsageError(Exception):
    """An option value out of its range: printed and exit code 2."""


# ------------------------------------------------------------------ images
def _expand_entries(paths):
    """``(path, reason)`` for every file and folder entry, in input order
    (:func:`flipad_sklearn.verdicts.expand_paths`)."""
    from .verdicts import expand_paths

    return expand_paths(paths)


def _expand(paths):
    """Files from files and folders (sorted, image extensions only in folders).

    Returns ``(files, errors)``; a path that does not exist is an error.
    """
    entries = _expand_entries(paths)
    return ([p for p, r in entries if r is None],
            [(p, r) for p, r in entries if r is not None])


def _read_folder(folder, image_shape, verbose, value_range):
    """The images of ``folder`` (:func:`_read_images`): ``(X, ok_files, errors)``, the
    errors of listing and of reading together."""
    files, errors = _expand([folder])
    X, ok, err = _read_images(files, image_shape, verbose, value_range)
    return X, ok, errors + err


def _pixel_range(activation):
    """The range 8-bit pixels are scaled to for a generator with this output activation."""
    from .verdicts import pixel_range

    try:
        return pixel_range(activation)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _read_images(files, image_shape, verbose, value_range=(-1.0, 1.0)):
    """Read ``files`` as ``(n, C, H, W)`` float32 in ``value_range``, without resizing
    (:func:`flipad_sklearn.verdicts.read_images`).  Returns ``(X, ok_files, errors)``."""
    from .verdicts import read_images

    try:
        return read_images(files, image_shape, value_range, verbose)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _bar(total, desc, unit, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


def _report_errors(errors, what):
    if not errors:
        return
    _err(f"{len(errors)} file(s) {what}:")
    for path, reason in errors:
        _err(f"  {_display(path)}: {reason}")


def _out(line):
    """Print a line of the table; a closed stdout (``| head``) ends the table quietly."""
    global _STDOUT_CLOSED
    if _STDOUT_CLOSED:
        return
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _STDOUT_CLOSED = True
        # later writes (and the interpreter's final flush) go nowhere, not to a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_STDOUT_CLOSED = False


def _err(line):
    try:
        print(line, file=sys.stderr)
    except (BrokenPipeError, UnicodeEncodeError):
        pass


def _refuse_overwriting(out, option, protected):
    """A CLIError if ``out`` is one of ``protected`` (the detector, an input file).

    Compared as resolved paths, and as the same file (a hard link or another
    spelling of the path); nothing the command writes may destroy its inputs.
    """
    target = Path(out).resolve()
    for p in protected:
        p = Path(p)
        same = target == p.resolve()
        if not same and target.exists() and p.exists():
            try:
                same = os.path.samefile(target, p)
            except OSError:
                same = False
        if same:
            raise CLIError(f"{option} {_display(os.fspath(out))!r} is also an input "
                           f"({_display(os.fspath(p))!r}); writing it would destroy it. "
                           "Give another file name.")


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


def _inspect_generator(args, verbose):
    """The generator of ``--generator``/``--weights``, its latent shape, final layer
    and output shape ``(C, H, W)``; as ``fit`` and ``sample`` both read them."""
    import numpy as np
    import torch

    from . import find_final_layer

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
    return generator, latent, final, out_shape


# ------------------------------------------------------------------ sample
def cmd_sample(args):
    """Draw ``-n`` samples of the generator and write them as 8-bit PNG files.

    The pixels are the inverse of how ``fit`` and ``score`` read files: an
    output ``x`` in the activation's range ``[low, high]`` becomes
    ``p = round((x - low) * 255 / (high - low))``, clipped to ``[0, 255]``,
    so the folder is what ``flipad fit --own`` takes.
    """
    verbose = not args.quiet
    _check_sample_args(args)
    created = not Path(args.output).exists()
    folder = _prepare_folder(args.output)
    try:
        return _write_samples(args, folder, verbose)
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()          # nothing written: leave no empty folder behind
        raise


def _write_pngs(batches, folder, prefix, n, value_range, bar):
    """Write the image batches (tensors ``(b, C, H, W)`` in ``value_range``) as 8-bit PNG
    files ``<prefix><i>.png``; returns how many were written."""
    import numpy as np
    from PIL import Image

    low, high = value_range
    digits = max(4, len(str(n - 1)))
    i = 0
    for out in batches:
        x = out.detach().float().cpu().numpy()
        pixels = np.clip(np.rint((x - low) * (255.0 / (high - low))), 0, 255)
        for im in pixels.astype(np.uint8):
            name = folder / f"{prefix}{i:0{digits}d}.png"
            image = Image.fromarray(im[0] if im.shape[0] == 1 else np.ascontiguousarray(
                im.transpose(1, 2, 0)))
            # a complete file or none: an interrupted run leaves no truncated PNG
            _replace_atomically(name, lambda tmp: image.save(tmp, format="PNG"))
            i += 1
            if bar is not None:
                bar.update(1)
    return i


def _write_samples(args, folder, verbose):
    from .generator_utils import _iter_batches

    generator, latent, final, out_shape = _inspect_generator(args, verbose)
    c = out_shape[0]
    if c not in (1, 3):
        raise CLIError(f"The generator outputs {c}-channel images; only grey (1) and RGB "
                       "(3) images can be written as PNG files.")
    low, high = _pixel_range(final.activation)
    _log(verbose, f"writing {args.n_samples} images of G to {_display(os.fspath(folder))} "
                  f"as 8-bit PNG (outputs in {[low, high]} -> pixels 0..255)")
    bar = _bar(args.n_samples, "sampling G", "image", verbose)
    try:
        # the latents of sample_activations(random_state=seed): standard normal, from a
        # local generator, independent of --batch-size
        i = _write_pngs((out for _, out in _iter_batches(
            generator, args.n_samples, latent, None, None, None, final.layer,
            args.batch_size, args.device, args.seed, 0)),
            folder, args.prefix, args.n_samples, (low, high), bar)
    finally:
        if bar is not None:
            bar.close()
    _log(True, f"wrote {i} images to {_display(os.fspath(folder))} (seed {args.seed}); "
               f"fit a detector with: flipad fit --generator {args.generator} "
               + (f"--latent-shape {' '.join(map(str, latent))} " if args.latent_shape
                  else "")
               + f"--own {_display(os.fspath(folder))} ...")
    return EXIT_OK


def _check_sample_args(args):
    """Every option of ``flipad sample`` in its range, before any work (UsageError)."""
    for option, value in (("-n/--n-samples", args.n_samples),
                          ("--batch-size", args.batch_size)):
        if value < 1:
            raise UsageError(f"{option} must be a positive integer; got {value!r}.")
    if args.latent_shape and not all(s >= 1 for s in args.latent_shape):
        raise UsageError(f"--latent-shape must be positive integers; got "
                         f"{args.latent_shape!r}.")
    if os.sep in args.prefix or "/" in args.prefix:
        raise UsageError(f"--prefix must be a file name prefix, not a path; got "
                         f"{args.prefix!r}.")
    _check_device(args.device)


def _prepare_folder(path):
    """Create the output folder of ``sample`` (or take an empty one); test writing.

    A folder that already has entries is refused: ``flipad fit --own`` takes
    every image of the folder, and G's samples must not mix with other files.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"-o/--output {os.fspath(path)!r} is a file; give a folder.")
    if folder.is_dir() and any(folder.iterdir()):
        raise CLIError(f"-o/--output {os.fspath(path)!r} is not empty; give a new or empty "
                       "folder (flipad fit --own takes every image of it, so G's samples "
                       "must not mix with other files).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CLIError(f"-o/--output {os.fspath(path)!r} cannot be written: "
                       f"{exc.strerror or exc}.") from exc
    return folder


# ----------------------------------------------------------------- shadows
def cmd_shadows(args):
    """Train the open-world recipe's five shadows on ``--own`` and write their samples.

    :func:`flipad_sklearn.generators.open_world_shadows`: G with a nearest,
    bilinear and sub-pixel last upsampling, an upsample + conv and a pixel
    shuffle generator, each trained on the images of ``--own``; ``-n``
    samples of each go to ``-o`` as ``<shadow>_<i>.png``, a folder for
    ``flipad fit --others``.
    """
    verbose = not args.quiet
    _check_shadows_args(args)
    created = not Path(args.output).exists()
    folder = _prepare_folder(args.output)
    try:
        return _write_shadows(args, folder, verbose)
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _write_shadows(args, folder, verbose):
    import numpy as np
    import torch

    from .generators import open_world_shadows

    generator, latent, final, out_shape = _inspect_generator(args, verbose)
    if out_shape[0] not in (1, 3):
        raise CLIError(f"The generator outputs {out_shape[0]}-channel images; only grey (1) "
                       "and RGB (3) images can be written as PNG files.")
    value_range = _pixel_range(final.activation)
    X, ok, errors = _read_folder(args.own, out_shape, verbose, value_range)
    _report_errors(errors, "skipped")
    if len(ok) < 2:
        raise CLIError(f"--own {args.own!r}: {len(ok)} usable image(s) of the generator; "
                       "the shadows learn from them (a few thousand recommended).")
    _log(verbose, f"training 5 shadows on {len(ok)} images of G ({args.epochs} epochs, "
                  f"batch {args.batch_size}): G with a nearest, bilinear and sub-pixel last "
                  "upsampling, an upsample + conv and a pixel-shuffle generator")
    probe = torch.from_numpy(np.random.default_rng(args.seed).standard_normal(
        (4,) + latent).astype(np.float32))
    try:
        shadows = open_world_shadows(generator, X, probe, latent_shape=latent, seed=args.seed,
                                     epochs=args.epochs, batch_size=args.batch_size,
                                     verbose=int(verbose), device=args.device)
    except ValueError as exc:
        raise CLIError(f"Could not make the shadows: {exc}") from exc
    bar = _bar(5 * args.n_samples, "sampling the shadows", "image", verbose)
    written = 0
    try:
        for k, (name, shadow) in enumerate(shadows.items()):
            rng = np.random.default_rng([args.seed, 2, k])   # not the probe's latents
            z = rng.standard_normal((args.n_samples,) + latent).astype(np.float32)
            with torch.no_grad():
                batches = (shadow(torch.from_numpy(z[i:i + args.batch_size]))
                           for i in range(0, len(z), args.batch_size))
                written += _write_pngs(batches, folder, f"{name}_", args.n_samples,
                                       value_range, bar)
    finally:
        if bar is not None:
            bar.close()
    out = _display(os.fspath(folder))
    _log(True, f"wrote {written} images of 5 shadows to {out}; fit the open-world union "
               f"with: flipad fit --generator {args.generator} --detector union "
               f"--own {_display(args.own)} --others <a competitor's images> "
               f"--others {out} ...")
    return EXIT_PARTIAL if errors else EXIT_OK


def _check_shadows_args(args):
    """Every option of ``flipad shadows`` in its range, before any work (UsageError)."""
    for option, value in (("-n/--n-samples", args.n_samples), ("--epochs", args.epochs),
                          ("--batch-size", args.batch_size)):
        if value < 1:
            raise UsageError(f"{option} must be a positive integer; got {value!r}.")
    if args.latent_shape and not all(s >= 1 for s in args.latent_shape):
        raise UsageError(f"--latent-shape must be positive integers; got "
                         f"{args.latent_shape!r}.")
    if not Path(args.own).is_dir():
        raise CLIError(f"--own {args.own!r} is not an existing folder.")
    _check_device(args.device)


# --------------------------------------------------------------------- fit
def cmd_fit(args):
    import numpy as np

    from . import mean_activation, sample_activations
    from .detection.conformal import calibrate, required_validation_size
    from .pipeline import make_flipad, make_open_world_union

    verbose = not args.quiet
    _check_fit_args(args)
    inputs = [args.generator.rsplit(":", 1)[0]] + ([args.weights] if args.weights else [])
    for folder in [args.own] + list(args.others or []):
        inputs += [p for p, _ in _expand_entries([folder])]
    _refuse_overwriting(args.output, "-o/--output", [p for p in inputs if os.path.exists(p)])
    out = _prepare_output(args.output, "-o/--output")
    generator, latent, final, out_shape = _inspect_generator(args, verbose)

    value_range = _pixel_range(final.activation)
    _log(verbose, f"reading images as pixels / 255 scaled to {list(value_range)}, the "
                  f"range of the {final.activation} output")
    X_own, own_ok, errors = _read_folder(args.own, out_shape, verbose, value_range)
    others, other_ok = [], []
    for folder in args.others or []:
        X, ok, err = _read_folder(folder, out_shape, verbose, value_range)
        errors += err
        if not ok:
            _report_errors(errors, "skipped")
            raise CLIError(f"--others {folder!r}: no usable image.")
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
    # Fresh samples of G set the threshold (--own then trains in full), unless "own".
    n_val = args.validation_samples
    if n_val == "auto":
        # what the fnr needs, and at least 1000: with exactly 1/fnr - 1 the threshold is
        # the largest of them, and the share of G rejected varies by +-fnr from draw to draw
        n_val = max(required_validation_size(args.fnr), 1000)
    if args.max_fnr is not None and args.detector == "flipad":
        n_val = args.max_fnr_sizes[0]
    immunise = _immunisation(args.immunise)
    deep_sad = dict(n_epochs=args.epochs, n_networks=args.networks,
                    validation_size="auto" if n_val == "own" else 0)
    flipad_params = dict(
        alpha=args.alpha, activation_shape=final.activation_shape, positive=positive,
        datafit=args.datafit, immunise=immunise, tol=args.tol, max_iter=args.max_iter,
        inverter_params=dict(batch_size=args.batch_size), detector_params=deep_sad)
    # trained, calibrated and scored on 8-bit images in the activation's range, with
    # progress bars (the inversion's samples and Deep SAD's epochs)
    common = dict(fnr=args.fnr, random_state=args.seed, device=args.device,
                  quantize="uint8", input_range=value_range, verbose=int(verbose))
    if args.detector == "union":
        est = make_open_world_union(
            final.layer, final.activation, anchor, image_shape=out_shape, immunise=immunise,
            flipad_params=flipad_params, dctpad_params=dict(detector_params=deep_sad),
            # fresh samples set every threshold: every detector trains on all of --own
            validation_size="auto" if n_val == "own" else 0, **common)
        need = _union_calibration_size(est)
        if args.max_fnr is not None:
            n_val = "max_fnr"         # each detector draws what union.calibrate says
        elif args.validation_samples == "auto":
            n_val = max(need, 1000)
        elif n_val != "own" and n_val < need:
            raise CLIError(
                f"--validation-samples {n_val}: the smallest share of --fnr in the union "
                f"needs {need} fresh samples of G per detector (or give auto).")
    else:
        est = make_flipad(final.layer, final.activation, anchor, **flipad_params, **common)
    networks = f", {args.networks} networks" if args.networks > 1 else ""
    _log(verbose, f"inverting {len(X)} images, then training the detector "
                  f"({args.epochs} epochs{networks})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
        if n_val != "own":
            what = (f"{'/'.join(map(str, args.max_fnr_sizes))} images of G (what keeps the "
                    f"rejected share below --max-fnr {args.max_fnr})" if n_val == "max_fnr"
                    else f"{n_val} images of G")
            _log(verbose, f"sampling {what} for the threshold (fnr={args.fnr})"
                 + (" of each detector" if args.detector == "union" else ""))
            draws = np.random.default_rng([args.seed, 1])   # not the anchor's samples

            def sample_g(n):
                _, X_val = sample_activations(
                    generator, n, latent, layer=final.layer, batch_size=args.batch_size,
                    device=args.device, random_state=int(draws.integers(2**31)))
                # the pipelines round them to 8 bits, as if saved to files like --own
                return X_val.astype(np.float32)
            each_kind = args.guarantee == "each-kind"
            if n_val == "max_fnr":
                # the sizes of _check_fit_args: union_calibration_size(shares, --max-fnr)
                est.calibrate(sample_g, n_samples=dict(
                    zip([name for name, _ in est.estimators_], args.max_fnr_sizes)),
                    each_kind=each_kind)
            elif args.detector == "union":
                est.calibrate(sample_g, n_samples=n_val, each_kind=each_kind)
            else:
                calibrate(est, sample_g(n_val), each_kind=each_kind)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    # saved silent, as in Python: the fitted pipelines and, in a union, their templates
    members = ([est] if args.detector == "flipad"
               else [e for _, e in est.estimators_] + [e for _, e in est.estimators])
    for member in members:
        member.set_params(**{f"{name}__verbose": 0 for name, step in member.steps
                             if "verbose" in step.get_params(deep=False)})
    _save_detector(est, out)
    per_kind = _PER_KIND if args.guarantee == "each-kind" else ""
    if args.detector == "union":
        lo, hi = est.fnr_interval_
        sizes = ", ".join(f"{name} {e[-1].validation_scores_.size}"
                          for name, e in est.estimators_)
        _log(True, f"saved {out} (FLIPAD, DCTPAD and a pixel guard, each at its share of "
                   f"fnr={args.fnr}; validation samples of G: {sizes}; these thresholds "
                   f"reject {100 * lo:.2g}-{100 * hi:.2g} % of G's images, 90 % interval"
                   f"{per_kind})")
        return EXIT_PARTIAL if errors else EXIT_OK
    det = est[-1]
    lo, hi = getattr(det, "fnr_interval_", (float("nan"),) * 2)
    _log(True, f"saved {out} (threshold {det.threshold_:.4g} at fnr={args.fnr}, "
               f"{det.validation_scores_.size} validation samples of G: this threshold "
               f"rejects {100 * lo:.2g}-{100 * hi:.2g} % of G's images, 90 % interval"
               f"{per_kind})")
    return EXIT_PARTIAL if errors else EXIT_OK


#: --guarantee each-kind: the interval is of the lowest score over the kinds, so a
#: bound on each kind's share rejected, not its value
_PER_KIND = "; under each kind of the mixture at most that"


def _union_calibration_size(union):
    """Fresh samples of G the smallest share of an unfitted union's fnr needs."""
    from .detection.conformal import required_validation_size

    shares = union.weights.values()
    return required_validation_size(union.fnr * min(shares) / sum(shares))


def _save_detector(pipe, out):
    """Secure format, unless the name asks for joblib (then warn: trusted use only)."""
    if out.suffix.lower() in PICKLE_EXTENSIONS:
        import joblib

        print(f"warning: {os.fspath(out)!r} is saved with joblib, a pickle: loading it can "
              "run arbitrary code, so share it only with people who trust you (and "
              "`flipad score` needs --trust-pickle for it). Name the file *.flipad for "
              "the secure format.", file=sys.stderr)
        _replace_atomically(out, lambda tmp: joblib.dump(pipe, tmp))
        return
    from . import persistence

    try:
        persistence.save(pipe, out)
    except TypeError as exc:
        raise CLIError(f"Could not save the detector securely: {exc} (name the output "
                       "*.joblib to save it with joblib, for trusted use)") from exc


def _check_fit_args(args):
    """Every option of ``flipad fit`` in its range, before any work (UsageError)."""
    def need(ok, option, value, what):
        if not ok:
            raise UsageError(f"{option} must be {what}; got {value!r}.")

    for option, value in (("--alpha", args.alpha), ("--tol", args.tol)):
        if value is not None:
            need(math.isfinite(value) and value >= 0, option, value, "a finite number >= 0")
    need(math.isfinite(args.fnr) and 0 <= args.fnr < 1, "--fnr", args.fnr,
         "in [0, 1) (the tolerated share of G's images rejected, e.g. 0.005)")
    if args.guarantee == "each-kind" and args.immunise != "published":
        raise UsageError("--guarantee each-kind sets the threshold under each kind of a "
                         "mixture of perturbations: it needs --immunise published.")
    if args.guarantee == "each-kind" and args.validation_samples == "own":
        raise UsageError("--guarantee each-kind scores fresh samples of G after each "
                         "perturbation: give --validation-samples N or auto, not own.")
    for option, value in (("--epochs", args.epochs), ("--networks", args.networks),
                          ("--max-iter", args.max_iter),
                          ("--anchor-samples", args.anchor_samples),
                          ("--batch-size", args.batch_size)):
        need(value >= 1, option, value, "a positive integer")
    if args.latent_shape:
        need(all(s >= 1 for s in args.latent_shape), "--latent-shape",
             args.latent_shape, "positive integers")
    if args.max_fnr is not None:
        need(math.isfinite(args.max_fnr) and 0 < args.fnr < args.max_fnr < 1, "--max-fnr",
             args.max_fnr, f"in (--fnr, 1) = ({args.fnr}, 1), with --fnr > 0")
        if args.validation_samples != "auto":
            raise UsageError(f"--max-fnr sets how many fresh samples of G set the threshold; "
                             f"give it or --validation-samples "
                             f"{args.validation_samples}, not both.")
        # the samples it needs, known before any work (a union's too: not after training)
        from .detection.conformal import calibration_size, union_calibration_size
        from .pipeline import OPEN_WORLD_SHARES

        try:
            if args.detector == "union":
                total = sum(OPEN_WORLD_SHARES.values())
                args.max_fnr_sizes = union_calibration_size(
                    [args.fnr * w / total for w in OPEN_WORLD_SHARES.values()], args.max_fnr)
            else:
                args.max_fnr_sizes = [calibration_size(args.fnr, args.max_fnr)]
        except ValueError as exc:
            raise UsageError(f"--max-fnr {args.max_fnr} at --fnr {args.fnr}: {exc} "
                             "Give a larger --max-fnr.") from exc
    _check_device(args.device)
    for option, folder in [("--own", args.own)] + [("--others", f) for f in args.others or []]:
        if not Path(folder).is_dir():
            raise CLIError(f"{option} {folder!r} is not an existing folder.")


def _check_device(device):
    from ._device import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None


def _prepare_output(path, option):
    """Create the folder of ``path`` and check that a file can be written there.

    Returns ``path`` as a ``Path``; raises CLIError before any work otherwise.
    """
    out = Path(path)
    if out.is_dir():
        raise CLIError(f"{option} {os.fspath(path)!r} is a folder; give a file name.")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a real write: os.access says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=folder):
            pass
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(f"{os.fspath(out)!r} is not writable")
    except OSError as exc:
        raise CLIError(f"{option} {os.fspath(path)!r} cannot be written: "
                       f"{exc.strerror or exc}.") from exc
    return out


def _replace_atomically(path, write):
    """``write(tmp)`` a temporary file next to ``path``, then move it onto ``path``.

    An interrupted or failed write leaves ``path`` as it was (no truncated file).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        from .persistence import file_mode

        os.chmod(tmp, file_mode(path))     # mkstemp makes 0600: as open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _validation_samples(text):
    if text in ("auto", "own"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'own' or a positive integer, "
                                         f"got {text!r}")
    return n


def _immunise(text):
    """--immunise: 'none', 'published' or 'jpeg:Q' (Q 1..100)."""
    if text in ("none", "published"):
        return text
    kind, sep, quality = text.partition(":")
    # ASCII digits only (str.isdigit accepts other scripts' digits and superscripts)
    if kind == "jpeg" and re.fullmatch(r"[0-9]{1,3}", quality) and 1 <= int(quality) <= 100:
        return f"jpeg:{int(quality)}"
    raise argparse.ArgumentTypeError(f"expected none, published or jpeg:Q with Q a JPEG "
                                     f"quality in 1..100, got {text!r}")


def _immunisation(value):
    """What make_flipad / make_open_world_union take for --immunise's value."""
    if value == "none":
        return None
    if value.startswith("jpeg:"):
        from .perturbations import JPEGCompression

        return JPEGCompression(quality=int(value.partition(":")[2]))
    return value


def _log(enabled, msg):
    if enabled:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------- score
def _load_detector(path, trust_pickle=False, max_memory=None):
    """The detector of the file ``path``: a pipeline written by ``flipad fit``, another
    image detector's pipeline (e.g. ``make_dctpad``'s, saved from Python) or a fitted
    :class:`~flipad_sklearn.ConformalUnion` of detectors."""
    from sklearn.pipeline import Pipeline

    from . import persistence
    from .detection.conformal import _unwrap
    from .detection.union import ConformalUnion
    from .verdicts import image_shape

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
            max_bytes = None if max_memory is None else int(max_memory * 2 ** 30)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", persistence.FileVersionWarning)
                pipe = persistence.load(path, max_bytes=max_bytes)
            for w in caught:
                if issubclass(w.category, persistence.FileVersionWarning):
                    _err(f"warning: {' '.join(str(w.message).split())}")
    except CLIError:
        raise
    except persistence.UnsafeFileError as exc:
        # the message names the file and what is wrong with it
        raise CLIError(f"Could not load the detector: {exc}") from exc
    except Exception as exc:
        raise CLIError(f"Could not load the detector {_display(name)!r}: "
                       f"{type(exc).__name__}: {exc}") from exc
    if isinstance(pipe, ConformalUnion):
        members = getattr(pipe, "estimators_", None)
        if not members:
            raise CLIError(f"{os.fspath(path)!r} holds a ConformalUnion that is not fitted.")
        for name, member in members:
            if not hasattr(_unwrap(member)[0], "pvalues"):
                raise CLIError(f"{os.fspath(path)!r}: the union's detector {name!r} "
                               f"({type(member).__name__}) gives no conformal p-values.")
        return pipe
    if not isinstance(pipe, Pipeline) or not hasattr(pipe[-1], "pvalues"):
        raise CLIError(f"{os.fspath(path)!r} is not a detector written by `flipad fit` or a "
                       "pipeline or ConformalUnion of the package's conformal detectors "
                       "saved with flipad_sklearn.persistence.save.")
    try:
        image_shape(pipe)
    except ValueError as exc:
        raise CLIError(f"{os.fspath(path)!r}: {exc}") from None
    return pipe


def _scoring_steps(detector):
    """(first step, last step) of every estimator that scores with ``detector``
    (:func:`~flipad_sklearn.verdicts.scoring_estimators`; bare detectors: (it, it))."""
    from .verdicts import scoring_estimators

    return [(e.steps[0][1], e.steps[-1][1]) if getattr(e, "steps", None) else (e, e)
            for e in scoring_estimators(detector)]


def _set_scoring_options(detector, device, batch_size):
    """``--device`` and ``--batch-size`` on every inverter and Deep SAD network of
    ``detector`` (each of a union's detectors that has one)."""
    from .inversion import FinalLayerInverter

    for first, last in _scoring_steps(detector):
        if isinstance(first, FinalLayerInverter):
            if device is not None:
                first.set_params(device=device)
            if batch_size is not None:
                first.set_params(batch_size=batch_size)
        network = getattr(last, "network_", None)
        if device is not None and network is not None:
            for net in [network, *getattr(last, "extra_networks_", [])]:
                net.to(_torch_device(device))


def _check_stored_device(pipe, path):
    """Before any image is read: the device the detector was fitted on exists here.

    A detector fitted with ``device="cuda"`` keeps that setting; on a machine
    without CUDA the command says to pass ``--device cpu`` instead of failing
    after the images are read.
    """
    from ._device import resolve_device

    for est in (e for pair in _scoring_steps(pipe) for e in pair):
        device = getattr(est, "device", None)
        if device is None:
            continue
        try:
            resolve_device(device)
        except (TypeError, ValueError):
            raise CLIError(
                f"The detector {_display(os.fspath(path))!r} was fitted with "
                f"device={str(device)!r}, which this machine does not have; re-run with "
                "--device cpu (or --device auto).") from None


def _check_max_memory(value):
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"--max-memory must be a positive number of GiB; got {value}.")


def _output_plan(args):
    """``(file, format, stdout_format)`` of ``score``/``attribute``'s outputs.

    ``--csv FILE`` is ``-o FILE --format csv``; ``-o FILE`` is written in
    ``--format`` (csv by default); without a file, ``--format`` prints that
    format on stdout instead of the table.
    """
    if args.csv and args.output:
        raise UsageError("give --csv FILE or -o/--output FILE, not both.")
    if args.csv and args.format == "json":
        raise UsageError("--csv writes CSV; for JSON use -o FILE --format json.")
    file = args.csv or args.output
    if file:
        return file, args.format or "csv", None
    return None, None, args.format


def _write_table(table, path, fmt):
    """The table to ``path`` in ``fmt`` (atomically: the old file stays on failure)."""
    write = table.to_json if fmt == "json" else table.to_csv
    _replace_atomically(path, write)


def _emit(table, out_path, out_format, stdout_format, print_table):
    """Write the file first (a closed terminal cannot lose it), then stdout."""
    if out_path is not None:
        _write_table(table, out_path, out_format)
    if stdout_format is not None:
        text = table.to_json() if stdout_format == "json" else table.to_csv()
        for line in text.rstrip("\n").splitlines():
            _out(line)
    else:
        print_table(table)


def cmd_score(args):
    from .verdicts import check_file_channel, table_from_read

    _check_max_memory(args.max_memory)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer; got {args.batch_size}.")
    if args.device is not None:
        _check_device(args.device)
    out_file, out_format, stdout_format = _output_plan(args)
    entries = _expand_entries(args.paths)
    if out_file:
        option = "--csv" if args.csv else "-o/--output"
        _refuse_overwriting(out_file, option, [args.detector] + list(args.paths)
                            + [p for p, _ in entries])
    out_path = _prepare_output(out_file, "--csv" if args.csv else "-o/--output") \
        if out_file else None
    # a pipeline written by `flipad fit`, or a ConformalUnion (e.g. FLIPAD and a pixel guard)
    pipe = _load_detector(args.detector, args.trust_pickle, args.max_memory)
    verbose = not args.quiet
    if args.device is None:
        _check_stored_device(pipe, args.detector)
    _set_scoring_options(pipe, args.device, args.batch_size)
    shape = _image_shape(pipe)
    files = [p for p, r in entries if r is None]
    X, ok, read_errors = _read_images(files, shape, verbose, _saved_range(pipe))
    with _warnings_on_stderr():
        # one rule with the Python side: flipad_sklearn.verdicts.verdict_table
        check_file_channel(pipe, ok)
        table = table_from_read(pipe, X, (ok, read_errors), entries,
                                detector_path=os.path.abspath(args.detector),
                                verbose=int(verbose))
    _emit(table, out_path, out_format, stdout_format, _print_score_table)
    _report_errors([(r["path"], r["status"]) for r in table if r["status"] != "ok"],
                   "not scored")
    if not ok:
        raise CLIError("No file could be scored." if files or table.n_skipped else
                       "No files given.")
    return EXIT_PARTIAL if table.n_skipped else EXIT_OK


def _print_score_table(table):
    rows = [r for r in table if r["status"] == "ok"]
    if not rows:
        return
    # a union's table: each detector's own p-value after the union's
    members = [c for c in table.columns if c.startswith("p_")]
    width = max(len(_display(r["path"])) for r in rows)
    _out(f"{'path':<{width}}  {'score':>11}  {'decision':<8}  {'p-value':>8}"
         + "".join(f"  {_display(c):>10}" for c in members))
    for r in rows:
        _out(f"{_display(r['path']):<{width}}  {r['score']:>11.4g}  "
             f"{r['decision']:<8}  {r['pvalue']:>8.4f}"
             + "".join(f"  {r[c]:>10.4f}" for c in members))


# --------------------------------------------------------------- attribute
def cmd_attribute(args):
    """Prediction sets over several owned models (one detector file per model)."""
    from .detection.multi import OwnedModelsAttributor
    from .verdicts import check_file_channel, table_from_read

    _check_max_memory(args.max_memory)
    if args.alpha is not None and not (math.isfinite(args.alpha) and 0 <= args.alpha < 1):
        raise UsageError(f"--alpha must be in [0, 1), got {args.alpha}.")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer; got {args.batch_size}.")
    if args.device is not None:
        _check_device(args.device)
    out_file, out_format, stdout_format = _output_plan(args)
    specs = [(spec,) + spec.partition("=") for spec in args.model]
    entries = _expand_entries(args.paths)
    option = "--csv" if args.csv else "-o/--output"
    if out_file:
        _refuse_overwriting(out_file, option,
                            [path if sep else spec for spec, _, sep, path in specs]
                            + list(args.paths) + [p for p, _ in entries])
    out_path = _prepare_output(out_file, option) if out_file else None
    models, paths = {}, {}
    for spec, name, sep, path in specs:
        if not sep:
            name, path = Path(spec).stem, spec
        if name in models:
            raise CLIError(f"--model: the name {name!r} is given twice (use NAME=FILE).")
        # a pipeline written by `flipad fit` or a union (`flipad fit --detector union`)
        models[name] = _load_detector(path, args.trust_pickle, args.max_memory)
        paths[name] = os.path.abspath(path)
        if args.device is None:
            _check_stored_device(models[name], path)
        _set_scoring_options(models[name], args.device, args.batch_size)
    shapes = {n: _image_shape(p) for n, p in models.items()}
    if len(set(shapes.values())) > 1:
        raise CLIError(f"The models make images of different shapes: {shapes}.")
    try:
        attr = OwnedModelsAttributor.from_fitted(models)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    verbose = not args.quiet
    files = [p for p, r in entries if r is None]
    ranges = {n: _saved_range(p) for n, p in models.items()}
    if len(set(ranges.values())) > 1:
        raise CLIError(f"The models read pixels into different ranges: {ranges}.")
    X, ok, read_errors = _read_images(files, next(iter(shapes.values())), verbose,
                                      next(iter(ranges.values())))
    if ok:
        _log(verbose, f"attributing {len(ok)} image(s) with {len(models)} models "
                      f"({', '.join(models)}): one inversion per model")
    with _warnings_on_stderr():
        # one rule with the Python side: flipad_sklearn.verdicts.verdict_table;
        # each model's inversion shows its progress bar unless -q
        check_file_channel(attr, ok)
        table = table_from_read(attr, X, (ok, read_errors), entries, alpha=args.alpha,
                                detector_path=paths, verbose=int(verbose))
    _emit(table, out_path, out_format, stdout_format,
          lambda t: _print_attribute_table(t, list(models)))
    _report_errors([(r["path"], r["status"]) for r in table if r["status"] != "ok"],
                   "not attributed")
    if not ok:
        raise CLIError("No file could be attributed." if files or table.n_skipped else
                       "No files given.")
    return EXIT_PARTIAL if table.n_skipped else EXIT_OK


def _print_attribute_table(table, names):
    rows = [r for r in table if r["status"] == "ok"]
    if not rows:
        return
    width = max(len(_display(r["path"])) for r in rows)
    _out(f"{'path':<{width}}  {'prediction':<12}  {'set':<20}  "
         + "  ".join(f"{'p_' + n:>10}" for n in names))
    for r in rows:
        _out(f"{_display(r['path']):<{width}}  {r['prediction']:<12}  "
             f"{r['set']:<20}  "
             + "  ".join(f"{r['p_' + n]:>10.4f}" for n in names))


def _image_shape(detector):
    """The ``(C, H, W)`` of the images ``detector`` reads (a union: its detectors' one)."""
    from .verdicts import image_shape

    try:
        return image_shape(detector)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _saved_range(pipe):
    """The pixel range a detector was fitted with (its ``input_range``)."""
    from .verdicts import saved_range

    try:
        return saved_range(pipe)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


class _warnings_on_stderr(warnings.catch_warnings):
    """Print every warning once as ``warning: ...`` on stderr, except convergence ones.

    An unconverged inversion still defines a score (its certificate is in
    ``duality_gap_``); every other warning (inputs out of range, an input
    contract not met) says the verdict may be wrong and must be seen.
    """

    def __init__(self):
        super().__init__(record=True)

    def __enter__(self):
        self._caught = super().__enter__()
        warnings.simplefilter("always")
        return self._caught

    def __exit__(self, *exc):
        from sklearn.exceptions import ConvergenceWarning

        out = super().__exit__(*exc)
        seen = set()
        for w in self._caught:
            msg = " ".join(str(w.message).split())
            if issubclass(w.category, ConvergenceWarning) or msg in seen:
                continue
            seen.add(msg)
            print(f"warning: {msg}", file=sys.stderr)
        return out


def _torch_device(device):
    from ._device import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------ parser
_MAX_MEMORY_HELP = ("memory a detector file may make this command use, in GiB: its "
                    "arrays and the inversion of one batch, estimated from the file "
                    "before anything is allocated (default: 2; a file that needs more "
                    "is refused; raise it for large generators you trust)")


def build_parser():
    """The argparse parser of the ``flipad`` command."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="flipad",
        description="Was this image made by my generator? FLIPAD attribution "
                    "(final-layer inversion + Deep SAD) from the command line.",
        epilog="Exit codes: 0 success; 1 error (nothing done); 2 usage error "
               "(including option values out of range); "
               "3 some files skipped (listed with the reason), the rest processed; "
               "130 interrupted. "
               "flipad score and flipad attribute read the secure detector format "
               "(no pickle); a pickle/joblib detector needs --trust-pickle.",
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
    # the inverter's defaults (a test keeps them equal; importing torch here
    # would slow every command's start)
    fit.add_argument("--tol", type=float, default=None,
                     help="also require this relative duality gap of each sample's "
                          "inversion (default: none; every sample stops once its "
                          "certified feature error is at most 5e-4)")
    fit.add_argument("--max-iter", type=int, default=1000,
                     help="inversion iterations per sample at most (1000)")
    fit.add_argument("--datafit", choices=("preactivation", "output"), default="preactivation",
                     help="the inversion's data term: preactivation (FLIPAD's) or output "
                          "(weighted by the activation's slope: steadier under JPEG and "
                          "noise on saturated pixels, less sharp on clean images of "
                          "heavily saturated generators; see the user guide)")
    fit.add_argument("--immunise", type=_immunise, default="none",
                     metavar="{none,published,jpeg:Q}",
                     help="jpeg:Q: train and set the threshold on G's images (and the "
                          "others') saved as JPEG at quality Q, for scoring JPEG files of "
                          "that quality (flipad score reads each file's quality and warns "
                          "when it differs; see the user guide, 'Open world', 'Files'); "
                          "published: train and set the threshold on images each passed "
                          "through a random perturbation (none, JPEG q70-95, resize "
                          "0.9-1.1, crop 0.9-1.0), so that G's recompressed or resized "
                          "images keep the fnr guarantee; with shadows or a competitor "
                          "among --others it keeps the clean accuracy, with real images "
                          "alone it costs some (see the user guide, 'Images after "
                          "publication'); none: clean images (the default)")
    fit.add_argument("--guarantee", choices=("mixture", "each-kind"), default="mixture",
                     help="with --immunise published, where the fnr holds: mixture, on "
                          "average over the perturbations (one kind, JPEG say, may be "
                          "rejected more often); each-kind, under each of them (none, "
                          "JPEG, resize, crop): every fresh sample of G is scored after "
                          "each kind and the threshold set on its lowest score (four "
                          "times the calibration's inversions, a lower threshold; a "
                          "union's pixel guard, not immunised, keeps its threshold on "
                          "G's images as generated; see the user guide, 'Open world', "
                          "'A guarantee per kind') (mixture)")
    fit.add_argument("--detector", choices=("flipad", "union"), default="flipad",
                     help="flipad: the FLIPAD pipeline (make_flipad); union: FLIPAD, DCTPAD "
                          "(Deep SAD on the image's spectrum) and a pixel guard (a Gaussian "
                          "of G's downsampled pixels) in one ConformalUnion "
                          "(make_open_world_union), each at a share of --fnr: an image is "
                          "G's only when all three accept. The union also rejects images "
                          "far from all of G's and generators whose upsampling differs from "
                          "G's, which FLIPAD alone can accept (see the user guide, 'Open "
                          "world'); --immunise then applies to FLIPAD and DCTPAD: "
                          "published keeps G's JPEG q70-95 images accepted, and the pixel "
                          "guard alone then rejects other image domains; jpeg:Q matches "
                          "JPEG files of quality Q (see 'Open world', 'At the paper's "
                          "scale' and 'Files') (flipad)")
    fit.add_argument("--positive", choices=("auto", "yes", "no"), default="auto",
                     help="non-negative activations; auto: yes when the generator's "
                          "penultimate activations are (a ReLU)")
    fit.add_argument("--anchor-samples", type=int, default=2000,
                     help="generator samples averaged for the anchor (2000)")
    fit.add_argument("--fnr", type=float, default=0.005,
                     help="tolerated share of G's images rejected (0.005)")
    fit.add_argument("--epochs", type=int, default=50, help="Deep SAD epochs (50)")
    fit.add_argument("--networks", type=int, default=1, metavar="K",
                     help="Deep SAD networks per detector, each from its own draw, their "
                          "scaled distances averaged: verdicts that depend less on the "
                          "training's draw, at K times the training time (1)")
    fit.add_argument("--validation-samples", type=_validation_samples, default="auto",
                     metavar="N|auto|own",
                     help="fresh samples of the generator that set the threshold (as "
                          "8-bit images, like --own); auto: 1000, or more if --fnr needs "
                          "it (199 at 0.005, 1999 at 0.0005); own: hold out images of "
                          "--own instead (auto)")
    fit.add_argument("--max-fnr", type=float, default=None, metavar="F",
                     help="instead of --validation-samples: draw as many fresh samples of "
                          "G as keep the saved threshold(s) from rejecting more than F of "
                          "G's images in 19 calibrations of 20 (e.g. 0.01 at --fnr 0.005: "
                          "628 for flipad, 2460 / 4102 / 6155 per detector for a union)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (0)")
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    fit.add_argument("--batch-size", type=int, default=256,
                     help="samples per batch for sampling and inversion (256)")
    fit.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="where to save the detector: the secure format (e.g. "
                          "detector.flipad), or joblib if FILE ends in .joblib/.pkl/.pickle "
                          "(a pickle: for trusted use only)")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(func=cmd_fit)

    sample = sub.add_parser(
        "sample", help="write samples of a generator as PNG files (for fit --own)",
        description="Draw N samples of the generator and write them as 8-bit PNG files "
                    "into a new or empty folder: the outputs are scaled to pixels as "
                    "`flipad fit` and `flipad score` read them back (tanh: (x + 1) * 127.5, "
                    "sigmoid: x * 255), so the folder is what `flipad fit --own` takes.")
    sample.add_argument("--generator", required=True, metavar="MODULE:ATTR",
                        help="the generator, as for `flipad fit` (e.g. mygan.py:G)")
    sample.add_argument("--weights", metavar="FILE",
                        help="state dict to load into the generator (torch.load with "
                             "weights_only=True)")
    sample.add_argument("--latent-shape", type=int, nargs="+", metavar="N",
                        help="shape of one latent code (default: the generator's "
                             "latent_shape attribute)")
    sample.add_argument("-n", "--n-samples", type=int, required=True, metavar="N",
                        help="number of images to write")
    sample.add_argument("--seed", type=int, default=0,
                        help="random seed of the latent codes (0)")
    sample.add_argument("--prefix", default="", help="file name prefix ('': 0000.png, ...)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    sample.add_argument("--batch-size", type=int, default=256,
                        help="samples per batch (256)")
    sample.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder to write the PNG files to (created; must be empty)")
    sample.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(func=cmd_sample)

    shadows = sub.add_parser(
        "shadows", help="train the open-world shadows of a generator on its images and "
                        "write their samples (for fit --others)",
        description="Train five shadows on the images of --own (flipad_sklearn.generators."
                    "open_world_shadows): the generator with a nearest, bilinear and "
                    "sub-pixel last upsampling (in its final layer, or before a final "
                    "layer at full resolution), an upsample + conv and a pixel-shuffle "
                    "generator; write N samples of each as 8-bit PNG files "
                    "<shadow>_<i>.png into a new or empty folder, to give to `flipad fit "
                    "--detector union --others`.")
    shadows.add_argument("--generator", required=True, metavar="MODULE:ATTR",
                         help="the generator, as for `flipad fit` (e.g. mygan.py:G)")
    shadows.add_argument("--weights", metavar="FILE",
                         help="state dict to load into the generator (torch.load with "
                              "weights_only=True)")
    shadows.add_argument("--latent-shape", type=int, nargs="+", metavar="N",
                         help="shape of one latent code (default: the generator's "
                              "latent_shape attribute)")
    shadows.add_argument("--own", required=True, metavar="DIR",
                         help="images of the generator the shadows learn from (e.g. "
                              "`flipad sample -n 2000`)")
    shadows.add_argument("-n", "--n-samples", type=int, default=100, metavar="N",
                         help="images to write per shadow (100)")
    shadows.add_argument("--epochs", type=int, default=6,
                         help="passes over --own per shadow (6)")
    shadows.add_argument("--batch-size", type=int, default=32,
                         help="training and sampling batch (32)")
    shadows.add_argument("--seed", type=int, default=0,
                         help="random seed of the shadows and their latents (0)")
    shadows.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    shadows.add_argument("-o", "--output", required=True, metavar="DIR",
                         help="folder to write the PNG files to (created; must be empty)")
    shadows.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    shadows.set_defaults(func=cmd_shadows)

    score = sub.add_parser(
        "score", help="score image files with a fitted detector",
        description="Print for each file its score (negative: not made by G), the "
                    "decision and the conformal p-value of 'made by G'.")
    score.add_argument("detector", help="detector file written by `flipad fit`, or a "
                                        "ConformalUnion or an image detector's pipeline "
                                        "(make_dctpad, make_pixel_guard) saved with "
                                        "flipad_sklearn.persistence.save (the secure "
                                        "format; never runs code)")
    score.add_argument("paths", nargs="+", metavar="PATH",
                       help="image files or folders of images")
    score.add_argument("--csv", metavar="FILE",
                       help="also write path, score, verdict, decision, pvalue (a "
                            "union's: also p_NAME per detector), status to "
                            "a CSV (the same as -o FILE --format csv)")
    score.add_argument("-o", "--output", metavar="FILE",
                       help="also write the verdicts to FILE in --format (csv by default)")
    score.add_argument("--format", choices=("csv", "json"), default=None,
                       help="format of -o FILE (default csv); without a file, print this "
                            "format on stdout instead of the table. json: the detector's "
                            "metadata (fnr, threshold, version, file) and one object per "
                            "file")
    score.add_argument("--device", default=None, help="auto, cpu or cuda (default: cpu "
                                                      "unless the detector says otherwise)")
    score.add_argument("--batch-size", type=int, default=None,
                       help="samples per inversion batch")
    score.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                       help=_MAX_MEMORY_HELP)
    score.add_argument("--trust-pickle", action="store_true",
                       help="also load a pickle/joblib detector file; loading a pickle "
                            "can run arbitrary code: only for files you trust")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    score.set_defaults(func=cmd_score)

    attribute = sub.add_parser(
        "attribute", help="which of my models made these images? (prediction sets)",
        description="With one `flipad fit` detector per owned model (FLIPAD, or the "
                    "open-world union of `fit --detector union`): print for each file "
                    "the set of models that may have made it ({} = none of mine; each "
                    "model's own images are in its set at rate >= 1 - fnr), the most "
                    "likely one and each model's conformal p-value (a union's: its "
                    "Bonferroni p-value).")
    attribute.add_argument("--model", action="append", required=True,
                           metavar="NAME=FILE",
                           help="an owned model's detector written by `flipad fit` (the "
                                "secure format; a pickle/joblib file needs --trust-pickle); "
                                "repeat per model. NAME defaults to the file's stem")
    attribute.add_argument("paths", nargs="+", metavar="PATH",
                           help="image files or folders of images")
    attribute.add_argument("--alpha", type=float, default=None,
                           help="keep the models whose p-value exceeds ALPHA (default: "
                                "each detector's own threshold, at its fnr)")
    attribute.add_argument("--csv", metavar="FILE",
                           help="also write path, prediction, set, p_<model>..., status "
                                "(the same as -o FILE --format csv)")
    attribute.add_argument("-o", "--output", metavar="FILE",
                           help="also write the sets to FILE in --format (csv by default)")
    attribute.add_argument("--format", choices=("csv", "json"), default=None,
                           help="format of -o FILE (default csv); without a file, print "
                                "this format on stdout instead of the table")
    attribute.add_argument("--device", default=None,
                           help="auto, cpu or cuda (default: what each detector was "
                                "fitted with)")
    attribute.add_argument("--batch-size", type=int, default=None,
                           help="samples per inversion batch")
    attribute.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                           help=_MAX_MEMORY_HELP)
    attribute.add_argument("--trust-pickle", action="store_true",
                           help="also load pickle/joblib detector files; loading a pickle "
                                "can run arbitrary code: only for files you trust")
    attribute.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    attribute.set_defaults(func=cmd_attribute)
    for command in (fit, sample, shadows, score, attribute):
        command.add_argument(
            "--threads", type=_threads, default="auto", metavar="N",
            help="torch threads on CPU: a positive integer, or 'auto' (the default): "
                 "$OMP_NUM_THREADS when set, else the cores not busy with other "
                 "work (usable cores minus the 1-minute load average, at least 1); "
                 "more threads than free cores slows the inversion many times over")
    return parser


def _threads(text):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, "
                                         f"got {text!r}")
    return n


def auto_threads():
    """Torch threads for ``--threads auto``: as many as there are free cores.

    ``$OMP_NUM_THREADS`` when it is set (the user's choice); otherwise the
    cores this process may run on minus the 1-minute load average (rounded),
    at least 1.  torch's own default, one thread per core, ignores other work
    on the machine, and torch's threads wait for each other: on a 2-core
    machine shared with another job, 64 inversions took 157 s on two threads
    against 18 s on one (docs/user_guide/devices.rst).

    Returns
    -------
    n_threads : int
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):       # not on every platform
        busy = 0.0
    return int(max(1, min(cores, math.floor(cores - busy + 0.5))))


def _set_threads(threads):
    """Apply ``--threads`` (imports torch: only once a command runs)."""
    import torch

    torch.set_num_threads(auto_threads() if threads == "auto" else threads)


def main(argv=None):
    """Run the ``flipad`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_threads(args.threads)
        return args.func(args)
    except UsageError as exc:
        _err(f"flipad {args.command}: error: {_display(str(exc))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        # files are written atomically: an interrupted run leaves the old ones
        _err(f"flipad {args.command}: interrupted (" + (
            "the files written so far are complete" if args.command == "sample" else
            "no output file was changed") + ")")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`) outside the table: nothing left to say
        _out("")
        return EXIT_ERROR
    except (CLIError, ValueError, OSError, FloatingPointError) as exc:
        # one line, no traceback: what is wrong is in the message
        msg = str(exc) if isinstance(exc, CLIError) else f"{type(exc).__name__}: {exc}"
        _err(f"flipad {args.command}: error: {_display(' '.join(msg.split()))}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
