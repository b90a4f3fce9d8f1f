"""``actstore dump | ls | info`` and their one-line errors (exit code 2, store untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from stores import error_line
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
        (["--layers", "fc9"], "no layer matches 'fc9'; valid names: all, leaves, conv1, relu1"),
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




def test_dump_on_cuda_without_a_gpu_is_one_line(run_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    store = run_dir / "s.zarr"
    line = error_line(_dump(run_dir, str(store), "--device", "cuda"))
    assert "--device cuda was asked for, but no GPU is visible" in line
    assert not store.exists()
    line = error_line(_dump(run_dir, str(store), "--device", "gpu0"))
    assert "'gpu0' is not a torch device" in line


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("width=abc", "small_cnn failed with --model-arg width='abc': TypeError: "),
        ("nokey=1", "small_cnn has no parameter 'nokey' (from --model-arg nokey=1)"),
    ],
)
def test_bad_model_args_name_the_factory_and_its_parameters(run_dir, arg, message):
    store = run_dir / "s.zarr"
    line = error_line(_dump(run_dir, str(store), "--model-arg", arg))
    assert message in line and "it accepts (width: int = 8)" in line, line
    assert not store.exists()


def test_forward_pass_that_fails_on_the_probe_inputs(run_dir):
    rng = np.random.default_rng(1)
    np.savez(run_dir / "bytes.npz", inputs=rng.integers(0, 255, (30, 3, 8, 8)).astype("uint8"),
             color=rng.integers(0, 3, 30))
    args = ["dump", "", str(run_dir / "ckpts"), "--model", f"{FACTORIES}:small_cnn",
            "--probe-set", str(run_dir / "bytes.npz"), "--run", "r2"]
    fresh = run_dir / "fresh.zarr"
    args[1] = str(fresh)
    line = error_line(runner.invoke(app, args))
    assert "the forward pass of model" in line and "small_cnn failed on probe set 'bytes'" in line
    assert "inputs of shape (30, 3, 8, 8), dtype uint8" in line, line
    assert not fresh.exists()
    store = run_dir / "s.zarr"
    assert _dump(run_dir, str(store)).exit_code == 0
    before = _snapshot(store)
    args[1] = str(store)
    line = error_line(runner.invoke(app, args))
    assert "failed on probe set 'bytes'" in line
    assert _snapshot(store) == before


def test_a_file_that_is_not_a_checkpoint(run_dir):
    store = run_dir / "s.zarr"
    assert _dump(run_dir, str(store)).exit_code == 0
    before = _snapshot(store)
    for junk in (b"not a checkpoint\x00\x01", b"", b"PK\x03\x04 truncated zip"):
        (run_dir / "ckpts" / "step_7.pt").write_bytes(junk)
        line = error_line(_dump(run_dir, str(store)))
        assert "step_7.pt is not a readable PyTorch checkpoint" in line, line
        assert "weights_only" not in line
        assert _snapshot(store) == before
    import argparse

    torch.save({"step": 7, "state_dict": {}, "args": argparse.Namespace(lr=0.1)},
               run_dir / "ckpts" / "step_7.pt")
    line = error_line(_dump(run_dir, str(store)))
    assert "step_7.pt holds Python objects besides tensors (argparse.Namespace)" in line, line
    assert "weights_only" not in line and "save the state dict alone" in line
    assert _snapshot(store) == before


def test_dump_into_a_file_or_a_foreign_directory(run_dir):
    plain = run_dir / "plain.txt"
    plain.write_text("notes")
    line = error_line(_dump(run_dir, str(plain)))
    assert "plain.txt is a file, not an actstore store" in line
    assert plain.read_text() == "notes"
    line = error_line(_dump(run_dir, str(plain / "s.zarr")))
    assert "plain.txt is a file" in line
    other = run_dir / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    line = error_line(_dump(run_dir, str(other)))
    assert "other is a directory that holds other files, not an actstore store" in line
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_dump_workers_must_be_positive(run_dir):
    store = run_dir / "s.zarr"
    line = error_line(_dump(run_dir, str(store), "--workers", "0"))
    assert "--workers must be at least 1, got 0" in line
    assert not store.exists()


def test_ls_never_cuts_run_ids(run_dir, monkeypatch):
    from rich.console import Console

    from actstore.cli import _store_cmds

    store = str(run_dir / "s.zarr")
    long_id = "trifeature-texture-alexnet-width64-dropout0.5-s12"
    assert _dump(run_dir, store, "--run", long_id).exit_code == 0
    for width in (80, 30):
        monkeypatch.setattr(_store_cmds, "console", Console(width=width, soft_wrap=True))
        res = runner.invoke(app, ["ls", store])
        assert res.exit_code == 0
        row = next(ln for ln in res.stdout.splitlines() if long_id in ln)
        assert "small_cnn" in row and "2/2" in row and "…" not in res.stdout
        res = runner.invoke(app, ["info", store])
        assert any(ln.startswith("conv1 ") for ln in res.stdout.splitlines()), res.stdout


def test_repair_output_is_not_wrapped_when_piped(run_dir):
    deep = run_dir / ("a-long-directory-name-" * 3) / "store-with-a-long-name.zarr"
    assert len(str(deep)) > 90
    assert _dump(run_dir, str(deep)).exit_code == 0
    res = runner.invoke(app, ["repair", str(deep)])
    assert res.exit_code == 0
    assert f"{deep}: nothing to repair" in res.stdout.splitlines()


def test_version_option():
    import actstore

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"actstore {actstore.__version__}"


def test_ctrl_c_during_a_dump_says_what_was_kept(run_dir, monkeypatch):
    import actstore.store as dump_mod

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(dump_mod, "dump", interrupted)
    res = _dump(run_dir, str(run_dir / "s.zarr"))
    assert res.exit_code == 130
    assert res.stderr.strip() == ("actstore: interrupted; every checkpoint completed so far is "
                                  "kept; re-run the same command to continue")


@pytest.mark.parametrize(("extra", "said"), [
    (["--reduce", "max"], "was dumped with --reduce None, not 'max'"),
    (["--model-arg", "width=8"], "was dumped with --model-arg {}, not {'width': 8}"),
    (["--layers", "conv1"], "was dumped with --layers 'all', not 'conv1'"),
])
def test_dump_again_with_other_options_is_refused_when_nothing_is_new(run_dir, extra, said):
    """A run is dumped one way: other options are refused even when every checkpoint is
    complete already (before, nothing new to write meant a silent exit 0)."""
    store = run_dir / "s.zarr"
    assert _dump(run_dir, str(store)).exit_code == 0
    before = _snapshot(store)
    line = error_line(_dump(run_dir, str(store), *extra))
    assert said in line and "into a new --run" in line, line
    assert _snapshot(store) == before


def test_a_model_file_imports_modules_next_to_it(run_dir):
    folder = run_dir / "mymodels"
    folder.mkdir()
    (folder / "helper_blocks_for_dump.py").write_text(
        f"import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('f2', {str(FACTORIES)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "small_cnn = mod.small_cnn\n")
    (folder / "net.py").write_text(
        "from helper_blocks_for_dump import small_cnn\n\n\ndef make():\n    return small_cnn()\n")
    res = runner.invoke(app, ["dump", str(run_dir / "s.zarr"), str(run_dir / "ckpts"),
                              "--model", f"{folder / 'net.py'}:make", "--probe-set",
                              str(run_dir / "probe.npz"), "--run", "cnn0"])
    assert res.exit_code == 0, res.output
