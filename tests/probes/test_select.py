"""Representation selection over a store, and the store-level similarity / alignment jobs."""

from __future__ import annotations

import numpy as np
import pytest

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.core import select, stimulus_subset
from actstore.similarity import SimilarityConfig, parse_selection, similarity_matrix

IN_PROCESS = Execution(workers=1)

N = 36


def _activations(rng, seed_shift):
    base = rng.normal(size=(N, 5))
    return {
        "fc1": np.maximum(base @ rng.normal(size=(5, 6)) + seed_shift, 0).astype("float32"),
        "fc2": (base @ rng.normal(size=(5, 4))).astype("float32"),
        # a conv map kept whole: (channels, height, width)
        "conv": rng.normal(size=(N, 3, 2, 2)).astype("float32"),
    }


def build_store(url, incomplete_last=True):
    from actstore.store import ProbeSet, create_store

    rng = np.random.default_rng(0)
    st = create_store(url)
    st.add_probe_set(ProbeSet(
        "ps", labels={"shape": np.arange(N) % 3, "color": (np.arange(N) // 3) % 4},
        attrs={"generator": "test"},
    ))
    data = {}
    runs = [("mlp-a-s0", "a", 0), ("mlp-a-s1", "a", 1), ("mlp-b-s0", "b", 0)]
    for run, task, seed in runs:
        with st.writer(run, probe_set="ps", steps=[0, 10, 100],
                       attrs={"model": "mlp", "task": task, "seed": seed}) as w:
            for step in (0, 10, 100):
                if incomplete_last and run == "mlp-b-s0" and step == 100:
                    continue
                acts = _activations(rng, 0.1 * step)
                w.write_slot(step, acts)
                data[(run, step)] = acts
    return st, data


@pytest.fixture
def store(tmp_path):
    return build_store(str(tmp_path / "sel.zarr"))


def test_default_is_all_layers_of_all_runs_at_the_last_checkpoint(store):
    st, data = store
    sel = select(st)
    assert [(r.run, r.checkpoint, r.layer) for r in sel.refs] == [
        (run, step, ly)
        for run, step in (("mlp-a-s0", 100), ("mlp-a-s1", 100), ("mlp-b-s0", 10))
        for ly in ("fc1", "fc2", "conv")
    ]
    assert sel.n == N and sel.stimuli is None
    ref = sel.refs[4]
    assert (ref.model, ref.task, ref.seed, ref.units) == ("mlp", "a", 1, 4)
    loaded = sel.lazy_reps()[4].load()
    np.testing.assert_array_equal(loaded, data[("mlp-a-s1", 100)]["fc2"])


def test_one_layer_across_checkpoints_of_one_seed(store):
    st, _ = store
    sel = select(st, **parse_selection("layer=fc*;checkpoint=all;seed=0;task=a"))
    assert sel.labels == [f"mlp-a-s0@{s}/{ly}" for s in (0, 10, 100) for ly in ("fc1", "fc2")]
    sel2 = select(st, runs="mlp-*-s0", layers=["fc2"], checkpoints=[0, 10])
    assert sel2.labels == ["mlp-a-s0@0/fc2", "mlp-a-s0@10/fc2", "mlp-b-s0@0/fc2",
                           "mlp-b-s0@10/fc2"]
    with pytest.raises(ActstoreError, match="step.*100"):
        select(st, runs="mlp-b-s0", checkpoints=[100])


def test_stimulus_subsets(store):
    st, data = store
    labels = st.reader("mlp-a-s0").labels
    per = stimulus_subset("per:shape,color:1", N, labels)
    combos = {(labels["shape"][i], labels["color"][i]) for i in per}
    assert len(per) == len(combos) == 12
    assert stimulus_subset("first:5", N, labels).tolist() == [0, 1, 2, 3, 4]
    r = stimulus_subset("random:7:3", N, labels)
    assert len(set(r.tolist())) == 7 and (np.diff(r) > 0).all()
    sel = select(st, layers="fc1", stimuli="per:shape:2")
    assert sel.n == 6
    np.testing.assert_array_equal(sel.lazy_reps()[0].load(),
                                  data[("mlp-a-s0", 100)]["fc1"][sel.stimuli])
    with pytest.raises(ActstoreError, match="features: shape, color"):
        stimulus_subset("per:size:2", N, labels)
    with pytest.raises(ActstoreError, match="first:N"):
        stimulus_subset("some", N, labels)


def test_selection_errors(store):
    st, _ = store
    with pytest.raises(ActstoreError, match="runs: mlp-a-s0"):
        select(st, layers="nope")
    with pytest.raises(ActstoreError, match="unknown selection key 'lr'"):
        parse_selection("lr=3")
    with pytest.raises(ActstoreError, match="key=value"):
        parse_selection("fc6")


def test_runs_on_different_samples_are_named(tmp_path):
    from actstore.store import ProbeSet

    st, _ = build_store(str(tmp_path / "two.zarr"))
    st.add_probe_set(ProbeSet("other", labels={"shape": np.arange(N) % 3},
                              sample=np.arange(N)[::-1].copy()))
    with st.writer("rev", probe_set="other", steps=[0], attrs={"model": "mlp", "seed": 5}) as w:
        w.write_slot(0, {"fc1": np.ones((N, 6), dtype="float32")})
    with pytest.raises(ActstoreError, match="'mlp-a-s0' and 'rev'"):
        select(st, layers="fc1")


# -- store-level jobs -------------------------------------------------------------------------


def test_similarity_job_writes_a_result_with_coordinates(store, tmp_path):
    from actstore.report import write_heatmap
    from actstore.similarity import similarity_job

    st, data = store
    png = tmp_path / "cka.png"
    ds = similarity_job(st, {"layers": "fc*"}, "lin", config=SimilarityConfig("cka", bootstrap=5),
                        execution=IN_PROCESS)
    write_heatmap(ds, str(png))
    sim = ds["similarity"]
    assert sim.dims == ("rep_a", "rep_b") and sim.shape == (6, 6)
    assert list(ds["layer_a"].values) == ["fc1", "fc2"] * 3
    assert list(ds["seed_b"].values) == [0, 0, 1, 1, 0, 0]
    assert list(ds["checkpoint_a"].values) == [100, 100, 100, 100, 10, 10]
    reps = [data[(r, s)][ly] for r, s in (("mlp-a-s0", 100), ("mlp-a-s1", 100),
                                          ("mlp-b-s0", 10)) for ly in ("fc1", "fc2")]
    np.testing.assert_allclose(sim.values, similarity_matrix(reps, "cka").values, atol=1e-12)
    assert (ds["ci_low"].values <= ds["ci_high"].values + 1e-12).all()
    back = st.read_result("similarity", "lin")
    np.testing.assert_allclose(back["similarity"].values, sim.values)
    assert back.attrs["metric"] == "cka" and back.attrs["n_boot"] == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_similarity_job_refuses_bad_metric_before_writing(store):
    st, _ = store
    with pytest.raises(ActstoreError, match="choose one of"):
        SimilarityConfig("svcca")
    with pytest.raises(ActstoreError, match="parameters are: debiased"):
        SimilarityConfig("cka", params={"sigma": 2})
    assert st.result_names() == []


def test_similarity_job_on_a_dask_cluster_matches_in_process(store):
    from actstore.similarity import similarity_job

    st, _ = store
    config = SimilarityConfig("rsa", {"compare": "spearman"})
    a = similarity_job(st, {"layers": "fc*"}, config=config, write=False, execution=IN_PROCESS)
    small = SimilarityConfig("rsa", {"compare": "spearman"}, max_memory=40_000)
    b = similarity_job(st, {"layers": "fc*"}, config=small, write=False,
                       execution=Execution(workers=2))
    np.testing.assert_allclose(b["similarity"].values, a["similarity"].values, atol=1e-12)


def test_alignment_job_over_positions_and_pairs(store):
    from actstore.alignment import align_pair, alignment_job, summary_rows

    st, data = store
    out = alignment_job(st, ["mlp-a-s0", "mlp-a-s1", "mlp-b-s0"], layers="conv,fc1",
                        checkpoint="first", execution=IN_PROCESS, name="seeds")
    assert set(out) == {"conv", "fc1"}
    conv = out["conv"]
    assert conv.attrs["positions"] is True
    assert conv.attrs["n_samples"] == N * 4  # stimuli x positions
    assert conv.sizes["pair"] == 3 and conv.sizes["unit"] == 3
    # the first pair equals an in-memory alignment of the reshaped maps
    a = data[("mlp-a-s0", 0)]["conv"].transpose(0, 2, 3, 1).reshape(-1, 3)
    b = data[("mlp-a-s1", 0)]["conv"].transpose(0, 2, 3, 1).reshape(-1, 3)
    ref = align_pair(a, b, groups=np.repeat(np.arange(N), 4))
    np.testing.assert_allclose(conv["corr"].values[0], ref.corr.between, atol=1e-6)
    np.testing.assert_array_equal(conv["bipartite_index"].values[0], ref.bipartite[0])
    np.testing.assert_allclose(conv["lasso_test_loss"].values[0], ref.lasso.test_loss,
                               atol=1e-6)
    np.testing.assert_allclose(conv["mi"].values[0], ref.mi, atol=1e-12)
    fc1 = st.read_result("alignment", "seeds.fc1")
    assert list(fc1["run_a"].values) == ["mlp-a-s0", "mlp-a-s0", "mlp-a-s1"]
    rows = summary_rows(out)
    assert len(rows) == 6 and {"bipartite_corr_mean", "loss@0.01"} <= set(rows[0])


def test_alignment_job_errors(store):
    from actstore.alignment import AlignConfig, alignment_job

    st, _ = store
    with pytest.raises(ActstoreError, match="at least two runs"):
        alignment_job(st, ["mlp-a-s0"], execution=IN_PROCESS)
    with pytest.raises(ActstoreError, match="reduce flatten"):
        alignment_job(st, ["mlp-a-s0", "mlp-a-s1"], layers="fc1",
                      config=AlignConfig(positions="yes"), execution=IN_PROCESS)
    with pytest.raises(ActstoreError, match="one checkpoint"):
        alignment_job(st, ["mlp-a-s0", "mlp-a-s1"], checkpoint="first,last",
                      execution=IN_PROCESS)


def test_checkpoints_first_and_last_as_everywhere(store):
    st, _ = store
    sel = select(st, runs="mlp-a-s0", layers="fc1", checkpoints="first,last")
    assert [r.checkpoint for r in sel.refs] == [0, 100]
    assert select(st, runs="mlp-a-s0", layers="fc1").refs[0].checkpoint == 100
    with pytest.raises(ActstoreError, match="cannot read the checkpoint selection 'x'"):
        select(st, checkpoints="x")
