"""Working memory of the all-pairs engine: short stimulus blocks, memory of its own, none kept."""

from __future__ import annotations

import gc
import mmap
import types
import weakref

import numpy as np
import pytest

from actstore.core._backend import get_namespace
from actstore.similarity import _signatures, plan_similarity, similarity_matrix
from actstore.similarity._plan import STRIP_ROWS


def _linear_cka(X, Y):
    """Kornblith et al. (2019), feature-space formula, one pair."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def _mapping_of(a):
    """The mmap object under an array made by ``fresh_empty`` (None for ordinary memory)."""
    b = a
    while isinstance(b, np.ndarray):
        b = b.base
    return b.obj if isinstance(b, memoryview) else None


def test_fresh_empty_maps_large_arrays_and_releases_them():
    xp = get_namespace(np.zeros(1))
    a = _signatures.fresh_empty((600, 1000), xp, None)
    assert a.shape == (600, 1000) and a.dtype == np.float64 and a.flags.writeable
    a[...] = np.arange(600.0)[:, None]
    assert a[599, 999] == 599.0
    m = _mapping_of(a)
    assert isinstance(m, mmap.mmap)
    ref = weakref.ref(m)
    del a, m
    gc.collect()
    assert ref() is None  # the mapping goes with the last array that views it
    small = _signatures.fresh_empty((500, 1000), xp, None)  # 4 MB: numpy's own memory
    assert small.shape == (500, 1000) and _mapping_of(small) is None


def test_stimulus_blocks_are_short_unless_the_budget_is_tighter():
    shapes = [(2000, 64)] * 10
    plan = plan_similarity(shapes, "cka", method="gram")
    r0, r1 = plan.chunks[0]
    assert (r0, r1 - r0) == (0, STRIP_ROWS)
    # contiguous blocks that cover every stimulus; none larger than the first in area
    assert [c[0] for c in plan.chunks[1:]] == [c[1] for c in plan.chunks[:-1]]
    assert plan.chunks[-1][1] == 2000
    assert all((b - a) * (2000 - a) <= STRIP_ROWS * 2000 for a, b in plan.chunks)
    tight = plan_similarity(shapes, "cka", method="gram", max_memory=4 * 2**20)
    assert tight.chunks[0][1] < STRIP_ROWS


@pytest.mark.parametrize("debiased", [False, True])
def test_engine_maps_its_memory_and_keeps_none(monkeypatch, debiased):
    made = []

    def recording_mmap(*args, **kwargs):
        m = mmap.mmap(*args, **kwargs)
        made.append(weakref.ref(m))
        return m

    fake = types.SimpleNamespace(**{k: getattr(mmap, k) for k in dir(mmap) if k.isupper()})
    fake.mmap = recording_mmap
    monkeypatch.setattr(_signatures, "mmap", fake)
    rng = np.random.default_rng(0)
    n = 1200  # several stimulus blocks at the default budget
    latent = rng.standard_normal((n, 4))
    reps = [np.maximum(latent @ rng.standard_normal((4, d)) + rng.standard_normal((n, d)), 0)
            for d in (460, 600, 40)]
    assert len(plan_similarity([r.shape for r in reps], "cka", method="gram").chunks) > 1
    got = similarity_matrix(reps, "cka", method="gram", debiased=debiased).values
    gc.collect()
    assert made and all(r() is None for r in made)
    if not debiased:
        for i in range(3):
            for j in range(3):
                assert got[i, j] == pytest.approx(_linear_cka(reps[i], reps[j]), abs=1e-13)
    else:
        feature = similarity_matrix(reps, "cka", method="feature", debiased=True).values
        np.testing.assert_allclose(got, feature, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fresh_copy_is_independent_and_keeps_the_dtype(dtype):
    X = np.random.default_rng(1).standard_normal((800, 700)).astype(dtype)
    xp = get_namespace(X)
    Z = _signatures.fresh_copy(X, xp)
    assert Z.dtype == dtype and Z.shape == X.shape
    np.testing.assert_array_equal(Z, X)
    assert (_mapping_of(Z) is not None) == (dtype == np.float64)
    before = X.copy()
    Z -= 1.0
    assert not np.shares_memory(Z, X)
    np.testing.assert_array_equal(X, before)


def test_row_sqnorms_match_the_sum_of_squares():
    import torch

    Z = np.random.default_rng(2).standard_normal((50, 7))
    want = (Z * Z).sum(axis=1)
    np.testing.assert_allclose(_signatures.row_sqnorms(Z, get_namespace(Z)), want, rtol=1e-14)
    T = torch.from_numpy(Z)
    np.testing.assert_allclose(_signatures.row_sqnorms(T, get_namespace(T)).numpy(), want,
                               rtol=1e-14)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_blockwise_centring_check_agrees(offset):
    rng = np.random.default_rng(3)
    xp = get_namespace(np.zeros(1))
    varied = offset + rng.standard_normal((300, 900))
    constant = np.full((300, 900), offset + 2.5)
    for X, want in ((varied, False), (constant, True)):
        Xc, flag = _signatures._centre(X, xp)
        assert flag is want and Xc is not None
        assert _signatures._centre(X, xp, keep=False) == (None, want)


def test_fresh_empty_falls_back_to_numpy_memory(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    fake = types.SimpleNamespace(**{k: getattr(mmap, k) for k in dir(mmap) if k.isupper()})
    fake.mmap = refuse
    monkeypatch.setattr(_signatures, "mmap", fake)
    a = _signatures.fresh_empty((600, 1000), get_namespace(np.zeros(1)), None)
    assert a.shape == (600, 1000) and a.dtype == np.float64 and _mapping_of(a) is None


def test_decoders_run_without_huge_page_advice_and_restore_it(monkeypatch):
    """The decode engine turns numpy's huge-page advice off while it works (first touches of
    advised memory are slow where the kernel compacts memory on faults) and leaves the
    process's setting as it found it, also when nested or after an error."""
    from numpy._core.multiarray import _set_madvise_hugepage

    from actstore.core._pages import plain_pages

    seen = []

    @plain_pages
    def work(fail=False):
        current = _set_madvise_hugepage(False)  # returns the setting in force
        seen.append(current)
        if fail:
            raise RuntimeError("boom")
        return plain_pages(lambda: _set_madvise_hugepage(False))()

    before = _set_madvise_hugepage(True)
    try:
        assert work() is False  # nested use: still off inside
        assert seen == [False]
        assert _set_madvise_hugepage(True) is True  # restored
        with pytest.raises(RuntimeError):
            work(fail=True)
        assert _set_madvise_hugepage(True) is True
        # inside a decode job the advice is off
        from actstore.decode import _decode

        real = _decode.choose_form

        def spy(*args, **kwargs):
            seen.append(_set_madvise_hugepage(False))
            return real(*args, **kwargs)

        monkeypatch.setattr(_decode, "choose_form", spy)
        rng = np.random.default_rng(0)
        _decode.probe_arrays(rng.standard_normal((60, 5)), {"f": rng.integers(0, 2, 60)},
                             decoders=("ridge",))
        assert seen[-1] is False
        assert _set_madvise_hugepage(True) is True
    finally:
        _set_madvise_hugepage(before)
