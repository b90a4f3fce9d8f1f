"""Compare the results of two stores number by number (e.g. ``make demo`` before and after a
change that must leave every result as it was).

    python bench/compare_results.py BEFORE.zarr AFTER.zarr [--atol 0] [--activations]

Every result (``results/<analysis>/<name>``) of either store must exist in both with the same
variables, coordinates, dimensions and values (exactly, or within ``--atol``; NaN where the
other has NaN; the job timings ``seconds`` are compared by shape only) and the same
attributes except the time of writing. ``--activations`` also
compares every recorded activation array (run, layer, checkpoint). Prints one line per
difference and a summary; exit status 1 if anything differs, 0 if nothing does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

#: attributes that record when or where a result was written, not what it holds
VOLATILE_ATTRS = {"updated", "created", "computed_at", "duration_s", "host"}
#: variables that record how long jobs took (they differ from run to run)
TIMING_VARS = {"seconds", "wall_s"}


def _same_values(a: Any, b: Any, atol: float) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            return False
        ok = ~nan_a
        return bool(np.all(np.abs(a[ok] - b[ok]) <= atol))
    return bool(np.array_equal(a.astype(object), b.astype(object)))


def compare_datasets(a: Any, b: Any, where: str, atol: float) -> list[str]:
    """Differences between two result datasets, one line each."""
    diffs: list[str] = []
    for kind, xa, xb in (("variable", a.data_vars, b.data_vars), ("coordinate", a.coords,
                                                                   b.coords)):
        for k in sorted(set(xa) | set(xb)):
            if k not in xa or k not in xb:
                diffs.append(f"{where}: {kind} {k} only in {'after' if k in xb else 'before'}")
            elif xa[k].dims != xb[k].dims:
                diffs.append(f"{where}: {kind} {k} dims {xa[k].dims} vs {xb[k].dims}")
            elif k in TIMING_VARS:
                if xa[k].shape != xb[k].shape:
                    diffs.append(f"{where}: {kind} {k} shape {xa[k].shape} vs {xb[k].shape}")
            elif not _same_values(xa[k].values, xb[k].values, atol):
                diffs.append(f"{where}: {kind} {k} values differ{_largest(xa[k], xb[k])}")
    for k in sorted((set(a.attrs) | set(b.attrs)) - VOLATILE_ATTRS):
        if str(a.attrs.get(k)) != str(b.attrs.get(k)):
            diffs.append(f"{where}: attribute {k}: {a.attrs.get(k)!r:.80} vs "
                         f"{b.attrs.get(k)!r:.80}")
    return diffs


def _largest(va: Any, vb: Any) -> str:
    x, y = np.asarray(va.values), np.asarray(vb.values)
    if x.shape == y.shape and x.dtype.kind in "fc" and y.dtype.kind in "fc":
        d = np.nanmax(np.abs(x - y)) if x.size else 0.0
        return f" (largest difference {d:.3g})"
    return ""


def compare_stores(before: str, after: str, atol: float = 0.0,
                   activations: bool = False) -> tuple[list[str], int]:
    """All differences between the results (and activations) of two stores, and how many
    arrays were compared."""
    import actstore

    sa, sb = actstore.open_store(before), actstore.open_store(after)
    names_a, names_b = set(sa.result_names()), set(sb.result_names())
    diffs = [f"result {n} only in {'after' if n in names_b else 'before'}"
             for n in sorted(names_a ^ names_b)]
    count = 0
    for full in sorted(names_a & names_b):
        analysis, name = full.split("/", 1)
        diffs += compare_datasets(sa.read_result(analysis, name), sb.read_result(analysis, name),
                                  full, atol)
        count += 1
    if activations:
        runs_a, runs_b = set(sa.run_ids()), set(sb.run_ids())
        diffs += [f"run {r} only in {'after' if r in runs_b else 'before'}"
                  for r in sorted(runs_a ^ runs_b)]
        for run in sorted(runs_a & runs_b):
            ra, rb = sa.reader(run), sb.reader(run)
            for layer in ra.layers:
                for step in ra.complete_steps:
                    count += 1
                    if not _same_values(ra.read(layer, step), rb.read(layer, step), atol):
                        diffs.append(f"activations {run}/{layer}/step {step} differ")
    return diffs, count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--activations", action="store_true",
                   help="also compare every recorded activation array")
    args = p.parse_args(argv)
    diffs, count = compare_stores(args.before, args.after, args.atol, args.activations)
    for line in diffs:
        print(line)
    print(f"{count} arrays/results compared: "
          + (f"{len(diffs)} difference(s)" if diffs else "identical"))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
