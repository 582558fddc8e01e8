"""The ``flipad`` command, driven as a user would: subprocesses on a folder of PNGs."""

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flipad_sklearn import cli

PIL = pytest.importorskip("PIL")

GENERATORS = textwrap.dedent("""
    import torch
    from torch import nn

    def _make(seed):
        g = torch.Generator().manual_seed(seed)
        net = nn.Sequential(nn.Linear(8, 8 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (8, 4, 4)),
                            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Tanh())
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        return net.eval()

    G = _make(0)

    def other():
        return _make(1)

    NOT_A_MODULE = 3
""")


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "flipad_sklearn.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def _write_pngs(net, folder, n, seed, prefix=""):
    import torch
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32))
    with torch.no_grad():
        x = net(z).numpy()
    for i, im in enumerate(x):
        pixels = np.clip(np.round((im[0] + 1) * 127.5), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}{i:04d}.png")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: generator module, images of G and of another generator."""
    root = tmp_path_factory.mktemp("flipad_cli")
    (root / "gens.py").write_text(GENERATORS)
    sys.path.insert(0, str(root))
    try:
        import importlib

        gens = importlib.import_module("gens")
        G, H = gens.G, gens.other()
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("gens", None)
    _write_pngs(G, root / "own", 240, seed=1)
    _write_pngs(H, root / "others", 120, seed=2)
    _write_pngs(G, root / "test", 6, seed=3, prefix="g")
    _write_pngs(H, root / "test", 6, seed=4, prefix="h")
    (root / "test" / "broken.png").write_bytes(b"this is not a png")
    PIL.Image.new("L", (10, 10)).save(root / "test" / "big.png")
    (root / "test" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def fitted(workdir):
    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8",
                "--own", "own", "--others", "others", "--fnr", "0.05", "--epochs", "8",
                "--anchor-samples", "500", "-o", "out/detector.flipad"], cwd=workdir)
    return workdir, res


def test_fit_writes_a_detector(fitted):
    workdir, res = fitted
    assert res.returncode == cli.EXIT_OK, res.stderr
    assert (workdir / "out" / "detector.flipad").is_file()
    # progress bars and the summary go to stderr
    assert "final-layer inversion" in res.stderr
    assert "Deep SAD training" in res.stderr and "8/8" in res.stderr   # issue 30
    assert "saved" in res.stderr

    from flipad_sklearn import persistence

    # the secure format by default, with the recipe of make_flipad
    assert persistence.sniff(workdir / "out" / "detector.flipad") == "flipad"
    pipe = persistence.load(workdir / "out" / "detector.flipad")
    assert [n for n, _ in pipe.steps] == ["inv", "pool", "select", "scaler", "det"]
    assert pipe[0].output_shape_ == (1, 8, 8)
    assert pipe[0].positive  # auto: the penultimate layer is a ReLU
    # the threshold comes from 1000 fresh samples of G (fnr=0.05 needs 19 at least),
    # and every image of --own trained the detector
    assert "sampling 1000 images of G" in res.stderr
    det = pipe[-1]
    assert det.validation_size == 0 and det.validation_scores_.size == 1000
    assert "1000 validation samples" in res.stderr


def test_validation_samples_option():
    parser = cli.build_parser()
    base = ["fit", "--generator", "g.py:G", "--own", "d", "-o", "x.joblib"]
    assert parser.parse_args(base).validation_samples == "auto"
    assert parser.parse_args(base + ["--validation-samples", "500"]).validation_samples == 500
    assert parser.parse_args(base + ["--validation-samples", "own"]).validation_samples == "own"
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(base + ["--validation-samples", bad])


def test_score_lists_bad_files_and_scores_the_rest(fitted):
    workdir, _ = fitted
    res = _run(["score", "out/detector.flipad", "test", "missing.png", "--csv", "s.csv",
                "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_PARTIAL, res.stderr
    for name, reason in [("broken.png", "unreadable"), ("big.png", "mis-sized"),
                         ("notes.txt", "extension"), ("missing.png", "no such file")]:
        line = next(ln for ln in res.stderr.splitlines() if name in ln)
        assert reason in line
    with open(workdir / "s.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 + 4
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 12
    for r in ok:
        assert r["decision"] in ("G", "not G")
        assert 0 < float(r["pvalue"]) <= 1
        assert (float(r["score"]) >= 0) == (r["decision"] == "G")
        assert os.path.basename(r["path"]) in res.stdout
    g = [r for r in ok if os.path.basename(r["path"]).startswith("g")]
    h = [r for r in ok if os.path.basename(r["path"]).startswith("h")]
    # the two random generators are easy to tell apart (the threshold at
    # fnr=0.05 from 48 validation images may reject a few of G's)
    assert np.mean([r["decision"] == "not G" for r in h]) == 1.0
    # g0004 is an unusual image of G itself (p-value 0.005-0.01 against 1000 fresh
    # samples of G, for seeds 0, 1, 2): all other pairs are ranked right
    sg, sh = [float(r["score"]) for r in g], [float(r["score"]) for r in h]
    assert np.mean([a > b for a in sg for b in sh]) >= 35 / 36
    assert np.mean([float(r["pvalue"]) for r in g]) > max(float(r["pvalue"]) for r in h)


def test_score_all_good_files_exit_zero(fitted, capsys):
    workdir, _ = fitted
    code = cli.main(["score", str(workdir / "out" / "detector.flipad"),
                     str(workdir / "test" / "g0000.png"), str(workdir / "test" / "h0000.png"),
                     "-q", "--device", "cpu", "--batch-size", "1"])
    assert code == cli.EXIT_OK
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 3  # header + 2 files


def test_score_refuses_nan_scores_in_one_line(fitted, tmp_path, capsys):
    # weights that overflow (a corrupted or crafted file, finite so it loads): every
    # score was -inf or NaN, reported as "not G" with a p-value
    import torch

    from flipad_sklearn import persistence

    workdir, _ = fitted
    pipe = persistence.load(workdir / "out" / "detector.flipad")
    with torch.no_grad():
        for p in pipe[-1].network_.parameters():
            sign = torch.where(torch.rand_like(p) > 0.5, 1.0, -1.0).to(p.dtype)
            p.copy_(sign * 1e200)            # finite in float64, its products are not
    persistence.save(pipe, tmp_path / "overflow.flipad")
    code = cli.main(["score", str(tmp_path / "overflow.flipad"),
                     str(workdir / "test" / "g0000.png"), "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR, err
    assert "FloatingPointError" in err and "scores are not finite" in err
    assert "no verdict" in err and len(err.strip().splitlines()) == 1


def test_score_batch_size_reaches_the_inversion(fitted, monkeypatch, capsys):
    """``--batch-size`` on a saved detector: the inversion runs in batches of
    that size (it was ignored: the size fitted with the detector was used)."""
    import flipad_sklearn.inversion.final_layer as inversion
    workdir, _ = fitted
    sizes, real = [], inversion.solve

    def solve(problem, *args, **kwargs):
        sizes.append(len(problem.targets))
        return real(problem, *args, **kwargs)

    monkeypatch.setattr(inversion, "solve", solve)
    files = sorted(str(p) for p in (workdir / "test").glob("[gh]*.png"))
    code = cli.main(["score", str(workdir / "out" / "detector.flipad"), *files,
                     "-q", "--device", "cpu", "--batch-size", "5"])
    assert code == cli.EXIT_OK
    assert sizes == [5, 5, 2]
    capsys.readouterr()


def test_errors_in_process(workdir, capsys):
    # fatal errors: exit 1 with a message, nothing written
    code = cli.main(["score", str(workdir / "test" / "notes.txt"), str(workdir / "own")])
    assert code == cli.EXIT_ERROR
    assert "Could not load the detector" in capsys.readouterr().err
    gens = str(workdir / "gens.py")
    for spec, msg in [(gens + ":missing", "no attribute"),
                      (gens + ":NOT_A_MODULE", "not a torch.nn.Module"),
                      ("gens_without_colon", "MODULE:ATTR"),
                      (str(workdir / "nope.py") + ":G", "no such file")]:
        code = cli.main(["fit", "--generator", spec, "--latent-shape", "8", "--own",
                         str(workdir / "own"), "-o", str(workdir / "x.joblib")])
        assert code == cli.EXIT_ERROR
        assert msg in capsys.readouterr().err
    assert not (workdir / "x.joblib").exists()
    # usage errors are argparse's exit code 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["score"])
    assert exc.value.code == cli.EXIT_USAGE


def test_fit_skips_bad_files_with_exit_code_3(workdir, capsys):
    import shutil

    bad = workdir / "others_with_bad_files"
    shutil.copytree(workdir / "others", bad)
    PIL.Image.new("RGB", (8, 9)).save(bad / "wrong_size.png")
    (bad / "truncated.png").write_bytes((workdir / "own" / "0000.png").read_bytes()[:30])
    out = workdir / "partial.joblib"
    code = cli.main(["fit", "--generator", str(workdir / "gens.py") + ":G",
                     "--latent-shape", "8", "--own", str(workdir / "own"),
                     "--others", str(bad), "--fnr", "0.1", "--epochs", "2",
                     "--anchor-samples", "100", "--max-iter", "30", "--tol", "1e-2",
                     "--device", "cpu", "-q", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_PARTIAL, err
    assert out.is_file()
    assert "wrong_size.png: mis-sized: 8x9 pixels" in err
    assert "truncated.png: unreadable" in err


def test_fit_networks_trains_an_ensemble(workdir, capsys):
    from flipad_sklearn import persistence

    out = workdir / "ensemble.flipad"
    code = cli.main(["fit", "--generator", str(workdir / "gens.py") + ":G",
                     "--latent-shape", "8", "--own", str(workdir / "own"),
                     "--others", str(workdir / "others"), "--fnr", "0.1", "--epochs", "2",
                     "--networks", "3", "--anchor-samples", "100", "--max-iter", "30",
                     "--tol", "1e-2", "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert "(2 epochs, 3 networks)" in err
    det = persistence.load(out)[-1]
    assert det.n_networks == 3 and len(det.extra_networks_) == 2


def test_generator_spec_loads_callables(workdir):
    import torch

    G = cli.load_generator_spec(str(workdir / "gens.py") + ":other")
    assert isinstance(G, torch.nn.Module) and not G.training


class _Evil:
    """Unpickling this writes a marker file (stands for any code in a pickle)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_score_refuses_a_malicious_pickle(workdir, tmp_path, capsys):
    import joblib

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_Evil(str(marker)), evil)
    res = _run(["score", str(evil), "test/g0000.png"], cwd=workdir)
    assert res.returncode == cli.EXIT_ERROR
    assert "pickle/joblib file" in res.stderr and "--trust-pickle" in res.stderr
    assert not marker.exists()
    # with --trust-pickle the file is unpickled (and its code runs): the flag is
    # the user's explicit "I trust this file"; it is then still not a detector
    code = cli.main(["score", str(evil), str(workdir / "test" / "g0000.png"),
                     "--trust-pickle"])
    assert code == cli.EXIT_ERROR
    assert "not a detector" in capsys.readouterr().err
    assert marker.exists()


def test_joblib_output_warns_and_needs_trust_pickle(fitted, capsys):
    workdir, _ = fitted
    from flipad_sklearn import persistence

    pipe = persistence.load(workdir / "out" / "detector.flipad")
    out = workdir / "out" / "trusted.joblib"
    cli._save_detector(pipe, out)
    assert "for the secure format" in capsys.readouterr().err
    args = [str(out), str(workdir / "test" / "g0000.png"), "-q", "--device", "cpu"]
    assert cli.main(["score", *args]) == cli.EXIT_ERROR
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli.main(["score", *args, "--trust-pickle"]) == cli.EXIT_OK
    trusted = capsys.readouterr().out
    assert cli.main(["score", str(workdir / "out" / "detector.flipad"), *args[1:]]) \
        == cli.EXIT_OK
    assert capsys.readouterr().out == trusted        # same scores either way


# ------------------------------------------- issue 11: nothing lost, checked first
def test_score_csv_rows_in_input_order_with_links_and_sub_folders(fitted, tmp_path):
    import shutil

    workdir, _ = fitted
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("g0000.png", "h0000.png", "broken.png", "notes.txt"):
        shutil.copy(workdir / "test" / name, folder / name)
    (folder / "c_dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "d_sub").mkdir()
    single = workdir / "test" / "g0001.png"
    code = cli.main(["score", str(workdir / "out" / "detector.flipad"), str(single),
                     str(folder), str(tmp_path / "missing.png"), "--csv",
                     str(tmp_path / "s.csv"), "-q", "--device", "cpu"])
    assert code == cli.EXIT_PARTIAL
    with open(tmp_path / "s.csv") as fh:
        rows = [(os.path.basename(r["path"]), r["status"]) for r in csv.DictReader(fh)]
    # the order of the command line, folders sorted; skipped files in place
    assert [n for n, _ in rows] == ["g0001.png", "broken.png", "c_dangling.png", "d_sub",
                                    "g0000.png", "h0000.png", "notes.txt", "missing.png"]
    status = dict(rows)
    assert status["g0001.png"] == status["g0000.png"] == "ok"
    assert status["c_dangling.png"].startswith("skipped: broken symbolic link")
    assert "sub-folder" in status["d_sub"]
    assert status["missing.png"] == "no such file or folder"


def test_interrupted_csv_write_keeps_the_old_file(fitted, tmp_path, monkeypatch):
    workdir, _ = fitted
    target = tmp_path / "scores.csv"
    target.write_text("previous results\n")

    def interrupted(self, rows):
        self.writerow(rows[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", interrupted)
    code = cli.main(["score", str(workdir / "out" / "detector.flipad"),
                     str(workdir / "test" / "g0000.png"), "--csv", str(target), "-q",
                     "--device", "cpu"])
    assert code == cli.EXIT_INTERRUPTED == 130                 # one line, no traceback
    assert target.read_text() == "previous results\n"        # not truncated
    assert os.listdir(tmp_path) == ["scores.csv"]             # no temporary left


@pytest.mark.parametrize("option,value,message", [
    ("--fnr", "1.5", "--fnr must be in [0, 1)"),
    ("--fnr", "nan", "--fnr must be in [0, 1)"),
    ("--epochs", "0", "--epochs must be a positive integer"),
    ("--networks", "0", "--networks must be a positive integer"),
    ("--alpha", "-1", "--alpha must be a finite number >= 0"),
    ("--max-iter", "0", "--max-iter must be a positive integer"),
    ("--batch-size", "0", "--batch-size must be a positive integer"),
    ("--device", "mps", "--device: device='mps' is not supported"),
])
def test_fit_options_are_checked_before_any_work(workdir, capsys, option, value, message):
    # the generator does not exist: the option is reported first, before it is loaded
    code = cli.main(["fit", "--generator", str(workdir / "nope.py") + ":G",
                     "--own", str(workdir / "own"), option, value,
                     "-o", str(workdir / "never.joblib")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (workdir / "never.joblib").exists()


def test_fit_output_path_is_checked_before_any_work(workdir, capsys):
    blocker = workdir / "a_file"
    blocker.write_text("")
    for out, message in [(blocker / "detector.joblib", "cannot be written"),
                         (workdir / "own", "is a folder")]:
        code = cli.main(["fit", "--generator", str(workdir / "nope.py") + ":G",
                         "--own", str(workdir / "own"), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == cli.EXIT_ERROR and message in err, err
    code = cli.main(["fit", "--generator", str(workdir / "gens.py") + ":G",
                     "--own", str(workdir / "no_such_folder"), "-o", str(workdir / "x.j")])
    assert code == cli.EXIT_ERROR
    assert "is not an existing folder" in capsys.readouterr().err


def test_main_turns_value_and_os_errors_into_one_line(monkeypatch, capsys, workdir):
    def boom(args):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(cli, "cmd_score", boom)
    code = cli.main(["score", "x.joblib", "y.png"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.strip() == "flipad score: error: ValueError: first line second line"
    monkeypatch.undo()
    code = cli.main(["score", "x.joblib", "y.png", "--device", "gpu"])
    assert code == cli.EXIT_USAGE and "use 'cuda'" in capsys.readouterr().err


def test_attribute_over_two_owned_models(fitted):
    workdir, _ = fitted
    # the second owned model: the other generator, with G's images as its others
    res = _run(["fit", "--generator", "gens.py:other", "--latent-shape", "8",
                "--own", "others", "--others", "own", "--fnr", "0.05", "--epochs", "8",
                "--anchor-samples", "500", "--max-iter", "200", "--tol", "1e-3", "-q",
                "-o", "out/other.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    res = _run(["attribute", "--model", "G=out/detector.flipad", "--model", "out/other.flipad",
                "test", "--csv", "sets.csv", "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_PARTIAL, res.stderr  # the bad files of test/
    assert "p_G" in res.stdout and "p_other" in res.stdout
    with open(workdir / "sets.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
    assert len(rows) == 12
    g = [r for r in rows if os.path.basename(r["path"]).startswith("g")]
    h = [r for r in rows if os.path.basename(r["path"]).startswith("h")]
    # at fnr=0.05 a few of G's own images may fall out of G's set (then into none)
    assert np.mean([r["prediction"] == "G" for r in g]) >= 4 / 6
    assert all(r["prediction"] in ("G", "none") for r in g)
    assert all(float(r["p_G"]) > float(r["p_other"]) for r in g)
    assert all(r["prediction"] == "other" and r["set"] == "{other}" for r in h)
    for r in rows:
        assert 0 < float(r["p_G"]) <= 1 and 0 < float(r["p_other"]) <= 1
    code = cli.main(["attribute", "--model", str(workdir / "out" / "detector.flipad"),
                     "--model", str(workdir / "out" / "detector.flipad"),
                     str(workdir / "test" / "g0000.png"), "-q"])
    assert code == cli.EXIT_ERROR  # the same name twice
    code = cli.main(["attribute", "--model", str(workdir / "out" / "detector.flipad"),
                     "--alpha", "2", str(workdir / "test" / "g0000.png"), "-q"])
    assert code == cli.EXIT_USAGE   # an option out of its range, as in fit and score


def test_attribute_loads_securely_and_refuses_pickles(fitted, tmp_path, capsys):
    workdir, _ = fitted
    from flipad_sklearn import persistence

    image = str(workdir / "test" / "g0000.png")
    secure = workdir / "out" / "detector.flipad"
    trusted = tmp_path / "trusted.joblib"
    cli._save_detector(persistence.load(secure), trusted)
    capsys.readouterr()
    code = cli.main(["attribute", "--model", f"G={secure}", "--model", f"H={trusted}",
                     image, "-q"])
    assert code == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "pickle/joblib file" in err and "--trust-pickle" in err
    # the malicious pickle is refused without running its code
    marker = tmp_path / "pwned"
    import joblib

    joblib.dump(_Evil(str(marker)), tmp_path / "evil.pkl")
    code = cli.main(["attribute", "--model", f"E={tmp_path / 'evil.pkl'}", image, "-q"])
    assert code == cli.EXIT_ERROR and not marker.exists()
    capsys.readouterr()
    # with --trust-pickle the joblib copy is used, and gives the secure file's p-values
    code = cli.main(["attribute", "--model", f"G={secure}", "--model", f"H={trusted}",
                     image, "-q", "--trust-pickle", "--csv", str(tmp_path / "a.csv")])
    assert code == cli.EXIT_OK, capsys.readouterr().err
    with open(tmp_path / "a.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["p_G"] == row["p_H"]


def test_fit_defaults_are_the_recipes():
    """``fit``'s inversion is what a library user gets from ``make_flipad`` by default."""
    import inspect

    from flipad_sklearn import make_flipad

    args = cli.build_parser().parse_args(["fit", "--generator", "g.py", "--own", "own",
                                          "--out", "m.flipad"])
    defaults = {k: p.default for k, p in inspect.signature(make_flipad).parameters.items()}
    assert (args.tol, args.max_iter, args.alpha, args.datafit) == \
        (defaults["tol"], defaults["max_iter"], defaults["alpha"], defaults["datafit"])
    # and the recipe's stop is the inverter's own (no gap tolerance added on top)
    from flipad_sklearn import FinalLayerInverter

    inv_defaults = inspect.signature(FinalLayerInverter).parameters
    assert defaults["tol"] == inv_defaults["tol"].default


# ------------------------------------------------- output safety (issue 28)
def test_outputs_never_overwrite_the_detector_or_an_input(fitted, capsys):
    # before: `--csv det.flipad` replaced the detector with the CSV, exit 0
    workdir, _ = fitted
    det = workdir / "out" / "detector.flipad"
    image = workdir / "test" / "g0000.png"
    before = det.read_bytes(), image.read_bytes()
    for target in (det, image, workdir / "out" / ".." / "out" / "detector.flipad"):
        code = cli.main(["score", str(det), str(workdir / "test"), "--csv", str(target),
                         "-q", "--device", "cpu"])
        assert code == cli.EXIT_ERROR
        err = capsys.readouterr().err
        assert "is also an input" in err and len(err.strip().splitlines()) == 1
    code = cli.main(["attribute", "--model", f"G={det}", str(image), "--csv", str(det), "-q"])
    assert code == cli.EXIT_ERROR
    assert "is also an input" in capsys.readouterr().err
    code = cli.main(["fit", "--generator", str(workdir / "gens.py") + ":G", "--latent-shape",
                     "8", "--own", str(workdir / "own"), "-o",
                     str(workdir / "own" / "0000.png"), "-q"])
    assert code == cli.EXIT_ERROR
    assert "is also an input" in capsys.readouterr().err
    assert (det.read_bytes(), image.read_bytes()) == before


def test_closed_stdout_keeps_the_csv_and_exits_quietly(fitted, tmp_path):
    # before: BrokenPipeError traceback, exit 1, the CSV never written
    workdir, _ = fitted
    target = tmp_path / "scores.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "flipad_sklearn.cli", "score",
                             "out/detector.flipad", "test", "--csv", str(target), "-q",
                             "--device", "cpu"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                     # `| head -0`: nobody reads the table
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.EXIT_PARTIAL, err   # test/ has bad files
    assert "Traceback" not in err and "BrokenPipe" not in err
    with open(target) as fh:
        assert len(list(csv.DictReader(fh))) == 15


def test_odd_file_names_are_escaped_in_the_csv(fitted, tmp_path):
    # before: a non-UTF-8 name: UnicodeEncodeError, exit 1, no CSV; a name
    # starting with "=" went into the CSV as a spreadsheet formula
    import shutil

    workdir, _ = fitted
    folder = tmp_path / "odd"
    folder.mkdir()
    src = workdir / "test" / "g0000.png"
    shutil.copy(src, os.path.join(os.fsencode(folder), b"\xff\xfeodd.png"))
    shutil.copy(src, folder / "fine.png")
    shutil.copy(src, tmp_path / "=HYPERLINK(1).png")
    res = subprocess.run([sys.executable, "-m", "flipad_sklearn.cli", "score",
                          str(workdir / "out" / "detector.flipad"), "odd",
                          "=HYPERLINK(1).png", "--csv", "s.csv", "-q", "--device", "cpu"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                                  LC_ALL="C.UTF-8"))
    assert res.returncode == cli.EXIT_OK, res.stderr
    assert "\\xff\\xfeodd.png" in res.stdout
    with open(tmp_path / "s.csv", encoding="utf-8") as fh:
        paths = [r["path"] for r in csv.DictReader(fh)]
    assert paths == [os.path.join("odd", "fine.png"), os.path.join("odd", "\\xff\\xfeodd.png"),
                     "'=HYPERLINK(1).png"]


def test_csv_cells_that_look_like_formulas_are_prefixed():
    for text in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert cli._csv_cell(text) == "'" + text
    assert cli._csv_cell("plain.png") == "plain.png"
    assert cli._csv_cell(-0.5) == -0.5                     # numbers stay numbers


def test_interrupt_is_one_line_with_exit_130(fitted, monkeypatch, capsys):
    # before: a 33-line traceback
    workdir, _ = fitted

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_read_images", interrupted)
    code = cli.main(["score", str(workdir / "out" / "detector.flipad"),
                     str(workdir / "test"), "-q", "--device", "cpu"])
    assert code == 130
    assert capsys.readouterr().err.strip() == \
        "flipad score: interrupted (no output file was changed)"


def test_attribute_rows_in_command_line_order_and_exit_codes(fitted, tmp_path, capsys):
    # before: failed files went to the end of attribute's CSV; --alpha 1.5 exited 1
    workdir, _ = fitted
    det = str(workdir / "out" / "detector.flipad")
    test = workdir / "test"
    paths = [str(test / "h0000.png"), str(test / "broken.png"), str(test / "g0000.png"),
             str(test / "missing.png")]
    code = cli.main(["attribute", "--model", f"A={det}", "--model", f"B={det}", *paths,
                     "--csv", str(tmp_path / "a.csv"), "-q", "--device", "cpu"])
    assert code == cli.EXIT_PARTIAL
    with open(tmp_path / "a.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == paths
    assert [r["status"] == "ok" for r in rows] == [True, False, True, False]
    for alpha in ("1.5", "-0.1", "nan"):
        assert cli.main(["attribute", "--model", det, paths[0], "--alpha", alpha,
                         "-q"]) == cli.EXIT_USAGE
    assert cli.main(["score", det, paths[0], "--max-memory", "0", "-q"]) == cli.EXIT_USAGE
    capsys.readouterr()


def test_crafted_detector_file_is_one_line_exit_1(fitted, tmp_path, capsys):
    import json
    import zipfile

    workdir, _ = fitted
    det = workdir / "out" / "detector.flipad"
    with np.load(det) as npz:
        arrays = {k: npz[k] for k in npz.files}
    spec = json.loads(arrays.pop("__spec__").tobytes())
    spec["root"]["state"]["items"].append(["junk", [{"__type__": "ndarray", "key": "a0"}] * 2])
    bad = tmp_path / "bad.flipad"
    with zipfile.ZipFile(bad, "w") as zf:
        import io

        for k, a in [("__spec__", np.frombuffer(json.dumps(spec).encode(), np.uint8))] \
                + list(arrays.items()):
            bio = io.BytesIO()
            np.lib.format.write_array(bio, a)
            zf.writestr(k + ".npy", bio.getvalue())
    image = str(workdir / "test" / "g0000.png")
    assert cli.main(["score", str(bad), image, "-q"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "referenced twice" in err
    # the budget is the user's: a tiny one refuses even the genuine detector
    assert cli.main(["score", str(det), image, "-q", "--max-memory", "0.0001"]) == \
        cli.EXIT_ERROR
    assert "max_bytes" in capsys.readouterr().err


def test_cuda_fitted_detector_on_a_cpu_machine_names_the_option(fitted, tmp_path,
                                                                monkeypatch, capsys):
    # before: failed after reading every image, naming the Python parameter
    import torch

    from flipad_sklearn import persistence

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    workdir, _ = fitted
    pipe = persistence.load(workdir / "out" / "detector.flipad")
    pipe.set_params(inv__device="cuda")
    persistence.save(pipe, tmp_path / "cuda.flipad")
    read = []
    monkeypatch.setattr(cli, "_read_images", lambda *a, **k: read.append(1))
    code = cli.main(["score", str(tmp_path / "cuda.flipad"), str(workdir / "test"), "-q"])
    assert code == cli.EXIT_ERROR and not read
    assert "re-run with --device cpu" in capsys.readouterr().err


# ------------------------------------------------- the verdict table (Python and CLI)
def test_verdict_table_is_what_flipad_score_writes(fitted, tmp_path, capsys):
    # before: no Python helper; the CLI's table was built inside cmd_score
    from flipad_sklearn import persistence, verdict_table

    workdir, _ = fitted
    det = workdir / "out" / "detector.flipad"
    pipe = persistence.load(det)
    inputs = [str(workdir / "test"), str(tmp_path / "missing.png")]
    table = verdict_table(pipe, inputs)
    assert cli.main(["score", str(det), *inputs, "--csv", str(tmp_path / "s.csv"), "-q",
                     "--device", "cpu"]) == cli.EXIT_PARTIAL
    capsys.readouterr()
    with open(tmp_path / "s.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [r["path"] for r in table]
    assert [r["status"] for r in rows] == [r["status"] for r in table]
    assert len(table) == 16 and table.n_skipped == 4
    for cli_row, row in zip(rows, table):
        if row["status"] != "ok":
            assert row["score"] is None and row["verdict"] is None
            continue
        assert float(cli_row["score"]) == pytest.approx(row["score"], rel=1e-6, abs=1e-9)
        assert float(cli_row["pvalue"]) == pytest.approx(row["pvalue"])
        assert int(cli_row["verdict"]) == row["verdict"]
        assert cli_row["decision"] == ("G" if row["verdict"] == 1 else "not G")
    # the verdict is the pipeline's own predict, on the same pixels; arrays work too
    files = [r["path"] for r in table if r["status"] == "ok"]
    X, ok, _ = cli._read_images(files, (1, 8, 8), False)
    assert ok == files
    np.testing.assert_array_equal([r["verdict"] for r in table if r["status"] == "ok"],
                                  pipe.predict(X))
    from_arrays = verdict_table(pipe, X, names=files)
    assert [r["path"] for r in from_arrays] == files
    np.testing.assert_allclose([r["score"] for r in from_arrays],
                               [r["score"] for r in table if r["status"] == "ok"])
    assert [r["path"] for r in verdict_table(pipe, X[:2])] == ["0", "1"]
    # metadata: the detector's
    assert table.metadata["fnr"] == 0.05
    assert table.metadata["threshold"] == pytest.approx(float(pipe[-1].threshold_))
    import flipad_sklearn

    assert table.metadata["version"] == flipad_sklearn.__version__


def test_verdict_table_writes_csv_and_json(fitted, tmp_path):
    import json

    from flipad_sklearn import persistence
    from flipad_sklearn.verdicts import verdict_table

    workdir, _ = fitted
    pipe = persistence.load(workdir / "out" / "detector.flipad")
    table = verdict_table(pipe, [str(workdir / "test" / "g0000.png"),
                                 str(workdir / "test" / "broken.png")],
                          detector_path="det.flipad")
    table.to_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == table.columns
    assert rows[1]["score"] == "" and rows[1]["status"].startswith("unreadable")
    doc = json.loads(table.to_json())
    assert doc["detector"]["detector"] == "det.flipad"
    assert doc["detector"]["fnr"] == 0.05 and doc["detector"]["n_validation"] == 1000
    assert len(doc["verdicts"]) == 2
    assert doc["verdicts"][0]["verdict"] in (1, -1)
    assert doc["verdicts"][1]["score"] is None
    # several owned models: prediction sets
    multi = verdict_table({"A": pipe, "B": pipe}, [str(workdir / "test" / "g0000.png")])
    assert multi.columns == ["path", "prediction", "set", "p_A", "p_B", "status"]
    assert multi[0]["set"] in ("{}", "{A,B}") and multi[0]["p_A"] == multi[0]["p_B"]
    assert set(json.loads(multi.to_json())["detector"]["models"]) == {"A", "B"}


def test_score_format_json(fitted, tmp_path, capsys):
    # before: --format did not exist (usage error, exit 2)
    import json

    workdir, _ = fitted
    det = str(workdir / "out" / "detector.flipad")
    files = [str(workdir / "test" / "g0000.png"), str(workdir / "test" / "notes.txt")]
    code = cli.main(["score", det, *files, "-o", str(tmp_path / "v.json"), "--format",
                     "json", "-q", "--device", "cpu"])
    assert code == cli.EXIT_PARTIAL
    capsys.readouterr()
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [v["path"] for v in doc["verdicts"]] == files
    assert doc["verdicts"][0]["status"] == "ok" and doc["verdicts"][1]["status"] != "ok"
    meta = doc["detector"]
    assert meta["fnr"] == 0.05 and meta["threshold"] is not None
    assert meta["detector"] == os.path.abspath(det) and meta["version"]
    # no file: JSON on stdout instead of the table
    assert cli.main(["score", det, files[0], "--format", "json", "-q",
                     "--device", "cpu"]) == cli.EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["verdicts"][0]["score"] == pytest.approx(doc["verdicts"][0]["score"])
    # csv stays the default of -o; --csv cannot write JSON
    assert cli.main(["score", det, files[0], "-o", str(tmp_path / "v.csv"), "-q",
                     "--device", "cpu"]) == cli.EXIT_OK
    assert (tmp_path / "v.csv").read_text().startswith("path,score,verdict")
    assert cli.main(["score", det, files[0], "--csv", str(tmp_path / "x.csv"),
                     "--format", "json", "-q"]) == cli.EXIT_USAGE
    assert "--csv writes CSV" in capsys.readouterr().err


# ------------------------------------------------------------------ flipad sample
def test_sample_writes_pixels_as_fit_reads_them(workdir, tmp_path, capsys):
    # before: no `flipad sample` (usage error); users wrote their own script
    from flipad_sklearn import sample_activations

    gen = f"{workdir / 'gens.py'}:G"
    code = cli.main(["sample", "--generator", gen, "--latent-shape", "8", "-n", "5",
                     "--seed", "3", "-o", str(tmp_path / "s"), "--batch-size", "2",
                     "--device", "cpu"])
    assert code == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "sampling G" in err and "wrote 5 images" in err       # progress unless -q
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    assert [os.path.basename(f) for f in files] == [f"{i:04d}.png" for i in range(5)]
    X, ok, errors = cli._read_images(files, (1, 8, 8), False)
    assert ok == files and not errors
    # the latents of sample_activations(random_state=seed); pixels as score reads them
    G = cli.load_generator_spec(gen)
    _, out = sample_activations(G, 5, (8,), random_state=3, device="cpu")
    step = 2 / 255
    np.testing.assert_allclose(X, np.round((out + 1) / step) * step - 1, atol=1e-6)
    assert np.abs(X - out).max() <= step / 2 + 1e-6
    # quiet: only the closing line
    assert cli.main(["sample", "--generator", gen, "--latent-shape", "8", "-n", "3",
                     "-o", str(tmp_path / "q"), "-q", "--prefix", "g_"]) == cli.EXIT_OK
    assert "sampling G" not in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "q")) == ["g_0000.png", "g_0001.png", "g_0002.png"]


def test_sample_checks_options_and_refuses_a_non_empty_folder(workdir, tmp_path, capsys):
    gen = f"{workdir / 'gens.py'}:G"
    base = ["sample", "--generator", gen, "--latent-shape", "8", "-q"]
    assert cli.main(base + ["-n", "0", "-o", str(tmp_path / "a")]) == cli.EXIT_USAGE
    assert not (tmp_path / "a").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    assert cli.main(base + ["-n", "2", "-o", str(tmp_path / "full")]) == cli.EXIT_ERROR
    assert "is not empty" in capsys.readouterr().err
    # a generator that fails: exit 1, and no empty folder left behind
    assert cli.main(["sample", "--generator", f"{workdir / 'gens.py'}:NOT_A_MODULE", "-n",
                     "2", "--latent-shape", "8", "-o", str(tmp_path / "b"), "-q"]) == \
        cli.EXIT_ERROR
    assert not (tmp_path / "b").exists()
    assert "NOT_A_MODULE" in capsys.readouterr().err


def test_sample_fit_score_round_trip(workdir, tmp_path):
    # G's own sampled files go in --own; fresh sampled files are accepted at ~1 - fnr
    gen = f"{workdir / 'gens.py'}:G"
    res = _run(["sample", "--generator", gen, "--latent-shape", "8", "-n", "160",
                "--seed", "11", "-o", str(tmp_path / "own"), "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    res = _run(["fit", "--generator", gen, "--latent-shape", "8", "--own",
                str(tmp_path / "own"), "--others", "others", "--fnr", "0.05", "--epochs", "8",
                "--anchor-samples", "500", "--validation-samples", "200",
                "-o", str(tmp_path / "det.flipad"), "-q"],
               cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr     # every sampled file was used
    res = _run(["sample", "--generator", gen, "--latent-shape", "8", "-n", "100",
                "--seed", "12", "-o", str(tmp_path / "fresh"), "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    res = _run(["score", str(tmp_path / "det.flipad"), str(tmp_path / "fresh"), "others",
                "--csv", str(tmp_path / "s.csv"), "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    with open(tmp_path / "s.csv") as fh:
        rows = list(csv.DictReader(fh))
    fresh = [r for r in rows if "fresh" in r["path"]]
    others = [r for r in rows if "fresh" not in r["path"]]
    assert len(fresh) == 100 and len(others) == 120
    accepted = np.mean([r["decision"] == "G" for r in fresh])
    assert accepted >= 0.88, accepted                  # fnr 0.05: ~0.95
    assert np.mean([r["decision"] == "G" for r in others]) < 0.5


def test_attribute_shows_progress_unless_quiet(fitted, capsys):
    # before: no progress while each model inverted the images
    workdir, _ = fitted
    det = str(workdir / "out" / "detector.flipad")
    files = [str(workdir / "test" / f"g000{i}.png") for i in range(3)]
    base = ["attribute", "--model", f"A={det}", "--model", f"B={det}", *files,
            "--device", "cpu"]
    assert cli.main(base) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert err.count("final-layer inversion") >= 2        # one bar per model
    assert "attributing 3 image(s) with 2 models" in err
    assert cli.main(base + ["-q"]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""
    # the saved detector stays silent when loaded in Python
    from flipad_sklearn import persistence

    pipe = persistence.load(det)
    assert pipe["inv"].verbose == 0 and pipe["det"].verbose == 0


def test_fit_immunise_published_trains_and_calibrates_on_perturbed_images(workdir):
    """``--immunise published``: an ImmunisedPipeline, saved securely, its 1000 fresh
    samples of G perturbed before they set the threshold."""
    from flipad_sklearn import persistence
    from flipad_sklearn.pipeline import ImmunisedPipeline

    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                "--others", "others", "--fnr", "0.05", "--epochs", "2",
                "--anchor-samples", "200", "--immunise", "published",
                "-o", "out/immunised.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    pipe = persistence.load(workdir / "out" / "immunised.flipad")
    assert isinstance(pipe, ImmunisedPipeline) and pipe.immunise is not None
    assert pipe[-1].validation_scores_.size == 1000
    assert cli.build_parser().parse_args(
        ["fit", "--generator", "g.py", "--own", "o", "-o", "m.flipad"]).immunise == "none"


def test_fit_guarantee_each_kind_calibrates_under_every_kind(workdir, monkeypatch):
    """``--guarantee each-kind``: the threshold is set on each fresh sample's lowest
    score over the mixture's kinds (calibrate(each_kind=True)), saved as any other."""
    from flipad_sklearn import persistence
    from flipad_sklearn.detection import conformal

    seen = []
    real = conformal.calibrate

    def spy(estimator, X, **kwargs):
        seen.append(kwargs.get("each_kind"))
        return real(estimator, X, **kwargs)

    monkeypatch.setattr(conformal, "calibrate", spy)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    code = cli.main(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                     "--others", "others", "--fnr", "0.05", "--epochs", "2",
                     "--anchor-samples", "200", "--immunise", "published", "-q",
                     "--guarantee", "each-kind", "-o", "out/each_kind.flipad"])
    assert code == cli.EXIT_OK and seen == [True]
    pipe = persistence.load(workdir / "out" / "each_kind.flipad")
    assert pipe[-1].validation_scores_.size == 1000


@pytest.mark.parametrize("extra, message", [
    ([], "needs --immunise published"),
    (["--immunise", "jpeg:90"], "needs --immunise published"),
    (["--immunise", "published", "--validation-samples", "own"], "not own"),
])
def test_fit_guarantee_each_kind_refuses_what_has_no_kinds(extra, message, capsys):
    code = cli.main(["fit", "--generator", "g.py", "--own", "o", "-o", "m.flipad",
                     "--guarantee", "each-kind", *extra])
    assert code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_fit_union_saves_the_open_world_union_and_score_reads_it(workdir):
    """``--detector union``: FLIPAD, DCTPAD and the pixel guard, each calibrated on the fresh
    samples of G its share of --fnr needs (1000 at least), saved securely; ``flipad score``
    gives every detector's p-value and the union's verdict."""
    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--detector",
                "union", "--own", "own", "--others", "others", "--fnr", "0.05", "--epochs",
                "8", "--anchor-samples", "500", "-o", "out/union.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    assert "validation samples of G: flipad 1000, dctpad 1000, pixels 1000" in res.stderr
    # fresh samples set every threshold, so nothing of --own is held out (the guard held
    # out half and warned that it was too few)
    assert "too few" not in res.stderr

    from flipad_sklearn import ConformalUnion, persistence

    union = persistence.load(workdir / "out" / "union.flipad")
    assert isinstance(union, ConformalUnion)
    assert [n for n, _ in union.estimators_] == ["flipad", "dctpad", "pixels"]
    assert [round(float(e[-1].fnr), 4) for _, e in union.estimators_] == [0.025, 0.015, 0.01]
    assert union.fnr_bound_ <= 0.05 + 1e-12
    for _, member in union.estimators_ + union.estimators:   # fitted and templates silent
        assert all(step.get_params(deep=False).get("verbose", 0) == 0
                   for _, step in member.steps)
    assert union.estimators_[2][1][-1].validation_size == 0
    res = _run(["score", "out/union.flipad", "test", "--csv", "u.csv", "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_PARTIAL, res.stderr      # the test folder's bad files
    with open(workdir / "u.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
    assert len(rows) == 12
    assert {"p_flipad", "p_dctpad", "p_pixels"} <= set(rows[0])
    h = [r for r in rows if os.path.basename(r["path"]).startswith("h")]
    assert all(r["decision"] == "not G" for r in h)


def test_fit_union_refuses_too_few_validation_samples(workdir):
    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--detector",
                "union", "--own", "own", "--others", "others", "--fnr", "0.05",
                "--validation-samples", "50", "-o", "out/never.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_ERROR
    assert "--validation-samples 50" in res.stderr and "needs 99" in res.stderr
    assert not (workdir / "out" / "never.flipad").exists()


def test_fit_max_fnr_draws_the_samples_that_keep_the_spread_below_it(workdir):
    """``--max-fnr``: as many fresh samples of G per detector as keep one calibration's
    rejected share below it in 19 draws of 20 (union_calibration_size), not 1000 each."""
    from flipad_sklearn import persistence
    from flipad_sklearn.detection.conformal import union_calibration_size

    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--detector",
                "union", "--own", "own", "--others", "others", "--fnr", "0.05", "--max-fnr",
                "0.1", "--epochs", "2", "--anchor-samples", "200", "-o", "out/mf.flipad"],
               cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    union = persistence.load(workdir / "out" / "mf.flipad")
    sizes = [e[-1].validation_scores_.size for _, e in union.estimators_]
    assert sizes == union_calibration_size([0.025, 0.015, 0.01], 0.1)
    assert union.fnr_interval_[1] <= 0.1


@pytest.mark.parametrize("extra, message", [
    (["--max-fnr", "0.04"], "--max-fnr must be in (--fnr, 1)"),
    (["--max-fnr", "nan"], "--max-fnr must be in"),
    (["--max-fnr", "0.1", "--validation-samples", "500"], "not both"),
    (["--max-fnr", "0.1", "--validation-samples", "own"], "not both"),
])
def test_fit_refuses_a_bad_max_fnr_before_any_work(workdir, capsys, extra, message):
    args = ["fit", "--generator", str(workdir / "gens.py") + ":G", "--latent-shape", "8",
            "--own", str(workdir / "own"), "--fnr", "0.05", "-o",
            str(workdir / "out" / "never.flipad"), *extra]
    assert cli.main(args) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (workdir / "out" / "never.flipad").exists()


def test_fit_union_max_fnr_sizes_are_known_before_any_training(workdir, monkeypatch, capsys):
    # before: a union's sizes were found inside calibrate, after the inversion and both
    # Deep SAD trainings (a --max-fnr just above --fnr failed only then)
    from flipad_sklearn.detection import conformal
    from flipad_sklearn.detection import union as union_mod

    def too_many(*args, **kwargs):
        raise ValueError("More than n_max=10000000 samples would be needed.")
    monkeypatch.setattr(conformal, "calibration_size", too_many)

    def fit(self, X, y=None):
        raise AssertionError("trained before --max-fnr's sizes were known")
    monkeypatch.setattr(union_mod.ConformalUnion, "fit", fit)
    rc = cli.main(["fit", "--generator", str(workdir / "gens.py") + ":G", "--latent-shape",
                   "8", "--detector", "union", "--own", str(workdir / "own"), "--others",
                   str(workdir / "others"), "--fnr", "0.05", "--max-fnr", "0.0500001",
                   "-o", str(workdir / "out" / "never_mf.flipad")])
    assert rc == cli.EXIT_USAGE
    assert "Give a larger --max-fnr" in capsys.readouterr().err


def test_shadows_writes_the_five_shadows_samples_for_fit_others(workdir):
    """``flipad shadows``: trained on --own, N PNGs per shadow in one folder, named by
    shadow, that ``flipad fit --detector union --others`` takes."""
    res = _run(["shadows", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                "-n", "7", "--epochs", "1", "-o", "shadow_imgs"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    files = sorted(p.name for p in (workdir / "shadow_imgs").iterdir())
    assert len(files) == 35
    from flipad_sklearn.generators import OPEN_WORLD_SHADOWS

    assert files == sorted(f"{name}_{i:04d}.png" for name in OPEN_WORLD_SHADOWS
                           for i in range(7))
    im = np.asarray(PIL.Image.open(workdir / "shadow_imgs" / files[0]))
    assert im.shape == (8, 8) and im.dtype == np.uint8
    assert "wrote 35 images of 5 shadows" in res.stderr
    assert "--detector union --own" in res.stderr
    # the shadows differ from G and from each other
    X = {n: np.stack([np.asarray(PIL.Image.open(workdir / "shadow_imgs" / f"{n}_{i:04d}.png"))
                      for i in range(7)]).astype(float) for n in OPEN_WORLD_SHADOWS}
    assert len({round(float(x.mean()), 3) for x in X.values()}) == 5
    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--detector",
                "union", "--own", "own", "--others", "others", "--others", "shadow_imgs",
                "--fnr", "0.05", "--epochs", "3", "--anchor-samples", "200", "-q", "-o",
                "out/with_shadows.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    # a folder with files already is refused, nothing written
    res = _run(["shadows", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                "-n", "2", "--epochs", "1", "-o", "shadow_imgs"], cwd=workdir)
    assert res.returncode == cli.EXIT_ERROR and "is not empty" in res.stderr
    res = _run(["shadows", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                "-n", "0", "-o", "never"], cwd=workdir)
    assert res.returncode == cli.EXIT_USAGE and "-n/--n-samples must be" in res.stderr
    assert not (workdir / "never").exists()


def _as_jpeg(src_files, folder, quality):
    folder.mkdir(parents=True, exist_ok=True)
    for f in src_files:
        with PIL.Image.open(f) as img:
            img.save(folder / (f.stem + ".jpg"), quality=quality)
    return folder


@pytest.mark.parametrize("text, value", [("none", "none"), ("published", "published"),
                                         ("jpeg:90", "jpeg:90"), ("jpeg:007", "jpeg:7")])
def test_immunise_option_values(text, value):
    args = cli.build_parser().parse_args(
        ["fit", "--generator", "g.py", "--own", "o", "-o", "m.flipad", "--immunise", text])
    assert args.immunise == value


@pytest.mark.parametrize("text", ["jpeg", "jpeg:0", "jpeg:101", "png:90", "jpeg:q90", "JPEG",
                                  "jpeg:+90", "jpeg:\u0669\u0660", "jpeg:\uff19\uff10",
                                  "jpeg:\u00b2"])
def test_immunise_option_refuses(text, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["fit", "--generator", "g.py", "--own", "o", "-o",
                                       "m.flipad", "--immunise", text])
    assert "jpeg:Q" in capsys.readouterr().err


def test_score_warns_on_jpeg_files_of_a_detector_calibrated_on_lossless_images(fitted):
    """Before: JPEG files were scored silently by a detector whose threshold holds for
    G's images as generated only."""
    workdir, _ = fitted
    det = str(workdir / "out" / "detector.flipad")
    jpg = _as_jpeg(sorted((workdir / "test").glob("g*.png")), workdir / "jpeg85", 85)
    res = _run(["score", det, str(jpg), "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    assert "warning: 6 of 6 files are not stored as the images the detector's threshold " \
           "was set on (6 JPEG q85)" in res.stderr
    assert "flipad fit --immunise jpeg:85" in res.stderr
    res = _run(["score", det, *map(str, sorted((workdir / "test").glob("g*.png"))), "-q"],
               cwd=workdir)
    assert res.returncode == cli.EXIT_OK and "JPEG" not in res.stderr, res.stderr


def test_fit_immunise_jpeg_calibrates_on_that_quality(workdir):
    """``--immunise jpeg:85``: trained and calibrated on G's images saved as JPEG q85;
    ``flipad score`` is silent on JPEG q85 files and warns on PNG files."""
    from flipad_sklearn import JPEGCompression, persistence

    res = _run(["fit", "--generator", "gens.py:G", "--latent-shape", "8", "--own", "own",
                "--others", "others", "--fnr", "0.05", "--epochs", "2",
                "--anchor-samples", "200", "--immunise", "jpeg:85",
                "-o", "out/jpeg85.flipad"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK, res.stderr
    pipe = persistence.load(workdir / "out" / "jpeg85.flipad")
    assert isinstance(pipe.immunise, JPEGCompression) and pipe.immunise.quality == 85
    own = sorted((workdir / "test").glob("g*.png"))
    jpg = _as_jpeg(own, workdir / "jpeg85_fit", 85)
    res = _run(["score", "out/jpeg85.flipad", str(jpg), "-q"], cwd=workdir)
    assert res.returncode == cli.EXIT_OK and "warning" not in res.stderr, res.stderr
    res = _run(["score", "out/jpeg85.flipad", *map(str, own), "-q"], cwd=workdir)
    assert "6 lossless" in res.stderr and "calibrated on G's JPEG q85" in res.stderr, \
        res.stderr
