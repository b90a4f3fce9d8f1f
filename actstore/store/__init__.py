"""The Zarr store: format, probe sets, runs, capture, xarray views (see docs/FORMAT.md), and
the operations on whole stores: dump, ingest, verify, repair, info."""

from __future__ import annotations

from actstore.store._capture import capture_slot, check_values, weights_hash
from actstore.store._dump import DumpReport, dump, dump_many, run_ids_for
from actstore.store._images import image_probe_set
from actstore.store._info import run_info, store_summary
from actstore.store._ingest import ingest, read_activation_file, read_labels_csv
from actstore.store._layers import layer_names, resolve_layers
from actstore.store._layout import CODECS, DEFAULT_CODEC, FORMAT_VERSION, canonical_name
from actstore.store._models import describe_model, load_hf_model
from actstore.store._open import create_store, open_store
from actstore.store._probeset import ProbeSet, probe_set_from_npz
from actstore.store._reader import RunReader
from actstore.store._reduce import REDUCTIONS, parse_reduction, reduce_output
from actstore.store._repair import RepairReport, repair, repair_command
from actstore.store._results import (
    check_result_name,
    check_settings,
    settings_difference,
    settings_json,
)
from actstore.store._sources import probe_set_from_path
from actstore.store._store import DamagedRunError, Store, first_line
from actstore.store._text import load_tokenizer, text_probe_set
from actstore.store._verify import FIX_SLOT, Problem, verify
from actstore.store._writer import RunWriter
from actstore.store._xarray import open, open_layer

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "FIX_SLOT",
    "FORMAT_VERSION",
    "REDUCTIONS",
    "DamagedRunError",
    "DumpReport",
    "ProbeSet",
    "Problem",
    "RepairReport",
    "RunReader",
    "RunWriter",
    "Store",
    "canonical_name",
    "capture_slot",
    "check_result_name",
    "check_settings",
    "check_values",
    "create_store",
    "describe_model",
    "dump",
    "dump_many",
    "first_line",
    "image_probe_set",
    "ingest",
    "layer_names",
    "load_hf_model",
    "load_tokenizer",
    "open",
    "open_layer",
    "open_store",
    "parse_reduction",
    "probe_set_from_npz",
    "probe_set_from_path",
    "read_activation_file",
    "read_labels_csv",
    "reduce_output",
    "repair",
    "repair_command",
    "resolve_layers",
    "run_ids_for",
    "run_info",
    "settings_difference",
    "settings_json",
    "store_summary",
    "text_probe_set",
    "verify",
    "weights_hash",
]
