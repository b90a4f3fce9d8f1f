"""The command line's one progress display, given to the library as ``Execution.progress``.

The library reports ``progress(stage, done, total)`` as jobs finish (see
:class:`actstore.Execution`); this module shows it. On a terminal, one rich bar per stage on
stderr; otherwise (a log file, a pipe, a batch system) plain lines such as::

    probing: 120/480 jobs (25%), 3 min 10 s elapsed, ~9 min left

one for the first finished job, then at most one every ``interval`` seconds, and one for the
last, so that a log of a day-long run stays short and still shows that it moves.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["LogProgress", "duration", "progress_display"]

#: Seconds between two plain progress lines of one stage.
INTERVAL = 15.0
#: Last words of a stage name that name what is counted (``"sweep runs"``: runs, not jobs).
UNITS = ("jobs", "runs", "steps", "checkpoints", "batches", "layers")


def duration(seconds: float) -> str:
    """``190`` -> ``"3 min 10 s"``; ``4000`` -> ``"1 h 6 min"``; ``42.3`` -> ``"42 s"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _label(stage: str) -> tuple[str, str]:
    """The label and the unit of a stage: ``"sweep runs"`` -> ``("sweep", "runs")``."""
    head, _, last = stage.rpartition(" ")
    if head and last in UNITS:
        return head, last
    return stage, "jobs"


@dataclass
class _Stage:
    start: float
    printed: float | None = None
    done: int = 0


class LogProgress:
    """``progress(stage, done, total)`` as plain lines, for output that is not a terminal.

    Parameters
    ----------
    write : callable
        Receives each line (without its newline).
    interval : float
        Seconds between two lines of one stage (the first and the last are always written).
    clock : callable
        Monotonic clock in seconds.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.interval, self.clock = write, interval, clock
        self.stages: dict[str, _Stage] = {}
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self.lock:
            now = self.clock()
            st = self.stages.get(stage)
            if st is None or done <= 0:  # a stage (re)starts: no line until a job finishes
                self.stages[stage] = _Stage(start=now)
                return
            if done == st.done:
                return
            st.done = done
            due = st.printed is None or now - st.printed >= self.interval
            if not (due or done >= total):
                return
            st.printed = now
            self.write(self.line(stage, done, total, now - st.start))

    @staticmethod
    def line(stage: str, done: int, total: int, elapsed: float) -> str:
        """``probing: 120/480 jobs (25%), 3 min 10 s elapsed, ~9 min left``."""
        label, unit = _label(stage)
        pct = 100 * done // total if total else 100
        text = f"{label}: {done}/{total} {unit} ({pct}%), {duration(elapsed)} elapsed"
        if 0 < done < total:
            left = elapsed / done * (total - done)
            text += f", ~{duration(round(left / 60) * 60 if left >= 60 else left)} left"
        return text


class _Bars:
    """``progress(stage, done, total)`` as rich bars on a terminal, one per stage.

    Bars appear once work starts, so a command refused before it starts prints its error line
    alone.
    """

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                             transient=False)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self.lock:
            if not self.tasks:
                self.bars.start()
            if stage not in self.tasks:
                self.tasks[stage] = self.bars.add_task(stage, total=total)
            self.bars.update(self.tasks[stage], completed=done, total=total)

    def close(self, failed: bool) -> None:
        if not self.tasks:
            return
        if failed:  # the error line is then the one line left
            self.bars.live.transient = True
        self.bars.stop()


def _stderr_line(text: str) -> None:
    stream: TextIO = sys.stderr  # looked up at each line: tests and typer swap it
    stream.write(text + "\n")
    stream.flush()


@contextlib.contextmanager
def progress_display(
    enabled: bool = True, *, interval: float = INTERVAL
) -> Iterator[Callable[[str, int, int], None] | None]:
    """The progress callback of one command (``None`` when ``enabled`` is false, e.g. --json).

    Rich bars when stderr is a terminal, plain lines (:class:`LogProgress`) otherwise.
    A failure other than Ctrl-C clears the bars, so that the error line stands alone.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    if not console.is_terminal:
        yield LogProgress(_stderr_line, interval)
        return
    bars = _Bars(console)
    failed = True
    try:
        yield bars
        failed = False
    except KeyboardInterrupt:
        failed = False
        raise
    finally:
        bars.close(failed)
