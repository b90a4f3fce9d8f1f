"""``actstore probe``: linear decoders for every run x checkpoint x layer x feature."""

from __future__ import annotations

import json
import warnings
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from actstore import ActstoreError
from actstore.analyses import ANALYSES
from actstore.cli._app import command
from actstore.cli._tables import print_table

console = Console(soft_wrap=True)  # long lines (store paths) are not broken in logs
PROBE = ANALYSES["probe"]
err_console = Console(stderr=True, soft_wrap=True)


def parse_penalties(text: str, what: str) -> tuple[float, ...]:
    """``"1e-2:1e4:13"`` (log-spaced, inclusive) or ``"0.1,1,10"`` -> penalties."""
    try:
        if ":" in text:
            lo, hi, num = text.split(":")
            vals = np.logspace(np.log10(float(lo)), np.log10(float(hi)), int(num))
        else:
            vals = np.asarray([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ActstoreError(
            f"{what} {text!r} must be LOW:HIGH:COUNT (log-spaced) or a comma-separated list"
        ) from None
    if vals.size == 0 or np.any(~np.isfinite(vals)) or np.any(vals <= 0):
        raise ActstoreError(f"{what} {text!r} must be positive numbers")
    return tuple(float(v) for v in vals)


@command(
    "probe",
    help=(
        "Decode every feature of the probe set from every selected run x checkpoint x layer "
        "with ridge and multinomial logistic decoders (penalty chosen by cross-validation); "
        f"results go to /{PROBE.result('NAME')} in the store. Re-running skips finished jobs."
    ),
)
def probe_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    layers: Annotated[
        str, typer.Option(help="'all', or comma-separated layer names / globs.")
    ] = "all",
    runs: Annotated[str, typer.Option(help="'all', or comma-separated run ids / globs.")] = "all",
    checkpoints: Annotated[
        str, typer.Option(help="'all', 'first', 'last' (each run's first / last complete "
                               "checkpoint), or comma-separated steps.")
    ] = "all",
    features: Annotated[
        str, typer.Option(help="'all', or comma-separated feature names.")
    ] = "all",
    decoders: Annotated[str, typer.Option(help="Comma-separated: ridge, logistic.")] = (
        "ridge,logistic"
    ),
    folds: Annotated[int, typer.Option(help="Stratified cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds.")] = 0,
    split: Annotated[
        str | None,
        typer.Option(help="Label array with an explicit train/validation split "
                          "(train/val strings, booleans or 0/1); replaces --folds."),
    ] = None,
    alphas: Annotated[
        str, typer.Option(help="Ridge penalties: LOW:HIGH:COUNT (log-spaced) or a list.")
    ] = "1e-2:1e4:13",
    cs: Annotated[
        str, typer.Option("--cs", help="Logistic inverse penalties C: LOW:HIGH:COUNT or a list.")
    ] = "1e-4:1e2:13",
    logistic_dtype: Annotated[
        str, typer.Option(help="Working precision of the logistic solver: float32 (about twice "
                               "as fast) or float64. Statistics are float64 either way.")
    ] = "float32",
    ridge_dtype: Annotated[
        str, typer.Option(help="Precision of the ridge factorisations: float32 (about twice as "
                               "fast for layers of 512+ units; each fold checked in float64 "
                               "and redone in float64 where it is not accurate to 1e-3) or "
                               "float64 (scikit-learn to rounding).")
    ] = "float32",
    device: Annotated[str, typer.Option(help="numpy, torch (CPU), cuda or cupy.")] = "numpy",
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler.")
    ] = None,
    scheduler_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for --scheduler to answer.")
    ] = 10.0,
    workers: Annotated[
        int | None,
        typer.Option(help="Local Dask worker processes (default: one per core; 1 = in this "
                          "process; with --device cuda/cupy: 1). For several GPUs start a "
                          "dask-cuda cluster (one worker per GPU) and pass --scheduler."),
    ] = None,
    name: Annotated[
        str, typer.Option(help=f"Result name under /results/{PROBE.group}.")
    ] = "default",
    strict: Annotated[
        bool, typer.Option("--strict", help="Incomplete checkpoints are errors, not skipped.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Recompute results that already exist.")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Also export the scores of this command's selection (runs, "
                                   "checkpoints, layers, features) to FILE.csv/.parquet; the "
                                   "summary table covers the same selection."),
    ] = None,
    decoder_table: Annotated[
        str | None, typer.Option("--table-decoder", help="Decoder shown in the summary table.")
    ] = None,
    cache_mb: Annotated[
        float, typer.Option(help="Keep each job's activations in memory up to this size.")
    ] = 256.0,
    standardize: Annotated[
        bool, typer.Option("--standardize/--no-standardize",
                           help="Decoders see units z-scored with each training fold's mean "
                                "and standard deviation (as a StandardScaler in a pipeline), "
                                "so that decodability does not depend on a layer's scale. "
                                "Recorded with the results.")
    ] = True,
    select: Annotated[
        str, typer.Option(help="How each reported score's penalty is chosen: 'cv' (best mean "
                               "held-out score, reported at it: slightly optimistic near "
                               "chance) or 'nested' (each outer fold's penalty chosen by "
                               "cross-validation on its training rows only; about --folds "
                               "times the cost).")
    ] = "cv",
    extend_grid: Annotated[
        int, typer.Option(help="Where the chosen penalty is an end of the grid and the score "
                               "still rises toward it, also try the penalties beyond that end, "
                               "half a decade apart, up to this many decades (0: only record "
                               "penalty_at_edge and warn).")
    ] = 3,
    permutations: Annotated[
        int, typer.Option(help="Also decode this many label permutations with the same folds "
                               "and selection: null_mean, null_p95 and p_value per decoder.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.cli._progress import progress_display
    from actstore.probes import (
        DECODERS,
        ProbeConfig,
        ProbeInterrupted,
        check_export_path,
        default_decoder,
        export_results,
        network_order,
        run_groups,
        run_layers,
        run_probes,
        select_result,
        summary_table,
    )
    from actstore.store import open_store

    if out is not None:
        check_export_path(out)
    config = ProbeConfig(
        decoders=tuple(d.strip() for d in decoders.split(",") if d.strip()),
        alphas=parse_penalties(alphas, "--alphas"),
        Cs=parse_penalties(cs, "--cs"),
        n_splits=folds, seed=seed, split=split,
        device=device, logistic_dtype=logistic_dtype, ridge_dtype=ridge_dtype, cache_mb=cache_mb,
        standardize=standardize, select=select, permutations=permutations,
        extend_grid=extend_grid,
    )
    if decoder_table is not None and decoder_table not in config.decoders:
        raise ActstoreError(
            f"--table-decoder {decoder_table!r} is not among the decoders computed; choose "
            f"one of {', '.join(config.decoders)}"
        )
    execution = Execution(scheduler, workers, timeout=scheduler_timeout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with progress_display(not as_json) as progress:
                ds = run_probes(
                    store, name=name, runs=runs, checkpoints=checkpoints, layers=layers,
                    features=features, config=config, strict=strict, overwrite=overwrite,
                    execution=execution.with_(progress=progress),
                )
        except ProbeInterrupted as e:
            typer.echo(f"actstore: {e}", err=True)
            raise typer.Exit(130) from None
        finally:
            for w in caught:
                if issubclass(w.category, UserWarning):
                    err_console.print(f"actstore: warning: {w.message}", highlight=False)
    # the export and the summary cover what this command selected, not the whole result
    view = select_result(ds)
    if out is not None:
        export_results(view, out)
    n_done = int(view["done"].sum())
    edge = edge_counts(view)
    for dname, count in edge.items():
        if count:
            err_console.print(
                f"actstore: warning: {count} {dname} decoder(s) chose the strongest or weakest "
                f"penalty while the score still rose toward it"
                + (f", also after extending the grid by {config.extend_grid} decades"
                   if config.extend_grid and config.select == "cv" else "")
                + f" (penalty_at_edge = 1 in the result); widen "
                f"{DECODERS[dname].option} to look beyond it",
                highlight=False)
    if as_json:
        typer.echo(json.dumps({
            "store": store, "result": PROBE.result(name), "jobs_done": n_done,
            "jobs_computed": int(ds.attrs.get("computed", 0)),
            "runs": view.run.values.tolist(), "layers": view.layer.values.tolist(),
            "checkpoints": view.checkpoint.values.tolist(),
            "features": view.feature.values.tolist(),
            "decoders": view.decoder.values.tolist(), "out": out,
            "penalty_at_edge": edge,
            "summary": summary_table(view, decoder_table).to_dict(),
        }))
        return
    table = summary_table(view, decoder_table)
    groups = run_groups(view, runs=run_layers(open_store(store)))
    table = table[network_order(groups, list(table.columns))]  # as the networks run them
    dec = decoder_table or default_decoder([str(d) for d in ds.decoder.values])
    if len(table.columns) > len(table.index):
        table, corner = table.T, "layer"  # many layers: one row per layer fits a terminal
    else:
        corner = "feature"
    print_table(console, [corner, *map(str, table.columns)],
                [[str(idx), *map(str, row.values)] for idx, row in table.iterrows()],
                title=f"{dec}: held-out score, first -> last checkpoint, mean over runs")
    reused = int(ds.attrs.get("reused", 0))
    n_sel = int(ds.attrs.get("computed", 0)) + reused
    console.print(f"{n_sel} jobs in {store} at {PROBE.result(name)}: "
                  f"{int(ds.attrs.get('computed', 0))} computed"
                  + (f", {reused} already done" if reused else "")
                  + (f"; exported to {out}" if out else ""), highlight=False)
    if any(edge.values()):
        console.print("penalty at the edge of the grid: " + ", ".join(
            f"{d} {c}" for d, c in edge.items()), highlight=False)


def edge_counts(ds: Any) -> dict[str, int]:
    """Decoders (run x checkpoint x layer x feature) per decoder whose chosen penalty sits at
    an end of the grid with the score still rising toward it."""
    if "penalty_at_edge" not in ds:
        return {}
    flag = ds["penalty_at_edge"].where(ds["done"])
    return {str(d): int((flag.sel(decoder=d) == 1).sum()) for d in ds.decoder.values}

