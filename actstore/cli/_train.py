"""``actstore train``: train a sweep of networks and record their activations into a store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from actstore import ActstoreError
from actstore.cli._app import command

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def sweep_overrides(
    dataset: str | None = None,
    task: str | None = None,
    model: str | None = None,
    seeds: str | None = None,
    steps: int | None = None,
    checkpoints: int | None = None,
) -> dict[str, Any]:
    """A sweep document fragment from the CLI range options."""
    doc: dict[str, Any] = {}
    for key, val in (("datasets", dataset), ("tasks", task), ("models", model)):
        names = _csv(val)
        if names is not None:
            doc[key] = names
    if seeds is not None:
        doc["seeds"] = seeds
    train: dict[str, Any] = {}
    if steps is not None:
        train["steps"] = steps
    if checkpoints is not None:
        train["checkpoints"] = checkpoints
    if train:
        doc["train"] = train
    return doc


def print_report(report: Any, as_json: bool, dry_run: bool = False) -> None:
    """Print a :class:`SweepReport` as a table (or JSON); failed runs become an error.

    Run ids are never cut or wrapped. A dry run lists each run's status and says that nothing
    was written.
    """
    from actstore.cli._store_cmds import name_table, print_table

    if as_json:
        typer.echo(json.dumps(report.to_json()))
        raise_failures(report)
        return
    if dry_run:
        table = name_table("run", "status")
        for r in report.runs:
            table.add_row(Text(r["run_id"]), r["status"])
        print_table(table)
        todo = sum(r["status"] == "planned" for r in report.runs)
        console.print(
            f"sweep {report.name} (dry run): {todo} of {len(report.runs)} run(s) to train, "
            f"{len(report.runs) - todo} already complete in {report.store}; nothing was "
            "trained or written",
            markup=False, highlight=False,
        )
        return
    table = name_table("run", "status", "ckpts", "s", "val acc")
    for col in table.columns[2:4]:
        col.justify = "right"
    for r in report.runs:
        acc = ", ".join(f"{k} {v:.2f}" for k, v in r.get("final", {}).items())
        status = Text("failed", style="red") if r["status"] == "failed" else Text(r["status"])
        table.add_row(Text(r["run_id"]), status,
                      str(len(r["written"])) if r["written"] else "-", f"{r['wall_s']:.1f}",
                      Text(acc or "-"))
    print_table(table)
    for r in report.failed:
        console.print(f"{r['run_id']} failed: {r['error']}", markup=False, highlight=False)
    console.print(f"sweep {report.name} -> {report.store} in {report.wall_s:.1f} s",
                  markup=False, highlight=False)
    raise_failures(report)


def raise_failures(report: Any) -> None:
    """One error line (exit code 2) if any run of a sweep failed."""
    if report.failed:
        first = report.failed[0]
        raise ActstoreError(
            f"{len(report.failed)} of {len(report.runs)} runs failed; {first['run_id']}: "
            f"{first['error']} (completed checkpoints are kept and a re-run continues; "
            "training is deterministic, so a run that failed in training fails again: give it "
            "other settings as a new variant)"
        )


#: The sweep keys that CLI ranges must give without a sweep file, and their options.
RANGE_OPTIONS = (("datasets", "dataset", "--dataset/-d"), ("tasks", "task", "--task/-t"),
                 ("models", "model", "--model/-m"))


def check_ranges(over: dict[str, Any]) -> None:
    """Without a sweep file, the ranges must name valid datasets, tasks and models: one error
    line names the unknown names (with the valid ones) and the missing options."""
    from actstore.training import DATASETS, MODELS, TASKS

    registries: dict[str, Mapping[str, Any]] = {"datasets": DATASETS, "tasks": TASKS,
                                                "models": MODELS}
    problems = []
    for key, what, _ in RANGE_OPTIONS:
        unknown = [n for n in over.get(key) or [] if n not in registries[key]]
        if unknown:
            problems.append(f"unknown {what} {', '.join(map(repr, unknown))} (valid {what}s: "
                            f"{', '.join(registries[key])})")
    missing = [opt for key, _, opt in RANGE_OPTIONS if not over.get(key)]
    if missing:
        opts = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1
                            else missing)
        give = f"give {opts} too" if problems else f"give {opts}"
        problems.append(f"{give}, or a sweep file or built-in sweep name after the store")
    if problems:
        raise ActstoreError("; ".join(problems) + "; see `actstore train --list`")


def _listing() -> None:
    from actstore.cli._tables import print_table
    from actstore.training import DATASETS, MODELS, TASKS, builtin_sweeps, make_dataset, tasks_for

    rows = []
    for name in DATASETS:
        ds = make_dataset(name)
        rows.append([name, ", ".join(tasks_for(ds)), ", ".join(ds.features)])
    print_table(console, ["dataset", "tasks", "features"], rows, keys=3)
    console.print(f"models: {', '.join(MODELS)}")
    console.print(f"tasks: {', '.join(TASKS)}")
    console.print(f"built-in sweeps: {', '.join(builtin_sweeps())}")


@command(
    "train",
    help=(
        "Train a sweep (datasets x tasks x models x seeds x variants) and record every layer's "
        "activations at every checkpoint into STORE. Give a sweep TOML file / built-in sweep "
        "name, or ranges: --dataset trifeature --task shape,color --model alexnet --seeds 0:3. "
        "Resumable: complete runs are skipped."
    ),
)
def train_cmd(
    store: Annotated[
        str | None, typer.Argument(help="Store path or URL (created if missing).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Argument(help="Sweep TOML file or built-in sweep name (see --list).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Dataset name(s), comma-separated.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Task name(s), comma-separated.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name(s), comma-separated.")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", "-s", help="Seeds: 0:5 (range), 0,2,4, or 3.")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps per run (default: the sweep's train.steps, else 300)."),
    ] = None,
    checkpoints: Annotated[
        int | None,
        typer.Option(help="Checkpoints per run, log-spaced from step 0 to the last step, "
                          "both always included; at most steps + 1 (default: the sweep's "
                          "train.checkpoints, else 6)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE: train.lr=1e-3, dataset.trifeature.p=0.5, "
                                   "model.width=8 (TOML values; repeatable)."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: local processes).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers (default: one per core).")
    ] = None,
    serial: Annotated[
        bool, typer.Option("--serial", help="Train in this process, one run after another.")
    ] = False,
    weights_dir: Annotated[
        str | None, typer.Option(help="Also save each checkpoint's weights under DIR/<run>/.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the sweep and list its runs; write nothing.")
    ] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="List datasets, tasks, models, built-in sweeps.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.cli._progress import progress_display
    from actstore.training import load_sweep, parse_value, run_sweep

    if list_:
        _listing()
        return
    if store is None:
        raise ActstoreError("give the store to write: actstore train STORE [SWEEP] [options]")
    execution = Execution(scheduler, workers)  # a bad --workers or --scheduler: one line
    sets = []
    for item in set_ or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ActstoreError(f"--set {item!r} must look like KEY=VALUE")
        sets.append((key.strip(), parse_value(val.strip())))
    over = sweep_overrides(dataset, task, model, seeds, steps, checkpoints)
    if sweep is None:
        check_ranges(over)
    sw = load_sweep(sweep, overrides=over, sets=sets)
    try:
        with progress_display(not as_json) as progress:
            execution = execution.with_(progress=progress)
            if serial:
                execution = execution.with_(scheduler=None, workers=1)
            report = run_sweep(sw, store, weights_dir=weights_dir, dry_run=dry_run,
                               execution=execution)
    except KeyboardInterrupt:
        if scheduler:  # a task already running on a worker is not stopped by cancelling it
            raise interrupted(
                "interrupted; every checkpoint completed so far is kept; runs already started "
                f"on the cluster at {scheduler} finish there; re-run the same command to "
                "continue (it waits for them)") from None
        raise interrupted() from None
    print_report(report, as_json, dry_run=dry_run)


def interrupted(detail: str = "") -> typer.Exit:
    """One line after Ctrl-C (exit code 130): what was kept, and how to continue."""
    line = detail or ("interrupted; every checkpoint completed so far is kept; re-run the "
                      "same command to continue")
    typer.echo(f"actstore: {line}", err=True)
    return typer.Exit(130)
