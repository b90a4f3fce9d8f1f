"""``actstore probe``: summary table, JSON report, export, and one-line errors (exit code 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from actstore.cli import app
from actstore.probes import write_synthetic_store
from actstore.store import open_store

runner = CliRunner()
FAST = ["--folds", "3", "--alphas", "0.1,10,1000", "--cs", "0.01,1", "--workers", "1"]


@pytest.fixture
def store(tmp_path):
    url = str(tmp_path / "c.zarr")
    write_synthetic_store(url, n_runs=2, steps=[0, 10, 100], widths=[5, 12], n=90,
                          features={"shape": 3, "color": 2})
    return url


def test_probe_all_layers_prints_a_table_and_writes_results(store, tmp_path):
    out = tmp_path / "scores.csv"
    r = runner.invoke(app, ["probe", store, "--layers", "all", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert "layer0" in r.output and "layer1" in r.output
    assert "shape (acc)" in r.output and "->" in r.output
    assert "12 jobs" in r.output
    assert "probes/default" in open_store(store).result_names()
    header = out.read_text().splitlines()[0]
    assert header.startswith("decoder,run,checkpoint,layer,feature,accuracy")
    assert len(out.read_text().splitlines()) == 1 + 2 * 2 * 3 * 2 * 2


def test_json_report_and_selection(store):
    r = runner.invoke(app, ["probe", store, "--json", "--runs", "run1", "--layers", "layer1",
                            "--checkpoints", "first,last", "--decoders", "ridge",
                            "--name", "sel", *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["jobs_done"] == 2 and rep["runs"] == ["run1"] and rep["checkpoints"] == [0, 100]
    assert rep["decoders"] == ["ridge"] and rep["result"] == "results/probes/sel"
    assert set(rep["summary"]["layer1"]) == {"shape (acc)", "color (acc)"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "conv9"], "no layer matches 'conv9'; layers: layer0, layer1"),
        (["--features", "size"], "unknown feature 'size'; features: shape, color"),
        (["--decoders", "svm"], "unknown decoder 'svm'; available: ridge, logistic"),
        (["--alphas", "a:b"], "--alphas 'a:b' must be LOW:HIGH:COUNT"),
        (["--out", "x.txt"], "--out must end in .csv or .parquet"),
        (["--folds", "50"], "fewer than the 50 folds"),
        (["--split", "nope"], "no label array 'nope' to split on"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, args, message):
    r = runner.invoke(app, ["probe", store, *FAST, *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("actstore: error: ")
    assert message in lines[0]
    assert open_store(store).result_names() == []  # nothing written


def test_incomplete_checkpoint_is_a_warning_or_an_error_with_strict(tmp_path):
    url = str(tmp_path / "i.zarr")
    s = write_synthetic_store(url, n_runs=1, steps=[0], widths=[4], n=60, features={"a": 2})
    with s.writer("run0", probe_set="synthetic", steps=[0, 9], attrs=s.reader("run0").attrs):
        pass
    r = runner.invoke(app, ["probe", url, *FAST, "--strict"])
    assert r.exit_code == 2 and "checkpoint 9 is incomplete" in r.output
    r = runner.invoke(app, ["probe", url, *FAST])
    assert r.exit_code == 0, r.output
    assert "actstore: warning: run 'run0' checkpoint 9 is incomplete" in r.output


def test_dead_scheduler_is_a_clear_error(store):
    r = runner.invoke(app, ["probe", store, "--scheduler", "tcp://127.0.0.1:9", "--folds", "3",
                            "--scheduler-timeout", "2"])
    assert r.exit_code == 2
    assert "scheduler at tcp://127.0.0.1:9 did not answer" in r.output
