"""The command line's progress display: plain lines in a log, nothing with --json."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from actstore.cli import app
from actstore.cli._progress import LogProgress, duration, progress_display


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (42.3, "42 s"), (60, "1 min"), (190, "3 min 10 s"), (4000, "1 h 6 min"),
])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_log_lines_first_every_interval_and_last():
    lines: list[str] = []
    clock = Clock()
    log = LogProgress(lines.append, interval=20, clock=clock)
    log("probing", 0, 480)
    assert lines == []  # nothing finished yet
    clock.now = 1.0
    log("probing", 1, 480)
    assert lines == ["probing: 1/480 jobs (0%), 1 s elapsed, ~8 min left"]
    for done in range(2, 120):
        clock.now = done * 1.0
        log("probing", done, 480)
    clock.now = 190.0
    log("probing", 120, 480)
    # one line per 20 s: at jobs 1, 21, ..., 101, then the slow 120th after 89 s
    assert [ln.split(" ")[1] for ln in lines] == [f"{d}/480" for d in (1, 21, 41, 61, 81, 101,
                                                                       120)]
    assert lines[-1] == "probing: 120/480 jobs (25%), 3 min 10 s elapsed, ~10 min left"
    clock.now = 191.0
    log("probing", 480, 480)  # the last one is always written
    assert lines[-1] == "probing: 480/480 jobs (100%), 3 min 11 s elapsed"


def test_log_stages_are_separate_and_name_their_unit():
    lines: list[str] = []
    clock = Clock()
    log = LogProgress(lines.append, interval=30, clock=clock)
    log("hermann2020-small runs", 0, 4)
    log("similarity", 0, 2)
    clock.now = 5.0
    log("hermann2020-small runs", 1, 4)
    log("similarity", 2, 2)
    assert lines == ["hermann2020-small: 1/4 runs (25%), 5 s elapsed, ~15 s left",
                     "similarity: 2/2 jobs (100%), 5 s elapsed"]


def test_off_a_terminal_the_display_writes_lines_to_stderr(capsys):
    with progress_display(interval=0) as progress:
        assert isinstance(progress, LogProgress)
        progress("variance", 0, 3)
        for done in (1, 2, 3):
            progress("variance", done, 3)
    err = capsys.readouterr().err.splitlines()
    assert [e.split(",")[0] for e in err] == ["variance: 1/3 jobs (33%)",
                                              "variance: 2/3 jobs (66%)",
                                              "variance: 3/3 jobs (100%)"]
    with progress_display(enabled=False) as progress:
        assert progress is None


def test_a_command_logs_its_progress_off_a_terminal(tmp_path):
    from actstore.testing import write_synthetic_store

    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url)
    res = CliRunner().invoke(app, ["variance", url, "--folds", "2"])
    assert res.exit_code == 0, res.output
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("variance") and "(100%)" in last, res.stderr
