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
from actstore.studies import (
    builtin_studies,
    describe_study,
    estimate_cost,
    load_study,
    run_study,
    study_settings,
)

console = Console(stderr=True, soft_wrap=True)


@command(
    "study",
    help=(
        "Run one of the four studies end to end: train its sweep, run its analyses "
        f"({', '.join(a.group for a in ANALYSES.values())}) and write the HTML report. "
        "Studies: hermann2020, lampinen2024, fel2024, li2016 (or a study TOML file). "
        "--scale small finishes on 2 CPU cores in minutes; paper uses the published sizes. "
        "Each study ends with a findings table: every claim of its paper, measured, with a "
        "verdict (holds / does not hold / not testable, with the reason). "
        "'actstore study NAME --help' describes one study; --dry-run prints its resolved "
        "settings and a training-time estimate measured on this machine."
    ),
    context_settings={"help_option_names": []},
)
def study_cmd(
    ctx: typer.Context,
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
    help_: Annotated[
        bool, typer.Option("--help", "-h",
                           help="Show this message; after a study name, describe that study.")
    ] = False,
) -> None:
    if help_:
        typer.echo(describe_study(study) if study in builtin_studies() else ctx.get_help())
        return
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
        plan = {**study_settings(st), "store": store,
                "run_ids": [r.run_id for r in st.sweep.runs], "cost": estimate_cost(st)}
        typer.echo(json.dumps(plan, default=str) if as_json else _plan_text(plan))
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
    con = Console(soft_wrap=True)
    con.print(f"study {st.name} ({scale}) done in {rep.wall_s:.1f} s; store {store} ({size}); "
              f"report: {rep.report}", highlight=False)
    if rep.findings:
        con.print("findings:", highlight=False)
        for row in rep.findings:
            unc = "" if row["uncertainty"] is None else f" +- {row['uncertainty']:.3f}"
            value = "-" if row["value"] is None else f"{row['value']:+.3f}{unc}"
            con.print(f"  [{row['verdict']}] {row['statement']} ({row['citation']}): {value}; "
                      f"{row['reason']}", highlight=False, markup=False)


def _plan_text(plan: dict) -> str:
    """The dry-run plan for a reader: settings per group of runs, analyses, cost."""
    lines = [f"{plan['study']} ({plan['scale']}): {plan['description']} [{plan['paper']}]",
             f"{plan['runs']} runs into {plan['store']}:"]
    for key, g in plan["groups"].items():
        lines.append(f"  {key}: seeds {g['seeds']}, {g['steps']} steps, {g['checkpoints']} "
                     f"checkpoints, batch {g['batch_size']}, lr {g['lr']}; dataset "
                     f"{g['dataset']} {json.dumps(g['dataset_params'])}; model {g['model']} "
                     f"{json.dumps(g['model_params'])}")
    lines.append("analyses, in order, then the findings table and the report:")
    for a in plan["analyses"]:
        opts = {k: v for k, v in a.items() if k not in ("kind", "name")}
        lines.append(f"  {a['kind']}:{a['name']} {json.dumps(opts)}")
    c = plan["cost"]
    lines.append("measured step time on this machine: " + ", ".join(
        f"{k} {v:.3g} s" for k, v in c["step_s"].items()))
    t = c["train_s"]
    lines.append(f"estimated training: {t / 3600:.1f} h" if t > 7200 else
                 f"estimated training: {t / 60:.1f} min")
    lines[-1] += (" in one process (model compute only)"
                  + (f"; {c['advice']}" if c["advice"] else ""))
    return "\n".join(lines)
