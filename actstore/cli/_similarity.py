"""``actstore similarity | align``: all-pairs RSA/CKA matrices and unit alignment between runs."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from actstore import ActstoreError, Execution
from actstore.analyses import ANALYSES
from actstore.cli._app import command
from actstore.cli._progress import progress_display
from actstore.cli._store_cmds import parse_kv
from actstore.cli._tables import print_table
from actstore.similarity import SIMILARITIES

console = Console()
SIMILARITY, ALIGN = ANALYSES["similarity"], ANALYSES["align"]
err_console = Console(stderr=True, soft_wrap=True)


def parse_bytes(text: str) -> int:
    """``"2G"`` -> 2147483648; plain numbers are bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise ActstoreError(f"cannot read the memory size {text!r}; write e.g. 512M or 4G")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _execution(scheduler: str | None, workers: int | None) -> Execution:
    """``--scheduler`` and ``--workers`` as an Execution (``sync``/``none``: this process)."""
    if scheduler in ("sync", "none"):
        return Execution(workers=1)
    return Execution(scheduler, workers)


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
        f"an M x M matrix written to /{SIMILARITY.result('NAME')}, with a heatmap PNG."
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
            "One selection: key=value terms joined by ';', keys run, layer, checkpoint "
            "(last|first|all|steps), model, task, seed, dataset, variant. Repeatable: "
            "each --select is a separate selection with its own defaults, and the "
            "representations are their union, in order, without duplicates. "
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
            "Metric parameter key=value (repeatable, each key once): debiased=true|false "
            "(also yes/no, on/off, 1/0; cka, rbf_cka), t=POSITIVE_NUMBER, e.g. 0.5 "
            "(rbf_cka), rdm=correlation|cosine|euclidean|sqeuclidean and "
            "compare=pearson|spearman|cosine (rsa); procrustes takes none. Other names or "
            "values are refused."
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
        str | None, typer.Option(help="Array backend: numpy, torch, cuda or cupy.",
                                 show_default="numpy")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address, or 'sync' to compute in this process "
                          "(default: a local cluster)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers.", show_default="one per core")
    ] = None,
    max_memory: Annotated[
        str, typer.Option(help="Working memory of one task (e.g. 2G).")
    ] = "2G",
    png: Annotated[
        str | None, typer.Option(help="Heatmap path (default NAME.png; 'none' to skip).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite",
                           help="Replace a result of this name computed with other settings.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.report import check_heatmap_path, write_heatmap
    from actstore.similarity import SimilarityConfig, parse_selections, similarity_job

    sels = parse_selections(select)
    if stimuli is not None:
        for i, one in enumerate(sels):
            if one.get("stimuli") not in (None, stimuli):
                raise ActstoreError(
                    f"--stimuli {stimuli!r} and stimuli={one['stimuli']} in --select "
                    f"{(select or [])[i]!r} differ; give the stimulus subset once"
                )
            one["stimuli"] = stimuli
    sel: dict[str, Any] | list[dict[str, Any]] = sels[0] if len(sels) == 1 else sels
    config = SimilarityConfig(metric, parse_kv(param, "--param", raw=True), bootstrap, ci,
                              seed, method, device, parse_bytes(max_memory))
    params = dict(config.params)
    name = name or metric
    png_path = None if (png or "").lower() == "none" else (png or f"{name}.png")
    execution = _execution(scheduler, workers)
    if png_path:
        check_heatmap_path(png_path)
    with progress_display(not as_json) as progress:
        ds = similarity_job(store, sel, name, config=config, overwrite=overwrite,
                            execution=execution.with_(progress=progress))
    if png_path:
        write_heatmap(ds, png_path)
    labels = [str(v) for v in ds["label_a"].values]
    S = ds["similarity"].values
    deg = [lab for lab, d in zip(labels, ds["degenerate"].values, strict=True) if d]
    if as_json:
        out: dict[str, Any] = {
            "result": f"{SIMILARITY.group}/{name}", "metric": metric, "params": params,
            "method": ds.attrs["method"], "n_stimuli": ds.attrs["n_stimuli"],
            "labels": labels, "similarity": S.tolist(), "degenerate": deg, "png": png_path,
        }
        if "ci_low" in ds:
            out["ci_low"] = ds["ci_low"].values.tolist()
            out["ci_high"] = ds["ci_high"].values.tolist()
        typer.echo(json.dumps(out))
        return
    M = len(S)
    given = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                      for k, v in params.items())
    console.print(f"[bold]{escape(metric)}[/]{escape(f' ({given})') if given else ''}: "
                  f"{M} representations x {ds.attrs['n_stimuli']} stimuli "
                  f"({ds.attrs['method']} path) -> /{SIMILARITY.result(escape(name))}"
                  + (f", heatmap {escape(png_path)}" if png_path else ""), soft_wrap=True)
    if M <= 12:
        print_table(console, ["representation", *[str(i) for i in range(M)]],
                    [[f"{i} {lab}", *[f"{v:.3f}" for v in S[i]]] for i, lab in enumerate(labels)])
    elif M > 1:
        off = S[~np.eye(M, dtype=bool)]
        console.print(f"off-diagonal: min {off.min():.3f}, median {np.median(off):.3f}, "
                      f"max {off.max():.3f}")
    if deg:
        console.print(f"[yellow]degenerate (no variation; similarities set to 0):[/] "
                      f"{escape(', '.join(deg))}", soft_wrap=True)


@command(
    "align",
    help=(
        "Convergent-learning alignment of the units of two or more runs, layer by layer: "
        "correlations, semi/bipartite matching, mutual information, sparse prediction "
        f"(LASSO path), spectral clusters. Written to /{ALIGN.result('NAME.LAYER')}."
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
    workers: Annotated[
        int | None,
        typer.Option(help="Local Dask workers.", show_default="one per core, at most one "
                                                           "per layer"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite",
                           help="Replace a result of this name computed with other settings.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from actstore.alignment import AlignConfig, alignment_job, summary_rows

    step: str | int = int(checkpoint) if checkpoint.lstrip("-").isdigit() else checkpoint
    config = AlignConfig(mi, lasso, _floats(alphas), clusters, positions, test_fraction, seed)
    execution = _execution(scheduler, workers)
    with progress_display(not as_json) as progress:
        out = alignment_job(
            store, runs, layers=",".join(layer) if layer else None, checkpoint=step,
            stimuli=stimuli, name=name, config=config, overwrite=overwrite,
            execution=execution.with_(progress=progress),
        )
    rows = summary_rows(out)
    if as_json:
        typer.echo(json.dumps({"results": [f"{ALIGN.group}/{name}.{ly}" for ly in out],
                               "summary": rows}))
        return
    _align_table(rows, list(dict.fromkeys(runs)), mi)
    console.print(f"results: {', '.join('/' + ALIGN.result(f'{name}.{ly}') for ly in out)}")


def _align_table(rows: list[dict[str, Any]], runs: list[str], mi: bool) -> None:
    """Layers (and pairs of runs) as rows, the main scores as columns."""
    letters = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(runs))]
    letter = dict(zip(runs, letters, strict=True))
    if len(runs) == 2:
        console.print(f"runs: {runs[0]} vs {runs[1]}", soft_wrap=True, markup=False)
    else:
        for run in runs:
            console.print(f"{letter[run]} = {run}", soft_wrap=True, markup=False)
    alphas = [k[len("loss@"):] for k in (rows[0] if rows else {}) if k.startswith("loss@")]
    head = ["layer", *(["pair"] if len(runs) > 2 else []), "bipartite\nr", "semi\nr",
            *(["bipartite\nMI"] if mi else [])]
    if alphas:
        head += ["LASSO\nloss", "LASSO\nnon-zero"]
    head += ["mixed\nclusters", "constant\nunits"]
    table = []
    for r in rows:
        cells = [r["layer"]]
        if len(runs) > 2:
            cells.append(f"{letter[r['run_a']]}-{letter[r['run_b']]}")
        cells += [_fmt(r.get("bipartite_corr_mean")), _fmt(r.get("semi_corr_mean"))]
        if mi:
            cells.append(_fmt(r.get("bipartite_mi_mean")))
        if alphas:
            cells.append(_path([r.get(f"loss@{a}") for a in alphas], 2))
            cells.append(_path([r.get(f"nnz@{a}") for a in alphas], 1))
        cells += [str(r["mixed_clusters"]), str(r["constant_units"])]
        table.append(cells)
    print_table(console, head, table, keys=2 if len(runs) > 2 else 1)
    notes = ["r: mean correlation of matched units (bipartite: one-to-one; semi: best match)"]
    if mi:
        notes.append("MI: mean mutual information of one-to-one matched units")
    if alphas:
        span = alphas[0] if len(alphas) == 1 else f"{alphas[0]} -> {alphas[-1]}"
        notes.append(f"LASSO: held-out loss and non-zero weights per unit, penalty {span}")
    console.print("; ".join(notes) + ".")


def _path(values: list[Any], digits: int) -> str:
    """``first->last`` of a LASSO path (one value if there is one penalty)."""
    if len(values) == 1:
        return _fmt(values[0], digits)
    return f"{_fmt(values[0], digits)}->{_fmt(values[-1], digits)}"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
