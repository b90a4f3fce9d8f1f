"""``actstore layers``: a model's module tree, with output shapes and what ``--layers``
records."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from actstore.cli._app import command
from actstore.cli._store_cmds import parse_kv

#: module lists and dicts hold modules but are never called themselves
_CONTAINERS = ("ModuleList", "ModuleDict")


def format_tree(info: dict[str, Any]) -> list[str]:
    """Plain-text lines of :func:`actstore.store.describe_model`'s result: one per module,
    indented by depth, never truncated (the columns are as wide as their longest entry)."""
    rows = info["rows"]
    traced = info["probe_set"] is not None
    names = ["  " * max(r["depth"] - 1, 0) + (r["path"] or "(model)") for r in rows]
    shapes = [
        ("-" if not traced else "container" if r["type"] in _CONTAINERS
         else "did not run" if not r["ran"]
         else "no tensor" if r["shape"] is None else "(" + ", ".join(map(str, r["shape"])) + ")")
        + (f" x{r['calls']}" if r["calls"] > 1 else "")
        for r in rows
    ]
    w_name = max(len("module"), *map(len, names))
    w_type = max(len("type"), *(len(r["type"]) for r in rows))
    head = f"all sel  {'module':<{w_name}}  {'type':<{w_type}}  output shape"
    out = [head, "-" * len(head)]
    for r, name, shape in zip(rows, names, shapes, strict=True):
        marks = f"{'*' if r['all'] else ' ':^3} {'+' if r['selected'] else ' ':^3}"
        out.append(f"{marks}  {name:<{w_name}}  {r['type']:<{w_type}}  {shape}".rstrip())
    where = (f"from one forward pass of 2 samples of probe set {info['probe_set']!r}" if traced
             else "not known without --probe-set (and 'all' keeps modules that may not run)")
    out += [
        "",
        f"output shapes: {where}; xN: the module runs N times per forward pass",
        f"* all: {len(info['all'])} layers: {', '.join(info['all']) or 'none'}",
        f"+ --layers: {len(info['selected'])} layers: {', '.join(info['selected']) or 'none'}",
    ]
    return out


@command(
    "layers",
    help=(
        "List a model's modules (name, type, output shape) and mark those --layers all "
        "records (*) and those a --layers selection records (+). With --probe-set the model "
        "runs once on two samples: shapes are shown, and modules that do not run are left out "
        "of 'all'. Plain text that is never truncated; --json for a machine-readable list."
    ),
)
def layers_cmd(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model factory: package.module:fn or "
                                                "file.py:fn; or hf:FOLDER (a Hugging Face "
                                                "model folder).")
    ],
    probe_set: Annotated[
        str | None, typer.Option("--probe-set", "-p",
                                 help="A probe set to run two samples of: an .npz file, a "
                                      "CSV/JSONL table of sentences (with --tokenizer) or a "
                                      "folder of images.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer folder for a probe set of sentences.")
    ] = None,
    layers: Annotated[
        str, typer.Option(help="A --layers selection to mark (default: all).")
    ] = "all",
    model_arg: Annotated[
        list[str] | None, typer.Option("--model-arg", help="key=value passed to the factory.")
    ] = None,
    device: Annotated[str, typer.Option(help="torch device for the forward pass.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the module list as JSON.")
                       ] = False,
) -> None:
    from actstore import ActstoreError
    from actstore.store import describe_model, probe_set_from_path

    ps = None if probe_set is None else probe_set_from_path(probe_set, tokenizer=tokenizer)
    if probe_set is not None and ps is None:
        raise ActstoreError(f"--probe-set {probe_set}: no such file or folder; give an .npz "
                            "file, a CSV/JSONL table of sentences or a folder of images")
    info = describe_model(model, parse_kv(model_arg, "--model-arg"), ps, layers, device)
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"model {model} ({info['type']})")
    for line in format_tree(info):
        typer.echo(line)
