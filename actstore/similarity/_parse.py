"""Command-line selections (``actstore similarity --select``) as keyword arguments of
:func:`~actstore.core._select.select`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actstore._args import as_names
from actstore._errors import ActstoreError
from actstore.core._select import ATTR_KEYS

__all__ = ["parse_selection", "parse_selections"]



def parse_selection(spec: str | Sequence[str] | None) -> dict[str, Any]:
    """Read a command-line selection into keyword arguments of :func:`select`.

    ``"run=seed*;layer=fc6,fc7;checkpoint=all;seed=0"``: ``key=value`` terms separated by
    ``;`` (or given as separate strings: terms of one selection); keys ``run``, ``layer``,
    ``checkpoint``, ``stimuli`` and the run attributes ``model``, ``task``, ``seed``,
    ``dataset``, ``variant``.

    Parameters
    ----------
    spec : str or sequence of str or None
        ``None`` selects everything.

    Returns
    -------
    dict
        Keyword arguments of :func:`select`: ``where`` (attribute -> value) and, when given,
        ``runs``, ``layers``, ``checkpoints``, ``stimuli``.

    Raises
    ------
    ActstoreError
        If a term is not ``key=value``, names an unknown key, or repeats a key (several
        strings are terms of one selection; for a union of selections see
        :func:`parse_selections`).
    """
    terms: list[str] = []
    specs = [] if spec is None else as_names(spec, "selection", allow_empty=True)
    for s in specs:
        terms += [t.strip() for t in s.split(";") if t.strip()]
    out: dict[str, Any] = {"where": {}}
    given: dict[str, str] = {}
    for t in terms:
        if "=" not in t:
            raise ActstoreError(
                f"selection term {t!r} is not key=value; e.g. 'layer=fc6;checkpoint=last;seed=0'"
            )
        key, value = (p.strip() for p in t.split("=", 1))
        canon = _KEY_ALIASES.get(key, key)
        if canon in given:
            raise ActstoreError(
                f"selection key {canon} is given twice in one selection ({given[canon]!r} and "
                f"{t!r}); join values with commas ({canon}=a,b), or give each as its own "
                "selection (another --select) for their union"
            )
        given[canon] = t
        if key in ("run", "runs"):
            out["runs"] = value
        elif key in ("layer", "layers"):
            out["layers"] = value
        elif key in ("checkpoint", "checkpoints", "step"):
            out["checkpoints"] = value
        elif key == "stimuli":
            out["stimuli"] = value
        elif key in ATTR_KEYS:
            out["where"][key] = value
        else:
            raise ActstoreError(
                f"unknown selection key {key!r}; use run, layer, checkpoint, stimuli, "
                f"{', '.join(ATTR_KEYS)}"
            )
    return out


#: Other spellings of the selection keys.
_KEY_ALIASES = {"runs": "run", "layers": "layer", "checkpoints": "checkpoint",
                "step": "checkpoint"}


def parse_selections(specs: str | Sequence[str] | None) -> list[dict[str, Any]]:
    """Read repeated command-line selections (``--select`` given several times).

    Each string is one whole selection (``key=value`` terms joined by ``;``, read by
    :func:`parse_selection`, with its own defaults for the keys it does not give); the
    representations are the union of the selections (see :func:`select_many`).

    Parameters
    ----------
    specs : str or sequence of str or None
        ``None`` or no strings: one selection of everything.

    Returns
    -------
    list of dict
        Keyword arguments of :func:`select`, one dict per selection (at least one).
    """
    items = [] if specs is None else as_names(specs, "selection", allow_empty=True)
    return [parse_selection(s) for s in items] or [parse_selection(None)]
