"""actstore: activations of families of networks in one chunked Zarr store, analysed out-of-core."""

from __future__ import annotations

__version__ = "0.1.0"

from actstore._errors import (
    ActstoreError,
    ActstoreWarning,
    ProvenanceError,
    StoreError,
    WriterConflictError,
)
from actstore._execution import Execution
from actstore.store import (
    ProbeSet,
    Store,
    create_store,
    open,
    open_layer,
    open_store,
)

__all__ = [
    "ActstoreError",
    "ActstoreWarning",
    "Execution",
    "ProbeSet",
    "ProvenanceError",
    "Store",
    "StoreError",
    "WriterConflictError",
    "__version__",
    "create_store",
    "open",
    "open_layer",
    "open_store",
]
