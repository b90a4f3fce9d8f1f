"""Store format v2: names, versions, codecs and chunk shapes (see docs/FORMAT.md)."""

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

#: Version of the on-disk layout written by this code. Newer stores are refused; format 1
#: stores are read, verified and repaired, and become format 2 when this code writes to them.
FORMAT_VERSION = 2

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
#: sha256 of a run's attributes (all but the writer lease and itself), see attrs_checksum
ATTR_CHECKSUM = "actstore.checksum"
#: Keys of a layer-table entry that describe how the layer's array is stored (format 2).
LAYER_STORAGE_KEYS = ("unit_shape", "codec", "chunk_samples", "shard_samples")

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


def data_codecs() -> list[Any]:
    """Codecs of every array that is not an activation array (labels, sample ids, probe-set
    inputs): zstd, then a crc32c checksum of each chunk."""
    return make_codecs(DEFAULT_CODEC)


def slot_array_spec(name: str) -> dict[str, Any]:
    """``create_array`` arguments of a run's ``checkpoint`` or ``status`` array (length 0)."""
    from zarr.codecs import Crc32cCodec

    dtype, fill = {"checkpoint": ("int64", -1), "status": ("uint8", STATUS_EMPTY)}[name]
    return {"shape": (0,), "chunks": (1,), "dtype": dtype, "fill_value": fill,
            "dimension_names": ("checkpoint",), "compressors": [Crc32cCodec()]}


def layer_array_spec(name: str, n_slots: int, n_samples: int, unit_shape: tuple[int, ...],
                     dtype: str, codec: str, info: dict[str, Any],
                     samples: tuple[int, int] | None = None) -> dict[str, Any]:
    """``create_array`` arguments of a layer's activation array.

    ``samples`` is ``(chunk_samples, shard_samples)``; by default those of :func:`chunk_shape`.
    """
    per_chunk, per_shard = samples or chunk_shape(n_samples, unit_shape, np.dtype(dtype).itemsize)
    dim_names = info.get("unit_dims", [f"dim{i}" for i in range(len(unit_shape))])
    unit_dims = (f"{name}_unit",) if len(unit_shape) == 1 else tuple(
        f"{name}_{d}" for d in dim_names
    )
    return {"shape": (n_slots, n_samples, *unit_shape), "chunks": (1, per_chunk, *unit_shape),
            "shards": (1, per_shard, *unit_shape), "dtype": dtype, "fill_value": np.nan,
            "compressors": make_codecs(codec),
            "dimension_names": ("checkpoint", "sample", *unit_dims)}


def array_metadata(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` document Zarr writes for an array made with ``spec`` (a dict of
    ``create_array`` arguments), made in memory."""
    import zarr
    from zarr.storage import MemoryStore

    ms = MemoryStore()
    zarr.create_array(ms, name="a", **spec)
    return json.loads(ms._store_dict["a/zarr.json"].to_bytes())


def same_array_layout(stored: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether an array's metadata matches the expected one in everything but the number of
    slots (its first axis, which grows as slots are added) and its attributes."""
    skip = ("shape", "attributes")
    if {k: v for k, v in stored.items() if k not in skip} != {
            k: v for k, v in expected.items() if k not in skip}:
        return False
    shape, want = stored.get("shape"), expected["shape"]
    return (isinstance(shape, list) and len(shape) == len(want) and shape[0] >= want[0]
            and shape[1:] == want[1:])


def attrs_checksum(attrs: dict[str, Any]) -> str:
    """sha256 of a run's attributes: all but the writer lease (renewed while a writer runs)
    and the checksum itself."""
    return json_hash({k: v for k, v in attrs.items() if k not in (ATTR_WRITER, ATTR_CHECKSUM)})


def slot_values_from_table(planned: list[int], slots: dict[str, Any]) -> tuple[
        np.ndarray, np.ndarray]:
    """``(checkpoint, status)`` of every slot as the slot table records them.

    A slot whose step has a record holds that step; the record's ``completed`` time makes it
    complete, else it is being written (or was interrupted). A slot without a record is empty.
    """
    steps = np.full(len(planned), -1, dtype=np.int64)
    status = np.full(len(planned), STATUS_EMPTY, dtype=np.uint8)
    for i, step in enumerate(planned):
        rec = slots.get(str(int(step)))
        if isinstance(rec, dict):
            steps[i] = int(step)
            status[i] = STATUS_COMPLETE if rec.get("completed") else STATUS_WRITING
    return steps, status


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
