"""The settings of an analysis as a study file gives them: option names -> config fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from actstore._args import as_mapping
from actstore._errors import ActstoreError

__all__ = ["fields_from_options"]

#: option name -> (config field, conversion or ``None`` to keep the value as given).
OptionTable = Mapping[str, tuple[str, Callable[[Any], Any] | None]]


def fields_from_options(
    options: Any, table: OptionTable, analysis: str, selection: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The config fields named by the options of one analysis of a study file.

    Parameters
    ----------
    options : mapping
        Option name -> value, as the study file gives them.
    table : mapping
        Option name -> (config field, conversion): the options of the analysis.
    analysis : str
        Its name, for error messages.
    selection : tuple of str
        Options that select what is analysed (``runs``, ``layers`` ...): valid, but arguments
        of the driver rather than config fields, so they are skipped here.

    Returns
    -------
    dict
        Field name -> value, for the options given (the others keep their defaults).

    Raises
    ------
    ActstoreError
        If ``options`` is not a mapping, or names an option the analysis does not have (the
        message lists the valid ones).
    """
    options = as_mapping(options, f"the options of the {analysis} analysis",
                         "give option names and values")
    valid = [*table, *selection]
    fields: dict[str, Any] = {}
    for key, value in options.items():
        if key in selection:
            continue
        if key not in table:
            raise ActstoreError(
                f"unknown option {key!r} of the {analysis} analysis; options: {', '.join(valid)}"
            )
        field, convert = table[key]
        fields[field] = value if convert is None else convert(value)
    return fields
