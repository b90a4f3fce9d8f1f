"""Study files: a sweep to train and the analyses to run on it, at one of two scales.

A study is a TOML file in ``actstore/studies/`` (or any path)::

    name = "hermann2020"
    description = "..."
    paper = "Hermann & Lampinen, NeurIPS 2020"

    [sweep]                      # a sweep document (see actstore/training/sweeps/*.toml)
    datasets = ["trifeature"]
    ...

    [[analysis]]                 # run in order after training
    kind = "probe"               # a name of actstore.analyses.ANALYSES
    name = "main"                # result name under /results/<group>/
    folds = 5                    # options of that kind (Analysis.options)

    [scale.small]                # merged on top of the base tables for --scale small
    variants = ["a", "b"]        # keep only these sweep variants (optional)
    [scale.small.sweep.train]
    steps = 300
    [scale.small.analysis.probe] # options for every analysis of that kind
    folds = 3

Every key and option is checked before anything is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actstore._errors import ActstoreError
from actstore.analyses import ANALYSES

__all__ = ["SCALES", "STUDY_DIR", "Study", "builtin_studies", "load_study"]

#: Study files shipped with actstore.
STUDY_DIR = Path(__file__).resolve().parent
SCALES = ("small", "paper")
_TOP = ("name", "description", "paper", "sweep", "analysis", "scale")
_SCALE = ("description", "variants", "sweep", "analysis")


@dataclass
class Study:
    """A study at one scale: the sweep to train and the analyses to run.

    Attributes
    ----------
    name, description, paper : str
    scale : str
    sweep : actstore.training.Sweep
    analyses : list of dict
        ``kind``, ``name`` and the options of each analysis, in order.
    source : str
        Where the study was read from.
    """

    name: str
    description: str
    paper: str
    scale: str
    sweep: Any
    analyses: list[dict[str, Any]]
    source: str


def builtin_studies() -> list[str]:
    """Names of the studies shipped with actstore."""
    return sorted(p.stem for p in STUDY_DIR.glob("*.toml"))


def _check_keys(table: Any, valid: tuple[str, ...], where: str) -> dict[str, Any]:
    """The sweep files' key check (imported here, not at start-up: training imports torch)."""
    from actstore.training import check_table_keys as check_keys

    return check_keys(table, valid, where)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: options whose values are checked before training: name -> (check, what is expected)
_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "folds": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "bootstrap": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "ci": (lambda v: _is_num(v) and 0 < v < 1, "a number between 0 and 1"),
    "k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "n_clusters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "decoders": (lambda v: isinstance(v, list) and bool(v)
                 and all(isinstance(x, str) for x in v), "a list of decoder names"),
}


def _check_values(opts: dict[str, Any], where: str) -> None:
    """Refuse option values that would only fail after training (``folds = "5"``)."""
    for key, value in opts.items():
        if key in _VALUES and not _VALUES[key][0](value):
            raise ActstoreError(f"{where}: {key} = {value!r} must be {_VALUES[key][1]}")


def _study_path(source: str) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    if source not in builtin_studies():
        raise ActstoreError(
            f"study {source!r} is neither a file nor a built-in study; built-in: "
            f"{', '.join(builtin_studies())}"
        )
    return STUDY_DIR / f"{source}.toml"


def _sweep(doc: dict[str, Any], sc: dict[str, Any], name: str, scale: str, path: Path) -> Any:
    """The study's sweep at ``scale``: the base ``[sweep]`` with the scale's on top."""
    from actstore.training import merge_tables, parse_sweep

    base = doc.get("sweep", {})
    over_sweep = sc.get("sweep", {})
    _check_keys(over_sweep, tuple(over_sweep) if isinstance(over_sweep, dict) else (),
                f"[scale.{scale}.sweep]")
    sweep_doc = merge_tables(_check_keys(base, tuple(base) if isinstance(base, dict) else (),
                                         "[sweep]"), over_sweep)
    keep = sc.get("variants")
    if keep is not None:
        if not isinstance(keep, list) or not all(isinstance(v, str) for v in keep):
            raise ActstoreError(f"[scale.{scale}] variants must be a list of variant names, "
                                f"got {keep!r}")
        have = sweep_doc.get("variants", {})
        missing = [v for v in keep if v not in have]
        if missing:
            raise ActstoreError(
                f"[scale.{scale}] variants {missing} are not variants of the sweep; "
                f"variants: {', '.join(have) or 'none'}"
            )
        sweep_doc["variants"] = {v: have[v] for v in keep}
    sweep_doc["name"] = f"{name}-{scale}"
    return parse_sweep(sweep_doc, source=f"{path.name} [sweep] at scale {scale}")


def _analyses(doc: dict[str, Any], sc: dict[str, Any], scale: str,
              path: Path) -> list[dict[str, Any]]:
    """The ``[[analysis]]`` entries with the scale's options on top, each checked."""
    over = _check_keys(sc.get("analysis", {}), tuple(ANALYSES), f"[scale.{scale}.analysis]")
    for kind, opts in over.items():
        _check_keys(opts, ANALYSES[kind].options, f"[scale.{scale}.analysis.{kind}]")
    analyses: list[dict[str, Any]] = []
    names: set[tuple[str, str]] = set()
    entries = doc.get("analysis", [])
    if not isinstance(entries, list):
        raise ActstoreError(
            f"analysis of {path.name} must be a list of [[analysis]] tables, got {entries!r}"
        )
    for i, a in enumerate(entries):
        where = f"[[analysis]] #{i + 1} of {path.name}"
        if not isinstance(a, dict) or a.get("kind") not in ANALYSES:
            raise ActstoreError(
                f"{where}: kind must be one of {', '.join(ANALYSES)}, got "
                f"{a.get('kind') if isinstance(a, dict) else a!r}"
            )
        kind = a["kind"]
        opts = {k: v for k, v in a.items() if k not in ("kind", "name")}
        opts.update(over.get(kind, {}))
        _check_keys(opts, ANALYSES[kind].options, f"{where} (kind {kind})")
        _check_values(opts, f"{where} (kind {kind})")
        aname = str(a.get("name", "main"))
        if not aname or not all(c.isalnum() or c in "_-" for c in aname):
            raise ActstoreError(f"{where}: name {aname!r} must use letters, digits, _ and -")
        if (kind, aname) in names:
            raise ActstoreError(f"{where}: two {kind} analyses are named {aname!r}")
        names.add((kind, aname))
        analyses.append({"kind": kind, "name": aname, **opts})
    for a in analyses:  # bad settings (decoder names, devices) fail now, not after training
        ANALYSES[a["kind"]].configure({k: v for k, v in a.items() if k not in ("kind", "name")})
    return analyses


def load_study(source: str, scale: str = "small") -> Study:
    """Read and check a study (a built-in name or a TOML file) at ``scale``.

    Raises
    ------
    ActstoreError
        An unknown study, scale, key, analysis kind or option (the message lists the valid
        ones), or a sweep that does not check (:func:`actstore.training.parse_sweep`).
    """
    from actstore.training import read_toml

    path = _study_path(source)
    doc = read_toml(path, "study")
    _check_keys(doc, _TOP, f"study {path.name}")
    scales = _check_keys(doc.get("scale", {}), SCALES, "[scale]")
    if scale not in SCALES:
        raise ActstoreError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    sc = _check_keys(scales.get(scale, {}), _SCALE, f"[scale.{scale}]")
    name = str(doc.get("name", path.stem))
    sweep = _sweep(doc, sc, name, scale, path)
    return Study(name=name, description=str(doc.get("description", "")),
                 paper=str(doc.get("paper", "")), scale=scale, sweep=sweep,
                 analyses=_analyses(doc, sc, scale, path), source=str(path))
