"""Failures of the environment, told apart from bad input: a full or read-only disk, a
refused permission, a server or Dask scheduler gone. The command line prints them as one line
and exits with code 1 (bad input: code 2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

from actstore import ActstoreError
from actstore.store import first_line

__all__ = ["EnvironmentFailureError", "environment_failure"]


class EnvironmentFailureError(ActstoreError):
    """The machine or a service failed, not the input: a read-only or full file system, a
    permission refused, an object-store server or a Dask scheduler that stopped answering. The
    CLI prints it as one line and exits with code 1."""

    exit_code = 1


#: what every environment failure ends with: work done before it is never lost
_RERUN = "then re-run the same command (what was complete before is kept)"

_OS_ERRORS = {
    errno.EROFS: ("the file system is read-only",
                  "make it writable, or work on a copy of the store on a writable disk"),
    errno.EACCES: ("permission denied",
                   "give this user write permission there, or work on a copy it owns"),
    errno.ENOSPC: ("no space left on the device",
                   "free space there, or move the store to a disk with more room"),
    errno.EDQUOT: ("the disk quota is used up",
                   "free space there, or move the store to a disk with more room"),
}
_OS_ERRORS[errno.EPERM] = _OS_ERRORS[errno.EACCES]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, each once, outermost
    first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])


def _is_scheduler_loss(e: BaseException) -> bool:
    """An error of a Dask client whose scheduler went away."""
    mod = type(e).__module__
    if not mod.startswith("distributed"):
        return False
    name = type(e).__name__
    return (name == "CommClosedError"
            or (name == "FutureCancelledError" and "connection-lost" in str(e))
            or "lost the connection to the scheduler" in str(e))


def _is_connection_loss(e: BaseException) -> bool:
    """An HTTP client (botocore, aiohttp) or a socket that could not reach its server or lost
    the connection to it."""
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    mod, name = type(e).__module__, type(e).__name__
    if mod.startswith("botocore"):
        return name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
                        "ConnectTimeoutError", "ProxyConnectionError")
    if mod.startswith("aiohttp"):
        return any(c.__name__ in ("ClientConnectionError", "ServerTimeoutError")
                   for c in type(e).__mro__)
    return False


def environment_failure(exc: BaseException, store: str | None = None,
                        scheduler: str | None = None) -> EnvironmentFailureError | None:
    """The one-line error for ``exc`` if it (or an exception it was raised from or while
    handling) is a known failure of the environment; ``None`` for anything else.

    Known failures: ``OSError`` with errno EROFS, EACCES/EPERM, ENOSPC or EDQUOT; a Dask
    client that lost its scheduler; an object store or other server that cannot be reached
    or dropped the connection (botocore, aiohttp and socket errors). ``store`` and
    ``scheduler`` (the command's arguments) name what failed where the error does not.
    """
    chain = list(_chain(exc))
    for e in chain:
        if _is_scheduler_loss(e):
            where = f" at {scheduler}" if scheduler else ""
            return EnvironmentFailureError(
                f"lost the connection to the Dask scheduler{where} ({first_line(e)}); check "
                f"that the scheduler runs and is reachable (or leave out --scheduler), {_RERUN}"
            )
    for e in chain:
        if isinstance(e, OSError) and e.errno in _OS_ERRORS:
            what, fix = _OS_ERRORS[e.errno]
            path = e.filename if e.filename is not None else store
            where = f"cannot write {path}" if path else "cannot write"
            code = errno.errorcode[e.errno]
            return EnvironmentFailureError(f"{where}: {what} ({code}); {fix}, {_RERUN}")
    for e in chain:
        if _is_connection_loss(e):
            if store is not None and "://" in str(store) and not str(store).startswith("file:"):
                what = f"the server of {store} cannot be reached or dropped the connection"
                fix = "check that the server runs and its address (endpoint) and network"
            elif scheduler:
                what = f"the connection to the Dask scheduler at {scheduler} failed"
                fix = "check that the scheduler runs and is reachable"
            else:
                what, fix = "a connection failed", "check the network and the servers used"
            return EnvironmentFailureError(f"{what} ({first_line(e)}); {fix}, {_RERUN}")
    return None
