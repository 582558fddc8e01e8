"""The verdict table: one row per file (or sample) from fitted detectors.

:func:`verdict_table` is what ``flipad score`` and ``flipad attribute`` print
and write, as a Python function: give it a fitted FLIPAD pipeline (from
:func:`~flipad_sklearn.pipeline.make_flipad`, ``flipad fit`` or
:func:`flipad_sklearn.persistence.load`) or a
:class:`~flipad_sklearn.ConformalUnion` of detectors, and image files,
folders or an array of samples; it returns a :class:`VerdictTable` whose rows
hold each input's score, conformal p-value and verdict (+1 made by G, -1
not; a union's also each detector's p-value), or, for several owned models,
the prediction set.  The command line tool builds its table
with the same function, so the command and Python agree on every verdict.

Files are read as ``flipad score`` reads them: 8-bit pixels ``p`` scaled to
the detector's input range (``low + p (high - low) / 255``), images of exactly
the generator's output size, nothing resized; a file that cannot be used is a
row with the reason in ``status`` (and empty values), in input order.

This module imports only the standard library when it is imported (numpy,
Pillow and the estimators are imported by the functions that need them), so
that ``flipad --help`` stays fast.
"""

import csv
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "PIXEL_RANGES", "VerdictTable", "calibrated_files",
           "check_file_channel", "expand_paths", "file_channel", "image_shape",
           "read_images", "verdict_table"]

#: File name extensions read from folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Value range of the images per output activation (``p`` = 8-bit pixel):
#: tanh ``p / 127.5 - 1``, sigmoid ``p / 255``, identity as tanh (the convention
#: of linear-output generators such as StyleGAN's).
PIXEL_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "identity": (-1.0, 1.0)}

#: Cells starting with these are formulas to a spreadsheet (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

#: Columns of a table from one detector, and the leading ones for several models.
SCORE_COLUMNS = ["path", "score", "verdict", "decision", "pvalue", "status"]
ATTRIBUTE_COLUMNS = ["path", "prediction", "set"]


# ------------------------------------------------------------------ text
def display_name(text):
    """``text`` printable anywhere: a file name that is not valid UTF-8 (decoded by
    Python with surrogate escapes) gets ``\\xNN`` escapes instead of failing."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") \
        if isinstance(text, str) else str(text)


def csv_cell(value):
    """A cell as written to the CSV: valid UTF-8, never a spreadsheet formula.

    A text starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
    return) is prefixed with ``'``, which spreadsheets show as text; numbers
    are written as they are, None as an empty cell.
    """
    if not isinstance(value, str):
        return value
    value = display_name(value)
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


# ------------------------------------------------------------------ files
def expand_paths(paths):
    """``(path, reason)`` for every file and folder entry, in input order.

    Folders are listed sorted (not recursively); ``reason`` is None for a file
    to read, else why it is skipped (a path that does not exist, a broken
    symbolic link, a sub-folder, another extension).

    Parameters
    ----------
    paths : iterable of str or path-like

    Returns
    -------
    entries : list of (str, str or None)
    """
    from .datasets._image_folder import _not_a_file_reason

    entries = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.iterdir()):
                reason = _not_a_file_reason(f, recursive=False)
                if reason is None and f.suffix.lower() not in IMAGE_EXTENSIONS:
                    reason = f"skipped: extension {f.suffix!r} is not an image extension"
                if reason is not None and "sub-folder" in reason:
                    reason = "skipped: sub-folder (folders are not searched recursively)"
                entries.append((os.fspath(f), reason))
        elif path.is_file():
            entries.append((os.fspath(path), None))
        elif path.is_symlink():
            entries.append((os.fspath(path), "broken symbolic link"))
        else:
            entries.append((os.fspath(path), "no such file or folder"))
    return entries


class _Missized(Exception):
    pass


def _bar(total, desc, unit, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


def read_images(files, image_shape, value_range=(-1.0, 1.0), verbose=0):
    """Read image files as ``(n, C, H, W)`` float32 in ``value_range``, without resizing.

    8-bit pixels ``p`` become ``low + p (high - low) / 255``: the inverse of
    how ``flipad sample`` writes a generator's outputs.

    Parameters
    ----------
    files : list of str
    image_shape : tuple of int
        ``(C, H, W)`` with ``C`` 1 (grey) or 3 (RGB).
    value_range : (float, float), default=(-1.0, 1.0)
    verbose : int, default=0
        A progress bar on stderr when positive and there are more than 50 files.

    Returns
    -------
    X : ndarray of shape (n_read, C, H, W), float32
    ok : list of str
        The files read, in input order.
    errors : list of (str, str)
        The files not read, with the reason.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .datasets._image_folder import _to_array, _UnsupportedImage, mis_sized_reason

    c, h, w = image_shape
    if c not in (1, 3):
        raise ValueError(f"The generator outputs {c}-channel images; only grey (1) and "
                         "RGB (3) images can be read from files.")
    mode = "L" if c == 1 else "RGB"
    images, ok, errors = [], [], []
    bar = _bar(len(files), "reading images", "file", verbose and len(files) > 50)
    for f in files:
        try:
            with Image.open(f) as img:
                if img.size != (w, h):
                    raise _Missized(mis_sized_reason(img.size, (w, h),
                                                     " (the generator's output size)"))
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
        low, high = value_range
        X = (np.stack(images) * ((high - low) / 255.0) + low).astype(np.float32)
    else:
        X = np.empty((0, c, h, w), dtype=np.float32)
    return X, ok, errors


def pixel_range(activation):
    """The range 8-bit pixels are scaled to for a generator with this output activation.

    Parameters
    ----------
    activation : str or callable

    Returns
    -------
    range : (float, float)
    """
    from .activations import get_activation

    name = get_activation(activation).name
    if name not in PIXEL_RANGES:
        raise ValueError(f"The generator's output activation {name!r} has no known pixel "
                         "range; use the Python API (make_flipad(..., input_range=...)).")
    return PIXEL_RANGES[name]


def saved_range(pipe):
    """The pixel range a detector was fitted with (its ``input_range``).

    Detector files written before it was saved: the range of its inverter's
    activation (as ``flipad fit`` now chooses it).  A
    :class:`~flipad_sklearn.ConformalUnion`: the range of its detectors,
    which must agree (a ValueError otherwise, or when none has one).
    """
    pipe = _bare_union(pipe)
    if _is_union(pipe):
        return _members_agree(
            pipe, _member_range,
            none="No detector of the union tells the pixel range of the images (none has "
                 "an input_range or an inverter); fit its pipelines with "
                 "input_range=(low, high).",
            differ="The detectors of the union read pixels into different ranges")
    rng = _member_range(pipe)
    if rng is None:
        raise ValueError("The detector does not tell the pixel range of the images (no "
                         "input_range and no inverter); fit it with input_range=(low, "
                         "high).")
    return rng


def _member_range(member):
    """A union member's pixel range, or None when it does not tell one."""
    from .detection.conformal import _frozen_inner
    from .inversion import FinalLayerInverter

    pipe = _frozen_inner(member)
    rng = getattr(pipe, "input_range", None)
    if rng is not None:
        return tuple(float(v) for v in rng)
    first = pipe.steps[0][1] if getattr(pipe, "steps", None) else None
    return pixel_range(first.activation) if isinstance(first, FinalLayerInverter) else None


def image_shape(detector):
    """The ``(C, H, W)`` of the images a fitted detector reads.

    A pipeline starting with an inverter: its ``output_shape_`` (the
    generator's output); a :class:`~flipad_sklearn.ConformalUnion`: the shape
    its detectors tell (an inverter's output, or the ``input_shape_`` of a
    first step on images such as the pixel guard's pooling), which must agree.

    Raises
    ------
    ValueError
        The detectors of a union disagree, or none of them tells the shape.
    """
    detector = _bare_union(detector)
    if not _is_union(detector):
        shape = _member_shape(detector)
        if shape is None:
            raise ValueError("The detector does not tell the shape of the images (it "
                             "starts with neither an inverter nor a step fitted on "
                             "(C, H, W) images).")
        return shape
    return _members_agree(
        detector, _member_shape,
        none="No detector of the union tells the shape of the images (none starts with an "
             "inverter or a step fitted on (C, H, W) images, such as make_pixel_guard's "
             "pooling)",
        differ="The detectors of the union read images of different shapes")


def _members_agree(union, of_member, *, none, differ):
    """The one value ``of_member`` tells for the union's detectors (None: tells nothing);
    a ValueError with ``none`` when no detector tells one, ``differ`` when they disagree."""
    values = {name: of_member(member) for name, member in union.estimators_}
    known = {v for v in values.values() if v is not None}
    if not known:
        raise ValueError(f"{none}: {sorted(values)}.")
    if len(known) > 1:
        raise ValueError(f"{differ}: {values}.")
    return known.pop()


def _member_shape(member):
    """A union member's image shape ``(C, H, W)``, or None when it does not tell one."""
    from .detection.conformal import _frozen_inner
    from .inversion import FinalLayerInverter

    pipe = _frozen_inner(member)
    if not getattr(pipe, "steps", None):
        return None
    first = pipe.steps[0][1]
    # an inverter's output is the generator's image; pooling and DCT record their input
    shape = getattr(first, "output_shape_" if isinstance(first, FinalLayerInverter)
                    else "input_shape_", None)
    if shape is None or len(shape) != 3:
        return None
    return tuple(int(v) for v in shape)


# ------------------------------------------------------------------ files vs calibration
#: file_channel of a lossless file (PNG, BMP, lossless WebP, ...)
LOSSLESS = None


def _perturbation_files(t):
    """The file kinds a perturbation's output stands for: a set, or None (unknown)."""
    if t is None:
        return {LOSSLESS}
    kinds = getattr(t, "_file_kinds", None)       # the package's perturbations
    return None if kinds is None else kinds()


def _reads_block_averages(pipe):
    """A pixel guard on averages of 4x4 pixels or more (:func:`make_pixel_guard` on
    images of 64x64 or more): JPEG keeps a block's mean best (measured by
    bench_face_recipe_perturbations's last column).  A guard on every pixel (small
    images) is as sensitive to JPEG as any detector."""
    from .features import ActivationPooling

    first = pipe.steps[0][1] if getattr(pipe, "steps", None) else None
    return isinstance(first, ActivationPooling) and first.method == "avg" \
        and int(first.kernel_size) >= 4


def calibrated_files(detector):
    """The image files a fitted detector's threshold covers, as :func:`file_channel` names them.

    A pipeline's ``immunise`` tells what G's images went through before its
    threshold was set: nothing (lossless files, ``{None}``), JPEG at one
    quality (``{q}``), a mixture (``"published"``: lossless files and JPEG
    q70-95).  A union covers the files every detector of it covers, except
    pixel guards on averages of 4x4 pixels or more, which JPEG hardly moves.

    Parameters
    ----------
    detector : fitted pipeline or ConformalUnion

    Returns
    -------
    files : frozenset or None
        JPEG qualities (int) and ``None`` for lossless files; None when an
        ``immunise`` transformer is not one of the package's (not checked).
    """
    from sklearn.pipeline import Pipeline

    if _is_multi(detector):
        raise TypeError("calibrated_files takes one detector (a pipeline or a union); "
                        "for several models call it on each.")
    if not (_is_union(detector) or isinstance(_bare_union(detector), Pipeline)):
        raise TypeError(f"calibrated_files takes a fitted pipeline or ConformalUnion, got "
                        f"{type(detector).__name__}.")
    covered = _covered(_member_files(detector))
    return None if covered is None else frozenset(covered)


def _covered(per):
    """The files every member covers (None: some member's perturbation is unknown)."""
    if any(v is None for v in per.values()):
        return None
    return set.intersection(*[set(v) for v in per.values()]) if per else {LOSSLESS}


def _member_files(detector):
    """{member name: covered files (set or None)} of the JPEG-sensitive detectors."""
    from .detection.conformal import _frozen_inner

    from sklearn.utils.validation import check_is_fitted

    pipe = _bare_union(detector)
    if _is_union(pipe):
        check_is_fitted(pipe, "estimators_")
    members = pipe.estimators_ if _is_union(pipe) else [(None, pipe)]
    out = {}
    for name, member in members:
        inner = _frozen_inner(member)
        if _is_union(pipe) and _reads_block_averages(inner):
            continue
        out[name] = _perturbation_files(getattr(inner, "immunise", None))
    return out


def _describe_files(files):
    jpeg = sorted(q for q in files if isinstance(q, int))
    parts = (["lossless images"] if LOSSLESS in files else []) \
        + ([f"JPEG q{jpeg[0]}" if len(jpeg) == 1 else
            f"JPEG q{jpeg[0]}-{jpeg[-1]}" if jpeg == list(range(jpeg[0], jpeg[-1] + 1))
            else "JPEG q" + ", q".join(map(str, jpeg))] if jpeg else [])
    return " and ".join(parts) if parts else "no file kind"


def _describe_kind(kind):
    return "lossless" if kind is LOSSLESS else kind if isinstance(kind, str) else f"JPEG q{kind}"


def _webp_is_lossy(path):
    """True for a WebP file whose first image is VP8 (lossy), False for VP8L or not WebP."""
    import struct

    with open(path, "rb") as fh:
        if fh.read(4) != b"RIFF" or (fh.read(4) and fh.read(4) != b"WEBP"):
            return False
        for _ in range(64):                 # VP8X, ICCP, ANIM, ALPH, ... then the image
            head = fh.read(8)
            if len(head) < 8:
                return False
            fourcc, size = head[:4], struct.unpack("<I", head[4:])[0]
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc == b"VP8 "
            if fourcc == b"ANMF":           # an animation frame: its image chunks inside
                fh.seek(16, 1)
                continue
            fh.seek(size + (size & 1), 1)
    return False


def file_channel(path):
    """How an image file was stored, in the terms a detector's calibration covers.

    Returns an int, a JPEG's quality read from its quantisation tables
    (:func:`~flipad_sklearn.jpeg_quality`) when it is stored as
    :class:`~flipad_sklearn.JPEGCompression` at that quality stores images
    (Pillow's tables, 4:2:0 colours); a str naming any other lossy storage
    (``"JPEG q85 (4:4:4)"``, ``"JPEG ~q85 (another encoder's tables)"``,
    ``"lossy WebP"``, ``"JPEG in TIFF"``, ``"JPEG2000 (may be lossy)"``); or
    None for a lossless file (PNG, BMP, lossless WebP, ...).  A JPEG
    converted to PNG cannot be told.
    """
    from PIL import Image

    from .perturbations import jpeg_quality

    with Image.open(path) as img:
        found = jpeg_quality(img)
        if found is not None:
            if found.exact:
                return found.quality
            if found.subsampling not in (None, "4:2:0"):
                return f"JPEG q{found.quality} ({found.subsampling})"
            return f"JPEG ~q{found.quality} (another encoder's tables)"
        fmt = img.format
        if fmt == "TIFF" and str(img.info.get("compression", "")).lower() in (
                "jpeg", "tiff_jpeg"):
            return "JPEG in TIFF"
        if fmt in ("JPEG2000", "AVIF", "HEIF"):
            return f"{fmt} (may be lossy)"
    return "lossy WebP" if fmt == "WEBP" and _webp_is_lossy(path) else LOSSLESS


def _advice(pipe, kind):
    """How to fit a detector that covers files of ``kind``."""
    if not isinstance(kind, int):
        return (" Score them with a detector calibrated on files stored as they are."
                if kind is LOSSLESS else "")
    t = f"JPEGCompression(quality={kind})"
    if _is_union(_bare_union(pipe)):
        return (f" Fit a union matched to them: flipad fit --detector union --immunise "
                f"jpeg:{kind} (make_open_world_union(..., immunise={t}, "
                f"flipad_params={{'immunise': {t}}})).")
    return (f" Fit a detector matched to them: flipad fit --immunise jpeg:{kind} "
            f"(make_flipad(..., immunise={t})).")


def check_file_channel(detector, files):
    """Warn when image files were not stored as the images the detector was calibrated on.

    A conformal threshold bounds the share of G's images rejected only for
    images made as those it was set on.  Lossy compression moves G's own
    images (their sparse codes and spectra) out of what a detector
    calibrated on lossless images accepts; a detector trained and calibrated
    on JPEG at one quality covers that quality.  Each file is read as
    :func:`file_channel` tells and compared with
    :func:`calibrated_files`.  Issues one
    :class:`~flipad_sklearn.exceptions.InputContractWarning` per kind of
    calibration (models calibrated alike share one), naming the files' kinds
    and the matched detector to fit; nothing when the files are covered, or
    for a detector immunised with a transformer this package does not know.

    Parameters
    ----------
    detector : fitted pipeline, ConformalUnion, OwnedModelsAttributor or dict
    files : list of str
        The image files read (unreadable ones are not checked).

    Returns
    -------
    counts : dict
        ``{file_channel: number of files}``.
    """
    from .exceptions import InputContractWarning

    counts = {}
    for f in files:
        try:
            kind = file_channel(f)
        except Exception:                # noqa: BLE001 -- a damaged header: read_images reports
            continue
        counts[kind] = counts.get(kind, 0) + 1
    groups = {}
    for name, pipe in _pipelines(detector).items() if counts else ():
        per = _member_files(pipe)
        covered = _covered(per)
        if covered is None:
            continue                     # a perturbation this package does not know
        off = {k: n for k, n in counts.items() if k not in covered}
        if off:
            # models calibrated alike (and fitted alike: the advice differs) share one
            key = (_is_union(_bare_union(pipe)),
                   tuple(sorted((str(k), frozenset(v)) for k, v in per.items())))
            groups.setdefault(key, (pipe, per, covered, off, []))[4].append(name)
    for pipe, per, covered, off, names in groups.values():
        which = "" if names == [None] else \
            f"model{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}: "
        if len({frozenset(v) for v in per.values()}) > 1:
            made = "different files by its detectors (" + ", ".join(
                f"{n}: {_describe_files(v)}" for n, v in per.items()) + ")"
        else:
            made = f"G's {_describe_files(covered)}"
        ranked = sorted(off.items(), key=lambda kv: (-kv[1], str(kv[0])))
        kinds = ", ".join(f"{n} {_describe_kind(k)}" for k, n in ranked)
        warnings.warn(
            f"{which}{sum(off.values())} of {len(files)} files are not stored as the "
            f"images the detector's threshold was set on ({kinds}); it was calibrated on "
            f"{made}, and its fnr bound does not cover other files: G's own images may be "
            f"rejected more often (user guide, 'Open world', 'Files')."
            + _advice(pipe, ranked[0][0]), InputContractWarning, stacklevel=2)
    return counts


# ------------------------------------------------------------------ the table
class VerdictTable:
    """Per-input verdicts of one detector or of several owned models.

    Built by :func:`verdict_table`.  Iterating gives the rows; ``len`` their
    number; ``table[i]`` the ``i``-th row.

    Parameters
    ----------
    rows : list of dict
        One per input, in input order.  From one detector: ``path``,
        ``score`` (``decision_function``: negative = not made by G),
        ``verdict`` (+1 made by G, -1 not), ``decision`` (``"G"`` /
        ``"not G"``), ``pvalue`` (conformal p-value of "made by G") and
        ``status`` (``"ok"``, or why the input was skipped; its other values
        are then None).  From a :class:`~flipad_sklearn.ConformalUnion`: the
        same, for the union (``score`` its ``decision_function``, ``pvalue``
        its Bonferroni p-value), and each detector's own p-value
        ``p_<name>`` before ``status``: which one rejected.  From several
        owned models: ``path``, ``prediction``
        (the most likely model, or ``"none"``), ``set`` (the prediction set,
        ``"{G1,G2}"``), ``p_<name>`` per model and ``status``.
    columns : list of str
        The keys of every row, in order.
    metadata : dict
        The detector's: ``package``, ``version``, and ``fnr``, ``threshold``,
        ``n_validation``, ``calibration_kinds`` (1, or the k kinds of
        perturbation under each of which the fnr holds: ``calibrate(...,
        each_kind=True)``) (one detector), or ``fnr``, ``fnr_bound``,
        ``fnr_interval`` (the 90 % interval of the share of G's samples the
        thresholds reject), ``weights`` and ``members`` (name -> those; a
        union), or ``models``
        (name -> those, several); ``detector`` (the file, when known) and
        ``alpha``.

    Attributes
    ----------
    rows, columns, metadata
    """

    def __init__(self, rows, columns, metadata):
        self.rows = rows
        self.columns = columns
        self.metadata = metadata

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __repr__(self):
        n_ok = sum(r["status"] == "ok" for r in self.rows)
        return f"VerdictTable({len(self.rows)} rows, {n_ok} ok)"

    @property
    def n_skipped(self):
        """Rows whose input could not be used."""
        return sum(r["status"] != "ok" for r in self.rows)

    def to_dicts(self):
        """The rows as a list of plain dicts (copies).

        Returns
        -------
        rows : list of dict
        """
        return [dict(r) for r in self.rows]

    def to_csv(self, file=None):
        """Write the rows as CSV (UTF-8, with a header; skipped inputs have empty cells).

        File names that are not valid UTF-8 get ``\\xNN`` escapes, and a text
        cell a spreadsheet would take for a formula is prefixed with ``'``.

        Parameters
        ----------
        file : str, path-like, text file object or None, default=None
            Where to write; None returns the text.

        Returns
        -------
        text : str or None
            The CSV when ``file`` is None.
        """
        def write(fh):
            writer = csv.DictWriter(fh, fieldnames=self.columns, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows([{k: csv_cell(r[k]) for k in self.columns} for r in self.rows])

        return _write_text(file, write, newline="")

    def to_json(self, file=None, *, indent=2):
        """Write the table as JSON: ``{"detector": metadata, "verdicts": [row, ...]}``.

        One object per input; skipped inputs have ``null`` values and the
        reason in ``status``; a non-finite number is written as ``null``.

        Parameters
        ----------
        file : str, path-like, text file object or None, default=None
            Where to write; None returns the text.
        indent : int or None, default=2

        Returns
        -------
        text : str or None
            The JSON when ``file`` is None.
        """
        doc = {"detector": _jsonable(self.metadata),
               "verdicts": [_jsonable({k: r[k] for k in self.columns}) for r in self.rows]}

        def write(fh):
            json.dump(doc, fh, indent=indent, ensure_ascii=False, allow_nan=False)
            fh.write("\n")

        return _write_text(file, write, newline=None)


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {display_name(str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str):
        return display_name(obj)
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        v = float(obj)
        if hasattr(obj, "dtype") and getattr(obj.dtype, "kind", "f") in "iu":
            return int(obj)
        return v if math.isfinite(v) else None
    return str(obj)


def _write_text(file, write, newline):
    if file is None:
        buf = io.StringIO()
        write(buf)
        return buf.getvalue()
    if hasattr(file, "write"):
        write(file)
        return None
    with open(file, "w", newline=newline, encoding="utf-8") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return None


def _is_multi(detector):
    from .detection.multi import OwnedModelsAttributor

    return isinstance(detector, (Mapping, OwnedModelsAttributor))


def _as_attributor(detector):
    from .detection.multi import OwnedModelsAttributor

    if isinstance(detector, OwnedModelsAttributor):
        return detector
    return OwnedModelsAttributor.from_fitted(dict(detector))


def _is_union(detector):
    """A :class:`~flipad_sklearn.ConformalUnion`, frozen or not."""
    from .detection.conformal import _frozen_inner
    from .detection.union import ConformalUnion

    return isinstance(_frozen_inner(detector), ConformalUnion)


def _bare_union(detector):
    """A frozen union without its FrozenEstimator wrappers; anything else as it is."""
    from .detection.conformal import _frozen_inner

    return _frozen_inner(detector) if _is_union(detector) else detector


def _pipelines(detector):
    """name -> fitted pipeline (one detector: a single unnamed entry)."""
    if not _is_multi(detector):
        return {None: _bare_union(detector)}
    return {n: _bare_union(p) for n, p in _as_attributor(detector).estimators_.items()}


def scoring_estimators(detector):
    """The estimators that score ``detector``'s samples: the pipeline itself, a union's
    detectors (frozen ones unwrapped), or each owned model's (its union's detectors)."""
    from .detection.conformal import _frozen_inner

    out = []
    for est in _pipelines(detector).values():
        out += [_frozen_inner(m) for _, m in est.estimators_] if _is_union(est) else [est]
    return out


def member_pipelines(detector):
    """The pipelines among :func:`scoring_estimators` (bare detectors left out)."""
    return [e for e in scoring_estimators(detector) if getattr(e, "steps", None)]


def _union_columns(union):
    """The union's table columns: its verdict, then each detector's own p-value."""
    return (SCORE_COLUMNS[:-1] + [f"p_{name}" for name, _ in union.estimators_]
            + SCORE_COLUMNS[-1:])


def _detector_metadata(pipe):
    det = pipe[-1] if hasattr(pipe, "steps") else pipe
    meta = {}
    for key, attr in (("fnr", "fnr"), ("threshold", "threshold_")):
        value = getattr(det, attr, None)
        meta[key] = None if value is None else float(value)
    val = getattr(det, "validation_scores_", None)
    meta["n_validation"] = None if val is None else int(getattr(val, "size", len(val)))
    # k > 1: the fnr holds under each of k kinds of perturbation (calibrate(each_kind))
    meta["calibration_kinds"] = int(getattr(det, "n_calibration_kinds_", 1))
    return meta


def _union_metadata(union):
    names = [name for name, _ in union.estimators_]
    return {"fnr": float(union.fnr), "fnr_bound": float(union.fnr_bound_),
            "fnr_interval": [float(v) for v in union.fnr_interval_],
            "weights": {name: float(w) for name, w in zip(names, union.weights_)},
            "members": {name: _detector_metadata(det)
                        for name, det in zip(names, union._detectors())}}


def _metadata(detector, detector_path, alpha):
    from ._version import __version__

    meta = {"package": "flipad_sklearn", "version": __version__}
    if _is_union(detector):
        meta.update(_union_metadata(detector))
        meta["detector"] = None if detector_path is None else os.fspath(detector_path)
    elif _is_multi(detector):
        meta["models"] = {n: _union_metadata(p) if _is_union(p) else _detector_metadata(p)
                          for n, p in _pipelines(detector).items()}
        paths = detector_path if isinstance(detector_path, Mapping) else None
        meta["detector"] = None if paths is None else {
            n: os.fspath(p) for n, p in paths.items()}
        meta["alpha"] = None if alpha is None else float(alpha)
    else:
        meta.update(_detector_metadata(detector))
        meta["detector"] = None if detector_path is None else os.fspath(detector_path)
    return meta


def _score_rows(detector, X, alpha, verbose):
    """(columns, one row dict per sample of X), every verdict from the fitted models."""
    import numpy as np

    if _is_union(detector):
        union = detector
        # one pass through every detector's steps (FLIPAD: one inversion per image)
        P, decision = union.pvalues(X, per_detector=True, return_decision=True)
        pvals = union.combine_pvalues(P)
        names = [name for name, _ in union.estimators_]
        rows = []
        for i, (d, p) in enumerate(zip(decision, pvals)):
            v = 1 if d >= 0 else -1         # predict's rule
            row = {"score": float(d + union.offset_), "verdict": v,
                   "decision": "G" if v == 1 else "not G", "pvalue": float(p)}
            row.update({f"p_{n}": float(P[i, j]) for j, n in enumerate(names)})
            row["status"] = "ok"
            rows.append(row)
        return _union_columns(union), rows
    if not _is_multi(detector):
        pipe = detector
        feats = pipe[:-1].transform(X)
        det = pipe[-1]
        scores = det.decision_function(feats)
        verdicts = det.predict(feats)
        pvals = det.pvalues(feats)
        rows = [{"score": float(s), "verdict": int(v), "decision": "G" if v == 1 else "not G",
                 "pvalue": float(p), "status": "ok"}
                for s, v, p in zip(scores, verdicts, pvals)]
        return SCORE_COLUMNS, rows
    attr = _as_attributor(detector)
    names = [str(n) for n in attr.classes_]
    res = attr.attribute(X, alpha=alpha)
    rows = []
    for i in range(len(res.labels)):
        row = {"prediction": str(res.labels[i]),
               "set": "{" + ",".join(np.asarray(names)[res.sets[i]]) + "}",
               "status": "ok"}
        row.update({f"p_{n}": float(res.pvalues[i, j]) for j, n in enumerate(names)})
        rows.append(row)
    return ATTRIBUTE_COLUMNS + [f"p_{n}" for n in names] + ["status"], rows


class _verbose_inversion:
    """Set the inversion's ``verbose`` of every pipeline for a while, then restore it."""

    def __init__(self, pipes, verbose):
        self.pipes, self.verbose, self.saved = pipes, verbose, []

    def __enter__(self):
        for p in self.pipes:
            inv = p[0]
            if hasattr(inv, "verbose"):
                self.saved.append((inv, inv.verbose))
                inv.set_params(verbose=self.verbose)

    def __exit__(self, *exc):
        for inv, v in self.saved:
            inv.set_params(verbose=v)


def table_from_read(detector, X, read, entries, *, alpha=None, detector_path=None,
                    verbose=0):
    """The table of ``entries`` given the samples ``X`` of the files read.

    The one rule behind :func:`verdict_table` and the ``flipad`` command:
    ``entries`` is ``[(path, reason or None), ...]`` in input order (as
    :func:`expand_paths` gives), ``read`` the paths of the rows of ``X``
    (entries with reason None, in order) and every entry with a reason, or
    not in ``read``, is a skipped row.  ``read`` may be given as
    ``(ok, read_errors)`` of :func:`read_images`.
    """
    ok, read_errors = read
    detector = _bare_union(detector)    # once, for _score_rows and _metadata too
    if _is_union(detector):
        columns = _union_columns(detector)
    else:
        columns = SCORE_COLUMNS if not _is_multi(detector) else None
    scored = []
    if len(ok):
        pipes = member_pipelines(detector)
        with _verbose_inversion(pipes, int(verbose and len(ok) > 1)), \
                warnings.catch_warnings():
            # the pixels were scaled here from 8-bit files: a batch without dark pixels
            # is bright images, not images scaled to [0, 1] (what the inverter suspects)
            warnings.filterwarnings("ignore", message="No value of the .* below 0")
            columns, scored = _score_rows(detector, X, alpha, verbose)
    elif columns is None:
        names = [str(n) for n in _as_attributor(detector).classes_]
        columns = ATTRIBUTE_COLUMNS + [f"p_{n}" for n in names] + ["status"]
    done = {}
    for path, row in zip(ok, scored):
        done.setdefault(path, []).append(row)
    failed = {}
    for path, reason in read_errors:
        failed.setdefault(path, []).append(reason)
    rows = []
    for path, reason in entries:
        if reason is None and done.get(path):
            rows.append({"path": path, **done[path].pop(0)})
            continue
        if reason is None:
            reason = failed[path].pop(0) if failed.get(path) else "not read"
        row = {c: None for c in columns}
        row.update(path=path, status=reason)
        rows.append(row)
    return VerdictTable(rows, list(columns), _metadata(detector, detector_path, alpha))


def verdict_table(detector, inputs, *, names=None, alpha=None, detector_path=None,
                  verbose=0):
    """Per-input verdicts, p-values and scores (or prediction sets) as a table.

    Parameters
    ----------
    detector : fitted pipeline, ConformalUnion, OwnedModelsAttributor or dict
        A fitted FLIPAD pipeline (:func:`~flipad_sklearn.pipeline.make_flipad`,
        ``flipad fit``, :func:`flipad_sklearn.persistence.load`); a fitted
        :class:`~flipad_sklearn.ConformalUnion` (its verdicts, and each
        detector's p-value in a column ``p_<name>``); several owned models
        as a fitted :class:`~flipad_sklearn.OwnedModelsAttributor` or a dict
        of name -> fitted pipeline or union (then the rows hold prediction
        sets).
    inputs : str, path-like, list of them, or array-like of samples
        Image files and folders (folders listed sorted, not recursively),
        read as ``flipad score`` reads them (see the module's docstring), or
        an array of samples ``(n, C, H, W)`` / ``(n, n_features)`` as the
        pipeline takes them (or a list of such samples).
    names : list of str or None, default=None
        The ``path`` of each sample of an array (default: ``"0"``, ``"1"``,
        ...); not used with files.
    alpha : float or None, default=None
        Several models only: keep the models whose p-value exceeds ``alpha``
        (default: each detector's own threshold, at its fnr).
    detector_path : str, path-like, dict or None, default=None
        Recorded in the metadata (where the detector was loaded from).
    verbose : int, default=0
        Progress bars (reading files, inversion) on stderr when positive.

    Returns
    -------
    table : VerdictTable
        ``table.rows`` (list of dict, input order), ``table.metadata``,
        ``table.to_csv(file)`` and ``table.to_json(file)``.

    Examples
    --------
    >>> from flipad_sklearn import persistence
    >>> from flipad_sklearn.verdicts import verdict_table
    >>> pipe = persistence.load("detector.flipad")  # doctest: +SKIP
    >>> table = verdict_table(pipe, ["suspicious/", "a.png"])  # doctest: +SKIP
    >>> [(r["path"], r["verdict"], r["pvalue"]) for r in table]  # doctest: +SKIP
    >>> table.to_csv("verdicts.csv")  # doctest: +SKIP
    """
    import numpy as np

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if _is_file_list(inputs):
        entries = expand_paths(inputs)
        files = [p for p, r in entries if r is None]
        pipes = [detector] if _is_union(detector) else list(_pipelines(detector).values())
        shapes = {image_shape(p) for p in pipes}
        ranges = {saved_range(p) for p in pipes}
        if len(shapes) > 1 or len(ranges) > 1:
            raise ValueError("The models make images of different shapes or read pixels "
                             f"into different ranges: {sorted(shapes)}, {sorted(ranges)}.")
        X, ok, errors = read_images(files, shapes.pop(), ranges.pop(), verbose)
        check_file_channel(detector, ok)
        return table_from_read(detector, X, (ok, errors), entries, alpha=alpha,
                               detector_path=detector_path, verbose=verbose)
    X = np.asarray(inputs)
    if names is None:
        names = [str(i) for i in range(len(X))]
    names = [str(n) for n in names]
    if len(names) != len(X):
        raise ValueError(f"names has {len(names)} entries for {len(X)} samples.")
    return table_from_read(detector, X, (names, []), [(n, None) for n in names],
                           alpha=alpha, detector_path=detector_path, verbose=verbose)


def _is_file_list(inputs):
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and all(isinstance(i, (str, os.PathLike)) for i in inputs)
    return False
