"""``actstore`` command line: command bodies parse options and call library functions."""

from __future__ import annotations

from actstore.cli._app import app

# Each module registers its commands on ``app`` when imported.
from actstore.cli import _store_cmds  # noqa: E402,F401  (dump, ls, info, demo)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``actstore`` console script."""
    app()
