"""Listings and analyses of stores with a killed writer or a damaged run: one line each, never
a traceback, and reading commands never change the store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from stores import mlp_store
from typer.testing import CliRunner

from actstore._errors import WriterConflictError
from actstore.cli import app
from actstore.store import DamagedRunError, open_store
from actstore.store._lease import Lease, holder_state

runner = CliRunner()
LABELS = {"color": np.array([0, 1, 2] * 10)}


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture
def store(tmp_path) -> Path:
    """Runs a, b, c with steps 0 and 5 complete."""
    path = tmp_path / "s.zarr"
    mlp_store(str(path), ["a", "b", "c"], LABELS)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _kill_a_writer(store: Path, run: str, begin: bool = True) -> None:
    """A process that begins a new slot of ``run`` (or, ``begin=False``, plans it only) and is
    killed with SIGKILL."""
    code = textwrap.dedent(f"""
        import os, signal
        from actstore.store import open_store
        st = open_store({str(store)!r}, mode="a")
        w = st.writer({run!r}, probe_set="ps", steps=[0, 5, 10], attrs={{}})
        w.__enter__()
        if {begin!r}:
            w.begin_slot(10)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


# -- who holds a run -------------------------------------------------------------------------
def test_holder_state_of_local_writers():
    host = socket.gethostname()
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    url = "/data/s.zarr"
    assert holder_state(url, "r", None) == "none"
    assert holder_state(url, "r", {"pid": os.getpid(), "host": host, "since": since}) == "live"
    assert holder_state(url, "r", {"pid": _dead_pid(), "host": host, "since": since}) == "stale"
    # a process of another machine cannot be looked up
    assert holder_state(url, "r", {"pid": 1, "host": host + "-other", "since": since}) == \
        "unknown"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_pid_taken_by_a_later_process_is_no_live_writer():
    # this process started after the lease it would be holding: the pid was reused
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": "2001-01-01T00:00:00+00:00"}
    assert holder_state("/data/s.zarr", "r", holder) == "stale"


def test_holder_state_of_object_store_leases_is_their_expiry():
    url = "s3://bucket/s.zarr"
    live = {"id": "x", "pid": 1, "host": "h", "expires": time.time() + 30}
    expired = {**live, "expires": time.time() - 1}
    assert holder_state(url, "r", live) == "live"
    assert holder_state(url, "r", expired) == "stale"
    lease = Lease(url, "r")
    with pytest.raises(WriterConflictError, match="being written by pid 1 on h"):
        lease.check_attr(live)
    lease.check_attr(expired)  # an expired lease is taken over


def test_holder_state_of_memory_stores(image_probe_set):
    from actstore.store import create_store

    url = f"memory://damaged-{os.getpid()}-{time.time_ns()}"
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    holder = {"pid": os.getpid(), "host": socket.gethostname()}
    with st.writer("r", probe_set="images", steps=[0]):
        assert holder_state(url, "r", holder) == "live"
    assert holder_state(url, "r", holder) == "stale"


# -- 1. a killed writer ----------------------------------------------------------------------
def test_ls_and_info_tell_a_killed_writer_from_a_live_one(store):
    _kill_a_writer(store, "b")
    before = _snapshot(store)
    res = runner.invoke(app, ["ls", str(store)])
    assert res.exit_code == 0, res.output
    row = next(ln for ln in res.output.splitlines() if ln.startswith("b "))
    assert "2/3 (interrupted)" in row and "writing" not in res.output
    assert "run 'b': interrupted: its writer (pid" in res.output
    assert f"`actstore repair {store}`" in res.output
    line = next(r for r in json.loads(runner.invoke(app, ["ls", str(store), "--json"]).output)
                ["runs"] if r["run"] == "b")
    assert line["writer_state"] == "stale" and line["writing"] is False

    res = runner.invoke(app, ["info", str(store), "b"])
    assert res.exit_code == 0, res.output
    assert "being written" not in res.output
    assert "interrupted: its writer (pid" in res.output
    assert "checkpoints 2/3: 0 5 10(interrupted)" in res.output
    info = json.loads(runner.invoke(app, ["info", str(store), "b", "--json"]).output)
    assert info["writer_state"] == "stale"
    assert [s["status"] for s in info["slots"]] == ["complete", "complete", "interrupted"]
    assert _snapshot(store) == before


def test_repair_clears_a_writer_killed_between_checkpoints(store):
    """A writer killed between checkpoints leaves no half-written slot, only its record;
    repair clears it, so the run is listed as incomplete, not as interrupted."""
    _kill_a_writer(store, "b", begin=False)
    assert "2/3 (interrupted)" in runner.invoke(app, ["ls", str(store)]).output
    res = runner.invoke(app, ["repair", str(store)])
    assert res.exit_code == 0, res.output
    assert "cleared the record of a killed writer of run(s) b" in res.output
    out = runner.invoke(app, ["ls", str(store)]).output
    assert "2/3" in out and "interrupted" not in out
    assert "nothing to repair" in runner.invoke(app, ["repair", str(store)]).output


def test_ls_and_info_show_a_live_writer_as_writing(store):
    st = open_store(str(store), mode="a")
    with st.writer("b", probe_set="ps", steps=[0, 5, 10]) as w:
        w.begin_slot(10)
        res = runner.invoke(app, ["ls", str(store)])
        assert "2/3 (writing)" in res.output and "interrupted" not in res.output
        res = runner.invoke(app, ["info", str(store), "b"])
        assert f"being written by pid {os.getpid()} on {socket.gethostname()}" in res.output
        assert "10(writing)" in res.output


def test_a_writer_on_another_machine_is_not_called_interrupted(store):
    st = open_store(str(store), mode="a")
    g = st.root["runs"]["b"]
    g.attrs.put({**dict(g.attrs), "actstore.writer": {
        "id": "x", "pid": 4242, "host": socket.gethostname() + "-node7",
        "since": "2026-01-01T00:00:00+00:00", "expires": 0.0}})
    res = runner.invoke(app, ["ls", str(store)])
    assert "2/2 (writing?)" in res.output
    assert "run 'b': being written by pid 4242 on" in res.output
    assert "cannot be checked from here" in res.output


# -- 2. a corrupt chunk of a run's status array ----------------------------------------------
def test_ls_and_info_list_a_run_with_a_corrupt_status_chunk_as_damaged(store):
    (store / "runs" / "a" / "status" / "c" / "1").write_bytes(b"garbage bytes")
    before = _snapshot(store)
    res = runner.invoke(app, ["ls", str(store)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    rows = {ln.split()[0]: ln for ln in res.output.splitlines() if ln[:2] in ("a ", "b ", "c ")}
    assert "damaged" in rows["a"] and "2/2" in rows["b"] and "2/2" in rows["c"]
    assert "run 'a': damaged: its slot table (runs/a/status) is unreadable" in res.output
    assert f"`actstore verify {store}`" in res.output
    runs = json.loads(runner.invoke(app, ["ls", str(store), "--json"]).output)["runs"]
    assert [r["damaged"] is not None for r in runs] == [True, False, False]

    res = runner.invoke(app, ["info", str(store)])
    assert res.exit_code == 0, res.output
    assert "a: damaged: its slot table (runs/a/status)" in res.output
    assert "b: model mlp" in res.output and "c: model mlp" in res.output
    res = runner.invoke(app, ["info", str(store), "a"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert "run 'a' in" in res.output and "is damaged" in res.output
    assert "actstore verify" in res.output
    res = runner.invoke(app, ["probe", str(store), "--folds", "2", "--workers", "1"])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert "run 'a' in" in res.output and "its slot table (runs/a/status)" in res.output
    assert _snapshot(store) == before


# -- 3. a run whose zarr.json does not parse -------------------------------------------------
@pytest.fixture
def damaged(store) -> Path:
    meta = store / "runs" / "c" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:50])
    return store


def test_run_ids_list_a_run_whose_metadata_does_not_parse(damaged):
    st = open_store(str(damaged))
    assert st.run_ids() == ["a", "b", "c"]
    assert st.reader("a").complete_steps == [0, 5]
    with pytest.raises(DamagedRunError, match=r"run 'c' in .* is damaged: its metadata "
                                              r"runs/c/zarr.json is unreadable \(JSONDecodeError"):
        st.reader("c")


def test_ls_and_info_list_a_run_whose_metadata_does_not_parse(damaged):
    before = _snapshot(damaged)
    res = runner.invoke(app, ["ls", str(damaged)])
    assert res.exit_code == 0, res.output
    assert "run 'c': damaged: its metadata runs/c/zarr.json is unreadable" in res.output
    res = runner.invoke(app, ["info", str(damaged), "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.output)["runs"]
    assert [r["run"] for r in runs] == ["a", "b", "c"] and "damaged" in runs[2]
    res = runner.invoke(app, ["info", str(damaged), "c"])
    assert res.exit_code == 2 and "runs/c/zarr.json" in res.output
    assert _snapshot(damaged) == before


@pytest.mark.parametrize("command", [
    ["probe", "--folds", "2", "--workers", "1"],
    ["similarity"],
])
def test_analyses_name_a_damaged_run_in_one_line(damaged, command):
    before = _snapshot(damaged)
    res = runner.invoke(app, [command[0], str(damaged), *command[1:]])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1, res.output
    assert "run 'c' in" in res.output and "is damaged" in res.output
    assert f"`actstore verify {damaged}`" in res.output
    assert _snapshot(damaged) == before


def test_analyses_of_other_runs_work_beside_a_damaged_run(damaged):
    import xarray as xr

    res = runner.invoke(app, ["probe", str(damaged), "--runs", "a,b", "--folds", "2",
                              "--decoders", "ridge", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert open_store(str(damaged)).result_names() == ["probes/default"]
    # nothing could be consolidated: the outdated consolidated metadata was removed
    assert "consolidated_metadata" not in json.loads((damaged / "zarr.json").read_text())
    ds = xr.open_zarr(str(damaged), group="results/probes/default", consolidated=False)
    assert set(ds.coords["run"].values) == {"a", "b"}


def test_a_run_whose_metadata_became_an_arrays_is_listed_as_damaged(store):
    run = store / "runs" / "c"
    (run / "zarr.json").write_bytes((run / "fc1" / "zarr.json").read_bytes())
    before = _snapshot(store)
    st = open_store(str(store))
    assert st.run_ids() == ["a", "b", "c"]
    with pytest.raises(DamagedRunError, match="runs/c is a Zarr array, not a group"):
        st.reader("c")
    res = runner.invoke(app, ["ls", str(store)])
    assert res.exit_code == 0 and "run 'c': damaged" in res.output
    res = runner.invoke(app, ["verify", str(store)])
    assert res.exit_code == 1 and "[runs/c/zarr.json]: run metadata unreadable" in res.output
    assert _snapshot(store) == before
