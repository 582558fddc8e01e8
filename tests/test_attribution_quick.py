"""The attribution benchmark's --quick mode, end to end (zoo training included).

About a minute on one thread: trains six 1-epoch generators into a temporary
cache, runs every method under both protocols and writes the tables.
"""

import importlib.util
import os
import warnings

import numpy as np
import pytest

from flipad_sklearn import ThresholdWarning

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "attribution.py")

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("flipad_attribution_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_end_to_end(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        pairs, markdown = bench.run("quick", str(out), cache_dir=str(tmp_path / "zoo"),
                                    log=lambda *a: None)
    for name in ("pairs.csv", "summary.csv", "results.md"):
        assert (out / name).stat().st_size > 0
    # 2 generators x 2 protocols x 7 methods x 3 test sources
    assert len(pairs) == 2 * 2 * len(bench.METHODS) * 3
    assert {r["method"] for r in pairs} == set(bench.METHODS)
    assert {r["group"] for r in pairs} == set(bench.GROUPS)
    for r in pairs:
        for key in ("acc@0.005", "acc@0.05", "auc"):
            assert 0.0 <= r[key] <= 1.0
    assert "| paper | FLIPAD |" in markdown and "| shadows | FLIPAD |" in markdown

    def flipad(proto, group, key):
        return np.mean([r[key] for r in pairs if r["method"] == "FLIPAD"
                        and r["protocol"] == proto and r["group"] == group])

    # FLIPAD beats chance (0.5) by a wide margin against real data, in both protocols
    for proto in ("paper", "shadows"):
        assert flipad(proto, "real", "acc@0.005") >= 0.9
        assert flipad(proto, "real", "auc") >= 0.95
    # shadows make the unseen same-architecture generator separable
    assert flipad("shadows", "same-arch-unseen", "auc") >= 0.8


def test_quick_tabular_benchmark(tmp_path):
    bench = _load_benchmark()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        pairs, markdown = bench.run_tabular("quick", str(tmp_path / "out"),
                                            cache_dir=str(tmp_path / "zoo"),
                                            log=lambda *a: None)
    assert (tmp_path / "out" / "tabular_results.md").stat().st_size > 0
    # 1 generator x 2 protocols x 5 methods x 4 test sources (real, unseen seed,
    # Gaussian mixture, Gaussian copula)
    assert len(pairs) == 2 * len(bench.TABULAR_METHODS) * 4
    assert {r["source"] for r in pairs} == {"real", "kl_wgan-s1", "gmm", "copula"}
    real = [r for r in pairs if r["method"] == "FLIPAD" and r["group"] == "real"]
    assert all(r["auc"] >= 0.9 and r["acc@0.005"] >= 0.8 for r in real)
