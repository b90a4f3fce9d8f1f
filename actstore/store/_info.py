"""Summaries of a store for ``actstore ls`` and ``actstore info``."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store import _layout as L
from actstore.store._lease import holder_state
from actstore.store._store import DamagedRunError

__all__ = ["disk_usage", "run_info", "slot_status_names", "store_summary", "writer_of"]


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


def writer_of(store: Any, rd: Any) -> tuple[dict[str, Any] | None, str]:
    """The writer recorded on a run and its state (see :func:`~._lease.holder_state`):
    ``"none"``, ``"live"``, ``"stale"`` (killed: the run is an interrupted write) or
    ``"unknown"`` (a writer on another machine)."""
    holder = dict(rd.group.attrs).get(L.ATTR_WRITER)
    holder = holder if isinstance(holder, dict) else ({} if holder is not None else None)
    return holder, holder_state(store.url, rd.run_id, holder)


def slot_status_names(state: str) -> dict[int, str]:
    """Names of the slot status values; a slot in status 1 is ``writing`` while its writer
    lives (or cannot be checked), else ``interrupted``."""
    writing = "writing" if state in ("live", "unknown") else "interrupted"
    return {L.STATUS_EMPTY: "empty", L.STATUS_WRITING: writing, L.STATUS_COMPLETE: "complete"}


class _Reading:
    """Names the part of a run being read, so that a failure says what is damaged."""

    def __init__(self, store: Any, run_id: str):
        self.store, self.run_id, self.part = store, run_id, "its metadata"

    def at(self, part: str) -> None:
        self.part = part

    def __enter__(self) -> _Reading:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, ActstoreError):
            raise DamagedRunError(self.store.url, self.run_id, f"{self.part} is unreadable",
                                  exc) from None


def _slot_arrays(rd: Any, reading: _Reading) -> tuple[np.ndarray, np.ndarray]:
    reading.at(f"its slot table ({L.RUNS}/{rd.run_id}/checkpoint)")
    steps = rd.steps
    reading.at(f"its slot table ({L.RUNS}/{rd.run_id}/status)")
    return steps, rd.status


def run_info(store: Any, run_id: str, sizes: bool = True) -> dict[str, Any]:
    """Everything about one run: identity, slots, layers with shapes, chunks and sizes.

    Raises
    ------
    DamagedRunError
        If a part of the run (metadata, slot table, a layer's metadata) cannot be read.
    """
    rd = store.reader(run_id)
    with _Reading(store, run_id) as reading:
        steps, status = _slot_arrays(rd, reading)
        planned = rd.planned_steps
        layers = []
        for name, meta in rd.layer_table.items():
            reading.at(f"the metadata of layer {name!r} ({L.RUNS}/{run_id}/{name}/zarr.json)")
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
                }
            )
        reading.at(f"its sample ids ({L.RUNS}/{run_id}/sample)")
        n_samples = int(rd.group["sample"].shape[0])
    for ly in layers:
        ly["stored_bytes"] = (
            disk_usage(store.url, f"{L.RUNS}/{run_id}/{ly['name']}") if sizes else None
        )
    writer, state = writer_of(store, rd)
    names = slot_status_names(state)
    slots = [
        {"slot": i, "planned_step": planned[i] if i < len(planned) else None,
         "step": int(steps[i]), "status": names.get(int(status[i]), str(int(status[i])))}
        for i in range(len(steps))
    ]
    return {
        "run": run_id,
        **{k: v for k, v in rd.attrs.items() if k != "metrics"},
        "metrics": rd.attrs.get("metrics"),
        "writer": writer,
        "writer_state": state,
        "n_samples": n_samples,
        "features": rd.features,
        "checkpoints_complete": int((status == L.STATUS_COMPLETE).sum()),
        "checkpoints_total": len(status),
        "slots": slots,
        "layers": layers,
        "stored_bytes": disk_usage(store.url, f"{L.RUNS}/{run_id}") if sizes else None,
    }


def _run_line(store: Any, run_id: str) -> dict[str, Any]:
    rd = store.reader(run_id)
    with _Reading(store, run_id) as reading:
        _, status = _slot_arrays(rd, reading)
    writer, state = writer_of(store, rd)
    return {
        "run": run_id,
        "model": rd.attrs.get("model"),
        "task": rd.attrs.get("task"),
        "seed": rd.attrs.get("seed"),
        "probe_set": rd.attrs.get("probe_set"),
        "layers": len(rd.layers),
        "checkpoints_complete": int((status == L.STATUS_COMPLETE).sum()),
        "checkpoints_total": len(status),
        "writing": state in ("live", "unknown"),
        "writer": writer,
        "writer_state": state,
        "damaged": None,
    }


def store_summary(store: Any) -> dict[str, Any]:
    """Store-level summary: format, probe sets, runs (one line each), results, size.

    A run that cannot be read is listed with ``damaged`` (what cannot be read) and ``None``
    for what is unknown; the other runs are listed as usual.
    """
    root = dict(store.root.attrs)
    runs = []
    for r in store.run_ids():
        try:
            line = _run_line(store, r)
        except DamagedRunError as e:
            line = {"run": r, "model": None, "task": None, "seed": None, "probe_set": None,
                    "layers": None, "checkpoints_complete": None, "checkpoints_total": None,
                    "writing": False, "writer": None, "writer_state": None,
                    "damaged": e.reason}
        line["stored_bytes"] = disk_usage(store.url, f"{L.RUNS}/{r}")
        runs.append(line)
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
