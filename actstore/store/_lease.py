"""One writer per run: a lease that a second process cannot take while the first is alive.

Local stores use an ``flock`` on a lock file in the system's temporary directory (released by
the kernel even when the holder is killed with SIGKILL). ``memory://`` stores live in one
process and use an in-process registry. Other URLs (``s3://``...) use a lease attribute on the
run group that the holder renews every few seconds; a lease that is not renewed expires.
In every case the holder is also recorded in the run's ``actstore.writer`` attribute, so that a
refused writer can say who holds the run, and listings can tell a live writer from one that was
killed (:func:`holder_state`).

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

from actstore._errors import WriterConflictError

__all__ = [
    "Lease", "describe_holder", "holder_state", "is_local", "settle_delay", "store_key",
    "store_lock",
]

TTL_SECONDS = 60.0
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


def holder_state(url: str, run_id: str, holder: dict[str, Any] | None) -> str:
    """Whether the writer recorded in a run's ``actstore.writer`` attribute still holds it.

    Returns ``"none"`` (no writer recorded), ``"live"``, ``"stale"`` (the writer is gone:
    killed, or its lease expired; the run was left as an interrupted write) or ``"unknown"``
    (a local store written from another machine, whose processes cannot be seen from here).

    Object stores decide by the lease's expiry, which a live writer renews every few seconds
    (the same test that lets a new writer take the run). ``memory://`` stores look up the
    in-process registry. Local stores hold an ``flock`` that dies with its process but records
    no expiry: the writer's process is looked up instead, when it ran on this machine.
    """
    if not holder:
        return "none"
    if url.startswith("memory://"):
        with _REGISTRY_LOCK:
            return "live" if _key(url, run_id) in _HELD_IN_PROCESS else "stale"
    if _needs_attr_lease(url):
        try:
            return "live" if float(holder.get("expires", 0)) > time.time() else "stale"
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

    def __init__(self, url: str, run_id: str):
        self.url = url
        self.run_id = run_id
        self.key = _key(url, run_id)
        self.info = {
            "id": uuid.uuid4().hex,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "expires": 0.0,
        }
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
        if self.needs_attr_lease and holder_state(self.url, self.run_id, current) == "live":
            raise self._conflict(current)

    def stamp(self) -> dict[str, Any]:
        """The attribute value to record now (renewed expiry)."""
        self.info["expires"] = time.time() + TTL_SECONDS
        return dict(self.info)

    def start_heartbeat(self, renew: Any) -> None:
        """Renew the attribute lease every TTL/4 seconds (object stores only)."""
        if not self.needs_attr_lease:
            return

        def beat() -> None:
            while not self._stop.wait(TTL_SECONDS / 4):
                with contextlib.suppress(Exception):
                    renew()

        self._thread = threading.Thread(target=beat, name="actstore-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Give the run back (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
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

