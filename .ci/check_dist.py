"""Check the built release: the wheel and sdist in DIST carry what users need.

Run by .ci/run after ``python -m build`` and ``twine check``.  A wheel that
builds and passes twine can still miss the package data (the bundled data
sets and the demo's generator checkpoints) or the ``flipad`` command; this
checks both, and prints the sizes.
"""
import sys
import tarfile
import zipfile
from pathlib import Path

dist = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
(wheel,) = dist.glob("flipad_sklearn-*.whl")
(sdist,) = dist.glob("flipad_sklearn-*.tar.gz")
required = [
    "flipad_sklearn/datasets/data/mnist_5k.csv.gz",
    "flipad_sklearn/datasets/data/winequality-red.csv",
    "flipad_sklearn/generators/checkpoints/mnist_G.pt",
    "flipad_sklearn/generators/checkpoints/mnist_shadow.pt",
    "flipad_sklearn/generators/checkpoints/mnist_other.pt",
    "flipad_sklearn/generators/checkpoints/mnist_unseen.pt",
    "flipad_sklearn/cli.py",
]
with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    missing = [name for name in required if name not in names]
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry_points = zf.read(entry).decode()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zf.read(meta).decode()
    stray = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "examples")]
with tarfile.open(sdist) as tf:
    sdist_names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
missing += [f"sdist:{n}" for n in required + ["pyproject.toml", "README.rst"]
            if n not in sdist_names]
problems = missing + [f"stray in wheel: {n}" for n in stray]
if "flipad = flipad_sklearn.cli:main" not in entry_points:
    problems.append("no `flipad` console script")
if "Requires-Dist: scikit-learn" not in metadata or "<" not in metadata.split(
        "Requires-Dist: scikit-learn", 1)[1].splitlines()[0]:
    problems.append("scikit-learn requirement without its tested upper bound")
for extra in ("test", "dask", "plot", "skops", "diffusers", "sdv", "docs"):
    if f"Provides-Extra: {extra}\n" not in metadata:
        problems.append(f"extra {extra!r} missing")
if problems:
    sys.exit("release check failed:\n  " + "\n  ".join(problems))
print(f"release ok: {wheel.name} {wheel.stat().st_size / 1e6:.2f} MB, "
      f"{sdist.name} {sdist.stat().st_size / 1e6:.2f} MB")
