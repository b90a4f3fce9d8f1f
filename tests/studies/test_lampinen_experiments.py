"""Lampinen, Chan & Hermann (2024) beyond the complexity headline: learning order, output
position, the CNN and Transformer rows, and the bias in top principal components and single
units. Each row's verdict follows the numbers it reads (flipped numbers flip it), and the
principal-component and single-unit measure is checked against scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr

from actstore.studies import evaluate_claims
from actstore.studies._findings import FAILS, HOLDS, UNTESTABLE
from actstore.studies.claims import CLAIMS
from actstore.studies.claims.lampinen2024 import eta_squared, pc_and_unit_bias

LAYERS = ["h1", "h2", "out"]


def _onehot(y: np.ndarray) -> np.ndarray:
    return (y[:, None] == np.unique(y)[None, :]).astype(float)


def test_eta_squared_and_top_pcs_match_scikit_learn():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.integers(0, 2, n), rng.integers(0, 3, n)  # binary and 3-valued labels
    X = (rng.normal(size=(n, 12)) + np.outer(a, rng.normal(size=12) * 2)
         + np.outer(b == 1, rng.normal(size=12)))
    X[:, 5] = 1.5  # a constant unit is left out
    live = np.arange(12) != 5
    eta = {}
    for y in (a, b):
        F = _onehot(y)
        ref = r2_score(X, LinearRegression().fit(F, X).predict(F), multioutput="raw_values")
        eta[id(y)] = got = eta_squared(X, y)
        assert np.isnan(got[5])
        np.testing.assert_allclose(got[live], ref[live], rtol=1e-10, atol=1e-12)
    for k in (1, 3):
        S = PCA(n_components=k).fit_transform(X)
        share_a, share_b, units = pc_and_unit_bias(X, a, b, k)
        for y, share in ((a, share_a), (b, share_b)):
            F = _onehot(y)
            ref = r2_score(S, LinearRegression().fit(F, S).predict(F),
                           multioutput="variance_weighted")
            assert share == pytest.approx(ref, rel=1e-9)
        assert units == pytest.approx(np.mean(eta[id(a)][live] > eta[id(b)][live]))
    assert share_a > share_b  # a moves every unit twice as much as b


class _Reader:
    def __init__(self, attrs: dict[str, Any], acts: dict[str, np.ndarray] | None,
                 labels: dict[str, np.ndarray]) -> None:
        self.attrs, self.acts, self.labels = attrs, acts or {}, labels
        self.complete_steps, self.layers = [0, 100], LAYERS

    def read(self, layer: str, step: int) -> np.ndarray:
        assert step == 100
        return self.acts[layer]


class _Store:
    """What the claims read: runs (attributes, probe labels, activations) and results."""

    def __init__(self, readers: dict[str, _Reader], results: dict[str, xr.Dataset]) -> None:
        self.readers, self.results = readers, results

    def run_ids(self) -> list[str]:
        return list(self.readers)

    def reader(self, rid: str) -> _Reader:
        return self.readers[rid]

    def result_names(self) -> list[str]:
        return sorted(self.results)

    def read_result(self, group: str, name: str) -> xr.Dataset:
        return self.results[f"{group}/{name}"]


def _store(variant: str, model: str, feats: list[dict[str, Any]], r2: tuple[float, float],
           train: dict[str, Any] | None = None, acc: tuple[float, float] = (1.0, 1.0),
           acts: dict[str, np.ndarray] | None = None,
           labels: dict[str, np.ndarray] | None = None) -> _Store:
    """Two seeds of one variant: held-out R^2 ``r2`` of its two features in every layer."""
    runs = [f"{variant}-{model}-s{s}" for s in (0, 1)]
    names = [f["name"] for f in feats]
    v = np.zeros((2, 1, len(LAYERS), 2))
    v[..., 0] = r2[0] + np.array([0.0, 0.01])[:, None, None]
    v[..., 1] = r2[1]
    dims = ("run", "checkpoint", "layer", "feature")
    var = xr.Dataset({"r2": (dims, v), "r2_std": (dims, np.full(v.shape, 0.01))},
                     coords={"run": runs, "checkpoint": [100], "layer": LAYERS,
                             "feature": names})
    readers = {r: _Reader({"variant": variant, "model": model, "config": {
        "dataset": {"params": {"features": feats}}, "train": train or {},
        "task": {"heads": [{"name": n, "n_classes": 2} for n in names]}},
        "metrics": {"val": {"acc": {n: [x] for n, x in zip(names, acc, strict=True)}}}},
        acts, labels or {}) for r in runs}
    return _Store(readers, {"variance/main": var})


def _m(store: _Store) -> dict[str, Any]:
    return {c.key: m for c, m in evaluate_claims(CLAIMS["lampinen2024"], store)}


ORDER = [{"name": "later", "bits": 2}, {"name": "first", "bits": 2}]
POSITION = [{"name": "p0", "bits": 2, "position": 0}, {"name": "p1", "bits": 2, "position": 1}]
COMPLEXITY = [{"name": "linear", "bits": 1}, {"name": "parity3", "bits": 3}]


def test_learning_order_flips_with_the_numbers():
    first = {"first_head": "first", "first_steps": 50}
    # the feature trained first ("first", listed second) explains more: the claim holds
    m = _m(_store("order", "mlp", ORDER, (0.1, 0.3), first))["order"]
    assert m.verdict == HOLDS and m.value == pytest.approx(0.195)
    assert "R^2 first 0.300 vs later 0.105" in m.reason and "2 runs: 2 mlp" in m.reason
    assert _m(_store("order", "mlp", ORDER, (0.3, 0.1), first))["order"].verdict == FAILS
    m = _m(_store("order", "mlp", ORDER, (0.3, 0.1)))["order"]
    assert m.verdict == UNTESTABLE and "trains no head first" in m.reason


def test_output_position_reads_transformers_only():
    m = _m(_store("position", "transformer", POSITION, (0.4, 0.2)))["position"]
    assert m.verdict == HOLDS and m.value == pytest.approx(0.205)
    m = _m(_store("position", "transformer", POSITION, (0.2, 0.4)))["position"]
    assert m.verdict == FAILS
    m = _m(_store("position", "mlp", POSITION, (0.4, 0.2)))["position"]
    assert m.verdict == UNTESTABLE and "with a transformer model" in m.reason


@pytest.mark.parametrize("model,row", [("mlp", "complexity"), ("conv1d", "complexity_cnn"),
                                       ("transformer", "complexity_transformer")])
def test_each_architecture_has_its_complexity_row(model, row):
    rows = ("complexity", "complexity_cnn", "complexity_transformer")
    m = _m(_store("complexity", model, COMPLEXITY, (0.5, 0.1)))
    assert m[row].verdict == HOLDS and m[row].value == pytest.approx(0.405)
    assert f"2 runs: 2 {model}" in m[row].reason
    others = [r for r in rows if r != row]
    assert all(m[r].verdict == UNTESTABLE and "in the store" in m[r].reason for r in others)
    assert _m(_store("complexity", model, COMPLEXITY, (0.1, 0.5)))[row].verdict == FAILS
    m = _m(_store("complexity", model, COMPLEXITY, (0.5, 0.1), acc=(1.0, 0.6)))[row]
    assert m.verdict == UNTESTABLE and "parity3 not learned (0.60 held-out" in m.reason


def _activations(strong: str, n: int = 400, units: int = 24) -> tuple[dict[str, np.ndarray],
                                                                      dict[str, np.ndarray]]:
    """Hidden layers in which feature ``strong`` moves most units strongly and the other a few
    units weakly."""
    rng = np.random.default_rng(3)
    labels = {"linear": rng.integers(0, 2, n), "parity3": rng.integers(0, 2, n)}
    weak = "parity3" if strong == "linear" else "linear"
    acts = {}
    for i, layer in enumerate(LAYERS):
        X = rng.normal(0, 1, (n, units))
        X[:, : units - 6] += 3.0 * labels[strong][:, None] * rng.uniform(0.5, 1.5, units - 6)
        X[:, units - 6:] += 1.0 * labels[weak][:, None]
        acts[layer] = X + i
    return acts, labels


def test_top_pcs_and_single_units_flip_with_the_activations():
    acts, labels = _activations("linear")
    m = _m(_store("complexity", "mlp", COMPLEXITY, (0.5, 0.1), acts=acts, labels=labels))
    assert m["top_pcs"].verdict == HOLDS and m["top_pcs"].value > 0.5
    assert m["single_units"].verdict == HOLDS
    assert m["single_units"].value == pytest.approx(18 / 24 - 0.5, abs=0.05)
    acts, labels = _activations("parity3")
    m = _m(_store("complexity", "mlp", COMPLEXITY, (0.5, 0.1), acts=acts, labels=labels))
    assert m["top_pcs"].verdict == FAILS and m["single_units"].verdict == FAILS
    assert "units in which linear explains more variance 0.2" in m["single_units"].reason
    # the premise: both features learned; the probe set must label both
    m = _m(_store("complexity", "mlp", COMPLEXITY, (0.5, 0.1), acc=(1.0, 0.6), acts=acts,
                  labels=labels))
    assert m["top_pcs"].verdict == UNTESTABLE and "parity3 not learned" in m["top_pcs"].reason
    m = _m(_store("complexity", "mlp", COMPLEXITY, (0.5, 0.1), acts=acts, labels={}))
    assert m["single_units"].verdict == UNTESTABLE and "no labels" in m["single_units"].reason


TINY = """
name = "lampinen2024"
description = "the study's experiments at a size that trains in seconds"
paper = "Lampinen, Chan & Hermann, TMLR 2024"

[sweep]
datasets = ["multifeature"]
tasks = ["all"]
models = ["mlp"]
seeds = [0]

[sweep.train]
steps = 40
checkpoints = 2
batch_size = 32
lr = 3e-3
eval_size = 64

[sweep.dataset.multifeature]
domain_bits = 3
n_train = 256
n_val = 64
n_probe = 64

[sweep.model.mlp]
hidden = [16]

[sweep.model.conv1d]
channels = [4]
fc_width = 16

[sweep.model.transformer]
d_model = 8
n_layers = 1
n_heads = 2
mlp_ratio = 1

[sweep.variants.complexity]
models = ["mlp", "conv1d", "transformer"]

[sweep.variants.complexity.dataset.multifeature]
features = [{ name = "linear", bits = 1 }, { name = "parity2", bits = 2 }]

[sweep.variants.order.dataset.multifeature]
features = [{ name = "later", bits = 1 }, { name = "first", bits = 1 }]

[sweep.variants.order.train]
first_head = "first"
first_steps = 20

[sweep.variants.position]
models = ["transformer"]

[sweep.variants.position.dataset.multifeature]
features = [{ name = "p0", bits = 1, position = 0 }, { name = "p1", bits = 1, position = 1 }]

[[analysis]]
kind = "variance"
name = "main"
folds = 2
"""


def test_the_experiments_train_and_reach_the_findings_table(tmp_path):
    """Order, position, the CNN and the principal-component and unit rows, on a tiny study
    trained end to end: every row reads its runs (whatever their verdict at this size)."""
    from actstore._execution import Execution
    from actstore.store import open_store
    from actstore.studies import load_study, run_study

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    study = load_study(str(path), "small")
    assert sorted({(r.variant, r.model) for r in study.sweep.runs}) == [
        ("complexity", "conv1d"), ("complexity", "mlp"), ("complexity", "transformer"),
        ("order", "mlp"), ("position", "transformer")]
    store = str(tmp_path / "tiny.zarr")
    rep = run_study(study, store, execution=Execution(workers=1))
    assert rep.failed_runs == []
    assert open_store(store).reader("multifeature-all-conv1d-complexity-s0").units(
        "conv1") == 4 * 6  # channels x input bits
    rows = {r["claim"]: r for r in rep.findings}
    assert list(rows) == [c.key for c in CLAIMS["lampinen2024"]]
    for key in ("complexity", "complexity_cnn", "complexity_transformer", "top_pcs",
                "single_units", "order", "position"):
        reason = rows[key]["reason"]
        assert "no runs" not in reason and "no variance result" not in reason, (key, reason)
        assert ("not learned" in reason) or rows[key]["value"] is not None, (key, reason)
    assert "no runs of the 'prevalence' variant" in rows["prevalence"]["reason"]


def test_a_rare_feature_is_learned_only_beyond_its_majority_rate():
    """On 5% of the inputs, always answering 0 scores 0.95: chance is the majority rate."""
    feats = [{"name": "common", "bits": 1, "prevalence": 0.5},
             {"name": "rare", "bits": 1, "prevalence": 0.05}]
    m = _m(_store("prevalence", "mlp", feats, (0.30, 0.35), acc=(1.0, 0.99)))["prevalence"]
    assert m.verdict == HOLDS and m.value == pytest.approx(-0.045)  # either sign counts
    assert "rare 0.350" in m.reason and "0.99 held-out, chance 0.95" in m.reason
    m = _m(_store("prevalence", "mlp", feats, (0.30, 0.35), acc=(1.0, 0.95)))["prevalence"]
    assert m.verdict == UNTESTABLE
    assert m.reason == "rare not learned (0.95 held-out, chance 0.95)"
    m = _m(_store("prevalence", "mlp", feats, (0.35, 0.35), acc=(1.0, 1.0)))["prevalence"]
    assert m.verdict == UNTESTABLE and "within 2 x its uncertainty" in m.reason
