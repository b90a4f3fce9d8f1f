"""``actstore similarity``: metric parameters checked by type, repeated --select as a union."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stores import error_line
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.cli import app
from actstore.core import select, select_many
from actstore.similarity import (
    METRIC_PARAMS,
    SIMILARITIES,
    cka_signature,
    parse_selection,
    parse_selections,
    similarity_job,
    similarity_matrix,
)
from actstore.similarity._metrics import check_params
from actstore.store import open_store

runner = CliRunner()
N = 60


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Runs ``mlp_a`` (fc1, fc2) and ``cnn_c`` (conv1, conv2, fc) at steps 0 and 5."""
    from actstore.store import ProbeSet, create_store

    url = str(tmp_path_factory.mktemp("params") / "s.zarr")
    rng = np.random.default_rng(0)
    st = create_store(url)
    st.add_probe_set(ProbeSet("ps", labels={"shape": np.arange(N) % 3}))
    layers = {"mlp_a": {"fc1": 8, "fc2": 3}, "cnn_c": {"conv1": 6, "conv2": 5, "fc": 4}}
    for seed, (run, widths) in enumerate(layers.items()):
        with st.writer(run, probe_set="ps", steps=[0, 5],
                       attrs={"model": run[:3], "task": "shape", "seed": seed}) as w:
            for step in (0, 5):
                w.write_slot(step, {ly: rng.normal(size=(N, d)).astype("float32")
                                    for ly, d in widths.items()})
    return url


def _run(store, *args):
    return runner.invoke(app, ["similarity", store, "--scheduler", "sync", "--png", "none",
                               *args])


def _config(store, name):
    return json.loads(open_store(store).result_attrs("similarity", name)["actstore.config"])


# -- 1. booleans ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["False", "false", "FALSE", "no", "off", "0", "Off"])
def test_false_in_any_spelling_computes_plain_cka(store, text):
    res = _run(store, "-P", f"debiased={text}", "--name", "deb-false", "--json", "--overwrite")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["params"] == {"debiased": False}
    plain = json.loads(_run(store, "--name", "plain", "--json", "--overwrite").stdout)
    np.testing.assert_allclose(out["similarity"], plain["similarity"])
    assert _config(store, "deb-false")["params"] == {"debiased": False}
    assert json.loads(open_store(store).result_attrs("similarity", "deb-false")["params"]) \
        == {"debiased": False}


@pytest.mark.parametrize("text", ["True", "true", "yes", "ON", "1"])
def test_true_in_any_spelling_computes_debiased_cka(store, text):
    res = _run(store, "-P", f"debiased={text}", "--name", "deb-true", "--json", "--overwrite")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["params"] == {"debiased": True}
    plain = json.loads(_run(store, "--name", "plain", "--json", "--overwrite").stdout)
    assert not np.allclose(out["similarity"], plain["similarity"])


def test_spellings_of_one_setting_are_one_setting(store):
    assert _run(store, "-P", "debiased=False", "--name", "same").exit_code == 0
    # the same setting spelled otherwise re-uses the result; the other setting is refused
    assert _run(store, "-P", "debiased=false", "--name", "same").exit_code == 0
    assert _run(store, "-P", "debiased=no", "--name", "same").exit_code == 0
    assert _run(store, "--name", "same").exit_code == 0  # the default is False
    line = error_line(_run(store, "-P", "debiased=yes", "--name", "same"))
    assert "other settings" in line


@pytest.mark.parametrize("text", ["maybe", "2", "", "ja", "nan"])
def test_other_boolean_values_are_refused(store, text):
    line = error_line(_run(store, "-P", f"debiased={text}", "--name", "bad"))
    assert f"debiased must be true or false (also yes/no, on/off, 1/0), got {text!r}" in line
    assert "give e.g. debiased=true" in line
    assert not open_store(store).has_result("similarity", "bad")


def test_python_api_converts_and_checks_booleans():
    rng = np.random.default_rng(1)
    reps = [rng.normal(size=(30, 4)) for _ in range(3)]
    plain = similarity_matrix(reps, "cka")
    as_text = similarity_matrix(reps, "cka", debiased="False")
    np.testing.assert_allclose(as_text.values, plain.values)
    assert as_text.params == {"debiased": False}
    assert similarity_matrix(reps, "cka", debiased=np.bool_(True)).params == {"debiased": True}
    with pytest.raises(ActstoreError, match="debiased must be true or false.*got 'maybe'"):
        similarity_matrix(reps, "cka", debiased="maybe")
    with pytest.raises(ActstoreError, match="got 2"):
        similarity_matrix(reps, "cka", debiased=2)


# -- 2. numbers, choices, names ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "0", "-1", "nan", "NaN", "inf", "Infinity", "true", ""])
def test_bad_bandwidths_are_one_line(store, text):
    line = error_line(_run(store, "-m", "rbf_cka", "-P", f"t={text}", "--name", "bad"))
    assert f"t must be a positive number, got {text!r}" in line
    assert "rbf_cka" in line and "give e.g. t=0.5" in line


@pytest.mark.parametrize("text,value", [("0.5", 0.5), (".5", 0.5), ("2", 2.0), ("1e-1", 0.1)])
def test_numeric_bandwidths_are_stored_as_numbers(store, text, value):
    res = _run(store, "-m", "rbf_cka", "-P", f"t={text}", "--name", "rbf", "--json",
               "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["params"] == {"t": value}
    assert _config(store, "rbf")["params"] == {"t": value, "debiased": False}


@pytest.mark.parametrize("args,message", [
    (["-m", "rsa", "-P", "rdm=manhattan"],
     "rdm must be one of correlation, cosine, euclidean, sqeuclidean, got 'manhattan'"),
    (["-m", "rsa", "-P", "compare=1"], "compare must be one of pearson, spearman, cosine, got '1'"),
    (["-m", "cka", "-P", "t=2"], "metric 'cka' has no parameter 't'; its parameters are: debiased"),
    (["-m", "rbf_cka", "-P", "sigma=2"], "its parameters are: t, debiased"),
    (["-m", "rsa", "-P", "debiased=true"], "its parameters are: rdm, compare"),
    (["-m", "procrustes", "-P", "debiased=true"], "its parameters are: (none)"),
    (["-P", "debiased=true", "-P", "debiased=false"],
     "--param debiased is given twice ('debiased=true' and 'debiased=false'); give it once"),
    (["-P", "debiased"], "--param 'debiased' must look like key=value"),
])
def test_bad_parameters_are_one_line(store, args, message):
    line = error_line(_run(store, *args, "--name", "bad"))
    assert message in line


def test_choices_are_read_in_any_case(store):
    res = _run(store, "-m", "rsa", "-P", "rdm=Euclidean", "-P", "compare=SPEARMAN", "--name",
               "rsa-case", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["params"] == {"rdm": "euclidean", "compare": "spearman"}


def test_python_api_checks_numbers():
    rng = np.random.default_rng(2)
    reps = [rng.normal(size=(30, 4)) for _ in range(2)]
    for bad in ("abc", 0, -1.0, float("nan"), float("inf"), True, None, [1]):
        with pytest.raises(ActstoreError, match="t must be a positive number"):
            similarity_matrix(reps, "rbf_cka", t=bad)
    assert similarity_matrix(reps, "rbf_cka", t="0.5").params == {"t": 0.5}
    assert check_params("rbf_cka", {"t": np.float32(2), "debiased": "on"}) == \
        {"t": 2.0, "debiased": True}
    with pytest.raises(ActstoreError, match="params must be a dict"):
        check_params("cka", ["debiased=true"])


def test_every_metric_declares_the_parameters_of_its_factory():
    import inspect

    assert set(METRIC_PARAMS) == set(SIMILARITIES)
    for name, fn in SIMILARITIES.items():
        kw = [p for p in inspect.signature(fn).parameters if p not in ("X", "idx", "chunks")]
        assert list(METRIC_PARAMS[name]) == kw, name
    assert "debiased" in inspect.signature(cka_signature).parameters


# -- 3. repeated --select ---------------------------------------------------------------------

UNION = ["mlp_a@0/fc1", "mlp_a@0/fc2", "mlp_a@5/fc1", "mlp_a@5/fc2",
         "cnn_c@5/conv1", "cnn_c@5/conv2"]


def test_repeated_selects_are_a_union(store):
    res = _run(store, "-s", "checkpoint=all;run=mlp_a", "-s", "run=cnn_c;layer=conv*",
               "--name", "union", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["labels"] == UNION
    reps = _config(store, "union")["representations"]
    assert reps == [{"checkpoints": "all", "runs": "mlp_a"},
                    {"layers": "conv*", "runs": "cnn_c"}]


def test_union_keeps_order_and_drops_duplicates(store):
    res = _run(store, "-s", "run=cnn_c;layer=conv*", "-s", "layer=fc*",
               "-s", "run=cnn_c;layer=conv1", "--name", "order", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["labels"] == [
        "cnn_c@5/conv1", "cnn_c@5/conv2", "cnn_c@5/fc", "mlp_a@5/fc1", "mlp_a@5/fc2"]


def test_the_same_select_list_reuses_the_result_and_another_is_refused(store):
    args = ["-s", "checkpoint=all;run=mlp_a", "-s", "run=cnn_c;layer=conv*", "--name", "re"]
    assert _run(store, *args).exit_code == 0
    assert _run(store, *args).exit_code == 0
    for other in (["-s", "run=cnn_c;layer=conv*", "-s", "checkpoint=all;run=mlp_a"],
                  ["-s", "checkpoint=all;run=mlp_a"],
                  ["-s", "checkpoint=all;run=mlp_a", "-s", "run=cnn_c;layer=conv1"]):
        line = error_line(_run(store, *other, "--name", "re"))
        assert "other settings" in line
    # one selection is recorded as before (a dict), and repeating it changes nothing
    assert _run(store, "-s", "layer=fc*", "--name", "one").exit_code == 0
    assert _config(store, "one")["representations"] == {"layers": "fc*"}
    assert _run(store, "-s", "layer=fc*", "-s", "layer=fc*", "--name", "one").exit_code == 0


def test_a_selection_that_matches_nothing_is_named(store):
    line = error_line(_run(store, "-s", "run=mlp_a", "-s", "run=nosuch", "--name", "bad"))
    assert "selection 2 of 2: " in line and "no run matches 'nosuch'" in line


def test_a_key_repeated_within_one_select_is_refused(store):
    line = error_line(_run(store, "-s", "run=mlp_a;run=cnn_c", "--name", "bad"))
    assert "selection key run is given twice in one selection" in line
    assert "run=a,b" in line and "another --select" in line


def test_stimuli_apply_to_the_whole_union(store):
    res = _run(store, "-s", "run=mlp_a", "-s", "run=cnn_c;layer=fc", "--stimuli", "first:20",
               "--name", "stim", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_stimuli"] == 20
    line = error_line(_run(store, "-s", "run=mlp_a;stimuli=first:10",
                           "-s", "run=cnn_c;stimuli=first:20", "--name", "bad"))
    assert "asks for stimuli 'first:10'" in line and "'first:20'" in line
    line = error_line(_run(store, "-s", "run=mlp_a;stimuli=first:10", "--stimuli", "first:20",
                           "--name", "bad"))
    assert "--stimuli 'first:20' and stimuli=first:10" in line


def test_python_api_of_unions(store):
    st = open_store(store)
    sels = parse_selections(["checkpoint=all;run=mlp_a", "run=cnn_c;layer=conv*"])
    assert sels == [{"where": {}, "checkpoints": "all", "runs": "mlp_a"},
                    {"where": {}, "runs": "cnn_c", "layers": "conv*"}]
    assert parse_selections(None) == [{"where": {}}]
    assert select_many(st, sels).labels == UNION
    sel = select_many(st, sels, stimuli="first:7")
    assert sel.n == 7 and sel.labels == UNION
    # a single selection is what select() gives, and parse_selection of several strings is
    # still one selection
    one = select_many(st, [parse_selection("layer=fc*")])
    assert one.labels == select(st, layers="fc*").labels
    assert parse_selection(["run=mlp_a", "checkpoint=all"]) == \
        {"where": {}, "runs": "mlp_a", "checkpoints": "all"}
    with pytest.raises(ActstoreError, match="given twice"):
        parse_selection(["run=mlp_a", "runs=cnn_c"])
    with pytest.raises(ActstoreError, match="list of dicts"):
        select_many(st, {"runs": "mlp_a"})
    with pytest.raises(ActstoreError, match="no selection"):
        select_many(st, [])
    ds = similarity_job(store, [{"runs": "mlp_a", "checkpoints": "all"},
                                {"runs": "cnn_c", "layers": "conv*"}],
                        write=False, execution=Execution(workers=1))
    assert list(ds["label_a"].values) == UNION


# -- the settings of the analysis -------------------------------------------------------------


def test_similarity_config_records_every_parameter_and_reads_study_options():
    from actstore.similarity import SimilarityConfig

    config = SimilarityConfig("rsa", {"compare": "SPEARMAN"})
    assert config.params == {"compare": "spearman"}
    assert config.to_json() == {"metric": "rsa", "bootstrap": 0,
                                "params": {"rdm": "correlation", "compare": "spearman"}}
    assert SimilarityConfig(bootstrap=3, seed=2).to_json()["seed"] == 2
    read = SimilarityConfig.from_options({"metric": "rsa", "params": {"compare": "spearman"},
                                          "runs": "mlp_a", "bootstrap": "0"})
    assert read == config
    with pytest.raises(ActstoreError, match="unknown option 'folds' of the similarity"):
        SimilarityConfig.from_options({"folds": 3})
    with pytest.raises(ActstoreError, match="at least 2 replicates|>= 2 replicates"):
        SimilarityConfig(bootstrap=1)
    with pytest.raises(ActstoreError, match="bootstrap seed must be an integer >= 0"):
        SimilarityConfig(seed=-1)


def test_align_config_records_its_settings_and_reads_study_options():
    from actstore.alignment import LASSO_ALPHAS, AlignConfig

    config = AlignConfig.from_options({"lasso": False, "n_clusters": 3, "stimuli": "first:5"})
    assert config == AlignConfig(lasso=False, n_clusters=3)
    assert config.to_json()["alphas"] is None
    assert AlignConfig().to_json()["alphas"] == list(LASSO_ALPHAS)
    with pytest.raises(ActstoreError, match="unknown option 'metric' of the align"):
        AlignConfig.from_options({"metric": "cka"})
    with pytest.raises(ActstoreError, match="positions must be auto, yes or no"):
        AlignConfig(positions="maybe")
    with pytest.raises(ActstoreError, match="LASSO penalties must be finite numbers >= 0"):
        AlignConfig(alphas=(-1.0,))


def test_one_checkpoint_syntax_with_the_analysis_default():
    from actstore.core import parse_checkpoints

    assert parse_checkpoints(None, default="last") == ["last"]
    assert parse_checkpoints(None) is None
    assert parse_checkpoints("first,last") == ["first", "last"]
    assert parse_checkpoints([0, "1000", 0]) == [0, 1000]
    assert parse_checkpoints(5) == [5]
    assert parse_checkpoints("all,last") is None
    for bad in ("abc", "", " , ", "first;last"):
        with pytest.raises(ActstoreError, match="cannot read the checkpoint selection"):
            parse_checkpoints(bad)
