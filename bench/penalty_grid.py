"""How often the chosen penalty sits at an end of the grid, and what extending the grid changes.

Run:  .venv/bin/python bench/penalty_grid.py demo.zarr          # after `make demo`
      .venv/bin/python bench/penalty_grid.py demo.zarr --decimals 3 --decoders ridge

For every (run, checkpoint, layer) of the store, both decoders are fitted with the default
13-value grids (standardised units, 5 folds, `extend_grid=0`). Decoders flagged
`penalty_at_edge` (the chosen penalty is the grid's strongest or weakest and the score still
rises toward it) are fitted again with the grid extended by `--decades` decades at that end
(half-decade steps), and the change of their reported score is printed: the measurement behind
extending the grid at a flagged end by default (`extend_grid=3`).
`--runs N` limits the measurement to the first N runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actstore.decode import DEFAULT_ALPHAS, DEFAULT_CS
from actstore.decode._decode import extension
from actstore.probes import ProbeConfig, make_folds, probe_arrays
from actstore.store import open_store


def extended(grid: tuple[float, ...], end: str, decades: int) -> tuple[float, ...]:
    """The grid and the penalties the engine adds beyond ``end``."""
    return tuple(sorted({*grid, *extension(grid, end, decades)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--decoders", default="ridge,logistic")
    ap.add_argument("--decades", type=int, default=3)
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args()
    store = open_store(args.store)
    decoders = tuple(args.decoders.split(","))
    total = {d: 0 for d in decoders}
    flagged: dict[str, list[float]] = {d: [] for d in decoders}
    t0 = time.perf_counter()
    for rid in store.run_ids()[: args.runs]:
        rd = store.reader(rid)
        labels = {f: np.asarray(v) for f, v in rd.labels.items()
                  if not f.startswith(("heldout", "split")) and np.asarray(v).dtype.kind in "iub"}
        folds, _ = make_folds(labels, ProbeConfig())  # the same folds for every fit
        for step in rd.steps[rd.complete]:
            for layer in rd.layers:
                X = rd.read(layer, int(step))
                ds = probe_arrays(X, labels, folds=folds, decoders=decoders, extend_grid=0)
                for d in decoders:
                    name, strong_high = ("alphas", True) if d == "ridge" else ("Cs", False)
                    grid = DEFAULT_ALPHAS if d == "ridge" else DEFAULT_CS
                    sel = ds.sel(decoder=d)
                    for f in sel.feature.values:
                        edge = float(sel.penalty_at_edge.sel(feature=f))
                        total[d] += int(not np.isnan(edge))
                        if edge != 1.0:
                            continue
                        pen = float(sel.penalty.sel(feature=f))
                        end = "high" if pen == max(grid) else "low"
                        cfg = ProbeConfig(decoders=(d,), extend_grid=0,
                                          **{name: extended(grid, end, args.decades)})
                        again = probe_arrays(X, {f: labels[f]}, config=cfg,
                                             folds=folds).sel(decoder=d)
                        before = float(sel.accuracy.sel(feature=f))
                        after = float(again.accuracy.sel(feature=f))
                        flagged[d].append(after - before)
                        strong = (end == "high") == strong_high
                        print(f"{rid} step {int(step)} {layer} {f} {d}: penalty {pen:g} "
                              f"({'strongest' if strong else 'weakest'}), accuracy "
                              f"{before:.3f} -> {after:.3f} with the grid extended to "
                              f"{float(again.penalty.sel(feature=f)):g}", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    for d in decoders:
        diff = np.abs(flagged[d]) * 100
        print(f"{d}: {len(flagged[d])} of {total[d]} decoders at the edge; accuracy change "
              f"when extended by {args.decades} decades: "
              + (f"max {diff.max():.1f} pt, mean {diff.mean():.2f} pt" if diff.size else "-"))


if __name__ == "__main__":
    main()
