"""``actstore`` command line: command bodies parse options and call library functions."""

from __future__ import annotations

# Each module registers its commands on ``app`` when imported.
from actstore.cli import (
    _demo,  # noqa: F401  (demo)
    _integrity_cmds,  # noqa: F401  (verify, repair, ingest)
    _layers,  # noqa: F401  (layers)
    _probe,  # noqa: F401  (probe)
    _report,  # noqa: F401  (variance, complexity, report)
    _similarity,  # noqa: F401  (similarity, align)
    _store_cmds,  # noqa: F401  (dump, ls, info)
    _study,  # noqa: F401  (study)
    _train,  # noqa: F401  (train)
)
from actstore.cli._app import app, settle_io

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``actstore`` console script."""
    try:
        app()
    finally:
        settle_io()
