"""Importance of dictionary features: closed form for a linear head vs autograd, and the
recovery of a linear head from recorded logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore import ActstoreError
from actstore.probes import gradient_x_activation, linear_importance, recover_linear_head


def _problem(seed: int, n: int = 50, k: int = 7, d: int = 5, c: int = 4):
    rng = np.random.default_rng(seed)
    Z = np.abs(rng.standard_normal((n, k)))
    D = np.abs(rng.standard_normal((k, d)))
    W = rng.standard_normal((c, d))
    b = rng.standard_normal(c)
    y = rng.integers(0, c, n)
    return Z, D, W, b, y


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), d=st.integers(1, 9))
def test_closed_form_equals_autograd_gradient_x_activation(seed, k, d):
    Z, D, W, b, y = _problem(seed, k=k, d=d)
    head = torch.nn.Linear(d, W.shape[0]).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W))
        head.bias.copy_(torch.from_numpy(b))
    auto = gradient_x_activation(head, Z, D, y, batch_size=17)
    closed = linear_importance(Z, D, W, y)
    np.testing.assert_allclose(closed["importance"], auto, rtol=1e-10, atol=1e-12)
    # per class: mean_x z_i(x) (D_i W^T)_y
    for cls in range(W.shape[0]):
        per = gradient_x_activation(head, Z, D, np.full(len(Z), cls))
        np.testing.assert_allclose(closed["per_class"][:, cls], per, rtol=1e-10, atol=1e-12)


def test_importance_is_signed_and_has_the_expected_form():
    Z = np.array([[1.0, 0.0], [3.0, 2.0]])
    D = np.array([[1.0, 0.0], [0.0, 1.0]])
    W = np.array([[2.0, -1.0], [0.0, 1.0]])  # class 0 likes unit 0, dislikes unit 1
    out = linear_importance(Z, D, W, np.array([0, 0]))
    np.testing.assert_allclose(out["effect"], [[2.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(out["importance"], [(1 * 2 + 3 * 2) / 2, (0 - 2) / 2])


def test_nonlinear_head_matches_a_finite_difference():
    # sum_x z_i(x) d logit_y(x) / d z_i = d/de sum_x logit_y(x)(z_i scaled by 1 + e) at e = 0
    Z, D, _W, _b, y = _problem(3)
    head = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(D.shape[1], 4).double())
    g = gradient_x_activation(head, Z, D, y)

    def total(Zm):
        with torch.no_grad():
            out = head(torch.from_numpy(Zm @ D))
        return out[np.arange(len(y)), y].sum().item()

    eps = 1e-6
    for i in (0, 2, 6):
        Zs = Z.copy()
        Zs[:, i] *= 1 + eps
        assert g[i] == pytest.approx((total(Zs) - total(Z)) / eps / len(y), rel=1e-4, abs=1e-8)


def test_recover_linear_head_from_logits():
    rng = np.random.default_rng(4)
    H = np.maximum(rng.standard_normal((300, 12)), 0).astype(np.float32)
    H[:, 5] = 0.0  # a dead unit
    W = rng.standard_normal((3, 12))
    b = rng.standard_normal(3)
    logits = (H.astype(np.float64) @ W.T + b).astype(np.float32)
    head = recover_linear_head(H, logits)
    assert head.is_exact() and head.residual < 1e-5
    assert head.rank == 11
    live = np.arange(12) != 5
    np.testing.assert_allclose(head.W[:, live], W[:, live], atol=1e-4)
    np.testing.assert_allclose(head.W[:, 5], 0.0, atol=1e-8)
    np.testing.assert_allclose(head.b, b, atol=1e-4)
    # logits that are not a linear function of the layer are detected
    bad = recover_linear_head(H, np.tanh(logits) ** 2)
    assert not bad.is_exact()


def test_shape_errors():
    Z, D, W, _b, y = _problem(5)
    with pytest.raises(ActstoreError, match="atoms"):
        linear_importance(Z[:, :3], D, W)
    with pytest.raises(ActstoreError, match="units"):
        linear_importance(Z, D, W[:, :2])
    with pytest.raises(ActstoreError, match="class indices"):
        linear_importance(Z, D, W, y + 10)
    with pytest.raises(ActstoreError, match="same rows"):
        recover_linear_head(np.zeros((5, 2)), np.zeros((4, 2)))
