"""Benchmark profile: decoders at the shapes of real-model probes, engine vs scikit-learn.

Run:  .venv/bin/python bench/probe_shapes.py                      # the two shapes below
      .venv/bin/python bench/probe_shapes.py --shapes 800x384,4000x768,5000x2048

Each shape ``n x d`` is one activation matrix as a user probes it: n stimuli, d units of a
sentence encoder (800 x 384), BERT-base (4,000 x 768) or a wide CNN layer (5,000 x 2,048);
synthetic post-ReLU activations (`actstore.testing.synthetic_activations`, trained state) with
six categorical features of 2, 3, 4, 5, 8 and 10 classes. Same 5 stratified folds for every
method, 13 ridge alphas (1e-2..1e4), 13 logistic Cs (1e-4..1e2), one BLAS thread for all.

The whole run works without numpy's huge-page advice, as the engine does (memory is first
touched alike by the engine and the baselines; see actstore/core/_pages.py).

Timed in this one process run, side by side, engine and baseline alternating round by round
(``--repeat`` rounds; best and median of each):
  engine ridge      `probe_arrays(X, labels, decoders=("ridge",))` on standardised units
  engine logistic   `probe_arrays(X, labels, decoders=("logistic",))`, standardised
  sklearn ridge     `GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier()), alphas,
                    cv=<same folds>)` per feature
  sklearn logistic  `GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(
                    max_iter=100)), Cs, cv=<same folds>)` per feature

Printed per shape: seconds, speed-up of the engine (best over best, and median over median:
on a shared machine short engine runs catch quiet spells that a long baseline run averages
over, so the medians are the conservative ratio), and the largest difference of the CV
accuracy at the chosen penalty (percentage points) over the six features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe import sklearn_logistic, sklearn_ridge

from actstore.core._pages import plain_pages
from actstore.probes import ProbeConfig, make_folds, probe_arrays
from actstore.testing import synthetic_activations, synthetic_labels

FEATURES = {"f2": 2, "f3": 3, "f4": 4, "f5": 5, "f8": 8, "f10": 10}
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
CS = tuple(float(c) for c in np.logspace(-4, 2, 13))


def _clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_shape(n: int, d: int, repeat: int, skip: set[str]) -> dict:
    labels = synthetic_labels(n, FEATURES, seed=0)
    X = synthetic_activations(labels, d, progress=1.0, run_seed=0, layer_seed=d)
    config = {"alphas": ALPHAS, "Cs": CS, "n_splits": 5, "seed": 0}
    folds, _ = make_folds(labels, ProbeConfig(**config))
    splits = list(folds.split())
    out: dict = {"n": n, "d": d}
    for kind, baseline, grid in (("ridge", sklearn_ridge, ALPHAS),
                                 ("logistic", sklearn_logistic, CS)):
        def eng(kind=kind):
            return probe_arrays(X, labels, folds=folds, **{**config, "decoders": (kind,)})

        def base(b=baseline, g=grid):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lbfgs convergence warnings at max_iter=100
                return b(X, labels, splits, g)

        with_base = f"sklearn-{kind}" not in skip
        # engine and baseline alternate round by round, so that both see the same spells of
        # load on a shared machine
        t_eng, t_base, ds, acc = [], [], None, {}
        for _ in range(repeat):
            t, ds = _clock(eng)
            t_eng.append(t)
            if with_base:
                t, (_, acc) = _clock(base)
                t_base.append(t)
        eng_acc = {f: float(ds["accuracy"].sel(decoder=kind, feature=f)) for f in FEATURES}
        row = {"engine_s": min(t_eng), "engine_s_median": float(np.median(t_eng)),
               "engine_acc": eng_acc}
        if with_base:
            row.update(sklearn_s=min(t_base), sklearn_s_median=float(np.median(t_base)),
                       sklearn_acc=acc, speedup=min(t_base) / min(t_eng),
                       speedup_median=float(np.median(t_base) / np.median(t_eng)),
                       max_acc_diff_pt=max(abs(100 * (eng_acc[f] - acc[f])) for f in FEATURES))
        out[kind] = row
        line = (f"sklearn {row['sklearn_s']:.2f} s -> {row['speedup']:.1f}x (medians "
                f"{row['engine_s_median']:.2f} s vs {row['sklearn_s_median']:.2f} s: "
                f"{row['speedup_median']:.1f}x), max |acc diff| {row['max_acc_diff_pt']:.2f} pt"
                if with_base else "")
        print(f"n={n:5} d={d:5} {kind:8}: engine {row['engine_s']:.2f} s; {line}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default="800x384,4000x768", help="n x d, comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many rounds")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for everything")
    ap.add_argument("--skip", default="", help="sklearn-ridge, sklearn-logistic")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    skip = set(args.skip.split(","))
    with threadpool_limits(args.threads):
        # first calls import and compile what both sides use lazily: not timed
        with open("/dev/null", "w") as null:
            stdout, sys.stdout = sys.stdout, null
            try:
                one_shape(120, 16, 1, skip)
            finally:
                sys.stdout = stdout
        rows = [one_shape(n, d, args.repeat, skip) for n, d in shapes]
    print()
    print("| shape | ridge engine vs sklearn loop | logistic engine vs sklearn loop |")
    print("| --- | --- | --- |")
    for r in rows:
        cells = []
        for kind in ("ridge", "logistic"):
            x = r[kind]
            cells.append(f"{x['speedup']:.1f}x ({x['engine_s']:.2f} s vs {x['sklearn_s']:.2f} s;"
                         f" medians {x['speedup_median']:.1f}x;"
                         f" acc diff <= {x['max_acc_diff_pt']:.2f} pt)" if "speedup" in x
                         else f"{x['engine_s']:.2f} s")
        print(f"| n={r['n']}, d={r['d']} | {cells[0]} | {cells[1]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    # The engine works without numpy's huge-page advice (actstore.core._pages); the whole
    # run does, so that the baselines' memory behaves the same way (on this machine the
    # advice slows their first touches of large arrays too).
    plain_pages(main)()
