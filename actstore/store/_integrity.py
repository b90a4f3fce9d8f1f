"""``actstore verify`` and ``actstore repair``: read every chunk, find and redo bad slots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from actstore._errors import ActstoreError
from actstore.store import _layout as L
from actstore.store._store import first_line

__all__ = ["Problem", "RepairReport", "repair", "verify"]


@dataclass
class Problem:
    """One thing wrong in a store."""

    kind: str  # "corrupt", "incomplete", "probe_set"
    run: str | None
    step: int | None
    layer: str | None = None
    key: str | None = None  # the stored object (shard) that failed
    detail: str = ""

    def line(self) -> str:
        """One line for people."""
        where = f"run {self.run!r}" if self.run else "store"
        if self.step is not None:
            where += f", checkpoint {self.step}"
        if self.layer:
            where += f", layer {self.layer!r}"
        key = f" [{self.key}]" if self.key else ""
        return f"{self.kind}: {where}{key}: {self.detail}"


def _record_again(run: str) -> str:
    return (f"its checkpoints cannot be reset one by one: delete {L.RUNS}/{run} from the store "
            "and record the run again (re-run its dump or training)")


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
                               f"samples {start}:{stop} unreadable ({e})"))
            continue
        if not np.isfinite(block).all():
            out.append(Problem("corrupt", rd.run_id, step, layer, key,
                               f"samples {start}:{stop} hold NaN/Inf in a complete slot"))
    return out


def verify(
    store: Any, runs: list[str] | None = None, progress: Callable[[int], None] | None = None
) -> list[Problem]:
    """Read every chunk of every complete slot (checksums) and list what is wrong.

    Reports corrupt chunks (checksum or codec failure, NaN in a complete slot), interrupted
    slots (status 1), and probe sets whose contents no longer match their hash.
    """
    problems: list[Problem] = []
    for name in store.probe_set_names():
        try:
            ps = store.probe_set(name)
            ok = ps.hash == store.root[L.PROBE_SETS][name].attrs.get("actstore.hash")
            detail = "contents do not match the recorded hash"
        except Exception as e:
            ok, detail = False, f"unreadable ({e})"
        if not ok:
            problems.append(Problem("probe_set", None, None, None, f"{L.PROBE_SETS}/{name}",
                                    detail))
    ids = store.run_ids()
    for r in runs or ids:
        if r not in ids:
            store.reader(r)  # an unknown run id is an error (one line), not a problem
        try:
            from actstore.store._run import RunReader

            if not isinstance(store.root[L.RUNS][r], zarr.Group):
                raise TypeError(f"{L.RUNS}/{r} is a Zarr array, not a group")
            rd = RunReader(store, r)
        except Exception as e:
            problems.append(Problem(
                "corrupt", r, None, None, f"{L.RUNS}/{r}/zarr.json",
                f"run metadata unreadable ({first_line(e)}); {_record_again(r)}"))
            continue
        try:
            steps, status = rd.steps, rd.status
        except Exception as e:
            problems.append(Problem(
                "corrupt", r, None, None, f"{L.RUNS}/{r}/status",
                f"slot table unreadable ({first_line(e)}); {_record_again(r)}"))
            continue
        layers = []
        for layer in rd.layers:
            try:
                _ = rd.array(layer).shape  # opening the array reads its metadata
                layers.append(layer)
            except Exception as e:
                problems.append(Problem(
                    "corrupt", r, None, layer, f"{L.RUNS}/{r}/{layer}/zarr.json",
                    f"layer array missing or unreadable ({first_line(e)}); {_record_again(r)}"))
        for i, (step, st) in enumerate(zip(steps, status, strict=True)):
            if st == L.STATUS_WRITING:
                problems.append(Problem("incomplete", r, int(step), None, None,
                                        "interrupted write (status 1)"))
            elif st == L.STATUS_COMPLETE:
                for layer in layers:
                    problems += _check_layer(rd, layer, i, int(step))
            if progress is not None:
                progress(1)
    return problems


@dataclass
class RepairReport:
    """Slots reset, slots redone from their checkpoint files, slots that need a re-run."""

    reset: list[tuple[str, int]] = field(default_factory=list)
    redone: list[tuple[str, int]] = field(default_factory=list)
    needs_rerun: list[tuple[str, int]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: problems repair cannot fix (probe sets, runs whose metadata is damaged), as lines
    unrepaired: list[str] = field(default_factory=list)
    #: runs whose record of a killed writer was cleared (they list as interrupted no more)
    cleared: list[str] = field(default_factory=list)


def repair(store: Any, runs: list[str] | None = None, redo: bool = True) -> RepairReport:
    """Reset every corrupt or interrupted slot; redo it where its checkpoint file still exists.

    The record of a writer that was killed between checkpoints (which makes listings call the
    run interrupted) is cleared too.

    A reset slot is empty again (status 0, chunks removed), so a re-run of ``actstore dump``
    or ``actstore train`` fills it. Runs recorded by ``actstore dump`` remember their model
    factory and the checkpoint file of every slot: with ``redo`` those slots are recorded again
    here. Probe-set problems cannot be repaired (the stimuli are the reference); they are
    reported.
    """
    from actstore.store._run import IDENTITY_KEYS

    problems = verify(store, runs)
    report = RepairReport(problems=[asdict(p) for p in problems])
    broken = {p.run for p in problems if p.run is None or p.step is None}
    report.unrepaired = [p.line() for p in problems if p.run in broken]
    bad: dict[str, set[int]] = {}
    for p in problems:
        if p.run is not None and p.step is not None and p.run not in broken:
            bad.setdefault(p.run, set()).add(p.step)
    for run, steps in bad.items():
        rd = store.reader(run)
        attrs = rd.attrs
        identity = {k: attrs.get(k) for k in IDENTITY_KEYS}
        slots = dict(rd.group.attrs.get(L.ATTR_SLOTS, {}))
        with store.writer(run, attrs["probe_set"], sorted(steps), attrs=identity) as w:
            for step in sorted(steps):
                w.rollback_slot(step)
                report.reset.append((run, step))
            dump_cfg = attrs.get("dump")
            for step in sorted(steps):
                src = slots.get(str(step), {}).get("source")
                if redo and dump_cfg and src and Path(src).is_file():
                    _redo(w, dump_cfg, step, src, slots[str(step)].get("weights_hash"))
                    report.redone.append((run, step))
                else:
                    report.needs_rerun.append((run, step))
    # a writer killed between checkpoints leaves no bad slot, only its record: taking the run
    # over (and leaving it) clears that, so listings stop calling the run interrupted
    from actstore.store._lease import holder_state

    for run in runs or store.run_ids():
        if run in bad or run in broken:
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
    return report


def _redo(w: Any, cfg: dict[str, Any], step: int, src: str, expect_hash: str | None) -> None:
    from actstore.store._capture import weights_hash
    from actstore.store._dump import _load_state, load_factory, make_model

    net = make_model(load_factory(cfg["factory"]), cfg.get("factory_kwargs"), cfg["factory"])
    state, _ = _load_state(Path(src))
    net.load_state_dict(state, strict=True)
    wh = weights_hash(net)
    if expect_hash and wh != expect_hash:
        raise ActstoreError(
            f"checkpoint file {src} changed since checkpoint {step} of run {w.run_id!r} was "
            "recorded (other weights); the slot was reset but not redone"
        )
    w.capture(net, step, layers=cfg.get("layers", "all"), reduce=cfg.get("reduce"),
              dtype=cfg.get("dtype", "float32"), batch_size=cfg.get("batch_size", 256),
              weights_hash=wh, source=src)
