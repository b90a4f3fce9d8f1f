"""Bad inputs and failures of the environment: one line on stderr, exit code 2 (bad input) or
1 (read-only or full disk, a server or scheduler gone), the complete slots of a store kept."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from stores import error_line, mlp_store
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore.cli import app
from actstore.store import ProbeSet, RunWriter, open_store

FACTORIES = Path(__file__).parents[1] / "store" / "factories.py"
runner = CliRunner()


@pytest.fixture
def ck(tmp_path):
    """Checkpoints of a small CNN at steps 0 and 5 (``ck/``), step 0 alone (``ck0/``), and a
    probe set of 20 samples (``probe.npz``)."""
    spec_model = _factory()
    for d, steps in (("ck", (0, 5)), ("ck0", (0,))):
        (tmp_path / d).mkdir()
        for step in steps:
            with torch.no_grad():
                spec_model.out.bias.fill_(step)
            torch.save(spec_model.state_dict(), tmp_path / d / f"step{step}.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "probe.npz", inputs=rng.standard_normal((20, 3, 8, 8)).astype("float32"),
             color=np.arange(20) % 2)
    return tmp_path


def _factory():
    import importlib.util

    spec = importlib.util.spec_from_file_location("failure_factories", FACTORIES)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.small_cnn()


def _dump_args(d: Path, store: str, run: str = "r", ckdir: str = "ck",
               probe: str = "probe.npz") -> list[str]:
    return ["dump", store, str(d / ckdir), "--model", f"{FACTORIES}:small_cnn",
            "--probe-set", str(d / probe), "--run", run, "--json"]


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def _slots(url: str, run: str = "r") -> dict[int, dict[str, np.ndarray]]:
    rd = open_store(url).reader(run)
    return {s: {ly: rd.read(ly, s) for ly in rd.layers} for s in rd.complete_steps}


def _same_slots(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[s].keys() == b[s].keys() and all(np.array_equal(a[s][k], b[s][k]) for k in a[s])
        for s in a)


@pytest.fixture
def dumped(ck):
    """``ck`` with a store ``s.zarr`` whose run ``r`` is complete at step 0."""
    res = runner.invoke(app, _dump_args(ck, str(ck / "s.zarr"), ckdir="ck0"))
    assert res.exit_code == 0, res.output
    return ck


# -- bad input: exit code 2 ------------------------------------------------------------------
def _write_npz(path: Path, kind: str) -> None:
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((20, 3, 8, 8)).astype("float32")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        np.savez(path, inputs=inputs, color=np.arange(20) % 2)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "object labels":
        np.savez(path, inputs=inputs, color=np.array([{"c": i % 2} for i in range(20)]))
    elif kind == "one array":
        with path.open("wb") as f:
            np.save(f, inputs)


@pytest.mark.parametrize(("kind", "said"), [
    ("empty", "cannot read probe set file {p} (it is empty); give an .npz file written by "
              "numpy.savez"),
    ("truncated", "cannot read probe set file {p} (BadZipFile: "),
    ("object labels", "probe set file {p}: array 'color' holds Python objects (dtype object), "
                      "which are not loaded"),
    ("one array", "probe set file {p} holds a single array, not named arrays"),
])
def test_an_unreadable_probe_set_file_is_one_line(dumped, kind, said):
    bad = dumped / "bad.npz"
    _write_npz(bad, kind)
    before = _files(dumped / "s.zarr")
    for store in (dumped / "s.zarr", dumped / "new.zarr"):
        res = runner.invoke(app, _dump_args(dumped, str(store), run="r2", probe="bad.npz"))
        assert said.format(p=bad) in error_line(res)
    assert _files(dumped / "s.zarr") == before
    assert not (dumped / "new.zarr").exists()


@pytest.mark.parametrize("name", [".", "..", ".hidden", "zarr.json"])
def test_a_probe_set_name_that_is_no_store_path_is_one_line(dumped, name):
    (dumped / "labels.csv").write_text("color\n" + "".join(f"{i % 2}\n" for i in range(4)))
    np.save(dumped / "fc.npy", np.ones((4, 2), "float32"))
    before = _files(dumped / "s.zarr")
    res = runner.invoke(app, ["ingest", str(dumped / "s.zarr"), str(dumped / "fc.npy"),
                              "--run", "x", "--labels", str(dumped / "labels.csv"),
                              "--probe-set", name])
    assert error_line(res).endswith(f"probe set name {name!r} is not usable as a store path; "
                                    "use letters, digits, '_', '-', '.' (not first; not "
                                    "'zarr.json' or a name ending in '.partial')")
    assert _files(dumped / "s.zarr") == before
    with pytest.raises(ActstoreError, match="is not usable as a store path"):
        ProbeSet(name, labels={"c": [0, 1]})


@pytest.mark.parametrize(("labels", "said"), [
    (np.array([{"a": 1}, {"a": 2}]), "hold Python objects (dict)"),
    (np.array([None, 1], dtype=object), "hold Python objects (NoneType)"),
    ([[0, 1], [2]], "do not form one array (their items have different shapes)"),
])
def test_labels_of_python_objects_are_refused(labels, said):
    with pytest.raises(ActstoreError, match=re.escape(f"probe set 'p': labels of feature 'c' "
                                                      f"{said}; give one number, boolean")):
        ProbeSet("p", labels={"c": labels})
    # plain numbers, booleans and strings in an object array are fine
    ps = ProbeSet("p", labels={"c": np.array([1, "b", True], dtype=object)})
    assert ps.labels["c"].tolist() == ["1", "b", "True"]


@pytest.mark.parametrize("run", ["../../y", "a/b", ".", "zarr.json"])
def test_ingest_refuses_a_run_id_that_is_no_store_path(dumped, run):
    (dumped / "labels.csv").write_text("color\n" + "".join(f"{i % 2}\n" for i in range(4)))
    np.save(dumped / "fc.npy", np.ones((4, 2), "float32"))
    before = _files(dumped)
    for store in (dumped / "s.zarr", dumped / "new.zarr"):
        res = runner.invoke(app, ["ingest", str(store), str(dumped / "fc.npy"), "--run", run,
                                  "--labels", str(dumped / "labels.csv")])
        assert f"run id {run!r} is not usable as a store path" in error_line(res)
    assert _files(dumped) == before  # nothing made beside the store either


@pytest.mark.parametrize(("damage", "error"), [
    (lambda b: b[:40], "JSONDecodeError"),  # a truncated write, or a bit that breaks the JSON
    (lambda b: b.replace(b'"endian"', b'"eldian"'), "TypeError"),  # a bit flipped in a name
])
def test_a_layer_whose_metadata_does_not_parse_is_one_line(dumped, damage, error):
    url = str(dumped / "s.zarr")
    meta = dumped / "s.zarr" / "runs" / "r" / "fc1" / "zarr.json"
    meta.write_bytes(damage(meta.read_bytes()))
    before = _files(dumped / "s.zarr")
    res = runner.invoke(app, ["probe", url, "--layers", "fc1", "--workers", "1", "--folds", "2",
                              "--json"])
    assert f"run 'r' in {url} is damaged: the metadata of layer 'fc1' (runs/r/fc1/zarr.json) " \
           f"is unreadable ({error}: " in error_line(res)
    assert _files(dumped / "s.zarr") == before


def _probe_result(tmp_path: Path) -> str:
    url = mlp_store(str(tmp_path / "m.zarr"), ["a", "b"], {"c": np.arange(20) % 2})
    res = runner.invoke(app, ["probe", url, "--workers", "1", "--folds", "2", "--json"])
    assert res.exit_code == 0, res.output
    meta = tmp_path / "m.zarr" / "results" / "probes" / "default" / "accuracy" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["codecs"][-1]["name"] = "lz5000"  # a codec this installation does not know
    meta.write_text(json.dumps(doc))
    return url


def test_a_result_with_an_unknown_codec_is_one_line(tmp_path):
    url = _probe_result(tmp_path)
    before = _files(tmp_path / "m.zarr")
    said = (f"results/probes/default in {url} cannot be read (UnknownCodecError: Unknown "
            "codec: 'lz5000'): it was written by another program or version; compute it again "
            "with --overwrite, or remove it")
    for args in (["report", url, "--out", str(tmp_path / "rep")],
                 ["probe", url, "--name", "default", "--workers", "1", "--folds", "2",
                  "--json"]):
        assert said in error_line(runner.invoke(app, args))
    assert _files(tmp_path / "m.zarr") == before


def test_a_command_that_fails_mid_read_prints_one_line_and_no_loop_errors(tmp_path):
    """The real process: zarr's reads left running by the failed one end before Python exits
    (they printed "Task exception was never retrieved" and tracebacks)."""
    url = _probe_result(tmp_path)
    res = subprocess.run([sys.executable, "-m", "actstore.cli", "report", url, "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Unknown codec: 'lz5000'" in lines[0], res.stderr


_BUSY_LOOP_AT_EXIT = """
import sys, time
import actstore.cli._app as app_module
from zarr.core import sync
fail = app_module.fail

def busy_fail(message, code=2):  # zarr's I/O thread is busy when the command ends
    sync.loop[0].call_soon_threadsafe(time.sleep, 0.5)
    return fail(message, code)

app_module.fail = busy_fail
from actstore.cli import main
sys.argv = ["actstore", *sys.argv[1:]]
main()
"""


def test_a_refused_concurrent_writer_exits_with_one_line(dumped):
    """A writer refused while zarr's I/O thread is busy (a loaded machine) got
    ``RuntimeError: Cannot close a running event loop`` after its message."""
    url = str(dumped / "s.zarr")
    before = _slots(url)
    st = open_store(url, mode="a")
    with st.writer("r", "probe", [0, 5]) as w:
        res = subprocess.run([sys.executable, "-c", _BUSY_LOOP_AT_EXIT,
                              *_dump_args(dumped, url)[:-1]],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "is being written by pid" in lines[0], res.stderr
        assert not w.is_complete(5)
    assert _same_slots(_slots(url), before)


# -- the environment fails: exit code 1 ------------------------------------------------------
def _refuse_writes(monkeypatch, code: int, armed=lambda: True) -> None:
    """Every write of a local store fails with ``OSError(code)`` while ``armed()``."""
    import zarr.storage._local as local

    put = local._put

    def failing_put(path, value, exclusive=False):
        if armed():
            raise OSError(code, os.strerror(code), str(path))
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", failing_put)


def test_environment_failures_are_recognised_through_the_chain_of_errors():
    from actstore.cli._failures import EnvironmentFailureError, environment_failure

    def raised(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException:
                raise RuntimeError("cleanup after the failure failed as well")  # noqa: B904
        except RuntimeError as e:
            return e

    e = environment_failure(raised(PermissionError(errno.EACCES, "denied", "/s.zarr/runs/r")))
    assert isinstance(e, EnvironmentFailureError) and e.exit_code == 1
    assert str(e) == ("cannot write /s.zarr/runs/r: permission denied (EACCES); give this user "
                      "write permission there, or work on a copy it owns, then re-run the same "
                      "command (what was complete before is kept)")
    assert environment_failure(raised(ConnectionResetError(errno.ECONNRESET, "reset")),
                               scheduler="tcp://h:1") is not None
    # anything else is a bug to show, not an environment failure
    assert environment_failure(raised(KeyError("status"))) is None
    assert environment_failure(OSError(errno.ENOENT, "missing", "/x")) is None


def test_a_read_only_store_is_one_line(dumped, monkeypatch):
    url = str(dumped / "s.zarr")
    before = _files(dumped / "s.zarr")
    _refuse_writes(monkeypatch, errno.EROFS)
    for args in (_dump_args(dumped, url, run="r2"),
                 ["probe", url, "--workers", "1", "--folds", "2", "--json"]):
        line = error_line(runner.invoke(app, args), code=1)
        assert f"actstore: error: cannot write {url}" in line
        assert ": the file system is read-only (EROFS); make it writable, or work on a copy of " \
               "the store on a writable disk, then re-run the same command (what was " \
               "complete before is kept)" in line
    monkeypatch.undo()
    assert _files(dumped / "s.zarr") == before


def test_a_full_disk_during_a_dump_keeps_the_complete_checkpoints(dumped, monkeypatch):
    url = str(dumped / "s.zarr")
    before = _slots(url)
    state = {"full": False}
    capture = RunWriter.capture

    def capture_on_a_full_disk(self, model, step, **kw):
        state["full"] = step == 5  # the disk fills up during the second checkpoint
        return capture(self, model, step, **kw)

    monkeypatch.setattr(RunWriter, "capture", capture_on_a_full_disk)
    _refuse_writes(monkeypatch, errno.ENOSPC, lambda: state["full"])
    line = error_line(runner.invoke(app, _dump_args(dumped, url)), code=1)
    assert f"actstore: error: cannot write {url}" in line
    assert ": no space left on the device (ENOSPC); free space there, or move the store to a " \
           "disk with more room, then re-run the same command" in line
    monkeypatch.undo()
    assert _same_slots(_slots(url), before)
    res = runner.invoke(app, _dump_args(dumped, url))  # space again: the dump finishes
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["written"] == [5]
    after = _slots(url)
    assert _same_slots({0: after[0]}, before) and sorted(after) == [0, 5]


_FULL_DISK_FROM_STEP_5 = """
import errno, os, sys
import zarr.storage._local as local
from actstore.store import RunWriter
full, put, capture = [False], local._put, RunWriter.capture

def failing_put(path, value, exclusive=False):
    if full[0]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return put(path, value, exclusive=exclusive)

def capture_on_a_full_disk(self, model, step, **kw):
    full[0] = step == 5
    return capture(self, model, step, **kw)

local._put, RunWriter.capture = failing_put, capture_on_a_full_disk
from actstore.cli import main
sys.argv = ["actstore", *sys.argv[1:]]
main()
"""


def test_a_full_disk_in_a_real_process_prints_one_line(dumped):
    """The process as users run it: nothing after the line (zarr's writes left running end
    before Python exits)."""
    url = str(dumped / "s.zarr")
    before = _slots(url)
    res = subprocess.run([sys.executable, "-c", _FULL_DISK_FROM_STEP_5, *_dump_args(dumped, url)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device (ENOSPC)" in lines[0], res.stderr
    assert _same_slots(_slots(url), before)


class _Relay:
    """A TCP relay to a server; :meth:`cut` makes the server vanish for its clients."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(1 << 16):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_the_object_store_server_gone_mid_dump_is_one_line(s3_server, ck, monkeypatch):
    import s3fs

    url = f"{s3_server}/{uuid.uuid4().hex}.zarr"
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host, port = endpoint.removeprefix("http://").split(":")
    relay = _Relay((host, int(port)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries only take longer
    s3fs.S3FileSystem.clear_instance_cache()
    capture = RunWriter.capture

    def capture_then_cut(self, model, step, **kw):
        if step == 5:
            relay.cut()
        return capture(self, model, step, **kw)

    monkeypatch.setattr(RunWriter, "capture", capture_then_cut)
    try:
        line = error_line(runner.invoke(app, _dump_args(ck, url)), code=1)
    finally:
        monkeypatch.undo()
        s3fs.S3FileSystem.clear_instance_cache()
    assert line.startswith(f"actstore: error: the server of {url} cannot be reached or "
                           "dropped the connection (")
    assert line.endswith("check that the server runs and its address (endpoint) and network, "
                         "then re-run the same command (what was complete before is kept)")
    local = str(ck / "local.zarr")
    assert runner.invoke(app, _dump_args(ck, local, ckdir="ck0")).exit_code == 0
    assert _same_slots(_slots(url), _slots(local))  # checkpoint 0 complete, and only it


def test_the_scheduler_killed_mid_probe_is_one_line(tmp_path, dask_cluster, monkeypatch):
    from distributed import Client

    from actstore.probes import write_synthetic_store

    url = str(tmp_path / "syn.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 50), widths=(24, 48), n=300,
                          features={"shape": 4})
    submit = Client.submit

    def submit_then_kill(self, *args, **kw):  # the scheduler dies once jobs are on their way
        future = submit(self, *args, **kw)
        if dask_cluster.scheduler.poll() is None:
            dask_cluster.scheduler.kill()
            dask_cluster.scheduler.wait()
        return future

    monkeypatch.setattr(Client, "submit", submit_then_kill)
    logged: list[logging.LogRecord] = []  # what Dask's loggers print on stderr

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record)

    keep = Keep(logging.ERROR)
    logging.getLogger("distributed").addHandler(keep)
    try:
        res = runner.invoke(app, ["probe", url, "--scheduler", dask_cluster.address,
                                  "--scheduler-timeout", "2", "--json"])
    finally:
        logging.getLogger("distributed").removeHandler(keep)
    line = error_line(res, code=1)
    assert line.startswith(f"actstore: error: lost the connection to the Dask scheduler at "
                           f"{dask_cluster.address} (")
    assert line.endswith("check that the scheduler runs and is reachable (or leave out "
                         "--scheduler), then re-run the same command (what was complete "
                         "before is kept)")
    assert not logged, [r.getMessage() for r in logged]
    st = open_store(url)  # the runs probed are as they were
    assert len(st.run_ids()) == 2 and all(st.reader(r).complete.all() for r in st.run_ids())
