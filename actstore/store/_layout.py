"""Store format v1: names, versions, codecs and chunk shapes (see docs/FORMAT.md)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = [
    "CODECS",
    "FORMAT_VERSION",
    "STATUS_COMPLETE",
    "STATUS_EMPTY",
    "STATUS_WRITING",
    "canonical_name",
    "chunk_shape",
    "json_hash",
    "make_codecs",
]

#: Version of the on-disk layout written by this code. Newer stores are refused.
FORMAT_VERSION = 1

STATUS_EMPTY = 0
STATUS_WRITING = 1
STATUS_COMPLETE = 2

PROBE_SETS = "probe_sets"
RUNS = "runs"
RESULTS = "results"

#: Attribute keys at the root and on runs.
ATTR_FORMAT = "actstore.format"
ATTR_CREATED = "actstore.created"
ATTR_VERSION = "actstore.version"
ATTR_WRITER = "actstore.writer"
ATTR_LAYOUT_DONE = "actstore.layout_complete"
ATTR_STEPS = "actstore.planned_steps"
ATTR_SLOTS = "actstore.slots"
ATTR_LAYERS = "actstore.layers"

#: Target size of one chunk (one checkpoint, a block of samples, all units).
CHUNK_BYTES = 2 * 2**20
#: Upper bound of one shard: the writer buffers one shard per layer before writing it whole.
SHARD_BYTES = 64 * 2**20

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def canonical_name(module_path: str) -> str:
    """Zarr-path-safe layer name from a module path (``"features.0"`` -> ``"features_0"``).

    The root module (empty path) is called ``"output"``. A name that would start with a digit
    gets an ``m`` in front (``"0.weight"`` -> ``"m0_weight"``).

    Raises
    ------
    ActstoreError
        If ``module_path`` is not a str.
    """
    if not isinstance(module_path, str):
        raise ActstoreError(
            f"module_path must be a str (e.g. 'features.0'), not {type(module_path).__name__}"
        )
    if not module_path:
        return "output"
    name = _UNSAFE.sub("_", module_path)
    if name[0].isdigit():
        name = "m" + name
    return name


def chunk_shape(n_samples: int, unit_shape: tuple[int, ...], itemsize: int) -> tuple[int, int]:
    """Samples per chunk and per shard for a layer with ``unit_shape`` trailing dims.

    Returns
    -------
    (chunk_samples, shard_samples) : tuple of int
        Chunks hold one checkpoint, ``chunk_samples`` samples and all units (about
        :data:`CHUNK_BYTES`); a shard holds a whole multiple of chunks, up to the whole
        (checkpoint, layer) slot or :data:`SHARD_BYTES`.
    """
    row = max(1, int(np.prod(unit_shape)) * itemsize)
    per_chunk = max(1, min(n_samples, CHUNK_BYTES // row))
    chunks_per_shard = max(1, SHARD_BYTES // (per_chunk * row))
    per_shard = min(n_samples, per_chunk * chunks_per_shard)
    # a shard must be a whole number of chunks
    per_shard = max(per_chunk, (per_shard // per_chunk) * per_chunk)
    if per_shard >= n_samples:
        per_shard = -(-n_samples // per_chunk) * per_chunk
    return per_chunk, per_shard


def _blosc(cname: Any, shuffle: Any, clevel: int) -> Callable[[], list[Any]]:
    def make() -> list[Any]:
        from zarr.codecs import BloscCodec

        return [BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)]

    return make


def _zstd(level: int) -> Callable[[], list[Any]]:
    def make() -> list[Any]:
        from zarr.codecs import ZstdCodec

        return [ZstdCodec(level=level)]

    return make


#: Compression choices for activation arrays (``--codec``). Each is followed by crc32c.
CODECS: dict[str, Callable[[], list[Any]]] = {
    "blosc-lz4": _blosc("lz4", "shuffle", 5),
    "blosc-zstd": _blosc("zstd", "bitshuffle", 3),
    "zstd": _zstd(1),
    "none": lambda: [],
}
DEFAULT_CODEC = "zstd"


def make_codecs(name: str) -> list[Any]:
    """Bytes-to-bytes codecs for ``name``, ending with a crc32c checksum."""
    from zarr.codecs import Crc32cCodec


    if name not in CODECS:
        raise ActstoreError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    return [*CODECS[name](), Crc32cCodec()]


def to_zarr_data(arr: np.ndarray) -> np.ndarray:
    """Strings become variable-length UTF-8 (a Zarr v3 data type with a specification)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "UOT":
        return arr.astype(np.dtypes.StringDType())
    return arr


def from_zarr_data(arr: np.ndarray) -> np.ndarray:
    """Variable-length strings come back as ordinary numpy unicode arrays."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "OT":
        return np.asarray(arr.tolist(), dtype=str)
    return arr


def json_hash(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
