"""Running a study: train its sweep, run its analyses in order, write its report.

Each stage calls the library (:func:`actstore.training.run_sweep`, then each analysis's
``run`` from :data:`actstore.analyses.ANALYSES`, then the findings table of the paper's claims
(:func:`write_findings`), then :func:`actstore.report.write_report`);
re-running a study resumes: complete runs are skipped and finished probe jobs are kept.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actstore._errors import ActstoreError
from actstore._execution import Execution
from actstore.analyses import ANALYSES
from actstore.studies._findings import findings_rows, write_findings
from actstore.studies._spec import Study

__all__ = ["StudyReport", "run_study"]


@dataclass
class StudyReport:
    """What a study run did.

    Attributes
    ----------
    study, scale, store : str
    stages : list of dict
        ``stage`` (``train``, ``<kind>:<name>``, ``report``) and ``wall_s``; ``skipped``
        (why) for an analysis whose ``runs`` match no run the study trains at this scale.
    report : str
        Path of the HTML page.
    store_bytes : int or None
    wall_s : float
    failed_runs : list of str
    problems : list of str
        Figures the report could not draw.
    findings : list of dict
        The findings table (:func:`findings_rows`): one row per claim of the paper.
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
    findings: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {"study": self.study, "scale": self.scale, "store": self.store,
                "stages": self.stages, "report": self.report, "store_bytes": self.store_bytes,
                "wall_s": round(self.wall_s, 3), "failed_runs": self.failed_runs,
                "problems": self.problems, "findings": self.findings}


def _narrowed(analysis: dict[str, Any], run_ids: list[str]) -> dict[str, Any] | None:
    """``analysis`` with its ``runs`` patterns narrowed to those matching one of ``run_ids``
    (a study file names the runs of every experiment; a scale may train only some); ``None``
    when none matches."""
    sel = analysis.get("runs")
    if sel is None or sel == "all":
        return analysis
    pats = [p.strip() for p in (",".join(sel) if isinstance(sel, list) else str(sel)).split(",")
            if p.strip()]
    keep = [p for p in pats if any(fnmatch.fnmatchcase(r, p) for r in run_ids)]
    return {**analysis, "runs": ",".join(keep)} if keep else None


def run_study(
    study: Study,
    store: str,
    *,
    execution: Execution | None = None,
    serial: bool = False,
    report_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyReport:
    """Train the study's sweep into ``store``, run its analyses, and write the report.

    Parameters
    ----------
    study : Study
    store : str
        Store path or URL (created if missing; a re-run resumes).
    execution : Execution, optional
        Where training runs (default: local Dask workers, one per core; ``workers=1``
        runs everything in this process) and its progress callback. Analyses run in this
        process unless ``workers > 1`` or a scheduler is given.
    serial : bool
        Train in this process, one run after another.
    report_dir : str, optional
        Folder of the HTML report (default ``<store>-report`` for a local store).
    log : callable, optional
        Receives one line per finished stage.
    """
    from actstore.report import default_report_dir, write_report
    from actstore.training import run_sweep, store_size

    ex = execution or Execution()
    if report_dir is None:
        report_dir = default_report_dir(store)  # a remote store without --out fails here
    t0 = time.perf_counter()
    rep = StudyReport(study=study.name, scale=study.scale, store=store)
    local = serial or ex.workers == 1 or (ex.scheduler is None and (ex.workers or 0) <= 1)
    analysis_ex = ex.with_(workers=1) if local and ex.scheduler is None else ex

    def stage(label: str, t: float) -> None:
        rep.stages.append({"stage": label, "wall_s": round(time.perf_counter() - t, 3)})
        if log is not None:
            log(f"{label}: {rep.stages[-1]['wall_s']:.1f} s")

    t = time.perf_counter()
    sweep_rep = run_sweep(study.sweep, store,
                          execution=ex.with_(scheduler=None, workers=1) if serial else ex)
    rep.failed_runs = [r["run_id"] for r in sweep_rep.failed]
    if rep.failed_runs:
        first = sweep_rep.failed[0]
        raise ActstoreError(
            f"{len(rep.failed_runs)} run(s) of study {study.name!r} failed (first: "
            f"{first['run_id']}: {first.get('error')}); the analyses were not run"
        )
    stage("train", t)
    run_ids = [r.run_id for r in study.sweep.runs]
    for entry in study.analyses:
        a = _narrowed(entry, run_ids)
        if a is None:  # an experiment this scale does not train
            rep.stages.append({"stage": f"{entry['kind']}:{entry['name']}", "wall_s": 0.0,
                               "skipped": f"no run of this scale matches runs = "
                                          f"{entry['runs']!r}"})
            if log is not None:
                log(f"{entry['kind']}:{entry['name']}: skipped ({rep.stages[-1]['skipped']})")
            continue
        t = time.perf_counter()
        analysis = ANALYSES[a["kind"]]
        config, options = analysis.configure(
            {k: v for k, v in a.items() if k not in ("kind", "name")})
        analysis.run(store, a["name"], config, options, analysis_ex)
        stage(f"{a['kind']}:{a['name']}", t)
    t = time.perf_counter()
    table = write_findings(study, store, storage_options=ex.options())
    if table is not None:
        rep.findings = findings_rows(table)
        stage("findings", t)
    t = time.perf_counter()
    page = write_report(store, out=report_dir,
                        title=f"{study.name} ({study.scale}): {study.description}")
    rep.report, rep.problems = page.path, page.problems
    stage("report", t)
    rep.store_bytes = store_size(store)
    rep.wall_s = time.perf_counter() - t0
    return rep
