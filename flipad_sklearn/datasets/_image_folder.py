"""Load a folder of a user's own images (png / jpg) as an array in [-1, 1].

One image-loading rule for this loader and the ``flipad`` command line tool:
an image of another size than asked for is not loaded (it is reported with
both sizes, :func:`mis_sized_reason`), unless resizing is asked for
explicitly (``resize=True`` here; the command line tool never resizes).
A resized image is not what the generator made: FLIPAD's inversion of it
says little about its source, so resizing is the user's decision.
"""

import os
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _check_size(image_size):
    if isinstance(image_size, Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(image_size)
        except TypeError:
            size = ()
        if len(size) != 2 or not all(
                isinstance(s, Integral) and not isinstance(s, bool) for s in size):
            raise ValueError(
                f"image_size must be an int or a pair (height, width) of ints, "
                f"got {image_size!r}.")
        size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return size


def _not_a_file_reason(entry, recursive):
    """Why a folder entry is not read as a file: None for a regular file, "" to skip."""
    if entry.is_symlink() and not entry.exists():
        try:
            target = os.readlink(entry)
        except OSError:
            target = "?"
        return f"skipped: broken symbolic link (to {target!r})"
    if entry.is_dir():
        if not recursive:
            return "skipped: sub-folder (pass recursive=True to read sub-folders)"
        if entry.is_symlink():
            return "skipped: symbolic link to a folder (not followed)"
        return ""
    if not entry.is_file():
        return "skipped: not a regular file"
    return None


def mis_sized_reason(actual, expected, hint=""):
    """The reason a ``(width, height)`` image is not loaded when ``expected`` is asked for."""
    return (f"mis-sized: {actual[0]}x{actual[1]} pixels (width x height), "
            f"{expected[0]}x{expected[1]} expected{hint}")


class _MisSized(ValueError):
    """An image of another size than asked for (and no resizing asked for)."""


class _UnsupportedImage(ValueError):
    """An image Pillow reads but whose values have no defined grey range."""


def _to_array(img, mode, size, resample):
    """``(C, H, W)`` float64 values in [0, 255] of a loaded Pillow image.

    8-bit images (and palette, RGBA, CMYK, ...) go through ``convert(mode)``;
    16-bit grey images (``I;16*``, or ``I`` within 0..65535) are scaled by
    1/257 in floating point: ``convert("L")`` would clip them at 255.
    """
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        raw = np.asarray(img).astype(np.float64)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise _UnsupportedImage(
                f"32-bit integer image (mode {img.mode}) outside the 16-bit range")
        grey = Image.fromarray((raw / 257.0).astype(np.float32))  # mode "F"
        if grey.size != size:
            grey = grey.resize(size, resample=resample)
        arr = np.clip(np.asarray(grey, dtype=np.float64), 0.0, 255.0)[None]
        return np.repeat(arr, 3, axis=0) if mode == "RGB" else arr
    if img.mode == "F":
        raise _UnsupportedImage("floating-point image (mode F) has no defined grey range")
    img = img.convert(mode)
    if img.size != size:
        img = img.resize(size, resample=resample)
    arr = np.asarray(img, dtype=np.float64)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(path, image_size, mode="L", *, resize=False, value_range=(-1.0, 1.0),
                      recursive=False, extensions=IMAGE_EXTENSIONS, dtype=np.float32,
                      warn=True):
    """Load every png/jpg image of a folder as floats in ``value_range`` ([-1, 1]).

    Images are converted to grey (``mode="L"``) or RGB (``mode="RGB"``;
    transparency is dropped) and their 8-bit pixels ``p`` scaled to
    ``low + p (high - low) / 255`` (``p / 127.5 - 1`` by default, the range
    of a tanh generator; ``value_range=(0, 1)`` for a sigmoid one).  Files
    are read in sorted path order.

    An image of another size than ``image_size`` is not loaded: it is
    listed in ``errors`` with both sizes, as ``flipad score`` does (one rule
    for both; a generator's images have its output size, and a resized
    image is not what it made).  ``resize=True`` resizes such images with
    Pillow's bicubic filter (antialiased when shrinking) instead.

    16-bit grey images are scaled to the same range (``x / 257``), not
    clipped.

    Nothing is dropped silently: every entry that is not loaded (unreadable
    or truncated image, a floating-point image without a defined range, an
    extension not in ``extensions``, a broken symbolic link, a sub-folder
    when ``recursive=False``, a link to a folder, which is not followed) is
    listed in the returned ``errors`` with the reason, and a warning says how
    many.  A folder from which no image can be loaded is an error.

    Parameters
    ----------
    path : str or path-like
        The folder.
    image_size : int or (int, int)
        Output size: a side for square images, or ``(height, width)``.
    mode : {"L", "RGB"}, default="L"
        Grey (1 channel) or RGB (3 channels).
    resize : bool, default=False
        Resize images of another size to ``image_size`` (bicubic); False
        reports them in ``errors`` ("mis-sized") instead.
    value_range : (float, float), default=(-1.0, 1.0)
        The range pixel values 0..255 are mapped onto: the generator's output
        range.
    recursive : bool, default=False
        Also read the sub-folders.
    extensions : tuple of str, default=(".png", ".jpg", ".jpeg")
        File extensions (case-insensitive) read as images.
    dtype : numpy float dtype, default=np.float32
    warn : bool, default=True
        Warn (``UserWarning``) when some files were not loaded.

    Returns
    -------
    X : ndarray of shape (n_images, C, height, width)
        ``C = 1`` for ``"L"``, 3 for ``"RGB"``; values in ``value_range``.
    paths : list of str
        The file of each row of ``X``.
    errors : list of (str, str)
        ``(path, reason)`` of every file that was not loaded.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing folder.
    ValueError
        If no image could be loaded from it (an empty folder, or only
        entries that were skipped; the message lists the first reasons).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}.")
    height, width = _check_size(image_size)
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"value_range must be two finite numbers low < high, got "
                         f"{value_range!r}.")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype}.")
    if isinstance(extensions, str):
        extensions = (extensions,)
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{os.fspath(path)!r} is not an existing folder.")

    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    images, paths, errors = [], [], []
    files = []
    for entry in entries:
        reason = _not_a_file_reason(entry, recursive)
        if reason == "":
            continue                  # a sub-folder that rglob walks itself
        if reason is not None:
            errors.append((os.fspath(entry), reason))
        else:
            files.append(entry)
    resample = Image.Resampling.BICUBIC
    for file in files:
        name = os.fspath(file)
        if file.suffix.lower() not in exts:
            errors.append((name, f"skipped: extension {file.suffix!r} is not one of {exts}"))
            continue
        try:
            with Image.open(file) as img:
                if not resize and img.size != (width, height):
                    raise _MisSized(mis_sized_reason(img.size, (width, height),
                                                     " (pass resize=True to resize)"))
                img.load()
                arr = _to_array(img, mode, (width, height), resample)
        except _MisSized as exc:
            errors.append((name, str(exc)))
            continue
        except _UnsupportedImage as exc:
            errors.append((name, f"unsupported: {exc}"))
            continue
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
                Image.DecompressionBombError) as exc:
            errors.append((name, f"unreadable: {type(exc).__name__}: {exc}"))
            continue
        images.append(arr)
        paths.append(name)

    if not images:
        if not errors:
            raise ValueError(f"{os.fspath(path)!r} is empty: no image to load.")
        listed = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in errors[:3])
        raise ValueError(
            f"No image could be loaded from {os.fspath(path)!r}: {len(errors)} "
            f"entries skipped ({listed}{'; ...' if len(errors) > 3 else ''})."
        )
    X = (np.stack(images) * ((high - low) / 255.0) + low).astype(dtype)
    if errors and warn:
        warnings.warn(
            f"{len(errors)} of {len(entries)} files and folders in "
            f"{os.fspath(path)!r} were not loaded (first: {errors[0][0]!r}: {errors[0][1]}); "
            "see the returned errors list.",
            UserWarning,
            stacklevel=2,
        )
    return X, paths, errors
