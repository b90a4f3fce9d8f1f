"""Run attributes: what identifies a run, names usable as store paths, JSON values."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["IDENTITY_KEYS", "OWNED_KEYS", "as_step", "check_name", "jsonable", "now", "owned",
           "version"]

IDENTITY_KEYS = ("model", "task", "seed", "dataset", "variant", "config")
#: Run attributes that actstore records itself (besides ``actstore.*``): never set by callers.
OWNED_KEYS = ("probe_set", "probe_set_hash", "config_hash", "actstore_version", "created")


def owned(key: str) -> bool:
    """Whether actstore records the run attribute ``key`` itself."""
    return key in OWNED_KEYS or key.startswith("actstore.")


def now() -> str:
    """The current UTC time, to the second, in ISO format."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_name(run_id: str, what: str = "run id", example: str = "'net_s0'") -> None:
    """A name that is one path component of the store: a run id or a layer name."""
    if not isinstance(run_id, str):
        raise ActstoreError(
            f"{what} must be a str, not {type(run_id).__name__} {run_id!r}; e.g. {example}"
        )
    if (not run_id or not all(c.isalnum() or c in "_-." for c in run_id) or run_id[0] == "."
            or run_id == "zarr.json" or run_id.endswith(".partial")):
        raise ActstoreError(
            f"{what} {run_id!r} is not usable as a store path; use letters, digits, '_', '-', "
            "'.' (not first; not 'zarr.json' or a name ending in '.partial')"
        )


def as_step(step: Any) -> int:
    """A checkpoint step as an int; a step that is no whole number is an error, never cut."""
    if isinstance(step, (int, np.integer)) and not isinstance(step, (bool, np.bool_)):
        return int(step)
    if isinstance(step, (float, np.floating)) and float(step).is_integer():
        return int(step)
    raise ActstoreError(f"checkpoint step {step!r} must be a whole number >= 0")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy/torch scalars and arrays as numbers and lists,
    other objects as their ``str``; NaN and infinities as the strings "NaN", "Infinity",
    "-Infinity" (as Zarr v3 writes non-finite fill values), so the metadata stays strict JSON."""
    import json
    import math

    def plain(o: Any) -> Any:
        return o.tolist() if callable(getattr(o, "tolist", None)) else str(o)

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, list):
            return [finite(x) for x in v]
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return v

    return finite(json.loads(json.dumps(obj, default=plain)))



def version() -> str:
    """The version of actstore, as stores, runs and results record it."""
    from actstore import __version__

    return __version__
