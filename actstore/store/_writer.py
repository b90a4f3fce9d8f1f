"""Writing a run: checkpoint slots written resumably and safely under the run's lease."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError, ProvenanceError, WriterConflictError
from actstore.store import _layout as L
from actstore.store._attrs import IDENTITY_KEYS, as_step, check_name, jsonable, now, owned, version
from actstore.store._lease import Lease, settle_delay
from actstore.store._reader import RunReader

__all__ = ["RunWriter"]


class RunWriter:
    """Context manager that holds a run's writer lease and writes checkpoint slots.

    Use :meth:`actstore.store.Store.writer` to make one.
    """

    def __init__(
        self,
        store: Any,
        run_id: str,
        probe_set: str,
        steps: list[int],
        attrs: dict[str, Any],
        codec: str,
    ):
        check_name(run_id)
        L.make_codecs(codec)  # validates the name
        self.store = store
        self.run_id = run_id
        self.probe_set_name = probe_set
        self.steps = sorted({as_step(s) for s in steps})
        if any(s < 0 for s in self.steps):
            raise ActstoreError(f"checkpoint steps must be >= 0, got {self.steps}")
        self.identity = jsonable({k: attrs.get(k) for k in IDENTITY_KEYS})
        self.extra_attrs = jsonable({k: v for k, v in attrs.items() if k not in IDENTITY_KEYS})
        self.codec = codec
        self.group: Any = None
        self._attrs: dict[str, Any] = {}
        self._attr_lock = threading.Lock()
        self._lease = Lease(store.url, run_id)
        self._created = False
        self._entered = False
        self._n_slots_entered = 0

    def __repr__(self) -> str:
        return (f"RunWriter({self.run_id!r}, store={self.store.url!r}, "
                f"probe_set={self.probe_set_name!r}, steps={self.steps}, "
                f"{'open' if self._entered else 'closed'})")

    # -- attributes --------------------------------------------------------------------------
    def _put_attrs(self, updates: dict[str, Any], remove: tuple[str, ...] = ()) -> None:
        with self._attr_lock:
            self._attrs.update(jsonable(updates))
            for k in remove:
                self._attrs.pop(k, None)
            self._attrs[L.ATTR_CHECKSUM] = L.attrs_checksum(self._attrs)
            self.group.attrs.put(self._attrs)

    def update_attrs(self, updates: dict[str, Any]) -> None:
        """Add or replace run attributes (metrics, notes). Identity keys cannot change."""
        bad = [k for k in updates if k in IDENTITY_KEYS or owned(k)]
        if bad:
            raise ActstoreError(f"run attributes {bad} are fixed when the run is created")
        self._put_attrs(updates)

    # -- entering: provenance, lease, layout -------------------------------------------------
    def __enter__(self) -> RunWriter:
        st = self.store
        ps_group = st.root[L.PROBE_SETS][self.probe_set_name] if (
            self.probe_set_name in st.probe_set_names()) else None
        if ps_group is None:
            raise ActstoreError(
                f"no probe set {self.probe_set_name!r} in {st.url}; add it first "
                f"(available: {', '.join(st.probe_set_names()) or 'none'})"
            )
        self._ps_hash = ps_group.attrs["actstore.hash"]
        self._ps_features = list(ps_group.attrs.get("actstore.features", []))
        runs = st._group(L.RUNS)
        try:
            self._lease.acquire_local(None)
        except WriterConflictError:
            holder = dict(runs[self.run_id].attrs).get(L.ATTR_WRITER) if (
                self.run_id in runs) else None
            raise self._lease._conflict(holder) from None
        try:
            # read under the lock: a writer that held the run until now may have changed it
            existing = runs[self.run_id] if self.run_id in runs else None
            self._enter_locked(runs, existing)
        except BaseException:
            self._lease.release()
            raise
        self._entered = True
        return self

    def _enter_locked(self, runs: Any, existing: Any) -> None:
        if existing is not None:
            # object stores: read afresh, so that the lease is taken over this very version
            existing = self._lease.fence(existing)
            old = dict(existing.attrs)
            self._lease.check_attr(old.get(L.ATTR_WRITER))
            self.store.check_run_attrs(self.run_id, old)
            if not old.get(L.ATTR_LAYOUT_DONE):
                # creation was interrupted before any slot could be written: start over
                del runs[self.run_id]
                existing = None
            else:
                self._check_provenance(old)
                self._check_owned(old)
        if existing is None:
            self._check_owned({"probe_set": self.probe_set_name, "probe_set_hash": self._ps_hash,
                               "config_hash": L.json_hash(self.identity)})
            self.group = self._lease.fence(runs.create_group(self.run_id))
            self._created = True
            self._attrs = {
                **self.identity,
                "probe_set": self.probe_set_name,
                "probe_set_hash": self._ps_hash,
                "config_hash": L.json_hash(self.identity),
                "actstore_version": version(),
                "created": now(),
                **self.extra_attrs,
                "actstore.features": self._ps_features,
                L.ATTR_STEPS: [],
                L.ATTR_SLOTS: {},
                L.ATTR_LAYERS: {},
                L.ATTR_LAYOUT_DONE: False,
            }
        else:
            self.group = existing
            self._attrs = dict(existing.attrs)
            self._attrs.update(self.extra_attrs)
            self._remove_partial_files()
            self._fit_slot_arrays()
        self.store.upgrade_format()
        self._put_attrs({L.ATTR_WRITER: self._lease.stamp(), **self._lease.generation_attrs()})
        delay = settle_delay(self.store.url)
        if delay:
            time.sleep(delay)
            from actstore.store import open_store

            fresh = open_store(self.store.url, mode="r").root[L.RUNS][self.run_id]
            holder = dict(fresh.attrs).get(L.ATTR_WRITER) or {}
            if holder.get("id") != self._lease.info["id"]:
                raise self._lease._conflict(holder)
        self._lease.start_heartbeat(lambda: self._put_attrs({L.ATTR_WRITER: self._lease.stamp()}))
        if self._created:
            self._create_layout()
        self._n_slots_entered = len(self._attrs.get(L.ATTR_STEPS, []))
        self._add_slots(self.steps)

    def _check_provenance(self, old: dict[str, Any]) -> None:
        # keys left out (None) adopt the run's values; keys given must agree
        diffs = [k for k in IDENTITY_KEYS
                 if self.identity.get(k) is not None and old.get(k) != self.identity.get(k)]
        if diffs:
            k = diffs[0]
            raise ProvenanceError(
                f"run {self.run_id!r} in {self.store.url} exists with another {k} "
                f"({old.get(k)!r} there, {self.identity.get(k)!r} now); use a new run id"
            )
        same_ps = old.get("probe_set") == self.probe_set_name
        if not same_ps or old.get("probe_set_hash") != self._ps_hash:
            raise ProvenanceError(
                f"run {self.run_id!r} was recorded on probe set {old.get('probe_set')!r} "
                f"(hash {str(old.get('probe_set_hash'))[:12]}), not on {self.probe_set_name!r} "
                f"(hash {self._ps_hash[:12]}); use a new run id"
            )

    def _check_owned(self, current: dict[str, Any]) -> None:
        """Attributes actstore records may be passed back only with the run's own values."""
        for k, v in self.extra_attrs.items():
            if owned(k) and current.get(k) != v:
                raise ActstoreError(
                    f"run attribute {k!r} is recorded by actstore "
                    f"({'not set yet' if current.get(k) is None else repr(current.get(k))}) and "
                    f"cannot be set to {v!r}; choose another attribute name"
                )
        self.extra_attrs = {k: v for k, v in self.extra_attrs.items() if not owned(k)}

    def _create_layout(self) -> None:
        ps_group = self.store.root[L.PROBE_SETS][self.probe_set_name]
        g = self.group
        for name in ("checkpoint", "status"):
            g.create_array(name, **L.slot_array_spec(name))
        for name in ["sample", *self._ps_features]:
            g.create_array(name, data=L.to_zarr_data(ps_group[name][...]),
                           dimension_names=("sample",), compressors=L.data_codecs())
        self._put_attrs({L.ATTR_LAYOUT_DONE: True})

    def _remove_partial_files(self) -> None:
        """Remove what a killed writer of this run left of its atomic writes.

        A local zarr store writes each object to ``NAME.<uuid>.partial`` and renames it into
        place; a writer killed in between leaves the partial file, which listings of the run's
        group then see as an unknown member. This writer holds the run, so every such file
        in the run's directory is stale.
        """
        from zarr.storage import LocalStore

        st = self.group.store
        if isinstance(st, LocalStore):
            for p in (Path(st.root) / self.group.path).rglob("*.partial"):
                p.unlink(missing_ok=True)

    def _fit_slot_arrays(self) -> None:
        """Give every slot array the length of the slot table again (see
        :meth:`RunReader._slot_values`): what a writer killed while adding slots leaves."""
        n = len(self._attrs.get(L.ATTR_STEPS, []))
        for name in ["checkpoint", "status", *self._attrs.get(L.ATTR_LAYERS, {})]:
            if name in self.group:
                arr = self.group[name]
                if arr.shape[0] != n:
                    arr.resize((n, *arr.shape[1:]))

    def _add_slots(self, steps: list[int]) -> None:
        planned = [int(s) for s in self._attrs.get(L.ATTR_STEPS, [])]
        new = [s for s in steps if s not in planned]
        if not new:
            return
        total = len(planned) + len(new)
        for name in ["checkpoint", "status", *self._attrs.get(L.ATTR_LAYERS, {})]:
            arr = self.group[name]
            arr.resize((total, *arr.shape[1:]))
        self._put_attrs({L.ATTR_STEPS: planned + new})

    # -- slots -------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Number of samples of the run's probe set."""
        return int(self.group["sample"].shape[0])

    def _slot_index(self, step: int) -> int:
        step = as_step(step)
        planned = [int(s) for s in self._attrs[L.ATTR_STEPS]]
        if int(step) not in planned:
            self._add_slots([int(step)])
            planned = [int(s) for s in self._attrs[L.ATTR_STEPS]]
        return planned.index(int(step))

    def is_complete(self, step: int, weights_hash: str | None = None) -> bool:
        """True if the slot of ``step`` is complete.

        With ``weights_hash``, a complete slot recorded from other weights raises
        :class:`ProvenanceError` instead of being reused.
        """
        step = as_step(step)
        planned = [int(s) for s in self._attrs.get(L.ATTR_STEPS, [])]
        if int(step) not in planned:
            return False
        i = planned.index(int(step))
        if int(self.group["status"][i]) != L.STATUS_COMPLETE:
            return False
        if weights_hash is not None:
            old = self._attrs.get(L.ATTR_SLOTS, {}).get(str(int(step)), {}).get("weights_hash")
            if old is not None and old != weights_hash:
                raise ProvenanceError(
                    f"checkpoint {step} of run {self.run_id!r} was recorded from other weights "
                    f"(sha256 {old[:12]}, now {weights_hash[:12]}); use a new run id"
                )
        return True

    def check_layer_names(self, names: list[str]) -> None:
        """Refuse layer names that are taken by the run's own arrays (slot table, labels)."""
        taken = {"checkpoint", "status", "sample", *self._ps_features}
        clash = [n for n in names if n in taken]
        if clash:
            raise ActstoreError(
                f"layer {clash[0]!r} of run {self.run_id!r} has the name of an array every run "
                f"holds ({', '.join(sorted(taken))}); rename that feature of probe set "
                f"{self.probe_set_name!r}, or select other layers"
            )

    def check_layer_set(self, names: set[str], what: str) -> None:
        """Refuse a slot whose layers differ from the run's.

        The layer set is fixed by the first complete slot. Before that, a first slot that was
        interrupted while creating its arrays may have left only some of them: a later capture
        that selects those layers and more goes on and creates the rest.
        """
        known = set(self._attrs.get(L.ATTR_LAYERS, {}))
        if not known or known == names:
            return
        fixed = bool((np.asarray(self.group["status"][:]) == L.STATUS_COMPLETE).any())
        if not fixed and known < names:
            return
        raise ActstoreError(
            f"run {self.run_id!r} records layers {sorted(known)}; {what} "
            f"{sorted(names)}; a run records the same layers at every checkpoint"
        )

    def layer_array(self, name: str, unit_shape: tuple[int, ...], dtype: str,
                    info: dict[str, Any]) -> Any:
        """The zarr array of a layer, created on first use with the chunking of FORMAT.md."""
        table = dict(self._attrs.get(L.ATTR_LAYERS, {}))
        if name in table:
            arr = self.group[name]
            if tuple(arr.shape[2:]) != tuple(unit_shape) or str(arr.dtype) != dtype:
                raise ActstoreError(
                    f"layer {name!r} of run {self.run_id!r} holds {tuple(arr.shape[2:])} "
                    f"{arr.dtype} units, but this capture gives {tuple(unit_shape)} {dtype}; "
                    "use a new run id for another model or reduction"
                )
            for key in ("module", "reduction"):
                was, now = table[name].get(key), info.get(key)
                if was is not None and now is not None and was != now:
                    raise ProvenanceError(
                        f"layer {name!r} of run {self.run_id!r} was recorded with {key} "
                        f"{was!r}, this checkpoint gives {now!r}; a run records each layer "
                        "the same way at every checkpoint (use a new run id)"
                    )
            return arr
        spec = L.layer_array_spec(name, len(self._attrs[L.ATTR_STEPS]), self.n_samples,
                                  tuple(unit_shape), dtype, self.codec, info)
        # an array without an entry in the layer table is what a first slot killed between
        # creating the array and recording it leaves behind: it holds nothing and is replaced
        arr = self.group.create_array(name, overwrite=name in self.group,
                                      attributes=jsonable(info), **spec)
        # how the array is stored, so that its metadata can be written again (actstore repair)
        table[name] = jsonable({**info, "units": int(np.prod(unit_shape)), "dtype": dtype,
                                 "unit_shape": list(unit_shape), "codec": self.codec,
                                 "chunk_samples": spec["chunks"][1],
                                 "shard_samples": spec["shards"][1]})
        self._put_attrs({L.ATTR_LAYERS: table})
        return arr

    def begin_slot(self, step: int, weights_hash: str | None = None,
                   source: str | None = None) -> int:
        """Mark the slot of ``step`` as being written; returns its index.

        ``source`` (a checkpoint file) is recorded so that ``actstore repair`` can redo it.
        Without ``weights_hash`` the slot can be written but never completed (:meth:`end_slot`).
        """
        i = self._slot_index(step)
        slots = dict(self._attrs.get(L.ATTR_SLOTS, {}))
        slots[str(int(step))] = {"weights_hash": weights_hash, "started": now()}
        if source is not None:
            slots[str(int(step))]["source"] = source
        self._put_attrs({L.ATTR_SLOTS: slots})
        self.group["status"][i] = L.STATUS_WRITING
        self.group["checkpoint"][i] = int(step)
        return i

    def end_slot(self, step: int) -> None:
        """Mark the slot complete: written last, after every layer of the slot."""
        i = self._slot_index(step)
        slots = dict(self._attrs.get(L.ATTR_SLOTS, {}))
        if not (slots.get(str(int(step))) or {}).get("weights_hash"):
            raise ActstoreError(
                f"checkpoint {step} of run {self.run_id!r} has no weights hash recorded, so it "
                "cannot be marked complete; begin the slot with the hash of the weights it is "
                "recorded from (actstore.store.weights_hash(model))"
            )
        self.group["status"][i] = L.STATUS_COMPLETE
        slots.setdefault(str(int(step)), {})["completed"] = now()
        self._put_attrs({L.ATTR_SLOTS: slots})

    def rollback_slot(self, step: int) -> None:
        """Forget a slot whose write failed: its chunks are removed, status back to empty.

        A writer that lost its lease writes nothing more: the slot stays interrupted (status
        1), and the run's writer redoes it.
        """
        if self._lease.lost is not None:
            return
        i = self._slot_index(step)
        for name in self._attrs.get(L.ATTR_LAYERS, {}):
            arr = self.group[name]
            try:
                # writing the fill value removes the chunks (zarr does not store empty chunks)
                arr[i] = np.nan
            except Exception:
                # a shard too damaged to be read back (its index corrupt): remove its objects
                self._delete_slot_objects(arr, i)
        self.group["status"][i] = L.STATUS_EMPTY
        self.group["checkpoint"][i] = -1
        slots = dict(self._attrs.get(L.ATTR_SLOTS, {}))
        slots.pop(str(int(step)), None)
        self._put_attrs({L.ATTR_SLOTS: slots})

    def _delete_slot_objects(self, arr: Any, i: int) -> None:
        """Delete every stored object (shard) of slot ``i`` of a layer array."""
        from zarr.core.sync import sync

        sync(arr.store.delete_dir(f"{arr.path}/c/{i}"))

    def write_slot(
        self,
        step: int,
        arrays: dict[str, np.ndarray],
        weights_hash: str | None = None,
        dtype: str = "float32",
        info: dict[str, dict[str, Any]] | None = None,
    ) -> bool:
        """Write precomputed activations of one checkpoint.

        Parameters
        ----------
        step : int
            Training step of the checkpoint.
        arrays : dict of str to array of shape (n_samples, *unit_shape)
            One array per layer (real numbers; at least one unit).
        weights_hash : str, optional
            Provenance of the weights (see :func:`actstore.store.weights_hash`).
        dtype : {"float32", "float16"}
            Storage dtype.
        info : dict of layer name to dict, optional
            Extra entries of each layer's table row.

        Returns
        -------
        bool
            ``False`` (and nothing written) if the slot was already complete with these
            values.

        Raises
        ------
        ProvenanceError
            The slot is complete with other values, layers or weights: a complete checkpoint
            is never overwritten (use a new step or run id).
        ActstoreError
            Arrays of the wrong shape or kind, NaN/Inf, unusable layer names.
        """
        from actstore.store._capture import check_values

        self._require_open("write_slot")
        arrays = as_mapping(arrays, "arrays", "give a dict of layer name -> array of shape "
                            "(n_samples, units)")
        if not arrays:
            raise ActstoreError("arrays is empty; give at least one layer")
        for name in arrays:
            check_name(name, "layer name", "'fc1'")
        self.check_layer_names(list(arrays))
        checked = {}
        for name, a in arrays.items():
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                raise ActstoreError(
                    f"layer {name!r}: activations of dtype {a.dtype}; give real numbers "
                    "(float, int or bool)"
                )
            if a.ndim < 2 or a.shape[0] != self.n_samples:
                raise ActstoreError(
                    f"layer {name!r}: activations of shape {a.shape}, but the probe set has "
                    f"{self.n_samples} samples; give (n_samples, units)"
                )
            if 0 in a.shape[1:]:
                raise ActstoreError(
                    f"layer {name!r}: activations of shape {a.shape} have no units; give at "
                    "least one unit per sample"
                )
            checked[name] = check_values(a, name, step, dtype)
        if self.is_complete(step, weights_hash):
            self.check_same_slot(step, checked, "a complete checkpoint is never overwritten; "
                                 "write these activations as another step or into a new run")
            return False
        self.check_layer_set(set(arrays), "this slot gives")
        i = self.begin_slot(step, weights_hash or _arrays_hash(checked))
        try:
            for name, a in checked.items():
                meta = {"module": name, "reduction": "none", "kind": "array",
                        "output_shape": list(a.shape[1:]), **((info or {}).get(name, {}))}
                self.layer_array(name, tuple(a.shape[1:]), dtype, meta)[i] = a
        except BaseException:
            self.rollback_slot(step)
            raise
        self.end_slot(step)
        return True

    def check_same_slot(self, step: int, arrays: Mapping[str, np.ndarray], fix: str) -> None:
        """Refuse activations that differ from those of the complete slot of ``step``.

        ``arrays`` holds every layer (shape (n_samples, ...)); ``fix`` ends the message.
        """
        rd = RunReader(self.store, self.run_id)
        where = f"checkpoint {step} of run {self.run_id!r}"
        if set(rd.layers) != set(arrays):
            raise ProvenanceError(
                f"{where} is complete with layers {', '.join(rd.layers)}, not "
                f"{', '.join(sorted(arrays))}; nothing was changed ({fix})"
            )
        for name, arr in arrays.items():
            old = rd.read(name, step)
            new = np.asarray(arr).reshape(len(arr), -1)
            if old.shape != new.shape or not np.array_equal(old, new.astype(old.dtype)):
                what = (f"other values of layer {name!r}" if old.shape == new.shape else
                        f"layer {name!r} with shape {old.shape}, not {new.shape}")
                raise ProvenanceError(f"{where} already holds {what}; nothing was changed "
                                      f"({fix})")

    def _require_open(self, what: str) -> None:
        if not self._entered:
            raise ActstoreError(
                f"{what} needs an open writer: with store.writer(run, probe_set, steps) as w: "
                f"w.{what}(...)"
            )

    def capture(self, model: Any, step: int, **kwargs: Any) -> bool:
        """Record the activations of ``model`` on the run's probe set at ``step``.

        Keyword arguments are those of :func:`actstore.store.capture_slot` (``layers``,
        ``reduce``, ``dtype``, ``batch_size``, ``device``, ``weights_hash``, ``progress``).
        Returns ``False`` if the slot was already complete.
        """
        from actstore.store._capture import capture_slot

        self._require_open("capture")
        return capture_slot(self, model, step, **kwargs)

    # -- leaving -----------------------------------------------------------------------------
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._lease.lost is not None:
            # another writer holds the run now: nothing here is this writer's to clean up
            self._lease.release()
            self._entered = False
            if exc_type is None:
                raise self._lease.lose(self._lease.lost)
            return
        self._lease.stop_heartbeat()  # no renewal may put the lease back once it is removed
        removed = False
        try:
            status: Any = (
                np.asarray(self.group["status"][...]) if "status" in self.group else []
            )
            nothing_done = not any(s == L.STATUS_COMPLETE for s in status)
            if exc_type is not None and self._created and nothing_done:
                # a run made by this writer that never completed a slot leaves no trace
                del self.store.root[L.RUNS][self.run_id]
                removed = True
            else:
                if exc_type is not None and not self._created:
                    with contextlib.suppress(Exception):
                        self._drop_unused_slots()
                self._put_attrs({}, remove=(L.ATTR_WRITER,))
        finally:
            self._lease.release()
            self._entered = False
        if exc_type is None:
            self.store.refresh()
            self.store.consolidate()
        elif not removed:
            # complete slots written before the failure stay: plain xarray must see them too
            with contextlib.suppress(Exception):
                self.store.refresh()
                self.store.consolidate()

    def _drop_unused_slots(self) -> None:
        """After a failed write to a run that existed: remove the empty slots at the end that
        this writer added, so that the run's slot table is as it was. (A run this writer
        created keeps its planned slots, so that listings show what is missing.)"""
        planned = [int(s) for s in self._attrs.get(L.ATTR_STEPS, [])]
        status = np.asarray(self.group["status"][...])
        steps = np.asarray(self.group["checkpoint"][...])
        keep = min(len(planned), len(status))
        while (keep > self._n_slots_entered and status[keep - 1] == L.STATUS_EMPTY
               and steps[keep - 1] == -1):
            keep -= 1
        if keep == len(planned):
            return
        for name in ["checkpoint", "status", *self._attrs.get(L.ATTR_LAYERS, {})]:
            arr = self.group[name]
            arr.resize((keep, *arr.shape[1:]))
        self._put_attrs({L.ATTR_STEPS: planned[:keep]})


def _arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of activations written without weights (names, dtypes, shapes, bytes): the
    provenance a slot of precomputed activations records as its ``weights_hash``."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()

