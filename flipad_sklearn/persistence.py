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

Examples
--------
>>> from flipad_sklearn import persistence
>>> persistence.save(pipe, "detector.flipad")  # doctest: +SKIP
>>> pipe = persistence.load("detector.flipad")  # doctest: +SKIP
"""

import json
import os

import numpy as np
import sklearn
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from ._version import __version__
from .baselines import ConformalDetector, FingerprintCorrelation
from .conformal_pipeline import ConformalPipeline
from .deepsad import FLIPADDetector
from .features import ActivationPooling, ChannelSelector, DCTFeatures, GeneratorStandardScaler
from .inversion import FinalLayerInverter
from .multi import OwnedModelsAttributor
from .perturbations import GaussianBlur, GaussianNoise, JPEGCompression, ResizedCrop
from .skip_inversion import SkipInverter
from .streaming import StreamingFeatures

__all__ = ["ALLOWED_CLASSES", "FORMAT", "FORMAT_VERSION", "UnsafeFileError", "load",
           "save", "sniff", "trusted_skops_types"]

FORMAT = "flipad_sklearn"
FORMAT_VERSION = 1
SPEC_KEY = "__spec__"

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
    "flipad_sklearn.StreamingFeatures": StreamingFeatures,
    "flipad_sklearn.GaussianBlur": GaussianBlur,
    "flipad_sklearn.GaussianNoise": GaussianNoise,
    "flipad_sklearn.JPEGCompression": JPEGCompression,
    "flipad_sklearn.ResizedCrop": ResizedCrop,
}
_NAMES = {cls: name for name, cls in ALLOWED_CLASSES.items()}
_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.bool)}

_ZIP_MAGIC = b"PK\x03\x04"


class UnsafeFileError(ValueError):
    """The file is not in the secure format (e.g. a pickle or joblib file)."""


# ------------------------------------------------------------------------ encode
class _Encoder:
    def __init__(self):
        self.arrays = {}

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
            return {"__type__": "estimator", "class": _NAMES[cls],
                    "state": self._dict(state, path, lambda k: f"{path}.{k}")}
        raise TypeError(_refusal(obj, path))

    def _dict(self, obj, path, child):
        return {"__type__": "dict",
                "items": [[self.encode(k, f"{path} key"), self.encode(v, child(k))]
                          for k, v in obj.items()]}


def _refusal(obj, path):
    what = f"{path}: a {type(obj).__module__}.{type(obj).__qualname__}"
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
    enc = _Encoder()
    root = enc.encode(estimator, type(estimator).__name__)
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {"flipad_sklearn": __version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__, "torch": torch.__version__},
        "root": root,
    }
    blob = np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:     # a file object: savez adds no ".npz"
            np.savez(fh, **{SPEC_KEY: blob}, **enc.arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        sio.dump(estimator, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_skops(path):
    sio = _skops()
    trusted = set(trusted_skops_types())
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise UnsafeFileError(f"{path!r} (a skops file) holds types outside the trusted "
                              f"list: {untrusted}; refusing to load it.")
    return sio.load(path, trusted=sorted(trusted))


def _is_skops(path):
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return "schema.json" in zf.namelist()
    except zipfile.BadZipFile:
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


class _Decoder:
    def __init__(self, npz):
        self.npz = npz

    def _array(self, key):
        if not isinstance(key, str) or key == SPEC_KEY or key not in self.npz.files:
            raise ValueError(f"Corrupt file: array {key!r} is missing.")
        return self.npz[key]

    def decode(self, obj):
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict) or "__type__" not in obj:
            raise ValueError(f"Corrupt file: unexpected entry {str(obj)[:80]!r}.")
        kind = obj["__type__"]
        if kind == "ndarray":
            return self._array(obj["key"])
        if kind == "strarray":
            a = self._array(obj["key"])
            if a.dtype.kind != "U":
                raise ValueError("Corrupt file: a string array that holds no strings.")
            return a.astype(object)
        if kind == "npscalar":
            return self._array(obj["key"])[()]
        if kind == "tensor":
            dtype = _TORCH_DTYPES.get(obj["dtype"])
            if dtype is None:
                raise ValueError(f"Corrupt file: unknown tensor dtype {obj['dtype']!r}.")
            return torch.from_numpy(self._array(obj["key"]).copy()).to(dtype)
        if kind == "tuple":
            return tuple(self.decode(v) for v in obj["items"])
        if kind == "dict":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in obj["items"]}
        if kind == "torch.device":
            return torch.device(str(obj["value"]))
        if kind == "torch.dtype":
            dtype = _TORCH_DTYPES.get(obj["value"])
            if dtype is None:
                raise ValueError(f"Corrupt file: unknown torch dtype {obj['value']!r}.")
            return dtype
        if kind == "np.dtype":
            dtype = np.dtype(str(obj["value"]))
            if dtype.hasobject:
                raise ValueError("Corrupt file: object dtype.")
            return dtype
        if kind == "RandomState":
            rs = np.random.RandomState()
            rs.set_state(("MT19937", self._array(obj["keys"]), int(obj["pos"]),
                          int(obj["has_gauss"]), float(obj["cached"])))
            return rs
        if kind == "estimator":
            name = obj.get("class")
            cls = ALLOWED_CLASSES.get(name)
            if cls is None:
                raise UnsafeFileError(
                    f"The file holds a {name!r}, which is not in the allow-list of "
                    f"flipad_sklearn.persistence ({sorted(ALLOWED_CLASSES)}); refusing to "
                    "load it.")
            state = self.decode(obj["state"])
            if not isinstance(state, dict):
                raise ValueError(f"Corrupt file: the state of a {name} is not a dict.")
            est = cls.__new__(cls)
            est.__setstate__(state)
            return est
        raise ValueError(f"Corrupt file: unknown entry type {kind!r}.")


def _hashable(k):
    if isinstance(k, (list, np.ndarray)):
        raise ValueError("Corrupt file: a dict key that is not hashable.")
    return k


def load(path):
    """Load an estimator written by :func:`save`, without unpickling anything.

    Files written with ``format="skops"`` are recognised and read with
    :func:`skops.io.load`, trusting only :func:`trusted_skops_types` beyond
    skops' defaults.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    estimator
        Fitted as it was saved; torch layers and networks on the CPU.

    Raises
    ------
    UnsafeFileError
        If the file is not in the secure format (a pickle or joblib file is
        refused without being read further) or names a class outside
        :data:`ALLOWED_CLASSES`.
    ValueError
        If the file is corrupt.
    """
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
    if kind == "skops":
        return _load_skops(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path!r} is not a valid flipad_sklearn file: "
                         f"{type(exc).__name__}: {exc}") from exc
    with npz:
        if SPEC_KEY not in npz.files:
            raise UnsafeFileError(f"{path!r} is a zip/npz archive but not a flipad_sklearn "
                                  "file (it has no spec).")
        try:
            spec = json.loads(npz[SPEC_KEY].tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path!r}: corrupt spec ({exc}).") from exc
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise UnsafeFileError(f"{path!r} is not a flipad_sklearn file.")
        if not isinstance(spec.get("format_version"), int) \
                or spec["format_version"] > FORMAT_VERSION:
            raise ValueError(
                f"{path!r} was written in format version {spec.get('format_version')!r}; "
                f"this flipad_sklearn ({__version__}) reads up to {FORMAT_VERSION}. "
                "Upgrade flipad_sklearn.")
        try:
            return _Decoder(npz).decode(spec["root"])
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            # a malformed spec or state: our own code failed on plain data
            raise ValueError(f"{path!r}: corrupt flipad_sklearn file "
                             f"({type(exc).__name__}: {exc}).") from exc
