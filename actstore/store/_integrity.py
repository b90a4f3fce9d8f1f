"""``actstore verify`` and ``actstore repair``: read every array, find and fix what is wrong.

Nothing read from a store is ever imported or called: ``repair`` redoes a slot only with a
model factory the user names (``--model``), checked against the one the run records, and only
when the weights it loads hash to the slot's recorded weights hash.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from actstore._errors import ActstoreError
from actstore.store import _layout as L
from actstore.store._store import DamagedRunError, first_line

__all__ = ["Problem", "RepairReport", "repair", "verify"]

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


def _record_again(run: str) -> str:
    return f"its checkpoints cannot be reset one by one: {_record_remedy(run)}"


# -- reading stored metadata ---------------------------------------------------------------
def _get(group: Any, key: str) -> bytes | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(group.store.get(f"{group.path}/{key}".lstrip("/"),
                               prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _put(group: Any, key: str, data: bytes) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    sync(group.store.set(f"{group.path}/{key}".lstrip("/"),
                         default_buffer_prototype().buffer.from_bytes(data)))


def _stored_metadata(group: Any, name: str) -> dict[str, Any]:
    """The parsed ``zarr.json`` of array ``name`` of ``group``; an error says what is wrong."""
    raw = _get(group, f"{name}/zarr.json")
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


def _layer_specs(rd: Any, layer: str, n_samples: int) -> list[dict[str, Any]]:
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


def _slot_spec(name: str, n_slots: int) -> dict[str, Any]:
    return {**L.slot_array_spec(name), "shape": (n_slots,)}


def _check_metadata(group: Any, name: str, specs: list[dict[str, Any]]) -> str | None:
    """Why array ``name``'s metadata is not one of ``specs`` (``None`` if it is)."""
    try:
        doc = _stored_metadata(group, name)
    except Exception as e:
        return f"metadata unreadable ({first_line(e)})"
    if not any(L.same_array_layout(doc, L.array_metadata(s)) for s in specs):
        return "metadata does not match what the run's tables record"
    return None


def _n_samples(store: Any, rd: Any) -> int:
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


def _probe_set_arrays(store: Any, name: str) -> list[str]:
    g = store.root[L.PROBE_SETS][name]
    return ["sample", *g.attrs.get("actstore.features", []), *(
        ["inputs"] if "inputs" in g else [])]


def _check_probe_set(store: Any, name: str) -> tuple[dict[str, np.ndarray] | None,
                                                      list[Problem]]:
    """Read every array of a probe set and compare them with its hash: ``(arrays, problems)``
    (``arrays`` is ``None`` unless all is well)."""
    from actstore.store._probeset import ProbeSet

    arrays: dict[str, np.ndarray] = {}
    problems = []
    try:
        names = _probe_set_arrays(store, name)
    except Exception as e:
        return None, [Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}",
                              f"unreadable ({first_line(e)})")]
    for a in names:
        try:
            arrays[a] = L.from_zarr_data(store.root[L.PROBE_SETS][name][a][...])
        except Exception as e:
            fix = FIX_PROBE_SET if a != "inputs" else ""
            how = ("repair restores it from a run's copy that matches the probe set's hash"
                   if fix else "the stimuli have no copy: add the probe set again from its "
                   "source under a new name, or restore the store from a backup")
            problems.append(Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}/{a}",
                                    f"unreadable ({first_line(e)}); {how}", fix))
    if problems:
        return None, problems
    try:
        ps = ProbeSet(name=name, labels={k: v for k, v in arrays.items()
                                         if k not in ("sample", "inputs")},
                      inputs=arrays.get("inputs"), sample=arrays["sample"])
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
    why = _check_metadata(rd.group, name, [_slot_spec(name, len(planned))])
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
                            f"hash is {str(recorded)[:12]}; {_record_again(r)}")]
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
    from actstore.store._run import RunReader

    try:
        if not isinstance(store.root[L.RUNS][r], zarr.Group):
            raise TypeError(f"{L.RUNS}/{r} is a Zarr array, not a group")
        rd = RunReader(store, r)
    except Exception as e:
        return [Problem("corrupt", r, None, None, f"{L.RUNS}/{r}/zarr.json",
                        f"run metadata unreadable ({first_line(e)}); {_record_again(r)}")]
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
    n = _n_samples(store, rd)
    layers = []
    for layer in rd.layers:
        why = _check_metadata(rd.group, layer, _layer_specs(rd, layer, n))
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


# -- repair --------------------------------------------------------------------------------
@dataclass
class RepairReport:
    """What ``repair`` did, and what is left."""

    reset: list[tuple[str, int]] = field(default_factory=list)
    redone: list[tuple[str, int]] = field(default_factory=list)
    needs_rerun: list[tuple[str, int]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: problems repair cannot fix (probe sets, runs whose metadata is damaged), as lines
    unrepaired: list[str] = field(default_factory=list)
    #: runs whose record of a killed writer was cleared (they list as interrupted no more)
    cleared: list[str] = field(default_factory=list)
    #: objects written again from the run's tables or a copy, without recomputing
    restored: list[str] = field(default_factory=list)
    #: slots that can be redone from their checkpoint files but were left as they are:
    #: redoing them needs the model factory, given on the command line (see ``commands``)
    pending: list[tuple[str, int]] = field(default_factory=list)
    #: per run with pending slots: the command that redoes them
    commands: dict[str, str] = field(default_factory=dict)


def _cli_value(v: Any) -> str:
    """A ``--model-arg`` value as text that the command line reads back as ``v``."""
    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError:
            return v
    return json.dumps(v)


def repair_command(url: str, run: str, cfg: dict[str, Any]) -> str:
    """The ``actstore repair`` command that redoes the slots of ``run`` with the model factory
    and ``--model-arg`` values the run records (shown, never run)."""
    parts = ["actstore", "repair", url, "--run", run, "--model", str(cfg.get("factory"))]
    kwargs = cfg.get("factory_kwargs")
    for k, v in (kwargs.items() if isinstance(kwargs, dict) else []):
        parts += ["--model-arg", f"{k}={_cli_value(v)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _check_model(store: Any, run: str, cfg: Any, model: str,
                 model_args: dict[str, Any]) -> None:
    """The ``--model`` and ``--model-arg`` given must be those the run was recorded with."""
    from actstore.store._dump import absolute_factory
    from actstore.store._run import _jsonable

    if not isinstance(cfg, dict):
        return  # the run records no model: its slots cannot be redone here (re-run)
    given = absolute_factory(model)
    same = given == cfg.get("factory") and _jsonable(model_args) == _jsonable(
        cfg.get("factory_kwargs") or {})
    if not same:
        raise ActstoreError(
            f"run {run!r} in {store.url} was recorded with another model than --model "
            f"{model}{''.join(f' --model-arg {k}={v}' for k, v in model_args.items())}; "
            f"nothing was changed; redo its checkpoints with: "
            f"{repair_command(store.url, run, cfg)} (or select other runs with --run)"
        )


def _redo_plan(run: str, slots: dict[str, Any], steps: list[int], net: Any
               ) -> list[tuple[int, str, str]]:
    """``(step, checkpoint file, weights hash)`` per slot to redo; every file is loaded into
    ``net`` and must hash to the slot's recorded weights hash (else nothing is changed)."""
    from actstore.store._capture import weights_hash
    from actstore.store._dump import _load_state

    plan = []
    for step in steps:
        rec = slots.get(str(step), {})
        src, expect = rec.get("source"), rec.get("weights_hash")
        state, _ = _load_state(Path(src))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ActstoreError(
                f"checkpoint file {src} does not fit the model given with --model "
                f"({first_line(e)}); nothing was changed"
            ) from None
        wh = weights_hash(net)
        if not expect or wh != expect:
            raise ActstoreError(
                f"checkpoint file {src} holds other weights than checkpoint {step} of run "
                f"{run!r} was recorded from (sha256 {str(expect)[:12]} recorded, {wh[:12]} "
                "now); nothing was changed; restore that file, or reset the slot with "
                "--no-redo and record it again"
            )
        plan.append((step, src, wh))
    return plan


def _slot_steps(rd: Any, steps: set[int], redo: bool, with_model: bool
                ) -> tuple[list[int], list[int], list[int]]:
    """``(redo, pending, reset only)`` steps of a run's bad slots."""
    cfg = rd.attrs.get("dump")
    slots = dict(rd._all_attrs.get(L.ATTR_SLOTS, {}))
    redo_steps: list[int] = []
    pending: list[int] = []
    reset: list[int] = []
    for step in sorted(steps):
        src = slots.get(str(step), {}).get("source")
        if redo and isinstance(cfg, dict) and src and Path(src).is_file():
            (redo_steps if with_model else pending).append(step)
        else:
            reset.append(step)
    return redo_steps, pending, reset


def _restore_slot_array(rd: Any, name: str, expected: np.ndarray) -> list[str]:
    """Write the metadata (if unreadable) and every unreadable chunk of ``checkpoint`` or
    ``status`` again from the slot table."""
    done = []
    key = f"{L.RUNS}/{rd.run_id}/{name}"
    spec = _slot_spec(name, len(expected))
    if _check_metadata(rd.group, name, [spec]):
        _put(rd.group, f"{name}/zarr.json", json.dumps(L.array_metadata(spec)).encode())
        done.append(f"{key}/zarr.json (from the slot table)")
    arr = rd.group[name]
    for i, value in enumerate(expected):
        try:
            arr[i]
        except Exception:
            arr[i] = value
            done.append(f"{key}/c/{i} (from the slot table)")
    return done


def _restore_layer_metadata(store: Any, rd: Any, layer: str) -> str:
    """Write a layer's ``zarr.json`` again from the layer table; with several candidate codecs
    (format 1 tables), the one whose chunks read back (checksums) is kept."""
    old = _get(rd.group, f"{layer}/zarr.json")
    specs = _layer_specs(rd, layer, _n_samples(store, rd))
    status = _slot_values_or_table(rd)
    complete = [i for i, s in enumerate(status) if s == L.STATUS_COMPLETE]
    for spec in specs:
        _put(rd.group, f"{layer}/zarr.json", json.dumps(L.array_metadata(spec)).encode())
        try:
            if complete:
                np.asarray(rd.group[layer][complete[0]])
            return f"{L.RUNS}/{rd.run_id}/{layer}/zarr.json (from the layer table)"
        except Exception:
            continue
    if old is not None:
        _put(rd.group, f"{layer}/zarr.json", old)
    raise ActstoreError(
        f"the metadata of layer {layer!r} of run {rd.run_id!r} could not be restored: none of "
        f"the layouts its layer table allows reads its chunks back; {_record_again(rd.run_id)}"
    )


def _slot_values_or_table(rd: Any) -> np.ndarray:
    try:
        return rd.status
    except DamagedRunError:
        return L.slot_values_from_table(rd.planned_steps,
                                        dict(rd._all_attrs.get(L.ATTR_SLOTS, {})))[1]


def _restore_probe_set_array(store: Any, name: str, array: str) -> str:
    """Restore a probe-set array from a run's copy whose contents give the probe set's
    recorded hash."""
    from actstore.store._probeset import ProbeSet

    g = store.root[L.PROBE_SETS][name]
    recorded = g.attrs.get("actstore.hash")
    arrays: dict[str, np.ndarray] = {}
    for a in _probe_set_arrays(store, name):
        if a != array:
            arrays[a] = store.probe_set_array(name, a)  # another bad array: one error
    for r in store.run_ids():
        try:
            rd = store.reader(r)
            if rd.attrs.get("probe_set") != name or rd.attrs.get("probe_set_hash") != recorded:
                continue
            candidate = {**arrays, array: rd._copy(array)}
            ps = ProbeSet(name=name, labels={k: v for k, v in candidate.items()
                                             if k not in ("sample", "inputs")},
                          inputs=candidate.get("inputs"), sample=candidate["sample"])
        except Exception:
            continue
        if ps.hash == recorded:
            g.create_array(array, overwrite=True, data=L.to_zarr_data(candidate[array]),
                           dimension_names=("sample",), compressors=L.data_codecs())
            return f"{L.PROBE_SETS}/{name}/{array} (from run {r!r}, hash checked)"
    raise ActstoreError(
        f"array {array!r} of probe set {name!r} cannot be restored: no run holds a copy that "
        "gives the probe set's recorded hash; add the probe set again from its source under a "
        "new name"
    )


#: problems fixed without recomputing
RESTORABLE = (FIX_SLOT_TABLE, FIX_LAYER, FIX_COPY, FIX_PROBE_SET)


def _restore(store: Any, problems: list[Problem], report: RepairReport,
             failed: dict[str | None, str]) -> bool:
    """Fix what needs no recomputing: probe-set arrays from runs' copies, then per run its
    slot table arrays, layer metadata and copies of the probe set. Returns whether anything
    was written; ``failed`` gets the reason of each fix that could not be made, by key."""
    wrote = False
    for p in problems:
        if p.fix == FIX_PROBE_SET and p.key:
            _, name, array = p.key.split("/")
            try:
                report.restored.append(_restore_probe_set_array(store, name, array))
                wrote = True
            except ActstoreError as e:
                failed[p.key] = str(e)
    runs = sorted({p.run for p in problems if p.run and p.fix in (
        FIX_SLOT_TABLE, FIX_LAYER, FIX_COPY)})
    for r in runs:
        from actstore.store._run import RunReader

        mine = [p for p in problems if p.run == r]
        with store.hold_run(r, "repair run", "repair the store again"):
            rd = RunReader(store, r)
            exp = L.slot_values_from_table(rd.planned_steps,
                                           dict(rd._all_attrs.get(L.ATTR_SLOTS, {})))
            for name, expected in zip(("checkpoint", "status"), exp, strict=True):
                if any(p.fix == FIX_SLOT_TABLE and p.key and p.key.startswith(
                        f"{L.RUNS}/{r}/{name}/") for p in mine):
                    report.restored += _restore_slot_array(rd, name, expected)
            for p in mine:
                if p.fix == FIX_LAYER and p.layer:
                    try:
                        report.restored.append(_restore_layer_metadata(store, rd, p.layer))
                    except ActstoreError as e:
                        failed[p.key] = str(e)
                elif p.fix == FIX_COPY and p.key:
                    name = p.key.rsplit("/", 1)[1]
                    data = store.probe_set_array(rd.attrs["probe_set"], name)
                    rd.group.create_array(name, overwrite=True, data=L.to_zarr_data(data),
                                          dimension_names=("sample",),
                                          compressors=L.data_codecs())
                    report.restored.append(f"{p.key} (from probe set "
                                           f"{rd.attrs['probe_set']!r})")
        wrote = True
    return wrote


def repair(store: Any, runs: list[str] | None = None, redo: bool = True,
           model: str | None = None, model_args: dict[str, Any] | None = None) -> RepairReport:
    """Fix what :func:`verify` finds, as far as the store's own records allow.

    - ``checkpoint``/``status`` chunks and layer metadata are written again from the run's
      slot table and layer table; a run's copies of sample ids and labels from its probe set;
      a probe-set array from a run's copy whose contents give the probe set's hash. Nothing
      is recomputed.
    - Corrupt or interrupted slots are reset (status 0, chunks removed), so that a re-run of
      ``actstore dump`` or ``actstore train`` fills them. A slot whose checkpoint file still
      exists is redone here instead, but only with ``model`` (``package.module:function`` or
      ``file.py:function``) and ``model_args`` given by the caller: they must be those the run
      records, and each file's weights must hash to the slot's recorded weights hash (else
      nothing is changed). Without ``model`` such slots are left as they are and
      :attr:`RepairReport.commands` says what to run. A store never names code that is run.
    - The record of a writer killed between checkpoints (which makes listings call the run
      interrupted) is cleared.

    Probe-set contents that no run's copy restores, and runs whose own metadata is unreadable
    or no longer matches its checksum, are reported (:attr:`RepairReport.unrepaired`).

    Raises
    ------
    ActstoreError
        ``model`` with ``redo=False``; a ``model`` or ``model_args`` other than those a run to
        redo records; checkpoint files that no longer hold the recorded weights. The store is
        not changed then.
    """
    from actstore.store._dump import load_factory, make_model
    from actstore.store._run import IDENTITY_KEYS

    model_args = dict(model_args or {})
    if model is None and model_args:
        raise ActstoreError("--model-arg needs --model (the model factory they are passed to)")
    if model is not None and not redo:
        raise ActstoreError("--model redoes slots from their checkpoint files; leave out "
                            "--no-redo, or leave out --model")
    problems = verify(store, runs)
    report = RepairReport(problems=[asdict(p) for p in problems])
    nets: list[Any] = []

    def net() -> Any:  # the user's model factory, imported and called once, when needed
        if not nets:
            nets.append(make_model(load_factory(str(model)), model_args, str(model)))
        return nets[0]

    # everything is checked before anything is written
    if model is not None:
        for r in sorted({p.run for p in problems if p.run and p.fix == FIX_SLOT}):
            rd = store.reader(r)
            _check_model(store, r, rd.attrs.get("dump"), model, model_args)
            redo_steps = _slot_steps(rd, {int(p.step) for p in problems if p.run == r and
                                          p.fix == FIX_SLOT and p.step is not None},
                                     redo, True)[0]
            if redo_steps:
                _redo_plan(r, dict(rd._all_attrs.get(L.ATTR_SLOTS, {})), redo_steps, net())
    failed: dict[str | None, str] = {}
    for _ in range(3):  # a restored probe set lets the runs' copies be restored next
        if not any(p.fix in RESTORABLE and p.key not in failed for p in problems) or (
                not _restore(store, problems, report, failed)):
            break
        store.refresh()
        problems = verify(store, runs)  # damage hidden behind metadata can show up now
    left = [p for p in problems if p.fix != FIX_SLOT]
    broken = {p.run for p in left}
    report.unrepaired += [p.line() + (f" - not repaired: {failed[p.key]}" if p.key in failed
                                      else "") for p in left]
    bad: dict[str, set[int]] = {}
    for p in problems:
        if p.fix == FIX_SLOT and p.run not in broken and p.step is not None:
            bad.setdefault(str(p.run), set()).add(p.step)
    for run, steps in bad.items():
        rd = store.reader(run)
        attrs = rd.attrs
        redo_steps, pending, reset = _slot_steps(rd, steps, redo, model is not None)
        plan = []
        if redo_steps:
            _check_model(store, run, attrs.get("dump"), str(model), model_args)
            plan = _redo_plan(run, dict(rd._all_attrs.get(L.ATTR_SLOTS, {})), redo_steps,
                              net())
        if pending:
            report.pending += [(run, s) for s in pending]
            report.commands[run] = repair_command(store.url, run, attrs["dump"])
        report.needs_rerun += [(run, s) for s in reset]
        if not reset and not plan:
            continue
        identity = {k: attrs.get(k) for k in IDENTITY_KEYS}
        with store.writer(run, attrs["probe_set"], sorted(reset + redo_steps),
                          attrs=identity) as w:
            for step in sorted(reset + redo_steps):
                w.rollback_slot(step)
                report.reset.append((run, step))
            cfg = attrs["dump"] if plan else {}
            for step, src, wh in plan:
                _redo(w, net(), cfg, step, src, wh)
                report.redone.append((run, step))
    _clear_killed_writers(store, runs, set(bad) | broken, report)
    if report.restored:
        store.consolidate()
    return report


def _clear_killed_writers(store: Any, runs: list[str] | None, skip: set[Any],
                          report: RepairReport) -> None:
    """A writer killed between checkpoints leaves no bad slot, only its record: taking the
    run over (and leaving it) clears that, so listings stop calling the run interrupted."""
    from actstore.store._lease import holder_state
    from actstore.store._run import IDENTITY_KEYS

    for run in runs or store.run_ids():
        if run in skip:
            continue
        try:
            rd = store.reader(run)
            holder = rd.group.attrs.get(L.ATTR_WRITER)
        except ActstoreError:
            continue  # damaged: verify reported it
        if holder_state(store.url, run, holder if isinstance(holder, dict) else None) != "stale":
            continue
        identity = {k: rd.attrs.get(k) for k in IDENTITY_KEYS}
        with store.writer(run, rd.attrs["probe_set"], [], attrs=identity):
            pass
        report.cleared.append(run)
    if report.cleared:
        store.consolidate()


def _redo(w: Any, net: Any, cfg: dict[str, Any], step: int, src: str, wh: str) -> None:
    from actstore.store._dump import _load_state

    state, _ = _load_state(Path(src))
    net.load_state_dict(state, strict=True)
    w.capture(net, step, layers=cfg.get("layers", "all"), reduce=cfg.get("reduce"),
              dtype=cfg.get("dtype", "float32"), batch_size=cfg.get("batch_size", 256),
              weights_hash=wh, source=src)
