"""Probe sets from files: tables of labels (CSV, JSON Lines) and the one entry point that turns
a ``--probe-set`` argument into a probe set (an ``.npz`` file, a table of sentences, a folder
of images) or leaves it as the name of a probe set in the store.

Label columns: integers and booleans are categorical classes, floats continuous values,
strings categorical classes coded 0, 1, ... in sorted order, the names kept in the probe set's
attrs (``attrs["classes"][feature]``). A label cell that is empty or NaN is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store._probeset import ProbeSet, probe_set_from_npz

__all__ = ["TEXT_SUFFIXES", "column_cells", "label_columns", "probe_set_from_path", "read_table"]

#: the files read as tables of sentences
TEXT_SUFFIXES = (".csv", ".jsonl")


def _jsonl(p: Path) -> dict[str, list[Any]]:
    rows = []
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ActstoreError(
            f"file {p} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ActstoreError(f"file {p}, line {i}: not JSON ({e.msg}); give one JSON "
                                "object per line") from None
        if not isinstance(row, dict):
            raise ActstoreError(f"file {p}, line {i}: a {type(row).__name__}, not a JSON "
                                "object; give one object of column -> value per line")
        rows.append((i, row))
    if not rows:
        raise ActstoreError(f"file {p} has no rows; give one JSON object per sample")
    keys = list(rows[0][1])
    for i, row in rows:
        if list(row) != keys and set(row) != set(keys):
            missing = sorted(set(keys) - set(row)) or sorted(set(row) - set(keys))
            raise ActstoreError(
                f"file {p}, line {i}: its keys differ from the first line's ({missing[0]!r}); "
                "give every object the same keys"
            )
    return {k: [row[k] for _, row in rows] for k in keys}


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a CSV file (with a header) or a JSON Lines file (one object per line),
    as arrays: numbers as int64 / float64, anything else as strings.

    Raises
    ------
    ActstoreError
        If the file is missing, not UTF-8, not a readable table, or its rows disagree.
    """
    from actstore.store._ingest import read_labels_csv

    p = Path(path)
    if not p.is_file():
        raise ActstoreError(f"file {p} does not exist")
    if p.suffix.lower() == ".csv":
        sample, cols = read_labels_csv(p)
        return {**cols, **({"sample": sample} if sample is not None else {})}
    out = {}
    for k, vals in _jsonl(p).items():
        bad = [v for v in vals if isinstance(v, (dict, list))]
        if bad:
            raise ActstoreError(f"file {p}: column {k!r} holds a JSON {type(bad[0]).__name__}; "
                                "give one number, boolean or string per cell")
        if any(v is None for v in vals):
            out[k] = np.asarray(["" if v is None else str(v) for v in vals], dtype=str)
        elif all(isinstance(v, (int, float)) for v in vals):
            out[k] = np.asarray(vals)
        else:
            out[k] = np.asarray([str(v) for v in vals], dtype=str)
    return out


def column_cells(table: dict[str, np.ndarray], source: Path, column: str, what: str,
                option: str) -> list[str]:
    """The cells of the ``what`` column (texts, file names) as strings.

    Raises
    ------
    ActstoreError
        If the table has no such column (the message names ``option``, which sets it).
    """
    if column not in table:
        raise ActstoreError(
            f"{source} has no {what} column {column!r} (columns: {', '.join(table)}); name it "
            f"with {option}"
        )
    return [str(t) for t in table[column].tolist()]


def label_columns(table: dict[str, np.ndarray], source: Path, skip: set[str],
                  columns: list[str] | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """``(labels, classes)``: the label arrays of ``columns`` (default: every column not in
    ``skip``), string columns coded as classes (``classes[feature]`` their names in code
    order).

    Raises
    ------
    ActstoreError
        A named column that the table lacks, no label column at all, or a column with empty
        or NaN cells.
    """
    names = [c for c in table if c not in skip] if columns is None else list(columns)
    missing = [c for c in names if c not in table]
    if missing:
        raise ActstoreError(
            f"{source} has no column {missing[0]!r}; its columns: {', '.join(table)}"
        )
    if not names:
        raise ActstoreError(
            f"{source} has no label column (columns: {', '.join(table)}); add one column per "
            "feature to decode"
        )
    labels: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    for c in names:
        v = table[c]
        if v.dtype.kind == "f":
            bad = np.flatnonzero(np.isnan(v))
        elif v.dtype.kind in "UST":
            bad = np.flatnonzero(np.char.strip(v.astype(str)) == "")
        else:
            bad = np.array([], dtype=int)
        if bad.size:
            rows = ", ".join(str(int(i) + 1) for i in bad[:5]) + (" ..." if bad.size > 5 else "")
            raise ActstoreError(
                f"{source}: label column {c!r} has {bad.size} empty or NaN value(s) (data "
                f"rows {rows}); fill them, or drop those rows"
            )
        if v.dtype.kind in "UST":
            names_, codes = np.unique(v.astype(str), return_inverse=True)
            labels[c] = codes.astype(np.int64)
            classes[c] = [str(s) for s in names_]
        else:
            labels[c] = v.astype(np.int64) if v.dtype.kind == "b" else v
    return labels, classes


def _number(key: str, value: Any, kind: type = int) -> Any:
    try:
        x = kind(value)
    except (TypeError, ValueError):
        raise ActstoreError(f"probe-set option {key}={value!r} is not a "
                            f"{'whole number' if kind is int else 'number'}") from None
    if kind is float and not math.isfinite(x):
        raise ActstoreError(f"probe-set option {key}={value!r} is not a finite number")
    return x


def probe_set_from_path(source: str | Path, *, name: str | None = None,
                        tokenizer: Any = None, text_column: str = "text",
                        max_length: int | None = None,
                        options: dict[str, Any] | None = None) -> ProbeSet | None:
    """The probe set a ``--probe-set`` argument names: one read from an ``.npz`` file, made
    from a table of sentences (``.csv``/``.jsonl``, tokenised with ``tokenizer``) or from a
    folder of images; ``None`` when ``source`` is none of these (the name of a probe set in a
    store).

    Parameters
    ----------
    source : str or Path
        ``file.npz``, ``sentences.csv``, ``sentences.jsonl``, or an image folder.
    name : str, optional
        Probe set name (default: the file's or folder's name without suffix).
    tokenizer : str, Path or tokenizer, optional
        For sentences: a tokenizer folder (see :func:`text_probe_set`).
    text_column, max_length
        For sentences (see :func:`text_probe_set`).
    options : dict, optional
        Further options of :func:`text_probe_set` (``labels``, ``padding``, ``truncation``)
        or :func:`image_probe_set` (``labels``, ``file_column``, ``resize``, ``crop``,
        ``mean``, ``std``, ``mode``, ``input_name``); values may be text as given on the
        command line (``resize=256``, ``mean=0.5,0.5,0.5`` or ``mean=imagenet``).

    Raises
    ------
    ActstoreError
        If a file or folder cannot be made into a probe set (one line: what and how to fix),
        or options are given that the source does not take.
    """
    from actstore.store._images import IMAGE_OPTIONS, image_probe_set
    from actstore.store._text import TEXT_OPTIONS, text_probe_set

    opts = dict(options or {})
    p = Path(source)
    suffix = p.suffix.lower()
    given = [o for o, v in (("--tokenizer", tokenizer), ("--max-length", max_length),
                            ("--text-column", None if text_column == "text" else 1))
             if v is not None]
    if suffix in TEXT_SUFFIXES or suffix == ".npz" or p.is_dir():
        takes = (TEXT_OPTIONS if suffix in TEXT_SUFFIXES else
                 IMAGE_OPTIONS if p.is_dir() and suffix != ".npz" else ())
        odd = [k for k in opts if k not in takes]
        what = ("a table of sentences" if suffix in TEXT_SUFFIXES else
                "an .npz file" if suffix == ".npz" else "an image folder")
        if odd:
            raise ActstoreError(
                f"probe-set option {odd[0]!r} does not apply to {what} ({p}); options it "
                f"takes: {', '.join(takes) or 'none'}"
            )
        if given and suffix not in TEXT_SUFFIXES:
            raise ActstoreError(f"{given[0]} applies to a table of sentences (.csv, .jsonl), "
                                f"not to {what} ({p})")
    elif given or opts:
        raise ActstoreError(
            f"probe set {str(source)!r} is no .npz, .csv or .jsonl file and no folder, so it "
            "names a probe set in the store, which takes no "
            f"{(given or ['probe-set options'])[0]}"
        )
    if suffix == ".npz":
        return probe_set_from_npz(p, name)
    if suffix in TEXT_SUFFIXES:
        if tokenizer is None:
            raise ActstoreError(
                f"probe set {p} is a table of sentences: give the tokenizer folder that "
                "tokenises them with --tokenizer PATH (a folder written by "
                "tokenizer.save_pretrained)"
            )
        if "truncation" in opts and isinstance(opts["truncation"], str):
            opts["truncation"] = opts["truncation"].lower() in ("1", "true", "yes")
        if isinstance(opts.get("labels"), str):
            opts["labels"] = [c.strip() for c in opts["labels"].split(",") if c.strip()]
        return text_probe_set(p, tokenizer, name=name, text_column=text_column,
                              max_length=max_length, **opts)
    if p.is_dir():
        for key in ("resize", "crop"):
            if isinstance(opts.get(key), str):
                opts[key] = [_number(key, v) for v in opts[key].split(",")]
        for key in ("mean", "std"):
            if isinstance(opts.get(key), str) and opts[key] != "imagenet":
                opts[key] = [_number(key, v, float) for v in opts[key].split(",")]
        return image_probe_set(p, name=name, **opts)
    return None
