"""The batched softmax objective: row segments against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from actstore.decode._softmax import SoftmaxProblems, _segments


def _problems(n, r, K, classes, seed, sort_rows, never=0, class_major=False):
    """Problems (fold, feature), fold-major or by class count then fold, on rows sorted by
    held-out fold, or shuffled."""
    rng = np.random.default_rng(seed)
    never = max(never, 1) if K == 1 else never  # one fold: an explicit split needs train rows
    test_fold = np.concatenate([np.full(never, -1), np.arange(n - never) % K])
    order = np.argsort(test_fold, kind="stable") if sort_rows else rng.permutation(n)
    test_fold = test_fold[order]
    probs = ([(k, c) for c in sorted(classes) for k in range(K)] if class_major
             else [(k, c) for k in range(K) for c in sorted(classes)])
    ncls = [c for _, c in probs]
    Y01 = np.concatenate([np.eye(c)[rng.integers(0, c, n)] for _, c in probs], axis=1)
    M = np.stack([(test_fold != k) / np.sum(test_fold != k) for k, _ in probs], axis=1)
    Z = rng.standard_normal((n, r))
    omega = rng.uniform(0.5, 2.0, r)
    scale = rng.uniform(50, 100, len(ncls))
    prob = SoftmaxProblems(Z, omega, Y01, M, ncls, scale)
    W = rng.standard_normal((r, sum(ncls)))
    b = rng.standard_normal(sum(ncls))
    return prob, (Z, omega, Y01, M, ncls, W, b)


def _direct(Z, omega, Y01, M, ncls, W, b, lam):
    """Objective, gradients and curvature sums problem by problem, with plain numpy."""
    L = Z @ W + b
    f, gW, gb, diag, PtP = [], np.zeros_like(W), np.zeros_like(b), [], []
    col = 0
    for p, c in enumerate(ncls):
        sl = slice(col, col + c)
        logp = log_softmax(L[:, sl], axis=1)
        P = np.exp(logp)
        w = M[:, p]
        f.append(-np.sum(w[:, None] * Y01[:, sl] * logp)
                 + 0.5 * lam[p] * np.sum(omega[:, None] * W[:, sl] ** 2))
        R = w[:, None] * (P - Y01[:, sl])
        gW[:, sl] = Z.T @ R + lam[p] * omega[:, None] * W[:, sl]
        gb[sl] = R.sum(axis=0)
        diag.append((w[:, None] * P).sum(axis=0))
        PtP.append((w[:, None] * P).T @ P)
        col += c
    return np.array(f), gW, gb, diag, PtP


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(12, 80),
    r=st.integers(1, 9),
    K=st.integers(1, 4),
    classes=st.lists(st.integers(2, 4), min_size=1, max_size=3),
    never=st.integers(0, 5),
    sort_rows=st.booleans(),
    class_major=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_objective_gradient_and_curvature_equal_a_direct_computation(
        n, r, K, classes, never, sort_rows, class_major, seed):
    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(n, r, K, classes, seed, sort_rows, never,
                                                     class_major)
    lam = np.asarray(prob.lam(0.3))
    f, gW, gb, curv = prob.value_grad(W, b, lam)
    rf, rgW, rgb, rdiag, rPtP = _direct(Z, omega, Y01, M, ncls, W, b, lam)
    np.testing.assert_allclose(f, rf, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gW, rgW, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb, rgb, rtol=1e-9, atol=1e-12)
    # curvature sums come padded to the largest class count: (P, cmax) and (P, cmax, cmax)
    cmax = max(ncls)
    assert curv[0].shape == (len(ncls), cmax) and curv[1].shape == (len(ncls), cmax, cmax)
    for p, c in enumerate(ncls):
        np.testing.assert_allclose(curv[0][p, :c], rdiag[p], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(curv[1][p, :c, :c], rPtP[p], rtol=1e-10, atol=1e-12)
        assert not curv[0][p, c:].any() and not curv[1][p, c:].any() and not curv[1][p, :, c:].any()


@settings(max_examples=25, deadline=None)
@given(classes=st.lists(st.integers(2, 5), min_size=2, max_size=4), K=st.integers(1, 3),
       dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 10_000))
def test_logits_far_outside_the_exponentials_range_give_the_direct_objective(classes, K, dtype,
                                                                            seed):
    # intercepts shift whole problems by up to +-800 (+-120 in float32): their exponentials
    # overflow or underflow unless shifted by the largest logit
    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(40, 4, K, classes, seed, True)
    rng = np.random.default_rng(seed)
    big = 800.0 if dtype == "float64" else 120.0
    offset = rng.choice([-big, -big / 8, 0.0, big / 8, big], size=len(ncls))
    b = b + np.repeat(offset, ncls)
    prob = SoftmaxProblems(Z.astype(dtype), omega.astype(dtype), Y01, M, ncls, prob.host[2])
    lam = np.asarray(prob.lam(0.3))
    f, gW, gb, curv = prob.value_grad(W.astype(dtype), b.astype(dtype), lam)
    rf, rgW, rgb, rdiag, _ = _direct(Z.astype(dtype).astype(float), omega.astype(dtype),
                                     Y01, M, ncls, W.astype(dtype).astype(float),
                                     b.astype(dtype).astype(float), lam.astype(float))
    assert np.isfinite(f).all() and np.isfinite(gW).all() and np.isfinite(gb).all()
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f, rf, **tol)
    np.testing.assert_allclose(gW, rgW, **tol)
    np.testing.assert_allclose(gb, rgb, **tol)
    for p, c in enumerate(ncls):
        np.testing.assert_allclose(curv[0][p, :c], rdiag[p], **tol)


@settings(max_examples=25, deadline=None)
@given(classes=st.lists(st.integers(2, 4), min_size=1, max_size=3), K=st.integers(1, 3),
       class_major=st.booleans(), backend=st.sampled_from(["numpy", "torch"]),
       seed=st.integers(0, 10_000))
def test_per_fold_penalty_corrections_give_the_direct_objective(classes, K, class_major,
                                                                backend, seed):
    # standardised decoders: fold k's problems are penalised by diag(omega) + D_k (one slice
    # of columns per fold when fold-major, gathered blocks otherwise)
    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(30, 4, K, classes, seed, True, 2,
                                                     class_major)
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(K):
        A = 0.3 * rng.standard_normal((4, 4))
        mats.append(A + A.T)
    folds = [k for k in range(K) for _ in classes] if not class_major else \
        [k for _ in sorted(classes) for k in range(K)]
    group = np.array(folds)
    xp_arrays = (lambda a: a) if backend == "numpy" else None
    if backend == "torch":
        torch = pytest.importorskip("torch")
        xp_arrays = torch.as_tensor
    sub = SoftmaxProblems(xp_arrays(Z), xp_arrays(omega), Y01, M, ncls, prob.host[2],
                          (group, [xp_arrays(D) for D in mats]))
    if K > 1 and len(classes) > 1:  # both layouts of the corrections
        assert bool(sub.pen_slices) != class_major
    lam = np.asarray(prob.lam(0.3))
    f, gW, gb, _ = sub.value_grad(xp_arrays(W), xp_arrays(b), xp_arrays(lam), sums=False)
    rf, rgW, rgb, _, _ = _direct(Z, omega, Y01, M, ncls, W, b, lam)
    col = 0
    for p, c in enumerate(ncls):  # plus the corrections, problem by problem
        sl = slice(col, col + c)
        D = mats[group[p]]
        rf[p] += 0.5 * lam[p] * np.sum(W[:, sl] * (D @ W[:, sl]))
        rgW[:, sl] += lam[p] * (D @ W[:, sl])
        col += c
    for got, want in ((f, rf), (gW, rgW), (gb, rgb)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-11)
    # subsets keep their problems' corrections
    keep = np.array([p for p in range(len(ncls)) if p % 2 == 0])
    part, cols = sub.subset(keep)
    pf, pgW, _, _ = part.value_grad(xp_arrays(W[:, cols]), xp_arrays(b[cols]),
                                    xp_arrays(lam[keep]), sums=False)
    np.testing.assert_allclose(np.asarray(pf), rf[keep], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(pgW), rgW[:, cols], rtol=1e-9, atol=1e-11)


def test_rows_sorted_by_fold_skip_each_folds_own_problems():
    prob, _ = _problems(30, 4, 3, [2, 3], seed=0, sort_rows=True, never=3)
    pieces = [(pc.a, pc.e, pc.p0, pc.p1) for pc in prob.pieces]
    # 3 never-held-out rows weigh in all 6 problems; the 9 rows of fold k skip problems
    # 2k, 2k + 1 (fold-major: two features per fold)
    assert pieces == [(0, 3, 0, 6), (3, 12, 2, 6), (12, 21, 0, 2), (12, 21, 4, 6),
                      (21, 30, 0, 4)]
    shuffled, _ = _problems(30, 4, 3, [2, 3], seed=0, sort_rows=False, never=3)
    assert [(pc.a, pc.e, pc.p0, pc.p1) for pc in shuffled.pieces] == [(0, 30, 0, 6)]


def test_segments_leave_out_rows_that_weigh_in_nothing():
    active = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=bool)  # train, then validation
    assert _segments(active) == [(0, 2, 0, 2)]
    assert _segments(np.zeros((0, 3), dtype=bool)) == []


def test_segments_of_scattered_problems_are_one_piece():
    # class-major order: the problems of fold k are every third one, so each fold's rows
    # would need a piece per problem; one piece of all rows and problems is cheaper
    fold_of_problem = np.tile(np.arange(3), 4)
    held_out_fold = np.repeat(np.arange(3), 5)
    active = fold_of_problem[None, :] != held_out_fold[:, None]
    assert _segments(active) == [(0, 15, 0, 12)]
    # two features per fold, fold-major: at most two ranges per run are kept
    fold_major = np.repeat(np.arange(3), 2)
    assert len(_segments(fold_major[None, :] != held_out_fold[:, None])) == 4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.lists(st.integers(2, 4), min_size=2, max_size=4),
       data=st.data())
def test_curvature_sums_of_a_subset_equal_the_subsets_own(seed, classes, data):
    # groups of the subset may join problems of several groups of the whole set
    prob, (*_, W, b) = _problems(40, 5, 3, classes, seed, sort_rows=True)
    keep = np.array(sorted(data.draw(st.sets(st.integers(0, prob.P - 1), min_size=1))))
    lam = np.asarray(prob.lam(0.3))
    sums = prob.value_grad(W, b, lam)[3]
    sub, cols = prob.subset(keep)
    want = sub.value_grad(W[:, cols], b[cols], lam[keep])[3]
    got = prob.subset_sums(sums, keep, sub)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_dropping_finished_problems_keeps_the_solutions():
    from actstore.decode._lbfgs import _lbfgs

    prob, (*_, W, b) = _problems(60, 6, 3, [2, 3, 4], 7, sort_rows=True)
    lam = np.asarray(prob.lam(1.0))
    W0, b0 = np.zeros_like(W), np.zeros_like(b)
    kept = _lbfgs(prob, W0, b0, lam, 1e-8, 500, compact=0.0)
    subsets = []
    take = prob.subset
    prob.subset = lambda keep: subsets.append(keep) or take(keep)  # type: ignore[method-assign]
    dropped = _lbfgs(prob, W0, b0, lam, 1e-8, 500, compact=0.9)
    assert subsets  # finished problems were dropped on the way
    assert kept[4].all() and dropped[4].all()  # converged
    np.testing.assert_allclose(dropped[0], kept[0], atol=1e-6)
    np.testing.assert_allclose(dropped[1], kept[1], atol=1e-6)
    np.testing.assert_allclose(dropped[5], kept[5], rtol=1e-10)


@settings(max_examples=10, deadline=None)
@given(classes=st.lists(st.integers(2, 5), min_size=1, max_size=3), K=st.integers(2, 3),
       seed=st.integers(0, 10_000))
def test_compiled_iterations_equal_the_array_api_iterations(classes, K, seed):
    # on numpy the softmax pass, the preconditioner and the two-loop recursion are compiled;
    # with nothing compiled (as on torch) the solver takes the same steps
    from actstore.decode import _kernels
    from actstore.decode._lbfgs import _lbfgs

    prob, (*_, W, b) = _problems(60, 5, K, classes, seed, sort_rows=True)
    lam = np.asarray(prob.lam(1.0))
    W0, b0 = np.zeros_like(W), np.zeros_like(b)
    got = _lbfgs(prob, W0, b0, lam, 1e-8, 500)
    Y01, M, scale = prob.host
    available = _kernels.available
    try:
        _kernels.available = lambda: False  # type: ignore[assignment]
        ref = SoftmaxProblems(prob.Z, prob.omega, Y01, M, prob.n_classes, scale)
        want = _lbfgs(ref, W0, b0, np.asarray(ref.lam(1.0)), 1e-8, 500)
    finally:
        _kernels.available = available  # type: ignore[assignment]
    assert got[4].all() and want[4].all()  # converged
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    np.testing.assert_allclose(got[5], want[5], rtol=1e-10)
    assert np.abs(got[2] - want[2]).max() <= 1  # iterations: the same, up to rounding ties


def _ring(pairs, like, P, memory=10):
    """Curvature pairs (oldest first) in a ring of ``memory``."""
    from actstore.decode._pairs import Pairs

    ring = Pairs.empty(like, P, memory)
    for pair in pairs:
        ring.append(*pair)
    return ring


def test_curvature_pairs_moved_to_another_penalty_equal_the_pairs_there():
    from actstore.decode._pairs import shift_pairs

    prob, (*_, W, b) = _problems(50, 4, 3, [2, 3], 3, sort_rows=True)
    rng = np.random.default_rng(1)
    W2, b2 = W + 0.1 * rng.standard_normal(W.shape), b + 0.1 * rng.standard_normal(b.shape)

    def pair(lam):
        _, gW1, gb1, _ = prob.value_grad(W, b, lam)
        _, gW2, gb2, _ = prob.value_grad(W2, b2, lam)
        sW, sb, yW, yb = W2 - W, b2 - b, gW2 - gW1, gb2 - gb1
        return sW, sb, yW, yb, 1.0 / prob.dot(sW, sb, yW, yb)

    lam_a, lam_b = np.asarray(prob.lam(0.01)), np.asarray(prob.lam(0.3))
    moved = shift_pairs(prob, _ring([pair(lam_a)], W, prob.P, 3), lam_a, lam_b)
    assert len(moved) == 1
    for got, want in zip(moved.pair(-1), pair(lam_b), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_merged_history_takes_each_problems_pairs_from_its_last_subset(backend):
    from actstore.decode._pairs import merge_pairs

    # 3 problems of 2 columns; problem 1 is dropped after 2 pairs, 0 and 2 go on to 3 pairs
    def pair(v, cols, probs):
        return (np.full((2, cols), v), np.full(cols, v), np.full((2, cols), -v),
                np.full(cols, -v), np.full(probs, 1.0 / v))

    on = np.asarray if backend == "numpy" else pytest.importorskip("torch").asarray
    # a ring of 4 that wrapped around in the subset: slots in use are not in time order
    full = _ring([tuple(map(on, pair(v, 6, 3))) for v in (1.0, 2.0)], on(np.zeros((2, 6))), 3,
                 4)
    sub = _ring([tuple(map(on, pair(v, 4, 2))) for v in (9.0, 9.0, 3.0, 4.0, 5.0)],
                on(np.zeros((2, 4))), 2, 4)
    assert sub.order != sorted(sub.order)
    out = merge_pairs([(full, np.arange(6), np.arange(3)),
                       (sub, np.array([0, 1, 4, 5]), np.array([0, 2]))], on(np.zeros((2, 6))), 3)
    assert len(out) == 4 and out.memory == 4
    got = [tuple(np.asarray(a) for a in out.pair(k)) for k in range(4)]
    # latest pair: 5 for problems 0 and 2, problem 1's own latest (2) for problem 1
    np.testing.assert_array_equal(got[-1][1], [5, 5, 2, 2, 5, 5])
    np.testing.assert_array_equal(got[-2][1], [4, 4, 1, 1, 4, 4])
    np.testing.assert_array_equal(got[-3][1], [3, 3, 0, 0, 3, 3])  # problem 1: an empty pair
    np.testing.assert_array_equal(got[-4][1], [9, 9, 0, 0, 9, 9])
    np.testing.assert_allclose(got[-1][4], [0.2, 0.5, 0.2])
    np.testing.assert_allclose(got[-3][4], [1 / 3, 0.0, 1 / 3])
    np.testing.assert_array_equal(got[-1][0][:, 2], [2, 2])
    out.append(*[on(np.asarray(a)) for a in pair(7.0, 6, 3)])  # the oldest slot is reused
    assert len(out) == 4 and np.asarray(out.pair(-1)[1])[0] == 7.0
    assert np.asarray(out.pair(0)[1])[0] == 3.0
    # a first level with fewer pairs than the subset, in a ring with room: merged, then
    # filled up, every pair keeps its own slot
    full = _ring([tuple(map(on, pair(1.0, 6, 3)))], on(np.zeros((2, 6))), 3, 5)
    sub = _ring([tuple(map(on, pair(v, 4, 2))) for v in (3.0, 4.0, 5.0)],
                on(np.zeros((2, 4))), 2, 5)
    out = merge_pairs([(full, np.arange(6), np.arange(3)),
                       (sub, np.array([0, 1, 4, 5]), np.array([0, 2]))], on(np.zeros((2, 6))), 3)
    for v in (6.0, 7.0, 8.0):
        out.append(*[on(np.asarray(a)) for a in pair(v, 6, 3)])
    assert len(out) == 5 and len(set(out.order)) == 5
    sb = [np.asarray(out.pair(k)[1]) for k in range(5)]
    np.testing.assert_array_equal(np.stack(sb)[:, [0, 2]], [[4, 0], [5, 1], [6, 6], [7, 7],
                                                            [8, 8]])


def test_misleading_carried_pairs_do_not_keep_the_problems_from_converging():
    from actstore.decode._lbfgs import _lbfgs

    prob, (*_, W, b) = _problems(60, 6, 3, [2, 3, 4], 5, sort_rows=True)
    lam = np.asarray(prob.lam(1.0))
    W0, b0 = np.zeros_like(W), np.zeros_like(b)
    fresh = _lbfgs(prob, W0, b0, lam, 1e-8, 500)
    rng = np.random.default_rng(0)
    bad = []
    for _ in range(10):  # positive curvature, meaningless directions, tiny steps
        sW, sb = 1e-6 * rng.standard_normal(W.shape), 1e-6 * rng.standard_normal(b.shape)
        yW, yb = np.abs(sW) * 1e3 * np.sign(sW), np.abs(sb) * 1e-3 * np.sign(sb)
        bad.append((sW, sb, yW, yb, 1.0 / np.asarray(prob.dot(sW, sb, yW, yb))))
    carried = _lbfgs(prob, W0, b0, lam, 1e-8, 500, hist0=_ring(bad, W0, prob.P))
    assert carried[4].all() and fresh[4].all()
    assert carried[2].max() <= fresh[2].max() + 2 * 10  # pairs flushed, or one restart
    np.testing.assert_allclose(carried[0], fresh[0], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(12, 90),
    r=st.integers(1, 7),
    K=st.integers(1, 4),
    classes=st.lists(st.integers(2, 6), min_size=1, max_size=3),
    never=st.integers(0, 5),
    class_major=st.booleans(),
    stride=st.integers(1, 4),
    dtype=st.sampled_from(["float64", "float32"]),
    seed=st.integers(0, 10_000),
)
def test_compiled_rows_equal_the_array_api_path(n, r, K, classes, never, class_major, stride,
                                               dtype, seed):
    from actstore.decode import _kernels

    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(n, r, K, classes, seed, True, never,
                                                     class_major)
    cast = np.dtype(dtype).type
    prob = SoftmaxProblems(Z.astype(dtype), omega.astype(dtype), Y01, M, ncls, prob.host[2])
    prob.curv_stride = stride  # a sample of the rows for the curvature sums, as on large n
    W, b, lam = W.astype(dtype), b.astype(dtype), np.asarray(prob.lam(0.3))
    assert _kernels.available() and lam.dtype == cast
    got = prob.value_grad(W, b, lam)
    available = _kernels.available
    try:  # the same problems set up and evaluated where nothing is compiled (torch, CuPy)
        _kernels.available = lambda: False  # type: ignore[assignment]
        ref = SoftmaxProblems(Z.astype(dtype), omega.astype(dtype), Y01, M, ncls, prob.host[2])
        ref.curv_stride = stride
        want = ref.value_grad(W, b, lam)
    finally:
        _kernels.available = available  # type: ignore[assignment]
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    for g, w in zip(got[:3], want[:3], strict=True):
        assert g.dtype == w.dtype == cast
        np.testing.assert_allclose(g, w, **tol)
    for g, w in zip(got[3], want[3], strict=True):
        np.testing.assert_allclose(g, w, **tol)


@settings(max_examples=25, deadline=None)
@given(classes=st.lists(st.integers(2, 6), min_size=1, max_size=4), K=st.integers(1, 3),
       class_major=st.booleans(), seed=st.integers(0, 10_000))
def test_preconditioner_inverts_each_problems_kronecker_curvature(classes, K, class_major, seed):
    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(50, 4, K, classes, seed, True, 0,
                                                     class_major)
    lam = np.asarray(prob.lam(0.3))
    _, gW, gb, sums = prob.value_grad(W, b, lam)
    hW, hb = prob.precondition(gW, gb, prob.curvature(sums, lam))
    *_, rdiag, rPtP = _direct(Z, omega, Y01, M, ncls, W, b, lam)
    for p, c in enumerate(ncls):
        sl = slice(prob.col0[p], prob.col0[p] + c)
        a, U = np.linalg.eigh(np.diag(rdiag[p]) - rPtP[p])
        a = np.clip(a, 0.0, None)
        for j in range(prob.r):  # (A_p + lam_p omega_j I)^-1 on every weight row
            want = U @ ((U.T @ gW[j, sl]) / (a + lam[p] * omega[j]))
            np.testing.assert_allclose(hW[j, sl], want, rtol=1e-8, atol=1e-10)
        floor = 1e-3 * a.max() + 1e-12  # the intercepts: curvature floored
        np.testing.assert_allclose(hb[sl], U @ ((U.T @ gb[sl]) / np.maximum(a, floor)),
                                   rtol=1e-8, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(classes=st.lists(st.integers(2, 6), min_size=1, max_size=4), K=st.integers(1, 3),
       n_pairs=st.integers(0, 7), memory=st.integers(1, 5),
       dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 10_000))
def test_compiled_two_loop_recursion_equals_the_array_api_path(classes, K, n_pairs, memory,
                                                                dtype, seed):
    from actstore.decode import _kernels
    from actstore.decode._pairs import direction

    prob, (Z, omega, Y01, M, ncls, W, b) = _problems(40, 5, K, classes, seed, True)
    prob = SoftmaxProblems(Z.astype(dtype), omega.astype(dtype), Y01, M, ncls, prob.host[2])
    W, b, lam = W.astype(dtype), b.astype(dtype), np.asarray(prob.lam(0.3))
    _, gW, gb, sums = prob.value_grad(W, b, lam)
    curv = prob.curvature(sums, lam)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_pairs):  # true curvature pairs of random steps (some refused: empty)
        sW = (0.1 * rng.standard_normal(W.shape)).astype(dtype)
        sb = (0.1 * rng.standard_normal(b.shape)).astype(dtype)
        if rng.random() < 0.2:
            sW, sb = 0 * sW, 0 * sb
        _, gW2, gb2, _ = prob.value_grad(W + sW, b + sb, lam)
        yW, yb = gW2 - gW, gb2 - gb
        sy = np.asarray(prob.dot(sW, sb, yW, yb))
        pairs.append((sW, sb, yW, yb, np.where(sy > 0, 1 / np.where(sy > 0, sy, 1), 0)
                      .astype(dtype)))
    ring = _ring(pairs, W, prob.P, memory)  # wraps around when n_pairs > memory
    got = direction(prob, ring, gW, gb, curv)
    available = _kernels.available
    try:
        _kernels.available = lambda: False  # type: ignore[assignment]
        want = direction(prob, ring, gW, gb, curv)
    finally:
        _kernels.available = available  # type: ignore[assignment]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == np.dtype(dtype)
        # float32: sums in a different order, relative to the largest entry
        big = float(np.abs(w).max(initial=1.0))
        tol = (dict(rtol=1e-9, atol=1e-12 * big) if dtype == "float64"
               else dict(rtol=2e-3, atol=2e-5 * big))
        np.testing.assert_allclose(g, w, **tol)
    if pairs:  # the pairs are left as they were
        for a, p in zip(ring.pair(-1), pairs[-1], strict=True):
            np.testing.assert_array_equal(a, p)


@settings(max_examples=15, deadline=None)
@given(classes=st.lists(st.integers(2, 6), min_size=1, max_size=4), seed=st.integers(0, 10_000))
def test_inverse_quadratic_form_equals_the_preconditioned_product(classes, seed):
    prob, (*_, W, b) = _problems(40, 5, 2, classes, seed, True)
    lam = np.asarray(prob.lam(0.3))
    _, gW, gb, sums = prob.value_grad(W, b, lam)
    curv = prob.curvature(sums, lam)
    hW, hb = prob.precondition(gW, gb, curv)
    np.testing.assert_allclose(prob.inverse_quad(gW, gb, curv), prob.dot(gW, gb, hW, hb),
                               rtol=1e-10)
