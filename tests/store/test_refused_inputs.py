"""Bad inputs to capture, ingest, verify and repair: one clear error, the store unchanged."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore.cli import app
from actstore.store import (
    ProbeSet,
    check_values,
    create_store,
    dump_many,
    ingest,
    open_store,
    repair,
    verify,
)

runner = CliRunner()
HERE = Path(__file__).parent


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


# -- probe sets ------------------------------------------------------------------------------
def test_a_probe_set_without_samples_is_refused(tmp_path):
    with pytest.raises(ActstoreError, match="'empty' has no samples"):
        ProbeSet("empty", labels={"c": np.zeros(0, int)}, inputs=np.zeros((0, 4), "float32"))
    np.savez(tmp_path / "p.npz", inputs=np.zeros((0, 8), "float32"), c=np.zeros(0, int))
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save(torch.nn.Linear(8, 2).state_dict(), ck / "step_0.pt")
    (tmp_path / "m.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(8, 2)\n")
    url = tmp_path / "s.zarr"
    res = runner.invoke(app, ["dump", str(url), str(ck), "-m", f"{tmp_path / 'm.py'}:make",
                              "-p", str(tmp_path / "p.npz"), "-r", "r"])
    assert res.exit_code == 2 and "has no samples" in res.output
    assert not url.exists()


# -- capture ---------------------------------------------------------------------------------
class SequenceFirst(torch.nn.Module):
    """A layer whose output's first axis is not the batch (as nn.Transformer's default)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.seq = torch.nn.Identity()

    def forward(self, x):
        h = self.fc(x)
        return self.seq(torch.stack([h, -h]))  # (2, B, 4)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_a_layer_whose_first_axis_is_not_the_batch_is_refused(tmp_path, batch_size):
    rng = np.random.default_rng(0)
    url = str(tmp_path / "s.zarr")
    st = create_store(url)
    st.add_probe_set(ProbeSet("p", labels={"c": np.arange(10) % 2},
                              inputs=rng.standard_normal((10, 8)).astype("float32")))
    before = _files(tmp_path / "s.zarr")
    box: dict[str, BaseException] = {}

    def go():  # the writer thread used to loop for ever on the extra rows
        try:
            with st.writer("r", "p", [0]) as w:
                w.capture(SequenceFirst(), 0, layers="fc,seq", batch_size=batch_size)
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "capture did not finish"
    assert isinstance(box.get("e"), ActstoreError)
    assert "layer 'seq' gives outputs of shape (2, " in str(box["e"])
    assert "first axis is not the batch" in str(box["e"])
    assert _files(tmp_path / "s.zarr") == before


def test_values_beyond_float32_are_refused_not_stored_as_inf():
    with pytest.raises(ActstoreError, match="beyond float32's range"):
        check_values(np.full((3, 2), 1e300), "fc1", 0, "float32")
    assert check_values(np.full((3, 2), 1e30), "fc1", 0, "float32").dtype == np.float32


# -- ingest ----------------------------------------------------------------------------------
@pytest.fixture
def ingested(tmp_path):
    n = 10
    (tmp_path / "labels.csv").write_text("sample,color\n" + "".join(
        f"s{i},{i % 3}\n" for i in range(n)))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "fc1.npy", rng.standard_normal((n, 6)).astype("float32"))
    url = str(tmp_path / "s.zarr")
    ingest(url, "r", [tmp_path / "fc1.npy"], tmp_path / "labels.csv")
    return tmp_path


def _ingest_cli(d: Path, *files: str, labels: str = "labels.csv", step: str = "0"):
    return runner.invoke(app, ["ingest", str(d / "s.zarr"), *[str(d / f) for f in files],
                               "--run", "r", "--labels", str(d / labels), "--step", step])


def test_ingest_of_other_activations_into_a_complete_checkpoint_is_refused(ingested):
    d = ingested
    before = _files(d / "s.zarr")
    same = _ingest_cli(d, "fc1.npy")
    assert same.exit_code == 0 and "already complete" in same.output
    (d / "other").mkdir()
    np.save(d / "other" / "fc1.npy", np.ones((10, 6), "float32"))
    res = _ingest_cli(d, "other/fc1.npy")
    assert res.exit_code == 2
    assert "checkpoint 0 of run 'r' already holds other values of layer 'fc1'" in res.output
    assert "never overwritten" in res.output
    np.save(d / "fc2.npy", np.ones((10, 3), "float32"))
    res = _ingest_cli(d, "fc2.npy")
    assert res.exit_code == 2 and "is complete with layers fc1, not fc2" \
        in res.output
    res = _ingest_cli(d, "fc1.npy", "fc2.npy")
    assert res.exit_code == 2 and "not fc1, fc2" in res.output
    assert _files(d / "s.zarr") == before
    np.testing.assert_array_equal(open_store(str(d / "s.zarr")).reader("r").read("fc1", 0),
                                  np.load(d / "fc1.npy"))


def test_ingest_later_checkpoints_keep_the_run_attributes_they_leave_out(tmp_path):
    n = 6
    (tmp_path / "labels.csv").write_text("color\n" + "".join(f"{i % 2}\n" for i in range(n)))
    np.save(tmp_path / "layer1.npy", np.ones((n, 4), "float32"))
    url = str(tmp_path / "i.zarr")

    def cli(*args: str, run: str = "ext"):
        return runner.invoke(app, ["ingest", url, str(tmp_path / "layer1.npy"), "--run", run,
                                   "--labels", str(tmp_path / "labels.csv"), *args])

    assert cli("--attr", "model=foo", "--attr", "seed=1").exit_code == 0
    res = cli("--step", "5")  # no --attr: the run's model and seed stay
    assert res.exit_code == 0, res.output
    res = cli("--step", "6", "--attr", "model=foo", "--attr", "note=x")
    assert res.exit_code == 0, res.output
    attrs = open_store(url).reader("ext").attrs
    assert (attrs["model"], attrs["seed"], attrs["dataset"], attrs["note"]) == (
        "foo", 1, "labels", "x")
    before = _files(tmp_path / "i.zarr")
    for given, message in [
        ("model=bar", "run 'ext' in " + url + " exists with model 'foo', not 'bar'; nothing "
                      "was changed; give --attr model=foo as before (or no --attr model), or "
                      "ingest into a new --run"),
        ("seed=2", "exists with seed 1, not 2; nothing was changed; give --attr seed=1 as "
                   "before"),
        ("task=shape", "exists with no task, not 'shape'; nothing was changed; leave out "
                       "--attr task, or ingest into a new --run"),
    ]:
        res = cli("--step", "7", "--attr", given)
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert res.output.startswith("actstore: error: ") and message in res.output
    assert _files(tmp_path / "i.zarr") == before
    # a new run without --attr model is "external"
    assert cli(run="new").exit_code == 0
    assert open_store(url).reader("new").attrs["model"] == "external"


@pytest.mark.parametrize(("array", "message"), [
    (np.array([["a"] * 6] * 10), "has dtype <U1; activations must be real numbers"),
    (np.ones((10, 6), np.complex64), "has dtype complex64"),
    (np.zeros((10, 0), "float32"), "has shape (10, 0): no units to store"),
    (np.ones(10, "float32"), "has shape (10,); give (n_samples, units)"),
    (np.full((10, 6), 1e300), "beyond float32's range"),
])
def test_ingest_refuses_arrays_that_are_not_activations(ingested, array, message):
    d = ingested
    before = _files(d / "s.zarr")
    (d / "bad").mkdir()
    np.save(d / "bad" / "fc1.npy", array)  # the run's layer, at a new checkpoint
    res = _ingest_cli(d, "bad/fc1.npy", step="5")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("actstore: error: ") and message in res.output
    assert _files(d / "s.zarr") == before


@pytest.mark.parametrize("content", [b"garbage", None])
def test_ingest_of_an_unreadable_file_is_one_line(ingested, content):
    d = ingested
    if content is None:
        np.save(d / "bad.npy", np.array([None] * 60, dtype=object).reshape(10, 6),
                allow_pickle=True)
    else:
        (d / "bad.npy").write_bytes(content)
    res = _ingest_cli(d, "bad.npy", step="5")
    assert res.exit_code == 2
    assert "cannot read activation file" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(("text", "message"), [
    ("sample,color\ns0\ns1,1\n", "data row 1 has 1 value(s), but the header names 2"),
    ("sample,color\ns0,1,9\ns1,1\n", "data row 1 has 3 value(s)"),
    ("sample,color,color\ns0,1,2\ns1,1,2\n", "has the column 'color' more than once"),
])
def test_ingest_refuses_malformed_label_files(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    np.save(tmp_path / "x.npy", np.ones((2, 3), "float32"))
    res = _ingest_cli(tmp_path, "x.npy")
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "s.zarr").exists()


def test_ingest_reads_utf8_with_a_byte_order_mark_and_refuses_other_encodings(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 3), "float32"))
    (tmp_path / "latin.csv").write_bytes("sample,color\ns0,\xe9\ns1,a\n".encode("latin-1"))
    res = _ingest_cli(tmp_path, "x.npy", labels="latin.csv")
    assert res.exit_code == 2 and "is not UTF-8 text" in res.output
    assert not (tmp_path / "s.zarr").exists()
    (tmp_path / "bom.csv").write_text("sample,color\ns0,1\ns1,2\n", encoding="utf-8-sig")
    res = _ingest_cli(tmp_path, "x.npy", labels="bom.csv")
    assert res.exit_code == 0, res.output
    rd = open_store(str(tmp_path / "s.zarr")).reader("r")
    assert list(rd.sample) == ["s0", "s1"] and rd.features == ["color"]


# -- verify / repair -------------------------------------------------------------------------
@pytest.fixture
def two_runs(ingested):
    d = ingested
    np.save(d / "g.npy", np.ones((10, 2), "float32"))
    ingest(str(d / "s.zarr"), "ok", [d / "g.npy"], d / "labels.csv")
    return str(d / "s.zarr")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_verify_reports_a_damaged_layer_array(two_runs, damage):
    meta = Path(two_runs, "runs", "r", "fc1", "zarr.json")
    if damage == "delete":
        meta.unlink()
    else:
        meta.write_bytes(meta.read_bytes()[:30])
    problems = verify(open_store(two_runs))
    assert [(p.kind, p.run, p.step, p.layer, p.fix) for p in problems] == [
        ("corrupt", "r", None, "fc1", "layer_metadata")]
    assert problems[0].key == "runs/r/fc1/zarr.json"
    res = runner.invoke(app, ["verify", two_runs])
    assert res.exit_code == 1 and "fc1/zarr.json" in res.output
    assert "repair writes it again from the layer table" in res.output
    # the layer table records how the array is stored: repair writes its metadata again
    res = runner.invoke(app, ["repair", two_runs, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["restored"] == [
        "runs/r/fc1/zarr.json (from the layer table)"]
    assert verify(open_store(two_runs)) == []
    rep = repair(open_store(two_runs, mode="a"))
    assert rep.reset == [] and rep.unrepaired == [] and rep.restored == []


def test_verify_reports_a_run_whose_metadata_does_not_parse(two_runs):
    meta = Path(two_runs, "runs", "r", "zarr.json")
    meta.write_bytes(meta.read_bytes()[:40])
    problems = verify(open_store(two_runs))
    assert [(p.kind, p.run, p.key) for p in problems] == [
        ("corrupt", "r", "runs/r/zarr.json")]
    res = runner.invoke(app, ["verify", two_runs])
    assert res.exit_code == 1 and "run metadata unreadable" in res.output
    assert "Traceback" not in res.output


def test_repair_without_redo_says_so(two_runs):
    open_store(two_runs, mode="a").reader("r").group["status"][0] = 1
    res = runner.invoke(app, ["repair", two_runs, "--no-redo"])
    assert res.exit_code == 0, res.output
    assert "checkpoint 0: not redone (--no-redo)" in res.output


# -- dump of several runs --------------------------------------------------------------------
@pytest.mark.parametrize(("option", "message"), [
    ({"dtype": "float64"}, "storage dtype must be float32 or float16"),
    ({"batch_size": 0}, "batch size must be a whole number >= 1"),
    ({"codec": "lzma"}, "unknown codec 'lzma'"),
    ({"reduce": "median"}, "unknown reduction 'median'"),
])
def test_dump_of_several_runs_checks_options_before_making_the_store(tmp_path, option,
                                                                     message):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "p.npz", inputs=rng.standard_normal((6, 32)).astype("float32"),
             c=np.arange(6) % 2)
    dirs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        torch.save(__import__("factories").mlp().state_dict(), tmp_path / name / "step_0.pt")
        dirs.append(str(tmp_path / name))
    url = tmp_path / "s.zarr"
    with pytest.raises(ActstoreError, match=message):
        dump_many(str(url), ["a", "b"], dirs, f"{HERE / 'factories.py'}:mlp",
                  str(tmp_path / "p.npz"), workers=1, **option)
    assert not url.exists()
    with pytest.raises(ActstoreError, match="run id 'x/a' is not usable"):
        dump_many(str(url), ["x/a", "b"], dirs, f"{HERE / 'factories.py'}:mlp",
                  str(tmp_path / "p.npz"), workers=1)
    assert not url.exists()


def test_steps_and_batch_sizes_that_are_not_whole_numbers_are_refused(tmp_path,
                                                                      image_probe_set):
    from factories import small_cnn

    st = create_store(str(tmp_path / "s.zarr"))
    st.add_probe_set(image_probe_set)
    with pytest.raises(ActstoreError, match="checkpoint step 2.5 must be a whole number"):
        st.writer("r", "images", [2.5])
    with st.writer("r", "images", [0, 3.0]) as w:
        with pytest.raises(ActstoreError, match="checkpoint step 2.7 must be a whole number"):
            w.capture(small_cnn(), 2.7)
        with pytest.raises(ActstoreError, match="batch size must be a whole number >= 1, got "
                                                "2.5"):
            w.capture(small_cnn(), 0, batch_size=2.5)
        assert w.capture(small_cnn(), 3.0, batch_size=16)
    assert open_store(str(tmp_path / "s.zarr")).reader("r").complete_steps == [3]


def test_repair_lists_a_changed_probe_set_instead_of_nothing_to_repair(two_runs):
    st = open_store(two_runs, mode="a")
    st.root["probe_sets"]["labels"]["color"][0] = 2  # was 0
    res = runner.invoke(app, ["repair", two_runs])
    assert res.exit_code == 1, res.output
    assert "probe_set: store [probe_sets/labels]: contents do not match the recorded hash" \
        in res.output
    assert "nothing to repair" not in res.output
