"""``actstore repair``: fix what ``verify`` finds.

Nothing read from a store is ever imported or called: ``repair`` redoes a slot only with a
model factory the user names (``--model``), checked against the one the run records, and only
when the weights it loads hash to the slot's recorded weights hash.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store import _layout as L
from actstore.store._store import DamagedRunError, first_line
from actstore.store._verify import (
    FIX_COPY,
    FIX_LAYER,
    FIX_PROBE_SET,
    FIX_SLOT,
    FIX_SLOT_TABLE,
    Problem,
    check_metadata,
    layer_specs,
    n_samples_of,
    probe_set_arrays,
    read_object,
    record_again,
    slot_spec,
    verify,
    write_object,
)

__all__ = ["RepairReport", "repair", "repair_command"]


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
    from actstore.store._attrs import jsonable
    from actstore.store._dump import absolute_factory

    if not isinstance(cfg, dict):
        return  # the run records no model: its slots cannot be redone here (re-run)
    given = absolute_factory(model)
    same = given == cfg.get("factory") and jsonable(model_args) == jsonable(
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
    spec = slot_spec(name, len(expected))
    if check_metadata(rd.group, name, [spec]):
        write_object(rd.group, f"{name}/zarr.json", json.dumps(L.array_metadata(spec)).encode())
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
    old = read_object(rd.group, f"{layer}/zarr.json")
    specs = layer_specs(rd, layer, n_samples_of(store, rd))
    status = _slot_values_or_table(rd)
    complete = [i for i, s in enumerate(status) if s == L.STATUS_COMPLETE]
    for spec in specs:
        write_object(rd.group, f"{layer}/zarr.json", json.dumps(L.array_metadata(spec)).encode())
        try:
            if complete:
                np.asarray(rd.group[layer][complete[0]])
            return f"{L.RUNS}/{rd.run_id}/{layer}/zarr.json (from the layer table)"
        except Exception:
            continue
    if old is not None:
        write_object(rd.group, f"{layer}/zarr.json", old)
    raise ActstoreError(
        f"the metadata of layer {layer!r} of run {rd.run_id!r} could not be restored: none of "
        f"the layouts its layer table allows reads its chunks back; {record_again(rd.run_id)}"
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
    from actstore.store._probeset import probe_set_from_arrays

    g = store.root[L.PROBE_SETS][name]
    recorded = g.attrs.get("actstore.hash")
    arrays: dict[str, np.ndarray] = {}
    for a in probe_set_arrays(store, name):
        if a != array:
            arrays[a] = store.probe_set_array(name, a)  # another bad array: one error
    for r in store.run_ids():
        try:
            rd = store.reader(r)
            if rd.attrs.get("probe_set") != name or rd.attrs.get("probe_set_hash") != recorded:
                continue
            candidate = {**arrays, array: rd._copy(array)}
            ps = probe_set_from_arrays(name, candidate)
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
        from actstore.store._reader import RunReader

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
    from actstore.store._attrs import IDENTITY_KEYS
    from actstore.store._dump import load_factory, make_model

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
    from actstore.store._attrs import IDENTITY_KEYS
    from actstore.store._lease import holder_state

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
