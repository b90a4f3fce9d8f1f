"""The public Python API as a notebook user calls it: arguments of the wrong kind are one
ActstoreError naming the argument, and the main objects have short, informative reprs."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
import actstore.probes as ap
from actstore import ActstoreError
from actstore.store import canonical_name, resolve_layers, weights_hash


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("api") / "s.zarr")
    ap.write_synthetic_store(url, n_runs=2, steps=(0, 10), widths=(8, 12), n=60)
    return url


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(60, 8))


# -- xarray views ----------------------------------------------------------------------------
def test_open_layer_takes_one_run_as_a_str(store_url):
    da = actstore.open_layer(store_url, "layer0", runs="run1")
    assert da.sizes["run"] == 1 and da.run.values.tolist() == ["run1"]


def test_open_layer_takes_runs_as_an_array(store_url):
    da = actstore.open_layer(store_url, "layer0", runs=np.array(["run1", "run0"]))
    assert da.run.values.tolist() == ["run1", "run0"]


@pytest.mark.parametrize("runs, words", [
    ([], "empty"),
    (["run0", "run0"], "more than once"),
    ([0], "list of str"),
])
def test_open_layer_refuses_bad_runs(store_url, runs, words):
    with pytest.raises(ActstoreError, match=words):
        actstore.open_layer(store_url, "layer0", runs=runs)


def test_open_layer_refuses_a_layer_that_is_no_str(store_url):
    with pytest.raises(ActstoreError, match="layer must be a str"):
        actstore.open_layer(store_url, ["layer0"])


# -- RunReader ---------------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["last", 1.5, None])
def test_read_refuses_a_step_that_is_no_whole_number(store_url, step):
    rd = actstore.open_store(store_url).reader("run0")
    with pytest.raises(ActstoreError, match="whole number"):
        rd.read("layer0", step)


def test_read_takes_numpy_steps(store_url):
    rd = actstore.open_store(store_url).reader("run0")
    assert rd.read("layer0", np.int64(10)).shape == (60, 8)


def test_read_refuses_a_layer_that_is_no_str(store_url):
    rd = actstore.open_store(store_url).reader("run0")
    with pytest.raises(ActstoreError, match="has no layer"):
        rd.read(["layer0"], 10)


@pytest.mark.parametrize("block", [0, -1, "8"])
def test_iter_blocks_refuses_bad_block_sizes(store_url, block):
    rd = actstore.open_store(store_url).reader("run0")
    with pytest.raises(ActstoreError, match="block"):
        list(rd.iter_blocks("layer0", 10, block=block))


def test_reprs_are_short_and_name_the_contents(store_url):
    st = actstore.open_store(store_url)
    assert repr(st) == f"Store({store_url!r}, mode='r', runs=2)"
    r = repr(st.reader("run0"))
    assert r.startswith("RunReader('run0'") and "layers=2" in r and "slots=2" in r
    ps = actstore.ProbeSet("p", {"a": np.arange(5000) % 3}, inputs=np.zeros((5000, 3, 8, 8)))
    assert repr(ps) == "ProbeSet('p', n=5000, features=['a'], inputs=float64[5000, 3, 8, 8])"
    plan = ap.plan_probes(st)
    assert repr(plan).startswith("ProbePlan(8 jobs:") and len(repr(plan)) < 300
    sel = ap.select(st, layers="layer0")
    assert repr(sel).endswith("2 representations of 2 runs x 1 layers, 60 stimuli)")


# -- writing -----------------------------------------------------------------------------------
def test_writer_refuses_bad_arguments_before_writing(tmp_path):
    st = actstore.create_store(str(tmp_path / "w.zarr"))
    with pytest.raises(ActstoreError, match="run id must be a str"):
        st.writer(5, "p", [0])
    with pytest.raises(ActstoreError, match="steps must be a list"):
        st.writer("r", "p", 5)
    with pytest.raises(ActstoreError, match="steps must be a list"):
        st.writer("r", "p", "0,1")
    with pytest.raises(ActstoreError, match="attrs must be a dict"):
        st.writer("r", "p", [0], attrs=["seed"])
    w = st.writer("r", "p", np.array([0, 5]))
    assert w.steps == [0, 5] and repr(w).endswith("steps=[0, 5], closed)")
    assert st.run_ids() == []


def test_add_probe_set_and_write_result_check_their_argument(tmp_path):
    import xarray as xr

    st = actstore.create_store(str(tmp_path / "w.zarr"))
    with pytest.raises(ActstoreError, match="takes a ProbeSet"):
        st.add_probe_set({"name": "p"})
    with pytest.raises(ActstoreError, match="to_dataset"):
        st.write_result("a", "b", xr.DataArray([1.0], dims="x"))
    assert st.probe_set_names() == [] and st.result_names() == []


@pytest.mark.parametrize("kwargs, words", [
    ({"name": 5, "labels": {"a": [0, 1]}}, "name must be a str"),
    ({"name": "p", "labels": [[0, 1]]}, "labels must be a dict"),
    ({"name": "p", "labels": np.arange(3)}, "labels must be a dict"),
    ({"name": "p", "labels": {3: [0, 1]}}, "feature names must be str"),
    ({"name": "p", "labels": {"a": [0, 1]}, "attrs": [1]}, "attrs must be a dict"),
    ({"name": "p", "labels": {"a": [0, 1]}, "attrs": {"f": object()}}, "JSON"),
])
def test_probe_set_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ActstoreError, match=words):
        actstore.ProbeSet(**kwargs)


def test_probe_set_attrs_with_numpy_values_are_stored(tmp_path):
    st = actstore.create_store(str(tmp_path / "w.zarr"))
    st.add_probe_set(actstore.ProbeSet("p", {"a": [0, 1, 2]},
                                       attrs={"seed": np.int64(3), "w": np.arange(2)}))
    assert st.probe_set("p").attrs == {"seed": 3, "w": [0, 1]}


def test_probe_set_subset_checks_the_index():
    ps = actstore.ProbeSet("p", {"a": [0, 1, 2]})
    assert ps.subset(np.array([True, False, True])).n == 2
    with pytest.raises(ActstoreError, match="positions"):
        ps.subset([5])
    with pytest.raises(ActstoreError, match="boolean index"):
        ps.subset(np.array([True, False]))


def test_capture_helpers_check_the_model_and_layers():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    assert resolve_layers(model, ("0",)) == [("m0", "0")]
    with pytest.raises(ActstoreError, match="torch.nn.Module"):
        resolve_layers("model")
    with pytest.raises(ActstoreError, match="torch.nn.Module"):
        weights_hash(None)
    with pytest.raises(ActstoreError, match="layers must be a list of str"):
        resolve_layers(model, 3)
    with pytest.raises(ActstoreError, match="must be a str"):
        canonical_name(3)


# -- probes ------------------------------------------------------------------------------------
def test_probe_arrays_takes_lists_and_one_decoder_name(X):
    y = np.arange(60) % 3
    ds = ap.probe_arrays(X.tolist(), {"y": y}, decoders="ridge", n_splits=3)
    assert ds.decoder.values.tolist() == ["ridge"]
    assert ds["accuracy"].sel(decoder="ridge", feature="y").item() >= 0


@pytest.mark.parametrize("labels, kwargs, words", [
    ("array", {}, "labels must be a dict"),
    ("list", {}, "labels must be a dict"),
    ("dict", {"foo": 1}, "no option 'foo'"),
    ("dict", {"n_splits": "3"}, "n_splits"),
    ("dict", {"config": {"decoders": ["ridge"]}}, "config must be a ProbeConfig"),
    ("dict", {"folds": 3}, "folds must be a Folds"),
])
def test_probe_arrays_refuses_bad_arguments(X, labels, kwargs, words):
    y = np.arange(60) % 3
    lab = {"array": y, "list": [y], "dict": {"y": y}}[labels]
    with pytest.raises(ActstoreError, match=words):
        ap.probe_arrays(X, lab, **kwargs)


def test_similarity_functions_take_lists_and_check_names(X):
    assert ap.similarity(X.tolist(), X.tolist()) == pytest.approx(1.0)
    with pytest.raises(ActstoreError, match="names must be a list of 2"):
        ap.similarity_matrix([X, X], names=["a"])
    with pytest.raises(ActstoreError, match="one array of shape"):
        ap.similarity_matrix(X)


def test_fold_and_target_helpers_check_their_arguments(X):
    with pytest.raises(ActstoreError, match="n \\(number of samples\\)"):
        ap.stratified_folds(60.0, 3)
    with pytest.raises(ActstoreError, match="folds must be a Folds"):
        ap.vinfo_of_codes(X, np.abs(X[:, :2]), 3)
    with pytest.raises(ActstoreError, match="labels must be a dict"):
        ap.encode_targets([np.arange(60) % 3])


def test_selection_arguments_are_checked(store_url):
    st = actstore.open_store(store_url)
    with pytest.raises(ActstoreError, match="where must be a dict"):
        ap.select(st, where=["seed=0"])
    with pytest.raises(ActstoreError, match="selection must be a list of str"):
        ap.parse_selection(5)
    with pytest.raises(ActstoreError, match="unknown selection keyword 'bogus'"):
        ap.similarity_job(store_url, {"bogus": 1}, write=False)
    with pytest.raises(ActstoreError, match="parse_selection"):
        ap.similarity_job(store_url, ["layer=layer0"], write=False)
    with pytest.raises(ActstoreError, match="at least two runs"):
        ap.alignment_job(store_url, "run0", write=False)


def test_plan_probes_takes_a_path_and_summary_table_checks_its_input(store_url):
    plan = ap.plan_probes(store_url, layers="layer0")
    assert len(plan.jobs) == 4
    with pytest.raises(ActstoreError, match="summary_table takes a probe result"):
        ap.summary_table({"accuracy": 1})
    with pytest.raises(ActstoreError, match="config must be a ProbeConfig"):
        ap.run_probes(store_url, config={"decoders": ["ridge"]})


@pytest.mark.parametrize("labels, kinds, words", [
    ({"a": np.array([1, 2, 1])}, {"b": "continuous"}, "'b' that are not among the labels"),
    ({"a": np.array(["x", "y", "x"])}, {"a": "continuous"}, "need numbers"),
    ({"a": np.array([1, 2, 1])}, ["a"], "kinds must be a dict"),
    ({"a": np.array([1, 2, 1])}, {"a": "ordinal"}, "one of categorical, continuous"),
])
def test_encode_targets_refuses_bad_kinds(labels, kinds, words):
    from actstore.probes import encode_targets

    with pytest.raises(ActstoreError, match=words):
        encode_targets(labels, kinds)


def test_encode_targets_follows_kinds():
    from actstore.probes import encode_targets

    t = encode_targets({"a": np.array([1.0, 2.0, 1.0]), "b": np.array([0.5, 0.5, 2.0])},
                       {"a": "categorical"})
    assert [s.kind for s in t.features] == ["categorical", "continuous"]
    assert t.Y.shape == (3, 3)


# -- the public names --------------------------------------------------------------------------
PACKAGES = ("actstore", "actstore.store", "actstore.core", "actstore.decode",
            "actstore.similarity", "actstore.alignment", "actstore.features", "actstore.report",
            "actstore.training", "actstore.studies", "actstore.analyses", "actstore.testing",
            "actstore.probes")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists_once(package):
    import importlib

    mod = importlib.import_module(package)
    assert len(set(mod.__all__)) == len(mod.__all__), package  # one home per name
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []


def test_the_studies_and_the_registry_are_public():
    from actstore.analyses import ANALYSES
    from actstore.studies import builtin_studies, load_study

    study = load_study(builtin_studies()[0])
    assert all(a["kind"] in ANALYSES for a in study.analyses)
