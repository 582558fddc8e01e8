"""Sphinx configuration of flipad_sklearn's documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``.

The gallery (``examples/``) executes only the fastest example
(``plot_tabular_attribution.py``, ~15 s) by default: the five examples take
about 4 minutes together on a CPU.  Set ``FLIPAD_DOCS_RUN_EXAMPLES=1`` to
run them all and embed their output and figures, ``FLIPAD_DOCS_RUN_EXAMPLES=0``
to run none.

The API reference lists every public name: it is generated at build time
from the ``__all__`` of the package and its public modules (see
``_write_api`` below, into ``docs/api.rst``, which is not tracked), so new
public names appear without editing the docs.
"""

import inspect
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.fspath(HERE.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import flipad_sklearn  # noqa: E402

project = "flipad_sklearn"
author = "the flipad_sklearn developers"
copyright = "2026, the flipad_sklearn developers"
version = release = flipad_sklearn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5",
                    "auto_examples/*.codeobj.json", "sg_execution_times.rst"]
suppress_warnings = []

autosummary_generate = True
autodoc_typehints = "none"
autodoc_mock_imports = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False

intersphinx_mapping = {}  # the build must work offline

html_theme = "pydata_sphinx_theme"
html_title = f"flipad_sklearn {version}"
html_static_path = []
html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}

_run_examples = os.environ.get("FLIPAD_DOCS_RUN_EXAMPLES", "fast").lower()
sphinx_gallery_conf = {
    "examples_dirs": os.fspath(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": (r"/plot_" if _run_examples in ("1", "true", "all")
                         else r"/plot_tabular_attribution\.py"),
    "plot_gallery": "False" if _run_examples in ("0", "false", "none") else "True",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
    "write_computation_times": False,
}


# --------------------------------------------------------------- API pages
# Public modules whose names the reference lists (names re-exported at the
# top level are documented once, as flipad_sklearn.<name>).
_API_MODULES = [
    ("flipad_sklearn", "The main estimators, feature steps, helpers and displays."),
    # engine
    ("flipad_sklearn.operators",
     "A final layer as a linear operator: the protocol, capabilities and layer adapters."),
    ("flipad_sklearn.lasso", "The lasso solvers behind the inversion (no generators)."),
    # estimators
    ("flipad_sklearn.inversion", "The inverters (thin estimators over the engine)."),
    # detection
    ("flipad_sklearn.detection", "Detectors and the one conformal rule they share."),
    ("flipad_sklearn.detection.conformal",
     "The split, threshold and p-values of every detector."),
    ("flipad_sklearn.detection.deepsad", "Deep SAD networks (the conformal names re-exported)."),
    ("flipad_sklearn.detection.multi",
     "Attribution over several owned models (prediction sets)."),
    ("flipad_sklearn.model_selection",
     "Cross-validation with the labels 1 / -1 / 0 (see :doc:`user_guide/alpha`)."),
    # recipes
    ("flipad_sklearn.pipeline", "The recipes: every ``make_*``."),
    # generators and data
    ("flipad_sklearn.datasets", "Offline real data and loaders for your own images."),
    ("flipad_sklearn.generators", "A small zoo of image and tabular GANs to attribute."),
    # I/O and apps
    ("flipad_sklearn.persistence", "Secure save/load: numpy arrays + a JSON spec, no pickle."),
    ("flipad_sklearn.plotting", "Display objects (matplotlib, optional)."),
    ("flipad_sklearn.cli", "The ``flipad`` command line (see :doc:`user_guide/cli`)."),
]


def _write_api():
    import importlib
    import types

    seen = set()
    lines = ["API reference", "=============", "",
             "Every public name of the package (this page is generated from the",
             "``__all__`` of each module by ``docs/conf.py``).  Names re-exported by",
             "``flipad_sklearn`` (e.g. the displays of :mod:`flipad_sklearn.plotting`)",
             "are documented once, under ``flipad_sklearn``.", ""]
    for modname, blurb in _API_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        names = getattr(mod, "__all__", None)
        if names is None:
            continue
        groups = {"Classes": [], "Functions": [], "Data": []}
        for name in sorted(names, key=str.lower):
            obj = getattr(mod, name, None)
            if obj is None or isinstance(obj, types.ModuleType) or name.startswith("__"):
                continue
            key = id(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) \
                else (modname, name)
            if key in seen:
                continue
            seen.add(key)
            if inspect.isclass(obj):
                groups["Classes"].append(name)
            elif callable(obj):
                groups["Functions"].append(name)
            else:
                groups["Data"].append(name)
        if not any(groups.values()):
            lines += [f":mod:`{modname}`", "-" * (len(modname) + 7), "", blurb,
                      " Its public names are listed above.", ""]
            continue
        title = f":mod:`{modname}`"
        lines += [title, "-" * len(title), "", f".. automodule:: {modname}",
                  "   :no-members:", "   :no-index:", "", blurb, "",
                  f".. currentmodule:: {modname}", ""]
        for group, members in groups.items():
            if not members:
                continue
            lines += [f".. rubric:: {group}", ""]
            if group == "Data":
                for name in members:
                    value = getattr(mod, name)
                    lines += [f".. data:: {name}", f"   :value: {value!r}", ""]
                continue
            template = "class.rst" if group == "Classes" else "function.rst"
            lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:",
                      f"   :template: {template}", ""]
            lines += [f"   {name}" for name in members] + [""]
    text = "\n".join(lines)
    target = HERE / "api.rst"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


_write_api()


# ------------------------------------------------- docstring type lines
# In numpydoc "name : type" lines, reST reads ``n_features_in_`` as a link
# target and ``*output_shape`` as emphasis; escape them (before numpydoc).
import re  # noqa: E402

_TYPE_LINE = re.compile(r"^(\s*[\w, *\\]+ : )(.*)$")


def _escape_type_lines(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        m = _TYPE_LINE.match(line)
        if not m or "``" in m.group(2):
            continue
        typ = re.sub(r"(?<![\\\w])\*(?=\w)", r"\\*", m.group(2))
        typ = re.sub(r"(\w)_(?=[\s,)\]]|$)", r"\1\\_", typ)
        lines[i] = m.group(1) + typ


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    # scikit-learn generates set_{method}_request on subclasses of its routers
    # (ConformalPipeline is a Pipeline); their docstrings cite its glossary
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _escape_type_lines, priority=100)
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)
