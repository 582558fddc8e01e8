"""Hostile detector files: thousands of mutations of a valid one.

``persistence.load`` must answer every file with either an estimator that
scores finite values (or, where its network overflows, refuses a verdict
with a ``FloatingPointError``) or the one documented exception
(:class:`~flipad_sklearn.persistence.UnsafeFileError`), within bounded
memory and without crashing the process.  The mutations are those of a
hostile sender: bit flips and truncations of the bytes; swapped, resized,
re-typed and inflated arrays; array headers that lie about their shape;
spec values replaced, removed or referenced twice; NaN and infinity in the
state.  Seeded (``numpy.random.default_rng``): a failure reproduces.
"""

import io
import json
import resource
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import persistence
from flipad_sklearn.pipeline import make_flipad

N_CASES = 1600
BUDGET = 64 * 2 ** 20          # max_bytes of every load: 64 MiB
# the whole run's growth of the resident set may not exceed this (the budget,
# plus torch's and the allocator's overhead for the scoring of valid loads)
RSS_GROWTH_LIMIT = 400 * 2 ** 20

pytestmark = pytest.mark.filterwarnings("ignore")


def _layer():
    g = torch.Generator().manual_seed(0)
    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
        layer.bias.fill_(0.05)
    return layer


@pytest.fixture(scope="module")
def valid():
    """A small fitted FLIPAD pipeline (with a OneClassSVM guard), saved."""
    layer = _layer()
    rng = np.random.default_rng(0)
    A = np.maximum(rng.normal(size=(90, 4, 6, 6)), 0).astype(np.float32)
    A[60:, :2] += 1.5
    with torch.no_grad():
        X = torch.tanh(layer(torch.from_numpy(A))).numpy()
    y = np.r_[np.ones(60), -np.ones(30)]
    pipe = make_flipad(layer, "tanh", A[:60].mean(axis=0), positive=True, tol=1e-3,
                       max_iter=30, n_channels=3, fnr=0.1, random_state=0, device="cpu",
                       # combine="mean": the guard kept (auto drops it with negatives)
                       detector_params=dict(hidden_sizes=(8,), rep_dim=4, n_epochs=2,
                                            combine="mean"))
    pipe.fit(X, y)
    path_bytes = _save_bytes(pipe)
    npz = np.load(io.BytesIO(path_bytes), allow_pickle=False)
    spec = json.loads(npz["__spec__"].tobytes())
    arrays = {k: npz[k] for k in npz.files if k != "__spec__"}
    return path_bytes, spec, arrays, X[:3]


def _save_bytes(est):
    import tempfile
    import os

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.flipad")
        persistence.save(est, p)
        with open(p, "rb") as fh:
            return fh.read()


def _zip(spec_blob, members, compress=True):
    """A .flipad archive of ``members`` (name -> raw .npy bytes) and the spec."""
    out = io.BytesIO()
    ct = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", ct) as zf:
        zf.writestr("__spec__.npy", _npy(np.frombuffer(spec_blob, np.uint8)))
        for name, raw in members.items():
            zf.writestr(name + ".npy", raw)
    return out.getvalue()


def _npy(a):
    bio = io.BytesIO()
    np.lib.format.write_array(bio, np.asarray(a), allow_pickle=False)
    return bio.getvalue()


def _scalars(node, out, parent=None, key=None):
    """Every (container, key) of a JSON scalar in the spec."""
    if isinstance(node, dict):
        for k, v in node.items():
            _scalars(v, out, node, k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _scalars(v, out, node, i)
    elif parent is not None:
        out.append((parent, key))
    return out


def _items_lists(node, out):
    """Every state ``items`` list (for deleting entries)."""
    if isinstance(node, dict):
        if node.get("__type__") == "dict" and isinstance(node.get("items"), list):
            out.append(node["items"])
        for v in node.values():
            _items_lists(v, out)
    elif isinstance(node, list):
        for v in node:
            _items_lists(v, out)
    return out


_LAST = []   # what the last structural mutation did (printed on a failure)
_JUNK = [0, -1, 1, 2, 10 ** 9, 2 ** 63, -(2 ** 40), 0.5, -0.0, 1e308, float("nan"),
         float("inf"), "", "junk", "auto", "cuda", "mlp", "float64", None, True, False,
         [], [1, 2], {}, {"__type__": "ndarray", "key": "a0"},
         {"__type__": "tuple", "items": [10 ** 6, 10 ** 6]},
         {"__type__": "tuple", "items": [0]}, {"__type__": "estimator", "class": "x"}]


def _mutate_structure(rng, spec, arrays):
    """One structural mutation: returns the archive's bytes."""
    spec = json.loads(json.dumps(spec))
    arrays = dict(arrays)
    keys = sorted(arrays)
    op = rng.integers(9)
    _LAST[:] = [int(op)]
    if op == 0:                                     # swap two members
        a, b = rng.choice(keys, 2, replace=False)
        arrays[a], arrays[b] = arrays[b], arrays[a]
    elif op == 1:                                   # resize / inflate a member
        k = keys[rng.integers(len(keys))]
        a = arrays[k]
        shape = list(a.shape) or [1]
        i = rng.integers(len(shape))
        shape[i] = int(rng.choice([0, 1, max(shape[i] - 1, 0), shape[i] + 1,
                                   shape[i] * 1000 + 7]))
        if rng.random() < 0.3:
            shape.append(int(rng.integers(1, 4)))
        arrays[k] = np.zeros(shape, dtype=a.dtype if a.dtype.kind != "U" else "U3")
    elif op == 2:                                   # re-type a member
        k = keys[rng.integers(len(keys))]
        dtype = rng.choice(["int32", "int64", "float32", "float64", "bool", "uint8",
                            "complex128", "U4", "float16", "int8"])
        try:
            arrays[k] = arrays[k].astype(dtype)
        except (ValueError, TypeError):
            arrays[k] = np.zeros(arrays[k].shape, dtype=dtype)
    elif op == 3:                                   # NaN / inf / huge into a float array
        floats = [k for k in keys if arrays[k].dtype.kind == "f" and arrays[k].size]
        k = floats[rng.integers(len(floats))]
        a = arrays[k].copy()
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e300, -1e300])
        _LAST.append(k)
        arrays[k] = a
    elif op in (4, 5):                              # a spec scalar replaced
        targets = _scalars(spec["root"], [])
        parent, key = targets[rng.integers(len(targets))]
        _LAST.append((key, parent[key]))
        parent[key] = _JUNK[rng.integers(len(_JUNK))]
        _LAST.append(parent[key])
    elif op == 6:                                   # a state entry removed
        lists = [x for x in _items_lists(spec["root"], []) if x]
        items = lists[rng.integers(len(lists))]
        j = rng.integers(len(items))
        _LAST.append(str(items[j])[:60])
        del items[j]
    elif op == 7:                                   # an array referenced twice
        targets = [(p, k) for p, k in _scalars(spec["root"], [])
                   if k == "key" and isinstance(p, dict)]
        (p1, _), (p2, _) = (targets[i] for i in rng.choice(len(targets), 2, replace=False))
        p2["key"] = p1["key"]
    else:                                           # a header that lies about the shape
        k = keys[rng.integers(len(keys))]
        raw = bytearray(_npy(arrays[k]))
        text = raw[10:10 + int.from_bytes(raw[8:10], "little")].decode("latin1")
        new = text.replace("'shape': (", "'shape': (" + str(int(rng.choice(
            [3, 10 ** 6, 10 ** 12, 2 ** 62]))) + ", ", 1)
        new = new.rstrip("\n ")
        pad = (64 - (10 + len(new) + 1) % 64) % 64
        hdr = (new + " " * pad + "\n").encode("latin1")
        members = {n: _npy(v) for n, v in arrays.items()}
        members[k] = bytes(raw[:8]) + len(hdr).to_bytes(2, "little") + hdr + \
            bytes(raw[10 + int.from_bytes(raw[8:10], "little"):])
        return _zip(json.dumps(spec).encode(), members)
    return _zip(json.dumps(spec).encode(), {n: _npy(v) for n, v in arrays.items()})


def _mutate_bytes(rng, good):
    b = bytearray(good)
    if rng.random() < 0.5:                          # bit flips
        for _ in range(int(rng.integers(1, 9))):
            b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return bytes(b[:int(rng.integers(0, len(b)))])  # truncation


def _check_one(path, data, X, scored):
    path.write_bytes(data)
    try:
        est = persistence.load(path, max_bytes=BUDGET)
    except persistence.UnsafeFileError:
        return "refused"
    # a file that loads must score: one finite value per sample (values may be
    # extreme: a weight of 1e300 is consistent, if absurd, state), or refuse a
    # verdict with the detector's FloatingPointError where the network overflows
    if scored[0] < 30:
        scored[0] += 1
        inv = est[0]
        inv.max_iter = min(inv.max_iter, 20)     # crash-freedom, not speed, is tested
        try:
            s = est.decision_function(X)
        except FloatingPointError as exc:
            assert "no verdict is given" in str(exc)
            return "loaded"
        assert s.shape == (len(X),) and np.isfinite(s).all(), s
    return "loaded"


def test_mutated_files_raise_only_the_documented_error(valid, tmp_path):
    good, spec, arrays, X = valid
    rng = np.random.default_rng(20261206)
    path = tmp_path / "m.flipad"
    counts = {"refused": 0, "loaded": 0}
    scored = [0]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    n_cases = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny tensors: threads only add overhead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(N_CASES):
                data = (_mutate_bytes(rng, good) if i % 3 == 0
                        else _mutate_structure(rng, spec, arrays))
                try:
                    counts[_check_one(path, data, X, scored)] += 1
                except BaseException:
                    (tmp_path / "failing.flipad").write_bytes(data)
                    print(f"case {i} fails ({_LAST}): kept as "
                          f"{tmp_path / 'failing.flipad'}")
                    raise
                n_cases += 1
    finally:
        torch.set_num_threads(threads)
    elapsed = time.perf_counter() - start
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    print(f"\nfuzz: {n_cases} cases in {elapsed:.1f} s, {counts}, peak RSS growth "
          f"{growth / 2 ** 20:.0f} MiB")
    assert n_cases == N_CASES
    assert counts["refused"] > N_CASES // 2 and counts["loaded"] > 30
    assert growth < RSS_GROWTH_LIMIT
