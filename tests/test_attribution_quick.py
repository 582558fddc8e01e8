"""The attribution benchmark's --quick mode, end to end (zoo training included).

About a minute on one thread: trains six 1-epoch generators into a temporary
cache, runs every method under both protocols and writes the tables.
"""

import importlib
import os
import sys
import warnings

import numpy as np
import pytest

from flipad_sklearn import ThresholdWarning

pytestmark = pytest.mark.usefixtures("torch_single_thread")


#: the checkout's root: ``benchmarks`` is a package beside ``flipad_sklearn``, not installed
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import(name):
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return importlib.import_module(name)


def _load_benchmark():
    return _import("benchmarks.attribution")


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


def _load_zoo_module():
    return _import("benchmarks.train_zoo")


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    """One cache of the quick zoo for the tests of the new parts."""
    return str(tmp_path_factory.mktemp("zoo"))


def test_quick_efficiency(tmp_path, quick_zoo):
    bench = _load_benchmark()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        rows, md = bench.run_efficiency("quick", str(tmp_path), cache_dir=quick_zoo,
                                        log=lambda *a: None)
    cfg = bench.EFFICIENCY["quick"]
    # n x (0, 1 shadow) x methods x (clean, jpeg) x 3 groups
    assert len(rows) == len(cfg["n_gs"]) * 2 * len(bench.DISCRIMINATING_METHODS) * 2 * 3
    for name in ("efficiency.csv", "efficiency.md", "efficiency.png"):
        assert (tmp_path / name).stat().st_size > 0
    # the unsupervised OCSVM ignores the shadows: its rows are copies
    oc = {(r["n_g"], r["n_shadows"], r["test"], r["group"]): r["auc"] for r in rows
          if r["method"] == "FLIPAD+OCSVM"}
    assert all(oc[n, 1, t, g] == oc[n, 0, t, g] for (n, _, t, g) in oc)
    flipad = [r for r in rows if r["method"] == "FLIPAD" and r["n_g"] == max(cfg["n_gs"])
              and r["n_shadows"] == 1 and r["test"] == "clean"]
    assert min(r["auc"] for r in flipad) >= 0.8
    assert "| 40 | 0 | FLIPAD |" in md


def test_quick_finetune(tmp_path, quick_zoo):
    bench = _load_benchmark()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThresholdWarning)
        rows, md = bench.run_finetune("quick", str(tmp_path), cache_dir=quick_zoo,
                                      log=lambda *a: None)
    cfg = bench.FINETUNE["quick"]
    per_method = 3 + len(cfg["checkpoint_epochs"]) + len(cfg["finetune_steps"])
    assert len(rows) == per_method * len(bench.DISCRIMINATING_METHODS)
    for name in ("finetune.csv", "finetune.md", "finetune.png", "checkpoints.png"):
        assert (tmp_path / name).stat().st_size > 0
    # 0 fine-tuning steps: G itself (another draw), attributed to G and
    # indistinguishable from G's own test samples
    zero = [r for r in rows if r["family"] == "finetune" and r["x"] == 0]
    assert len(zero) == len(bench.DISCRIMINATING_METHODS)
    for r in zero:
        assert r["attr@0.05"] >= 0.75, r
        assert 0.25 <= r["auc"] <= 0.75, r
    assert "## Fine-tuned copies of G" in md


def test_finetune_generator_zero_steps_is_g_and_deterministic(tmp_path):
    import torch

    tz = _load_zoo_module()
    X = tz.mnist_train_images(64, 32)
    G = tz.ensure_image_zoo(str(tmp_path), ("dcgan",), (0,), n_train=64, image_size=32,
                            epochs=1, log=lambda *a: None)["dcgan", 0]
    state = torch.random.get_rng_state()
    copies = tz.finetune_generator(G, X, (0, 3), warmup=2, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), state)   # global RNG untouched
    x = G.sample(8, random_state=5)
    np.testing.assert_array_equal(copies[0].sample(8, random_state=5), x)
    assert np.abs(copies[3].sample(8, random_state=5) - x).max() > 1e-3
    again = tz.finetune_generator(G, X, (3,), warmup=2, batch_size=16)
    np.testing.assert_array_equal(again[3].sample(8, random_state=5),
                                  copies[3].sample(8, random_state=5))
    assert copies[3].info["finetune_steps"] == 3


def test_checkpoints_must_be_on_the_trajectory(tmp_path):
    from flipad_sklearn.generators import load_generator, save_generator

    tz = _load_zoo_module()
    kw = dict(n_train=128, image_size=32, epochs=2, log=lambda *a: None)
    ck = tz.ensure_checkpoints(str(tmp_path), ("dcgan",), (0,), (1, 3), **kw)
    full = load_generator(tz.image_checkpoint(str(tmp_path), "dcgan", 0, 32, 2, 128))
    # one epoch = 2 batches of 64: a prefix of the 2-epoch run, the 3-epoch run continues it
    assert len(full.history["d_loss"]) == 4
    assert ck["dcgan", 0, 1].history["d_loss"] == full.history["d_loss"][:2]
    assert ck["dcgan", 0, 3].history["d_loss"][:4] == full.history["d_loss"]
    # a checkpoint of another run (here: a tampered history) is refused
    path = tz.image_checkpoint(str(tmp_path), "dcgan", 0, 32, 1, 128)
    G = load_generator(path)
    G.history["d_loss"] = [v + 1e-3 for v in G.history["d_loss"]]
    save_generator(G, path)
    with pytest.raises(RuntimeError, match="not on the zoo generator's trajectory"):
        tz.ensure_checkpoints(str(tmp_path), ("dcgan",), (0,), (1,), **kw)


def test_benchmark_inverts_what_the_recipe_scores():
    """The parts that invert once (image, efficiency, published) use the
    pipeline's own input contract: floats are rounded to 8 bits exactly as
    make_flipad's pipeline rounds them (issue 27: the benchmark inverted the
    floats and so skipped the recipe's rounding)."""
    import torch
    from torch import nn

    bench = _load_benchmark()
    M = _import("benchmarks.attribution_methods")
    P = _import("benchmarks.attribution_protocol")
    cfg = bench.CONFIGS["quick"]
    # the quick config asks the inverter for nothing the defaults do not
    assert cfg["max_iter"] is None and cfg["tol"] is None

    class TinyG(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.final_layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
            with torch.no_grad():
                for p in self.final_layer.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    G = TinyG()
    ctx = M.Context(G, np.zeros((4, 4, 4)), cfg, random_state=0)
    X = np.tanh(np.random.default_rng(0).normal(size=(6, 1, 8, 8))).astype(np.float32)
    X8 = (np.round((X + 1) * 127.5) / 127.5 - 1).astype(np.float32)
    pipe = M.build("FLIPAD", ctx)
    assert pipe.quantize == "uint8"
    Z, = P.invert_all(M.inverter(ctx), [X])
    np.testing.assert_allclose(Z, pipe[:1].fit(X).transform(X8), rtol=1e-6, atol=1e-8)
    # what the benchmark did before: the floats themselves, other activations
    assert np.abs(Z - pipe[0].fit(X).transform(X)).max() > 1e-3


def test_published_immunise_recipe_is_make_flipads():
    """``--part published --recipe immunise`` perturbs the training pool exactly
    as ``make_flipad(..., immunise="published", random_state=seed)`` perturbs
    its training images at fit (the numbers it writes are the option's)."""
    from torch import nn

    from flipad_sklearn.pipeline import make_flipad

    bench = _load_benchmark()
    X = np.tanh(np.random.default_rng(0).normal(size=(40, 1, 8, 8))).astype(np.float32)
    layer = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    pipe = make_flipad(layer, "tanh", np.zeros((4, 4, 4)), immunise="published",
                       random_state=3, device="cpu")
    Xb = bench.immunise_mixture(X, 3)
    assert Xb.shape == X.shape and Xb.dtype == X.dtype
    np.testing.assert_array_equal(Xb, pipe._immunised(X))
    assert not np.array_equal(Xb, X)
    with pytest.raises(ValueError, match="recipe"):
        bench.run_published(recipe="mixture")
