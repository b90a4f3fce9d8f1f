"""GPU benchmark of the decoder engine against the GPU baselines a user would reach for.

Run on a machine with a CUDA GPU (after `pip install 'actstore[gpu]'`, which brings cuML):

    python bench/gpu.py                       # --device cuda when torch sees a GPU
    python bench/gpu.py --device torch        # the same on the CPU (torch), for comparison
    python bench/gpu.py --quick --device numpy   # tiny sizes: checks that every path runs

Data: synthetic post-ReLU activations (`actstore.testing.synthetic_activations`, trained
state) of n samples x d units for each width d, six categorical features of 2, 3, 4, 5, 8
and 10 classes; the same 5 stratified folds, 13 ridge alphas (1e-2..1e4) and 13 logistic Cs
(1e-4..1e2) for every method. Every method gets the activations as a host (numpy) array, so
each timing includes the copy to the device, and every method works in standardised units:
each fold's units z-scored with that fold's training mean and standard deviation.

Timed in this one process run, side by side (best of `--repeat`):
  engine ridge      `probe_arrays(X, labels, folds=..., decoders=("ridge",), device=...)`
  engine logistic   the same with `decoders=("logistic",)`
  himalaya ridge    himalaya's cross-validated ridge solver (what `himalaya.ridge.RidgeCV`
                    runs: one SVD of the training rows per fold, every alpha and every one-hot
                    target at once) on the backend of `--device` (`torch_cuda`, `torch` or
                    `numpy`), called once per fold on that fold's standardised units, without
                    RidgeCV's refit on all rows, which a cross-validated score does not use
  cuML Ridge        `cuml.linear_model.Ridge(alpha=a)` on the feature's -1/+1 one-hot targets,
                    one fit per feature x fold x alpha, class = argmax of the predictions
  cuML logistic     `cuml.linear_model.LogisticRegression(C=c, fit_intercept=True,
                    max_iter=--max-iter)` (L2 penalty, cuML's default), one fit per
                    feature x fold x C
(cuML only with `--device cuda` and when `cuml` imports; otherwise one line says why not.)

Printed per width: seconds, decoders per second (one decoder = one feature x fold x penalty
model, as the baselines fit them), the engine's speed-up over each baseline (engine ridge for
the ridge baselines, engine logistic for cuML's logistic regression), the largest difference
of the CV accuracy at the chosen penalty over the features (percentage points; the penalty
with the best mean held-out accuracy, as the engine and `GridSearchCV` choose it), and the
engine ridge's arithmetic rate as a fraction of the device's float64 matmul rate measured in
the same run (X^T X over every fold plus one eigendecomposition per fold, counted as 9 d^3).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_shapes import ALPHAS, CS, FEATURES
from render import timed

#: himalaya backend for each --device
HIMALAYA_BACKEND = {"cuda": "torch_cuda", "torch": "torch", "numpy": "numpy"}


def matmul_rate(device: str, dtype: str, size: int = 4096, repeat: int = 5) -> float:
    """Measured GEMM rate in GFLOP/s (torch on the GPU or the CPU; numpy for "numpy")."""
    if device == "numpy":
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
        t, _ = timed(lambda: a @ b, repeat)
        return 2 * size**3 / t / 1e9
    import torch

    dev = "cuda" if device == "cuda" else "cpu"
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=dev)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=dev)

    def run() -> float:
        c = a @ b
        return c[0, 0].item()  # .item() is a device-to-host sync point

    run()  # warm-up
    t, _ = timed(run, repeat)
    return 2 * size**3 / t / 1e9


def standardize(X: Any, train: Any) -> Any:
    """All rows of X in units of the training rows' mean and standard deviation (ddof 0;
    constant units keep scale 1), as `StandardScaler` fitted on the training fold. X is a
    numpy, cupy or torch array and train an index array of the same library."""
    Xtr = X[train]
    mean = Xtr.mean(0)
    std = ((Xtr - mean) ** 2).mean(0) ** 0.5
    std[std == 0] = 1
    return (X - mean) / std


def one_hot(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """-1/+1 one-hot targets of every feature side by side, and each feature's columns."""
    cols, blocks, start = [], {}, 0
    for f, y in labels.items():
        classes = np.unique(y)
        cols.append(np.where(y[:, None] == classes[None, :], 1.0, -1.0))
        blocks[f] = (start, start + classes.size)
        start += classes.size
    return np.concatenate(cols, axis=1).astype("float32"), blocks


def chosen_accuracy(fold_acc: np.ndarray) -> float:
    """Accuracy at the chosen penalty from held-out accuracies (n_folds, n_penalties): the
    best mean over folds."""
    return float(fold_acc.mean(axis=0).max())


def engine(X: np.ndarray, labels: dict, folds: Any, kind: str, grid: tuple, device: str) -> dict:
    """The decoder engine: accuracy at the chosen penalty per feature."""
    from actstore.probes import probe_arrays

    key = {"ridge": "alphas", "logistic": "Cs"}[kind]
    ds = probe_arrays(X, labels, folds=folds, decoders=(kind,), device=device, extend_grid=0,
                      **{key: grid})
    return {f: float(ds["accuracy"].sel(decoder=kind, feature=f)) for f in labels}


def himalaya_ridge(X: np.ndarray, labels: dict, splits: list, alphas: tuple,
                   backend_name: str) -> dict:
    """himalaya's cross-validated ridge solver, one call per fold on standardised units, all
    one-hot targets and alphas at once, on the himalaya backend `backend_name`."""
    from himalaya.backend import set_backend
    from himalaya.ridge import solve_group_ridge_random_search

    backend = set_backend(backend_name, on_error="raise")
    Y, blocks = one_hot(labels)
    Xd, Yd = backend.asarray(X), backend.asarray(Y)
    grid = backend.asarray(np.asarray(alphas, dtype=X.dtype))
    fold_acc = []
    for train, test in splits:
        tr = backend.asarray(train)
        mean = Yd[tr].mean(0)  # the training rows' target mean: the intercept
        Xk, Yk = standardize(Xd, tr), Yd - mean
        scores: list[np.ndarray] = []

        def score(y_true: Any, y_pred: Any, mean: Any = mean, scores: list = scores) -> Any:
            # y_true (n_test, targets) and y_pred (n_alphas, n_test, targets), both centred
            pred, true = y_pred + mean, y_true + mean
            out = y_pred[:, 0, :] * 0
            for a, e in blocks.values():
                hit = pred[..., a:e].argmax(-1) == true[:, a:e].argmax(-1)[None]
                out[:, a:e] = (hit.sum(-1) / hit.shape[-1])[:, None]
            scores.append(backend.to_numpy(out))
            return out

        solve_group_ridge_random_search(
            [Xk], Yk, n_iter=backend.ones_like(Xk, shape=(1, 1)), alphas=grid,
            fit_intercept=False, score_func=score, cv=[(train, test)], return_weights=False,
            local_alpha=True, progress_bar=False, warn=False)
        fold_acc.append(scores[0])
    acc = np.stack(fold_acc)  # (n_folds, n_alphas, targets)
    return {f: chosen_accuracy(acc[:, :, a]) for f, (a, _) in blocks.items()}


def cuml_decoders(kind: str, X: np.ndarray, labels: dict, splits: list, grid: tuple,
                  xp: Any, lm: Any, max_iter: int = 1000) -> dict:
    """One cuML model per feature x fold x penalty, as a user loops them.

    xp is the array module (cupy) and lm the module of the estimators
    (`cuml.linear_model`); numpy and `sklearn.linear_model` take the same calls.
    """
    Xd = xp.asarray(X, dtype=xp.float32)
    out = {}
    for f, y in labels.items():
        classes = np.unique(y)
        yd = xp.asarray(np.searchsorted(classes, y))
        Yd = xp.asarray(one_hot({f: y})[0])
        fold_acc = np.zeros((len(splits), len(grid)))
        for k, (train, test) in enumerate(splits):
            tr, te = xp.asarray(train), xp.asarray(test)
            Z = standardize(Xd, tr)
            for p, value in enumerate(grid):
                if kind == "ridge":
                    m = lm.Ridge(alpha=value, fit_intercept=True).fit(Z[tr], Yd[tr])
                    pred = xp.asarray(m.predict(Z[te])).argmax(axis=1)
                else:
                    m = lm.LogisticRegression(C=value, fit_intercept=True, max_iter=max_iter)
                    pred = xp.asarray(m.fit(Z[tr], yd[tr]).predict(Z[te]))
                fold_acc[k, p] = float((pred == yd[te]).mean())
        out[f] = chosen_accuracy(fold_acc)
    return out


def cuml_modules(device: str) -> tuple[Any, Any, str]:
    """(cupy, cuml.linear_model, "") when cuML can run, else (None, None, why not)."""
    if device != "cuda":
        return None, None, "cuML baselines: skipped (they need --device cuda)"
    try:
        import cuml.linear_model as lm
        import cupy
    except ImportError as e:
        return None, None, f"cuML baselines: skipped, cuML is not installed ({e})"
    return cupy, lm, ""


def one_width(X: np.ndarray, labels: dict, folds: Any, args: argparse.Namespace,
              cuml: tuple) -> dict:
    """Every method on one activation matrix: seconds and accuracy per feature."""
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in folds.split()]
    todo = [
        ("engine ridge", None, lambda: engine(X, labels, folds, "ridge", ALPHAS, args.device)),
        ("engine logistic", None,
         lambda: engine(X, labels, folds, "logistic", CS, args.device)),
    ]
    if "himalaya" not in args.skip:
        todo.append((f"himalaya ridge ({HIMALAYA_BACKEND[args.device]})", "engine ridge",
                     lambda: himalaya_ridge(X, labels, splits, ALPHAS,
                                            HIMALAYA_BACKEND[args.device])))
    xp, lm, _ = cuml
    if lm is not None:
        todo += [
            ("cuML Ridge", "engine ridge",
             lambda: cuml_decoders("ridge", X, labels, splits, ALPHAS, xp, lm)),
            ("cuML LogisticRegression", "engine logistic",
             lambda: cuml_decoders("logistic", X, labels, splits, CS, xp, lm, args.max_iter)),
        ]
    rows = {}
    for name, against, fn in todo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings at the weakest penalties
            seconds, acc = timed(fn, args.repeat)
        rows[name] = {"seconds": seconds, "acc": acc, "against": against}
    return rows


def report(d: int, n: int, rows: dict, r64: float) -> dict:
    """Print one width's table; return its numbers."""
    decoders = len(FEATURES) * 5 * len(ALPHAS)
    print(f"\nwidth {d} (n={n}; {decoders} decoders per method: {len(FEATURES)} features x "
          f"5 folds x {len(ALPHAS)} penalties)")
    print(f"  {'method':30} {'seconds':>8} {'decoders/s':>11} {'engine speed-up':>16} "
          f"{'max |acc diff| pt':>18}")
    for name, r in rows.items():
        r["decoders_per_s"] = decoders / r["seconds"]
        cells = ["", ""]
        if r["against"]:
            eng = rows[r["against"]]
            r["speedup"] = r["seconds"] / eng["seconds"]
            r["max_acc_diff_pt"] = max(abs(100 * (eng["acc"][f] - r["acc"][f]))
                                       for f in r["acc"])
            cells = [f"{r['speedup']:.1f}x", f"{r['max_acc_diff_pt']:.2f}"]
        print(f"  {name:30} {r['seconds']:8.2f} {r['decoders_per_s']:11.0f} {cells[0]:>16} "
              f"{cells[1]:>18}")
    flops = 5 * 2 * n * d * d + 5 * 9 * d**3
    rate = flops / rows["engine ridge"]["seconds"] / 1e9
    print(f"  engine ridge: {rate:.1f} GFLOP/s, {rate / r64:.1%} of the float64 matmul rate")
    return {"width": d, "n": n, "engine_ridge_gflops": rate, "of_f64_peak": rate / r64,
            "methods": rows}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "torch", "numpy"), default=None,
                    help="where the engine and himalaya run (default: cuda when torch sees "
                         "a GPU, else torch)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--widths", default="256,1024,4096")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many rounds")
    ap.add_argument("--max-iter", type=int, default=1000,
                    help="cuML LogisticRegression max_iter (cuML's default)")
    ap.add_argument("--skip", default="", help="comma list: himalaya, cuml")
    ap.add_argument("--quick", action="store_true", help="n=300, widths 8,16: checks that "
                    "every path runs (the numbers mean nothing)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    try:
        args.widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        args.widths = []
    if not args.widths or min(args.widths) < 1 or args.n < 50 or args.repeat < 1:
        print("gpu.py: error: --widths needs positive integers separated by commas, --n at "
              "least 50 and --repeat at least 1", file=sys.stderr)
        raise SystemExit(2)
    if args.quick:
        args.n, args.widths = 300, [8, 16]
    args.skip = set(args.skip.split(","))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    from actstore.probes import ProbeConfig, make_folds
    from actstore.testing import synthetic_activations, synthetic_labels

    args = parse(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "torch"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: error: no CUDA device visible to torch: run with --device torch or "
              "numpy, or on a GPU", file=sys.stderr)
        raise SystemExit(2)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    size = 512 if args.quick else 4096
    r32 = matmul_rate(args.device, "float32", size)
    r64 = matmul_rate(args.device, "float64", size // 2)
    print(f"device {args.device} ({name}): matmul {r32:.0f} GFLOP/s float32, {r64:.0f} float64")
    cuml = (None, None, "cuML baselines: skipped (--skip cuml)") if "cuml" in args.skip \
        else cuml_modules(args.device)
    if cuml[2]:
        print(cuml[2])
    labels = synthetic_labels(args.n, FEATURES, seed=0)
    folds, _ = make_folds(labels, ProbeConfig(n_splits=5, seed=0))
    # first calls import and compile what every method uses lazily: not timed
    small = {f: y[:200] for f, y in labels.items()}
    small_folds, _ = make_folds(small, ProbeConfig(n_splits=5, seed=0))
    quiet = argparse.Namespace(**{**vars(args), "repeat": 1})
    one_width(synthetic_activations(small, 8, 1.0, 0, 8), small, small_folds, quiet, cuml)
    out = []
    for d in args.widths:
        X = synthetic_activations(labels, d, progress=1.0, run_seed=0, layer_seed=d)
        out.append(report(d, args.n, one_width(X, labels, folds, args, cuml), r64))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": args.device, "name": name, "matmul_f32_gflops": r32,
             "matmul_f64_gflops": r64, "widths": out}, indent=2))
    return out


if __name__ == "__main__":
    main()
