"""Wall time and store size of each study at ``--scale small`` (train -> analyses -> report).

Runs every built-in study (or those named) into fresh stores under a temporary folder (or
``--dir``), exactly as ``actstore study NAME`` does, and prints one table: wall time per
stage, total, store size, and whether the report rendered without problems; then each
study's findings table (the claims of its paper, measured, with their verdicts).

    .venv/bin/python bench/studies.py                  # all four
    .venv/bin/python bench/studies.py lampinen2024 --workers 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    from actstore import Execution
    from actstore.studies import builtin_studies, load_study, run_study

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="*", help="study names (default: all built-in)")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--workers", type=int, default=None,
                    help="Dask workers for training (1: everything in this process)")
    ap.add_argument("--dir", default=None, help="keep the stores and reports here")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    names = args.studies or builtin_studies()
    root = Path(args.dir or tempfile.mkdtemp(prefix="actstore-studies-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name in names:
            study = load_study(name, args.scale)
            store = root / f"{name}-{args.scale}.zarr"
            if store.exists():
                shutil.rmtree(store)
            rep = run_study(study, str(store), execution=Execution(workers=args.workers),
                            report_dir=str(root / f"{name}-{args.scale}-report"))
            row = rep.to_json()
            row["runs"] = len(study.sweep.runs)
            rows.append(row)
            print(f"{name}: {rep.wall_s:.1f} s, {rep.store_bytes / 2**20:.1f} MiB", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nscale {args.scale}, {cpus} CPU cores, {platform.processor() or platform.machine()}, "
          f"training workers: {args.workers or 'one per core'}\n")
    print("| study | runs | train s | analyses s | report s | total s | store MiB | report |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        st = {s["stage"]: s["wall_s"] for s in r["stages"]}
        ana = sum(v for k, v in st.items() if k not in ("train", "report"))
        ok = "ok" if not r["problems"] else f"{len(r['problems'])} problems"
        print(f"| {r['study']} | {r['runs']} | {st['train']:.1f} | {ana:.1f} | "
              f"{st['report']:.1f} | {r['wall_s']:.1f} | {r['store_bytes'] / 2**20:.1f} | {ok} |")
    print("\nper stage:")
    for r in rows:
        print(f"  {r['study']}: " + ", ".join(f"{s['stage']} {s['wall_s']:.1f} s"
                                             for s in r["stages"]))
    print("\nfindings (verdict: measured +- uncertainty; reason):")
    for r in rows:
        for f in r.get("findings", []):
            v = "-" if f["value"] is None else f"{f['value']:+.3f}"
            u = "" if f["uncertainty"] is None else f" +- {f['uncertainty']:.3f}"
            print(f"  {r['study']} {f['claim']}: {f['verdict']}: {v}{u}; {f['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
