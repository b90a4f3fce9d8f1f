"""The one reader of stored activations for every analysis: one (run, layer, checkpoint) as a
:class:`~actstore.core._blocks.BlockSource`.

A job of an analysis (a decoder, the variance explained, a complexity measure) opens the store
itself and streams the activation matrix of its (run, layer, checkpoint) through a
:class:`ReaderSource`, in the chunk-aligned blocks of samples the store reads fastest; the
matrix is never loaded whole unless the analysis caches it
(:class:`~actstore.core._blocks.CachedSource`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["ReaderSource"]


class ReaderSource:
    """A :class:`~actstore.core._blocks.BlockSource` over one (run, layer, checkpoint).

    Parameters
    ----------
    reader : actstore.store.RunReader
        The run's reader (``store.reader(run)``).
    layer : str
        A layer of the run.
    step : int
        Training step of a complete checkpoint.
    block : int, optional
        Samples per block (default: the array's chunk of samples).

    Attributes
    ----------
    n : int
        Samples (rows of the matrix).
    d : int
        Units (columns).
    name : str
        ``run 'r', layer 'l', checkpoint s``: names the matrix in error messages.
    """

    def __init__(self, reader: Any, layer: str, step: int, *, block: int | None = None) -> None:
        self.reader, self.layer, self.step, self.block = reader, layer, int(step), block
        self.n = int(reader.array(layer).shape[1])
        self.d = int(reader.units(layer))
        self.name = f"run {reader.run_id!r}, layer {layer!r}, checkpoint {self.step}"

    def __repr__(self) -> str:
        return f"ReaderSource({self.name}, {self.n} x {self.d})"

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(start, stop, block)``, ``block`` a numpy array of shape
        (stop - start, d), over all samples in order.

        Raises
        ------
        StoreError
            An incomplete checkpoint, or a corrupt chunk.
        """
        yield from self.reader.iter_blocks(self.layer, self.step, block=self.block)
