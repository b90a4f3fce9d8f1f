"""Finding, opening and creating stores; removing what a failed command added to one."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import zarr
from zarr.errors import GroupNotFoundError

from actstore._errors import ActstoreError, StoreError
from actstore.store import _layout as L
from actstore.store._attrs import version
from actstore.store._lease import store_lock
from actstore.store._store import DamagedRunError, Store

__all__ = ["check_store_path", "create_store", "open_store", "store_exists", "undo_additions"]


def store_exists(url: str, storage_options: dict | None = None) -> bool:
    """Whether a Zarr group (an actstore store, or another) is at ``url``."""
    try:
        _open_root(url, "r", storage_options)
        return True
    except (GroupNotFoundError, FileNotFoundError, KeyError):
        return False


def _open_root(url: str, mode: str, storage_options: dict | None) -> Any:
    """``zarr.open_group``; errors of the storage itself (credentials, permissions, a server
    that does not answer) become one line."""
    try:
        return zarr.open_group(url, mode=mode, use_consolidated=False,  # type: ignore[arg-type]
                               storage_options=storage_options)
    except (GroupNotFoundError, FileNotFoundError, KeyError):
        raise
    except Exception as e:  # fsspec back ends raise their own types (botocore, aiohttp, ...)
        raise StoreError(
            f"cannot open {url}: {type(e).__name__}: {e}; check the path or URL, its "
            "credentials and permissions"
        ) from None


def check_store_path(url: str, create: bool = True) -> None:
    """Refuse a local path where no store can be, before anything is done: a regular file,
    a path below one, and (``create``) a directory of other files that is no Zarr group.

    A store, an empty directory and a path that does not exist yet pass; so do URLs.
    """
    url = str(url)
    if "://" in url and not url.startswith("file://"):
        return
    p = Path(url.removeprefix("file://"))
    if p.is_file():
        raise StoreError(
            f"{url} is a file, not an actstore store (a store is a directory); give a new path "
            "for the store, or the path of an existing store"
        )
    for parent in p.absolute().parents:
        if parent.is_file():
            raise StoreError(
                f"cannot make a store at {url}: {parent} is a file and the path lies below the "
                "file; give a path outside it"
            )
        if parent.is_dir():
            break
    if create and p.is_dir() and any(p.iterdir()) and not store_exists(str(p)):
        raise StoreError(
            f"{url} is a directory that holds other files, not an actstore store (no Zarr "
            "group there) - a folder of other files is not made a store; give a new path for "
            "the store, or the path of an existing store"
        )


def _as_url(url: Any) -> str:
    """A store path or URL as a str; ``file://`` URLs as plain paths (zarr's fsspec store does
    not create the folders of a ``file://`` store)."""
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def create_store(url: str, exist_ok: bool = True, storage_options: dict | None = None) -> Store:
    """Create an empty actstore store at a path or fsspec URL (``memory://``, ``s3://``).

    Parameters
    ----------
    url : str or path
        Where the store goes (a directory for local paths).
    exist_ok : bool
        With ``True`` (default) an existing actstore store is opened for appending instead.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint) for remote URLs.

    Returns
    -------
    Store
        The store, open read/write (``mode="a"``).

    Raises
    ------
    StoreError
        If the path holds something other than an actstore store (a file, a directory of
        other files), or (``exist_ok=False``) a store already.
    """
    url = _as_url(url)
    check_store_path(url)
    with store_lock(url, "create"):  # several writers may create one store at once
        if store_exists(url, storage_options):
            if not exist_ok:
                raise StoreError(f"{url} already exists; choose a new path or open it instead")
            return open_store(url, mode="a", storage_options=storage_options)
        # the root's attributes go in the same (atomic) write as the group itself
        root = zarr.open_group(
            url, mode="w-", zarr_format=3, storage_options=storage_options,
            attributes={
                L.ATTR_FORMAT: L.FORMAT_VERSION,
                L.ATTR_CREATED: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                L.ATTR_VERSION: version(),
            },
        )
        for name in (L.PROBE_SETS, L.RUNS, L.RESULTS):
            root.require_group(name)
        store = Store(url, root, mode="a", storage_options=storage_options)
        store.consolidate()
    return store


def open_store(url: str, mode: str = "r", storage_options: dict | None = None) -> Store:
    """Open an existing store.

    Parameters
    ----------
    url : str or path
        A local path or an fsspec URL (``memory://``, ``s3://...``).
    mode : {"r", "a"}
        ``"r"`` read-only (default), ``"a"`` read/write.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint) for remote URLs.

    Returns
    -------
    Store

    Raises
    ------
    ActstoreError
        If ``mode`` is neither ``"r"`` nor ``"a"``.
    StoreError
        If ``url`` holds no store, something that is not an actstore store, or a store of a
        newer format version than this actstore reads.
    """
    url = _as_url(url)
    if mode not in ("r", "a"):
        raise ActstoreError(f"mode must be 'r' or 'a', not {mode!r}")
    check_store_path(url, create=False)
    try:
        root = _open_root(url, "r" if mode == "r" else "r+", storage_options)
    except (GroupNotFoundError, FileNotFoundError, KeyError):
        raise StoreError(
            f"{url} is not an actstore store (no Zarr group there); create one with "
            "`actstore dump` / `actstore train`, or check the path"
        ) from None
    fmt = root.attrs.get(L.ATTR_FORMAT)
    if fmt is None:
        raise StoreError(
            f"{url} is a Zarr group but not an actstore store (no '{L.ATTR_FORMAT}' attribute)"
        )
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise StoreError(
            f"{url} has an invalid store format {fmt!r} (an integer >= 1 is expected); it was "
            "not written by actstore, or its root attributes were changed"
        )
    if fmt > L.FORMAT_VERSION:
        raise StoreError(
            f"{url} has store format {fmt}, newer than the {L.FORMAT_VERSION} this actstore "
            f"{version()} reads; upgrade actstore"
        )
    return Store(url, root, mode=mode, storage_options=storage_options)


def undo_additions(url: str, store: Store, created: bool, probe_set: str | None) -> None:
    """After a failed command: remove the store it created, or the probe set it added that no
    run uses, so that the store is left as it was.

    A store that holds runs is kept even if this command created it: their complete slots
    (written before the failure, or by other processes writing other runs) are never removed.
    """
    store.refresh()
    if created and not store.run_ids():
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    if probe_set is not None:
        try:
            used = {store.reader(r).attrs.get("probe_set") for r in store.run_ids()}
        except DamagedRunError:
            return  # a run that cannot be read may use the probe set: it stays
        if probe_set not in used:
            store.remove_probe_set(probe_set)  # rewrites the consolidated metadata
