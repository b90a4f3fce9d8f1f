"""``actstore study``: run one of the studies end to end (train -> analyses -> report).

The studies and their pipeline are :mod:`actstore.studies`; this module reads the options.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from actstore import Execution
from actstore.analyses import ANALYSES
from actstore.cli._app import command
from actstore.cli._progress import progress_display
from actstore.studies import builtin_studies, load_study, run_study

console = Console(stderr=True, soft_wrap=True)


@command(
    "study",
    help=(
        "Run one of the four studies end to end: train its sweep, run its analyses "
        f"({', '.join(a.group for a in ANALYSES.values())}) and write the HTML report. "
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
    execution = Execution(scheduler, workers)
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
        with progress_display(not as_json) as progress:
            rep = run_study(st, store, execution=execution.with_(progress=progress),
                            serial=serial, report_dir=out,
                            log=None if as_json else (lambda m: console.print(m,
                                                                              highlight=False)))
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
