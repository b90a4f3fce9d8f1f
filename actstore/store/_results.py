"""Results: their names, and the settings that determine them (recorded, compared)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError

if TYPE_CHECKING:
    from actstore.store._store import Store

__all__ = ["check_result_name", "check_settings", "settings_difference", "settings_json"]


def check_result_name(name: str) -> None:
    """Result names are one path component: letters, digits, ``_ - .``, not starting with ``.``."""
    if not name or name.startswith(".") or not all(c.isalnum() or c in "_-." for c in name):
        raise ActstoreError(
            f"result name {name!r} must use letters, digits, _ - . and not start with '.'"
        )


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and sets) as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def settings_json(settings: dict[str, Any]) -> str:
    """The settings that determine a result, as its ``actstore.config`` attribute (JSON)."""
    return json.dumps(settings, sort_keys=True, default=_plain)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + " ..."


#: settings shown by the name of their command-line option
_OPTION_NAMES = {"n_splits": "folds", "Cs": "cs"}


def settings_difference(stored: str | None, now: dict[str, Any]) -> str:
    """``n_splits 3 there, 4 now; seed ...``: the settings that differ from the stored ones."""
    if stored is None:
        return "no settings recorded there"
    try:
        old = json.loads(stored)
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return "unreadable settings there"
    new = json.loads(settings_json(now))
    diff = [f"{_OPTION_NAMES.get(k, k)} {_shown(old.get(k))} there, {_shown(new.get(k))} now"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(diff) or "settings of another actstore version"


def check_settings(store: Store, analysis: str, name: str, settings: dict[str, Any],
                   overwrite: bool = False) -> None:
    """Refuse to replace ``/results/<analysis>/<name>`` computed with other settings.

    Results with the same settings (a re-run) may be replaced, and so may any with
    ``overwrite``; results without recorded settings count as computed with other ones.
    """
    if overwrite or not store.has_result(analysis, name):
        return
    stored = store.result_attrs(analysis, name).get("actstore.config")
    try:
        same = stored is not None and json.loads(stored) == json.loads(settings_json(settings))
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ActstoreError(
            f"results/{analysis}/{name} in {store.url} were computed with other settings "
            f"({settings_difference(stored, settings)}); choose another --name or pass "
            "--overwrite"
        )
