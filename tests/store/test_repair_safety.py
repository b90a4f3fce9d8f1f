"""`actstore repair` never imports or calls anything a store names: a slot is redone only with
the --model the user gives, checked against the run's record and its weights hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import mlp
from stores import error_line
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import _layout as L
from actstore.store import dump, open_store, repair, verify

HERE = Path(__file__).parent
FACTORY = f"{HERE / 'factories.py'}:mlp"
runner = CliRunner()


@pytest.fixture
def dumped(tmp_path) -> Path:
    """Run r: an MLP dumped at steps 0 and 3 from checkpoint files that still exist."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "p.npz", inputs=rng.standard_normal((12, 32)).astype("float32"),
             color=np.arange(12) % 3)
    (tmp_path / "ck").mkdir()
    for step in (0, 3):
        _save_weights(tmp_path / "ck" / f"step_{step}.pt", step)
    url = tmp_path / "s.zarr"
    dump(str(url), "r", FACTORY, tmp_path / "ck", str(tmp_path / "p.npz"))
    return url


def _save_weights(path: Path, shift: float) -> None:
    torch.save({k: v + shift for k, v in mlp().state_dict().items()}, path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def _flip_a_shard(url: Path, layer: str = "fc1", slot: int = 1) -> None:
    shard = url / "runs" / "r" / layer / "c" / str(slot) / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))


def _set_run_attrs(url: Path, change) -> None:
    """Edit the run's attributes as an attacker would, checksum included."""
    meta = url / "runs" / "r" / "zarr.json"
    doc = json.loads(meta.read_text())
    change(doc["attributes"])
    doc["attributes"][L.ATTR_CHECKSUM] = L.attrs_checksum(doc["attributes"])
    meta.write_text(json.dumps(doc))


def test_repair_never_runs_the_factory_a_store_names(dumped, tmp_path):
    marker = tmp_path / "pwned"

    def crafted(attrs):
        attrs["dump"]["factory"] = "os:system"
        attrs["dump"]["factory_kwargs"] = {"command": f"touch {marker}"}

    _set_run_attrs(dumped, crafted)
    _flip_a_shard(dumped)
    assert [p.key for p in verify(open_store(str(dumped)))] == ["runs/r/fc1/c/1/0/0"]
    before = _snapshot(dumped)

    res = runner.invoke(app, ["repair", str(dumped)])
    assert not marker.exists()
    assert res.exit_code == 1, res.output
    line = next(ln for ln in res.output.splitlines() if "left as they are" in ln)
    assert line.startswith("run 'r' checkpoint(s) 3: left as they are")
    assert "if you trust it, run: actstore repair" in line and "--model os:system" in line
    assert _snapshot(dumped) == before

    # the user's model is checked against the record before anything is loaded or changed
    res = runner.invoke(app, ["repair", str(dumped), "--model", FACTORY])
    assert "was recorded with another model than --model" in error_line(res)
    assert not marker.exists()
    assert _snapshot(dumped) == before


def test_repair_redoes_a_slot_only_with_the_recorded_model_and_weights(dumped, tmp_path):
    before = open_store(str(dumped)).reader("r").read("fc1", 3)
    _flip_a_shard(dumped)
    snap = _snapshot(dumped)
    # another --model-arg than the run was dumped with
    res = runner.invoke(app, ["repair", str(dumped), "--model", FACTORY,
                              "--model-arg", "width=8"])
    assert "was recorded with another model" in error_line(res)
    # the checkpoint file now holds other weights: the slot cannot be redone from it
    good = (tmp_path / "ck" / "step_3.pt").read_bytes()
    _save_weights(tmp_path / "ck" / "step_3.pt", 4)
    res = runner.invoke(app, ["repair", str(dumped), "--model", FACTORY])
    assert "holds other weights than checkpoint 3 of run 'r'" in error_line(res)
    assert _snapshot(dumped) == snap
    (tmp_path / "ck" / "step_3.pt").write_bytes(good)

    res = runner.invoke(app, ["repair", str(dumped), "--model", FACTORY])
    assert res.exit_code == 0, res.output
    assert verify(open_store(str(dumped))) == []
    np.testing.assert_array_equal(open_store(str(dumped)).reader("r").read("fc1", 3), before)


def test_repair_checks_its_options():
    with pytest.raises(Exception, match="--model-arg needs --model"):
        repair(None, model_args={"width": 8})
    with pytest.raises(Exception, match="leave out --no-redo"):
        repair(None, redo=False, model=FACTORY)
