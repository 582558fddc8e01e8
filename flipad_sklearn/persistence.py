"""Save and load fitted estimators without pickle: numpy arrays plus a JSON spec.

:func:`save` writes a zip archive of ``.npy`` arrays (:func:`numpy.savez`,
no object arrays) with one more member, ``__spec__``: a JSON document that
describes the object tree (class names, parameters, fitted attributes), its
arrays referenced by key.  :func:`load` reads it back with
``numpy.load(allow_pickle=False)``, rebuilds only classes of an explicit
allow-list (:data:`ALLOWED_CLASSES`) and imports nothing: loading a file
never runs code from the file, unlike ``pickle``/``joblib``.

Torch state is stored as arrays too: the inverter's final layer as its type,
constructor arguments, weight and bias (the layer is rebuilt on load); the
detector's built-in network as its architecture description and its state
dict.  What has no such description is refused at :func:`save` with a clear
error: user-defined networks and layers, callables (a callable activation or
network factory would have to be imported, i.e. run, on load) and classes
outside the allow-list.  Save those with joblib, for trusted use only.

A file from someone you do not trust cannot exhaust memory, crash the
process or reach libsvm or torch with inconsistent state: :func:`load`
reads each member once within a byte budget the caller sets (``max_bytes``,
default :data:`DEFAULT_MAX_BYTES`), estimates the memory scoring will need
from the spec before anything is allocated, checks every estimator's state
against its invariants, and raises :class:`UnsafeFileError` for every file
it does not load.

Examples
--------
>>> from flipad_sklearn import persistence
>>> persistence.save(pipe, "detector.flipad")  # doctest: +SKIP
>>> pipe = persistence.load("detector.flipad")  # doctest: +SKIP
"""

import io
import json
import os
import stat
import tempfile
import threading
import zipfile

import numpy as np
import sklearn
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from . import _file_checks as _check
from ._file_checks import FileVersionWarning, UnsafeFileError
from ._version import __version__
from .detection.conformal import ConformalDecisionMixin
from .detection import (
    ConformalDetector, ConformalPipeline, ConformalUnion, FingerprintCorrelation,
    FLIPADDetector, GaussianDensity, OwnedModelsAttributor,
)
from .features import ActivationPooling, ChannelSelector, DCTFeatures, GeneratorStandardScaler
from .inversion import FinalLayerInverter, SkipInverter
from .perturbations import (
    GaussianBlur, GaussianNoise, JPEGCompression, RandomPerturbation, Resize, ResizedCrop,
)
from .pipeline import ImmunisedPipeline
from .streaming import StreamingFeatures

__all__ = ["ALLOWED_CLASSES", "DEFAULT_MAX_BYTES", "FORMAT", "FORMAT_VERSION",
           "FileVersionWarning", "MAX_SPEC_BYTES", "MAX_SPEC_DEPTH", "UnsafeFileError",
           "load", "save", "sniff", "trusted_skops_types"]

FORMAT = "flipad_sklearn"
#: The newest format this release writes and reads.  A file is written in the
#: oldest version that holds it, so that a release that cannot score it
#: refuses it instead of scoring something else: 2 adds Deep SAD ensembles
#: (``FLIPADDetector(n_networks > 1)``), which version-1 readers would score
#: with their first network alone; 3 adds ``DCTFeatures(block_size=k)``, whose
#: tiles' features older readers would not compute.
FORMAT_VERSION = 3
SPEC_KEY = "__spec__"

#: The memory a file may make :func:`load` use by default (its decompressed
#: arrays, and the working memory of scoring one batch), in bytes.  Yours to
#: change, or pass ``max_bytes`` to :func:`load`; never read from a file.
DEFAULT_MAX_BYTES = 2 ** 31
#: The largest JSON spec :func:`load` parses (a real one is a few kB).
MAX_SPEC_BYTES = 4 * 2 ** 20
#: The deepest nesting of the spec :func:`load` accepts (a real one: about 20).
MAX_SPEC_DEPTH = 64
#: The most members (arrays) a file may have.
MAX_MEMBERS = 100_000
# bool, signed and unsigned integers, floats, complex, fixed-width unicode
_ARRAY_KINDS = "biufcU"
_CHUNK = 2 ** 20
_HEADER_BYTES = 4096 + 12       # magic, version, length and numpy's largest header

#: The only classes :func:`load` rebuilds, by the name stored in a file.
ALLOWED_CLASSES = {
    "sklearn.pipeline.Pipeline": Pipeline,
    "flipad_sklearn.ConformalPipeline": ConformalPipeline,
    "sklearn.frozen.FrozenEstimator": FrozenEstimator,
    "sklearn.preprocessing.StandardScaler": StandardScaler,
    "sklearn.svm.OneClassSVM": OneClassSVM,
    "flipad_sklearn.FinalLayerInverter": FinalLayerInverter,
    "flipad_sklearn.SkipInverter": SkipInverter,
    "flipad_sklearn.ActivationPooling": ActivationPooling,
    "flipad_sklearn.ChannelSelector": ChannelSelector,
    "flipad_sklearn.GeneratorStandardScaler": GeneratorStandardScaler,
    "flipad_sklearn.DCTFeatures": DCTFeatures,
    "flipad_sklearn.FLIPADDetector": FLIPADDetector,
    "flipad_sklearn.FingerprintCorrelation": FingerprintCorrelation,
    "flipad_sklearn.ConformalDetector": ConformalDetector,
    "flipad_sklearn.OwnedModelsAttributor": OwnedModelsAttributor,
    "flipad_sklearn.ConformalUnion": ConformalUnion,
    "flipad_sklearn.GaussianDensity": GaussianDensity,
    "flipad_sklearn.StreamingFeatures": StreamingFeatures,
    "flipad_sklearn.GaussianBlur": GaussianBlur,
    "flipad_sklearn.GaussianNoise": GaussianNoise,
    "flipad_sklearn.JPEGCompression": JPEGCompression,
    "flipad_sklearn.ResizedCrop": ResizedCrop,
    "flipad_sklearn.Resize": Resize,
    "flipad_sklearn.RandomPerturbation": RandomPerturbation,
    "flipad_sklearn.ImmunisedPipeline": ImmunisedPipeline,
}
_NAMES = {cls: name for name, cls in ALLOWED_CLASSES.items()}
# documented (and raised) as part of this module
UnsafeFileError.__module__ = FileVersionWarning.__module__ = __name__
_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.bool)}

_ZIP_MAGIC = b"PK\x03\x04"


# ------------------------------------------------------------------------ encode
class _Encoder:
    def __init__(self):
        self.arrays = {}
        self.version = 1            # raised by what only a newer format holds

    def _array(self, a, path):
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"{path}: an array of Python objects cannot be saved without "
                            "pickle.")
        key = f"a{len(self.arrays)}"
        # not ascontiguousarray: it makes a 0-d array (a numpy scalar) 1-d
        self.arrays[key] = np.require(a, requirements="C")
        return key

    def encode(self, obj, path):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and type(obj) is int:
            return obj
        if isinstance(obj, float) and type(obj) is float:
            return obj
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject and obj.size and all(isinstance(v, str) for v in obj.flat):
                # e.g. the model names in OwnedModelsAttributor.classes_: stored as a
                # fixed-width unicode array, given back with the object dtype
                return {"__type__": "strarray",
                        "key": self._array(obj.astype(str), path)}
            return {"__type__": "ndarray", "key": self._array(obj, path)}
        if isinstance(obj, np.generic):
            return {"__type__": "npscalar", "key": self._array(obj, path)}
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu()
            dtype = str(t.dtype).removeprefix("torch.")
            if t.dtype == torch.bfloat16:
                t = t.float()
            return {"__type__": "tensor", "dtype": dtype, "key": self._array(t.numpy(), path)}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__type__": "tuple",
                    "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, dict):
            return self._dict(obj, path, lambda k: f"{path}[{k!r}]")
        if isinstance(obj, torch.device):
            return {"__type__": "torch.device", "value": str(obj)}
        if isinstance(obj, torch.dtype):
            return {"__type__": "torch.dtype", "value": str(obj).removeprefix("torch.")}
        if isinstance(obj, np.dtype):
            if obj.hasobject:
                raise TypeError(f"{path}: an object dtype cannot be saved.")
            return {"__type__": "np.dtype", "value": obj.str}
        if isinstance(obj, np.random.RandomState):
            name, keys, pos, has_gauss, cached = obj.get_state(legacy=True)
            return {"__type__": "RandomState", "keys": self._array(keys, path),
                    "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
        cls = type(obj)
        if cls in _NAMES:
            state = obj.__getstate__()
            if not isinstance(state, dict):
                raise TypeError(f"{path}: the state of a {cls.__name__} is not a dict.")
            _threshold_saveable(obj, path)
            # an estimator whose state only a newer format holds says which
            needs = getattr(obj, "_file_format_version", None)
            if needs is not None:
                self.version = max(self.version, int(needs()))
            return {"__type__": "estimator", "class": _NAMES[cls],
                    "state": self._dict(state, path, lambda k: f"{path}.{k}")}
        raise TypeError(_refusal(obj, path))

    def _dict(self, obj, path, child):
        return {"__type__": "dict",
                "items": [[self.encode(k, f"{path} key"), self.encode(v, child(k))]
                          for k, v in obj.items()]}


def _is_pyod_like(obj):
    """A PyOD detector, or one that follows PyOD's ``BaseDetector`` contract."""
    module = type(obj).__module__ or ""
    if module == "pyod" or module.startswith("pyod."):
        return True
    if not callable(getattr(obj, "decision_function", None)) \
            or callable(getattr(obj, "score_samples", None)):
        return False
    if "decision_scores_" in getattr(obj, "__dict__", {}):
        return True
    try:
        return "contamination" in obj.get_params(deep=False)
    except Exception:
        return False


def _pyod_refusal(obj, path):
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    return (
        f"{path}: a {name} (a PyOD detector) cannot be saved in the secure format: a "
        "PyOD detector's fitted state (trees, neighbour indexes, torch or numba "
        "models, each its own) has no description that load could check without "
        "running code. Alternatives: joblib.dump(estimator, path) and joblib.load, for "
        "trusted files only (unpickling runs code); or skops: save(estimator, path, "
        "format='skops'), then skops.io.load(path, trusted=[...]) with the types of "
        f"skops.io.get_untrusted_types(file=path) you have checked ({name} among them; "
        "flipad_sklearn.persistence.load refuses a skops file with types outside "
        "trusted_skops_types()). Or use the package's own detectors (FLIPADDetector, "
        "ConformalDetector('ocsvm')), which save securely.")


def _find_pyod(estimator, path):
    """``(obj, path)`` of the first PyOD detector in ``estimator``'s parameters, or None."""
    if _is_pyod_like(estimator):
        return estimator, path
    try:
        params = estimator.get_params(deep=True)
    except Exception:
        return None
    fitted = getattr(estimator, "__dict__", {})
    items = list(params.items()) + [(k, v) for k, v in fitted.items() if k.endswith("_")]
    for key, value in items:
        if isinstance(value, dict):
            pairs = [(f"{key}[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            pairs = [(f"{key}[{i}]", v[1] if isinstance(v, tuple) and len(v) == 2 else v)
                     for i, v in enumerate(value)]
        else:
            pairs = [(key, value)]
        for where, v in pairs:
            if v is estimator or isinstance(v, (str, bytes, np.ndarray)) \
                    or not hasattr(v, "get_params"):
                continue
            found = _find_pyod(v, f"{path}.{where}")
            if found is not None:
                return found
    return None


def _refusal(obj, path):
    what = f"{path}: a {type(obj).__module__}.{type(obj).__qualname__}"
    if _is_pyod_like(obj):
        return _pyod_refusal(obj, path)
    if isinstance(obj, torch.nn.Module):
        return (f"{what} (a torch module) cannot be saved securely: only the inverter's "
                "Linear/Conv2d/ConvTranspose2d layer and the detector's built-in networks "
                "('mlp', 'lenet') are stored as arrays plus a description. Use a built-in "
                "network, or save with joblib.dump for trusted use only.")
    if callable(obj):
        return (f"{what} is a callable: functions cannot be saved securely (loading one "
                "means importing and running code). Use a built-in name instead (for an "
                "activation: 'tanh', 'sigmoid' or 'identity'), or save with joblib.dump "
                "for trusted use only.")
    return (f"{what} is not in the allow-list of flipad_sklearn.persistence "
            f"({sorted(ALLOWED_CLASSES)}); save with joblib.dump for trusted use only.")


def save(estimator, path, *, format="flipad"):
    """Save a (fitted or not) estimator in the secure format.

    Parameters
    ----------
    estimator : estimator
        An estimator of :data:`ALLOWED_CLASSES` (e.g. the pipeline of
        :func:`flipad_sklearn.pipeline.make_flipad`), any parameters and
        fitted attributes made of numbers, strings, arrays, lists, tuples,
        dicts and further allowed estimators.
    path : str or path-like
        Written atomically (a temporary file, then renamed).  The extension
        ``.flipad`` is a convention; none is added.
    format : {"flipad", "skops"}, default="flipad"
        ``"flipad"``: the package's own format (numpy arrays + a JSON spec).
        ``"skops"``: :func:`skops.io.dump` (needs the optional ``skops``
        package); :func:`load` reads it with an explicit trusted-type list
        (:func:`trusted_skops_types`).

    Raises
    ------
    TypeError
        If anything in the estimator cannot be stored without pickle (a
        callable, a user-defined torch module, a class outside the
        allow-list); the message names where it is.
    """
    if format not in ("flipad", "skops"):
        raise ValueError(f"format must be 'flipad' or 'skops', got {format!r}.")
    if format == "skops":
        _save_skops(estimator, os.fspath(path))
        return
    # before anything is encoded (the inverter's layer can be large)
    found = _find_pyod(estimator, type(estimator).__name__)
    if found is not None:
        raise TypeError(_pyod_refusal(*found))
    enc = _Encoder()
    root = enc.encode(estimator, type(estimator).__name__)
    spec = {
        "format": FORMAT,
        "format_version": enc.version,
        "versions": {"flipad_sklearn": __version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__, "torch": torch.__version__},
        "root": root,
    }
    blob = np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8)

    def write(fh):                      # a file object: savez adds no ".npz"
        np.savez(fh, **{SPEC_KEY: blob}, **enc.arrays)

    _write_atomically(os.fspath(path), write)


def _threshold_saveable(obj, path):
    """load refuses a detector whose threshold is not the conformal quantile of its
    held-out scores at its ``fnr``: say so at save (``set_params(fnr=...)`` on a
    fitted detector leaves the threshold of the old fnr)."""
    if not (isinstance(obj, ConformalDecisionMixin) and hasattr(obj, "threshold_")
            and getattr(obj, "validation_scores_", None) is not None):
        return
    try:
        _check._check_threshold(obj, path, bound_required=False)
    except UnsafeFileError as exc:
        raise ValueError(f"{exc} (load would refuse the file): recalibrate it with "
                         f"flipad_sklearn.detection.conformal.calibrate(detector, X_of_G) "
                         f"or set fnr back before saving.") from None


_UMASK_LOCK = threading.Lock()


def file_mode(path):
    """The permissions a new file at ``path`` gets: the existing file's, or
    ``0o666`` less the umask (what ``open(path, "w")`` would give)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    with _UMASK_LOCK:                   # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _write_atomically(path, write, by_name=False):
    """``write(fh)`` into a new temporary file next to ``path``, then rename it
    (``write(name)`` with ``by_name``).

    The temporary name is unique (:func:`tempfile.mkstemp`), so threads and
    processes saving to one path at once never write into the same file: the
    last rename wins and ``path`` is always one complete file.  A failed or
    interrupted write leaves ``path`` as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        if by_name:                     # a writer that opens the file itself
            os.close(fd)
            write(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode(path))     # mkstemp makes 0600: as open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------- skops
def _skops():
    try:
        import skops.io
    except ImportError as exc:
        raise ImportError("format='skops' needs the optional package skops "
                          "(pip install skops); the default format needs nothing.") from exc
    return skops.io


def trusted_skops_types():
    """The types :func:`load` trusts in a skops file, beyond skops' own defaults.

    The estimators of :data:`ALLOWED_CLASSES` (by their module path) and
    ``torch.device``; skops already trusts numpy and scikit-learn types.
    """
    return sorted({f"{cls.__module__}.{cls.__qualname__}" for cls in ALLOWED_CLASSES.values()}
                  | {"torch.device"})


def _save_skops(estimator, path):
    sio = _skops()
    _write_atomically(path, lambda name: sio.dump(estimator, name), by_name=True)


def _load_skops(path):
    sio = _skops()
    trusted = set(trusted_skops_types())
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise UnsafeFileError(f"{path!r} (a skops file) holds types outside the trusted "
                              f"list: {untrusted}; refusing to load it.")
    return sio.load(path, trusted=sorted(trusted))


def _is_skops(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return "schema.json" in zf.namelist()
    except Exception:
        # a corrupt or crafted zip can fail in many ways (BadZipFile,
        # NotImplementedError for an unknown zip version, ValueError, OSError):
        # it is no skops file, and the own format's reader refuses it cleanly
        return False


# ------------------------------------------------------------------------ decode
def sniff(path):
    """What a file looks like: ``"flipad"``, ``"skops"``, ``"pickle"`` or ``"unknown"``.

    Reads the first bytes, and for a zip archive its list of members: a
    skops file (``save(format="skops")``) is a zip with a ``schema.json``,
    the package's own format a zip (npz) without one.  ``"pickle"`` (pickle
    or joblib) also covers compressed joblib files (zlib, gzip, bz2, xz, lz4).
    Both ``"flipad"`` and ``"skops"`` files are read by :func:`load`
    without unpickling.
    """
    with open(os.fspath(path), "rb") as fh:
        head = fh.read(8)
    if head.startswith(_ZIP_MAGIC):
        return "skops" if _is_skops(path) else "flipad"
    if head[:1] == b"\x80" or head[:1] == b"\x78" or head.startswith(
            (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"ZF")):
        return "pickle"
    return "unknown"


class _Archive:
    """The members of a ``.flipad`` zip, each read at most once and within a byte budget.

    ``numpy.load`` would decompress a member anew for every reference to it and
    trusts the shape in each ``.npy`` header; here every member is read once
    (a second reference is refused: :func:`save` never shares one), its header
    is checked against its length, and the total of decompressed bytes is
    capped by ``max_bytes`` *before* anything is decompressed.
    """

    def __init__(self, zf, max_bytes):
        self.zf = zf
        self.left = max_bytes
        self.max_bytes = max_bytes
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeFileError(f"it has {len(infos)} members (at most {MAX_MEMBERS}).")
        self.members = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.filename[:-4] in self.members:
                raise UnsafeFileError(f"unexpected or repeated member {info.filename!r}.")
            self.members[info.filename[:-4]] = info
        self.read = set()

    def raw(self, key, limit=None):
        """The bytes of member ``key`` (a second read is refused)."""
        if not isinstance(key, str) or key not in self.members:
            raise UnsafeFileError(f"array {str(key)[:40]!r} is missing.")
        if key in self.read:
            raise UnsafeFileError(f"array {key!r} is referenced twice (a file written by "
                                  "save references each array once).")
        self.read.add(key)
        info = self.members[key]
        cap = self.left if limit is None else min(self.left, limit)
        if info.file_size > cap:
            if limit is not None and limit < self.left:
                raise UnsafeFileError(f"member {key!r} decompresses to {info.file_size} "
                                      f"bytes, over the limit of {limit}.")
            raise UnsafeFileError(
                f"array {key!r} decompresses to {info.file_size} bytes, over the "
                f"max_bytes={self.max_bytes} budget ({self.used} bytes already read); "
                "pass a larger max_bytes to load only if you trust the file.")
        buf = bytearray(info.file_size)
        view = memoryview(buf)
        n = 0
        with self.zf.open(info) as fh:
            # in chunks: ZipExtFile.readinto would read the whole member into a
            # second buffer first
            while n < len(buf):
                chunk = fh.read(min(_CHUNK, len(buf) - n))
                if not chunk:
                    break
                view[n:n + len(chunk)] = chunk
                n += len(chunk)
            if n != info.file_size or fh.read(1):
                raise UnsafeFileError(f"array {key!r} does not have its declared size.")
        self.left -= info.file_size
        return buf

    @property
    def used(self):
        """Bytes decompressed so far."""
        return self.max_bytes - self.left

    def array(self, key):
        buf = self.raw(key)
        fh = io.BytesIO(bytes(buf[:_HEADER_BYTES]))    # the header only: BytesIO copies
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                    fh, max_header_size=4096)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    fh, max_header_size=4096)
            else:
                raise ValueError(f"npy version {version}")
        except (ValueError, SyntaxError, TypeError) as exc:
            raise UnsafeFileError(f"array {key!r} has an invalid header ({exc}).") from None
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None \
                or dtype.subdtype is not None:
            raise UnsafeFileError(f"array {key!r} has the unsupported dtype {dtype}.")
        count = 1
        for dim in shape:
            if not isinstance(dim, int) or dim < 0:
                raise UnsafeFileError(f"array {key!r} has an invalid shape {shape}.")
            count *= dim
        offset = fh.tell()
        if count * dtype.itemsize != len(buf) - offset:
            raise UnsafeFileError(
                f"array {key!r}: its header says shape {shape} of {dtype} "
                f"({count * dtype.itemsize} bytes) but it holds {len(buf) - offset}.")
        a = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
        return a.reshape(shape, order="F" if fortran else "C")


def _check_depth(obj):
    """Refuse a spec nested deeper than :data:`MAX_SPEC_DEPTH` (no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SPEC_DEPTH:
            raise UnsafeFileError(f"its spec is nested deeper than {MAX_SPEC_DEPTH} levels.")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


class _Decoder:
    def __init__(self, archive, ctx):
        self.archive = archive
        self.ctx = ctx

    def _array(self, key):
        if key == SPEC_KEY:
            raise UnsafeFileError("the spec is referenced as an array.")
        return self.archive.array(key)

    def decode(self, obj):
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict) or "__type__" not in obj:
            raise UnsafeFileError(f"unexpected entry {str(obj)[:80]!r}.")
        kind = obj["__type__"]
        if kind == "ndarray":
            return self._array(obj["key"])
        if kind == "strarray":
            a = self._array(obj["key"])
            if a.dtype.kind != "U":
                raise UnsafeFileError("a string array that holds no strings.")
            return a.astype(object)
        if kind == "npscalar":
            a = self._array(obj["key"])
            if a.ndim != 0:
                raise UnsafeFileError(f"a numpy scalar stored with shape {a.shape}.")
            return a[()]
        if kind == "tensor":
            dtype = _TORCH_DTYPES.get(obj["dtype"])
            if dtype is None:
                raise UnsafeFileError(f"unknown tensor dtype {str(obj['dtype'])[:40]!r}.")
            a = self._array(obj["key"])
            if a.dtype.kind not in "biuf":
                raise UnsafeFileError(f"a tensor stored as {a.dtype}.")
            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
        if kind == "tuple":
            return tuple(self.decode(v) for v in obj["items"])
        if kind == "dict":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in obj["items"]}
        if kind == "torch.device":
            return torch.device(str(obj["value"]))
        if kind == "torch.dtype":
            dtype = _TORCH_DTYPES.get(obj["value"])
            if dtype is None:
                raise UnsafeFileError(f"unknown torch dtype {str(obj['value'])[:40]!r}.")
            return dtype
        if kind == "np.dtype":
            dtype = np.dtype(str(obj["value"]))
            if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
                raise UnsafeFileError(f"unsupported dtype {dtype}.")
            return dtype
        if kind == "RandomState":
            rs = np.random.RandomState()
            keys = self._array(obj["keys"])
            if keys.shape != (624,) or keys.dtype.kind not in "ui":
                raise UnsafeFileError("a random state whose keys are not 624 integers.")
            rs.set_state(("MT19937", keys.astype(np.uint32), int(obj["pos"]),
                          int(obj["has_gauss"]), float(obj["cached"])))
            return rs
        if kind == "estimator":
            name = obj.get("class")
            cls = ALLOWED_CLASSES.get(name)
            if cls is None:
                raise UnsafeFileError(
                    f"it holds a {str(name)[:80]!r}, which is not in the allow-list of "
                    f"flipad_sklearn.persistence ({sorted(ALLOWED_CLASSES)}); refusing to "
                    "load it.")
            state = self.decode(obj["state"])
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise UnsafeFileError(f"the state of a {name} is not a dict of names.")
            return _check.rebuild(cls, name, state, self.ctx)
        raise UnsafeFileError(f"unknown entry type {str(kind)[:40]!r}.")


def _hashable(k):
    if not isinstance(k, (str, int, float, bool, type(None), tuple)):
        raise UnsafeFileError("a dict key that is not a plain value.")
    return k


def _check_format_version(path, value):
    if type(value) is not int:
        raise UnsafeFileError(
            f"{path!r}: format_version must be an integer, got {type(value).__name__} "
            f"{value!r}; the file was not written by flipad_sklearn.persistence.save.")
    if value > FORMAT_VERSION:
        raise UnsafeFileError(
            f"{path!r} was written in format version {value}; this flipad_sklearn "
            f"({__version__}) reads up to {FORMAT_VERSION}. Upgrade flipad_sklearn.")
    if value < 1:
        raise UnsafeFileError(f"{path!r}: format_version {value} does not exist (the "
                              f"first is 1).")


def load(path, *, max_bytes=None):
    """Load an estimator written by :func:`save`, without unpickling anything.

    Files written with ``format="skops"`` are recognised and read with
    :func:`skops.io.load`, trusting only :func:`trusted_skops_types` beyond
    skops' defaults.

    A file is treated as hostile until checked: its decompressed arrays may
    not exceed ``max_bytes`` in total (each read once, its header checked
    against its length), its spec is at most :data:`MAX_SPEC_BYTES` and
    :data:`MAX_SPEC_DEPTH` levels deep, every estimator's state is checked
    against that estimator's invariants (shapes consistent with each other
    and with the spec, dtypes, finite values) before the estimator, torch or
    libsvm receives it, and the memory that scoring one sample will need is
    estimated from the spec and compared with ``max_bytes`` before anything
    is allocated (a larger stored batch size is lowered to fit).

    Parameters
    ----------
    path : str or path-like
    max_bytes : int, default=None
        The memory, in bytes, the file may make this process use: the
        decompressed arrays, and the working memory of scoring one batch.
        ``None``: :data:`DEFAULT_MAX_BYTES` (2 GiB; a module attribute you
        may change).  The budget is yours, never read from the file: raise
        it for large generators you trust (a 512x512 Stable Diffusion
        decoder needs about 4 GiB per image).

    Returns
    -------
    estimator
        Fitted as it was saved; torch layers and networks on the CPU.

    Raises
    ------
    UnsafeFileError
        For every file that is not loaded: not in the secure format (a
        pickle or joblib file is refused without being read further), a
        class outside :data:`ALLOWED_CLASSES`, a corrupt, truncated or
        inconsistent file, one over ``max_bytes``, one written by a newer
        format version, or state this version cannot use ("re-fit with this
        version").  It is a ``ValueError``; the message says what is wrong.

    Warns
    -----
    FileVersionWarning
        When the file was written by another flipad_sklearn version (and
        names the parameters that were missing and got their defaults).
    """
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) \
            or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}.")
    path = os.fspath(path)
    kind = sniff(path)
    if kind not in ("flipad", "skops"):
        what = ("a pickle/joblib file" if kind == "pickle"
                else "not a file written by flipad_sklearn.persistence.save")
        raise UnsafeFileError(
            f"{path!r} is {what}. flipad_sklearn.persistence.load reads only its own "
            "format (numpy arrays + a JSON spec) and never unpickles: loading a pickle "
            "can run arbitrary code. If you made the file yourself or trust its source, "
            "load it with joblib.load.")
    try:
        if _is_skops(path):
            return _load_skops(path)
        return _load_flipad(path, int(max_bytes))
    except UnsafeFileError as exc:
        if path in str(exc):
            raise
        raise UnsafeFileError(f"{path!r} is not a valid flipad_sklearn file: "
                              f"{exc}") from exc
    except Exception as exc:
        # our own code failed on plain data (MemoryError and RecursionError
        # included): the file is malformed, whatever the exception
        raise UnsafeFileError(f"{path!r} is not a valid flipad_sklearn file: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def _load_flipad(path, max_bytes):
    with zipfile.ZipFile(path) as zf:
        archive = _Archive(zf, max_bytes)
        if SPEC_KEY not in archive.members:
            raise UnsafeFileError(f"{path!r} is a zip/npz archive but not a flipad_sklearn "
                                  "file (it has no spec).")
        raw = archive.raw(SPEC_KEY, limit=MAX_SPEC_BYTES + 256)
        spec_array = _npy_bytes(raw)
        try:
            spec = json.loads(spec_array.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise UnsafeFileError(f"corrupt spec ({str(exc)[:100]}).") from None
        _check_depth(spec)
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise UnsafeFileError(f"{path!r} is not a flipad_sklearn file.")
        _check_format_version(path, spec.get("format_version"))
        versions = spec.get("versions")
        written_by = versions.get("flipad_sklearn") if isinstance(versions, dict) else None
        ctx = _check.Context(max_bytes=max_bytes, version=written_by, archive=archive)
        if written_by != __version__:
            ctx.note(f"written by flipad_sklearn {str(written_by)[:40]!r}, this is "
                     f"{__version__}")
        est = _Decoder(archive, ctx).decode(spec.get("root"))
        _check.check_root(est, ctx)
    ctx.warn(path)
    return est


def _npy_bytes(buf):
    """The payload of a 1-D uint8 ``.npy`` member (the spec)."""
    fh = io.BytesIO(bytes(buf[:_HEADER_BYTES]))
    try:
        np.lib.format.read_magic(fh)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=4096)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UnsafeFileError(f"the spec has an invalid header ({exc}).") from None
    if dtype != np.uint8 or len(shape) != 1 or len(buf) < fh.tell() \
            or shape[0] != len(buf) - fh.tell():
        raise UnsafeFileError("the spec is not a byte string of its declared length.")
    return bytes(buf[fh.tell():])
