"""Findings tables are computations: for every kind of row, results built so that the paper's
claim holds give "holds", the same results with the numbers flipped give "does not hold", and
a missing premise or result gives "not testable" with the measured reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xarray as xr

from actstore.studies import evaluate_claims, findings_dataset, findings_rows
from actstore.studies._findings import FAILS, HOLDS, UNTESTABLE, directional
from actstore.studies.claims import CLAIMS


class _Reader:
    def __init__(self, attrs: dict[str, Any], steps: list[int], layers: list[str]) -> None:
        self.attrs, self.complete_steps, self.layers = attrs, steps, layers


class FakeStore:
    """The part of a store that claims read: runs (attrs, steps, layers) and results."""

    def __init__(self, runs: dict[str, _Reader], results: dict[str, xr.Dataset]) -> None:
        self.runs, self.results = runs, results

    def run_ids(self) -> list[str]:
        return list(self.runs)

    def reader(self, rid: str) -> _Reader:
        return self.runs[rid]

    def result_names(self, group: str | None = None) -> list[str]:
        names = sorted(self.results)
        return names if group is None else [n.split("/", 1)[1] for n in names
                                            if n.startswith(group + "/")]

    def read_result(self, group: str, name: str) -> xr.Dataset:
        return self.results[f"{group}/{name}"]


def _verdicts(study: str, store: FakeStore) -> dict[str, Any]:
    return {c.key: m for c, m in evaluate_claims(CLAIMS[study], store)}


def test_the_verdict_rule():
    assert directional(0.3, 0.1, +1, "").verdict == HOLDS
    assert directional(-0.3, 0.1, +1, "").verdict == FAILS
    assert directional(0.1, 0.1, +1, "").verdict == UNTESTABLE
    assert directional(-0.3, 0.1, -1, "").verdict == HOLDS
    assert directional(-0.3, 0.1, 0, "").verdict == HOLDS
    assert directional(0.0, 0.0, 0, "").verdict == FAILS
    assert "within 2 x its uncertainty" in directional(0.1, 0.1, +1, "").reason


# -- Hermann & Lampinen 2020: decoding before and after training, RSA ---------------------------

FEATURES = ["shape", "color"]
LAYERS = ["pool3", "fc6", "fc7", "out"]


def _hermann(target: tuple[float, float], other: tuple[float, float], learned: float = 0.9,
             same: float = 0.8, cross: float = 0.2) -> FakeStore:
    """Runs trained on shape and on colour (2 seeds each); accuracy (untrained, trained) of
    each run's target and non-target feature; RSA between runs of the same or other task."""
    runs = {f"{t}-s{s}": (t, s) for t in FEATURES for s in (0, 1)}
    acc = np.zeros((1, len(runs), 2, len(LAYERS), 2))
    rng = np.random.default_rng(0)
    for i, (t, _) in enumerate(runs.values()):
        for j, f in enumerate(FEATURES):
            before, after = target if f == t else other
            acc[0, i, 0, :, j] = before + rng.normal(0, 0.01, len(LAYERS))
            acc[0, i, 1, :, j] = after + rng.normal(0, 0.01, len(LAYERS))
    dims = ("decoder", "run", "checkpoint", "layer", "feature")
    probes = xr.Dataset(
        {"accuracy": (dims, acc), "accuracy_std": (dims, np.full(acc.shape, 0.02)),
         "chance": (("run", "feature"), np.full((len(runs), 2), 0.1))},
        coords={"decoder": ["ridge"], "run": list(runs), "checkpoint": [0, 100],
                "layer": LAYERS, "feature": FEATURES},
        attrs={"actstore.config": json.dumps({"n_splits": 3})})
    names = list(runs)
    S = np.array([[1.0 if a == b else (same if runs[a][0] == runs[b][0] else cross)
                   for b in names] for a in names])
    S = S + rng.normal(0, 0.01, S.shape)
    rep = {f"{k}_{side}": (f"rep_{side}", v) for side in "ab" for k, v in (
        ("run", names), ("task", [runs[r][0] for r in names]),
        ("seed", [runs[r][1] for r in names]),
        ("model", ["alexnet"] * 4), ("layer", ["fc7"] * 4), ("checkpoint", [100] * 4))}
    rsa = xr.Dataset({"similarity": (("rep_a", "rep_b"), S)}, coords=rep,
                     attrs={"metric": "rsa"})
    readers = {r: _Reader({"task": t, "seed": s, "model": "alexnet",
                           "config": {"task": {"heads": [{"name": t, "n_classes": 10}]}},
                           "metrics": {"val": {"acc": {t: [0.1, learned]}}}}, [0, 100], LAYERS)
               for r, (t, s) in runs.items()}
    return FakeStore(readers, {"probes/main": probes, "similarity/rsa": rsa})


def test_hermann_target_enhanced_flips_with_the_numbers():
    assert _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4)))[
        "target_enhanced"].verdict == HOLDS
    m = _verdicts("hermann2020", _hermann((0.9, 0.3), (0.6, 0.4)))["target_enhanced"]
    assert m.verdict == FAILS and m.value == pytest.approx(-0.6, abs=0.02)


def test_hermann_nontarget_suppressed_flips_with_the_numbers():
    m = _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4)))["nontarget_suppressed"]
    assert m.verdict == HOLDS and m.value == pytest.approx(-0.2, abs=0.02)
    assert _verdicts("hermann2020", _hermann((0.3, 0.9), (0.4, 0.6)))[
        "nontarget_suppressed"].verdict == FAILS


def test_hermann_untestable_with_the_measured_reason():
    m = _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4), learned=0.2))
    assert m["target_enhanced"].verdict == UNTESTABLE
    assert m["target_enhanced"].reason == (
        "no target feature learned: shape not learned (0.20 held-out, chance 0.10); color not "
        "learned (0.20 held-out, chance 0.10)")
    # non-target features at chance before training: nothing to suppress
    m = _verdicts("hermann2020", _hermann((0.3, 0.9), (0.1, 0.1)))["nontarget_suppressed"]
    assert m.verdict == UNTESTABLE
    assert "is decodable above chance before training (color 0.10" in m.reason
    # a claim whose analysis the study did not run: the RSA holds no untrained networks
    m = _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4)))["rsa_untrained"]
    assert m.verdict == UNTESTABLE and "step 0" in m.reason and np.isnan(m.value)


def test_hermann_rsa_same_task_flips_with_the_numbers():
    assert _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4)))[
        "rsa_same_task"].verdict == HOLDS
    m = _verdicts("hermann2020", _hermann((0.3, 0.9), (0.6, 0.4), same=0.2, cross=0.8))
    assert m["rsa_same_task"].verdict == FAILS
    store = _hermann((0.3, 0.9), (0.6, 0.4))
    del store.results["similarity/rsa"]
    m = _verdicts("hermann2020", store)["rsa_same_task"]
    assert m.verdict == UNTESTABLE and "no RSA result" in m.reason


# -- Lampinen et al. 2024: variance explained by features of matched roles ----------------------

def _lampinen(r2_simple: float, r2_complex: float, parity_acc: float = 1.0) -> FakeStore:
    runs = [f"complexity-s{s}" for s in (0, 1)]
    feats = [{"name": "linear", "bits": 1}, {"name": "parity3", "bits": 3}]
    r2 = np.zeros((2, 1, 3, 2))
    r2[:, :, :, 0] = r2_simple + np.array([0.0, 0.01])[:, None, None]
    r2[:, :, :, 1] = r2_complex
    dims = ("run", "checkpoint", "layer", "feature")
    var = xr.Dataset({"r2": (dims, r2), "r2_std": (dims, np.full(r2.shape, 0.01))},
                     coords={"run": runs, "checkpoint": [100], "layer": ["fc1", "fc2", "out"],
                             "feature": ["linear", "parity3"]})
    readers = {r: _Reader({"variant": "complexity", "model": "mlp", "config": {
        "dataset": {"params": {"features": feats}},
        "task": {"heads": [{"name": "linear", "n_classes": 2},
                           {"name": "parity3", "n_classes": 2}]}},
        "metrics": {"val": {"acc": {"linear": [1.0], "parity3": [parity_acc]}}}},
        [0, 100], ["fc1", "fc2", "out"]) for r in runs}
    return FakeStore(readers, {"variance/main": var})


def test_lampinen_complexity_flips_with_the_numbers():
    m = _verdicts("lampinen2024", _lampinen(0.6, 0.4))
    assert m["complexity"].verdict == HOLDS and m["complexity"].value == pytest.approx(0.205)
    assert _verdicts("lampinen2024", _lampinen(0.4, 0.6))["complexity"].verdict == FAILS
    m = _verdicts("lampinen2024", _lampinen(0.6, 0.4, parity_acc=0.55))["complexity"]
    assert m.verdict == UNTESTABLE
    assert m.reason == "parity3 not learned (0.55 held-out, chance 0.50)"
    m = _verdicts("lampinen2024", _lampinen(0.6, 0.4))["order"]
    assert m.verdict == UNTESTABLE and "no runs of the 'order' variant" in m.reason


# -- Fel et al. 2024: complexity against importance and time of emergence -----------------------

def _fel(sign: float) -> FakeStore:
    rng = np.random.default_rng(1)
    K = rng.uniform(0, 1, (2, 24))
    imp = (-sign * K + rng.normal(0, 0.05, K.shape))[:, None, :].repeat(3, axis=1)
    ttd = sign * K + rng.normal(0, 0.05, K.shape)
    ds = xr.Dataset(
        {"complexity": (("run", "atom"), K), "importance": (("run", "target", "atom"), imp),
         "time_to_decode": (("run", "atom"), ttd),
         "decodable_step": (("run", "atom"), rng.choice([0.0, 10.0, 100.0], K.shape)),
         "vinfo_layer": (("run", "layer", "atom"), np.ones((2, 2, 24)))},
        coords={"run": ["a", "b"], "target": ["x", "y", "z"], "checkpoint": [0, 10, 100],
                "layer": ["l1", "l2"]})
    return FakeStore({}, {"complexity/main": ds})


def test_fel_importance_and_emergence_flip_with_the_numbers():
    m = _verdicts("fel2024", _fel(+1))
    assert m["importance"].verdict == HOLDS and m["importance"].value < -0.8
    assert m["emergence"].verdict == HOLDS and m["emergence"].value > 0.8
    m = _verdicts("fel2024", _fel(-1))
    assert m["importance"].verdict == FAILS and m["emergence"].verdict == FAILS
    assert m["sedimentation"].verdict == UNTESTABLE
    assert "final checkpoint only" in m["sedimentation"].reason
    store = _fel(+1)
    store.results["complexity/main"]["decodable_step"][:] = 100.0
    m = _verdicts("fel2024", store)["emergence"]
    assert m.verdict == UNTESTABLE and "at the same checkpoint (step 100)" in m.reason


# -- Li et al. 2016: one-to-one matching and sparse prediction between seeds --------------------

def _li(corr: np.ndarray, lasso_loss: float) -> FakeStore:
    n = corr.size
    ds = xr.Dataset(
        {"bipartite_corr": (("pair", "unit"), corr[None]),
         "bipartite_index": (("pair", "unit"), np.arange(n)[None]),
         "constant": (("run", "unit"), np.zeros((2, n), bool)),
         "lasso_test_loss": (("pair", "alpha", "unit_b"), np.full((1, 2, n), lasso_loss)),
         "lasso_test_loss_mean": (("pair", "alpha"), np.array([[lasso_loss, 1.0]]))},
        attrs={"units_in_mixed": 0.5})
    runs = {r: _Reader({}, [100], ["conv1", "fc6", "out"]) for r in ("s0", "s1")}
    return FakeStore(runs, {"alignment/main-g.conv1": ds, "alignment/main-g.fc6": ds.copy()})


def test_li_claims_flip_with_the_numbers():
    mixed = np.r_[np.full(8, 0.95), np.full(8, 0.2)]
    m = _verdicts("li2016", _li(mixed, lasso_loss=0.1))
    assert m["reliable_features"].verdict == HOLDS
    assert m["reliable_features"].value == pytest.approx(0.5)
    # sparse groups predict each unit (R^2 0.9) better than its match (0.95^2 or 0.2^2)
    assert m["shared_subspaces"].verdict == HOLDS
    assert m["shared_subspaces"].value == pytest.approx(0.9 - np.mean(mixed ** 2))
    m = _verdicts("li2016", _li(np.full(16, 0.95), lasso_loss=0.5))
    assert m["reliable_features"].verdict == FAILS and m["shared_subspaces"].verdict == FAILS
    m = _verdicts("li2016", FakeStore({}, {}))["reliable_features"]
    assert m.verdict == UNTESTABLE and "no alignment result" in m.reason


def test_the_table_as_a_dataset_and_json():
    measured = evaluate_claims(CLAIMS["lampinen2024"], _lampinen(0.6, 0.4))
    ds = findings_dataset("lampinen2024", "Lampinen et al.", measured)
    assert ds.sizes["claim"] == len(CLAIMS["lampinen2024"])
    rows = findings_rows(ds)
    assert rows[0]["claim"] == "complexity" and rows[0]["verdict"] == HOLDS
    assert rows[0]["value"] == pytest.approx(0.205) and rows[2]["value"] is None
    assert json.dumps(rows)
