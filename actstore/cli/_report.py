"""``actstore variance``, ``actstore complexity`` and ``actstore report``."""

from __future__ import annotations

import json
import warnings
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from actstore.analyses import ANALYSES
from actstore.cli._app import command
from actstore.cli._progress import progress_display

console = Console()
VARIANCE, COMPLEXITY = ANALYSES["variance"], ANALYSES["complexity"]


def _layers(text: str | None) -> tuple[str, ...] | None:
    """``all`` (or no option) -> None; an empty text -> () (refused by the analysis)."""
    if text is None or text.strip() == "all":
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _fmt(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3f}"


@command(
    "variance",
    help=(
        "Variance of each layer explained by each feature (held-out R^2 of the layer regressed "
        "on the feature, pooled over units) for every run x checkpoint x layer; results go to "
        f"/{VARIANCE.result('NAME')}."
    ),
)
def variance_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    name: Annotated[
        str, typer.Option(help=f"Result name under /results/{VARIANCE.group}.")
    ] = "default",
    runs: Annotated[str, typer.Option(help="'all', or comma-separated run ids / globs.")] = "all",
    layers: Annotated[str, typer.Option(help="'all', or comma-separated layers / globs.")] = (
        "all"
    ),
    checkpoints: Annotated[
        str, typer.Option(help="'all', 'first', 'last', or comma-separated steps.")
    ] = "all",
    features: Annotated[
        str | None,
        typer.Option(help="Comma-separated features (default: every label but heldout_*)."),
    ] = None,
    folds: Annotated[int, typer.Option(help="Stratified cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds.")] = 0,
    split: Annotated[
        str | None, typer.Option(help="Label array with an explicit train/validation split.")
    ] = None,
    denominator: Annotated[
        str, typer.Option(help="r2_final over training: 'final' (the final checkpoint's total "
                               "variance) or 'own'.")
    ] = "final",
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler.")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local Dask worker processes (1 = in this process).")
    ] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite",
                           help="Replace a result of this name computed with other settings.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.probes import VarianceConfig, run_variance

    config = VarianceConfig(n_splits=folds, seed=seed, split=split, denominator=denominator)
    with progress_display(not as_json) as progress:
        ds = run_variance(
            store, name=name, runs=runs, checkpoints=checkpoints, layers=layers,
            features=features, config=config, overwrite=overwrite,
            execution=Execution(scheduler=scheduler, workers=workers, progress=progress),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        last = ds.isel(checkpoint=-1)["r2"].mean("run", skipna=True)  # (layer, feature)
    if as_json:
        typer.echo(json.dumps({
            "store": store, "result": VARIANCE.result(name),
            "runs": ds.run.values.tolist(), "layers": ds.layer.values.tolist(),
            "checkpoints": ds.checkpoint.values.tolist(), "features": ds.feature.values.tolist(),
            "r2_last": {str(f): {str(x): float(last.sel(layer=x, feature=f))
                                 for x in ds.layer.values} for f in ds.feature.values},
        }))
        return
    from actstore.cli._tables import print_table

    lays = [str(x) for x in ds.layer.values]
    feats = [str(f) for f in ds.feature.values]
    grid = last.transpose("layer", "feature").values
    title = (f"variance explained (held-out R^2), step {int(ds.checkpoint[-1])}, mean over "
             "runs")
    if len(lays) >= len(feats):  # the longer list down the rows
        print_table(console, ["layer", *feats],
                    [[x, *[_fmt(v) for v in grid[i]]] for i, x in enumerate(lays)], title=title)
    else:
        print_table(console, ["feature", *lays],
                    [[f, *[_fmt(v) for v in grid[:, j]]] for j, f in enumerate(feats)],
                    title=title)
    console.print(f"written to {store} {VARIANCE.result(name)}", soft_wrap=True)


@command(
    "complexity",
    help=(
        "Dictionary features (NMF of a layer, k atoms) of each run, the V-information of each "
        "feature from every layer and checkpoint (ridge probes), complexity K = 1 - mean over "
        "layers, time-to-decode and signed importance; results go to "
        f"/{COMPLEXITY.result('NAME')}, codes to /results/nmf/NAME.RUN."
    ),
)
def complexity_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    name: Annotated[str, typer.Option(help="Result name.")] = "default",
    runs: Annotated[str, typer.Option(help="'all', or comma-separated run ids / globs.")] = "all",
    k: Annotated[int, typer.Option("-k", "--k", help="Dictionary features per run.")] = 32,
    layer: Annotated[
        str | None, typer.Option(help="Factorised layer (default: the input of the read-out).")
    ] = None,
    step: Annotated[
        int | None, typer.Option(help="Checkpoint of the dictionary (default: the last).")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Probed layers (default: every layer up to --layer).")
    ] = None,
    head_layer: Annotated[
        str | None,
        typer.Option(help="The recorded logits layer; every run must record it.",
                     show_default="out, where a run records it"),
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the NMF.")] = 0,
    split: Annotated[
        str | None, typer.Option(help="Label array with an explicit train/validation split.")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="V-information that counts as decodable (decodable_step).")
    ] = 0.5,
    checkpoints: Annotated[
        bool, typer.Option("--checkpoints/--no-checkpoints",
                           help="Decode the features at every checkpoint (time-to-decode).")
    ] = True,
    importance: Annotated[
        bool, typer.Option("--importance/--no-importance",
                           help="Gradient x activation of the class logits.")
    ] = True,
    negative: Annotated[
        str, typer.Option(help="Negative activations: 'clip' to zero or 'error'.")
    ] = "clip",
    max_epochs: Annotated[int, typer.Option(help="NMF passes over the data.")] = 200,
    batch_rows: Annotated[int, typer.Option(help="NMF minibatch rows.")] = 2048,
    device: Annotated[
        str, typer.Option(help="numpy, torch (CPU), cuda or cupy for the arithmetic.")
    ] = "numpy",
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler.")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local Dask worker processes, one run each (1 = in process).")
    ] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite",
                           help="Replace a result of this name computed with other settings.")
    ] = False,
    standardize: Annotated[
        bool, typer.Option("--standardize/--no-standardize",
                           help="The V-information probes see units z-scored with each "
                                "training fold's mean and standard deviation, so that a "
                                "layer's scale (tiny in untrained networks) does not matter. "
                                "Recorded with the result.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.core import check_device
    from actstore.probes import ComplexityConfig, run_complexity

    check_device(device)
    config = ComplexityConfig(
        k=k, layer=layer, step=step, layers=_layers(layers), head_layer=head_layer,
        n_splits=folds, seed=seed, split=split, over_checkpoints=checkpoints,
        threshold=threshold, importance=importance, negative=negative, max_epochs=max_epochs,
        batch_rows=batch_rows, standardize=standardize,
        backend=None if device == "numpy" else device,
    )
    with progress_display(not as_json) as progress:
        ds = run_complexity(
            store, name=name, runs=runs, config=config, overwrite=overwrite,
            execution=Execution(scheduler=scheduler, workers=workers, progress=progress),
        )
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(ds.run.values):
        comp = ds["complexity"].values[i]
        ok = np.isfinite(comp)
        rows.append({
            "run": str(r), "layer": str(ds["source_layer"].values[i]),
            "step": int(ds["source_checkpoint"].values[i]),
            "nmf_relative_error": float(ds["nmf_relative_error"].values[i]),
            "mean_complexity": float(comp[ok].mean()) if ok.any() else None,
            "features": int(ok.sum()),
        })
    if as_json:
        typer.echo(json.dumps({"store": store, "result": COMPLEXITY.result(name),
                               "codes": f"results/nmf/{name}.<run>", "runs": rows}))
        return
    from actstore.cli._tables import print_table

    print_table(
        console, ["run", "layer", "step", "NMF rel.\nerror", "mean K", "features"],
        [[row["run"], row["layer"], str(row["step"]), _fmt(row["nmf_relative_error"]),
          "-" if row["mean_complexity"] is None else f"{row['mean_complexity']:.3f}",
          str(row["features"])] for row in rows],
        keys=2, title=f"dictionary features (k={k}) and complexity",
    )
    console.print(f"written to {store} {COMPLEXITY.result(name)} (codes: results/nmf/{name}.*)",
                  soft_wrap=True)


@command(
    "report",
    help=(
        "Write an HTML page (index.html + PNG figures) summarising every result in the store's "
        f"/results: {', '.join(a.group for a in ANALYSES.values())}."
    ),
)
def report_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    out: Annotated[
        str | None, typer.Option("--out", help="Report folder (default: STORE-report next to "
                                                "the store).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore.probes import write_report

    rep = write_report(store, out=out, title=title)
    if as_json:
        typer.echo(json.dumps({"index": rep.path, "figures": rep.figures,
                               "sections": rep.sections, "problems": rep.problems}))
        return
    for p in rep.problems:
        typer.echo(f"actstore: warning: {p}", err=True)
    console.print(f"report: {rep.path} ({len(rep.sections)} results, {len(rep.figures)} "
                  "figures)")
