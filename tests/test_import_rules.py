"""The package's map, enforced: imports go down the roles, never up, and never round.

A module may import from its own role or a lower one (``ROLES``, lowest
first); the graph of imports between modules, function-level imports
included, has no cycle; and no module outside ``operators/`` compares a
layer-kind string or tests ``isinstance`` against a ``torch.nn`` layer type
(the package's own networks in ``generators/`` and ``detection/deepsad/``
build and initialise their layers, which is not reading a final layer).
"""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "flipad_sklearn"
ROLES = [
    ("base", {"_version", "_device", "_validation", "_deprecated", "exceptions"}),
    ("engine", {"activations", "operators", "lasso", "linear_ops", "skip_operator"}),
    ("generators and data", {"generator_utils", "generators", "datasets"}),
    ("estimators", {"inversion", "features", "perturbations", "streaming",
                    "skip_inversion"}),
    ("detection", {"detection", "model_selection", "conformal", "conformal_pipeline",
                   "multi", "deepsad", "baselines"}),
    ("recipes", {"pipeline"}),
    ("I/O", {"persistence", "_file_checks", "verdicts"}),
    ("apps", {"cli", "demo", "plotting", "__main__"}),
]
LEVEL = {top: i for i, (_, tops) in enumerate(ROLES) for top in tops}
KIND_STRINGS = {"linear", "conv2d", "conv_transpose2d", "skip_projected"}
NN_LAYERS = {"Linear", "Conv1d", "Conv2d", "ConvTranspose2d"}
OWN_NETWORKS = ("generators/", "detection/deepsad/")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(["flipad_sklearn", *parts]), is_pkg, path


MODULES = {name: (is_pkg, path) for name, is_pkg, path in _modules()}


def _imports(name):
    """Every flipad_sklearn module ``name`` imports (module or function level)."""
    is_pkg, path = MODULES[name]
    package = name if is_pkg else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:     # `from . import spectral` names a module
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _top(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_role():
    tops = {_top(m) for m in MODULES} - {None}
    assert tops <= set(LEVEL), f"modules without a role: {sorted(tops - set(LEVEL))}"


def test_imports_never_go_up_a_role():
    upward = [f"{m} ({ROLES[LEVEL[_top(m)]][0]}) imports {t} ({ROLES[LEVEL[_top(t)]][0]})"
              for m, targets in GRAPH.items() if _top(m) for t in targets
              if _top(t) and LEVEL[_top(t)] > LEVEL[_top(m)]]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its submodules is not a cycle with them
    real = [c for c in cycles if not all(
        a.startswith(b) or b.startswith(a) for a, b in zip(c.split(" -> "), c.split(" -> ")[1:]))]
    assert not real, "\n".join(real)


def _kind_reads(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = {s.attr if isinstance(s, ast.Attribute) else getattr(s, "id", None)
                     for s in sides}
            consts = {c.value for s in sides for c in ast.walk(s)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            if "kind" in names and consts & KIND_STRINGS:
                yield node.lineno, "compares a layer-kind string"
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            types = {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if types & NN_LAYERS:
                yield node.lineno, f"isinstance against torch.nn.{sorted(types & NN_LAYERS)}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES
                                        if not m.startswith("flipad_sklearn.operators")))
def test_no_layer_kind_outside_operators(name):
    path = MODULES[name][1]
    rel = path.relative_to(PKG).as_posix()
    found = list(_kind_reads(path))
    if rel.startswith(OWN_NETWORKS):
        found = [f for f in found if not f[1].startswith("isinstance")]
    assert not found, [f"{rel}:{line} {what}" for line, what in found]


def test_the_rules_catch_what_they_forbid(tmp_path):
    # the checks themselves: a kind comparison and an nn isinstance are found
    bad = tmp_path / "bad.py"
    bad.write_text("if op.kind == 'conv2d' or isinstance(layer, nn.Linear):\n    pass\n")
    assert len(list(_kind_reads(bad))) == 2
    assert LEVEL["pipeline"] > LEVEL["inversion"] > LEVEL["lasso"] > LEVEL["_device"]


@pytest.mark.parametrize("old", ["baselines", "conformal", "conformal_pipeline", "deepsad",
                                 "lasso.embedding", "lasso.spectral", "linear_ops", "multi",
                                 "skip_inversion", "skip_operator"])
def test_old_import_paths_warn_and_give_the_same_objects(old):
    import importlib
    import sys

    import flipad_sklearn

    assert old in flipad_sklearn._DEPRECATED_MODULES
    sys.modules.pop(f"flipad_sklearn.{old}", None)
    with pytest.warns(FutureWarning, match=f"flipad_sklearn.{old} moved to"):
        module = importlib.import_module(f"flipad_sklearn.{old}")
    # pickles and isinstance see one class whatever the path
    probe = {"baselines": "ConformalDetector", "conformal": "calibrate",
             "conformal_pipeline": "ConformalPipeline", "deepsad": "FLIPADDetector",
             "linear_ops": "LayerOperator", "multi": "OwnedModelsAttributor",
             "skip_inversion": "SkipInverter", "skip_operator": "SkipProjectedOperator",
             "lasso.embedding": "PeriodicEmbedding", "lasso.spectral": "SpectralProducts"}[old]
    new = {"LayerOperator": "flipad_sklearn.operators",
           "SkipProjectedOperator": "flipad_sklearn.operators",
           "PeriodicEmbedding": "flipad_sklearn.operators",
           "SpectralProducts": "flipad_sklearn.operators",
           "calibrate": "flipad_sklearn.detection"}.get(probe, "flipad_sklearn")
    assert getattr(module, probe) is getattr(importlib.import_module(new), probe)


@pytest.mark.parametrize("name", ["ADMM_ITER", "DEFAULT_RHO_STAGES", "gap_scale",
                                  "SpectralProducts", "exact_products"])
def test_names_lasso_exported_before_still_resolve_with_a_warning(name):
    import flipad_sklearn.lasso as lasso

    with pytest.warns(FutureWarning, match=f"flipad_sklearn.lasso.{name} moved to"):
        value = getattr(lasso, name)
    assert value is not None
    with pytest.raises(AttributeError):
        lasso.no_such_name
