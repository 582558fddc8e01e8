"""The same inversion before and after a change of the engine, in one run.

A refactoring of the engine (operators, solvers, the solve door) must not
change what users get: the defaults' iterations and objectives on the
inversion benchmark's layers must reproduce to the digit, and the time stay
within noise.  This benchmark runs ``FinalLayerInverter`` at its defaults on
the paper's DCGAN, LSGAN and Stable Diffusion (128x128) final layers and the
tabular ``Linear(300, 11)`` (the problems of :mod:`benchmarks._harness`), and
with FISTA and split ADMM forced once each (so that every solver loop runs), once
with the package of another checkout (``--before``, e.g. a ``git worktree``
of the last release) and once with this one, each in its own subprocess,
alternating ``--repeat`` times so that a slow spell of a shared machine biases
neither.  It reports, per layer: the iterations per sample, the largest
relative difference of the objectives and of the features, whether the stop
reasons agree, and the best transform time of each.

Run: ``python -m benchmarks.bench_engine_equivalence --before /path/to/old/checkout``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn

from ._harness import paper_layer, problem
from ._results import add_result_args, results_dir, write_result

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# the child: only what both versions have (FinalLayerInverter at its defaults)
CHILD = r"""
import json, sys, time, warnings
import numpy as np, torch
from sklearn.exceptions import ConvergenceWarning
torch.set_num_threads(int(sys.argv[3]))
import flipad_sklearn
from flipad_sklearn import FinalLayerInverter
data = np.load(sys.argv[1], allow_pickle=False)
spec = json.loads(str(data["spec"]))
layer = getattr(torch.nn, spec["type"])(**spec["kwargs"])
layer.load_state_dict({"weight": torch.from_numpy(data["weight"]),
                       "bias": torch.from_numpy(data["bias"])})
x, anchor = data["x"], data["anchor"]
inv = FinalLayerInverter(layer=layer, activation=spec["activation"], alpha=spec["alpha"],
                         anchor=anchor, solver=spec["solver"]).fit(x)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    inv.transform(x[:1])                      # per-layer set-up, not timed
    t0 = time.perf_counter()
    z = inv.transform(x)
    t = time.perf_counter() - t0
np.savez(sys.argv[2], z=z, objective=inv.objective_, n_iter=inv.n_iter_,
         reason=np.asarray(inv.stop_reason_).astype(str), time=t,
         solver=str(inv.solver_), where=flipad_sklearn.__file__)
"""


def _layers(quick):
    """``(name, solver, layer, activation, alpha, x, anchor)``: the defaults on each
    layer, and FISTA and split ADMM forced once each (every solver loop runs)."""
    out = []
    for name, solver in (("dcgan", "auto"), ("lsgan", "auto"), ("sd", "auto"),
                         ("dcgan", "fista"), ("lsgan", "split_admm")):
        side = {"dcgan": 16, "lsgan": 16, "sd": 32}[name] if quick else None
        layer, shape, act, alpha, _ = paper_layer(name, side)
        x, anchor = problem(layer, shape, 2 if quick else 4, act)
        out.append((name, solver, layer, act, alpha,
                    x.reshape(len(x), -1).astype(np.float64), anchor))
    torch.manual_seed(0)
    layer = nn.Linear(300, 11)
    rng = np.random.default_rng(0)
    anchor = np.maximum(rng.normal(size=(5000, 300)), 0).mean(axis=0)
    h = np.maximum(rng.normal(size=(200 if quick else 2000, 300)), 0)
    with torch.no_grad():
        x = layer(torch.tensor(h, dtype=torch.float32)).numpy().astype(np.float64)
    # cd forced: "auto" took it before and takes FISTA now, a deliberate change
    # of the default (results/bench_inversion_linear.md); the loop is compared here
    out.append(("tabular", "cd", layer, "identity", 5e-4, x, anchor))
    return out


def _save_problem(path, solver, layer, activation, alpha, x, anchor):
    t = type(layer).__name__
    if t == "Linear":
        kwargs = dict(in_features=layer.in_features, out_features=layer.out_features)
    else:
        kwargs = {k: getattr(layer, k) for k in ("in_channels", "out_channels", "kernel_size",
                                                 "stride", "padding")}
    spec = dict(type=t, kwargs=kwargs, activation=activation, alpha=alpha, solver=solver)
    np.savez(path, spec=json.dumps(spec), weight=layer.weight.detach().numpy(),
             bias=layer.bias.detach().numpy(), x=x, anchor=anchor)


def _run(tree, problem_path, out_path, threads):
    env = dict(os.environ, PYTHONPATH=tree)
    subprocess.run([sys.executable, "-c", CHILD, problem_path, out_path, str(threads)],
                   env=env, check=True, cwd=tempfile.gettempdir())
    with np.load(out_path) as r:
        return {k: r[k] for k in r.files}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True,
                        help="root of the checkout to compare with (its flipad_sklearn/)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="small layers (a smoke run)")
    add_result_args(parser)
    args = parser.parse_args(argv)
    before = os.path.abspath(args.before)
    if not os.path.isdir(os.path.join(before, "flipad_sklearn")):
        parser.error(f"{before} has no flipad_sklearn/ package")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=before).stdout.strip() or "unknown"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, solver, layer, act, alpha, x, anchor in _layers(args.quick):
            prob = os.path.join(tmp, f"{name}.npz")
            _save_problem(prob, solver, layer, act, alpha, x, anchor)
            res = {"before": [], "after": []}
            for _ in range(args.repeat):
                for label, tree in (("before", before), ("after", ROOT)):
                    res[label].append(_run(tree, prob, os.path.join(tmp, f"{label}.npz"),
                                           args.threads))
            b, a = res["before"][0], res["after"][0]
            assert os.path.dirname(str(a["where"])).startswith(ROOT), a["where"]
            same_runs = all(np.array_equal(r["n_iter"], b["n_iter"])
                            for r in res["before"][1:])
            rows.append(dict(
                name=name if solver == "auto" else f"{name}, solver={solver!r}", n=len(x),
                solver=f"{b['solver']} / {a['solver']}",
                it_b=f"{np.median(b['n_iter']):.0f}", it_a=f"{np.median(a['n_iter']):.0f}",
                same_iter=bool(np.array_equal(b["n_iter"], a["n_iter"])),
                obj=float(np.max(np.abs(a["objective"] / b["objective"] - 1))),
                feat=float(np.max(np.linalg.norm(a["z"] - b["z"], axis=1)
                                  / np.linalg.norm(b["z"], axis=1))),
                reasons=bool(np.array_equal(a["reason"], b["reason"])),
                t_b=min(float(r["time"]) for r in res["before"]) / len(x),
                t_a=min(float(r["time"]) for r in res["after"]) / len(x),
                deterministic=same_runs))
    lines = [f"# The engine before ({commit}, {before}) and after, at the defaults",
             "",
             f"{args.repeat} alternating runs of each, {args.threads} torch threads; "
             "times are the best run's, per sample.", "",
             "| layer | samples | solver (before / after) | iterations (median) before / after "
             "| iterations identical | objective max rel. diff | features max rel. diff "
             "| stop reasons identical | s / sample before | s / sample after | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['n']} | {r['solver']} | {r['it_b']} / {r['it_a']} "
            f"| {'yes' if r['same_iter'] else 'NO'} | {r['obj']:.1e} | {r['feat']:.1e} "
            f"| {'yes' if r['reasons'] else 'NO'} | {r['t_b']:.4f} | {r['t_a']:.4f} "
            f"| {r['t_a'] / r['t_b']:.2f} |")
    text = "\n".join(lines)
    print(text)
    write_result("bench_engine_equivalence.md", text, results_dir=results_dir(args))


if __name__ == "__main__":
    main()
