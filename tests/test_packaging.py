"""The release metadata: what ``pip install`` reads must match what the docs say.

``pyproject.toml`` carries the whole ``[project]`` table; these tests read it
(without building anything, so they stay fast) and hold it against
``docs/install.rst``, the package's own files and the scikit-learn helpers it
imports.  ``.ci/run`` builds the wheel and sdist and runs ``twine check``.
"""
import re
from pathlib import Path

import pytest

import flipad_sklearn

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def project():
    if not PYPROJECT.exists():
        pytest.skip("not run from a source tree")
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _extras_in_install_docs():
    text = (ROOT / "docs" / "install.rst").read_text()
    # a definition list: the extra's name in literal quotes alone on a line
    return set(re.findall(r"^``([a-z]+)``\s*$", text, flags=re.M))


def test_project_metadata_complete(project):
    assert project["name"] == "flipad_sklearn"
    assert "version" in project.get("dynamic", []) or project.get("version")
    assert project["requires-python"].startswith(">=3.")
    assert project["scripts"]["flipad"] == "flipad_sklearn.cli:main"
    for dep in ("numpy", "scipy", "scikit-learn", "torch", "joblib", "cvxpy"):
        assert any(re.match(rf"{dep}\b", d) for d in project["dependencies"]), dep


def test_extras_match_install_docs(project):
    extras = set(project["optional-dependencies"])
    assert {"test", "dask", "plot", "skops", "diffusers", "sdv", "pyod", "docs"} <= extras
    assert _extras_in_install_docs() == extras


def test_test_extra_has_what_ci_uses(project):
    test = " ".join(project["optional-dependencies"]["test"])
    for name in ("pytest", "dask", "matplotlib", "build", "twine"):
        assert name in test, name


def test_pyod_is_optional(project):
    # pyod pulls numba: an extra of its own, never a dependency of the core or the tests
    assert any(d.startswith("pyod") for d in project["optional-dependencies"]["pyod"])
    for deps in (project["dependencies"], project["optional-dependencies"]["test"]):
        assert not any(d.startswith("pyod") for d in deps)


def test_package_data_listed():
    data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    pkg = Path(flipad_sklearn.__file__).parent
    for pattern in data["flipad_sklearn"]:
        # every listed pattern matches files the package needs at run time
        assert list(pkg.glob(pattern)), pattern
    assert list(pkg.glob("generators/checkpoints/*.pt"))
    assert list(pkg.glob("datasets/data/*.csv*"))


def _private_sklearn_imports():
    pkg = Path(flipad_sklearn.__file__).parent
    found = set()
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"^from\s+(sklearn[\w.]*)\s+import\s+(\([^)]*\)|[^\n]*)",
                             text, flags=re.M):
            module, names = m.group(1), m.group(2)
            if any(part.startswith("_") for part in module.split(".")):
                found.add(module)
            for name in re.findall(r"\b\w+\b", names):
                if name.startswith("_") and not name.startswith("__"):
                    found.add(f"{module}.{name}")
    return found


def _bounds(requirement):
    lower = re.search(r">=\s*([\d.]+)", requirement)
    upper = re.search(r"<\s*([\d.]+)", requirement)
    return lower and lower.group(1), upper and upper.group(1)


def _version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def test_private_sklearn_imports_guarded_by_tested_range(project):
    """Private scikit-learn helpers may move in any release: the pin must be
    closed above, and the scikit-learn running this suite must lie inside it
    (so each version in the range has been through the suite)."""
    private = _private_sklearn_imports()
    assert private, "no private scikit-learn import left: drop the upper pin"
    (req,) = [d for d in project["dependencies"] if d.startswith("scikit-learn")]
    lower, upper = _bounds(req)
    assert lower and upper, f"{req!r} must read scikit-learn>=X,<Y"
    import sklearn
    installed = _version_tuple(sklearn.__version__)
    assert _version_tuple(lower) <= installed < _version_tuple(upper), (
        f"scikit-learn {sklearn.__version__} outside the tested range {req!r}")
    # each private name still exists in the installed scikit-learn
    import importlib
    for dotted in sorted(private):
        module, _, name = dotted.rpartition(".")
        try:
            assert hasattr(importlib.import_module(module), name), dotted
        except ModuleNotFoundError:
            importlib.import_module(dotted)
