"""Fel et al. (2024) and Li et al. (2016) experiments beyond the first findings table:
sedimentation (important features become accessible at earlier layers over training), where
features flow in a ResNet (residual branch vs block output), conv units correlated over
spatial positions, and the study settings that feed them. Each verdict flips when its numbers
flip; the tiny studies train and measure every experiment end to end."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr
from test_findings import FakeStore

from actstore.studies import evaluate_claims, load_study
from actstore.studies._findings import FAILS, HOLDS, UNTESTABLE
from actstore.studies.claims import CLAIMS

LAYERS = ["conv1", "conv2", "conv3", "fc6", "fc7"]
STEPS = [0, 10, 100]


def _verdicts(study: str, store: FakeStore) -> dict[str, Any]:
    return {c.key: m for c, m in evaluate_claims(CLAIMS[study], store)}


def _fel(sign: float, n_atoms: int = 20) -> FakeStore:
    """Complexity results of 2 runs whose features' V-information in the early layers grows
    over training with their importance (``sign`` +1) or against it (-1)."""
    rng = np.random.default_rng(4)
    imp = rng.uniform(0, 1, (2, n_atoms))
    v = np.full((2, len(STEPS), len(LAYERS), n_atoms), 0.2)
    for t in range(len(STEPS)):
        frac = t / (len(STEPS) - 1)
        # the earlier layers gain V-information over training in proportion to importance
        v[:, t, :3] += frac * 0.5 * (0.5 + sign * (imp - 0.5))[:, None, :]
    v += rng.normal(0, 0.01, v.shape)
    v[:, :, -1] = 1.0  # the dictionary's layer
    K = 1 - v[:, -1].mean(axis=1)
    ds = xr.Dataset(
        {"complexity": (("run", "atom"), K),
         "importance": (("run", "target", "atom"), imp[:, None, :].repeat(2, axis=1)),
         "time_to_decode": (("run", "atom"), rng.uniform(0, 1, K.shape)),
         "decodable_step": (("run", "atom"), rng.choice([0.0, 10.0, 100.0], K.shape)),
         "vinfo_layer": (("run", "layer", "atom"), v[:, -1]),
         "vinfo_layer_checkpoint": (("run", "checkpoint", "layer", "atom"), v),
         "source_layer": (("run",), np.array(["fc7", "fc7"], dtype=object))},
        coords={"run": ["a", "b"], "target": ["x", "y"], "checkpoint": STEPS,
                "layer": LAYERS})
    return FakeStore({}, {"complexity/main": ds})


def test_fel_sedimentation_flips_with_the_numbers():
    m = _verdicts("fel2024", _fel(+1))["sedimentation"]
    assert m.verdict == HOLDS and m.value > 0.8
    # the earlier half of the probed layers, not the dictionary's own layer
    assert "from conv1, conv2, step 0 -> 100" in m.reason
    m = _verdicts("fel2024", _fel(-1))["sedimentation"]
    assert m.verdict == FAILS and m.value < -0.8
    store = _fel(+1)
    store.results["complexity/main"] = store.results["complexity/main"].drop_vars(
        "vinfo_layer_checkpoint")
    m = _verdicts("fel2024", store)["sedimentation"]
    assert m.verdict == UNTESTABLE and "layer_checkpoints = true" in m.reason
    store = _fel(+1)
    store.results["complexity/main"]["vinfo_layer_checkpoint"][:] = 0.5
    m = _verdicts("fel2024", store)["sedimentation"]
    assert m.verdict == UNTESTABLE and "no spread" in m.reason


def test_the_fel_study_decodes_every_layer_at_every_checkpoint():
    for scale in ("small", "paper"):
        study = load_study("fel2024", scale)
        cx = next(a for a in study.analyses if a["kind"] == "complexity")
        assert cx["layer_checkpoints"] is True


def test_li_says_whether_conv_units_were_correlated_over_positions():
    from test_findings import _li

    mixed = np.r_[np.full(8, 0.95), np.full(8, 0.2)]
    store = _li(mixed, lasso_loss=0.1)
    m = _verdicts("li2016", store)["reliable_features"]
    assert "spatial positions" not in m.reason
    for ds in store.results.values():
        ds.attrs.update(positions=True, n_samples=300 * 64)
    m = _verdicts("li2016", store)["reliable_features"]
    assert m.verdict == HOLDS
    assert "over stimuli x spatial positions in conv1 (19200 samples)" in m.reason


def test_the_li_study_keeps_a_grid_of_positions_of_conv_maps():
    for scale in ("small", "paper"):
        study = load_study("li2016", scale)
        assert {r.capture.reduce for r in study.sweep.runs} == {"grid:8"}
        align = next(a for a in study.analyses if a["kind"] == "align")
        assert align.get("positions", "auto") == "auto"  # fc layers have no positions


def _resnet(sign: float) -> FakeStore:
    """Complexity results of 2 ResNet runs whose features are decoded from each block's
    output and from its residual branch; the branch holds complex features (``sign`` +1) or
    simple ones (-1) better than the block's output does."""
    rng = np.random.default_rng(5)
    blocks = ["block1", "block2", "block3"]
    K = rng.uniform(0, 1, (2, 16))
    v = np.clip(1 - K[:, None, :] + rng.normal(0, 0.01, (2, 3, 16)), 0, 1)
    flow = v + sign * 0.3 * (K[:, None, :] - 0.5) + rng.normal(0, 0.01, v.shape)
    ds = xr.Dataset(
        {"complexity": (("run", "atom"), K), "vinfo_layer": (("run", "layer", "atom"), v),
         "vinfo_flow": (("run", "flow_layer", "atom"), flow)},
        coords={"run": ["a", "b"], "layer": blocks,
                "flow_layer": [f"{b}_bn_b" for b in blocks]})
    return FakeStore({}, {"complexity/main": ds})


def test_fel_residual_bypass_flips_with_the_numbers():
    m = _verdicts("fel2024", _resnet(+1))["residual_bypass"]
    assert m.verdict == HOLDS and m.value > 0.8 and "3 blocks: block1_bn_b vs block1" in m.reason
    m = _verdicts("fel2024", _resnet(-1))["residual_bypass"]
    assert m.verdict == FAILS and m.value < -0.8
    from test_findings import _Reader

    store = _fel(+1)  # an AlexNet: no residual blocks
    store.runs = {"a": _Reader({"model": "alexnet"}, STEPS, LAYERS)}
    m = _verdicts("fel2024", store)["residual_bypass"]
    assert m.verdict == UNTESTABLE and "(runs: alexnet)" in m.reason


def test_fel_reads_the_flow_result_beside_the_main_one():
    store = _fel(+1)
    store.results["complexity/flow"] = _resnet(+1).results["complexity/main"]
    m = _verdicts("fel2024", store)
    assert m["residual_bypass"].verdict == HOLDS
    assert m["sedimentation"].verdict == _verdicts("fel2024", _fel(+1))["sedimentation"].verdict


def test_the_fel_study_trains_a_resnet_for_the_flow_row_at_small_scale():
    small = load_study("fel2024", "small")
    flow = [r for r in small.sweep.runs if r.variant == "flow"]
    assert [r.model for r in flow] == ["resnet"]
    assert list(flow[0].capture.layers) == ["all", "block*.bn_b"]
    assert {r.model for r in small.sweep.runs if r.variant == "main"} == {"alexnet"}
    paper = load_study("fel2024", "paper")
    assert {(r.model, r.variant) for r in paper.sweep.runs} == {("resnet", "main")}
    assert list(paper.sweep.runs[0].capture.layers) == ["all", "block*.bn_b"]


def _tiny(name: str) -> Any:
    """The small study at a few training steps on 16 px images."""
    from pathlib import Path

    from actstore.studies._spec import _analyses, _sweep
    from actstore.training import merge_tables, read_toml

    study = load_study(name, "small")
    path = Path(study.source)
    doc = read_toml(path, "study")
    sc = merge_tables(doc["scale"]["small"], {
        "sweep": {"train": {"steps": 20, "checkpoints": 3, "warmup": 0},
                  "dataset": {"trifeature": {"image_size": 16, "renders": 1, "n_val": 50,
                                             "probe_combos": 150}}},
        "analysis": {"complexity": {"k": 8, "max_epochs": 30}} if name == "fel2024" else {}})
    study.sweep = _sweep(doc, sc, name, "small", path)
    study.analyses = _analyses(doc, sc, "small", path)
    return study


@pytest.mark.slow
def test_tiny_studies_measure_every_experiment(tmp_path):
    """Every new experiment of both studies trains, is analysed, gives a row whose reason is
    a measurement (not a missing result) and shows in the report (a few training steps: the
    verdicts themselves are not the point here)."""
    from pathlib import Path

    from actstore.store import open_store
    from actstore.studies import run_study

    rep = run_study(_tiny("fel2024"), str(tmp_path / "f.zarr"), serial=True)
    rows = {r["claim"]: r for r in rep.findings}
    for key in ("sedimentation", "residual_bypass"):
        assert "in the complexity result" not in rows[key]["reason"], rows[key]
    st = open_store(str(tmp_path / "f.zarr"))
    assert st.read_result("complexity", "flow")["flow_layer"].values.tolist() == [
        "block1_bn_b", "block2_bn_b"]
    assert "vinfo_layer_checkpoint" in st.read_result("complexity", "main")
    figures = {Path(f).name for f in Path(rep.report).parent.glob("*.png")}
    assert {"complexity-main-sedimentation.png", "complexity-main-top-images.png"} <= figures
    rep = run_study(_tiny("li2016"), str(tmp_path / "l.zarr"), serial=True)
    assert "spatial positions in conv1" in rep.findings[0]["reason"]
    figures = {Path(f).name for f in Path(rep.report).parent.glob("*.png")}
    assert any(f.endswith("-lasso.png") for f in figures)
