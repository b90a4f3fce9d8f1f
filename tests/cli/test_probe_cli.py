"""``actstore probe``: summary table, JSON report, export, and one-line errors (exit code 2)."""

from __future__ import annotations

import json

import pytest
from stores import error_line
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
    rep = json.loads(r.stdout)  # warnings go to stderr
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
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--seed", "-1"], "seed must be a non-negative integer, got -1"),
        (["--cache-mb", "-5"], "cache_mb must be >= 0"),
        (["--layers", ""], "the layer selection '' is empty"),
        (["--runs", ","], "the run selection ',' is empty"),
        (["--name", ".."], "result name '..' must use letters"),
        (["--out", "/nonexistent-dir/x.csv"], "the folder /nonexistent-dir does not exist"),
        (["--table-decoder", "svm"], "--table-decoder 'svm' is not among the decoders"),
        (["--scheduler", "notanaddress"], "is not a Dask scheduler address"),
        (["--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "0"],
         "--scheduler-timeout must be a positive number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, args, message):
    r = runner.invoke(app, ["probe", store, *FAST, *args])
    assert message in error_line(r)
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
    import socket

    # a port held by this test but not listening: nothing can answer on it
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{held.getsockname()[1]}"
        r = runner.invoke(app, ["probe", store, "--scheduler", addr, "--folds", "3",
                                "--scheduler-timeout", "2"])
    assert f"scheduler at {addr} did not answer within 2 s" in error_line(r)
    assert open_store(store).result_names() == []


def test_a_file_is_not_a_store(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("hi")
    r = runner.invoke(app, ["probe", str(f), *FAST])
    assert r.exit_code == 2
    assert "plain.txt is a file, not an actstore store" in r.output
    assert f.read_text() == "hi"


def test_rerun_says_what_was_computed(store):
    args = ["probe", store, "--decoders", "ridge", *FAST]
    r = runner.invoke(app, [*args, "--checkpoints", "first"])
    assert r.exit_code == 0 and "4 jobs" in r.output and "4 computed" in r.output, r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "12 jobs" in r.output, r.output
    assert "8 computed, 4 already done" in r.output


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.0 200 OK\r\n\r\nnot dask" * 10])
def test_a_server_that_is_not_a_dask_scheduler(store, reply):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    held = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = runner.invoke(app, ["probe", store, *FAST[:-2], "--scheduler",
                                f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "1"])
    finally:
        srv.close()
        for c in held:
            c.close()
    assert r.exit_code == 2, r.output
    assert f"127.0.0.1:{port}" in r.output and "leave out --scheduler" in r.output
    assert open_store(store).result_names() == []
