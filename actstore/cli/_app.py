"""The Typer application object and the decorator that registers commands on it."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from actstore import ActstoreError
from actstore.cli._failures import environment_failure

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


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr and return the exit (code 2: bad input; 1: a failure of
    the environment) to raise."""
    typer.echo(f"actstore: error: {message}", err=True)
    return typer.Exit(code)


_python_show_warning = warnings.showwarning


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """actstore's own warnings as one ``actstore: warning:`` line; others as Python shows
    them."""
    if category.__module__.startswith("actstore"):
        typer.echo(f"actstore: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def settle_io(timeout: float = 10.0) -> None:
    """Let zarr's I/O thread finish what a command left running, then stop it.

    A command that fails in the middle of a read or write (an unreadable array, a server that
    went away) leaves the other requests of that call running on zarr's event loop. At exit,
    zarr stops its loop and waits 0.2 s for it; a busy or starved loop thread then made Python
    print ``RuntimeError: Cannot close a running event loop`` or ``Task exception was never
    retrieved`` under the command's own message. Here the left-over requests get ``timeout``
    seconds to end (their errors are those of the call that already failed, so they are not
    reported again) and the loop is stopped before zarr's own clean-up runs.
    """
    import asyncio
    import sys

    sync = sys.modules.get("zarr.core.sync")
    loop, thread = (sync.loop[0], sync.iothread[0]) if sync is not None else (None, None)
    if loop is None or thread is None or not thread.is_alive() or loop.is_closed():
        return

    async def drain() -> None:
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if left:
            await asyncio.wait(left, timeout=timeout)
        for t in left:
            if t.done() and not t.cancelled():
                t.exception()  # marks it retrieved

    try:
        asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 1.0)
    except (TimeoutError, RuntimeError):  # a loop that stopped meanwhile: nothing to wait for
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command on :data:`app`; user errors become one line and exit code 2,
    known failures of the environment (see :func:`environment_failure`) one line and exit
    code 1."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kw: Any) -> Any:
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _show_warning
                    return fn(*args, **kw)
            except ActstoreError as e:
                raise fail(str(e), e.exit_code) from None
            except KeyboardInterrupt:
                # commands that save part of their work say so themselves (probe, train, dump)
                typer.echo("actstore: interrupted; nothing unfinished was written (stores hold "
                           "complete results only); re-run the same command", err=True)
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise  # the command's own exit or usage error
            except Exception as e:
                failure = environment_failure(e, kw.get("store"), kw.get("scheduler"))
                if failure is None:
                    raise
                raise fail(str(failure), failure.exit_code) from None

        app.command(name, **kwargs)(wrapped)
        return fn

    return deco
