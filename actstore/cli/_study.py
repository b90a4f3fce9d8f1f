"""``actstore study``: run one of the four studies end to end (train -> analyses -> report).

A study is a TOML file in ``actstore/training/studies/`` (or any path)::

    name = "hermann2020"
    description = "..."
    paper = "Hermann & Lampinen, NeurIPS 2020"

    [sweep]                      # a sweep document (see actstore/training/sweeps/*.toml)
    datasets = ["trifeature"]
    ...

    [[analysis]]                 # run in order after training
    kind = "probe"               # probe | variance | similarity | align | complexity
    name = "main"                # result name under /results/<analysis>/
    folds = 5                    # options of that kind (listed in ANALYSES)

    [scale.small]                # merged on top of the base tables for --scale small
    variants = ["a", "b"]        # keep only these sweep variants (optional)
    [scale.small.sweep.train]
    steps = 300
    [scale.small.analysis.probe] # options for every analysis of that kind
    folds = 3

Every key and option is checked before anything is trained. Each stage calls the library
(:func:`actstore.training.run_sweep`, :func:`actstore.probes.run_probes`, ...); re-running a
study resumes: complete runs are skipped and finished probe jobs are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from actstore._dask import check_workers
from actstore._errors import ActstoreError
from actstore.cli._app import command

__all__ = [
    "ANALYSES",
    "SCALES",
    "STUDY_DIR",
    "Study",
    "StudyReport",
    "builtin_studies",
    "load_study",
    "run_study",
]

console = Console(stderr=True, soft_wrap=True)

#: Study files shipped with actstore.
STUDY_DIR = Path(__file__).resolve().parent.parent / "training" / "studies"
SCALES = ("small", "paper")
_TOP = ("name", "description", "paper", "sweep", "analysis", "scale")
_SCALE = ("description", "variants", "sweep", "analysis")


# -- analyses: kind -> (allowed options, runner) ----------------------------------------------


def _csv(v: Any) -> Any:
    return ",".join(str(x) for x in v) if isinstance(v, list) else v


def _probe(url: str, name: str, o: dict[str, Any], ex: dict[str, Any]) -> Any:
    from actstore.probes import ProbeConfig, run_probes

    config = ProbeConfig(decoders=tuple(o.get("decoders", ("ridge", "logistic"))),
                         n_splits=int(o.get("folds", 5)), seed=int(o.get("seed", 0)),
                         split=o.get("split"), device=o.get("device", "numpy"))
    return run_probes(url, name=name, runs=_csv(o.get("runs")),
                      checkpoints=_csv(o.get("checkpoints")),
                      layers=_csv(o.get("layers", "all")), features=_csv(o.get("features")),
                      config=config, scheduler=ex["scheduler"],
                      n_workers=1 if ex["local"] else ex["workers"])


def _variance(url: str, name: str, o: dict[str, Any], ex: dict[str, Any]) -> Any:
    from actstore.probes import run_variance

    return run_variance(url, name=name, runs=_csv(o.get("runs")),
                        checkpoints=_csv(o.get("checkpoints")),
                        layers=_csv(o.get("layers", "all")), features=_csv(o.get("features")),
                        n_splits=int(o.get("folds", 5)), seed=int(o.get("seed", 0)),
                        split=o.get("split"), denominator=o.get("denominator", "final"),
                        scheduler=ex["scheduler"], n_workers=1 if ex["local"] else ex["workers"])


def _similarity(url: str, name: str, o: dict[str, Any], ex: dict[str, Any]) -> Any:
    from actstore.probes import similarity_job

    sel: dict[str, Any] = {k: o[k] for k in ("runs", "layers", "checkpoints", "where",
                                             "stimuli") if k in o}
    for k in ("runs", "layers"):
        if k in sel:
            sel[k] = None if sel[k] == "all" else _csv(sel[k])
    return similarity_job(url, sel, metric=o.get("metric", "cka"), params=o.get("params"),
                          name=name, bootstrap=int(o.get("bootstrap", 0)),
                          ci=float(o.get("ci", 0.95)), seed=int(o.get("seed", 0)),
                          scheduler="sync" if ex["local"] else ex["scheduler"],
                          n_workers=ex["workers"])


def _seed_groups(url: str, pattern: Any) -> dict[str, list[str]]:
    """Runs that differ only in their seed, grouped (``<dataset>-<task>-<model>[-variant]``)."""
    import fnmatch

    from actstore.store import open_store

    st = open_store(url)
    pats = None if pattern in (None, "all") else [p.strip() for p in _csv(pattern).split(",")]
    groups: dict[str, list[str]] = {}
    for rid in st.run_ids():
        if pats is not None and not any(fnmatch.fnmatchcase(rid, p) for p in pats):
            continue
        a = st.reader(rid).attrs
        key = "-".join(str(a.get(k) or "") for k in ("dataset", "task", "model", "variant"))
        key = "".join(c if c.isalnum() or c in "_-" else "_" for c in key.strip("-"))
        groups.setdefault(key, []).append(rid)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def _align(url: str, name: str, o: dict[str, Any], ex: dict[str, Any]) -> Any:
    from actstore.probes import alignment_job

    groups = _seed_groups(url, o.get("runs"))
    if not groups:
        raise ActstoreError(
            f"alignment needs at least two runs that differ only in their seed in {url}"
        )
    out = {}
    for key, runs in groups.items():
        kw = {k: o[k] for k in ("mutual_info", "lasso", "n_clusters", "seed", "stimuli")
              if k in o}
        out[key] = alignment_job(url, runs, layers=_csv(o.get("layers")),
                                 checkpoint=o.get("checkpoint", "last"), name=f"{name}-{key}",
                                 scheduler="sync" if ex["local"] else ex["scheduler"],
                                 n_workers=ex["workers"], **kw)
    return out


def _complexity(url: str, name: str, o: dict[str, Any], ex: dict[str, Any]) -> Any:
    from actstore.probes import run_complexity

    kw = {k: o[k] for k in ("k", "layer", "step", "layers", "seed", "split", "threshold",
                            "importance", "negative", "max_epochs") if k in o}
    return run_complexity(url, name=name, runs=_csv(o.get("runs")),
                          n_splits=int(o.get("folds", 5)),
                          over_checkpoints=bool(o.get("checkpoints", True)),
                          scheduler=ex["scheduler"],
                          n_workers=1 if ex["local"] else ex["workers"], **kw)


#: kind -> (options it accepts, runner(url, name, options, execution) ).
ANALYSES: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "probe": (("runs", "layers", "checkpoints", "features", "decoders", "folds", "seed",
               "split", "device"), _probe),
    "variance": (("runs", "layers", "checkpoints", "features", "folds", "seed", "split",
                  "denominator"), _variance),
    "similarity": (("runs", "layers", "checkpoints", "where", "stimuli", "metric", "params",
                    "bootstrap", "ci", "seed"), _similarity),
    "align": (("runs", "layers", "checkpoint", "stimuli", "mutual_info", "lasso",
               "n_clusters", "seed"), _align),
    "complexity": (("runs", "k", "layer", "step", "layers", "folds", "seed", "split",
                    "threshold", "checkpoints", "importance", "negative", "max_epochs"),
                   _complexity),
}


# -- study files ------------------------------------------------------------------------------


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
    if not isinstance(table, dict):
        raise ActstoreError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ActstoreError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {where}; "
            f"valid keys: {', '.join(valid)}"
        )
    return table


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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_values(opts: dict[str, Any], where: str) -> None:
    """Refuse option values that would only fail after training (``folds = "5"``)."""
    for key, value in opts.items():
        if key in _VALUES and not _VALUES[key][0](value):
            raise ActstoreError(f"{where}: {key} = {value!r} must be {_VALUES[key][1]}")


def load_study(source: str, scale: str = "small") -> Study:
    """Read and check a study (a built-in name or a TOML file) at ``scale``.

    Raises
    ------
    ActstoreError
        An unknown study, scale, key, analysis kind or option (the message lists the valid
        ones), or a sweep that does not check (:func:`actstore.training.parse_sweep`).
    """
    from actstore.training._sweep import merge, parse_sweep

    path = Path(source)
    if not path.is_file():
        if source not in builtin_studies():
            raise ActstoreError(
                f"study {source!r} is neither a file nor a built-in study; built-in: "
                f"{', '.join(builtin_studies())}"
            )
        path = STUDY_DIR / f"{source}.toml"
    from actstore.training._sweep import _read_toml

    doc = _read_toml(path, "study")
    _check_keys(doc, _TOP, f"study {path.name}")
    scales = _check_keys(doc.get("scale", {}), SCALES, "[scale]")
    if scale not in SCALES:
        raise ActstoreError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    sc = _check_keys(scales.get(scale, {}), _SCALE, f"[scale.{scale}]")
    name = str(doc.get("name", path.stem))
    base = doc.get("sweep", {})
    over_sweep = sc.get("sweep", {})
    _check_keys(over_sweep, tuple(over_sweep) if isinstance(over_sweep, dict) else (),
                f"[scale.{scale}.sweep]")
    sweep_doc = merge(_check_keys(base, tuple(base) if isinstance(base, dict) else (),
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
    sweep = parse_sweep(sweep_doc, source=f"{path.name} [sweep] at scale {scale}")
    over = _check_keys(sc.get("analysis", {}), tuple(ANALYSES), f"[scale.{scale}.analysis]")
    for kind, opts in over.items():
        _check_keys(opts, ANALYSES[kind][0], f"[scale.{scale}.analysis.{kind}]")
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
        _check_keys(opts, ANALYSES[kind][0], f"{where} (kind {kind})")
        _check_values(opts, f"{where} (kind {kind})")
        aname = str(a.get("name", "main"))
        if not aname or not all(c.isalnum() or c in "_-" for c in aname):
            raise ActstoreError(f"{where}: name {aname!r} must use letters, digits, _ and -")
        if (kind, aname) in names:
            raise ActstoreError(f"{where}: two {kind} analyses are named {aname!r}")
        names.add((kind, aname))
        analyses.append({"kind": kind, "name": aname, **opts})
    if "probe" in {a["kind"] for a in analyses}:
        from actstore.probes import ProbeConfig

        for a in analyses:  # bad decoder names or devices fail now, not after training
            if a["kind"] == "probe":
                ProbeConfig(decoders=tuple(a.get("decoders", ("ridge", "logistic"))),
                            device=a.get("device", "numpy"))
    return Study(name=name, description=str(doc.get("description", "")),
                 paper=str(doc.get("paper", "")), scale=scale, sweep=sweep,
                 analyses=analyses, source=str(path))


# -- running ----------------------------------------------------------------------------------


@dataclass
class StudyReport:
    """What a study run did.

    Attributes
    ----------
    study, scale, store : str
    stages : list of dict
        ``stage`` (``train``, ``<kind>:<name>``, ``report``) and ``wall_s``.
    report : str
        Path of the HTML page.
    store_bytes : int or None
    wall_s : float
    failed_runs : list of str
    problems : list of str
        Figures the report could not draw.
    """

    study: str
    scale: str
    store: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""
    store_bytes: int | None = None
    wall_s: float = 0.0
    failed_runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {"study": self.study, "scale": self.scale, "store": self.store,
                "stages": self.stages, "report": self.report, "store_bytes": self.store_bytes,
                "wall_s": round(self.wall_s, 3), "failed_runs": self.failed_runs,
                "problems": self.problems}


def run_study(
    study: Study,
    store: str,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    serial: bool = False,
    report_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> StudyReport:
    """Train the study's sweep into ``store``, run its analyses, and write the report.

    Parameters
    ----------
    study : Study
    store : str
        Store path or URL (created if missing; a re-run resumes).
    workers : int, optional
        Local Dask workers for training (default one per core); ``1`` runs everything in
        this process. Analyses run in this process unless ``workers > 1`` or ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler for training and analyses.
    serial : bool
        Train in this process, one run after another.
    report_dir : str, optional
        Folder of the HTML report (default ``<store>-report`` for a local store).
    progress : bool
        Progress bars while training.
    log : callable, optional
        Receives one line per finished stage.
    """
    from actstore.probes import write_report
    from actstore.training import run_sweep
    from actstore.training._demo import store_size

    check_workers(workers)
    if report_dir is None:
        from actstore.probes import default_report_dir

        report_dir = default_report_dir(store)  # a remote store without --out fails here
    t0 = time.perf_counter()
    rep = StudyReport(study=study.name, scale=study.scale, store=store)
    local = serial or workers == 1 or (scheduler is None and (workers or 0) <= 1)
    ex = {"local": local and scheduler is None, "scheduler": scheduler, "workers": workers}

    def stage(label: str, t: float) -> None:
        rep.stages.append({"stage": label, "wall_s": round(time.perf_counter() - t, 3)})
        if log is not None:
            log(f"{label}: {rep.stages[-1]['wall_s']:.1f} s")

    t = time.perf_counter()
    sweep_rep = run_sweep(study.sweep, store, scheduler=scheduler, n_workers=workers,
                          serial=serial or workers == 1, progress=progress,
                          console=console if progress else None)
    rep.failed_runs = [r["run_id"] for r in sweep_rep.failed]
    if rep.failed_runs:
        first = sweep_rep.failed[0]
        raise ActstoreError(
            f"{len(rep.failed_runs)} run(s) of study {study.name!r} failed (first: "
            f"{first['run_id']}: {first.get('error')}); the analyses were not run"
        )
    stage("train", t)
    for a in study.analyses:
        t = time.perf_counter()
        opts = {k: v for k, v in a.items() if k not in ("kind", "name")}
        ANALYSES[a["kind"]][1](store, a["name"], opts, ex)
        stage(f"{a['kind']}:{a['name']}", t)
    t = time.perf_counter()
    page = write_report(store, out=report_dir,
                        title=f"{study.name} ({study.scale}): {study.description}")
    rep.report, rep.problems = page.path, page.problems
    stage("report", t)
    rep.store_bytes = store_size(store)
    rep.wall_s = time.perf_counter() - t0
    return rep


@command(
    "study",
    help=(
        "Run one of the four studies end to end: train its sweep, run its analyses (probes, "
        "variance, similarity, alignment, complexity) and write the HTML report. "
        "Studies: hermann2020, lampinen2024, fel2024, li2016 (or a study TOML file). "
        "--scale small finishes on 2 CPU cores in minutes; paper uses the published sizes."
    ),
)
def study_cmd(
    study: Annotated[str, typer.Argument(help="Study name or TOML file.")] = "",
    store: Annotated[
        str | None, typer.Argument(help="Store path or URL (default: STUDY-SCALE.zarr).")
    ] = None,
    scale: Annotated[str, typer.Option(help="small or paper.")] = "small",
    out: Annotated[
        str | None, typer.Option("--out", help="Report folder (default: STORE-report).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers (1 = everything in this process).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler.")
    ] = None,
    serial: Annotated[
        bool, typer.Option("--serial", help="Train in this process, one run after another.")
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the studies and exit.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the study and print its plan only.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    if list_ or not study:
        for name in builtin_studies():
            s = load_study(name, "small")
            typer.echo(f"{name:14s} {s.description} [{s.paper}]")
        return
    from actstore._dask import check_workers

    check_workers(workers)
    st = load_study(study, scale)
    store = store or f"{st.name}-{scale}.zarr"
    if dry_run:
        from actstore.training import plan_sweep

        plan_sweep(st.sweep, store)  # the store path, and runs already in it, are checked
        plan = {"study": st.name, "scale": scale, "store": store,
                "runs": [r.run_id for r in st.sweep.runs],
                "analyses": [f"{a['kind']}:{a['name']}" for a in st.analyses]}
        typer.echo(json.dumps(plan) if as_json else
                   f"{st.name} ({scale}): {len(plan['runs'])} runs into {store}; analyses: "
                   f"{', '.join(plan['analyses'])}, then the report")
        return
    try:
        rep = run_study(st, store, workers=workers, scheduler=scheduler, serial=serial,
                        report_dir=out, progress=not as_json,
                        log=None if as_json else (lambda m: console.print(m, highlight=False)))
    except KeyboardInterrupt as e:  # a probe stage says what it saved
        from actstore.cli._train import interrupted

        raise interrupted(str(e)) from None
    if as_json:
        typer.echo(json.dumps(rep.to_json()))
        return
    size = "-" if rep.store_bytes is None else f"{rep.store_bytes / 2**20:.1f} MiB"
    Console(soft_wrap=True).print(
        f"study {st.name} ({scale}) done in {rep.wall_s:.1f} s; store {store} ({size}); "
        f"report: {rep.report}"
    )
