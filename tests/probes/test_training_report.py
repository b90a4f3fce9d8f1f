"""The report's training curves: drawn from the metrics each trained run recorded."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from actstore.probes import write_report
from actstore.report._training import _curves, training_curves
from actstore.store import create_store, open_store
from actstore.training import RunSpec, TrainConfig, train_run


def _spec(task: str, seed: int) -> RunSpec:
    return RunSpec(
        dataset="trifeature", task=task, model="alexnet", seed=seed,
        dataset_params={"image_size": 16, "renders": 1, "n_val": 32, "probe_combos": 30},
        model_params={"width": 2, "fc_width": 8, "batch_norm": True},
        train=TrainConfig(steps=6, checkpoints=3, eval_size=32, lr=3e-3,
                          lr_schedule="cosine", warmup=2),
    )


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("tr") / "s.zarr")
    create_store(url)
    for task, seed in (("shape", 0), ("color", 1)):
        train_run(_spec(task, seed), url)
    return url


def test_the_report_draws_and_tabulates_the_recorded_curves(trained_store, tmp_path):
    rep = write_report(trained_store, out=str(tmp_path / "rep"))
    assert rep.problems == []
    png = tmp_path / "rep" / "training-curves.png"
    assert str(png) in rep.figures
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", raw[16:24])[0] > 300
    page = Path(rep.path).read_text()
    assert 'id="training"' in page and 'href="#training"' in page
    assert page.index('id="runs"') < page.index('id="training"')
    st = open_store(trained_store)
    for rid in st.run_ids():
        m = st.reader(rid).attrs["metrics"]
        head = next(iter(m["val"]["acc"]))
        assert m["step"] == [0, 1, 6]
        # the table's final validation accuracy is the recorded one
        assert f"<td>{m['val']['acc'][head][-1]:.2f}</td></tr>" in page.split(rid, 1)[1]
    curves = {c.run: c for c in training_curves(st)}
    assert curves["trifeature-shape-alexnet-s0"].chance == {"shape": 0.1}
    assert curves["trifeature-shape-alexnet-s0"].model == "alexnet"
    assert curves["trifeature-shape-alexnet-s0"].label == "shape"  # no variant
    assert set(curves["trifeature-color-alexnet-s1"].acc["val"]) == {"color"}


def test_runs_without_usable_metrics_are_left_out():
    assert _curves("r", {}) is None
    assert _curves("r", {"metrics": {"step": []}}) is None
    c = _curves("r", {"task": "t", "metrics": {
        "step": [0, 5], "train": {"loss": [2.3, 1.0], "acc": {"a": [0.1, "NaN"]}},
        "val": {"loss": [2.3], "acc": {"a": [0.1, 0.4], "b": "x"}}},
        "config": {"task": {"heads": [{"name": "a", "n_classes": 4}]}}})
    assert c is not None and c.steps == [0, 5] and c.chance == {"a": 0.25}
    assert c.model == "-" and c.label == "t"
    v = _curves("r", {"task": "t", "variant": "easy", "model": "mlp", "metrics": {"step": [0]}})
    assert v is not None and v.label == "t [easy]" and v.acc == {"train": {}, "val": {}}
    assert "val" not in c.loss and c.loss["train"] == [2.3, 1.0]  # a list of the wrong length
    assert c.acc["val"] == {"a": [0.1, 0.4]} and str(c.acc["train"]["a"][1]) == "nan"
