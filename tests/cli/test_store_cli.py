"""``actstore dump | ls | info`` and their one-line errors (exit code 2, store untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

FACTORIES = Path(__file__).parents[1] / "store" / "factories.py"
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("f", FACTORIES)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.small_cnn()
    ck = tmp_path / "ckpts"
    ck.mkdir()
    for step in (0, 50):
        torch.save({"step": step, "state_dict": model.state_dict()}, ck / f"epoch{step}.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "probe.npz", inputs=rng.standard_normal((30, 3, 8, 8)).astype("float32"),
             color=rng.integers(0, 3, 30), shape=np.array(["a", "b", "c"] * 10))
    return tmp_path


def _dump(d: Path, store: str, *extra: str):
    return runner.invoke(app, ["dump", store, str(d / "ckpts"), "--model",
                               f"{FACTORIES}:small_cnn", "--probe-set", str(d / "probe.npz"),
                               "--run", "cnn0", "--attr", "seed=3", *extra])


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_dump_ls_info(run_dir):
    store = str(run_dir / "s.zarr")
    res = _dump(run_dir, store, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == \
        {"run": "cnn0", "written": [0, 50], "skipped": []}
    again = _dump(run_dir, store, "--json")
    assert json.loads(again.output.strip().splitlines()[-1])["skipped"] == [0, 50]
    rd = open_store(store).reader("cnn0")
    assert rd.attrs["seed"] == 3
    assert list(rd.labels["shape"][:3]) == ["a", "b", "c"]

    ls = runner.invoke(app, ["ls", store])
    assert ls.exit_code == 0
    assert "cnn0" in ls.output and "2/2" in ls.output
    info = runner.invoke(app, ["info", store, "cnn0", "--json"])
    data = json.loads(info.output)
    assert data["checkpoints_complete"] == 2
    assert [ly["name"] for ly in data["layers"]] == ["conv1", "relu1", "conv2", "pool", "fc1",
                                                     "out"]
    assert all(ly["stored_bytes"] > 0 for ly in data["layers"])
    text = runner.invoke(app, ["info", store])
    assert text.exit_code == 0 and "conv1" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "fc9"], "no layer matches 'fc9'; available: conv1, relu1, conv2"),
        (["--dtype", "int8"], "storage dtype must be float32 or float16"),
        (["--reduce", "median"], "unknown reduction 'median'"),
    ],
)
def test_dump_bad_options_leave_no_store(run_dir, args, message):
    store = run_dir / "s.zarr"
    res = _dump(run_dir, str(store), *args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert not store.exists()


def test_checkpoint_that_does_not_match_the_model(run_dir):
    store = run_dir / "s.zarr"
    assert _dump(run_dir, str(store)).exit_code == 0
    before = _snapshot(store)
    torch.save({"conv1.weight": torch.zeros(2, 2)}, run_dir / "ckpts" / "step_99.pt")
    res = _dump(run_dir, str(store))
    assert res.exit_code == 2
    assert "step_99.pt does not match model" in res.output
    assert _snapshot(store) == before


def test_not_a_store(tmp_path):
    res = runner.invoke(app, ["ls", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2
    assert "is not an actstore store" in res.output


def test_help_explains_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("dump", "ls", "info"):
        assert cmd in res.output
    res = runner.invoke(app, ["dump", "--help"])
    assert "--probe-set" in res.output and "Reduction" in res.output
    text = " ".join(res.output.split())
    assert "last number in its name" in text and "Resumable" in text


def test_failure_after_complete_checkpoints_keeps_them(run_dir):
    store = run_dir / "s.zarr"  # created by this dump
    state = torch.load(run_dir / "ckpts" / "epoch50.pt", weights_only=True)["state_dict"]
    bad = {k: v.clone() for k, v in state.items()}
    bad["conv2.weight"].fill_(float("inf"))
    torch.save({"step": 90, "state_dict": bad}, run_dir / "ckpts" / "epoch90.pt")
    res = _dump(run_dir, str(store), "--json")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "layer 'conv2' at checkpoint 90 has" in lines[0], res.output
    rd = open_store(str(store)).reader("cnn0")
    assert rd.complete_steps == [0, 50] and rd.planned_steps == [0, 50, 90]
    assert rd.steps.tolist() == [0, 50, -1]  # the failed slot is empty again
    kept = {s: rd.read("fc1", s) for s in (0, 50)}
    torch.save({"step": 90, "state_dict": state}, run_dir / "ckpts" / "epoch90.pt")
    res = _dump(run_dir, str(store), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == \
        {"run": "cnn0", "written": [90], "skipped": [0, 50]}
    rd = open_store(str(store)).reader("cnn0")
    for s, arr in kept.items():
        np.testing.assert_array_equal(rd.read("fc1", s), arr)


def test_probe_set_name_for_a_new_store_leaves_no_store(run_dir):
    store = run_dir / "s.zarr"
    res = runner.invoke(app, ["dump", str(store), str(run_dir / "ckpts"), "--model",
                              f"{FACTORIES}:small_cnn", "--probe-set", "images", "--run", "r"])
    assert res.exit_code == 2
    assert "no probe set 'images'" in res.output and "does not exist yet" in res.output
    assert not store.exists()
