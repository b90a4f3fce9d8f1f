"""The Zarr store: format v1, probe sets, runs, capture, xarray views (see docs/FORMAT.md)."""

from __future__ import annotations

from actstore.store._capture import (
    REDUCTIONS,
    capture_slot,
    layer_names,
    resolve_layers,
    weights_hash,
)
from actstore.store._layout import CODECS, DEFAULT_CODEC, FORMAT_VERSION, canonical_name
from actstore.store._probeset import ProbeSet
from actstore.store._run import RunReader, RunWriter
from actstore.store._store import Store, create_store, open_store
from actstore.store._xarray import open, open_layer

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "FORMAT_VERSION",
    "REDUCTIONS",
    "ProbeSet",
    "RunReader",
    "RunWriter",
    "Store",
    "canonical_name",
    "capture_slot",
    "create_store",
    "layer_names",
    "open",
    "open_layer",
    "open_store",
    "resolve_layers",
    "weights_hash",
]
