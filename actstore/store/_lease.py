"""One writer per run: a lease that a second process cannot take while the first is alive.

Local stores use an ``flock`` on a lock file in the system's temporary directory (released by
the kernel even when the holder is killed with SIGKILL). ``memory://`` stores live in one
process and use an in-process registry. Other URLs (``s3://``...) use a lease attribute on the
run group that the holder renews every few seconds; a lease that is not renewed expires.
In every case the holder is also recorded in the run's ``actstore.writer`` attribute, so that a
refused writer can say who holds the run, and listings can tell a live writer from one that was
killed (:func:`holder_state`).

On object stores a lease can be lost: a writer paused (or cut off) for longer than the lease
lasts finds another writer holding the run when it resumes. Every object a writer writes there
goes through a :class:`FencedStore`: the run's metadata (which holds the lease) is written only
if it is still the version this writer wrote last (S3 ``If-Match``), and every other write and
delete is preceded and followed by a check that the lease is still this writer's, by the local
clock (with a margin well below the lease's lifetime) and on the server (the holder id and
generation recorded in the run's metadata). A writer that fails a check raises
:class:`~actstore._errors.LeaseLostError` and writes nothing more.

Locks are keyed by the store, not by how its path is spelt (:func:`store_key`): a symlink, a
relative path or a trailing slash reaches the same lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zarr.storage import WrapperStore

from actstore._errors import LeaseLostError, WriterConflictError

__all__ = [
    "FencedStore", "Lease", "describe_holder", "holder_state", "is_local", "settle_delay",
    "store_key", "store_lock",
]

#: seconds an object-store lease lasts unless renewed (renewed every TTL/4 seconds)
TTL_SECONDS = 60.0
#: a writer stops writing once its last renewal is older than TTL - MARGIN (local clock)
MARGIN_SECONDS = 20.0
#: run attribute: generation of the latest lease taken on the run (object stores), kept after
#: the writer lets go so that generations only grow
ATTR_GENERATION = "actstore.generation"
_ATTR_WRITER = "actstore.writer"


class Clock:
    """Where leases read the time: ``time()`` for expiry stamps other machines compare,
    ``monotonic()`` for this process's own deadlines."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


#: the clock of new leases (tests replace it to pause a writer without waiting)
CLOCK = Clock()
_HELD_IN_PROCESS: set[str] = set()
_REGISTRY_LOCK = threading.Lock()
_MEMORY_LOCKS: dict[str, threading.Lock] = {}


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return os.path.realpath(url[len("file://"):] if url.startswith("file://") else url)


def store_key(url: str) -> str:
    """One name per store, however its path or URL is spelt.

    Locks are keyed by it, so that a store opened by another spelling (a symlink, a relative
    path, a trailing slash, ``memory://h/s.zarr`` vs ``memory:///h/s.zarr/``) takes the same
    lock. Local paths and ``file://`` URLs: the real path (symlinks resolved). Other fsspec
    URLs: the protocol and the path as fsspec normalises it (without trailing slashes).
    """
    url = str(url)
    if is_local(url):
        return _local_path(url)
    if "::" in url:  # chained URLs (simplecache::s3://...): left as they are
        return url.rstrip("/")
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    try:  # a class method: no file system is made (no credentials needed)
        path = str(fsspec.get_filesystem_class(protocol)._strip_protocol(url))
    except Exception:  # an unknown protocol or one whose package is missing
        path = fsspec.core.split_protocol(url)[1]
    path = path.rstrip("/") or "/"
    return path if "://" in path else f"{protocol}://{path}"  # http keeps its protocol


def _key(url: str, run_id: str) -> str:
    return f"{store_key(url)}::{run_id}"


def _needs_attr_lease(url: str) -> bool:
    return not (is_local(url) or url.startswith("memory://"))


#: seconds a process may seem to have started after its lease was stamped (clock steps)
_START_SLACK = 10.0


def _process_running(pid: int, since: str | None) -> bool:
    """Whether process ``pid`` of this machine runs and is the one that stamped a lease at
    ``since`` (a process that started later got the number of a dead one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    except OSError:
        return True
    started = _process_start(pid)
    if started is None or not since:
        return True
    try:
        stamped = _dt.datetime.fromisoformat(since).timestamp()
    except ValueError:
        return True
    return started <= stamped + _START_SLACK


def _process_start(pid: int) -> float | None:
    """Start time of a process (seconds since the epoch) where ``/proc`` tells it (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holder_state(url: str, run_id: str, holder: dict[str, Any] | None,
                 now: float | None = None) -> str:
    """Whether the writer recorded in a run's ``actstore.writer`` attribute still holds it.

    Returns ``"none"`` (no writer recorded), ``"live"``, ``"stale"`` (the writer is gone:
    killed, or its lease expired; the run was left as an interrupted write) or ``"unknown"``
    (a local store written from another machine, whose processes cannot be seen from here).

    Object stores decide by the lease's expiry, which a live writer renews every few seconds
    (the same test that lets a new writer take the run). ``memory://`` stores look up the
    in-process registry. Local stores hold an ``flock`` that dies with its process but records
    no expiry: the writer's process is looked up instead, when it ran on this machine.
    ``now`` is the time to compare an expiry with (default: :data:`CLOCK`).
    """
    if not holder:
        return "none"
    if url.startswith("memory://"):
        with _REGISTRY_LOCK:
            return "live" if _key(url, run_id) in _HELD_IN_PROCESS else "stale"
    if _needs_attr_lease(url):
        try:
            now = CLOCK.time() if now is None else now
            return "live" if float(holder.get("expires", 0)) > now else "stale"
        except (TypeError, ValueError):
            return "stale"
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return "unknown"
    return "live" if _process_running(pid, holder.get("since")) else "stale"


def describe_holder(info: dict[str, Any] | None) -> str:
    """``pid N on HOST since …`` of a recorded writer (``another process`` if none is)."""
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


class Lease:
    """Exclusive right to write one run of one store."""

    def __init__(self, url: str, run_id: str, clock: Clock | None = None):
        self.url = url
        self.run_id = run_id
        self.key = _key(url, run_id)
        self.clock = clock or CLOCK
        self.info: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "expires": 0.0,
        }
        #: set once the run's metadata holds this lease (object stores)
        self.acquired = False
        #: ETag of the run's metadata as this writer read or wrote it last (S3)
        self.etag: str | None = None
        #: why this writer lost the lease (None while it holds it)
        self.lost: str | None = None
        self._stamped: dict[float, float] = {}  # expiry of a stamp -> local clock when made
        self._confirmed = 0.0  # local clock of the latest stamp known to be on the server
        self._fd: int | None = None
        self._in_process = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquisition -------------------------------------------------------------------------
    def _conflict(self, holder: dict[str, Any] | None) -> WriterConflictError:
        return WriterConflictError(
            f"run {self.run_id!r} in {self.url} is being written by {describe_holder(holder)}; "
            "wait for that writer to finish, or write to another run id"
        )

    def acquire_local(self, current: dict[str, Any] | None) -> None:
        """Take the lock before anything is written (local paths and memory:// only)."""
        if is_local(self.url):
            name = hashlib.sha256(self.key.encode()).hexdigest()[:32] + ".lock"
            fd = _open_lock_file(name)
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._conflict(current) from None
            self._fd = fd
        elif self.url.startswith("memory://"):
            with _REGISTRY_LOCK:
                if self.key in _HELD_IN_PROCESS:
                    raise self._conflict(current)
                _HELD_IN_PROCESS.add(self.key)
            self._in_process = True

    @property
    def needs_attr_lease(self) -> bool:
        """True where the run attribute is the only lock (object stores)."""
        return _needs_attr_lease(self.url)

    def check_attr(self, current: dict[str, Any] | None) -> None:
        """Refuse if a live lease of another writer is recorded on the run."""
        if not current or current.get("id") == self.info["id"]:
            return
        now = self.clock.time()
        if self.needs_attr_lease and holder_state(self.url, self.run_id, current, now) == "live":
            raise self._conflict(current)

    def stamp(self) -> dict[str, Any]:
        """The attribute value to record now (renewed expiry)."""
        self.info["expires"] = self.clock.time() + TTL_SECONDS
        self._stamped = {**dict(list(self._stamped.items())[-3:]),
                         self.info["expires"]: self.clock.monotonic()}
        return dict(self.info)

    def confirm(self, written: bytes) -> None:
        """Note that ``written`` (the run's metadata) is on the server: the stamp it holds is
        renewed from when it was made (not from when some later stamp was made)."""
        import json

        try:
            holder: dict[str, Any] = json.loads(written).get("attributes", {}).get(
                _ATTR_WRITER) or {}
            ours = holder.get("id") == self.info["id"]
            made = self._stamped.get(float(holder["expires"])) if ours else None
        except (ValueError, TypeError, KeyError, AttributeError):
            made = None
        if made is not None:
            self._confirmed = max(self._confirmed, made)
        self.acquired = True

    def generation_attrs(self) -> dict[str, Any]:
        """Run attributes to write with the first stamp: the lease's generation (object
        stores), which stays after the writer lets go."""
        gen = self.info.get("generation")
        return {ATTR_GENERATION: gen} if gen is not None else {}

    def fence(self, group: Any) -> Any:
        """``group`` (a run group) opened again so that every write to it is fenced by this
        lease (object stores; other stores hold an exclusive lock and get ``group`` back).

        The run's metadata is read afresh: the lease is taken over the version read here
        (:class:`FencedStore`), and its generation is one more than the run's last one.
        """
        if not self.needs_attr_lease:
            return group
        import zarr

        store = FencedStore(group.store, self, f"{group.path}/zarr.json")
        fenced = zarr.open_group(store, path=group.path, mode="r+", zarr_format=3,
                                 use_consolidated=False)
        attrs: dict[str, Any] = dict(fenced.attrs)
        holder = attrs.get(_ATTR_WRITER)
        gens = [attrs.get(ATTR_GENERATION),
                holder.get("generation") if isinstance(holder, dict) else None]
        self.info["generation"] = max([g for g in gens if isinstance(g, int)], default=0) + 1
        return fenced

    def lose(self, reason: str) -> LeaseLostError:
        """Record that the lease is lost; the error to raise."""
        if self.lost is None:
            self.lost = reason
        return LeaseLostError(
            f"stopped writing run {self.run_id!r} in {self.url}: {self.lost}; nothing more was "
            "written by this process, and no checkpoint it was writing was marked complete; "
            "when no other writer is busy with the run, re-run the command (it keeps complete "
            "checkpoints and redoes the rest)"
        )

    def check_clock(self) -> None:
        """Raise :class:`LeaseLostError` unless the lease is held with a margin to spare, by
        the local clock (a paused or cut-off writer fails this as soon as it resumes)."""
        if self.lost is not None:
            raise self.lose(self.lost)
        if not self.acquired:
            return
        age = self.clock.monotonic() - self._confirmed
        if age > TTL_SECONDS - MARGIN_SECONDS:
            raise self.lose(
                f"its writer lease was last renewed {age:.0f} s ago (the process was paused "
                f"or cut off from the store; a lease lasts {TTL_SECONDS:.0f} s), so another "
                "writer may have taken the run"
            )

    def check_holder(self, holder: Any) -> None:
        """Raise :class:`LeaseLostError` unless ``holder`` (the writer recorded on the server)
        is this lease."""
        holder = holder if isinstance(holder, dict) else None
        if holder and holder.get("id") == self.info["id"] and (
                holder.get("generation") == self.info.get("generation")):
            return
        if holder:
            raise self.lose(f"another writer ({describe_holder(holder)}, lease generation "
                            f"{holder.get('generation')}) took the run")
        raise self.lose("the run no longer records this writer's lease (another writer took "
                        "it and finished)")

    def start_heartbeat(self, renew: Any) -> None:
        """Renew the attribute lease every TTL/4 seconds (object stores only)."""
        if not self.needs_attr_lease:
            return

        def beat() -> None:
            # a failed renewal is retried at the next beat; a lost lease is recorded in
            # self.lost by the write that found it, and fails the writer's next write
            while not self._stop.wait(TTL_SECONDS / 4) and self.lost is None:
                with contextlib.suppress(Exception):
                    renew()

        self._thread = threading.Thread(target=beat, name="actstore-lease", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Renew no more (idempotent): before the lease is removed from the run, so that no
        renewal puts it back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def release(self) -> None:
        """Give the run back (idempotent)."""
        self.stop_heartbeat()
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        if self._in_process:
            with _REGISTRY_LOCK:
                _HELD_IN_PROCESS.discard(self.key)
            self._in_process = False


def _open_lock_file(name: str) -> int:
    """Open (creating it if needed) a lock file in the shared lock directory.

    The directory is shared by every user of the machine, like ``/tmp`` itself (mode 1777),
    and lock files are readable and writable by all, so that two users writing one store
    exclude each other instead of failing on permissions.
    """
    from actstore._errors import ActstoreError

    lockdir = Path(tempfile.gettempdir()) / "actstore-locks"
    try:
        lockdir.mkdir(mode=0o1777)
    except FileExistsError:
        pass
    if lockdir.stat().st_mode & 0o1777 != 0o1777:
        with contextlib.suppress(OSError):  # the umask filtered mkdir's mode; only the owner
            os.chmod(lockdir, 0o1777)       # can set it
    path = lockdir / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:  # another user's lock file: flock works on a read-only descriptor too
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ActstoreError(
                f"cannot create the writer lock {path} ({e.strerror}); every user who writes "
                f"stores needs write access to {lockdir} (chmod 1777 {lockdir})"
            ) from None
    else:
        with contextlib.suppress(OSError):  # not allowed on another user's file
            os.fchmod(fd, 0o666)
    return fd


@contextlib.contextmanager
def store_lock(url: str, what: str) -> Iterator[None]:
    """Wait for exclusive use of ``what`` (``"create"``, ``"probe_sets/<name>"``) of a store.

    Serialises short metadata updates that several writers of one store may attempt at once
    (creating the store, adding the same probe set): an ``flock`` for local paths, a lock per
    key for ``memory://``; other URLs are not locked.
    """
    key = f"{store_key(url)}::{what}"
    if is_local(url):
        import fcntl

        fd = _open_lock_file(hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock
    elif url.startswith("memory://"):
        with _REGISTRY_LOCK:
            lock = _MEMORY_LOCKS.setdefault(key, threading.Lock())
        with lock:
            yield
    else:
        yield


def settle_delay(url: str) -> float:
    """Seconds to wait before re-reading an attribute lease (object stores)."""
    return 0.0 if is_local(url) or url.startswith("memory://") else 1.0



def _precondition_failed(e: BaseException) -> bool:
    """Whether an error of a conditional S3 write means that its condition did not hold."""
    cause = e.__cause__ or e.__context__
    err = getattr(cause, "response", None) or getattr(e, "response", None) or {}
    code = str(err.get("Error", {}).get("Code", "")) if isinstance(err, dict) else ""
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class FencedStore(WrapperStore):
    """A Zarr store that writes a run of an object store only while ``lease`` holds it.

    Wraps the store the run was opened from; reads pass through. The run's metadata
    (``meta_key``, which holds the lease) is written, where the server supports S3 conditional
    writes, only if it is still the version this writer read when it took the lease or wrote
    last (``If-Match`` on its ETag): a writer that another has displaced fails its next
    metadata write, the heartbeat included. Every other write and delete is checked before and
    after: by the local clock (:meth:`Lease.check_clock`) and by the holder recorded in the
    run's metadata on the server (:meth:`Lease.check_holder`).
    """

    def __init__(self, store: Any, lease: Lease, meta_key: str):
        super().__init__(store)
        self._lease = lease
        self._meta_key = meta_key

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        if key == self._meta_key and byte_range is None and not self._lease.acquired:
            body = await self._read_meta_version()
            if body is not None:
                return prototype.buffer.from_bytes(body)
        return await self._store.get(key, prototype, byte_range)

    async def set(self, key: str, value: Any) -> None:
        if key == self._meta_key:
            await self._write_meta(value)
            return
        await self._guard()
        await self._store.set(key, value)
        await self._guard()

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        await self._guard()
        await self._store.set_if_not_exists(key, value)
        await self._guard()

    async def _set_many(self, values: Any) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        await self._guard()
        await self._store.delete(key)
        await self._guard()

    async def delete_dir(self, prefix: str) -> None:
        await self._guard()
        await self._store.delete_dir(prefix)
        await self._guard()

    def _with_store(self, store: Any) -> Any:
        return FencedStore(store, self._lease, self._meta_key)

    # -- the lease ---------------------------------------------------------------------------
    def _s3_key(self) -> tuple[str, str] | None:
        """(bucket, key) of the run's metadata where S3 conditional writes apply."""
        fs: Any = getattr(self._store, "fs", None)
        protocol = getattr(fs, "protocol", None)
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
        if fs is None or "s3" not in protocols or not hasattr(fs, "_call_s3"):
            return None
        from zarr.storage._fsspec import _dereference_path

        bucket, key, _ = fs.split_path(_dereference_path(self._store.path,
                                                         self._meta_key))
        return bucket, key

    async def _read_meta_version(self) -> bytes | None:
        """The run's metadata and its ETag, read in one request (S3)."""
        where = self._s3_key()
        if where is None:
            return None
        try:
            resp = await self._store.fs._call_s3("get_object", Bucket=where[0], Key=where[1])
        except FileNotFoundError:
            return None
        body = await resp["Body"].read()
        self._lease.etag = resp.get("ETag")
        return bytes(body)

    async def _write_meta(self, value: Any) -> None:
        lease = self._lease
        lease.check_clock()
        where = self._s3_key()
        if where is None or self._lease.etag is None:  # no conditional writes: check first
            if lease.acquired:
                await self._check_server()
            await self._store.set(self._meta_key, value)
            lease.confirm(value.to_bytes())
            return
        try:
            resp = await self._store.fs._call_s3(
                "put_object", Bucket=where[0], Key=where[1], Body=value.to_bytes(),
                IfMatch=self._lease.etag)
        except Exception as e:
            if not _precondition_failed(e):
                raise
            if not lease.acquired:  # another writer took the run meanwhile
                raise lease._conflict(await self._holder()) from None
            holder = await self._holder()
            lease.check_holder(holder)  # raises: another holder, or none
            raise lease.lose("the run's metadata was changed by another process "
                             "while this writer held it") from None
        self._store.fs.invalidate_cache(f"{where[0]}/{where[1]}")
        self._lease.etag = resp.get("ETag")
        lease.confirm(value.to_bytes())

    async def _holder(self) -> dict[str, Any] | None:
        import json

        from zarr.core.buffer import default_buffer_prototype

        # a server that cannot be reached raises here (a failure of the environment, not a
        # lost lease); metadata that is missing or does not parse records no holder
        buf = await self._store.get(self._meta_key, default_buffer_prototype())
        try:
            doc = json.loads(buf.to_bytes()) if buf is not None else {}
            holder = doc.get("attributes", {}).get(_ATTR_WRITER)
        except (ValueError, AttributeError):
            return None
        return holder if isinstance(holder, dict) else None

    async def _check_server(self) -> None:
        self._lease.check_holder(await self._holder())

    async def _guard(self) -> None:
        self._lease.check_clock()
        if self._lease.acquired:
            await self._check_server()
            self._lease.check_clock()
