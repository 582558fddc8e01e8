"""``import flipad_sklearn`` and ``flipad --help`` import nothing heavy.

The package's public names are imported on first use (PEP 562), and the
command parses its arguments before importing numpy, torch or scikit-learn,
so ``--help``, ``--version`` and usage errors answer at once (they took 7-10 s
when every import ran up front).
"""
import importlib
import subprocess
import sys

import pytest

import flipad_sklearn

HEAVY = ("torch", "numpy", "scipy", "sklearn", "joblib", "PIL", "tqdm")


def _modules_after(code):
    """The heavy modules imported by ``code`` run in a fresh interpreter."""
    probe = (f"{code}\nimport sys\n"
             f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("heavy:"), out.stdout
    return [m for m in last[len("heavy:"):].split(",") if m]


def test_import_package_is_light():
    assert _modules_after("import flipad_sklearn") == []


@pytest.mark.parametrize("argv", [["--help"], ["score", "--help"], ["fit", "--help"],
                                  ["sample", "--help"],
                                  ["--version"]])
def test_help_imports_nothing_heavy(argv):
    code = ("import flipad_sklearn.cli as cli\n"
            "try:\n"
            f"    cli.main({argv!r})\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n")
    assert _modules_after(code) == []


def test_usage_error_imports_nothing_heavy():
    code = ("import flipad_sklearn.cli as cli\n"
            "try:\n"
            "    cli.main(['score'])\n"             # missing arguments
            "except SystemExit as exc:\n"
            "    assert exc.code == 2, exc.code\n")
    assert _modules_after(code) == []


def test_every_public_name_resolves_from_its_module():
    for name in flipad_sklearn.__all__:
        value = getattr(flipad_sklearn, name)
        if name in flipad_sklearn._SUBMODULES:
            assert value is importlib.import_module(f"flipad_sklearn.{name}")
        elif name != "__version__":
            module = importlib.import_module(flipad_sklearn._WHERE[name], "flipad_sklearn")
            assert value is getattr(module, name)
    assert set(flipad_sklearn.__all__) <= set(dir(flipad_sklearn))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        flipad_sklearn.not_a_name
    # every submodule is an attribute, as with eager imports
    assert flipad_sklearn.features.ActivationPooling is flipad_sklearn.ActivationPooling
    assert flipad_sklearn.lasso is importlib.import_module("flipad_sklearn.lasso")


def test_from_import_star_and_from_import():
    namespace = {}
    exec("from flipad_sklearn import *", namespace)
    assert "FinalLayerInverter" in namespace and "make_flipad" in namespace
    from flipad_sklearn import FLIPADDetector, plotting  # noqa: F401
