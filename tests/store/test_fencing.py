"""Writers of a run on an object store are fenced by their lease (moto S3 server on loopback).

A writer paused for longer than its lease lasts (or whose clock runs behind another's) finds a
second writer holding the run when it resumes: it must stop with one clear error, write
nothing more and mark nothing complete, and the run must end consistent — every complete
checkpoint records a weights hash and holds the activations of the weights it records.
The pause is an injected clock, so the tests neither sleep nor depend on timing.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import small_cnn

from actstore import ActstoreError
from actstore._errors import LeaseLostError
from actstore.store import _layout as L
from actstore.store import _lease, create_store, open_store, verify, weights_hash

STEPS = [0, 10, 20]
LAYERS = "fc1,out"


class FakeClock(_lease.Clock):
    """A clock that moves only when told to."""

    def __init__(self, offset: float = 0.0):
        import time

        self.t = time.time() + offset
        self.m = 1000.0 + offset

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.m

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.m += seconds


def _model(shift: float) -> torch.nn.Module:
    net = small_cnn()
    with torch.no_grad():
        net.out.bias.add_(shift)
        net.conv1.weight.mul_(1.0 + shift)
    return net


@pytest.fixture
def s3_store(s3_server, image_probe_set):
    st = create_store(f"{s3_server}/{uuid.uuid4().hex}.zarr")
    st.add_probe_set(image_probe_set)
    return st


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(_lease, "CLOCK", c)
    return c


def _expected(image_probe_set, net: torch.nn.Module, step: int) -> dict[str, np.ndarray]:
    """The activations ``net`` gives at ``step``, recorded alone in a memory store."""
    ref = create_store(f"memory://fencing-ref-{uuid.uuid4().hex}")
    ref.add_probe_set(image_probe_set)
    with ref.writer("r", "images", steps=[step]) as w:
        w.capture(net, step, layers=LAYERS)
    rd = ref.reader("r")
    return {layer: rd.read(layer, step) for layer in rd.layers}


def _check_consistent(st, image_probe_set, models: dict[str, torch.nn.Module]) -> None:
    """Every complete slot records the hash of one of ``models`` and holds its activations."""
    rd = open_store(st.url).reader("r")
    slots = dict(rd._all_attrs[L.ATTR_SLOTS])
    by_hash = {weights_hash(m): m for m in models.values()}
    for step in rd.complete_steps:
        wh = slots[str(step)].get("weights_hash")
        assert wh in by_hash, f"complete checkpoint {step} records no known weights hash"
        want = _expected(image_probe_set, by_hash[wh], step)
        for layer, arr in want.items():
            np.testing.assert_array_equal(rd.read(layer, step), arr)
    assert verify(open_store(st.url)) == []


@pytest.mark.parametrize("how", ["paused", "clock_behind"])
def test_a_writer_that_lost_its_lease_stops_and_marks_nothing_complete(
        s3_store, image_probe_set, clock, how):
    """Writer A records 0, then stops in the middle of checkpoint 10 (after its first batch:
    the slot is begun, its shards not yet written) while its lease expires: paused (its clock
    jumps with everyone's) or with a clock behind the new writer's (only B's jumps). Writer B
    takes the run with other weights, records 10, and is still busy when A resumes. A must
    stop at its next write; B then records 20."""
    model_a, model_b = _model(0.0), _model(0.5)
    st = s3_store
    other = contextlib.ExitStack()
    holder: dict[str, object] = {}

    def pause(done: int) -> None:
        if holder:
            return
        if how == "paused":
            clock.advance(70.0)       # A and B both see A's lease expire
            b_clock = clock
        else:
            b_clock = FakeClock(offset=70.0)  # only B does; A's own clock says it holds it
        wb = open_store(st.url, mode="a").writer("r", "images", steps=STEPS)
        wb._lease.clock = b_clock
        holder["b"] = other.enter_context(wb)
        assert wb._lease.info["generation"] == 2
        wb.capture(model_b, 10, layers=LAYERS)

    with other:
        with pytest.raises(LeaseLostError) as err:
            with st.writer("r", "images", steps=STEPS) as wa:
                assert wa._lease.info["generation"] == 1
                wa.capture(model_a, 0, layers=LAYERS)
                wa.capture(model_a, 10, layers=LAYERS, batch_size=20, progress=pause)
        # B is still the run's writer when A has stopped: it goes on and finishes
        holder["b"].capture(model_b, 20, layers=LAYERS)
    msg = str(err.value)
    assert "\n" not in msg and "stopped writing run 'r'" in msg
    assert ("paused" in msg) if how == "paused" else ("another writer" in msg)
    assert "no checkpoint it was writing was marked complete" in msg
    assert err.value.exit_code == 1
    assert "b" in holder

    rd = open_store(st.url).reader("r")
    assert rd.complete_steps == STEPS
    slots = rd._all_attrs[L.ATTR_SLOTS]
    assert [slots[str(s)]["weights_hash"] for s in STEPS] == [weights_hash(model_a)] + [
        weights_hash(model_b)] * 2
    assert L.ATTR_WRITER not in rd._all_attrs
    assert rd._all_attrs[_lease.ATTR_GENERATION] == 2
    _check_consistent(st, image_probe_set, {"a": model_a, "b": model_b})


def test_a_displaced_writer_cannot_write_the_run_metadata(s3_store, image_probe_set):
    """The run's metadata holds the lease and is written only if it is the version this writer
    wrote last (S3 If-Match): once B has taken the run (A's clock behind B's), A's next
    attribute write fails and B's metadata stay as B wrote them."""
    st = s3_store
    a_clock, b_clock = FakeClock(), FakeClock(offset=70.0)
    wa = st.writer("r", "images", steps=[0])
    wa._lease.clock = a_clock
    with pytest.raises(LeaseLostError):  # also when leaving: A does not end as if it had won
        with wa:
            wa.capture(_model(0.0), 0, layers=LAYERS)
            wb = open_store(st.url, mode="a").writer("r", "images", steps=[0, 10])
            wb._lease.clock = b_clock
            with wb:
                before = dict(open_store(st.url).reader("r")._all_attrs)
                with pytest.raises(LeaseLostError, match="another writer .*generation 2.* "
                                   "took the run"):
                    wa.update_attrs({"metrics": {"loss": [1.0]}})
                assert dict(open_store(st.url).reader("r")._all_attrs) == before
                with pytest.raises(LeaseLostError):  # and any other write, at once
                    wa.capture(_model(0.0), 10, layers=LAYERS)
                wb.capture(_model(0.5), 10, layers=LAYERS)
    rd = open_store(st.url).reader("r")
    assert rd.complete_steps == [0, 10] and "metrics" not in rd.attrs
    _check_consistent(st, image_probe_set, {"a": _model(0.0), "b": _model(0.5)})


def test_the_run_metadata_is_written_only_over_the_version_this_writer_wrote(s3_store):
    """Even while the run still names this writer as its holder, a metadata write over a
    version another process wrote is refused by the server (S3 If-Match on its ETag)."""
    import json

    import s3fs

    st = s3_store
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = f"{st.url.removeprefix('s3://')}/runs/r/zarr.json"
    with pytest.raises(LeaseLostError, match="changed by another process while this writer "
                       "held it"):
        with st.writer("r", "images", steps=[0]) as w:
            doc = json.loads(fs.cat(key))
            doc["attributes"][L.ATTR_WRITER]["host"] = "another-host"  # same id, generation
            fs.pipe(key, json.dumps(doc).encode())
            w.update_attrs({"metrics": {"loss": [1.0]}})
    attrs = json.loads(fs.cat(key))["attributes"]
    assert attrs[L.ATTR_WRITER]["host"] == "another-host" and "metrics" not in attrs


def test_a_slot_is_never_complete_without_a_weights_hash(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    rng = np.random.default_rng(0)
    acts = {"fc": rng.standard_normal((image_probe_set.n, 4)).astype("float32")}
    with st.writer("r", "images", steps=[0, 10]) as w:
        # a slot begun without a hash is written but refused at completion
        w.begin_slot(0)
        w.layer_array("fc", (4,), "float32", {"module": "fc", "reduction": "none"})[0] = \
            acts["fc"]
        with pytest.raises(ActstoreError, match="no weights hash recorded, so it cannot be "
                           "marked complete"):
            w.end_slot(0)
        assert not w.is_complete(0)
        # precomputed activations written without weights record the hash of the activations
        assert w.write_slot(10, acts)
    rd = open_store(store_url).reader("r")
    assert rd.complete_steps == [10]
    assert rd.status[0] == L.STATUS_WRITING
    slots = rd._all_attrs[L.ATTR_SLOTS]
    assert len(slots["10"]["weights_hash"]) == 64 and slots["0"]["weights_hash"] is None


def test_a_dump_that_lost_its_lease_stops_in_one_line_with_exit_code_1(
        s3_server, tmp_path, clock, monkeypatch):
    """`actstore dump` paused past its lease in its second checkpoint: one line, exit code 1,
    the checkpoint left interrupted; re-running the command, as the line says, finishes it."""
    from typer.testing import CliRunner

    from actstore.cli import app
    from actstore.store import _capture

    factories = str(Path(__file__).parent / "factories.py")
    ck = tmp_path / "ck"
    ck.mkdir()
    for step in (0, 50):
        torch.save(_model(step / 100).state_dict(), ck / f"step{step}.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "probe.npz", inputs=rng.standard_normal((20, 3, 8, 8)).astype("float32"),
             color=rng.integers(0, 3, 20))
    url = f"{s3_server}/{uuid.uuid4().hex}.zarr"
    args = ["dump", url, str(ck), "--model", f"{factories}:small_cnn", "--probe-set",
            str(tmp_path / "probe.npz"), "--run", "r", "--layers", LAYERS]

    put = _capture._SlotWriter.put

    def paused_put(self, start, batch):
        if self.slot == 1:
            clock.advance(70.0)  # the process is stopped here for 70 s
        return put(self, start, batch)

    monkeypatch.setattr(_capture._SlotWriter, "put", paused_put)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    # progress lines (stderr is no terminal here) come before the one error line
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("actstore:")]
    assert len(lines) == 1 and lines[0].startswith("actstore: error: stopped writing run 'r'")
    assert res.stderr.strip().splitlines()[-1] == lines[0]
    assert "paused" in lines[0] and "re-run the command" in lines[0]
    rd = open_store(url).reader("r")
    assert rd.complete_steps == [0] and rd.status[1] == L.STATUS_WRITING

    monkeypatch.setattr(_capture._SlotWriter, "put", put)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rd = open_store(url).reader("r")
    assert rd.complete_steps == [0, 50]
    assert verify(open_store(url)) == []


def test_a_renewal_counts_only_once_it_is_on_the_server():
    """The local deadline runs from the last stamp the server holds: a renewal made but not
    written (the server unreachable, the writer paused before sending it) extends nothing."""
    import json

    clock = FakeClock()
    lease = _lease.Lease("s3://bucket/s.zarr", "r", clock=clock)
    written = lease.stamp()
    lease.confirm(json.dumps({"attributes": {"actstore.writer": written}}).encode())
    clock.advance(30.0)
    lease.check_clock()
    lease.stamp()  # renewed in memory only
    clock.advance(15.0)
    with pytest.raises(LeaseLostError, match="last renewed 45 s ago"):
        lease.check_clock()
    with pytest.raises(LeaseLostError, match="last renewed 45 s ago"):  # and it stays lost
        lease.confirm(json.dumps({"attributes": {"actstore.writer": lease.stamp()}}).encode())
        lease.check_clock()
