"""``actstore verify | repair | ingest``: integrity of a store, and activations made elsewhere."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console

from actstore.cli._app import command, fail
from actstore.cli._store_cmds import parse_kv

console = Console(soft_wrap=True)


@command("verify", help="Read every array of a store (checksums) and compare each run with its "
                        "tables and probe set; list what is wrong and how repair fixes it. "
                        "Exit code 1 when something is wrong.")
def verify_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these runs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.store import FIX_SLOT, open_store, verify

    problems = verify(open_store(store), runs=run)
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in problems]))
    elif not problems:
        console.print(f"{store}: every chunk read back and matched its checksum")
    else:
        for p in problems:
            typer.echo(p.line())
        slots = [p for p in problems if p.fix == FIX_SLOT]
        restorable = [p for p in problems if p.fix and p.fix != FIX_SLOT]
        if slots or restorable:
            what = [f"restores {len(restorable)} damaged object(s) from the store's own "
                    "records"] if restorable else []
            if slots:
                what.append(f"resets the {len(slots)} bad checkpoint slot(s) (with --model, "
                            "redoes those whose checkpoint files still exist)")
            left = len(problems) - len(slots) - len(restorable)
            typer.echo(f"{len(problems)} problem(s); `actstore repair {store}` "
                       + " and ".join(what)
                       + (f"; it cannot fix the other {left} (see each line)" if left else ""))
        else:
            typer.echo(f"{len(problems)} problem(s); `actstore repair` cannot fix these "
                       "(see each line)")
    if problems:
        raise typer.Exit(1)


@command("repair", help="Restore damaged metadata, status chunks and label copies from the "
                        "store's own records; reset corrupt or interrupted slots, and with "
                        "--model redo them from their checkpoint files. Nothing named by the "
                        "store is ever imported or run.")
def repair_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these runs.")] = None,
    redo: Annotated[bool, typer.Option(help="Redo reset slots from checkpoint files.")] = True,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model factory to redo slots with "
                                           "(package.module:fn or file.py:fn): the one the run "
                                           "was dumped with."),
    ] = None,
    model_arg: Annotated[
        list[str] | None, typer.Option("--model-arg", help="key=value passed to the factory, "
                                                           "as the run was dumped with.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.store import open_store, repair

    rep = repair(open_store(store, mode="a"), runs=run, redo=redo, model=model,
                 model_args=parse_kv(model_arg, "--model-arg"))
    if as_json:
        typer.echo(json.dumps(asdict(rep)))
        if rep.unrepaired or rep.pending:
            raise typer.Exit(1)
        return
    for what in rep.restored:
        typer.echo(f"restored {what}")
    if rep.cleared:
        console.print(f"cleared the record of a killed writer of run(s) "
                      f"{', '.join(rep.cleared)} (their complete checkpoints are kept; re-run "
                      "the dump or training to add the missing ones)")
    for run_id, line in rep.commands.items():
        steps = " ".join(str(s) for r, s in rep.pending if r == run_id)
        typer.echo(f"run {run_id!r} checkpoint(s) {steps}: left as they are; they can be redone "
                   "from their checkpoint files with the model factory the run records - if "
                   f"you trust it, run: {line}")
    if not rep.reset and not rep.unrepaired and not rep.pending:
        if not rep.cleared and not rep.restored:
            console.print(f"{store}: nothing to repair")
        return
    if rep.reset:
        console.print(f"reset {len(rep.reset)} slot(s); redid {len(rep.redone)} from their "
                      f"checkpoint files")
    why = ("not redone (--no-redo)" if not redo else
           "no checkpoint file to redo it from")
    for r, s in rep.needs_rerun:
        console.print(f"  run {r!r} checkpoint {s}: {why}; re-run the dump or training of "
                      "this run to fill it")
    if rep.unrepaired:
        for line in rep.unrepaired:
            typer.echo(line)
        typer.echo(f"{len(rep.unrepaired)} problem(s) that repair cannot fix (listed above)")
    if rep.unrepaired or rep.pending:
        raise typer.Exit(1)


@command("ingest", help="Import activations made elsewhere (.npy, .npz, HDF5 — e.g. "
                        "THINGSvision or TransformerLens exports) as one checkpoint of a run.")
def ingest_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL (created if missing).")],
    files: Annotated[list[str], typer.Argument(help="Activation files: .npy, .npz, .h5.")],
    run: Annotated[str, typer.Option("--run", "-r", help="Run id to write.")],
    labels: Annotated[str, typer.Option("--labels", help="CSV of feature labels, one row "
                                                         "per sample (optional sample column).")],
    step: Annotated[int, typer.Option(help="Checkpoint step of these activations.")] = 0,
    probe_set: Annotated[
        str | None, typer.Option(help="Probe-set name (default: the CSV's name).")
    ] = None,
    attr: Annotated[
        list[str] | None, typer.Option("--attr", help="Run attribute key=value (model, seed...).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.store import ingest

    if not files:
        raise fail("give at least one activation file")
    out = ingest(store, run, files, labels, step=step, probe_set=probe_set,
                 attrs=parse_kv(attr, "--attr"), dtype=dtype)
    if as_json:
        typer.echo(json.dumps(out))
    else:
        state = "wrote" if out["written"] else "already complete:"
        console.print(f"run [bold]{run}[/] checkpoint {step}: {state} {len(out['layers'])} "
                      f"layer(s) {', '.join(out['layers'])} over {out['n_samples']} samples")
