"""``actstore dump | ls | info``: record activations and look at a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from actstore.cli._app import command
from actstore.cli._tables import print_rich_table

console = Console(soft_wrap=True)


def print_table(table: Table) -> None:
    """Print a table without cutting or wrapping any cell (run ids and layer names are what
    users type): wider than the console on a terminal if need be, plain text in a log."""
    print_rich_table(console, table)


def name_table(*columns: str) -> Table:
    """A compact table whose cells stay on one line."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in columns:
        table.add_column(name, no_wrap=True)
    return table


def short_model(model: Any) -> str:
    """A model factory given as a file path, without its directory: ``mymodel.py:make``."""
    mod, sep, fn = str(model).rpartition(":")
    return f"{Path(mod).name}{sep}{fn}" if sep and mod.endswith(".py") else str(model)


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def parse_kv(items: list[str] | None, what: str, *, raw: bool = False) -> dict[str, Any]:
    """``["seed=0", "task=shape"]`` -> ``{"seed": 0, "task": "shape"}`` (JSON values allowed).

    Values that are not JSON stay text, and with ``raw`` every value stays the text given (for
    commands that check and convert each value by its key); a key given twice is refused
    rather than silently replaced.
    """
    from actstore import ActstoreError

    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ActstoreError(f"{what} {item!r} must look like key=value")
        if key in given:
            raise ActstoreError(
                f"{what} {key} is given twice ({given[key]!r} and {item!r}); give it once"
            )
        given[key] = item
        if raw:
            out[key] = val
            continue
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


@command(
    "dump",
    help=(
        "Record the activations of every checkpoint of a run into a store. Checkpoint files "
        "hold a state dict (or {'step': N, 'state_dict': ...}), loaded with weights_only=True; "
        "a file's training step is its 'step' entry or the last number in its name "
        "(step_100.pt). With no checkpoint files, --step N records the weights the model "
        "comes with (a pretrained model, or --model hf:FOLDER) as step N. Resumable: complete "
        "checkpoints are skipped after checking their weights hash, interrupted ones are redone."
    ),
)
def dump_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL (created if missing).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model factory: package.module:fn or "
                                                "file.py:fn; or hf:FOLDER, a Hugging Face "
                                                "model folder (offline, safetensors only).")
    ],
    probe_set: Annotated[
        str, typer.Option("--probe-set", "-p",
                          help="Probe set in the store, or one to add: an .npz file, a "
                               "CSV/JSONL table of sentences (with --tokenizer), or a folder "
                               "of images with a labels CSV (docs/FORMAT.md).")
    ],
    run: Annotated[
        str, typer.Option("--run", "-r", help="Run id to write; with several directories a "
                                              "template: {parent}, {dir}, {i}.")
    ],
    checkpoints: Annotated[
        list[str] | None,
        typer.Argument(help="Directory of .pt files, a glob, or one file. Several directories "
                            "dump several runs, one Dask task each (see --run). None with "
                            "--step."),
    ] = None,
    step: Annotated[
        int | None, typer.Option(help="Record the model's own weights (no checkpoint files) "
                                      "as this training step.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer folder (save_pretrained; nothing is "
                                      "downloaded) for a --probe-set table of sentences.")
    ] = None,
    text_column: Annotated[
        str, typer.Option(help="Column of texts in a --probe-set table of sentences.")
    ] = "text",
    max_length: Annotated[
        int | None, typer.Option(help="Most tokens per sentence; longer ones are cut (the "
                                      "count is recorded).")
    ] = None,
    probe_option: Annotated[
        list[str] | None,
        typer.Option("--probe-option",
                     help="key=value for a probe set made from a file: sentences take "
                          "labels=a,b, padding=longest|max_length, truncation=true|false; "
                          "image folders take labels=FILE.csv, file_column=NAME, resize=N or "
                          "H,W, crop=N or H,W, mean=..., std=... (or imagenet), mode=RGB|L, "
                          "input_name=pixel_values."),
    ] = None,
    layers: Annotated[
        str, typer.Option(help="'all' (the model's declared layers, else embeddings, each "
                               "block of every stack, final norm, head), 'leaves' (every leaf "
                               "module), or comma-separated names / module paths / globs; "
                               "`actstore layers` lists them.")
    ] = "all",
    reduce: Annotated[
        str | None,
        typer.Option(help="Reduction of conv maps / sequences: mean, max, center, flatten, "
                          "grid:S, randproj:K, first, last, all (default: the model's declared "
                          "actstore_reductions, else mean). Token sequences are reduced over "
                          "the tokens the probe set's attention_mask marks valid."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="torch device for the forward pass.")] = "cpu",
    model_arg: Annotated[
        list[str] | None, typer.Option("--model-arg", help="key=value passed to the factory.")
    ] = None,
    attr: Annotated[
        list[str] | None, typer.Option("--attr", help="Run attribute key=value (task, seed...).")
    ] = None,
    codec: Annotated[
        str, typer.Option(help="Compression of activations: zstd, blosc-lz4, blosc-zstd, none.")
    ] = "zstd",
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (several runs in parallel).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask worker processes (default: one per core).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from actstore import Execution
    from actstore.cli._progress import progress_display
    from actstore.store import dump, dump_many, probe_set_from_path, run_ids_for

    execution = Execution(scheduler, workers)  # a bad --workers or --scheduler: one line
    made = probe_set_from_path(probe_set, tokenizer=tokenizer, text_column=text_column,
                               max_length=max_length,
                               options=parse_kv(probe_option, "--probe-option", raw=True))
    source: Any = made if made is not None else probe_set

    common: dict[str, Any] = dict(
        layers=layers, reduce=reduce, dtype=dtype, batch_size=batch_size, device=device,
        attrs=parse_kv(attr, "--attr"), factory_kwargs=parse_kv(model_arg, "--model-arg"),
        codec=codec,
    )
    try:
        with progress_display(not as_json) as progress:
            execution = execution.with_(progress=progress)
            if not checkpoints or step is not None:
                reports = [dump(store, run, model, checkpoints[0] if checkpoints else None,
                                source, execution=execution, step=step, **common)]
            elif len(checkpoints) == 1 and scheduler is None:
                reports = [dump(store, run, model, checkpoints[0], source,
                                execution=execution, **common)]
            else:
                ids = run_ids_for(checkpoints, run) if len(checkpoints) > 1 else [run]
                reports = dump_many(store, ids, checkpoints, model, source,
                                    execution=execution, **common)
    except KeyboardInterrupt:
        from actstore.cli._train import interrupted

        raise interrupted() from None
    if as_json:
        out = [r.__dict__ for r in reports]
        typer.echo(json.dumps(out[0] if len(out) == 1 else out))
        return
    for r in reports:
        console.print(
            f"run [bold]{r.run}[/]: wrote {len(r.written)} checkpoint(s) {r.written}, "
            f"skipped {len(r.skipped)} already complete {r.skipped}"
        )


def _writer_note(store: str, writer: dict[str, Any] | None, state: str | None) -> str:
    """What listings say about a run's writer: live, killed, or on another machine."""
    who = f"pid {(writer or {}).get('pid')} on {(writer or {}).get('host')}"
    if state == "stale":
        return (f"interrupted: its writer ({who}) is gone; re-run the command that wrote it to "
                f"finish it, or `actstore repair {store}` to reset what it left half-written "
                "and clear its record")
    if state == "unknown":
        return (f"being written by {who}, another machine: whether that writer still runs "
                "cannot be checked from here")
    return f"being written by {who}"


def _damaged_note(store: str, run: str, reason: str) -> str:
    return f"run {run!r}: damaged: {reason}; run `actstore verify {store}` to see what is wrong"


def _known(value: Any) -> str:
    """A run attribute for a listing: ``-`` when not recorded (a dumped run has a model
    factory and a probe set, and a task or seed only when given with --attr)."""
    return "-" if value is None or value == "" else str(value)


#: what ``info`` shows of a run on its first lines, or never (bookkeeping, JSON only)
_INFO_SHOWN = ("run", "model", "task", "seed", "variant", "probe_set", "dataset", "dump",
               "config", "metrics", "data", "writer", "writer_state", "n_samples", "features",
               "checkpoints_complete", "checkpoints_total", "slots", "layers", "stored_bytes",
               "probe_set_hash", "config_hash", "actstore_version", "created")


#: what the checkpoint column of ``ls`` adds for a run's writer
_WRITER_MARK = {"live": " (writing)", "unknown": " (writing?)", "stale": " (interrupted)"}


@command("ls", help="List the runs of a store: model, task, seed, layers, completion, size.")
def ls_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from rich.markup import escape

    from actstore.store import open_store, store_summary

    s = store_summary(open_store(store))
    if as_json:
        typer.echo(json.dumps(s, default=str))
        return
    console.print(f"[bold]{s['url']}[/] format {s['format']}, {human_bytes(s['stored_bytes'])}")
    for ps in s["probe_sets"]:
        console.print(f"probe set [bold]{ps['name']}[/]: {ps['n']} samples, "
                      f"features {', '.join(ps['features'] or [])}")
    table = name_table("run", "model", "task", "seed", "probe set", "layers", "ckpts", "size")
    notes = []
    for r in s["runs"]:
        if r["damaged"]:
            table.add_row(r["run"], "-", "-", "-", "-", "-", "damaged",
                          human_bytes(r["stored_bytes"]))
            notes.append(_damaged_note(store, r["run"], r["damaged"]))
            continue
        done = f"{r['checkpoints_complete']}/{r['checkpoints_total']}"
        done += _WRITER_MARK.get(r["writer_state"], "")
        if r["writer_state"] in ("stale", "unknown"):
            notes.append(f"run {r['run']!r}: "
                         + _writer_note(store, r["writer"], r["writer_state"]))
        table.add_row(r["run"], short_model(r["model"]), _known(r["task"]),
                      _known(r["seed"]), _known(r["probe_set"]), str(r["layers"]), done,
                      human_bytes(r["stored_bytes"]))
    print_table(table)
    for note in notes:
        console.print(escape(note))
    if s["results"]:
        console.print("results: " + ", ".join(s["results"]))
    for r in s["pending_overwrites"]:
        console.print(f"pending: an interrupted --overwrite of results/{r}; run the same "
                      "command with --overwrite to finish it")


@command("info", help="Details of a store, or of one run: layers, shapes, chunks, checkpoints.")
def info_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    run: Annotated[str | None, typer.Argument(help="Run id (default: every run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from rich.markup import escape

    from actstore.store import DamagedRunError, open_store, run_info, store_summary

    st = open_store(store)
    infos: list[dict[str, Any]] = []
    for r in [run] if run else st.run_ids():
        try:
            infos.append(run_info(st, r))
        except DamagedRunError as e:
            if run:  # the one run asked for: an error
                raise
            infos.append({"run": r, "damaged": e.reason})
    if as_json:
        out: Any = infos[0] if run else {"store": store_summary(st), "runs": infos}
        typer.echo(json.dumps(out, default=str))
        return
    for info in infos:
        if info.get("damaged"):
            console.print(f"[bold]{escape(info['run'])}[/]: damaged: {escape(info['damaged'])}; "
                          f"run `actstore verify {escape(store)}` to see what is wrong")
            continue
        console.print(
            f"[bold]{info['run']}[/]: model {escape(str(info.get('model')))}, "
            + "".join(f"{k} {escape(str(info[k]))}, " for k in ("task", "seed", "variant")
                      if info.get(k) is not None)
            + f"probe set {info.get('probe_set')} ({info['n_samples']} samples), "
            f"{human_bytes(info['stored_bytes'])}"
        )
        if isinstance(info.get("dump"), dict):  # recorded by `actstore dump`: how
            d = info["dump"]
            console.print(f"  dumped with --layers {escape(str(d.get('layers')))}, --reduce "
                          f"{escape(str(d.get('reduce') or 'default'))}, dtype {d.get('dtype')}")
        extra = {k: v for k, v in info.items() if k not in _INFO_SHOWN and v is not None}
        if extra:
            console.print("  attributes: " + escape(", ".join(
                f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                for k, v in extra.items())))
        if info["writer_state"] not in ("none", None):
            console.print("  " + escape(_writer_note(store, info["writer"],
                                                     info["writer_state"])))
        steps = " ".join(
            f"{s['planned_step']}{'' if s['status'] == 'complete' else '(' + s['status'] + ')'}"
            for s in info["slots"]
        )
        console.print(f"  checkpoints {info['checkpoints_complete']}/"
                      f"{info['checkpoints_total']}: {steps}")
        table = name_table("layer", "module", "reduction", "units", "dtype", "chunks",
                           "stored", "ratio")
        for ly in info["layers"]:
            ratio = ly["nbytes"] / ly["stored_bytes"] if ly["stored_bytes"] else float("nan")
            table.add_row(ly["name"], str(ly["module"]), str(ly["reduction"]), str(ly["units"]),
                          ly["dtype"], "x".join(map(str, ly["chunks"])),
                          human_bytes(ly["stored_bytes"]), f"{ratio:.2f}")
        print_table(table)
