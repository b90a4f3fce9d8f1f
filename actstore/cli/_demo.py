"""``actstore demo``: train the demo sweep and leave a store ready for analysis."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from actstore.analyses import ANALYSES
from actstore.cli._app import command
from actstore.cli._train import print_report, raise_failures

console = Console(soft_wrap=True)
PROBES = "/" + ANALYSES["probe"].result("demo")
SIMILARITY = "/" + ANALYSES["similarity"].result("demo-cka")
err_console = Console(stderr=True, soft_wrap=True)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB"


@command(
    "demo",
    help=(
        "Train a small Trifeature sweep (AlexNet-style CNN; shape, texture, colour; 2 seeds; "
        "6 checkpoints from step 0) into STORE (default demo.zarr): a few minutes on 2 CPU "
        f"cores. Then ridge decoders of every feature ({PROBES[1:]}), linear CKA of the "
        f"last checkpoint's layers ({SIMILARITY[1:]}) and an HTML report in "
        "a folder next to the store (demo-report/ for demo.zarr). Resumable."
    ),
)
def demo_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")] = "demo.zarr",
    tiny: Annotated[
        bool, typer.Option("--tiny", help="Same runs at tiny sizes (about 30 s; for smoke tests).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers (default: one per core).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: local processes).")
    ] = None,
    serial: Annotated[
        bool, typer.Option("--serial", help="Train in this process, one run after another.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.cli._progress import progress_display
    from actstore.training import ConfigConflictError, run_demo, store_size

    try:
        with progress_display(not as_json) as progress:
            report = run_demo(store, tiny=tiny, execution=Execution(
                None if serial else scheduler, 1 if serial else workers, progress=progress))
    except ConfigConflictError as e:
        # `demo` has no variants: another store, or the --tiny setting the store was made with
        advice = ("use another store path for the tiny demo, or leave out --tiny if this "
                  "store was made without it" if tiny else
                  "use another store path for the demo, or add --tiny if this store was made "
                  "with it")
        raise e.advise(advice) from None
    # Ridge decoders of shape, texture and colour from every layer at every checkpoint
    # (`actstore probe STORE --decoders logistic` adds the papers' logistic decoders).
    from actstore.probes import ProbeConfig, run_probes, summary_table

    with progress_display(not as_json) as progress:
        probes = run_probes(
            store, name="demo", layers="all", features=["shape", "texture", "color"],
            config=ProbeConfig(decoders=("ridge",)),
            execution=Execution(scheduler, 1 if serial else workers, progress=progress))
    # Then: linear CKA of every layer of every run at its last checkpoint.
    from actstore.probes import write_heatmap
    from actstore.similarity import demo_similarity
    from actstore.store import open_store

    sim = demo_similarity(store, Execution(scheduler) if scheduler else None)
    if sim["png"]:
        write_heatmap(open_store(store).read_result("similarity", "demo-cka"), sim["png"])
    # Very last step: the HTML report of every result (a local folder next to the store).
    from actstore.probes import write_report

    page = write_report(store) if "://" not in store else None
    size = store_size(store)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), "store_bytes": size, "similarity": sim,
                               "probes": {"result": PROBES,
                                          "jobs": int(probes.sizes["run"]
                                                      * probes.sizes["checkpoint"]
                                                      * probes.sizes["layer"])},
                               "report": page.path if page else None}))
        raise_failures(report)
        return
    print_report(report, as_json=False)
    console.print(f"store {store}: {_size(size)}. Next: `actstore ls {store}`, "
                  f"`actstore probe {store}`, or in Python `actstore.open({store!r})`.")
    console.print("ridge decoding accuracy, first -> last checkpoint (mean over runs), "
                  f"-> {PROBES}:")
    console.print(summary_table(probes).to_string(), soft_wrap=True)
    console.print(f"similarity: linear CKA of {sim['representations']} representations -> "
                  f"{SIMILARITY}, heatmap {sim['png'] or '-'}")
    if page is not None:
        console.print(f"report: {page.path}")
