"""Bad input to the analysis commands (similarity, align, variance, complexity, report): one
line, exit code 2, nothing written; their tables at 80 columns; their progress bars."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from stores import mlp_store
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()
N = 30
RUNS = [f"a-rather-long-run-identifier-for-tables-s{s}" for s in range(3)]


@pytest.fixture
def store(tmp_path):
    return mlp_store(str(tmp_path / "an.zarr"), RUNS, {"shape": np.arange(N) % 3,
                                                           "color": (np.arange(N) // 3) % 2})


def _refused(store, args, message, tmp_path=None):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr, res.stderr
    assert res.stderr.startswith("actstore: error: ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output
    assert open_store(store).result_names() == []
    if tmp_path is not None:
        assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("png", "message"),
    [
        ("/nonexistent/x.png", "folder /nonexistent does not exist"),
        ("x.txt", "format '.txt' is not supported; end it in .png, .pdf, .svg"),
        ("heatmap", "the file name has no extension"),
    ],
)
def test_similarity_refuses_a_bad_heatmap_path_before_computing(store, tmp_path, monkeypatch,
                                                                png, message):
    monkeypatch.chdir(tmp_path)
    _refused(store, ["similarity", store, "--scheduler", "sync", "--png", png], message,
             tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["similarity", "{s}", "--workers", "-1"], "--workers must be at least 1, got -1"),
        (["similarity", "{s}", "--scheduler", "sync", "--stimuli", "first:0"],
         "cannot read the stimulus subset 'first:0'"),
        (["similarity", "{s}", "--scheduler", "sync", "--stimuli", "random:5:-1"],
         "cannot read the stimulus subset"),
        (["similarity", "{s}", "--scheduler", "sync", "--stimuli", ""],
         "cannot read the stimulus subset ''"),
        (["similarity", "{s}", "--scheduler", "sync", "-s", "layer="],
         "the layer selection is empty"),
        (["similarity", "{s}", "--scheduler", "sync", "-s", "run=nosuch"],
         "no run matches 'nosuch'; runs: " + ", ".join(RUNS)),
        (["similarity", "{s}", "--scheduler", "sync", "-s", "checkpoint=abc"],
         "cannot read the checkpoint selection 'abc'"),
        (["similarity", "{s}", "--scheduler", "sync", "--bootstrap", "3", "--seed", "-1"],
         "bootstrap seed must be an integer >= 0"),
        (["align", "{s}", RUNS[0], "nosuch"], "no run 'nosuch' in "),
        (["align", "{s}", RUNS[0], RUNS[1], "--workers", "0"], "--workers must be at least 1"),
        (["align", "{s}", RUNS[0], RUNS[1], "--checkpoint", "abc"],
         "cannot read the checkpoint selection 'abc'; give last, first, all or training steps"),
        (["align", "{s}", RUNS[0], RUNS[1], "--alphas", "-1"],
         "LASSO penalties must be finite numbers >= 0; alphas holds [-1.0]"),
        (["align", "{s}", RUNS[0], RUNS[1], "--alphas", ""],
         "alphas must be a flat sequence of at least one penalty"),
        (["align", "{s}", RUNS[0], RUNS[1], "--seed", "-1"], "seed must be an integer >= 0"),
        (["align", "{s}", RUNS[0], RUNS[1], "--layer", "", "--scheduler", "sync"],
         "the layer selection is empty"),
        (["align", "{s}", RUNS[0], RUNS[1], "--layer", "fc9", "--scheduler", "sync"],
         "no layer matches 'fc9'; runs: "),
        (["variance", "{s}", "--workers", "-1"], "--workers must be at least 1, got -1"),
        (["variance", "{s}", "--seed", "-1"], "seed must be an integer >= 0"),
        (["variance", "{s}", "--layers", ""], "the layer selection is empty; give layer names"),
        (["variance", "{s}", "--runs", ""], "the run selection is empty"),
        (["variance", "{s}", "--features", " , "], "features: shape, color"),
        (["variance", "{s}", "--checkpoints", ""], "the checkpoint selection is empty"),
        (["complexity", "{s}", "--workers", "-1"], "--workers must be at least 1, got -1"),
        (["complexity", "{s}", "--seed", "-1"], "seed must be an integer >= 0"),
        (["complexity", "{s}", "--layers", "nosuch"],
         "no layer matches 'nosuch'; layers: fc1, fc2"),
        (["complexity", "{s}", "--layers", ""], "the probed layer selection is empty"),
        (["complexity", "{s}", "--runs", ""], "the run selection is empty"),
        (["complexity", "{s}", "--step", "3"], "has no complete checkpoint 3; complete: 0, 5"),
        (["complexity", "{s}", "--head-layer", "nosuch"],
         f"run '{RUNS[0]}' has no layer 'nosuch' to use as the logits layer; layers: fc1, fc2"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_computed(store, args, message):
    _refused(store, [a.replace("{s}", store) for a in args], message)


def test_runs_without_a_logits_layer_still_get_the_default(store):
    res = runner.invoke(app, ["complexity", store, "--runs", RUNS[0], "-k", "3", "--folds", "3",
                              "--max-epochs", "20", "--no-checkpoints", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["runs"][0]["layer"] == "fc2"
    assert res.stderr == ""  # no progress bar with --json


def _no_cut(text: str) -> None:
    assert "…" not in text
    # table lines fit; lines naming paths are not wrapped
    assert all(len(line) <= 80 for line in text.splitlines()
               if not line.startswith(("written to", "results:")))


def test_tables_fit_80_columns_without_cutting_names(store, monkeypatch):
    from actstore.cli import _report, _similarity

    for mod in (_report, _similarity):
        monkeypatch.setattr(mod.console, "width", 80)
    res = runner.invoke(app, ["align", store, *RUNS, "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    _no_cut(res.stdout)
    for letter, run in zip("ABC", RUNS, strict=True):
        assert f"{letter} = {run}" in res.stdout
    assert re.search(r"fc1\s+A-C\s+-?\d\.\d{3}", res.stdout)
    # a progress bar (its final state, off a terminal) on stderr, over the layers
    assert "align" in res.stderr and "2/2" in res.stderr

    res = runner.invoke(app, ["variance", store, "--folds", "3"])
    assert res.exit_code == 0, res.output
    _no_cut(res.stdout)
    assert re.search(r"layer\s+shape\s+color", res.stdout)
    assert "variance" in res.stderr and "12/12" in res.stderr  # runs x layers x checkpoints
    res = runner.invoke(app, ["complexity", store, "-k", "3", "--folds", "3", "--max-epochs",
                              "20", "--name", "c"])
    assert res.exit_code == 0, res.output
    _no_cut(res.stdout)
    for run in RUNS:
        assert run in res.stdout
    assert "complexity" in res.stderr

    res = runner.invoke(app, ["similarity", store, "--scheduler", "sync", "--png", "none",
                              "-s", "layer=fc1"])
    assert res.exit_code == 0, res.output
    _no_cut(res.stdout)
    for run in RUNS:
        assert f"{run}@5/fc1" in res.stdout


def test_help_shows_the_defaults_of_workers_and_device():
    for cmd in ("similarity", "align"):
        res = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        assert "[default: (one per core" in res.stdout
    res = runner.invoke(app, ["similarity", "--help"], env={"COLUMNS": "200"})
    assert "[default: (numpy)]" in res.stdout


def test_report_of_a_one_by_one_similarity_has_no_numpy_warning(store, tmp_path):
    res = runner.invoke(app, ["similarity", store, "--scheduler", "sync", "--png", "none",
                              "-s", f"run={RUNS[0]};layer=fc2"])
    assert res.exit_code == 0, res.output
    from actstore.probes import write_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = write_report(store, out=str(tmp_path / "rep"))
    assert not [w for w in caught if "empty slice" in str(w.message)]
    assert "No off-diagonal similarity" in (tmp_path / "rep" / "index.html").read_text()
    assert rep.sections


def test_ctrl_c_of_an_analysis_is_one_line(tmp_path, monkeypatch):
    """Commands without their own Ctrl-C message end with one line and exit code 130."""
    import actstore.similarity as sj
    from actstore.probes import write_synthetic_store

    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, n_runs=1, steps=[0], widths=[4], n=40, features={"shape": 2})

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sj, "similarity_job", interrupted)  # imported by the command when run
    res = runner.invoke(app, ["similarity", url, "--png", "none"])
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().startswith("actstore: interrupted; nothing unfinished was written")
    assert "Traceback" not in res.output
