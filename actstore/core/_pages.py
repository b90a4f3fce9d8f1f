"""Engine work without numpy's huge-page advice.

numpy advises the kernel to back every array of 4 MiB or more with transparent huge pages
(``madvise(MADV_HUGEPAGE)``). Where the kernel's ``transparent_hugepage/defrag`` setting is
``madvise`` (its default), each first touch of such memory may stop to compact physical
memory and find a free huge page. The decoders allocate many short-lived arrays of that size
(per-fold Grams, factorisations, predictions), each written once: on the machine of
docs/BENCHMARKS.md the ridge decoders of a 5,000 x 2,048 layer spent half their time in first
touches with the advice and ran 2x faster without it. :func:`plain_pages` turns the advice off
for the duration of the engine's work and restores numpy's setting afterwards (the outermost
of nested or concurrent users restores it).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["plain_pages"]

_lock = threading.Lock()
_users = 0
_saved: bool | None = None

F = TypeVar("F", bound=Callable[..., Any])


def _setter() -> Callable[[bool], bool] | None:
    try:
        from numpy._core import multiarray
    except ImportError:  # another numpy layout: keep its behaviour
        return None
    return getattr(multiarray, "_set_madvise_hugepage", None)


@contextmanager
def _plain_pages() -> Iterator[None]:
    global _users, _saved
    setter = _setter()
    if setter is None:
        yield
        return
    with _lock:
        if _users == 0:
            _saved = setter(False)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                setter(_saved)
                _saved = None


def plain_pages(func: F) -> F:
    """Decorate ``func`` to run without numpy's huge-page advice (see the module docstring)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _plain_pages():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
