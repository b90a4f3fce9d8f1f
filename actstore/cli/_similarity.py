"""``actstore similarity | align``: all-pairs RSA/CKA matrices and unit alignment between runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from actstore._errors import ActstoreError
from actstore.cli._app import command
from actstore.cli._store_cmds import parse_kv
from actstore.probes._similarity import SIMILARITIES

console = Console()
err_console = Console(stderr=True)


@contextmanager
def _bars(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A ``progress(stage, done, total)`` callback drawing rich bars on stderr.

    Bars appear only on a terminal, and only once work starts (a refused command prints
    nothing but its error line).
    """
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    prog = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            prog.start()
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            prog.stop()


def parse_bytes(text: str) -> int:
    """``"2G"`` -> 2147483648; plain numbers are bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise ActstoreError(f"cannot read the memory size {text!r}; write e.g. 512M or 4G")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ActstoreError(
            f"cannot read the penalties {text!r}; give numbers separated by commas"
        ) from None


@command(
    "similarity",
    help=(
        "All-pairs similarity (CKA, RSA, ...) of the representations selected from a store: "
        "an M x M matrix written to /results/similarity/NAME, with a heatmap PNG."
    ),
)
def similarity_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    metric: Annotated[
        str, typer.Option("--metric", "-m", help=f"One of {', '.join(SIMILARITIES)}.")
    ] = "cka",
    select: Annotated[
        list[str] | None,
        typer.Option("--select", "-s", help=(
            "key=value terms joined by ';' (repeatable): run, layer, checkpoint "
            "(last|first|all|steps), model, task, seed, dataset, variant. "
            "Default: all layers of all runs at the last checkpoint."
        )),
    ] = None,
    stimuli: Annotated[
        str | None,
        typer.Option(help="Stimulus subset: all, first:N, random:N[:SEED], "
                          "per:FEATURE[,FEATURE]:K[:SEED]."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-P", help=(
            "Metric parameter key=value (repeatable): debiased=true (cka, rbf_cka), t=0.5 "
            "(rbf_cka), rdm=correlation|cosine|euclidean|sqeuclidean and "
            "compare=pearson|spearman|cosine (rsa)."
        )),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Result name (default: the metric).")] = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap replicates over stimuli for confidence intervals.")
    ] = 0,
    ci: Annotated[float, typer.Option(help="Confidence level of the bootstrap interval.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    method: Annotated[
        str, typer.Option(help="auto, gram or feature (feature-space form of linear CKA).")
    ] = "auto",
    device: Annotated[
        str | None, typer.Option(help="Array backend: numpy, torch, cuda or cupy.")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address, or 'sync' to compute in this process "
                          "(default: a local cluster)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.")] = None,
    max_memory: Annotated[
        str, typer.Option(help="Working memory of one task (e.g. 2G).")
    ] = "2G",
    png: Annotated[
        str | None, typer.Option(help="Heatmap path (default NAME.png; 'none' to skip).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.probes._select import parse_selection
    from actstore.probes._simjobs import similarity_job

    sel = parse_selection(select)
    if stimuli is not None:
        sel["stimuli"] = stimuli
    params = parse_kv(param, "--param")
    name = name or metric
    png_path = None if (png or "").lower() == "none" else (png or f"{name}.png")
    with _bars(not as_json) as progress:
        ds = similarity_job(
            store, sel, metric=metric, params=params, name=name, bootstrap=bootstrap, ci=ci,
            seed=seed, method=method, device=device, scheduler=scheduler, n_workers=workers,
            max_memory=parse_bytes(max_memory), png=png_path, progress=progress,
        )
    labels = [str(v) for v in ds["label_a"].values]
    S = ds["similarity"].values
    deg = [lab for lab, d in zip(labels, ds["degenerate"].values, strict=True) if d]
    if as_json:
        out: dict[str, Any] = {
            "result": f"similarity/{name}", "metric": metric, "params": params,
            "method": ds.attrs["method"], "n_stimuli": ds.attrs["n_stimuli"],
            "labels": labels, "similarity": S.tolist(), "degenerate": deg, "png": png_path,
        }
        if "ci_low" in ds:
            out["ci_low"] = ds["ci_low"].values.tolist()
            out["ci_high"] = ds["ci_high"].values.tolist()
        typer.echo(json.dumps(out))
        return
    M = len(S)
    console.print(f"[bold]{metric}[/] {params or ''}: {M} representations x "
                  f"{ds.attrs['n_stimuli']} stimuli ({ds.attrs['method']} path) -> "
                  f"/results/similarity/{name}" + (f", heatmap {png_path}" if png_path else ""))
    if M <= 12:
        table = Table("", *[str(i) for i in range(M)])
        for i, lab in enumerate(labels):
            table.add_row(f"{i} {lab}", *[f"{v:.3f}" for v in S[i]])
        console.print(table)
    else:
        off = S[~np.eye(M, dtype=bool)]
        console.print(f"off-diagonal: min {off.min():.3f}, median {np.median(off):.3f}, "
                      f"max {off.max():.3f}")
    if deg:
        console.print(f"[yellow]degenerate (no variation; similarities set to 0):[/] "
                      f"{', '.join(deg)}")


@command(
    "align",
    help=(
        "Convergent-learning alignment of the units of two or more runs, layer by layer: "
        "correlations, semi/bipartite matching, mutual information, sparse prediction "
        "(LASSO path), spectral clusters. Written to /results/alignment/NAME.LAYER."
    ),
)
def align_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    layer: Annotated[
        list[str] | None,
        typer.Option("--layer", "-l", help="Layer name or pattern (repeatable; default all)."),
    ] = None,
    checkpoint: Annotated[
        str, typer.Option(help="last, first or a training step.")
    ] = "last",
    stimuli: Annotated[
        str | None, typer.Option(help="Stimulus subset (as in `actstore similarity`).")
    ] = None,
    name: Annotated[str, typer.Option(help="Result name prefix.")] = "align",
    mi: Annotated[bool, typer.Option("--mi/--no-mi", help="Binned mutual information.")] = True,
    lasso: Annotated[
        bool, typer.Option("--lasso/--no-lasso", help="Sparse prediction (LASSO path).")
    ] = True,
    alphas: Annotated[
        str, typer.Option(help="LASSO penalties, comma-separated.")
    ] = "0,1e-5,1e-4,1e-3,1e-2,1e-1",
    clusters: Annotated[
        int | None, typer.Option(help="Spectral clusters (default: total units / 8).")
    ] = None,
    positions: Annotated[
        str, typer.Option(help="Use spatial positions of unpooled conv maps: auto, yes, no.")
    ] = "auto",
    test_fraction: Annotated[
        float, typer.Option(help="Held-out share of stimuli for the LASSO path.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split and k-means.")] = 0,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address, or 'sync' (default: a local cluster)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.probes._simjobs import alignment_job, summary_rows

    step: str | int = int(checkpoint) if checkpoint.lstrip("-").isdigit() else checkpoint
    with _bars(not as_json) as progress:
        out = alignment_job(
            store, runs, layers=",".join(layer) if layer else None, checkpoint=step,
            stimuli=stimuli, name=name, mutual_info=mi, lasso=lasso, alphas=_floats(alphas),
            n_clusters=clusters, positions=positions, test_fraction=test_fraction, seed=seed,
            scheduler=scheduler, n_workers=workers, progress=progress,
        )
    rows = summary_rows(out)
    if as_json:
        typer.echo(json.dumps({"results": [f"alignment/{name}.{ly}" for ly in out],
                               "summary": rows}))
        return
    cols = ["layer", "run_a", "run_b", "bipartite_corr_mean", "semi_corr_mean"]
    if mi:
        cols.append("bipartite_mi_mean")
    extra = [k for k in rows[0] if k.startswith(("loss@", "nnz@"))] if rows else []
    table = Table(*[c.replace("_mean", "") for c in cols], *extra, "mixed clusters",
                  "constant units")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in cols], *[_fmt(r.get(c)) for c in extra],
                      str(r["mixed_clusters"]), str(r["constant_units"]))
    console.print(table)
    console.print(f"results: {', '.join(f'/results/alignment/{name}.{ly}' for ly in out)}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
