"""``actstore verify``: read every array of a store and list what is wrong, and how
``actstore repair`` fixes each problem (see :mod:`actstore.store._repair`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from actstore.store import _layout as L
from actstore.store._store import DamagedRunError, first_line

__all__ = ["FIX_COPY", "FIX_LAYER", "FIX_PROBE_SET", "FIX_SLOT", "FIX_SLOT_TABLE", "Problem",
           "verify"]

#: How ``repair`` fixes a problem (``Problem.fix``); "" means it cannot.
FIX_SLOT = "slot"  # reset the slot; redo it from its checkpoint file (with --model)
FIX_SLOT_TABLE = "slot_table"  # rewrite checkpoint/status from the run's slot table
FIX_LAYER = "layer_metadata"  # rewrite a layer's zarr.json from the run's layer table
FIX_COPY = "copy"  # copy a label or sample-id array from the probe set into the run again
FIX_PROBE_SET = "probe_set"  # restore a probe-set array from a run's copy (hash checked)


@dataclass
class Problem:
    """One thing wrong in a store."""

    kind: str  # "corrupt", "incomplete", "probe_set"
    run: str | None
    step: int | None
    layer: str | None = None
    key: str | None = None  # the stored object (shard, chunk, metadata) that failed
    detail: str = ""
    fix: str = ""  # how `repair` fixes it (FIX_*); empty: it cannot

    def line(self) -> str:
        """One line for people."""
        where = f"run {self.run!r}" if self.run else "store"
        if self.step is not None:
            where += f", checkpoint {self.step}"
        if self.layer:
            where += f", layer {self.layer!r}"
        key = f" [{self.key}]" if self.key else ""
        return f"{self.kind}: {where}{key}: {self.detail}"


def _record_remedy(run: str) -> str:
    return (f"delete {L.RUNS}/{run} from the store and record the run again (re-run its dump or "
            "training)")


def record_again(run: str) -> str:
    """Why a run's slots cannot be reset, and what to do instead."""
    return f"its checkpoints cannot be reset one by one: {_record_remedy(run)}"


# -- reading stored metadata ---------------------------------------------------------------
def read_object(group: Any, key: str) -> bytes | None:
    """The bytes stored at ``key`` below ``group`` (``None`` if there is no such object)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(group.store.get(f"{group.path}/{key}".lstrip("/"),
                               prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def write_object(group: Any, key: str, data: bytes) -> None:
    """Store ``data`` at ``key`` below ``group`` as it is (no zarr metadata is made)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    sync(group.store.set(f"{group.path}/{key}".lstrip("/"),
                         default_buffer_prototype().buffer.from_bytes(data)))


def _stored_metadata(group: Any, name: str) -> dict[str, Any]:
    """The parsed ``zarr.json`` of array ``name`` of ``group``; an error says what is wrong."""
    raw = read_object(group, f"{name}/zarr.json")
    if raw is None:
        raise FileNotFoundError(f"{name}/zarr.json is missing")
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def _unit_shape(entry: dict[str, Any]) -> tuple[int, ...]:
    """A layer's stored unit shape from its layer-table entry (format 1 tables do not record
    it: stored as the output shape by reductions that keep it, else as ``(units,)``)."""
    if isinstance(entry.get("unit_shape"), list):
        return tuple(int(d) for d in entry["unit_shape"])
    out = [int(d) for d in entry.get("output_shape") or []]
    units = int(entry.get("units", 0))
    if entry.get("reduction") in ("none", "all") and len(out) > 1 and int(np.prod(out)) == units:
        return tuple(out)
    return (units,)


def layer_specs(rd: Any, layer: str, n_samples: int) -> list[dict[str, Any]]:
    """``create_array`` arguments the layer's array may have been made with: the recorded
    codec and chunking (format 2), else every codec with the default chunking (format 1)."""
    entry = rd.layer_table[layer]
    info = {k: v for k, v in entry.items()
            if k not in ("units", "dtype", *L.LAYER_STORAGE_KEYS)}
    samples = ((int(entry["chunk_samples"]), int(entry["shard_samples"]))
               if "chunk_samples" in entry and "shard_samples" in entry else None)
    codecs = [entry["codec"]] if entry.get("codec") in L.CODECS else list(L.CODECS)
    return [{**L.layer_array_spec(layer, len(rd.planned_steps), n_samples, _unit_shape(entry),
                                  str(entry.get("dtype", "float32")), c, info, samples),
             "attributes": info} for c in codecs]


def slot_spec(name: str, n_slots: int) -> dict[str, Any]:
    """``create_array`` arguments of the slot array ``name`` (checkpoint, status)."""
    return {**L.slot_array_spec(name), "shape": (n_slots,)}


def check_metadata(group: Any, name: str, specs: list[dict[str, Any]]) -> str | None:
    """Why array ``name``'s metadata is not one of ``specs`` (``None`` if it is)."""
    try:
        doc = _stored_metadata(group, name)
    except Exception as e:
        return f"metadata unreadable ({first_line(e)})"
    if not any(L.same_array_layout(doc, L.array_metadata(s)) for s in specs):
        return "metadata does not match what the run's tables record"
    return None


def n_samples_of(store: Any, rd: Any) -> int:
    """Samples of a run: its sample-id array, or its probe set where that cannot be read."""
    try:
        return int(rd.group["sample"].shape[0])
    except Exception:
        g = store.root[L.PROBE_SETS][rd.attrs["probe_set"]]
        return int(g.attrs["actstore.n"])


# -- verify --------------------------------------------------------------------------------
def _check_layer(rd: Any, layer: str, slot: int, step: int) -> list[Problem]:
    arr = rd.array(layer)
    rows = arr.chunks[1]
    shard_rows = arr.shards[1] if arr.shards else rows
    out = []
    for start in range(0, arr.shape[1], rows):
        stop = min(arr.shape[1], start + rows)
        key = f"{L.RUNS}/{rd.run_id}/{layer}/c/{slot}/{start // shard_rows}" + "/0" * (
            arr.ndim - 2)
        try:
            block = np.asarray(arr[slot, start:stop])
        except Exception as e:
            out.append(Problem("corrupt", rd.run_id, step, layer, key,
                               f"samples {start}:{stop} unreadable ({e})", FIX_SLOT))
            continue
        if not np.isfinite(block).all():
            out.append(Problem("corrupt", rd.run_id, step, layer, key,
                               f"samples {start}:{stop} hold NaN/Inf in a complete slot",
                               FIX_SLOT))
    return out


def probe_set_arrays(store: Any, name: str) -> list[str]:
    """The arrays of a probe set: ``sample``, its labels, and ``inputs`` or its named inputs
    (``inputs.<name>``, in the order of ``actstore.inputs``)."""
    g = store.root[L.PROBE_SETS][name]
    named = [f"inputs.{k}" for k in g.attrs.get("actstore.inputs", [])]
    return ["sample", *g.attrs.get("actstore.features", []), *(
        named or (["inputs"] if "inputs" in g else []))]


def _check_probe_set(store: Any, name: str) -> tuple[dict[str, np.ndarray] | None,
                                                      list[Problem]]:
    """Read every array of a probe set and compare them with its hash: ``(arrays, problems)``
    (``arrays`` is ``None`` unless all is well)."""
    from actstore.store._probeset import probe_set_from_arrays

    arrays: dict[str, np.ndarray] = {}
    problems = []
    try:
        names = probe_set_arrays(store, name)
    except Exception as e:
        return None, [Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}",
                              f"unreadable ({first_line(e)})")]
    for a in names:
        try:
            arrays[a] = L.from_zarr_data(store.root[L.PROBE_SETS][name][a][...])
        except Exception as e:
            fix = FIX_PROBE_SET if a.partition(".")[0] != "inputs" else ""
            how = ("repair restores it from a run's copy that matches the probe set's hash"
                   if fix else "the stimuli have no copy: add the probe set again from its "
                   "source under a new name, or restore the store from a backup")
            problems.append(Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}/{a}",
                                    f"unreadable ({first_line(e)}); {how}", fix))
    if problems:
        return None, problems
    try:
        ps = probe_set_from_arrays(name, arrays)
        ok = ps.hash == store.root[L.PROBE_SETS][name].attrs.get("actstore.hash")
        detail = "contents do not match the recorded hash"
    except Exception as e:
        ok, detail = False, f"unreadable ({first_line(e)})"
    if not ok:
        return None, [Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}", detail)]
    return arrays, []


def _check_slot_array(rd: Any, name: str, expected: np.ndarray) -> tuple[np.ndarray,
                                                                           list[Problem]]:
    """Read the ``checkpoint`` or ``status`` array chunk by chunk: its values (those of the
    slot table where a chunk is unreadable) and its problems."""
    r, planned = rd.run_id, rd.planned_steps
    key = f"{L.RUNS}/{r}/{name}"
    if not rd._all_attrs.get(L.ATTR_LAYOUT_DONE):  # an interrupted creation: nothing to read
        return expected, []
    why = check_metadata(rd.group, name, [slot_spec(name, len(planned))])
    if why:
        return expected, [Problem("corrupt", r, None, None, f"{key}/zarr.json",
                                  f"{why}; repair writes it again from the slot table",
                                  FIX_SLOT_TABLE)]
    arr = rd.group[name]
    try:
        return np.asarray(arr[: len(planned)], dtype=expected.dtype), []
    except Exception:
        pass
    values, problems = expected.copy(), []
    for i in range(min(len(planned), arr.shape[0])):
        try:
            values[i] = arr[i]
        except Exception as e:
            problems.append(Problem(
                "corrupt", r, planned[i], None, f"{key}/c/{i}",
                f"unreadable ({first_line(e)}); repair restores it from the slot table "
                f"({int(expected[i])})", FIX_SLOT_TABLE))
    return values, problems


def _check_copies(store: Any, rd: Any, ps_arrays: dict[str, dict[str, np.ndarray] | None]
                  ) -> list[Problem]:
    """The run's copies of sample ids and labels, read and compared with its probe set."""
    r = rd.run_id
    if not rd._all_attrs.get(L.ATTR_LAYOUT_DONE):
        return []  # an interrupted creation: it holds nothing yet, and is made again
    ps_name = rd.attrs.get("probe_set")
    ref = ps_arrays.get(ps_name)
    if ref is not None:
        recorded = store.root[L.PROBE_SETS][ps_name].attrs.get("actstore.hash")
        if rd.attrs.get("probe_set_hash") != recorded:
            return [Problem("corrupt", r, None, None, f"{L.RUNS}/{r}/zarr.json",
                            f"recorded on probe set {ps_name!r} with hash "
                            f"{str(rd.attrs.get('probe_set_hash'))[:12]}, but the probe set's "
                            f"hash is {str(recorded)[:12]}; {record_again(r)}")]
    problems = []
    for name in ["sample", *rd.features]:
        key = f"{L.RUNS}/{r}/{name}"
        try:
            mine = L.from_zarr_data(rd.group[name][...])
        except Exception as e:
            why = f"unreadable ({first_line(e)})"
        else:
            if ref is None or name not in ref:
                continue  # the probe set is reported itself
            other = ref[name]
            if mine.shape == other.shape and mine.dtype == other.dtype and np.array_equal(
                    mine, other):
                continue
            why = (f"differs from probe set {ps_name!r} "
                   f"({int(np.sum(mine != other)) if mine.shape == other.shape else 'all'} "
                   "value(s))")
        fix = FIX_COPY if ref is not None else ""
        how = ("repair copies it from the probe set again" if fix else
               f"probe set {ps_name!r} is damaged too: repair it first")
        problems.append(Problem("corrupt", r, None, None, key, f"{why}; {how}", fix))
    return problems


def _check_run(store: Any, r: str, ps_arrays: dict[str, dict[str, np.ndarray] | None],
               progress: Callable[[int], None] | None) -> list[Problem]:
    from actstore.store._reader import RunReader

    try:
        if not isinstance(store.root[L.RUNS][r], zarr.Group):
            raise TypeError(f"{L.RUNS}/{r} is a Zarr array, not a group")
        rd = RunReader(store, r)
    except Exception as e:
        return [Problem("corrupt", r, None, None, f"{L.RUNS}/{r}/zarr.json",
                        f"run metadata unreadable ({first_line(e)}); {record_again(r)}")]
    try:
        store.check_run_attrs(r, rd._all_attrs)
    except DamagedRunError as e:
        return [Problem("corrupt", r, None, None, f"{L.RUNS}/{r}/zarr.json",
                        f"{e.reason}; repair cannot tell which values are right: restore that "
                        f"file from a backup, or {_record_remedy(r)}")]
    planned = rd.planned_steps
    exp_steps, exp_status = L.slot_values_from_table(
        planned, dict(rd._all_attrs.get(L.ATTR_SLOTS, {})))
    steps, problems = _check_slot_array(rd, "checkpoint", exp_steps)
    status, more = _check_slot_array(rd, "status", exp_status)
    problems += more
    problems += _check_copies(store, rd, ps_arrays)
    n = n_samples_of(store, rd)
    layers = []
    for layer in rd.layers:
        why = check_metadata(rd.group, layer, layer_specs(rd, layer, n))
        if why is None:
            layers.append(layer)
        else:
            problems.append(Problem("corrupt", r, None, layer, f"{L.RUNS}/{r}/{layer}/zarr.json",
                                    f"{why}; repair writes it again from the layer table",
                                    FIX_LAYER))
    for i, (step, st) in enumerate(zip(steps, status, strict=True)):
        step = int(step) if step >= 0 else planned[i]
        if st == L.STATUS_WRITING:
            problems.append(Problem("incomplete", r, step, None, None,
                                    "interrupted write (status 1)", FIX_SLOT))
        elif st == L.STATUS_COMPLETE:
            for layer in layers:
                problems += _check_layer(rd, layer, i, step)
        if progress is not None:
            progress(1)
    return problems


def verify(
    store: Any, runs: list[str] | None = None, progress: Callable[[int], None] | None = None
) -> list[Problem]:
    """Read every array of every probe set and run, and list what is wrong.

    Reports corrupt chunks (checksum or codec failure, NaN in a complete slot) and metadata,
    interrupted slots (status 1), probe sets whose contents no longer match their hash, runs
    whose copies of sample ids and labels differ from their probe set, and runs whose
    attributes no longer match their checksum. Each problem says how ``repair`` fixes it
    (:attr:`Problem.fix`), or why it cannot.
    """
    problems: list[Problem] = []
    ps_arrays: dict[str, dict[str, np.ndarray] | None] = {}
    for name in store.probe_set_names():
        ps_arrays[name], more = _check_probe_set(store, name)
        problems += more
    ids = store.run_ids()
    for r in runs or ids:
        if r not in ids:
            store.reader(r)  # an unknown run id is an error (one line), not a problem
        problems += _check_run(store, r, ps_arrays, progress)
    return problems

