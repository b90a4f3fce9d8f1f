"""Reading a run: its layers, checkpoint slots, labels and activations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from actstore._args import whole_number
from actstore._errors import ActstoreError, StoreError
from actstore.store import _layout as L
from actstore.store._attrs import as_step

__all__ = ["RunReader"]


class RunReader:
    """Read access to one run: layers, checkpoint slots, labels, activations.

    Make one with :meth:`actstore.Store.reader`. Attributes and the layer table are read once,
    when it is made; activations are read by :meth:`read` and :meth:`iter_blocks`.
    """

    def __init__(self, store: Any, run_id: str):
        self.store = store
        self.run_id = run_id
        self.group = store.root[L.RUNS][run_id]
        self._all_attrs = dict(self.group.attrs)

    def __repr__(self) -> str:
        # from the attributes read when the reader was made: no I/O
        a = self._all_attrs
        who = ", ".join(f"{k}={a[k]!r}" for k in ("model", "task", "seed") if a.get(k) is not None)
        return (f"RunReader({self.run_id!r}{', ' + who if who else ''}, "
                f"layers={len(self.layer_table)}, slots={len(self.planned_steps)}, "
                f"probe_set={a.get('probe_set')!r})")

    @property
    def attrs(self) -> dict[str, Any]:
        """Run attributes (model, task, seed, dataset, config, probe_set, metrics...)."""
        return {k: v for k, v in self._all_attrs.items() if not k.startswith("actstore.")}

    @property
    def layer_table(self) -> dict[str, dict[str, Any]]:
        """``name -> {module, kind, output_shape, reduction, units, dtype}``."""
        return dict(self._all_attrs.get(L.ATTR_LAYERS, {}))

    @property
    def layers(self) -> list[str]:
        """Recorded layer names, in forward order."""
        return list(self.layer_table)

    @property
    def planned_steps(self) -> list[int]:
        """Steps of all slots, written or not."""
        return [int(s) for s in self._all_attrs.get(L.ATTR_STEPS, [])]

    def _slot_values(self, name: str, fill: int, dtype: Any) -> np.ndarray:
        """A per-slot array fitted to the planned slots.

        Adding slots resizes the slot arrays one after another and records the new steps last;
        a writer killed in between leaves arrays longer than the slot table (or, for the run's
        first arrays, missing). The slot table is the truth: extra entries were never slots.
        """
        n = len(self.planned_steps)
        if not self._all_attrs.get(L.ATTR_LAYOUT_DONE):  # creation interrupted: nothing written
            return np.full(n, fill, dtype=dtype)
        try:
            a = np.asarray(self.group[name][...], dtype=dtype)[:n]
        except Exception as e:
            from actstore.store._store import DamagedRunError

            raise DamagedRunError(self.store.url, self.run_id, f"its slot table "
                                  f"({L.RUNS}/{self.run_id}/{name}) is unreadable", e) from None
        if a.size < n:
            a = np.concatenate([a, np.full(n - a.size, fill, dtype=dtype)])
        return a

    @property
    def steps(self) -> np.ndarray:
        """Step of each slot; ``-1`` marks a slot not yet written."""
        return self._slot_values("checkpoint", -1, np.int64)

    @property
    def status(self) -> np.ndarray:
        """0 empty, 1 writing (or interrupted), 2 complete, per slot."""
        return self._slot_values("status", L.STATUS_EMPTY, np.uint8)

    @property
    def complete(self) -> np.ndarray:
        """Boolean per slot."""
        return self.status == L.STATUS_COMPLETE

    @property
    def complete_steps(self) -> list[int]:
        """Steps whose slots are complete, in slot order."""
        return [int(s) for s, c in zip(self.steps, self.complete, strict=True) if c]

    def _copy(self, name: str) -> np.ndarray:
        """The run's copy of a probe-set array; a corrupt one is one :class:`StoreError`."""
        try:
            return L.from_zarr_data(self.group[name][...])
        except Exception as e:
            from actstore.store._store import first_line

            raise StoreError(
                f"corrupt data in run {self.run_id!r}, array {name!r} ({L.RUNS}/{self.run_id}/"
                f"{name}): {first_line(e)}; run `actstore verify {self.store.url}`"
            ) from None

    @property
    def sample(self) -> np.ndarray:
        """Sample ids (copied from the probe set)."""
        return self._copy("sample")

    @property
    def features(self) -> list[str]:
        """Feature names of the run's probe set."""
        return list(self._all_attrs.get("actstore.features", []))

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """Feature labels (copied from the probe set), one array of shape (n,) each."""
        return {f: self._copy(f) for f in self.features}

    def _layer(self, layer: str) -> Any:
        if not isinstance(layer, str) or layer not in self.layer_table:
            raise ActstoreError(
                f"run {self.run_id!r} has no layer {layer!r}; layers: "
                f"{', '.join(self.layers) or 'none (nothing captured yet)'}"
            )
        try:
            return self.group[layer]
        except (ValueError, KeyError, TypeError) as e:  # its zarr.json does not parse
            # (TypeError: a field of another name), or is missing
            from actstore.store._store import DamagedRunError

            raise DamagedRunError(self.store.url, self.run_id, f"the metadata of layer "
                                  f"{layer!r} ({L.RUNS}/{self.run_id}/{layer}/zarr.json) is "
                                  "unreadable", e) from None

    def array(self, layer: str) -> Any:
        """The zarr array of a layer, shape (checkpoints, samples, *unit_shape).

        Raises
        ------
        ActstoreError
            If the run has no layer ``layer`` (the message lists its layers).
        """
        return self._layer(layer)

    def units(self, layer: str) -> int:
        """Number of units (product of the unit shape) of a layer."""
        return int(np.prod(self._layer(layer).shape[2:]))

    def slot(self, step: int) -> int:
        """Slot index of a written step.

        Raises
        ------
        ActstoreError
            If ``step`` is no whole number, or the run has no checkpoint at that step.
        """
        step = as_step(step)
        idx = np.flatnonzero(self.steps == step)
        if len(idx) == 0:
            raise ActstoreError(
                f"run {self.run_id!r} has no checkpoint at step {step}; written steps: "
                f"{[int(s) for s in self.steps if s >= 0]}"
            )
        return int(idx[0])

    def _complete_slot(self, step: int) -> int:
        i = self.slot(step)
        if self.status[i] != L.STATUS_COMPLETE:
            raise StoreError(
                f"checkpoint {step} of run {self.run_id!r} is incomplete (an interrupted "
                "write); re-run the dump or training to finish it"
            )
        return i

    def read(self, layer: str, step: int) -> np.ndarray:
        """Activations of one (layer, checkpoint), read into memory.

        Parameters
        ----------
        layer : str
            A name of :attr:`layers`.
        step : int
            A training step of :attr:`complete_steps` (not a slot index).

        Returns
        -------
        numpy.ndarray of shape (n_samples, units)
            In the stored dtype (float32 or float16); unit dims of conv layers are flattened.

        Raises
        ------
        ActstoreError
            An unknown layer or step.
        StoreError
            An incomplete checkpoint, or a corrupt chunk.
        """
        arr = self._layer(layer)
        i = self._complete_slot(step)
        try:
            data = np.asarray(arr[i])
        except Exception as e:  # checksum or codec failure
            raise StoreError(
                f"corrupt data in run {self.run_id!r}, layer {layer!r}, checkpoint {step}: {e}; "
                "run `actstore verify` on the store"
            ) from None
        return data.reshape(data.shape[0], -1)

    def iter_blocks(
        self, layer: str, step: int, block: int | None = None
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Stream one (layer, checkpoint) along samples in chunk-aligned blocks.

        Parameters
        ----------
        layer : str
            A name of :attr:`layers`.
        step : int
            A training step of :attr:`complete_steps`.
        block : int, optional
            Samples per block (default: the array's chunk of samples).

        Yields
        ------
        (start, stop, block) : (int, int, numpy.ndarray of shape (stop - start, units))

        Raises
        ------
        ActstoreError
            An unknown layer or step, or a block size that is no whole number >= 1.
        StoreError
            An incomplete checkpoint, or a corrupt chunk.
        """
        if block is not None:
            block = whole_number(block, "block (samples per block)", minimum=1)
        arr = self._layer(layer)
        i = self._complete_slot(step)
        n = arr.shape[1]
        step_rows = block or arr.chunks[1]
        for start in range(0, n, step_rows):
            stop = min(n, start + step_rows)
            try:
                data = np.asarray(arr[i, start:stop])
            except Exception as e:
                raise StoreError(
                    f"corrupt data in run {self.run_id!r}, layer {layer!r}, checkpoint {step}, "
                    f"samples {start}:{stop}: {e}; run `actstore verify` on the store"
                ) from None
            yield start, stop, data.reshape(stop - start, -1)

