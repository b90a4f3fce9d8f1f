"""Sweeps: datasets x tasks x models x seeds x variants, from a TOML file or CLI ranges, run as
parallel Dask tasks (one task per run) that write different runs of one store.

A sweep file (see ``actstore/training/sweeps/*.toml`` and docs/training.md)::

    name = "demo"
    datasets = ["trifeature"]
    tasks = ["shape", "texture", "color"]   # or a table: {trifeature = ["shape"], ...}
    models = ["alexnet"]
    seeds = [0, 1]                          # or "0:5"

    [train]                                 # TrainConfig fields
    steps = 300
    [capture]                               # CaptureConfig fields
    reduce = "mean"
    [dataset.trifeature]                    # keyword parameters of the dataset
    image_size = 32
    [model.alexnet]                         # keyword parameters of the model
    width = 16
    [variants.p05.dataset.trifeature]       # named variants override any of the above
    p = 0.5
    [variants.bits]                         # ... and may train other datasets, tasks, models
    datasets = ["binary"]                   # or seeds than the sweep's (each axis it names
    tasks = ["label"]                       # replaces the sweep's)
    models = ["mlp"]

Every key is checked; unknown keys, names and parameters are errors that list the valid ones.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from actstore._errors import ActstoreError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from actstore.training._checks import check_table_keys
from actstore.training._registry import DATASETS, MODELS, TASKS, lookup
from actstore.training._run import CaptureConfig, RunSpec
from actstore.training._trainer import TrainConfig

__all__ = [
    "SWEEP_DIR",
    "Sweep",
    "builtin_sweeps",
    "check_table_keys",
    "load_sweep",
    "merge_tables",
    "parse_seeds",
    "parse_sweep",
    "parse_value",
    "read_sweep",
    "read_toml",
    "set_option",
]

#: Directory of the sweep files shipped with actstore.
SWEEP_DIR = Path(__file__).parent / "sweeps"

_TOP = ("name", "description", "datasets", "tasks", "models", "seeds", "train", "capture",
        "dataset", "model", "variants")
_VARIANT = ("description", "datasets", "tasks", "models", "seeds", "train", "capture", "dataset",
            "model")
_AXES = ("datasets", "tasks", "models", "seeds")


@dataclass
class Sweep:
    """A named list of runs.

    Attributes
    ----------
    name : str
    runs : list of RunSpec
        In expansion order (dataset, task, model, variant, seed).
    description : str
    """

    name: str
    runs: list[RunSpec]
    description: str = ""


def builtin_sweeps() -> list[str]:
    """Names of the sweep files shipped with actstore.

    Returns
    -------
    list of str
        Sorted file stems, each usable as ``source`` of :func:`load_sweep`.
    """
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


def read_toml(path: Path, what: str = "sweep") -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or invalid file is one :class:`ActstoreError`
    naming the file (``what``: the kind of file, as the message words it)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ActstoreError(f"{what} file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ActstoreError(
            f"{what} file {path} is not UTF-8 text ({e.reason} at byte {e.start}); TOML files "
            "are UTF-8"
        ) from None
    except OSError as e:
        raise ActstoreError(f"cannot read {what} file {path}: {e.strerror or e}") from None


def read_sweep(source: str | Path) -> tuple[dict[str, Any], str]:
    """The document of a sweep file or built-in sweep, and where it came from."""
    path = Path(source)
    if not path.is_file():
        if str(source) in builtin_sweeps():
            path = SWEEP_DIR / f"{source}.toml"
        else:
            raise ActstoreError(
                f"sweep {str(source)!r} is neither a file nor a built-in sweep; built-in: "
                f"{', '.join(builtin_sweeps())}"
            )
    doc = read_toml(path)
    doc.setdefault("name", path.stem)
    return doc, str(path)


def load_sweep(
    source: str | Path | None,
    overrides: dict[str, Any] | None = None,
    sets: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
) -> Sweep:
    """Read and check a sweep.

    Parameters
    ----------
    source : str or Path or None
        A TOML file or a built-in name (:func:`builtin_sweeps`); ``None`` builds the sweep
        from ``overrides`` alone (which must then name datasets, tasks and models).
    overrides : dict, optional
        Merged on top of the file (same structure), e.g. from CLI ranges.
    sets : list of (key, value)
        ``--set`` options applied last (see :func:`set_option`).

    Returns
    -------
    Sweep
        The checked sweep, expanded into runs (nothing is trained or written).

    Raises
    ------
    ActstoreError
        If the file or built-in name is not found or is not valid TOML, ``source`` is
        ``None`` and ``overrides`` lacks datasets, tasks or models, or the document fails
        the checks of :func:`parse_sweep`.
    """
    if source is None:
        doc, where = {"name": "cli"}, "command line"
        missing = [k for k in ("datasets", "tasks", "models") if k not in (overrides or {})]
        if missing:
            raise ActstoreError(
                f"give a sweep file (or built-in name), or the sweep's {', '.join(missing)}; "
                "see `actstore train --list`"
            )
    else:
        doc, where = read_sweep(source)
    doc = merge_tables(doc, overrides or {})
    for key, value in sets:
        set_option(doc, key, value)
    return parse_sweep(doc, source=where)


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge of two TOML-like documents (``over`` wins; tables merge)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_tables(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """A CLI value as TOML (``64``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_seeds(value: Any) -> list[int]:
    """Seeds from a list, an int, ``"a:b"`` (range, b excluded) or ``"0,3,7"``."""
    if isinstance(value, bool):
        raise ActstoreError(f"seeds must be integers, got {value!r}")
    if isinstance(value, int):
        seeds = [value]
    elif isinstance(value, list):
        seeds = value
    elif isinstance(value, str):
        try:
            if ":" in value:
                a, b = value.split(":")
                seeds = list(range(int(a), int(b)))
            else:
                seeds = [int(s) for s in value.split(",") if s.strip()]
        except ValueError:
            raise ActstoreError(
                f"seeds {value!r}: use a range like 0:5, a list like 0,1,2, or one integer"
            ) from None
    else:
        raise ActstoreError(f"seeds must be a list, a range 'a:b' or an integer, got {value!r}")
    if not seeds and isinstance(value, str) and ":" in value:
        raise ActstoreError(
            f"seeds {value!r} is an empty range: a:b gives the seeds a, a+1, ..., b-1 (b "
            "excluded); give a < b, e.g. 0:3"
        )
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad or not seeds:
        raise ActstoreError(f"seeds must be integers >= 0 (at least one), got {value!r}")
    return list(dict.fromkeys(seeds))


def set_option(doc: dict[str, Any], key: str, value: Any) -> None:
    """Apply a CLI ``--set KEY=VALUE`` to a sweep document.

    ``train.X``, ``capture.X``, ``dataset.NAME.X``, ``model.NAME.X``; ``dataset.X`` /
    ``model.X`` apply to every dataset / model of the sweep.
    """
    parts = key.split(".")
    head = parts[0]
    if head in ("train", "capture") and len(parts) == 2:
        doc.setdefault(head, {})[parts[1]] = value
        return
    if head in ("dataset", "model") and len(parts) in (2, 3):
        names = doc.get(head + "s") or []
        if len(parts) == 3:
            names = [parts[1]]
        elif not names:
            raise ActstoreError(f"--set {key}: give the {head} name, as {head}.NAME.{parts[1]}")
        for name in names:
            doc.setdefault(head, {}).setdefault(name, {})[parts[-1]] = value
        return
    raise ActstoreError(
        f"--set {key}: use train.KEY, capture.KEY, dataset[.NAME].KEY or model[.NAME].KEY"
    )


def _names(doc: dict[str, Any], key: str, registry: dict[str, Any], what: str) -> list[str]:
    v = doc.get(key)
    if v is None:
        raise ActstoreError(f"the sweep names no {key}; give {key} = [...] (valid: "
                            f"{', '.join(registry)})")
    names = [v] if isinstance(v, str) else v
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ActstoreError(f"sweep key {key} must be a list of names, got {v!r}")
    for n in names:
        lookup(registry, n, what)
    return list(dict.fromkeys(names))


def _axes(doc: dict[str, Any], where: str = "") -> tuple[list[str], dict[str, list[str]],
                                                       list[str], list[int]]:
    """The datasets, tasks (per dataset), models and seeds of a sweep or of one variant
    (``where``: the variant's table, for messages)."""
    try:
        datasets = _names(doc, "datasets", DATASETS, "dataset")
        models = _names(doc, "models", MODELS, "model")
        tasks_v = doc.get("tasks")
        if isinstance(tasks_v, dict):
            check_table_keys(tasks_v, datasets, "[tasks]")
            tasks = {d: _names(tasks_v, d, TASKS, "task") for d in datasets if d in tasks_v}
            missing = [d for d in datasets if d not in tasks]
            if missing:
                raise ActstoreError(
                    f"[tasks] gives no tasks for dataset(s) {', '.join(missing)}")
        else:
            names = _names(doc, "tasks", TASKS, "task")
            tasks = {d: names for d in datasets}
        seeds = parse_seeds(doc.get("seeds", [0]))
    except ActstoreError as e:
        raise ActstoreError(f"{where}{e}") from None
    return datasets, tasks, models, seeds


def _dataclass_from(cls: Any, table: Any, where: str) -> Any:
    check_table_keys(table, [f.name for f in fields(cls)], where)
    return cls(**table)


def _params_tables(doc: dict[str, Any], key: str, registry: dict[str, Any], where: str
                   ) -> dict[str, dict[str, Any]]:
    tables = check_table_keys(doc.get(key, {}), list(registry), f"[{where}{key}]")
    for name, t in tables.items():
        check_table_keys(t, list(t), f"[{where}{key}.{name}]")  # must be a table
    return tables


def parse_sweep(doc: dict[str, Any], source: str = "<sweep>") -> Sweep:
    """Check a sweep document and expand it into runs (nothing is trained or written).

    Parameters
    ----------
    doc : dict
        The sweep document, as read from TOML (top-level keys ``datasets``, ``tasks``,
        ``models``, ``seeds``, ``train``, ``capture``, ``dataset``, ``model``, ``variants``...).
    source : str
        Where the document came from, for messages.

    Returns
    -------
    Sweep
        One :class:`RunSpec` per (variant, dataset, task, model, seed).

    Raises
    ------
    ActstoreError
        For an unknown key, name or parameter, a task that does not apply to a dataset, or two
        runs with the same id; the message names the place in the document.
    """
    check_table_keys(doc, _TOP, f"sweep {source}")
    axes = _axes(doc)
    base = {k: doc.get(k, {}) for k in ("train", "capture", "dataset", "model")}
    _params_tables(base, "dataset", DATASETS, "")
    _params_tables(base, "model", MODELS, "")
    variants_doc = check_table_keys(doc.get("variants", {}), list(doc.get("variants", {})),
                               "[variants]")
    variants: list[tuple[str, dict[str, Any], Any]] = [("", base, axes)]
    if variants_doc:
        variants = []
        for vname, vdoc in variants_doc.items():
            if not vname or not all(c.isalnum() or c in "_." for c in vname):
                raise ActstoreError(
                    f"variant name {vname!r} must use letters, digits, '_' or '.' (it becomes "
                    "part of run ids)"
                )
            check_table_keys(vdoc, _VARIANT, f"[variants.{vname}]")
            _params_tables(vdoc, "dataset", DATASETS, f"variants.{vname}.")
            _params_tables(vdoc, "model", MODELS, f"variants.{vname}.")
            over = {k: v for k, v in vdoc.items() if k not in ("description", *_AXES)}
            own = {k: vdoc[k] for k in _AXES if k in vdoc}
            variants.append((vname, merge_tables(base, over),
                             _axes({**{k: doc[k] for k in _AXES if k in doc}, **own},
                                   f"[variants.{vname}] ") if own else axes))

    runs: list[RunSpec] = []
    for vname, vdoc, (datasets, tasks, models, seeds) in variants:
        where = f"[variants.{vname}]" if vname else "sweep"
        train = _dataclass_from(TrainConfig, vdoc.get("train", {}), f"[train] of {where}")
        capture = _dataclass_from(CaptureConfig, vdoc.get("capture", {}),
                                  f"[capture] of {where}")
        for d in datasets:
            for task, model in itertools.product(tasks[d], models):
                for seed in seeds:
                    runs.append(RunSpec(
                        dataset=d, task=task, model=model, seed=seed,
                        dataset_params=dict(vdoc.get("dataset", {}).get(d, {})),
                        model_params=dict(vdoc.get("model", {}).get(model, {})),
                        train=train, capture=capture, variant=vname,
                    ))
    ids = [r.run_id for r in runs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ActstoreError(f"the sweep gives several runs the same id: {', '.join(dup[:5])}")
    name = str(doc.get("name", Path(source).stem))
    return Sweep(name=name, runs=runs, description=str(doc.get("description", "")))


merge = merge_tables
_read_toml = read_toml
_check_keys = check_table_keys
