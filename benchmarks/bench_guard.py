"""How FLIPADDetector combines Deep SAD with its one-class guard (issue 13).

Compares, on the same FLIPAD features and the same training sets, Deep SAD
alone (``one_class=None``), the one-class SVM alone (``detector="ocsvm"``)
and the guarded detector with each ``combine`` rule (``"min"``, ``"mean"``,
``"auto"``, and ``"auto (min)"``: the ``"auto"`` rule with the minimum as the
guarded combination):

* images (``--part image``): G = ``--kind`` (default DCGAN) of each seed of
  ``--g-seeds`` with the zoo and sizes of the image part of
  ``attribution.py`` (full config: 1000 samples of G, 400 real + 400
  shadow negatives, 200 test samples per source), trained on G's samples
  alone (one-class), under the paper protocol (real negatives) and the
  shadows protocol, and the
  sample-efficiency case of its ``efficiency`` part (the first 100 samples
  of G, real images and 2 shadows, every detector at its defaults) on the
  clean and the JPEG-compressed (quality 90) test sets (200 test samples per
  source, not the part's 100);
* tabular (``--part tabular``): the red-wine table of
  ``attribution_tabular.py`` (full config), both protocols.

Outputs in ``--out``: ``guard_<part>_pairs.csv`` (``<part>``: ``tabular``
or ``image_<kind>``; one row per case, method, G, test source) and
``guard_<part>.md`` (mean ± std over the seeds of G; each seed's
value is the mean over the group's sources) with the rules ``"auto"``
chose.

Usage::

    python -m benchmarks.bench_guard --part image --kind dcgan --g-seeds 0 1 --out bench_out
    python -m benchmarks.bench_guard --part image --kind wgan_gp --g-seeds 0 1 --out bench_out
    python -m benchmarks.bench_guard --part image --kind lsgan --g-seeds 0 1 --out bench_out
    python -m benchmarks.bench_guard --part tabular --g-seeds 0 1 2 --out bench_out

Runtime on one CPU thread (2026-12-01, zoo cached): image 4.8 minutes
(DCGAN, seeds 0 and 1), 5.6 (WGAN-GP) and 4.9 (LSGAN), mostly the
inversions; tabular 7.0 minutes (seeds 0, 1, 2).  Results:
``benchmarks/results/guard_*`` and the user guide's benchmark page
(``guard-combination``).
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from flipad_sklearn import JPEGCompression, ThresholdWarning
from flipad_sklearn.detection.deepsad import detector as detector_module

from . import attribution as A
from . import attribution_methods as M
from . import attribution_protocol as P
from .attribution_protocol import METRICS
from .train_zoo import DEFAULT_CACHE
from ._results import write_result

VARIANTS = {"Deep SAD": {"one_class": None}, "OCSVM": None,
            "min": {"combine": "min"}, "mean": {"combine": "mean"},
            "auto": {"combine": "auto"}, "auto (min)": {"combine": "auto"}}
# "auto (min)": the "auto" rule with the minimum as the guarded combination
GUARDED_FORM = {"auto (min)": "min"}


def _heads(ctx, deep_sad):
    """The FLIPAD pipeline after the inversion for each variant."""
    out = {}
    for name, params in VARIANTS.items():
        c = M.Context(ctx.G, ctx.anchor, dict(ctx.cfg, deep_sad=deep_sad), ctx.random_state)
        if params is None:
            pipe = M.REGISTRY["FLIPAD+OCSVM"].build(c)
        else:
            pipe = M.REGISTRY["FLIPAD"].build(c)
            pipe[-1].set_params(**params)
        out[name] = M.after_inversion(pipe)
    return out


def _fit_score(heads, Z_tr, y_tr, tests_by_label, groups, key, log):
    rows, chosen = [], []
    for name, head in heads.items():
        form = detector_module.GUARD_COMBINATION
        detector_module.GUARD_COMBINATION = GUARDED_FORM.get(name, form)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                head.fit(Z_tr, y_tr)
        finally:
            detector_module.GUARD_COMBINATION = form
        det = head[-1]
        if name.startswith("auto"):
            chosen.append(dict(key, method=name, combine_=det.combine_,
                               **(det.guard_check_ or {})))
            log(f"    {name}: {det.combine_} ({(det.guard_check_ or {}).get('reason')})")
        for label, tests in tests_by_label.items():
            _, res = P.score_sources(head, tests)
            for src, (_, row) in res.items():
                rows.append(dict(key, method=name, test=label, source=src,
                                 group=groups[src], **row))
    return rows, chosen


def run_image(g_seeds, cache_dir, kind="dcgan", log=print):
    cfg = A._config("full")
    t0 = time.perf_counter()
    zoo = P.load_zoo(cfg["zoo"], cache_dir, log)
    real = P.real_pool(cfg["zoo"]["image_size"])
    eff = A.EFFICIENCY["full"]
    rows, chosen = [], []
    for seed in g_seeds:
        s = A._setup(cfg, zoo, real, kind, seed)
        ctx = M.Context(s.G, s.anchor, cfg, random_state=seed)
        pert = JPEGCompression(quality=90)
        sets = {"clean": s.test, "jpeg q=90": {
            n: A._perturb(pert, X, k) for k, (n, X) in enumerate(s.test.items())}}
        pool = s.training_set()[0]
        Z_pool, Z_sets = A._inverted_sets(ctx, pool, sets)
        log(f"{s.name}: inverted ({time.perf_counter() - t0:.0f}s)")
        n_all, n_real = len(s.X_g), len(s.X_real)
        per_shadow = len(s.X_shadows[0])
        cases = [("image one-class (no negatives)", n_all, None, cfg["deep_sad"],
                  {"clean": Z_sets["clean"]}),
                 ("image paper", n_all, 0, cfg["deep_sad"], {"clean": Z_sets["clean"]}),
                 ("image shadows", n_all, len(s.X_shadows), cfg["deep_sad"],
                  {"clean": Z_sets["clean"]}),
                 ("efficiency n=100, 2 shadows", 100, 2, eff["deep_sad"], Z_sets)]
        for case, n, n_sh, deep_sad, tests in cases:
            if n_sh is None:        # G's samples alone
                idx, y_tr = np.arange(n), np.ones(n)
            else:
                _, y_tr = s.training_set(n_g=n, n_shadows=n_sh)
                idx = np.r_[0:n, n_all:n_all + n_real + n_sh * per_shadow]
            key = dict(case=case, G=s.name, seed=seed)
            r, c = _fit_score(_heads(ctx, deep_sad), Z_pool[idx], y_tr, tests, s.groups,
                              key, log)
            rows += r
            chosen += c
            log(f"  {case} done ({time.perf_counter() - t0:.0f}s)")
    return rows, chosen


def run_tabular(g_seeds, cache_dir, log=print):
    from . import attribution_tabular as T
    from flipad_sklearn import mean_activation

    cfg = T.CONFIGS["full"]
    t0 = time.perf_counter()
    zoo, others, real = T.prepare(cfg, cache_dir, log)
    rows, chosen = [], []
    for seed in g_seeds:
        G, sets, test, groups = T.setup_for(seed, cfg, zoo, others, real)
        anchor = mean_activation(G, cfg["n_anchor"], G.latent_shape, layer=G.final_layer,
                                 random_state=7, device="cpu")
        pipe = T.flipad_pipeline(G, cfg, anchor, seed)
        rows_all = np.concatenate([sets["shadows"][0]] + list(test.values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            Z = pipe[0].fit(rows_all).transform(rows_all)
        n_tr = len(sets["shadows"][0])
        feats, start = {}, n_tr
        for name, X in test.items():
            feats[name] = Z[start:start + len(X)]
            start += len(X)
        log(f"kl_wgan-s{seed}: inverted ({time.perf_counter() - t0:.0f}s)")
        for proto, (X_tr, y_tr) in sets.items():
            heads = {}
            for name, params in VARIANTS.items():
                if params is None:
                    heads[name] = T.flipad_pipeline(G, cfg, anchor, seed, "ocsvm")[1:]
                else:
                    heads[name] = T.flipad_pipeline(G, cfg, anchor, seed, deep_sad=params)[1:]
            key = dict(case=f"tabular {proto}", G=f"kl_wgan-s{seed}", seed=seed)
            r, c = _fit_score(heads, Z[:len(X_tr)], y_tr, {"clean": feats}, groups, key, log)
            rows += r
            chosen += c
            log(f"  tabular {proto} done ({time.perf_counter() - t0:.0f}s)")
    return rows, chosen


def markdown(rows, chosen, title):
    lines = [f"# {title}", "",
             "acc@0.005 / AUC, mean ± std over the seeds of G (each seed: the mean over the "
             "group's test sources).", ""]
    cases = list(dict.fromkeys((r["case"], r["test"]) for r in rows))
    for case, test in cases:
        sub = [r for r in rows if r["case"] == case and r["test"] == test]
        groups = list(dict.fromkeys(r["group"] for r in sub))
        lines += [f"## {case}, {test} test", "",
                  "| method | " + " | ".join(f"{g} acc@0.005 | {g} auc" for g in groups) + " |",
                  "|---|" + "---|---|" * len(groups)]
        for method in VARIANTS:
            cells = []
            for g in groups:
                seeds = sorted({r["seed"] for r in sub})
                for m in ("acc@0.005", "auc"):
                    v = np.array([np.mean([r[m] for r in sub if r["method"] == method
                                           and r["group"] == g and r["seed"] == sd])
                                  for sd in seeds])
                    cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## What `combine=\"auto\"` chose", "",
              "| case | G | method | combine_ | reason |", "|---|---|---|---|---|"]
    lines += [f"| {c['case']} | {c['G']} | {c['method']} | {c['combine_']} | "
              f"{c.get('reason')} |" for c in chosen]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("image", "tabular"), default="image")
    p.add_argument("--g-seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--kind", default="dcgan", help="G's kind (image part)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--out", default="bench_out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    # 100 samples of G leave 50 for the thresholds: fnr = 0.005 warns on every fit
    warnings.simplefilter("ignore", ThresholdWarning)
    t0 = time.perf_counter()
    if args.part == "image":
        rows, chosen = run_image(args.g_seeds, args.cache_dir, args.kind)
    else:
        rows, chosen = run_tabular(args.g_seeds, args.cache_dir)
    os.makedirs(args.out, exist_ok=True)
    keys = ["case", "method", "G", "seed", "test", "source", "group"] + list(METRICS)
    name = args.part if args.part == "tabular" else f"{args.part}_{args.kind}"
    P.write_csv(os.path.join(args.out, f"guard_{name}_pairs.csv"), rows, keys,
                float_format="{:.4f}")
    md = markdown(rows, chosen, f"The guard's combination rule ({name}, G seeds "
                  f"{args.g_seeds}, {P.elapsed_min(t0):.1f} min)")
    print(md)
    print(f"written: {write_result(f'guard_{name}.md', md, results_dir=args.out)}")


if __name__ == "__main__":
    main()
