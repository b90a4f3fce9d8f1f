"""All-pairs similarity: published values, per-pair references, invariances, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance as ssd
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore import ActstoreError
from actstore.core import LazyRep
from actstore.similarity import (
    SIMILARITIES,
    SIMILARITY_METRICS,
    bootstrap_indices,
    bootstrap_similarity,
    plan_similarity,
    similarity,
    similarity_matrix,
)
from actstore.similarity._bootstrap import bootstrap_replicates

# -- straightforward per-pair references ------------------------------------------------------


def _H(n):
    return np.eye(n) - np.ones((n, n)) / n


def ref_hsic(K, L):
    H = _H(len(K))
    return np.trace(K @ H @ L @ H) / (len(K) - 1) ** 2


def ref_hsic_unbiased(K, L):
    """Song et al. (2012), eq. (5), written out term by term."""
    n = len(K)
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    val = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    )
    return val / (n * (n - 3))


def ref_cka(K, L, debiased=False):
    h = ref_hsic_unbiased if debiased else ref_hsic
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def ref_rbf(X, t):
    D2 = ssd.squareform(ssd.pdist(X, "sqeuclidean"))
    return np.exp(-D2 / (2 * t * t * np.median(D2)))


def ref_rsa(X, Y, rdm, compare):
    metric = {"correlation": "correlation", "cosine": "cosine", "euclidean": "euclidean",
              "sqeuclidean": "sqeuclidean"}[rdm]
    a, b = ssd.pdist(X, metric), ssd.pdist(Y, metric)
    if compare == "pearson":
        return scipy.stats.pearsonr(a, b)[0]
    if compare == "spearman":
        return scipy.stats.spearmanr(a, b)[0]
    return 1 - ssd.cosine(a, b)


def ref_procrustes(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    d = max(X.shape[1], Y.shape[1])
    Xp = np.pad(Xc, ((0, 0), (0, d - X.shape[1])))
    Yp = np.pad(Yc, ((0, 0), (0, d - Y.shape[1])))
    _, scale = scipy.linalg.orthogonal_procrustes(Xp, Yp)
    return scale


#: metric -> its per-pair reference ``ref(X, Y, params)`` (every parameter given).
REFERENCES = {
    "cka": lambda X, Y, p: ref_cka(X @ X.T, Y @ Y.T, p["debiased"]),
    "rbf_cka": lambda X, Y, p: ref_cka(ref_rbf(X, p["t"]), ref_rbf(Y, p["t"]), p["debiased"]),
    "rsa": lambda X, Y, p: ref_rsa(X, Y, p["rdm"], p["compare"]),
    "procrustes": lambda X, Y, p: ref_procrustes(X, Y),
}


def reference(X, Y, metric, params):
    return REFERENCES[metric](X, Y, {**SIMILARITY_METRICS[metric].defaults(), **params})


def _values(param):
    """Values of a metric parameter that the tests run: every choice, both booleans, and the
    default and the example of a number."""
    if param.kind == "choice":
        return list(param.choices)
    if param.kind == "bool":
        return [False, True]
    return [param.default, float(param.example)]


def _cases():
    """(metric, params) for every metric of the registry and every combination of the values
    of its parameters (:func:`_values`)."""
    out = []
    for name, metric in SIMILARITY_METRICS.items():
        keys = list(metric.params)
        for combo in itertools.product(*(_values(metric.params[k]) for k in keys)):
            out.append((name, dict(zip(keys, combo, strict=True))))
    return out


CASES = _cases()

#: What each metric promises to be invariant to, given all its parameters (the table of
#: docs/similarity.md).
PROMISES = {
    "cka": lambda p: {"orthogonal", "scale", "permutation", "translation"},
    "rbf_cka": lambda p: {"orthogonal", "scale", "permutation", "translation"},
    "rsa": lambda p: (
        {"scale", "permutation"}
        | (set() if p["rdm"] == "correlation" else {"orthogonal"})
        | ({"translation"} if p["rdm"] in ("euclidean", "sqeuclidean") else set())
    ),
    "procrustes": lambda p: {"orthogonal", "scale", "permutation", "translation"},
}


def promises(case):
    metric, params = case
    return PROMISES[metric]({**SIMILARITY_METRICS[metric].defaults(), **params})


def _ids(case):
    m, p = case
    return m + "".join(f"-{k}={v}" for k, v in p.items())


def _reps(seed=0, n=23, widths=(3, 7, 30, 5)):
    """Related representations of different widths (one wider than n)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 4))
    return [base @ rng.normal(size=(4, d)) + 0.7 * rng.normal(size=(n, d)) + 2.0
            for d in widths]


# -- published values -------------------------------------------------------------------------


@pytest.fixture
def kornblith():
    """The data of the demo notebook of Kornblith et al. (2019), google-research
    representation_similarity/Demo.ipynb (``np.random.seed(1337)``), whose printed values
    (5 decimals) the tests below compare with."""
    rs = np.random.RandomState(1337)
    X = rs.randn(100, 10)
    Y = rs.randn(100, 10) + X
    return X, Y


@pytest.mark.parametrize("method", ["gram", "feature"])
def test_kornblith_linear_values(kornblith, method):
    X, Y = kornblith
    assert similarity(X, Y, "cka", method=method) == pytest.approx(0.55761, abs=5e-6)
    assert similarity(X, Y, "cka", debiased=True, method=method) == pytest.approx(
        0.51346, abs=5e-6
    )
    # the written-out definitions give the same numbers
    assert ref_cka(X @ X.T, Y @ Y.T) == pytest.approx(0.55761, abs=5e-6)
    assert ref_cka(X @ X.T, Y @ Y.T, debiased=True) == pytest.approx(0.51346, abs=5e-6)


def test_kornblith_rbf_value(kornblith):
    X, Y = kornblith
    assert similarity(X, Y, "rbf_cka", t=0.5) == pytest.approx(0.65483, abs=5e-6)
    assert ref_cka(ref_rbf(X, 0.5), ref_rbf(Y, 0.5)) == pytest.approx(0.65483, abs=5e-6)


# -- equality with per-pair references --------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_per_pair_reference(case):
    metric, params = case
    reps = _reps()
    res = similarity_matrix(reps, metric, **params)
    assert res.values.shape == (4, 4)
    assert not res.degenerate.any()
    for i in range(4):
        for j in range(4):
            want = 1.0 if i == j else reference(reps[i], reps[j], metric, params)
            assert res.values[i, j] == pytest.approx(want, abs=1e-10), (i, j)
    np.testing.assert_array_equal(res.values, res.values.T)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_blocked_paths_agree(case):
    """Tiny memory budgets force many stimulus blocks and representation blocks."""
    metric, params = case
    reps = _reps(seed=1)
    full = similarity_matrix(reps, metric, **params).values
    plan = plan_similarity([r.shape for r in reps], metric, max_memory=10_000, **params)
    assert len(plan.blocks) > 1
    if plan.method == "gram":
        assert len(plan.chunks) > 1
    small = similarity_matrix(reps, metric, max_memory=10_000, **params).values
    np.testing.assert_allclose(small, full, atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_paths_agree(debiased):
    reps = _reps(seed=2)
    g = similarity_matrix(reps, "cka", method="gram", debiased=debiased)
    f = similarity_matrix(reps, "cka", method="feature", debiased=debiased)
    assert (g.method, f.method) == ("gram", "feature")
    np.testing.assert_allclose(g.values, f.values, atol=1e-12)


def test_auto_method_follows_cost():
    assert plan_similarity([(5000, 8)] * 3, "cka").method == "feature"
    assert plan_similarity([(200, 512)] * 3, "cka").method == "gram"
    assert plan_similarity([(5000, 8)] * 3, "rsa").method == "gram"
    assert plan_similarity([(50, 8)] * 3, "procrustes").method == "feature"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_torch_cpu_agrees_with_numpy(case):
    import torch

    metric, params = case
    reps = [r.astype(np.float32) for r in _reps(seed=3)]
    a = similarity_matrix(reps, metric, **params).values
    b = similarity_matrix([torch.from_numpy(r) for r in reps], metric, **params).values
    c = similarity_matrix(reps, metric, device="torch", max_memory=10_000, **params).values
    np.testing.assert_allclose(b, a, atol=1e-10)
    np.testing.assert_allclose(c, a, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_cuda_agrees_with_numpy(case):
    metric, params = case
    reps = _reps(seed=4)
    a = similarity_matrix(reps, metric, **params).values
    b = similarity_matrix(reps, metric, device="cuda", **params).values
    np.testing.assert_allclose(b, a, atol=1e-9)


def test_rsa_matches_rsatoolbox():
    import rsatoolbox

    reps = _reps(seed=5)
    for ours, theirs in [("correlation", "correlation"), ("sqeuclidean", "euclidean")]:
        rdms = rsatoolbox.rdm.calc_rdm([rsatoolbox.data.Dataset(x) for x in reps], method=theirs)
        for cmp, tcmp in [("pearson", "corr"), ("spearman", "spearman"), ("cosine", "cosine")]:
            want = rsatoolbox.rdm.compare(rdms, rdms, method=tcmp)
            got = similarity_matrix(reps, "rsa", rdm=ours, compare=cmp).values
            np.testing.assert_allclose(got, want, atol=1e-10)


def test_lazy_reps_are_loaded_on_demand():
    reps = _reps(seed=6)
    calls = []

    def loader(i):
        def load():
            calls.append(i)
            return reps[i]
        return load

    lazy = [LazyRep(r.shape, loader(i), name=f"r{i}") for i, r in enumerate(reps)]
    res = similarity_matrix(lazy, "cka")
    np.testing.assert_allclose(res.values, similarity_matrix(reps, "cka").values, atol=1e-14)
    assert sorted(calls) == [0, 1, 2, 3]
    assert res.names == ["r0", "r1", "r2", "r3"]


# -- invariances (hypothesis) -----------------------------------------------------------------

ORTHO_INVARIANT = [c for c in CASES if "orthogonal" in promises(c)]
# Widths start at 3: two-unit patterns correlate at exactly +-1, so a correlation RDM of
# two units is all ties, ranked by round-off alone.


def _random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(8, 20), d=st.integers(3, 9),
       case=st.sampled_from(ORTHO_INVARIANT))
def test_invariant_to_orthogonal_transform(seed, n, d, case):
    metric, params = case
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d + 1))
    Q = _random_orthogonal(rng, d)
    a = similarity(X, Y, metric, **params)
    b = similarity(X @ Q, Y, metric, **params)
    assert b == pytest.approx(a, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(8, 20), d=st.integers(3, 9),
       scale=st.floats(1e-3, 1e3), case=st.sampled_from(CASES))
def test_invariant_to_isotropic_scale(seed, n, d, scale, case):
    metric, params = case
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    a = similarity(X, Y, metric, **params)
    b = similarity(scale * X, Y, metric, **params)
    assert b == pytest.approx(a, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(8, 20), d=st.integers(3, 9),
       case=st.sampled_from(CASES))
def test_invariant_to_unit_permutation(seed, n, d, case):
    metric, params = case
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 4))
    a = similarity(X, Y, metric, **params)
    b = similarity(X[:, rng.permutation(d)], Y, metric, **params)
    assert b == pytest.approx(a, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(8, 20), d=st.integers(3, 9),
       shift=st.floats(-1e2, 1e2), case=st.sampled_from(
           [c for c in CASES if "translation" in promises(c)]))
def test_invariant_to_translation(seed, n, d, shift, case):
    metric, params = case
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 4))
    a = similarity(X, Y, metric, **params)
    b = similarity(X + shift * rng.normal(size=d), Y, metric, **params)
    assert b == pytest.approx(a, abs=1e-8)


def test_correlation_rdm_is_not_rotation_invariant():
    """The invariance tests above can fail: the correlation distance centres each pattern."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(15, 4)) + 1, rng.normal(size=(15, 4))
    Q = _random_orthogonal(rng, 4)
    a, b = similarity(X, Y, "rsa"), similarity(X @ Q, Y, "rsa")
    assert abs(a - b) > 1e-3


# -- bad input and documented edge cases ------------------------------------------------------


def test_different_sample_counts_name_both():
    rng = np.random.default_rng(0)
    with pytest.raises(ActstoreError, match=r"'a'.*'b'"):
        similarity_matrix([rng.normal(size=(10, 3)), rng.normal(size=(12, 3))], names=["a", "b"])


def test_debiased_needs_four_stimuli():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 2))
    with pytest.raises(ActstoreError, match="at least 4 stimuli"):
        similarity(X, X, "cka", debiased=True)
    with pytest.raises(ActstoreError, match="at least 4 stimuli"):
        similarity(X, X, "rbf_cka", debiased=True)
    assert np.isfinite(similarity(X, X[:, ::-1], "cka"))


def test_unknown_metric_lists_the_registry():
    with pytest.raises(ActstoreError) as e:
        similarity_matrix([np.zeros((5, 2))], "cca")
    for name in SIMILARITIES:
        assert name in str(e.value)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ActstoreError, match="rdm, compare"):
        similarity_matrix([np.ones((5, 2))], "rsa", kernel="rbf")
    with pytest.raises(ActstoreError, match="choose one of correlation"):
        similarity_matrix([np.ones((5, 2))], "rsa", rdm="manhattan")


def test_non_finite_activations_are_refused():
    X = np.ones((6, 2))
    X[2, 1] = np.nan
    with pytest.raises(ActstoreError, match="'bad'.*NaN"):
        similarity_matrix([np.ones((6, 2)), X], names=["ok", "bad"])


def test_negative_debiased_cka_is_returned_as_is():
    rng = np.random.default_rng(0)
    for _ in range(100):
        X, Y = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
        v = similarity(X, Y, "cka", debiased=True)
        if v < 0:
            break
    assert v < 0
    assert v == pytest.approx(ref_cka(X @ X.T, Y @ Y.T, debiased=True), abs=1e-10)
    assert ref_hsic_unbiased(X @ X.T, Y @ Y.T) < 0


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_constant_representation_is_flagged_not_nan(case):
    metric, params = case
    reps = _reps(seed=7)
    reps[2] = np.full_like(reps[2], 3.7)
    res = similarity_matrix(reps, metric, **params)
    assert np.isfinite(res.values).all()
    assert res.degenerate.tolist() == [False, False, True, False]
    assert (res.values[2] == 0).all() and (res.values[:, 2] == 0).all()
    assert res.values[0, 0] == 1.0


# -- bootstrap --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [("cka", {}), ("rbf_cka", {"debiased": True})], ids=_ids)
def test_bootstrap_replicate_is_the_matrix_of_resampled_stimuli(case):
    metric, params = case
    reps = _reps(seed=8)
    idx = bootstrap_indices(23, 3, seed=1)
    samples = bootstrap_replicates(reps, metric, idx, **params)
    for b in range(3):
        want = similarity_matrix([r[idx[b]] for r in reps], metric, **params).values
        np.testing.assert_allclose(samples[b], want, atol=1e-12)


_COMPARE = {
    "pearson": lambda a, c: scipy.stats.pearsonr(a, c)[0],
    "spearman": lambda a, c: scipy.stats.spearmanr(a, c)[0],
    "cosine": lambda a, c: 1 - ssd.cosine(a, c),
}


@pytest.mark.parametrize("compare", ["pearson", "spearman", "cosine"])
def test_bootstrap_rsa_drops_pairs_of_copies(compare):
    reps = _reps(seed=9)
    idx = bootstrap_indices(23, 2, seed=3)
    assert len(np.unique(idx[0])) < 23  # the draw has copies
    samples = bootstrap_replicates(reps, "rsa", idx, rdm="euclidean", compare=compare)
    for b in range(2):
        keep = idx[b][:, None] != idx[b][None, :]
        iu = np.triu_indices(23, 1)
        keep = keep[iu]
        vec = [ssd.pdist(r[idx[b]])[keep] for r in reps]
        for i in range(4):
            for j in range(4):
                if i == j:
                    continue
                want = _COMPARE[compare](vec[i], vec[j])
                assert samples[b, i, j] == pytest.approx(want, abs=1e-10)


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    reps = _reps(seed=10, n=30)
    point, boot = bootstrap_similarity(reps, "cka", n_boot=40, seed=5, keep_samples=True)
    again = bootstrap_similarity(reps, "cka", n_boot=40, seed=5)[1]
    np.testing.assert_array_equal(boot.low, again.low)
    assert boot.samples is not None and boot.samples.shape == (40, 4, 4)
    assert (boot.low <= boot.high).all()
    off = ~np.eye(4, dtype=bool)
    assert (boot.std[off] > 0).all()
    # the percentile interval of a reasonable bootstrap contains the full-sample estimate
    est = point.values[off]
    assert ((boot.low[off] <= est + 0.05) & (est - 0.05 <= boot.high[off])).all()
    with pytest.raises(ActstoreError, match="confidence level"):
        bootstrap_similarity(reps, "cka", n_boot=5, ci=95)


# -- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SIMILARITY_METRICS))
def test_every_metric_has_a_reference_and_promises(name):
    """Adding a metric to the registry adds it to every test above: it needs both."""
    assert name in REFERENCES and name in PROMISES
    assert any(c[0] == name for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_symmetric_with_one_on_the_diagonal(case):
    metric, params = case
    reps = _reps(seed=3)
    res = similarity_matrix(reps, metric, **params)
    np.testing.assert_array_equal(res.values, res.values.T)
    np.testing.assert_array_equal(np.diag(res.values), np.ones(len(reps)))
    assert (np.abs(res.values) <= 1.0).all()
    assert res.params == params and res.metric == metric


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_constant_representation_is_degenerate(case):
    """No variation: its row and column are 0, its diagonal entry too (not 1)."""
    metric, params = case
    reps = [*_reps(seed=4), np.full((23, 5), 2.0)]
    res = similarity_matrix(reps, metric, **params)
    assert res.degenerate.tolist() == [False] * 4 + [True]
    assert not res.values[-1].any() and not res.values[:, -1].any()


@pytest.mark.parametrize("name", list(SIMILARITY_METRICS))
def test_registry_defaults_are_those_of_the_signature_function(name):
    import inspect

    from actstore.similarity._metrics import ENGINE_ARGS

    metric = SIMILARITY_METRICS[name]
    assert SIMILARITIES[name] is metric.signature
    sig = inspect.signature(metric.signature).parameters
    assert {k: sig[k].default for k in metric.params} == metric.defaults()
    assert [p for p in sig if p not in ("X", *ENGINE_ARGS)] == list(metric.params)
    assert metric.rdm_based == (name == "rsa")
