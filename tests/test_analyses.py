"""The analysis registry: every analysis runs from a study's options on a small synthetic
store and writes the result its entry names, and each entry's figures and report section
exist."""

from __future__ import annotations

import pytest

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.analyses import ANALYSES, analysis, by_group
from actstore.store import open_store
from actstore.testing import write_synthetic_store

#: small options of each analysis (a study file's [[analysis]] keys)
OPTIONS = {
    "probe": {"decoders": ["ridge"], "folds": 2, "layers": "layer0", "checkpoints": "last"},
    "variance": {"folds": 2, "layers": ["layer0"]},
    "similarity": {"metric": "cka", "layers": "all"},
    "align": {"layers": "layer0", "lasso": False, "mutual_info": False},
    "complexity": {"k": 3, "layer": "layer1", "folds": 2, "max_epochs": 10, "runs": "all",
                   "importance": False, "checkpoints": False},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("analyses") / "s.zarr")
    write_synthetic_store(url, steps=(0, 100), widths=(8, 12), n=120,
                          features={"shape": 3, "color": 3})
    return url


def test_every_analysis_has_options_for_this_test():
    assert set(OPTIONS) == set(ANALYSES)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_plan_run_read(store, name):
    a = ANALYSES[name]
    assert analysis(name) is a and by_group(a.group) is a
    config, options = a.configure(OPTIONS[name])  # plan: the study's options checked
    if config is not None:
        assert isinstance(config, a.config)
        assert isinstance(config.to_json(), dict)
    a.run(store, "t", config, options, Execution(workers=1))
    written = [r for r in open_store(store).result_names()
               if r.split("/", 1)[0] == a.group and r.split("/", 1)[1].startswith("t")]
    assert written, open_store(store).result_names()
    group, rname = written[0].split("/", 1)
    ds = open_store(store).read_result(group, rname)
    assert ds.data_vars
    assert all(callable(fn) for _, fn in a.plots())
    assert a.plots() and a.section() is not None


@pytest.mark.parametrize("name", list(ANALYSES))
def test_unknown_options_are_refused_with_the_valid_keys(name):
    with pytest.raises(ActstoreError, match=f"unknown key foldz for analysis {name}; valid "
                                            f"keys: {', '.join(ANALYSES[name].options)}"):
        ANALYSES[name].configure({"foldz": 3})


def test_an_unknown_analysis_lists_the_names():
    with pytest.raises(ActstoreError, match="unknown analysis 'nope'; choose one of probe, "):
        analysis("nope")
    assert by_group("nmf") is None


def test_results_groups_are_distinct():
    groups = [a.group for a in ANALYSES.values()]
    assert len(set(groups)) == len(groups)


def test_the_report_has_a_section_and_figures_for_every_group_and_no_other():
    from actstore.report import PLOTS, SECTIONS

    groups = [a.group for a in ANALYSES.values()]
    assert list(SECTIONS) == groups  # the page shows them in the registry's order
    assert set(PLOTS) == set(groups)
