"""Activation matrices streamed in blocks of rows: the sources every analysis reads.

A :class:`BlockSource` yields an (n_samples, n_units) matrix as ``(start, stop, block)``
triples, as often as asked: :class:`ArraySource` over an array in memory,
:class:`CachedSource` moving blocks to a backend and keeping them while they fit, and the
store's reader (:class:`~actstore.core.ReaderSource`). :func:`coalesce` merges small blocks
into larger float64 ones for the products that follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from actstore._args import as_array
from actstore._errors import ActstoreError
from actstore.core._backend import array_device, get_namespace, move_to, to_numpy
from actstore.core._reprs import array_summary, short_text

__all__ = ["ArraySource", "BlockSource", "CachedSource", "coalesce"]


class BlockSource(Protocol):
    """Anything that can stream an (n, d) activation matrix in blocks of rows, repeatedly."""

    n: int
    d: int
    name: str

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(start, stop, block)`` with ``block`` of shape (stop - start, d)."""
        ...


@dataclass
class ArraySource:
    """A :class:`BlockSource` over an in-memory array (numpy, torch or cupy).

    Parameters
    ----------
    X : array of shape (n_samples, n_units)
    block_rows : int
        Rows per block.
    name : str
        Used in error messages.
    """

    X: Any
    block_rows: int = 4096
    name: str = "activations"

    def __repr__(self) -> str:
        return (f"ArraySource({short_text(self.name)}, {array_summary(self.X)}, "
                f"block_rows={self.block_rows})")

    def __post_init__(self) -> None:
        self.X = as_array(self.X, self.name)
        if len(self.X.shape) != 2:
            raise ActstoreError(f"{self.name}: activations must be 2-D, got {tuple(self.X.shape)}")
        self.n, self.d = int(self.X.shape[0]), int(self.X.shape[1])
        if self.d == 0:
            raise ActstoreError(f"{self.name} of shape {tuple(self.X.shape)} have no units; "
                                "give at least one")
        if "complex" in str(self.X.dtype):
            raise ActstoreError(f"{self.name}: activations of dtype {self.X.dtype}; give real "
                                "numbers")

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        for a in range(0, self.n, self.block_rows):
            b = min(a + self.block_rows, self.n)
            yield a, b, self.X[a:b, ...]


class CachedSource:
    """Wrap a source: blocks are moved to ``backend`` and kept while they fit ``cache_bytes``.

    The first pass reads the underlying source; later passes reuse the cached blocks when the
    whole matrix fit, and re-read the source otherwise (memory stays bounded either way).

    Parameters
    ----------
    source : BlockSource
    backend : str, optional
        ``"numpy"``, ``"torch"``, ``"cuda"`` or ``"cupy"`` (:func:`move_to`); ``None`` keeps the
        blocks as the source yields them.
    cache_bytes : int
        Budget for cached blocks.
    check_finite : bool
        Refuse NaN/inf values (checked on the first pass).
    """

    def __init__(
        self,
        source: BlockSource,
        backend: str | None = None,
        cache_bytes: int = 256 * 2**20,
        check_finite: bool = True,
    ) -> None:
        self.source = source
        self.n, self.d, self.name = source.n, source.d, source.name
        self.backend = backend
        self.cache_bytes = cache_bytes
        self.check_finite = check_finite
        self._cache: list[tuple[int, int, Any]] | None = None
        self._passes = 0
        self._checked = not check_finite

    @property
    def passes(self) -> int:
        """How many times the underlying source was read."""
        return self._passes

    def _convert(self, a: int, b: int, block: Any, check: bool) -> Any:
        if check:
            # checked where the block lives (numpy, torch or cupy): a device block is not
            # copied to the host for it, and one flag comes back
            arr = block if _is_array(block) else np.asarray(block)
            xp = get_namespace(arr)
            if not bool(xp.all(xp.isfinite(arr))):
                bad = a + int(np.flatnonzero(~np.isfinite(to_numpy(arr)).all(axis=1))[0])
                raise ActstoreError(
                    f"{self.name}: activations hold NaN or infinite values (first in sample row "
                    f"{bad}); re-capture the checkpoint or leave the layer out (--layers)"
                )
        return block if self.backend is None else move_to(block, self.backend)

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        if self._cache is not None:
            yield from self._cache
            return
        self._passes += 1
        check = not self._checked
        cache: list[tuple[int, int, Any]] | None = [] if self.cache_bytes > 0 else None
        used = 0
        rows = 0
        for a, b, block in self.source.blocks():
            blk = self._convert(a, b, block, check)
            rows += b - a
            if cache is not None:
                used += (b - a) * self.d * int(_itemsize(blk))
                if used <= self.cache_bytes:
                    cache.append((a, b, blk))
                else:
                    cache = None
            yield a, b, blk
        if rows == self.n:
            self._checked = True
            if cache is not None:
                self._cache = cache


def _is_array(x: Any) -> bool:
    from array_api_compat import is_cupy_array, is_torch_array

    return isinstance(x, np.ndarray) or is_torch_array(x) or is_cupy_array(x)


def _itemsize(x: Any) -> int:
    dt = x.dtype
    return int(getattr(dt, "itemsize", None) or np.dtype(str(dt).replace("torch.", "")).itemsize)


def coalesce(
    blocks: Iterator[tuple[int, int, Any]], d: int, target_bytes: int = 8 * 2**20,
    reuse: bool = False,
) -> Iterator[tuple[int, int, Any]]:
    """Copy consecutive row blocks into float64 blocks of about ``target_bytes``.

    Rank-k updates of a d x d Gram are memory-bound for small k; larger blocks keep them
    compute-bound. The yielded arrays are new (the caller may modify them in place); memory
    grows by one such block plus one source block. With ``reuse`` every block is written
    into the memory of the one before (the caller must be done with a block, and hold no
    view of it, before asking for the next): no fresh memory per block.
    """
    target = max(1, target_bytes // (8 * max(d, 1)))
    pending: list[tuple[int, int, Any]] = []
    rows = 0
    spare: list[Any] = []
    for a, b, blk in blocks:
        pending.append((a, b, blk))
        rows += b - a
        if rows >= target:
            yield _merge(pending, rows, d, spare if reuse else None)
            pending, rows = [], 0
    if pending:
        yield _merge(pending, rows, d, spare if reuse else None)


def _merge(pending: list[tuple[int, int, Any]], rows: int, d: int, spare: list[Any] | None
           ) -> tuple[int, int, Any]:
    """The rows of ``pending`` as one float64 block; with ``spare`` (a list holding at most
    one earlier block) in that block's memory when it is large enough, kept there for the
    next call."""
    first = pending[0][2]
    xp = get_namespace(first)
    if spare and spare[0].shape[0] >= rows:
        out = spare[0][:rows, :]
    else:
        out = xp.empty((rows, d), dtype=xp.float64, device=array_device(first))
        if spare is not None:
            spare[:] = [out]
    start = pending[0][0]
    for a, b, blk in pending:
        if isinstance(blk, np.ndarray) and isinstance(out, np.ndarray):
            out[a - start : b - start, :] = blk  # cast while copying, no temporary
        else:
            out[a - start : b - start, :] = xp.astype(blk, xp.float64)
    return start, start + rows, out
