"""Signed importance of dictionary features for a network's decision (Fel et al. 2024).

A layer's activations are reconstructed from dictionary features, ``h ~ z D``; the importance
of feature ``i`` is the gradient x activation of a class logit with respect to ``z_i``,
averaged over inputs. For a linear head ``logits = h W^T + b`` the gradient is constant,
``d logit_y / d z_i = (D_i W^T)_y``, so the importance has a closed form:

* for class ``y``: ``mean_x z_i(x) (D_i W^T)_y`` (:func:`linear_importance`, ``per_class``);
* for each input's own class ``y(x)``: ``mean_x z_i(x) (D_i W^T)_{y(x)}`` (``importance``).

:func:`gradient_x_activation` computes the same with torch autograd through any
differentiable head (the reference for the closed form, and the route for non-linear heads).
A store records logits but no weights; :func:`recover_linear_head` recovers ``W, b`` from a
layer and the logits recorded on the same stimuli by least squares, and reports how exactly
the logits are a linear function of the layer (they are, to float32 precision, when the layer
feeds a linear read-out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = [
    "LinearHead",
    "gradient_x_activation",
    "linear_importance",
    "recover_linear_head",
]


def _check(codes: np.ndarray, dictionary: np.ndarray, W: np.ndarray) -> None:
    if codes.ndim != 2 or dictionary.ndim != 2 or W.ndim != 2:
        raise ActstoreError("codes, dictionary and head weights must be 2-D arrays")
    if codes.shape[1] != dictionary.shape[0]:
        raise ActstoreError(
            f"codes have {codes.shape[1]} atoms but the dictionary {dictionary.shape[0]}"
        )
    if dictionary.shape[1] != W.shape[1]:
        raise ActstoreError(
            f"the dictionary has {dictionary.shape[1]} units but the head reads {W.shape[1]}"
        )


def _check_labels(labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ActstoreError(f"labels must have shape ({n},), got {y.shape}")
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise ActstoreError(f"labels must be class indices in 0 .. {n_classes - 1}")
    return y.astype(np.int64)


def linear_importance(
    codes: np.ndarray,
    dictionary: np.ndarray,
    W: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Closed-form gradient x activation of dictionary features for a linear head.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, k)
        ``z``, non-negative feature values.
    dictionary : ndarray of shape (k, n_units)
        ``D``; the layer is reconstructed as ``z D``.
    W : ndarray of shape (n_classes, n_units)
        Head weights (``logits = h W^T + b``).
    labels : ndarray of shape (n_samples,), int, optional
        Class index of each input (its own class's logit is used for ``importance``).

    Returns
    -------
    dict
        ``effect`` (k, n_classes): ``D W^T``, the change of each logit per unit of a feature;
        ``per_class`` (k, n_classes): ``mean_x z_i(x) effect[i, y]``;
        ``importance`` (k,) with ``labels``: ``mean_x z_i(x) effect[i, y(x)]``.
    """
    Z = np.asarray(codes, dtype=np.float64)
    D = np.asarray(dictionary, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    _check(Z, D, W)
    effect = D @ W.T  # (k, c)
    out = {"effect": effect, "per_class": Z.mean(axis=0)[:, None] * effect}
    if labels is not None:
        y = _check_labels(labels, Z.shape[0], W.shape[0])
        out["importance"] = (Z * effect[:, y].T).mean(axis=0)
    return out


def gradient_x_activation(
    head: Callable[[Any], Any],
    codes: np.ndarray,
    dictionary: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 1024,
) -> np.ndarray:
    """Gradient x activation of each input's class logit w.r.t. the feature values (autograd).

    Parameters
    ----------
    head : callable
        Torch function from the layer ``h`` (batch, n_units) to logits (batch, n_classes),
        e.g. a ``torch.nn.Linear`` or a small non-linear read-out. A module's first
        parameter sets the dtype and the device (CPU or GPU) the computation runs on.
    codes : ndarray of shape (n_samples, k)
    dictionary : ndarray of shape (k, n_units)
    labels : ndarray of shape (n_samples,), int
        The logit differentiated for each input.
    batch_size : int

    Returns
    -------
    ndarray of shape (k,), float64
        ``mean_x z_i(x) * d logit_{y(x)} / d z_i`` evaluated at ``h = z D``.
    """
    import torch

    Z = np.asarray(codes, dtype=np.float64)
    dictionary = np.asarray(dictionary, dtype=np.float64)
    if Z.shape[1] != dictionary.shape[0]:
        raise ActstoreError(
            f"codes have {Z.shape[1]} atoms but the dictionary {dictionary.shape[0]}"
        )
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (Z.shape[0],):
        raise ActstoreError(f"labels must have shape ({Z.shape[0]},), got {y.shape}")
    # the head's first parameter tells its dtype and device (a head on a GPU runs there)
    first = next(iter(getattr(head, "parameters", lambda: [])()), None)
    dtype = torch.float64 if first is None else first.dtype
    dev = torch.device("cpu") if first is None else first.device
    D = torch.as_tensor(dictionary, device=dev)
    total = torch.zeros(Z.shape[1], dtype=torch.float64, device=dev)
    for a in range(0, Z.shape[0], batch_size):
        z = torch.tensor(Z[a : a + batch_size], device=dev, requires_grad=True)
        h = (z @ D).to(dtype)  # (B, n_units)
        logits = head(h)  # (B, n_classes)
        yb = torch.as_tensor(y[a : a + batch_size], device=dev)
        picked = logits.gather(1, yb[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, z)  # (B, k)
        total += (grad * z).detach().sum(dim=0)
    return (total / Z.shape[0]).cpu().numpy()  # one device-to-host copy at the end


@dataclass
class LinearHead:
    """A linear read-out ``logits = h W^T + b`` recovered from recorded activations.

    Attributes
    ----------
    W : ndarray of shape (n_classes, n_units)
    b : ndarray of shape (n_classes,)
    residual : float
        ``||logits - h W^T - b||_F / ||logits - mean||_F`` on the fitting data: ~1e-6 for a
        genuine linear read-out of float32 activations, large when the logits are not a
        linear function of the layer.
    rank : int
        Rank of the centred activations (units that never vary get zero weight).
    """

    W: np.ndarray
    b: np.ndarray
    residual: float
    rank: int

    def __repr__(self) -> str:
        n_classes, n_units = self.W.shape
        return (f"LinearHead(n_classes={n_classes}, n_units={n_units}, "
                f"residual={self.residual:.3g}, rank={self.rank})")

    def is_exact(self, tol: float = 1e-3) -> bool:
        """True when the logits are a linear function of the layer to ``tol``."""
        return bool(self.residual <= tol)


def recover_linear_head(H: np.ndarray, logits: np.ndarray, rcond: float = 1e-7) -> LinearHead:
    """Least-squares ``W, b`` with ``logits ~ H W^T + b`` (minimum-norm when rank-deficient).

    Parameters
    ----------
    H : ndarray of shape (n_samples, n_units)
        The layer that feeds the head.
    logits : ndarray of shape (n_samples, n_classes)
        The head's outputs on the same samples.
    rcond : float
        Relative cut-off of small singular values of the centred ``H`` (units whose variance
        is at float32 round-off level, e.g. dead ReLUs, get zero weight).

    Returns
    -------
    LinearHead
        ``W`` (n_classes, n_units) and ``b`` (n_classes,), float64; the relative ``residual``
        of the fit and the ``rank`` of the centred ``H``.
    """
    H = np.asarray(H, dtype=np.float64)
    L = np.asarray(logits, dtype=np.float64)
    if H.ndim != 2 or L.ndim != 2 or H.shape[0] != L.shape[0]:
        raise ActstoreError(
            f"the layer {H.shape} and the logits {L.shape} must be 2-D with the same rows"
        )
    mh, ml = H.mean(axis=0), L.mean(axis=0)
    Hc, Lc = H - mh, L - ml
    coef, _, rank, _ = np.linalg.lstsq(Hc, Lc, rcond=rcond)  # (n_units, n_classes)
    W = coef.T
    b = ml - mh @ coef
    denom = float(np.linalg.norm(Lc))
    resid = float(np.linalg.norm(Lc - Hc @ coef)) / denom if denom > 0 else 0.0
    return LinearHead(W=W, b=b, residual=resid, rank=int(rank))
