"""An open store: its probe sets, runs and results, at the top of the hierarchy."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.errors import MetadataValidationError, UnknownCodecError

from actstore._errors import ActstoreError, ProvenanceError, StoreError, WriterConflictError
from actstore.store import _layout as L
from actstore.store._lease import store_lock
from actstore.store._probeset import ProbeSet, probe_set_from_arrays
from actstore.store._results import check_result_name

if TYPE_CHECKING:
    import xarray as xr

    from actstore.store._reader import RunReader
    from actstore.store._writer import RunWriter

__all__ = ["DamagedRunError", "Store", "first_line"]


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception (zarr's can span many lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class DamagedRunError(StoreError):
    """A run whose metadata or slot table cannot be read: the store is damaged there.

    ``reason`` says what cannot be read, without the run and the advice around it.
    """

    def __init__(self, url: str, run_id: str, what: str, cause: BaseException | str):
        self.run_id = run_id
        self.reason = f"{what} ({cause if isinstance(cause, str) else first_line(cause)})"
        super().__init__(
            f"run {run_id!r} in {url} is damaged: {self.reason}; run `actstore verify {url}` "
            "to see what is wrong and how to fix it, or select other runs"
        )


class Store:
    """An open actstore store. Create with :func:`create_store` or :func:`open_store`.

    Attributes
    ----------
    url : str
        The path or URL it was opened with.
    root : zarr.Group
        The root group.
    mode : {"r", "a"}
        Read-only or read/write.
    """

    def __init__(self, url: str, root: Any, mode: str, storage_options: dict | None = None):
        self.url = url
        self.root = root
        self.mode = mode
        self.storage_options = storage_options

    def __repr__(self) -> str:
        return f"Store({self.url!r}, mode={self.mode!r}, runs={len(self.run_ids())})"

    # -- groups ------------------------------------------------------------------------------
    def _group(self, name: str) -> Any:
        if name in self.root:
            return self.root[name]
        if self.mode == "r":
            raise StoreError(f"{self.url} has no /{name} group")
        return self.root.require_group(name)

    def refresh(self) -> None:
        """Re-read the hierarchy (other processes may have added runs)."""
        self.root = zarr.open_group(
            self.url, mode="r" if self.mode == "r" else "r+", use_consolidated=False,
            storage_options=self.storage_options,
        )

    def upgrade_format(self) -> None:
        """Mark a format 1 store as format 2 before this actstore writes to it: from then on,
        versions that read only format 1 (and would not keep the runs' checksums) refuse it."""
        fmt = self.root.attrs.get(L.ATTR_FORMAT)
        if self.mode == "r" or not isinstance(fmt, int) or fmt >= L.FORMAT_VERSION:
            return
        with store_lock(self.url, "consolidate"):
            root = zarr.open_group(self.root.store, mode="r+", use_consolidated=False)
            if root.attrs.get(L.ATTR_FORMAT) == fmt:
                root.attrs.update({L.ATTR_FORMAT: L.FORMAT_VERSION})
        self.refresh()

    def check_run_attrs(self, run_id: str, attrs: dict[str, Any]) -> None:
        """Refuse a run whose attributes (slot table, layer table, provenance) do not match
        their recorded checksum: its ``zarr.json`` was changed outside actstore.

        Runs written in format 1 carry no checksum and are taken as they are.
        """
        recorded = attrs.get(L.ATTR_CHECKSUM)
        if recorded is None:
            return
        now = L.attrs_checksum(attrs)
        if now != recorded:
            raise DamagedRunError(
                self.url, run_id, f"its attributes ({L.RUNS}/{run_id}/zarr.json: slot table, "
                "layer table, provenance) do not match their checksum, so they were changed "
                "outside actstore",
                f"sha256 {str(recorded)[:12]} recorded, {now[:12]} now")

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ActstoreError(f"{self.url} was opened read-only; open it with mode='a'")

    def consolidate(self) -> None:
        """Write consolidated metadata so that plain xarray opens the store in one read.

        Where the metadata of some member does not parse (a damaged run), nothing can be
        consolidated: the consolidated metadata is removed instead, so that plain xarray lists
        the hierarchy itself rather than reading an outdated copy of it.
        """
        if self.mode == "r":
            return
        # one writer at a time rewrites the root metadata
        with store_lock(self.url, "consolidate"), warnings.catch_warnings():
            from zarr.storage import LocalStore

            if isinstance(self.root.store, LocalStore):
                _remove_stale_partial_files(Path(self.root.store.root) / self.root.path)
            # Zarr v3 calls consolidated metadata an extension; xarray reads it by default.
            warnings.simplefilter("ignore")
            try:
                zarr.consolidate_metadata(self.root.store)
            except (ValueError, TypeError, LookupError):
                # the root is opened without its consolidated metadata: rewriting its
                # attributes writes its zarr.json without them
                root = zarr.open_group(self.root.store, mode="r+", use_consolidated=False)
                root.attrs.put(dict(root.attrs))

    # -- probe sets --------------------------------------------------------------------------
    def probe_set_names(self) -> list[str]:
        """Names of the probe sets in the store."""
        return sorted(self._group(L.PROBE_SETS).group_keys()) if L.PROBE_SETS in self.root else []

    def add_probe_set(self, ps: ProbeSet) -> bool:
        """Write ``ps`` under ``/probe_sets/<name>``.

        Returns ``True`` if it was written, ``False`` if an identical one was already there.

        Raises
        ------
        ActstoreError
            If ``ps`` is not a :class:`ProbeSet`, or the store is open read-only.
        ProvenanceError
            If a different probe set of the same name exists.
        """
        if not isinstance(ps, ProbeSet):
            raise ActstoreError(
                f"add_probe_set takes a ProbeSet, not {type(ps).__name__}; make one with "
                "actstore.ProbeSet(name, labels={...}, inputs=...)"
            )
        self._check_writable()
        # another process may be adding the same probe set right now: one at a time
        with store_lock(self.url, f"{L.PROBE_SETS}/{ps.name}"):
            added = self._add_probe_set(ps)
        if added:  # plain xarray reads the consolidated metadata: it must list the new set
            self.refresh()
            self.consolidate()
        return added

    def _add_probe_set(self, ps: ProbeSet) -> bool:
        parent = self._group(L.PROBE_SETS)
        if ps.name in parent:
            old = parent[ps.name].attrs.get("actstore.hash")
            if old == ps.hash:
                return False
            if old is None:  # an interrupted write: the hash is written last
                del parent[ps.name]
                return self._add_probe_set(ps)
            raise ProvenanceError(
                f"probe set {ps.name!r} already exists in {self.url} with other contents "
                f"(hash {str(old)[:12]} vs {ps.hash[:12]}); give the new one another name (a "
                "probe set read from an .npz file is named after the file: rename the file)"
            )
        self.upgrade_format()
        g = parent.create_group(ps.name, overwrite=True)
        assert ps.sample is not None
        for k, v in [("sample", ps.sample), *ps.labels.items()]:
            g.create_array(k, data=L.to_zarr_data(v), dimension_names=("sample",),
                           compressors=L.data_codecs())
        for key, arr in ps.input_arrays.items():
            # one array: input_dim1, ...; named ones: input_ids_dim1, ...
            stem = key.removeprefix("inputs.") + "_" if ps.is_mapping else "input_"
            dims = ("sample", *[f"{stem}dim{i}" for i in range(1, arr.ndim)])
            g.create_array(
                key, data=arr, dimension_names=dims, compressors=L.data_codecs(),
                chunks=(min(ps.n, max(1, 2**22 // max(1, arr[0].nbytes))), *arr.shape[1:]),
            )
        # written last: a probe set without its hash is incomplete and gets rewritten
        g.attrs.update(
            {"actstore.features": ps.features, "actstore.attrs": ps.attrs,
             "actstore.n": ps.n, **({"actstore.inputs": list(ps.input_names)}
                                    if ps.is_mapping else {}),
             "actstore.hash": ps.hash}
        )
        return True

    def probe_set(self, name: str, inputs: bool = True) -> ProbeSet:
        """Read a probe set (``inputs=False`` skips loading the stimuli).

        Raises
        ------
        ActstoreError
            If the store has no probe set ``name`` (the message lists them).
        """
        names = self.probe_set_names()
        if name not in names:
            raise ActstoreError(
                f"no probe set {name!r} in {self.url}; available: {', '.join(names) or 'none'}"
            )
        from actstore.store._verify import probe_set_arrays

        g = self.root[L.PROBE_SETS][name]
        keys = [k for k in probe_set_arrays(self, name)
                if inputs or not (k == "inputs" or k.startswith("inputs."))]
        return probe_set_from_arrays(name, {k: self.probe_set_array(name, k) for k in keys},
                                     dict(g.attrs.get("actstore.attrs", {})))

    def probe_set_array(self, name: str, array: str) -> np.ndarray:
        """One array of a probe set; a corrupt one is one :class:`StoreError`."""
        try:
            return L.from_zarr_data(self.root[L.PROBE_SETS][name][array][...])
        except Exception as e:
            raise StoreError(
                f"corrupt data in probe set {name!r}, array {array!r} ({L.PROBE_SETS}/{name}/"
                f"{array}): {first_line(e)}; run `actstore verify {self.url}`"
            ) from None

    def remove_probe_set(self, name: str) -> None:
        """Delete a probe set that no run refers to (and rewrite the consolidated metadata)."""
        self._check_writable()
        users = [r for r in self.run_ids() if self.reader(r).attrs.get("probe_set") == name]
        if users:
            raise ActstoreError(f"probe set {name!r} is used by runs {users}; remove them first")
        with store_lock(self.url, f"{L.PROBE_SETS}/{name}"):
            del self.root[L.PROBE_SETS][name]
        self.refresh()
        self.consolidate()

    # -- runs --------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        """Ids of the runs in the store (sorted), damaged ones included.

        Zarr's own listing parses the metadata of every run and stops at the first that does
        not parse; then the ids are the folders under ``runs/`` that hold a ``zarr.json``, so
        that a damaged run is listed (and :meth:`reader` says what is wrong with it).
        """
        if L.RUNS not in self.root:
            return []
        try:
            g = self.root[L.RUNS]
            # a run's zarr.json overwritten with an array's metadata makes the run an array:
            # it is listed too (as damaged), not left out
            return sorted({*g.group_keys(), *g.array_keys()})
        except Exception:
            return self._run_folders()

    def _run_folders(self) -> list[str]:
        from zarr.core.sync import sync

        st = self.root.store
        prefix = f"{self.root.path}/{L.RUNS}".lstrip("/")

        async def names() -> list[str]:
            out = []
            async for name in st.list_dir(prefix):
                if name == "zarr.json" or name.startswith(".") or name.endswith(".partial"):
                    continue
                if await st.exists(f"{prefix}/{name}/zarr.json"):
                    out.append(name)
            return out

        return sorted(sync(names()))

    def reader(self, run_id: str) -> RunReader:
        """A :class:`RunReader` of one run.

        Raises
        ------
        ActstoreError
            If the store has no run ``run_id`` (the message lists the runs).
        DamagedRunError
            If the run's metadata (``runs/<run>/zarr.json``) does not parse.
        """
        from actstore.store._reader import RunReader

        ids = self.run_ids()
        if run_id not in ids:
            raise ActstoreError(
                f"no run {run_id!r} in {self.url}; runs: {', '.join(ids) or 'none'}"
            )
        try:
            if not isinstance(self.root[L.RUNS][run_id], zarr.Group):
                raise TypeError(f"{L.RUNS}/{run_id} is a Zarr array, not a group")
            rd = RunReader(self, run_id)
        except (ValueError, TypeError, LookupError) as e:
            raise DamagedRunError(
                self.url, run_id, f"its metadata {L.RUNS}/{run_id}/zarr.json is unreadable", e
            ) from None
        self.check_run_attrs(run_id, rd._all_attrs)
        return rd

    def writer(
        self,
        run_id: str,
        probe_set: str,
        steps: list[int] | np.ndarray,
        attrs: dict[str, Any] | None = None,
        codec: str = L.DEFAULT_CODEC,
    ) -> RunWriter:
        """Open a run for writing (a context manager holding the run's writer lease).

        Parameters
        ----------
        run_id : str
            Run name (letters, digits, ``_``, ``-``, ``.``).
        probe_set : str
            Name of a probe set already in the store.
        steps : list of int
            Training steps of the checkpoint slots this writer may fill. Steps the run does not
            have yet are added as new slots.
        attrs : dict
            ``model``, ``task``, ``seed``, ``dataset``, ``config`` (JSON-serialisable). An
            existing run must have the same ones (else :class:`ProvenanceError`).
        codec : str
            Compression of activation arrays (see :data:`actstore.store.CODECS`).

        Returns
        -------
        RunWriter
            Use it in a ``with`` block; the probe set, the lease and the run's provenance are
            checked when the block is entered.

        Raises
        ------
        ActstoreError
            A run id that is no usable name, steps that are no list of whole numbers >= 0, an
            unknown codec, or a store open read-only.
        """
        from actstore.store._writer import RunWriter

        self._check_writable()
        if isinstance(steps, (str, bytes)) or not isinstance(steps, (list, tuple, range,
                                                                      np.ndarray)):
            raise ActstoreError(
                f"steps must be a list of training steps (whole numbers >= 0), not "
                f"{type(steps).__name__} {steps!r}; e.g. steps=[0, 100, 1000]"
            )
        if attrs is not None and not isinstance(attrs, dict):
            raise ActstoreError(
                f"attrs must be a dict of run attributes, not {type(attrs).__name__}; e.g. "
                "attrs={'model': 'mlp', 'seed': 0}"
            )
        return RunWriter(self, run_id, probe_set, list(steps), dict(attrs or {}), codec)

    def remove_run(self, run_id: str) -> None:
        """Delete a run and all its activations (and rewrite the consolidated metadata).

        The run's writer lease is taken for the removal, as a writer takes it: a run whose
        writer is alive is refused; a lease left by a killed writer does not block it.

        Raises
        ------
        ActstoreError
            If the store has no run ``run_id`` or is open read-only.
        WriterConflictError
            If a live writer holds the run.
        """
        self._check_writable()
        self.reader(run_id)
        with self.hold_run(run_id, "remove run", "remove the run"):
            del self.root[L.RUNS][run_id]
        self.refresh()
        self.consolidate()

    @contextlib.contextmanager
    def hold_run(self, run_id: str, action: str, then: str) -> Iterator[None]:
        """Hold a run's writer lease, as a writer takes it, without opening the run for
        writing: a run whose writer is alive is refused (``cannot <action> 'r' from ...: a
        writer holds it ...; wait for that writer to finish, then <then>``); a lease left by a
        killed writer does not block it."""
        from actstore.store._lease import Lease, describe_holder

        lease = Lease(self.url, run_id)
        try:
            lease.acquire_local(None)  # local and memory:// stores: the writer's own lock
            # object stores: the run's lease attribute, read afresh
            holder = self.root[L.RUNS][run_id].attrs.get(L.ATTR_WRITER)
            lease.check_attr(holder if isinstance(holder, dict) else None)
        except WriterConflictError:
            lease.release()
            holder = self.root[L.RUNS][run_id].attrs.get(L.ATTR_WRITER)
            raise WriterConflictError(
                f"cannot {action} {run_id!r} from {self.url}: a writer holds it "
                f"({describe_holder(holder if isinstance(holder, dict) else None)}); wait "
                f"for that writer to finish, then {then}"
            ) from None
        try:
            yield
        finally:
            lease.release()

    # -- results -----------------------------------------------------------------------------
    def result_names(self, analysis: str | None = None) -> list[str]:
        """``analysis/name`` of every result (or names of one analysis)."""
        if L.RESULTS not in self.root:
            return []
        res = self.root[L.RESULTS]
        kinds = [analysis] if analysis else sorted(res.group_keys())
        out = []
        for a in kinds:
            if a in res:
                names = [n for n in sorted(res[a].group_keys()) if not n.startswith(".")]
                out += [f"{a}/{n}" if not analysis else n for n in names]
        return out

    def staged_result_names(self) -> list[str]:
        """``analysis/name`` of every result whose ``--overwrite`` was interrupted.

        The replacement is computed under the hidden name ``.<name>.overwrite`` and published
        when complete; a staged name that remains means the replacement is pending.
        """
        if L.RESULTS not in self.root:
            return []
        res = self.root[L.RESULTS]
        out = []
        for a in sorted(res.group_keys()):
            for n in sorted(res[a].group_keys()):
                if n.startswith(".") and n.endswith(".overwrite"):
                    out.append(f"{a}/{n[1:-len('.overwrite')]}")
        return out

    def write_result(self, analysis: str, name: str, ds: Any, staging: bool = False) -> None:
        """Write an xarray Dataset to ``/results/<analysis>/<name>`` (replacing it).

        ``staging=True`` allows a name starting with ``.``: a result being computed that is
        not listed by :meth:`result_names` until it replaces the published one.

        Raises
        ------
        ActstoreError
            If ``ds`` is not an :class:`xarray.Dataset`, a name is no single path component,
            or the store is open read-only.
        """
        import xarray as xr

        if not isinstance(ds, xr.Dataset):
            hint = " (a DataArray: use da.to_dataset(name=...))" if isinstance(
                ds, xr.DataArray) else ""
            raise ActstoreError(
                f"write_result takes an xarray.Dataset, not {type(ds).__name__}{hint}"
            )
        self._check_writable()
        check_result_name(analysis)
        check_result_name(name[1:] if staging and name.startswith(".") else name)
        self._group(L.RESULTS).require_group(analysis)
        ds = ds.copy()
        for k in list(ds.variables):
            if ds[k].dtype.kind == "U":
                ds[k] = ds[k].astype(object)  # variable-length strings (a specified v3 type)
        ds.to_zarr(
            self.root.store, group=f"{L.RESULTS}/{analysis}/{name}", mode="w",
            zarr_format=3, consolidated=False,
        )
        self.refresh()
        self.consolidate()

    def has_result(self, analysis: str, name: str | None = None) -> bool:
        """Whether ``/results/<analysis>/<name>`` (staging names included), or with no name
        the group ``/results/<analysis>``, exists."""
        res = self.root[L.RESULTS] if L.RESULTS in self.root else None
        if res is None or analysis not in res:
            return False
        return name is None or name in res[analysis]

    def remove_result(self, analysis: str, name: str, prune: bool = False) -> None:
        """Delete ``/results/<analysis>/<name>`` if it exists (``prune``: and the analysis
        group, if that leaves it empty)."""
        self._check_writable()
        if self.has_result(analysis, name):
            group = self.root[L.RESULTS][analysis]
            del group[name]
            if prune and not list(group.keys()):
                del self.root[L.RESULTS][analysis]
            self.refresh()
            self.consolidate()

    def result_attrs(self, analysis: str, name: str) -> dict[str, Any]:
        """The attributes of ``/results/<analysis>/<name>`` (without reading its arrays)."""
        if not self.has_result(analysis, name):
            raise ActstoreError(f"no result {analysis}/{name} in {self.url}")
        return dict(self.root[L.RESULTS][analysis][name].attrs)

    def read_result(self, analysis: str, name: str) -> xr.Dataset:
        """Read ``/results/<analysis>/<name>`` as an xarray Dataset (loaded into memory).

        Its dims and variables depend on the analysis (docs/FORMAT.md, "Results").

        Raises
        ------
        ActstoreError
            If there is no such result (the message lists the results).
        """
        import xarray as xr

        if not self.has_result(analysis, name):
            raise ActstoreError(
                f"no result {analysis}/{name} in {self.url}; available: "
                f"{', '.join(self.result_names()) or 'none'}"
            )
        try:
            with xr.open_zarr(
                self.root.store, group=f"{L.RESULTS}/{analysis}/{name}", consolidated=False,
                zarr_format=3, chunks=None,
            ) as ds:
                # read here, whatever Dask scheduler the caller has configured
                return ds.load()
        except (UnknownCodecError, MetadataValidationError) as e:
            raise StoreError(
                f"results/{analysis}/{name} in {self.url} cannot be read ({first_line(e)}): "
                "it was written by another program or version; compute it again with "
                f"--overwrite, or remove it (actstore.open_store({self.url!r}, mode='a')"
                f".remove_result({analysis!r}, {name!r}))"
            ) from None


def _remove_stale_partial_files(root: Path, wait: float = 0.5) -> None:
    """Remove the ``zarr.*.partial`` files a killed writer left at the root of a store or of
    its top-level groups (listings would take them for members).

    Zarr writes every metadata object to such a file and renames it into place; a writer that
    creates a group also tries to write each parent's metadata "if not present" that way, so
    a partial file of a live writer exists for a moment. Only files still there after
    ``wait`` seconds are removed.
    """
    dirs = [root, *(root / g for g in (L.PROBE_SETS, L.RUNS, L.RESULTS))]
    seen = [p for d in dirs for p in d.glob("zarr.*.partial")]
    if not seen:
        return
    import time

    time.sleep(wait)
    for p in seen:
        p.unlink(missing_ok=True)

