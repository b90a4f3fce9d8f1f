"""The Typer application object and the decorator that registers commands on it."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from actstore._errors import ActstoreError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="actstore",
    help=(
        "Record every layer's activations of families of networks into one chunked Zarr "
        "store, and analyse them out-of-core (decoders, RSA/CKA, alignment, complexity)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from actstore import __version__

        typer.echo(f"actstore {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Record every layer's activations of families of networks into one chunked Zarr store,
    and analyse them out-of-core (decoders, RSA/CKA, alignment, complexity)."""


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr and return the exit (code 2) to raise."""
    typer.echo(f"actstore: error: {message}", err=True)
    return typer.Exit(2)


_python_show_warning = warnings.showwarning


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """actstore's own warnings as one ``actstore: warning:`` line; others as Python shows
    them."""
    if category.__module__.startswith("actstore"):
        typer.echo(f"actstore: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command on :data:`app`; user errors become one line and exit code 2."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kw: Any) -> Any:
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _show_warning
                    return fn(*args, **kw)
            except ActstoreError as e:
                raise fail(str(e)) from None
            except KeyboardInterrupt:
                # commands that save part of their work say so themselves (probe, train, dump)
                typer.echo("actstore: interrupted; nothing unfinished was written (stores hold "
                           "complete results only); re-run the same command", err=True)
                raise typer.Exit(130) from None

        app.command(name, **kwargs)(wrapped)
        return fn

    return deco
