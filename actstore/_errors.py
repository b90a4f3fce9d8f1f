"""Errors meant for users: one clear line saying what was wrong and what to do."""

from __future__ import annotations

__all__ = [
    "ActstoreError", "ActstoreWarning", "LeaseLostError", "ProvenanceError", "StoreError",
    "WriterConflictError",
]


class ActstoreError(ValueError):
    """Bad input or a refused operation. The CLI prints it as one line and exits with code 2.

    Raise it *before* anything is written, so that a store is left as it was.
    """

    #: the exit code of the command line
    exit_code = 2


class StoreError(ActstoreError):
    """A path that is not an actstore store, a newer format version, a corrupt slot."""


class ProvenanceError(ActstoreError):
    """Existing data were made from other weights, probe set or configuration."""


class WriterConflictError(ActstoreError):
    """Another process is writing the same run."""


class LeaseLostError(WriterConflictError):
    """A writer of a run on an object store lost its lease (it was paused or cut off for longer
    than the lease lasts, and another writer may have taken the run): it stopped writing.

    An environment failure, not bad input: the CLI prints it as one line and exits with code 1.
    """

    exit_code = 1


class ActstoreWarning(UserWarning):
    """Something a user should know that did not stop the work (the CLI prints it as one
    ``actstore: warning:`` line)."""
