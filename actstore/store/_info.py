"""Summaries of a store for ``actstore ls`` and ``actstore info``."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore.store import _layout as L

__all__ = ["disk_usage", "run_info", "store_summary"]


def disk_usage(url: str, subpath: str = "") -> int:
    """Bytes stored under ``subpath`` of a store (any fsspec URL)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root.rstrip('/')}/{subpath}" if subpath else root
    if not fs.exists(path):
        return 0
    try:
        return int(fs.du(path, total=True))
    except (FileNotFoundError, NotImplementedError):
        return 0


def run_info(store: Any, run_id: str, sizes: bool = True) -> dict[str, Any]:
    """Everything about one run: identity, slots, layers with shapes, chunks and sizes."""
    rd = store.reader(run_id)
    steps, status = rd.steps, rd.status
    planned = rd.planned_steps
    layers = []
    for name, meta in rd.layer_table.items():
        arr = rd.array(name)
        layers.append(
            {
                "name": name,
                "module": meta.get("module"),
                "kind": meta.get("kind"),
                "reduction": meta.get("reduction"),
                "output_shape": meta.get("output_shape"),
                "units": meta.get("units"),
                "dtype": str(arr.dtype),
                "shape": list(arr.shape),
                "chunks": list(arr.chunks),
                "shards": list(arr.shards) if arr.shards else None,
                "nbytes": int(np.prod(arr.shape)) * arr.dtype.itemsize,
                "stored_bytes": (
                    disk_usage(store.url, f"{L.RUNS}/{run_id}/{name}") if sizes else None
                ),
            }
        )
    slots = [
        {"slot": i, "planned_step": planned[i] if i < len(planned) else None,
         "step": int(steps[i]), "status": ["empty", "writing", "complete"][int(status[i])]}
        for i in range(len(steps))
    ]
    all_attrs = dict(rd.group.attrs)
    return {
        "run": run_id,
        **{k: v for k, v in rd.attrs.items() if k != "metrics"},
        "metrics": rd.attrs.get("metrics"),
        "writer": all_attrs.get(L.ATTR_WRITER),
        "n_samples": int(rd.group["sample"].shape[0]),
        "features": rd.features,
        "checkpoints_complete": int((status == L.STATUS_COMPLETE).sum()),
        "checkpoints_total": len(status),
        "slots": slots,
        "layers": layers,
        "stored_bytes": disk_usage(store.url, f"{L.RUNS}/{run_id}") if sizes else None,
    }


def store_summary(store: Any) -> dict[str, Any]:
    """Store-level summary: format, probe sets, runs (one line each), results, size."""
    root = dict(store.root.attrs)
    runs = []
    for r in store.run_ids():
        rd = store.reader(r)
        status = rd.status
        runs.append(
            {
                "run": r,
                "model": rd.attrs.get("model"),
                "task": rd.attrs.get("task"),
                "seed": rd.attrs.get("seed"),
                "probe_set": rd.attrs.get("probe_set"),
                "layers": len(rd.layers),
                "checkpoints_complete": int((status == L.STATUS_COMPLETE).sum()),
                "checkpoints_total": len(status),
                "writing": L.ATTR_WRITER in rd.group.attrs,
                "stored_bytes": disk_usage(store.url, f"{L.RUNS}/{r}"),
            }
        )
    probe_sets = []
    for name in store.probe_set_names():
        g = store.root[L.PROBE_SETS][name]
        probe_sets.append({"name": name, "n": g.attrs.get("actstore.n"),
                           "features": g.attrs.get("actstore.features"),
                           "hash": str(g.attrs.get("actstore.hash"))[:12]})
    return {
        "url": store.url,
        "format": root.get(L.ATTR_FORMAT),
        "created": root.get(L.ATTR_CREATED),
        "actstore_version": root.get(L.ATTR_VERSION),
        "probe_sets": probe_sets,
        "runs": runs,
        "results": store.result_names(),
        "pending_overwrites": store.staged_result_names(),
        "stored_bytes": disk_usage(store.url),
    }
