"""``persistence.sniff`` tells the package's own format from a skops file."""
import pickle
import zipfile

import numpy as np
import pytest

from flipad_sklearn import GeneratorStandardScaler, persistence


def _skops_like(path):
    """A zip laid out as skops writes it (a schema.json beside the arrays)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("schema.json", '{"__class__": "X", "protocol": 1}')
        zf.writestr("0.npy", b"")
    return path


def test_sniff_names_each_format(tmp_path):
    own = tmp_path / "d.flipad"
    scaler = GeneratorStandardScaler().fit(np.random.default_rng(0).normal(size=(20, 3)))
    persistence.save(scaler, own)
    assert persistence.sniff(own) == "flipad"
    assert persistence.sniff(_skops_like(tmp_path / "d.skops")) == "skops"
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert persistence.sniff(tmp_path / "p.pkl") == "pickle"
    (tmp_path / "t.txt").write_text("hello")
    assert persistence.sniff(tmp_path / "t.txt") == "unknown"
    # a zip that is neither: the package's reader refuses it as before
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    assert persistence.sniff(tmp_path / "other.zip") == "flipad"
    with pytest.raises(persistence.UnsafeFileError, match="not a valid flipad_sklearn file"):
        persistence.load(tmp_path / "other.zip")


def test_load_reads_a_skops_file_through_skops(tmp_path, monkeypatch):
    """``load`` sends a file that sniffs as skops to the skops reader."""
    path = _skops_like(tmp_path / "d.skops")
    seen = []
    monkeypatch.setattr(persistence, "_load_skops", lambda p: seen.append(p) or "loaded")
    assert persistence.load(path) == "loaded"
    assert seen == [str(path)]
