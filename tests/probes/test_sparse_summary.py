"""The local-vs-distributed summary of sparse prediction (Li et al. 2016) and its place in the
report: one-to-one r^2 against scipy's assignment, a local code (a permutation of units) told
apart from a distributed one (a rotation), layers in network order on the page."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from actstore.alignment import align_pair, matched_r2, sparse_summary
from actstore.alignment._dataset import alignment_dataset

ALPHAS = (0.0, 1e-3, 1e-2, 1e-1)


def _result(A: np.ndarray, B: np.ndarray, layer: str = "conv1"):
    res = align_pair(A, B, mutual_info=False, alphas=ALPHAS)
    d = A.shape[1]
    clusters = {"n_clusters": 1, "mixed": 0, "units_in_mixed": 0.0}
    return alignment_dataset(layer, ["a", "b"], [1, 1], [d, B.shape[1]], [(0, 1)], [res],
                             np.zeros(d + B.shape[1], int), clusters, n_samples=len(A),
                             positions=False, alphas=ALPHAS)


def _nets(rng: np.random.Generator, n: int = 800, d: int = 10) -> np.ndarray:
    return np.maximum(rng.normal(size=(n, d)) + 0.3, 0)


def test_one_to_one_r2_matches_scipy_assignment():
    rng = np.random.default_rng(0)
    A = _nets(rng)
    B = A @ rng.normal(size=(10, 10)) * 0.3 + A[:, rng.permutation(10)] \
        + 0.5 * rng.normal(size=A.shape)
    ds = _result(A, B)
    C = np.corrcoef(A.T, B.T)[:10, 10:]
    rows, cols = linear_sum_assignment(-C)
    want = np.empty(10)
    want[cols] = C[rows, cols] ** 2
    np.testing.assert_allclose(matched_r2(ds, 0), want, atol=1e-8)
    s = sparse_summary(ds)
    assert s["one_to_one"] == pytest.approx(want.mean(), abs=1e-8)
    np.testing.assert_allclose(
        s["r2"], 1 - np.asarray(ds["lasso_test_loss"].values[0]).mean(axis=1), atol=1e-12)


def test_a_local_code_is_told_apart_from_a_distributed_one():
    rng = np.random.default_rng(1)
    A = _nets(rng)
    local = _result(A, A[:, rng.permutation(10)] + 0.05 * rng.normal(size=A.shape))
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    spread = _result(A, A @ Q + 0.05 * rng.normal(size=A.shape))
    s_loc, s_dis = sparse_summary(local), sparse_summary(spread)
    # a permutation: one unit predicts each unit as well as all of them do
    assert s_loc["one_to_one"] > 0.95 and s_loc["one_to_one"] > s_loc["r2"].max() - 0.05
    assert s_loc["local"][-1] > 0.9  # at the largest penalty, one weight per unit
    # a rotation: the best single unit explains far less than a group of units
    assert s_dis["r2"].max() > 0.9 and s_dis["one_to_one"] < s_dis["r2"].max() - 0.3
    assert s_dis["local"][0] == 0.0 and s_dis["nonzero"][0] > 5


def test_constant_units_are_left_out():
    rng = np.random.default_rng(2)
    A = _nets(rng)
    B = A[:, ::-1].copy()
    B[:, 3] = 0.0  # a dead unit of the second net
    ds = _result(A, B)
    assert np.isnan(matched_r2(ds, 0)[3]) and np.isfinite(np.delete(matched_r2(ds, 0), 3)).all()
    assert sparse_summary(ds)["one_to_one"] == pytest.approx(1.0, abs=1e-6)


def test_the_report_shows_the_summary_in_network_order(tmp_path):
    from actstore.report._lasso import lasso_html

    rng = np.random.default_rng(3)
    A = _nets(rng, n=300, d=6)
    group = {ly: _result(A, A[:, ::-1] + 0.1 * rng.normal(size=A.shape), ly)
             for ly in ("conv1", "pool3", "fc6", "out")}
    drawn = []

    def fig(label, fn, data, **kw):
        drawn.append(fn(data, str(tmp_path / f"{label}.png"), **kw))
        return drawn[-1]

    page = lasso_html(group, fig)
    assert [page.index(f"<td>{ly}</td>") for ly in group] == sorted(
        page.index(f"<td>{ly}</td>") for ly in group)
    assert "alpha 0.01" in page and len(drawn) == 1 and (tmp_path / "lasso.png").stat().st_size
    assert lasso_html({ly: ds.drop_vars(["lasso_test_loss"]) for ly, ds in group.items()},
                      fig) == ""
