"""Benchmark: the probe engine vs a scikit-learn loop and himalaya on one synthetic store.

Run:  .venv/bin/python bench/probe.py                 # the full comparison (about an hour)
      .venv/bin/python bench/probe.py --quick         # small store, minutes

Store: runs x checkpoints x layers (widths 64..2048) x three 10-class features, n samples,
written with the store API (`actstore.probes.write_synthetic_store`; decodability grows over
checkpoints). Settings: 5-fold stratified CV, 13 ridge alphas, 13 logistic Cs.

The whole run works without numpy's huge-page advice, as the engine does (memory is first
touched alike by the engine and the baselines; see actstore/core/_pages.py).

Timed in this one process run, side by side, all on one core (`--threads 1`, BLAS limited
with threadpoolctl; the machine is shared, and one core per contestant keeps the ratios stable):
  floor           reading + decoding every activation array once, plus X^T X of every array
                  in float64 at this machine's measured matrix-product rate, plus one d x d
                  symmetric eigendecomposition per job (`numpy.linalg.eigh`, LAPACK dsyevd)
                  at its measured time: what every exact cross-validated ridge over a grid of
                  penalties needs at least. Printed in total and per width, with the
                  engine's ridge time per width (the result's per-job seconds) over it
  engine ridge    `run_probes(decoders=("ridge",), execution=Execution(workers=1))`: all
                  jobs, in this process, on standardised units (the default), as a first
                  computation of the result (one left by an earlier run is removed first)
  engine logistic `run_probes(decoders=("logistic",))` likewise, standardised
  engine raw      both again with `standardize=False`: the cost of standardising is the
                  ratio of the two (`--skip raw` to leave them out; `--skip logistic` times
                  the ridge decoders alone, on every side)
  (`--dask`: also both passes on the default local Dask cluster, one worker per core)
  sklearn ridge   `GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier()),
                  alphas, cv=<same folds>)` per decoder (job x feature): what a user writes to
                  z-score each training fold
  himalaya ridge  `himalaya.ridge.RidgeCV(alphas, cv=<same folds>)` per layer, all 30 one-hot
                  targets at once, scored by per-feature argmax accuracy (raw units: himalaya
                  has no per-fold scaling; compared with the engine's raw-unit numbers)
  sklearn logistic `GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(
                  max_iter=100)), Cs, cv=<same folds>)` per decoder (default max_iter, as a
                  user would write it; `--max-iter` to change)

The baselines take hours on the whole store, so they run on a subset of jobs (by default one
run at the last checkpoint: one job per width) and their time is extrapolated to the store:
sum over widths of (mean seconds per job of that width) x (jobs of that width). Accuracies are
compared job by job on that subset (CV accuracy at the chosen penalty).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import xarray  # noqa: F401  (imported before any clock starts, as scikit-learn is)

from actstore import Execution
from actstore.core._pages import plain_pages
from actstore.probes import ProbeConfig, make_folds, run_probes, write_synthetic_store
from actstore.store import open_store

FEATURES = {"shape": 10, "color": 10, "texture": 10}


def compile_logistic() -> None:
    """Compile (or load from numba's cache) the logistic solver's loops before any clock
    starts, as imports are: a once-per-process cost, like importing scikit-learn."""
    from actstore.probes import probe_arrays

    rng = np.random.default_rng(0)
    probe_arrays(rng.standard_normal((60, 8)), {"y": rng.integers(0, 3, 60)},
                 decoders=("logistic",))


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def floor(store, jobs, n: int) -> dict:
    """Read every array once; X^T X (float64) and one eigendecomposition per job, at the
    rates measured here for each width."""
    nbytes = 0
    read_of: dict[int, list[float]] = {}
    for run, step, layer, w in jobs:
        t0 = time.perf_counter()
        for _, _, blk in store.reader(run).iter_blocks(layer, step):
            nbytes += blk.nbytes
        read_of.setdefault(w, []).append(time.perf_counter() - t0)
    read_s = sum(sum(v) for v in read_of.values())
    rng = np.random.default_rng(0)
    xtx, eig = {}, {}
    for d in sorted({j[3] for j in jobs}):
        X = rng.standard_normal((n, d))
        xtx[d] = best_of(lambda X=X: X.T @ X)
        C = X.T @ X
        eig[d] = best_of(lambda C=C: np.linalg.eigh(C))
    big = max(xtx)
    rate = 2.0 * n * big * big / xtx[big] / 1e9
    compute_s = sum(xtx[j[3]] for j in jobs)
    eig_s = sum(eig[j[3]] for j in jobs)
    per_job = {d: float(np.mean(read_of[d])) + xtx[d] + eig[d] for d in xtx}
    return {"read_s": read_s, "xtx_s": compute_s, "eigh_s": eig_s,
            "floor_s": read_s + compute_s + eig_s, "gflops": rate, "read_mb": nbytes / 2**20,
            "eigh_per_width_s": {str(d): t for d, t in eig.items()},
            "floor_per_job_s": {str(d): t for d, t in per_job.items()}}


def per_width_ratios(ds, decoder: str, fl: dict, widths, names) -> dict:
    """Engine seconds per job of each width (mean over the store) / the floor per job."""
    out = {}
    for i, w in enumerate(widths):
        sec = float(ds["seconds"].sel(layer=names[i]).mean())
        out[str(w)] = {"engine_s": sec, "floor_s": fl["floor_per_job_s"][str(w)],
                       "ratio": sec / fl["floor_per_job_s"][str(w)]}
        print(f"  {decoder} width {w:5}: {sec:7.3f} s per job, floor {out[str(w)]['floor_s']:.3f}"
              f" s -> {out[str(w)]['ratio']:.2f}x")
    return out


def _grid(model, param, values, splits):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), model)
    key = f"{pipe.steps[-1][0]}__{param}"
    return GridSearchCV(pipe, {key: list(values)}, cv=splits, refit=False)


def sklearn_ridge(X, labels, splits, alphas):
    from sklearn.linear_model import RidgeClassifier

    acc = {}
    t0 = time.perf_counter()
    for f, y in labels.items():
        m = _grid(RidgeClassifier(), "alpha", alphas, splits).fit(X, y)
        acc[f] = float(m.best_score_)
    return time.perf_counter() - t0, acc


def himalaya_ridge(X, labels, folds, alphas):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from sklearn.model_selection import PredefinedSplit

    set_backend("numpy", on_error="warn")
    blocks, cols, start = {}, [], 0
    for f, y in labels.items():
        classes = np.unique(y)
        cols.append(np.where(y[:, None] == classes[None, :], 1.0, -1.0))
        blocks[f] = (start, start + classes.size)
        start += classes.size
    Y = np.concatenate(cols, axis=1).astype(X.dtype)

    def accuracy(y_true, y_pred):
        # himalaya passes targets and predictions centred by the training mean; with -1/+1
        # targets the mean of column c is -1 - min(y_true[:, c]).
        mean = -1.0 - y_true.min(axis=0)
        pred = y_pred + mean
        out = np.empty((*pred.shape[:-2], y_true.shape[1]))
        for a, e in blocks.values():
            hit = np.argmax(pred[..., a:e], axis=-1) == np.argmax(y_true[:, a:e], axis=-1)
            out[..., a:e] = hit.mean(axis=-1)[..., None]
        return out

    t0 = time.perf_counter()
    m = RidgeCV(alphas=alphas, fit_intercept=True, cv=PredefinedSplit(folds.test_fold),
                solver_params={"score_func": accuracy, "local_alpha": True})
    m.fit(X, Y)
    dt = time.perf_counter() - t0
    scores = np.asarray(m.cv_scores_).ravel()
    return dt, {f: float(scores[a]) for f, (a, _) in blocks.items()}


def sklearn_logistic(X, labels, splits, Cs, max_iter=100):
    from sklearn.linear_model import LogisticRegression

    acc = {}
    t0 = time.perf_counter()
    for f, y in labels.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at the weakest penalties
            m = _grid(LogisticRegression(max_iter=max_iter), "C", Cs, splits).fit(X, y)
        acc[f] = float(m.best_score_)
    return time.perf_counter() - t0, acc


def engine(url, decoders, config, workers, name):
    """A first computation of the result ``name`` (a result of that name left by an earlier
    benchmark run is removed before the clock starts, so the engine writes it once, as a
    user's first run does, not by the staged replacement of ``overwrite``)."""
    cfg = ProbeConfig(**{**config, "decoders": decoders})
    store = open_store(url, mode="a")
    for stale in (name, f".{name}.overwrite"):
        if store.has_result("probes", stale):
            store.remove_result("probes", stale)
    t0 = time.perf_counter()
    ds = run_probes(url, name=name, config=cfg, execution=Execution(workers=workers))
    return time.perf_counter() - t0, ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", default="/tmp/actstore-bench/probe.zarr")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads for everything timed (default 1: one core each)")
    ap.add_argument("--dask", action="store_true",
                    help="also time both passes on the default local Dask cluster")
    ap.add_argument("--max-iter", type=int, default=100, help="sklearn logistic max_iter")
    ap.add_argument("--device", default="numpy")
    ap.add_argument("--baseline-checkpoints", default="last",
                    help="checkpoints of run0 timed for the baselines: last, first,last, all")
    ap.add_argument("--skip", default="",
                    help="comma list: sklearn-logistic, himalaya, raw (the raw-unit passes), "
                         "logistic (every logistic pass: ridge alone), ...")
    ap.add_argument("--quick", action="store_true",
                    help="2 runs x 3 checkpoints, widths 64..512, n=2000")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.checkpoints, args.widths, args.n = 2, 3, "64,128,256,512", 2000
        if args.store == ap.get_default("store"):
            args.store = "/tmp/actstore-bench/probe-quick.zarr"
    widths = [int(w) for w in args.widths.split(",")]
    steps = [0] + [int(s) for s in np.logspace(1, 4, args.checkpoints - 1)]
    skip = set(args.skip.split(","))
    alphas = np.logspace(-2, 4, 13)
    Cs = np.logspace(-4, 2, 13)
    config = {"alphas": tuple(alphas), "Cs": tuple(Cs), "n_splits": 5, "seed": 0,
              "device": args.device}

    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_synthetic_store(args.store, n_runs=args.runs, steps=steps, widths=widths, n=args.n,
                          features=FEATURES)
    print(f"store {args.store}: {args.runs} runs x {len(steps)} checkpoints x "
          f"{len(widths)} layers (widths {args.widths}) x 3 ten-class features, n={args.n} "
          f"(ready in {time.perf_counter() - t0:.0f} s)")
    store = open_store(args.store)
    jobs = [(r, s, f"layer{i}", w) for r in store.run_ids() for s in steps
            for i, w in enumerate(widths)]
    per_width = {w: sum(1 for j in jobs if j[3] == w) for w in widths}

    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(args.threads)
    fl = floor(store, jobs, args.n)
    print(f"floor: read+decode {fl['read_s']:.1f} s ({fl['read_mb']:.0f} MiB), X^T X "
          f"{fl['xtx_s']:.1f} s at {fl['gflops']:.0f} GFLOP/s, one eigh per job "
          f"{fl['eigh_s']:.1f} s -> {fl['floor_s']:.1f} s")

    if "logistic" not in skip:
        compile_logistic()
    t_ridge, ds_ridge = engine(args.store, ("ridge",), config, 1, "bench-ridge")
    print(f"engine ridge: {t_ridge:.1f} s for {len(jobs)} jobs", flush=True)
    layer_names = [f"layer{i}" for i in range(len(widths))]
    ridge_widths = per_width_ratios(ds_ridge, "ridge", fl, widths, layer_names)
    no_log = "logistic" in skip  # ridge alone: no logistic pass on either side
    t_log = ds_log = None
    if not no_log:
        t_log, ds_log = engine(args.store, ("logistic",), config, 1, "bench-logistic")
        print(f"engine logistic: {t_log:.1f} s for {len(jobs)} jobs", flush=True)
    raw = {**config, "standardize": False}
    t_ridge_raw = t_log_raw = None
    ds_ridge_raw = ds_ridge
    if "raw" not in skip:
        t_ridge_raw, ds_ridge_raw = engine(args.store, ("ridge",), raw, 1, "bench-ridge-raw")
        print(f"engine ridge, raw units: {t_ridge_raw:.1f} s", flush=True)
        if not no_log:
            t_log_raw, _ = engine(args.store, ("logistic",), raw, 1, "bench-logistic-raw")
            print(f"engine logistic, raw units: {t_log_raw:.1f} s", flush=True)
    t_dask = t_dask_log = None
    if args.dask:
        limits.restore_original_limits()
        t_dask, _ = engine(args.store, ("ridge",), config, None, "bench-ridge-dask")
        print(f"engine ridge, local Dask cluster: {t_dask:.1f} s", flush=True)
        if not no_log:
            t_dask_log, _ = engine(args.store, ("logistic",), config, None,
                                   "bench-logistic-dask")
            print(f"engine logistic, local Dask cluster: {t_dask_log:.1f} s", flush=True)
        limits = threadpool_limits(args.threads)

    sel = {"last": [steps[-1]], "first,last": [steps[0], steps[-1]], "all": steps}[
        args.baseline_checkpoints]
    rd = store.reader("run0")
    labels = {f: rd.labels[f] for f in FEATURES}
    folds, _ = make_folds(labels, ProbeConfig(**config))
    splits = list(folds.split())
    base = {"sklearn ridge": {}, "himalaya ridge": {}, "sklearn logistic": {}}
    diffs = {k: [] for k in base}
    for step in sel:
        for i, w in enumerate(widths):
            layer = f"layer{i}"
            X = rd.read(layer, step)
            eng_r = ds_ridge.accuracy.sel(decoder="ridge", run="run0", checkpoint=step,
                                          layer=layer)
            eng_l = None if ds_log is None else ds_log.accuracy.sel(
                decoder="logistic", run="run0", checkpoint=step, layer=layer)
            eng_raw = ds_ridge_raw.accuracy.sel(decoder="ridge", run="run0", checkpoint=step,
                                                layer=layer)
            todo = [("sklearn ridge", sklearn_ridge, (X, labels, splits, alphas), eng_r),
                    ("himalaya ridge", himalaya_ridge, (X, labels, folds, alphas), eng_raw),
                    ("sklearn logistic", sklearn_logistic,
                     (X, labels, splits, Cs, args.max_iter), eng_l)]
            for name, fn, fargs, eng in todo:
                if (name.replace(" ", "-") in skip or name.split()[0] in skip
                        or (no_log and "logistic" in name)):
                    continue
                dt, acc = fn(*fargs)
                base[name].setdefault(w, []).append(dt)
                for f, a in acc.items():
                    diffs[name].append(100 * (float(eng.sel(feature=f)) - a))
                print(f"  {name:17} width {w:5} step {step:6}: {dt:7.1f} s, "
                      f"acc {', '.join(f'{a:.3f}' for a in acc.values())} (engine "
                      f"{', '.join(f'{float(eng.sel(feature=f)):.3f}' for f in acc)})",
                      flush=True)

    def extrapolate(times: dict) -> float:
        return sum(np.mean(v) * per_width[w] for w, v in times.items())

    rows = [("floor (read + X^T X + eigh)", fl["floor_s"], None, None),
            ("engine ridge", t_ridge, None, None),
            ("engine logistic", t_log, None, None),
            ("engine ridge, raw units", t_ridge_raw, None, None),
            ("engine logistic, raw units", t_log_raw, None, None),
            ("engine ridge, Dask (all cores)", t_dask, None, None),
            ("engine logistic, Dask (all cores)", t_dask_log, None, None)]
    rows = [row for row in rows if row[1] is not None]
    out = {"floor": fl, "engine_ridge_s": t_ridge, "engine_logistic_s": t_log, "jobs": len(jobs),
           "engine_ridge_raw_s": t_ridge_raw, "engine_logistic_raw_s": t_log_raw,
           "engine_ridge_dask_s": t_dask, "engine_logistic_dask_s": t_dask_log,
           "threads": args.threads, "ridge_per_width": ridge_widths}
    for name, times in base.items():
        if len(times) == len(widths):
            total = extrapolate(times)
            eng_t = t_log if "logistic" in name else (
                t_ridge_raw if "himalaya" in name and t_ridge_raw else t_ridge)
            d = np.abs(diffs[name])
            rows.append((f"{name} (extrapolated)", total, total / eng_t, float(d.max())))
            out[name] = {"seconds": total, "speedup": total / eng_t,
                         "max_acc_diff_pt": float(d.max()),
                         "per_width_s": {str(w): float(np.mean(v)) for w, v in times.items()}}
    print()
    print(f"{'':34} {'seconds':>9} {'engine speed-up':>16} {'max |acc diff| pt':>18}")
    for name, sec, ratio, diff in rows:
        print(f"{name:34} {sec:9.1f} {'' if ratio is None else f'{ratio:15.1f}x':>16} "
              f"{'' if diff is None else f'{diff:18.2f}':>18}")
    print(f"{'engine ridge / floor':34} {t_ridge / fl['floor_s']:9.2f}")
    if t_ridge_raw is not None:
        print(f"{'standardised / raw units, ridge':34} {t_ridge / t_ridge_raw:9.2f}")
    if t_log is not None and t_log_raw is not None:
        print(f"{'standardised / raw units, logistic':34} {t_log / t_log_raw:9.2f}")
    limits.restore_original_limits()
    if t_log is not None:
        print(f"{'engine ridge+logistic / floor':34} {(t_ridge + t_log) / fl['floor_s']:9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    # The engine works without numpy's huge-page advice (actstore.core._pages); the whole
    # run does, so that the baselines' memory behaves the same way (on this machine the
    # advice slows their first touches of large arrays too).
    plain_pages(main)()
