"""The Hermann & Lampinen (2020) experiments beyond single-task decoding: correlated features,
easy/hard binary features, multi-task networks, RSA against untrained networks and
consistency across seeds. Each claim's verdict flips when its numbers flip; the variants
that train them load at both scales, and train and measure end to end at a tiny scale."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xarray as xr
from test_findings import FakeStore, _Reader

from actstore.studies import evaluate_claims, load_study
from actstore.studies._findings import FAILS, HOLDS, UNTESTABLE
from actstore.studies.claims import CLAIMS
from actstore.training import parse_sweep

FEATS = ["shape", "texture", "color"]
LAYERS = ["pool3", "fc6", "fc7", "out"]


def _verdicts(store: FakeStore) -> dict[str, Any]:
    return {c.key: m for c, m in evaluate_claims(CLAIMS["hermann2020"], store)}


def _probes(acc: dict[str, np.ndarray], feats: list[str], layers: list[str],
            se: float = 0.01) -> xr.Dataset:
    """A probe result: ``acc[run]`` of shape (checkpoint 0/100, layer, feature)."""
    a = np.stack([acc[r] for r in acc])[None]
    dims = ("decoder", "run", "checkpoint", "layer", "feature")
    return xr.Dataset(
        {"accuracy": (dims, a), "accuracy_std": (dims, np.full(a.shape, se * np.sqrt(3))),
         "chance": (("run", "feature"), np.full((len(acc), len(feats)), 1 / len(feats)))},
        coords={"decoder": ["ridge"], "run": list(acc), "checkpoint": [0, 100],
                "layer": layers, "feature": feats},
        attrs={"actstore.config": json.dumps({"n_splits": 3})})


def _tri_run(task: str, seed: int, data: dict[str, Any] | None = None,
             heads: tuple[str, ...] | None = None, acc: float = 0.9) -> _Reader:
    heads = heads or (task,)
    return _Reader({"dataset": "trifeature", "task": task, "seed": seed, "model": "alexnet",
                    "data": data or {"variant": "heldout"},
                    "config": {"task": {"heads": [{"name": h, "n_classes": 10} for h in heads]}},
                    "metrics": {"val": {"acc": {h: [0.1, acc] for h in heads}}}},
                   [0, 100], LAYERS)


def _layer_acc(untrained: dict[str, float], trained: dict[str, float],
               out: dict[str, float] | None = None) -> np.ndarray:
    """(checkpoint, layer, feature): the same accuracy in pool3/fc6/fc7, ``out`` at the
    last checkpoint as given."""
    a = np.zeros((2, len(LAYERS), len(FEATS)))
    for j, f in enumerate(FEATS):
        a[0, :, j] = untrained[f]
        a[1, :, j] = trained[f]
        if out is not None:
            a[1, -1, j] = out[f]
    return a


UNTRAINED = {"shape": 0.2, "texture": 0.15, "color": 0.6}


# -- correlated features -----------------------------------------------------------------------

def _correlated(color_out: float, shape_out: float) -> FakeStore:
    """Shape networks with colour paired at p = 0.1 and at p = 1.0 (2 seeds each); the
    output layer of the p = 1.0 networks decodes ``color_out`` / ``shape_out``; colour is
    the feature the untrained networks decode better."""
    runs, acc = {}, {}
    for p in (0.1, 1.0):
        for s in (0, 1):
            rid = f"trifeature-shape-alexnet-corr_p{p}-s{s}"
            runs[rid] = _tri_run("shape", s, {"variant": "correlated", "p": p,
                                              "correlate": ["shape", "color"]})
            out = ({"shape": shape_out, "texture": 0.1, "color": color_out} if p == 1.0
                   else {"shape": 0.6, "texture": 0.1, "color": 0.3})
            acc[rid] = _layer_acc(UNTRAINED, {"shape": 0.6, "texture": 0.2, "color": 0.9}, out)
            acc[rid][1, -1, 2] += 0.01 * s
    return FakeStore(runs, {"probes/main": _probes(acc, FEATS, LAYERS)})


def test_redundant_preference_flips_with_the_numbers():
    m = _verdicts(_correlated(color_out=0.95, shape_out=0.2))["redundant_preference"]
    # (0.95 - 0.2) - (0.3 - 0.6): the colour preference grows by 1.05 from p=0.1 to p=1
    assert m.verdict == HOLDS and m.value == pytest.approx(1.05, abs=1e-6)
    assert "p=1: color" in m.reason and "p=0.1: color 0.30, shape 0.60 (2 runs)" in m.reason
    m = _verdicts(_correlated(color_out=0.2, shape_out=0.9))["redundant_preference"]
    assert m.verdict == FAILS and m.value == pytest.approx(-0.4, abs=1e-6)


def test_redundant_preference_needs_its_runs_and_a_preference_before_training():
    m = _verdicts(_rsa_store(SAME))
    assert m["redundant_preference"].verdict == UNTESTABLE
    assert "no runs trained with a correlated feature pair" in m["redundant_preference"].reason
    store = _correlated(0.95, 0.2)
    a = store.results["probes/main"]["accuracy"]
    a.loc[{"checkpoint": 0, "feature": "color"}] = 0.2
    m = _verdicts(store)["redundant_preference"]
    assert m.verdict == UNTESTABLE and "decode color and shape alike" in m.reason
    store = _correlated(0.95, 0.2)
    store.runs["trifeature-shape-alexnet-corr_p1.0-s1"].attrs["metrics"]["val"]["acc"][
        "shape"] = [0.1, 0.3]
    m = _verdicts(store)["redundant_preference"]
    assert m.verdict == UNTESTABLE
    assert m.reason == "the networks with p=1 did not learn their task (0.60 held-out, chance 0.10)"


# -- easy/hard binary features -----------------------------------------------------------------

def _binary(hard_at: dict[float, float], learned: float = 0.88) -> FakeStore:
    """Binary networks (hard predictivity 0.9) whose last hidden layer decodes the hard
    feature with ``hard_at[easy predictivity]``; one seed each, plus a Trifeature probe result
    (a store holds both)."""
    runs, acc = {}, {}
    layers = ["fc1", "fc2", "out"]
    for p, h in hard_at.items():
        rid = f"binary-label-mlp-easy{p}-s0"
        runs[rid] = _Reader({"dataset": "binary", "task": "label", "seed": 0, "model": "mlp",
                             "config": {"dataset": {"params": {"easy_predictivity": p,
                                                               "hard_predictivity": 0.9}},
                                        "task": {"heads": [{"name": "label", "n_classes": 2}]}},
                             "metrics": {"val": {"acc": {"label": [0.5, learned]}}}},
                            [0, 100], layers)
        a = np.full((2, len(layers), 2), 0.6)
        a[1, :, 0], a[1, :, 1] = 1.0, h
        acc[rid] = a
    tri = _correlated(0.9, 0.2)
    return FakeStore({**tri.runs, **runs},
                     {"probes/binary": _probes(acc, ["easy", "hard"], layers),
                      **tri.results})


def test_easy_suppresses_hard_flips_with_the_numbers():
    m = _verdicts(_binary({0.5: 0.98, 0.7: 0.93, 0.8: 0.85, 1.0: 0.55}))
    assert m["easy_suppresses_hard"].verdict == HOLDS
    assert m["easy_suppresses_hard"].value == pytest.approx(0.13)
    assert "0.5: 0.98, 0.7: 0.93, 0.8: 0.85, 1: 0.55" in m["easy_suppresses_hard"].reason
    # the Trifeature claims still read their own probe result
    assert m["redundant_preference"].verdict == HOLDS
    m = _verdicts(_binary({0.5: 0.80, 0.8: 0.95}))["easy_suppresses_hard"]
    assert m.verdict == FAILS and m.value == pytest.approx(-0.15)


def test_easy_suppresses_hard_untestable_with_the_measured_reason():
    m = _verdicts(_binary({0.5: 0.98, 1.0: 0.55}))["easy_suppresses_hard"]
    assert m.verdict == UNTESTABLE and "two easy predictivities below" in m.reason
    m = _verdicts(_binary({0.5: 0.98, 0.8: 0.85}, learned=0.6))["easy_suppresses_hard"]
    assert m.verdict == UNTESTABLE and m.reason.startswith("label not learned by")
    assert "(0.60 held-out, chance 0.50)" in m.reason


# -- RSA: multi-task networks, untrained networks, consistency across seeds ---------------------

def _rsa_store(sim: dict[tuple[str, str], float], multitask: bool = True) -> FakeStore:
    """Main networks of three tasks (2 seeds), a multi-task network; RSA at step 0 and 100
    in fc6 and fc7: ``sim[(kind a, kind b)]`` by the pair's kinds (``<task>``, ``all``,
    ``untrained``), 0.1 otherwise."""
    runs = {f"trifeature-{t}-alexnet-main-s{s}": _tri_run(t, s) for t in FEATS for s in (0, 1)}
    if multitask:
        runs["trifeature-all-alexnet-multitask-s0"] = _tri_run("all", 0, heads=tuple(FEATS))
    acc = {r: _layer_acc(UNTRAINED, {"shape": 0.6, "texture": 0.5, "color": 0.9}) for r in runs}
    reps = [(r, lay, c) for r in runs for lay in ("fc6", "fc7") for c in (0, 100)]
    rng = np.random.default_rng(0)

    def label(r: str, c: int) -> str:
        return "untrained" if c == 0 else str(runs[r].attrs["task"])

    S = np.array([[1.0 if (a == b) else sim.get((label(*a[::2]), label(*b[::2])),
                                                sim.get((label(*b[::2]), label(*a[::2])), 0.1))
                   if a[1] == b[1] else np.nan for b in reps] for a in reps])
    S = S + rng.normal(0, 0.005, S.shape)
    coords = {f"{k}_{side}": (f"rep_{side}", v) for side in "ab" for k, v in (
        ("run", [r for r, _, _ in reps]), ("task", [runs[r].attrs["task"] for r, _, _ in reps]),
        ("seed", [runs[r].attrs["seed"] for r, _, _ in reps]),
        ("model", ["alexnet"] * len(reps)), ("layer", [lay for _, lay, _ in reps]),
        ("checkpoint", [c for _, _, c in reps]))}
    rsa = xr.Dataset({"similarity": (("rep_a", "rep_b"), S)}, coords=coords,
                     attrs={"metric": "rsa"})
    return FakeStore(runs, {"probes/main": _probes(acc, FEATS, LAYERS),
                            "similarity/rsa": rsa})


SAME = {("shape", "shape"): 0.5, ("texture", "texture"): 0.4, ("color", "color"): 0.8,
        ("all", "color"): 0.7, ("all", "shape"): 0.3, ("all", "texture"): 0.2}


def test_multitask_easy_flips_with_the_numbers():
    m = _verdicts(_rsa_store(SAME))["multitask_easy"]
    assert m.verdict == HOLDS and m.value == pytest.approx(0.4, abs=0.02)
    assert "easiest feature untrained: color" in m.reason
    m = _verdicts(_rsa_store({**SAME, ("all", "color"): 0.2}))["multitask_easy"]
    assert m.verdict == FAILS and m.value == pytest.approx(-0.1, abs=0.02)
    m = _verdicts(_rsa_store(SAME, multitask=False))["multitask_easy"]
    assert m.verdict == UNTESTABLE and "no multi-task network" in m.reason


def test_rsa_claims_need_the_features_learned():
    """A network that did not learn its hard feature(s) tests neither claim: the reason gives
    the held-out accuracies."""
    store = _rsa_store(SAME)
    multi = store.runs["trifeature-all-alexnet-multitask-s0"]
    for f, a in (("shape", 0.07), ("texture", 0.12)):
        multi.attrs["metrics"]["val"]["acc"][f] = [0.1, a]
    m = _verdicts(store)
    assert m["multitask_easy"].verdict == UNTESTABLE and m["multitask_easy"].reason == (
        "no multi-task network learned both the easiest feature (color) and a harder one "
        "(shape 0.07, texture 0.12, color 0.90 held-out, chance 0.10)")
    assert m["consistency_easy"].verdict == HOLDS  # the single-task networks learned
    for t in ("shape", "texture"):
        for seed in (0, 1):
            store.runs[f"trifeature-{t}-alexnet-main-s{seed}"].attrs["metrics"]["val"]["acc"][
                t] = [0.1, 0.2]
    m = _verdicts(store)["consistency_easy"]
    assert m.verdict == UNTESTABLE and "learned by two: color (" in m.reason
    assert "shape: 0.20 held-out, chance 0.10" in m.reason


def test_consistency_easy_flips_with_the_numbers():
    m = _verdicts(_rsa_store(SAME))["consistency_easy"]
    # colour (easiest untrained) 0.8 between seeds, texture (hardest) 0.4
    assert m.verdict == HOLDS and m.value == pytest.approx(0.4, abs=0.02)
    assert "color 0.8" in m.reason and "texture 0.4" in m.reason
    m = _verdicts(_rsa_store({**SAME, ("color", "color"): 0.3}))["consistency_easy"]
    assert m.verdict == FAILS and m.value == pytest.approx(-0.1, abs=0.02)


def test_rsa_untrained_is_measured_with_the_untrained_networks():
    """With step 0 in the RSA result, the claim compares trained networks with untrained
    ones (of other runs) and with networks trained on other tasks (main runs only: the
    multi-task network is not 'another task')."""
    m = _verdicts(_rsa_store({**SAME, **{(t, "untrained"): 0.6 for t in FEATS}}))
    assert m["rsa_untrained"].verdict == HOLDS
    assert m["rsa_untrained"].value == pytest.approx(0.5, abs=0.02)
    m = _verdicts(_rsa_store({**SAME, **{(t, "untrained"): 0.05 for t in FEATS}}))
    assert m["rsa_untrained"].verdict == FAILS
    assert m["rsa_same_task"].verdict == HOLDS


# -- the sweep and the study ------------------------------------------------------------------

def test_a_variant_can_train_other_datasets_tasks_models_and_seeds():
    sweep = parse_sweep({
        "datasets": ["trifeature"], "tasks": ["shape", "color"], "models": ["alexnet"],
        "seeds": [0, 1], "model": {"mlp": {"hidden": [8]}},
        "variants": {"main": {}, "multi": {"tasks": ["all"], "seeds": [3]},
                     "bits": {"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                              "dataset": {"binary": {"easy_predictivity": 0.7}}}}})
    assert [r.run_id for r in sweep.runs] == [
        "trifeature-shape-alexnet-main-s0", "trifeature-shape-alexnet-main-s1",
        "trifeature-color-alexnet-main-s0", "trifeature-color-alexnet-main-s1",
        "trifeature-all-alexnet-multi-s3", "binary-label-mlp-bits-s0", "binary-label-mlp-bits-s1"]
    bits = sweep.runs[-1]
    assert bits.dataset_params == {"easy_predictivity": 0.7} and bits.model_params == {
        "hidden": [8]}
    with pytest.raises(Exception, match=r"\[variants.bad\] unknown model 'nope'"):
        parse_sweep({"datasets": ["binary"], "tasks": ["label"], "models": ["mlp"],
                     "variants": {"bad": {"models": ["nope"]}}})


def test_the_study_trains_each_experiment():
    small, paper = load_study("hermann2020", "small"), load_study("hermann2020", "paper")
    kinds = {r.variant for r in small.sweep.runs}
    assert {"main", "multitask", "corr_p1.0"} <= kinds and any(k.startswith("easy")
                                                                for k in kinds)
    assert {r.seed for r in small.sweep.runs if r.dataset == "trifeature"
            and r.variant != "main"} == {0}
    assert {r.variant for r in paper.sweep.runs if r.variant.startswith("corr")} == {
        f"corr_p{p}" for p in ("0.1", "0.3", "0.5", "0.7", "0.9", "1.0")}
    rsa = next(a for a in small.analyses if a["name"] == "rsa")
    assert rsa["checkpoints"] == "first,last"
    for r in small.sweep.runs:
        r.resolve()


def test_tiny_study_measures_every_experiment(tmp_path):
    """Every experiment trains, is analysed and gives a row with a computed verdict (a few
    training steps: the verdicts themselves are not the point here)."""
    from pathlib import Path

    from actstore.studies import run_study
    from actstore.studies._spec import _analyses, _sweep
    from actstore.training import merge_tables, read_toml

    study = load_study("hermann2020", "small")
    path = Path(study.source)
    doc = read_toml(path, "study")
    sc = merge_tables(doc["scale"]["small"], {
        "variants": ["main", "multitask", "corr_p1.0", "easy0.5", "easy0.8"],
        "sweep": {"tasks": ["shape", "color"],
                  "train": {"steps": 20, "checkpoints": 2, "warmup": 0},
                  "dataset": {"trifeature": {"image_size": 16, "renders": 1, "n_val": 50,
                                             "probe_combos": 150}},
                  "variants": {f"easy{p}": {"train": {"steps": 60, "checkpoints": 2}}
                               for p in ("0.5", "0.8")}}})
    study.sweep = _sweep(doc, sc, "hermann2020", "small", path)
    study.analyses = _analyses(doc, sc, "small", path)
    rep = run_study(study, str(tmp_path / "h.zarr"), serial=True)
    from actstore.store import open_store

    st = open_store(str(tmp_path / "h.zarr"))
    probed = st.read_result("probes", "main")["run"].values.tolist()
    assert "trifeature-all-alexnet-multitask-s0" in probed
    assert "trifeature-shape-alexnet-corr_p1.0-s0" in probed
    assert st.read_result("probes", "binary")["run"].values.tolist() == [
        f"binary-label-mlp-easy{p}-s{s}" for p in ("0.5", "0.8") for s in (0, 1)]
    rsa = st.read_result("similarity", "rsa")
    assert sorted(set(rsa["checkpoint_a"].values.tolist())) == [0, 20]
    rows = {r["claim"]: r for r in rep.findings}
    missing = ("no runs trained with", "no easy/hard binary networks", "has no multi-task",
               "holds step", "in the store")
    for key in ("redundant_preference", "easy_suppresses_hard", "multitask_easy",
                "consistency_easy", "rsa_untrained"):
        assert rows[key]["reason"] and not any(m in rows[key]["reason"] for m in missing)


def test_an_analysis_of_an_experiment_a_scale_does_not_train_is_skipped(tmp_path):
    """A study names the runs of each experiment; at a scale that trains only some, the
    analyses of the others are skipped (saying why) and the rest run on their runs."""
    from actstore.store import open_store
    from actstore.studies import run_study

    f = tmp_path / "mine.toml"
    f.write_text('''
name = "mine"
[sweep]
datasets = ["binary"]
tasks = ["label"]
models = ["mlp"]
seeds = [0]
train = { steps = 4, checkpoints = 2, eval_size = 16 }
dataset.binary = { n_train = 64, n_val = 16, n_probe = 32 }
model.mlp = { hidden = [4] }
[sweep.variants.a]
[sweep.variants.b]
dataset.binary = { easy_predictivity = 0.6 }
[[analysis]]
kind = "probe"
name = "both"
runs = "*-a-*,*-b-*"
decoders = ["ridge"]
folds = 2
[[analysis]]
kind = "probe"
name = "bonly"
runs = "*-b-*"
decoders = ["ridge"]
folds = 2
[scale.small]
variants = ["a"]
''')
    rep = run_study(load_study(str(f), "small"), str(tmp_path / "s.zarr"), serial=True)
    stages = {s["stage"]: s for s in rep.stages}
    assert stages["probe:bonly"]["skipped"] == "no run of this scale matches runs = '*-b-*'"
    assert "skipped" not in stages["probe:both"]
    names = open_store(str(tmp_path / "s.zarr")).result_names()
    assert "probes/both" in names and "probes/bonly" not in names
    assert list(open_store(str(tmp_path / "s.zarr")).read_result("probes", "both")[
        "run"].values) == ["binary-label-mlp-a-s0"]


def test_run_patterns_are_narrowed_to_the_runs_a_study_trains():
    from actstore.studies._pipeline import _narrowed

    ids = ["trifeature-shape-alexnet-main-s0", "binary-label-mlp-easy0.5-s0"]
    a = {"kind": "similarity", "name": "rsa"}
    assert _narrowed({**a, "runs": "*-main-*,*-multitask-*"}, ids)["runs"] == "*-main-*"
    assert _narrowed({**a, "runs": ["binary-*", "x-*"]}, ids)["runs"] == "binary-*"
    assert _narrowed({**a, "runs": "*-multitask-*"}, ids) is None
    assert _narrowed(a, ids) is a and _narrowed({**a, "runs": "all"}, ids)["runs"] == "all"
