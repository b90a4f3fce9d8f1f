"""Runs into a store: complete checkpoints from step 0, metrics, determinism of activations,
resuming, provenance, saved weights that ``dump`` can re-record."""

from __future__ import annotations

import re

import numpy as np
import pytest

from actstore import ProvenanceError
from actstore._execution import Execution
from actstore.store import dump, open_store
from actstore.training import (
    RunSpec,
    TrainConfig,
    load_saved_model,
    parse_sweep,
    plan_sweep,
    run_sweep,
    train_run,
)
from actstore.training._demo import TINY

#: train the runs one after another in this process
IN_PROCESS = Execution(workers=1)


def _spec(**kw):
    base = {
        "dataset": "trifeature",
        "task": "shape",
        "model": "alexnet",
        "seed": 0,
        "dataset_params": {"image_size": 16, "renders": 1, "n_val": 32, "probe_combos": 40},
        "model_params": {"width": 4, "fc_width": 8},
        "train": TrainConfig(steps=6, checkpoints=3, eval_size=32),
    }
    base.update(kw)
    return RunSpec(**base)


def _all(store, run_id):
    r = open_store(store).reader(run_id)
    return {(layer, int(s)): r.read(layer, int(s)) for layer in r.layers for s in r.steps}


def test_run_writes_complete_checkpoints_from_step_0(tmp_path):
    from actstore.store import create_store

    url = str(tmp_path / "s.zarr")
    create_store(url)
    res = train_run(_spec(), url)
    assert res["status"] == "trained" and res["written"] == [0, 1, 6]
    st = open_store(url)
    r = st.reader("trifeature-shape-alexnet-s0")
    assert sorted(r.steps.tolist()) == [0, 1, 6] and r.complete.all()
    assert r.layers == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool3", "fc6", "fc7", "out"]
    assert r.read("conv2", 0).shape == (40, 12)  # 3 x width channels, mean-pooled
    a = r.attrs
    assert (a["model"], a["task"], a["seed"], a["dataset"]) == ("alexnet", "shape", 0,
                                                               "trifeature")
    assert a["config"]["dataset"]["params"]["image_size"] == 16
    assert a["metrics"]["step"] == [0, 1, 6]
    assert len(a["metrics"]["val"]["acc"]["shape"]) == 3
    assert set(r.labels) >= {"shape", "texture", "color", "heldout_shape"}
    # untrained and trained activations differ
    assert not np.array_equal(r.read("fc6", 0), r.read("fc6", 6))


def test_same_seed_identical_activations_and_resume(tmp_path):
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    sweep = parse_sweep({
        "datasets": ["trifeature"], "tasks": ["color"], "models": ["alexnet"], "seeds": [0, 1],
        "train": {"steps": 6, "checkpoints": 3, "eval_size": 32},
        "dataset": {"trifeature": {"image_size": 16, "renders": 1, "n_val": 32,
                                   "probe_combos": 40}},
        "model": {"alexnet": {"width": 4, "fc_width": 8}},
    })
    run_sweep(sweep, a, execution=IN_PROCESS)
    run_sweep(sweep, b, execution=IN_PROCESS)
    rid = "trifeature-color-alexnet-s0"
    ref = _all(a, rid)
    assert all(np.array_equal(v, _all(b, rid)[k]) for k, v in ref.items())
    other = _all(a, "trifeature-color-alexnet-s1")
    assert not np.array_equal(ref[("fc7", 6)], other[("fc7", 6)])

    # a complete run is skipped
    rep = run_sweep(sweep, a, execution=IN_PROCESS)
    assert [r["status"] for r in rep.runs] == ["complete", "complete"]

    # a partially written run is trained again and only its missing slot is written
    st = open_store(a, mode="a")
    with st.writer(rid, st.reader(rid).attrs["probe_set"], [0, 1, 6],
                   attrs=st.reader(rid).attrs) as w:
        w.rollback_slot(1)
    assert open_store(a).reader(rid).complete.sum() == 2
    rep = run_sweep(sweep, a, execution=IN_PROCESS)
    by_id = {r["run_id"]: r for r in rep.runs}
    assert by_id[rid]["status"] == "trained" and by_id[rid]["written"] == [1]
    again = _all(a, rid)
    assert all(np.array_equal(v, again[k]) for k, v in ref.items())


def test_other_config_for_existing_run_is_refused_before_writing(tmp_path):
    url = str(tmp_path / "s.zarr")
    doc = {
        "datasets": ["trifeature"], "tasks": ["shape"], "models": ["alexnet"], "seeds": [0],
        "train": {"steps": 4, "checkpoints": 2, "eval_size": 16},
        "dataset": {"trifeature": {"image_size": 16, "renders": 1, "n_val": 16,
                                   "probe_combos": 20}},
        "model": {"alexnet": {"width": 4, "fc_width": 8}},
    }
    run_sweep(parse_sweep(doc), url, execution=IN_PROCESS)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    changed = dict(doc, seeds=[0, 1], train={**doc["train"], "lr": 1e-3})
    with pytest.raises(ProvenanceError, match="trifeature-shape-alexnet-s0.*another config") \
            as err:
        run_sweep(parse_sweep(changed), url, execution=IN_PROCESS)
    # the message names the setting that differs
    assert re.search(r"\(train\.lr [0-9.e-]+ there, 0\.001 now\)", str(err.value)), err.value
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamp


def test_dry_run_writes_nothing_and_plans(tmp_path):
    url = str(tmp_path / "s.zarr")
    sweep = parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                         "seeds": "0:3", "train": {"steps": 3, "checkpoints": 2}})
    rep = run_sweep(sweep, url, dry_run=True)
    assert [r["status"] for r in rep.runs] == ["planned"] * 3
    assert not (tmp_path / "s.zarr").exists()
    attrs, probe_sets, complete = plan_sweep(sweep, url)
    assert len(attrs) == 3 and len(probe_sets) == 1 and complete == []


def test_saved_weights_reload_and_dump_reproduces_activations(tmp_path):
    url = str(tmp_path / "s.zarr")
    wdir = tmp_path / "weights"
    sweep = parse_sweep({"datasets": ["multifeature"], "tasks": ["all"],
                         "models": ["transformer"], "seeds": [3],
                         "train": {"steps": 5, "checkpoints": 3, "eval_size": 32},
                         "dataset": {"multifeature": {"n_train": 128, "n_val": 32,
                                                      "n_probe": 48}},
                         "model": {"transformer": {"d_model": 8, "n_heads": 2,
                                                   "n_layers": 1}}})
    run_sweep(sweep, url, execution=IN_PROCESS, weights_dir=str(wdir))
    rid = "multifeature-all-transformer-s3"
    files = sorted(p.name for p in (wdir / rid).iterdir())
    assert files == ["config.json", "step_00000000.pt", "step_00000001.pt", "step_00000005.pt"]
    st = open_store(url)
    ps_name = st.reader(rid).attrs["probe_set"]
    # re-record the saved checkpoints with the store's dump and compare
    dump(url, "redump", lambda: load_saved_model(wdir / rid), wdir / rid, ps_name)
    a, b = _all(url, rid), _all(url, "redump")
    assert set(a) == set(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    model = load_saved_model(wdir / rid, step=5)
    assert model.actstore_layers == ["embed", "block0", "out"]


def test_tiny_demo_overrides_are_valid():
    from actstore.training import load_sweep

    sweep = load_sweep("demo", overrides=TINY)
    assert len(sweep.runs) == 6
    assert all(r.train.steps == 12 for r in sweep.runs)


def test_a_sweep_reports_its_runs_and_their_steps_to_the_progress_callback(tmp_path):
    url = str(tmp_path / "s.zarr")
    sweep = parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                         "train": {"steps": 4, "checkpoints": 2, "eval_size": 8},
                         "dataset": {"binary": {"n_train": 32, "n_val": 8, "n_probe": 8}}})
    seen, reports = [], []
    rep = run_sweep(sweep, url, on_run=seen.append,
                    execution=Execution(workers=1, progress=lambda *r: reports.append(r)))
    rid = "binary-label-mlp-s0"
    assert [r["run_id"] for r in seen] == [rid] == [r["run_id"] for r in rep.runs]
    runs = [r for r in reports if r[0] == f"{sweep.name} runs"]
    assert runs[0] == (f"{sweep.name} runs", 0, 1) and runs[-1] == (f"{sweep.name} runs", 1, 1)
    steps = [r for r in reports if r[0] == f"{rid} steps"]
    assert steps and steps[-1][1] == steps[-1][2]  # every step of the run was reported


def _mlp_spec(**train):
    return RunSpec(dataset="binary", task="label", model="mlp", seed=0,
                   dataset_params={"n_train": 64, "n_val": 16, "n_probe": 16},
                   model_params={"hidden": [8]},
                   train=TrainConfig(steps=4, checkpoints=2, eval_size=16, **train))


def test_weights_dir_of_another_configuration_is_refused(tmp_path):
    from actstore.store import create_store

    wdir = tmp_path / "weights"
    for name in ("a.zarr", "b.zarr"):
        create_store(str(tmp_path / name))
    train_run(_mlp_spec(), str(tmp_path / "a.zarr"), weights_dir=wdir)
    rid = _mlp_spec().run_id
    saved = {p.name: p.read_bytes() for p in (wdir / rid).iterdir()}
    with pytest.raises(ProvenanceError, match="weights directory .* another configuration"):
        train_run(_mlp_spec(lr=1e-2), str(tmp_path / "b.zarr"), weights_dir=wdir)
    assert {p.name: p.read_bytes() for p in (wdir / rid).iterdir()} == saved
    assert open_store(str(tmp_path / "b.zarr")).run_ids() == []


def test_weights_dir_holds_the_weights_the_store_recorded(tmp_path):
    import torch

    from actstore.store import create_store

    wdir = tmp_path / "weights"
    for name in ("a.zarr", "b.zarr"):
        create_store(str(tmp_path / name))
    train_run(_mlp_spec(), str(tmp_path / "a.zarr"), weights_dir=wdir)
    rid = _mlp_spec().run_id
    stale = wdir / rid / "step_00000004.pt"
    state = torch.load(stale, weights_only=True)
    torch.save({"step": 4, "state_dict": {k: v * 0 for k, v in state["state_dict"].items()}},
               stale)
    url = str(tmp_path / "b.zarr")
    train_run(_mlp_spec(), url, weights_dir=wdir)
    ps_name = open_store(url).reader(rid).attrs["probe_set"]
    dump(url, "redump", lambda: load_saved_model(wdir / rid), wdir / rid, ps_name)
    a, b = _all(url, rid), _all(url, "redump")
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_dask_worker_and_serial_runs_are_identical(tmp_path):
    sweep = parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                         "seeds": [0], "train": {"steps": 6, "checkpoints": 3, "eval_size": 16},
                         "dataset": {"binary": {"n_train": 64, "n_val": 16, "n_probe": 32}},
                         "model": {"mlp": {"hidden": [16, 8]}}})
    a, b = str(tmp_path / "worker.zarr"), str(tmp_path / "serial.zarr")
    rep = run_sweep(sweep, a, execution=Execution(workers=2))  # a local Dask cluster
    assert [r["status"] for r in rep.runs] == ["trained"]
    run_sweep(sweep, b, execution=IN_PROCESS)
    rid = sweep.runs[0].run_id
    slots = [open_store(u).reader(rid).group.attrs["actstore.slots"] for u in (a, b)]
    assert [s["weights_hash"] for s in slots[0].values()] == \
        [s["weights_hash"] for s in slots[1].values()]
    ref, got = _all(a, rid), _all(b, rid)
    assert set(ref) == set(got) and all(np.array_equal(ref[k], got[k]) for k in ref)


def test_a_run_config_cut_short_by_a_kill_does_not_block_the_weights_dir(tmp_path,
                                                                          monkeypatch):
    from pathlib import Path

    from actstore.store import create_store

    wdir = tmp_path / "weights"
    for name in ("a.zarr", "b.zarr", "c.zarr"):
        create_store(str(tmp_path / name))
    train_run(_mlp_spec(), str(tmp_path / "a.zarr"), weights_dir=wdir)
    write = Path.write_text

    def killed_half_way(self, text, *a, **kw):  # what a SIGKILL during the write leaves
        write(self, text[: len(text) // 2], *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        train_run(_mlp_spec(), str(tmp_path / "b.zarr"), weights_dir=wdir)
    monkeypatch.setattr(Path, "write_text", write)
    out = train_run(_mlp_spec(), str(tmp_path / "c.zarr"), weights_dir=wdir)
    assert out["status"] == "trained"


def test_unknown_capture_layers_are_found_when_the_run_is_checked():
    from actstore import ActstoreError
    from actstore.training import CaptureConfig

    spec = _mlp_spec()
    spec.capture = CaptureConfig(layers=["fc1", "fc9"])
    with pytest.raises(ActstoreError, match="no layer matches 'fc9'"):
        spec.resolve()
    with pytest.raises(ActstoreError, match="must be \"all\", a layer name"):
        CaptureConfig(layers=[])


def test_a_sweep_whose_runs_all_fail_leaves_no_store(tmp_path):
    sweep = parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                         "train": {"steps": 2, "checkpoints": 2, "eval_size": 16},
                         "dataset": {"binary": {"n_train": 64, "n_val": 16, "n_probe": 16}}})
    wdir = tmp_path / "w"
    (wdir / sweep.runs[0].run_id).mkdir(parents=True)
    (wdir / sweep.runs[0].run_id / "config.json").write_text("{")
    url = tmp_path / "s.zarr"
    rep = run_sweep(sweep, str(url), execution=IN_PROCESS, weights_dir=str(wdir))
    assert [r["status"] for r in rep.runs] == ["failed"]
    assert "is not a readable run config" in rep.runs[0]["error"]
    assert not url.exists()


def test_ctrl_c_of_a_sweep_leaves_its_runs_visible_to_plain_xarray(tmp_path, monkeypatch):
    """The consolidated metadata that plain xarray reads lists the runs written before a
    Ctrl-C (it was written once, before any run, and never refreshed)."""
    import xarray as xr

    import actstore.training._execute as ex

    url = str(tmp_path / "s.zarr")
    sweep = parse_sweep({
        "datasets": ["binary"], "tasks": ["label"], "models": ["mlp"], "seeds": [0, 1],
        "train": {"steps": 4, "checkpoints": 2, "eval_size": 16},
        "dataset": {"binary": {"n_train": 64, "n_val": 16, "n_probe": 16}},
        "model": {"mlp": {"hidden": [8]}},
    })
    def killed_during_a_run(sweep, store, todo, *a, **kw):
        # a worker's run that was killed: one checkpoint written, its writer never left
        st = open_store(store, mode="a")
        ps = st.probe_set_names()[0]
        w = st.writer("killed", probe_set=ps, steps=[0, 1]).__enter__()
        n = st.probe_set(ps, inputs=False).n
        w.write_slot(0, {"fc": np.ones((n, 3), "float32")})
        w._lease.release()
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "_train_all", killed_during_a_run)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, url, execution=IN_PROCESS)
    tree = xr.open_datatree(url, engine="zarr")
    assert "killed" in tree["runs"].children


def test_repair_redoes_a_trained_slot_from_its_saved_weights(tmp_path):
    """A run trained with a weights directory records each slot's file and how it was
    captured, so `actstore repair` records a corrupt slot again from the saved weights."""
    from actstore.store import repair

    url = str(tmp_path / "s.zarr")
    from actstore.store import create_store

    create_store(url)
    train_run(_mlp_spec(), url, weights_dir=tmp_path / "weights")
    st = open_store(url, mode="a")
    rid = st.run_ids()[0]
    rd = st.reader(rid)
    layer, step = rd.layers[0], rd.complete_steps[-1]
    before = rd.read(layer, step)
    chunks = sorted((tmp_path / "s.zarr" / "runs" / rid / layer / "c").rglob("*"))
    victim = [p for p in chunks if p.is_file()][-1]
    victim.write_bytes(b"\\0" * victim.stat().st_size)  # corrupt the last slot's shard
    rep = repair(st)  # the model factory is given by the user, never taken from the store
    assert rep.pending == [(rid, step)] and not rep.reset, rep
    assert rep.commands[rid].endswith(
        f"--model actstore.training:load_saved_model --model-arg "
        f"config={(tmp_path / 'weights' / rid).resolve()}")
    rep = repair(st, model="actstore.training:load_saved_model",
                 model_args={"config": str((tmp_path / "weights" / rid).resolve())})
    assert (rid, step) in rep.redone and not rep.needs_rerun, rep
    np.testing.assert_array_equal(open_store(url).reader(rid).read(layer, step), before)
