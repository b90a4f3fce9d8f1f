"""Held-out scores of many decoders at once: accuracy, balanced accuracy, R^2, V-information.

Predictions arrive fold by fold, in blocks of held-out rows, for every penalty and every target
column at once (``Yhat`` of shape (rows, n_penalties, n_columns)). :class:`HeldOutScores`
accumulates additive parts (correct counts, per-class hits, squared errors, target sums) on the
host in float64, and :meth:`HeldOutScores.finalize` turns them into per-fold scores:

* accuracy: argmax over a categorical feature's class columns, compared with the label;
* balanced accuracy: mean recall over the classes present in the held-out rows
  (scikit-learn's ``balanced_accuracy_score``);
* R^2: ``1 - SSE / SST`` around the held-out mean (scikit-learn's ``r2_score``), pooled over a
  feature's columns (``multioutput="variance_weighted"``) for categorical features;
* V-information, linear-Gaussian family (PAPERS.md C): ``max(0, R^2)`` of the standardised
  target; for categorical features the pooled one-hot R^2. Per fold this is
  ``max(0, R^2_k)``; the value reported for a decoder (:func:`select_penalty`) is
  ``max(0, mean over folds of R^2)`` at the chosen penalty -- the clip is applied to the
  held-out R^2 aggregate, not fold by fold (clipping each fold first would inflate it);
* V-information, multinomial-logistic family (probabilistic decoders): held-out
  ``H(Y) - CE`` in bits, clipped at 0, where ``H(Y)`` is the cross-entropy of the training-fold
  class frequencies on the held-out labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.core._backend import get_namespace, to_numpy
from actstore.core._folds import Folds
from actstore.core._targets import Targets

__all__ = [
    "METRICS",
    "HeldOutScores",
    "accuracy",
    "balanced_accuracy",
    "r2",
    "select_nested",
    "select_penalty",
    "vinfo_gaussian",
]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal labels."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, pooled over columns (variance-weighted).

    NaN when the targets do not vary.
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    sse = np.sum((y_true - y_pred) ** 2)
    sst = np.sum((y_true - y_true.mean(axis=0)) ** 2)
    return float(1.0 - sse / sst) if sst > 0 else float("nan")


def vinfo_gaussian(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """V-information of a standardised target under the linear-Gaussian family: max(0, R^2)."""
    return max(0.0, r2(y_true, y_pred))


#: Reference implementations on (y_true, y_pred); the engine computes the same quantities from
#: accumulated parts in :class:`HeldOutScores`.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "r2": r2,
    "vinfo": vinfo_gaussian,
}


class HeldOutScores:
    """Accumulate held-out scores of ``n_penalties`` x all features, fold by fold.

    Parameters
    ----------
    targets : Targets
    folds : Folds
    n_penalties : int
    """

    def __init__(self, targets: Targets, folds: Folds, n_penalties: int) -> None:
        self.targets = targets
        self.folds = folds
        K, P, F = folds.n_splits, n_penalties, len(targets.features)
        q = targets.Y.shape[1]
        self.n_test = np.zeros(K)
        self.correct = np.zeros((K, P, F))
        self.sse = np.zeros((K, P, q))
        self.ce = np.zeros((K, P, F))
        self.sum_y = np.zeros((K, q))
        self.sumsq_y = np.zeros((K, q))
        self.class_hits = [np.zeros((K, P, f.n_classes)) for f in targets.features]
        self.class_count = [np.zeros((K, f.n_classes)) for f in targets.features]
        self._onehot: dict[int, np.ndarray] = {}
        self._has_proba = False

    def update(self, k: int, rows: np.ndarray, Yhat: Any, log_proba: bool = False) -> None:
        """Add the predictions of fold ``k`` for held-out ``rows``.

        Parameters
        ----------
        k : int
            Fold index.
        rows : ndarray of shape (m,), int
            Sample indices (host numpy) of the predictions.
        Yhat : array of shape (m, n_penalties, n_columns)
            Decision values (any backend); with ``log_proba=True`` these are per-feature
            log-probabilities (each categorical block sums to one after ``exp``).
        log_proba : bool
            Also accumulate the held-out cross-entropy (probabilistic decoders).
        """
        xp = get_namespace(Yhat)
        Y = self.targets.Y[rows]  # (m, q) host
        Yd = _like(Y, Yhat)
        self.n_test[k] += rows.size
        self.sum_y[k] += Y.sum(axis=0)
        self.sumsq_y[k] += (Y**2).sum(axis=0)
        if not log_proba:
            # Squared error of decision values (only meaningful for the ridge decoders).
            diff = Yhat - Yd[:, None, :]
            self.sse[k] += to_numpy(xp.sum(diff * diff, axis=0))  # sync point: (P, q)
        else:
            self._has_proba = True
        for j, f in enumerate(self.targets.features):
            if f.kind != "categorical":
                continue
            block = Yhat[:, :, f.start : f.stop]  # (m, P, C)
            pred = xp.argmax(block, axis=2)  # (m, P)
            codes = self.targets.codes[rows, j]
            onehot = (codes[:, None] == np.arange(f.n_classes)[None, :]).astype(np.float64)
            hit = xp.astype(pred == _like(codes, pred)[:, None], xp.float64)  # (m, P)
            hits = to_numpy(xp.matrix_transpose(hit) @ _like(onehot, hit))  # sync: (P, C)
            self.class_hits[j][k] += hits
            self.correct[k, :, j] += hits.sum(axis=1)
            self.class_count[j][k] += onehot.sum(axis=0)
            if log_proba:
                oh = _like(onehot, Yhat)
                self.ce[k, :, j] -= to_numpy(xp.sum(block * oh[:, None, :], axis=(0, 2)))

    def finalize(self) -> dict[str, np.ndarray]:
        """Per-fold scores, each of shape (n_splits, n_penalties, n_features), plus chance.

        Returns
        -------
        dict
            ``accuracy``, ``balanced_accuracy``, ``r2``, ``vinfo`` (and ``cross_entropy``,
            ``vinfo_bits`` after log-probability updates; ``vinfo_bits`` per fold is not
            clipped at 0: :func:`select_penalty` clips the mean over folds), float64 with NaN
            where a score does not apply; ``chance`` (n_splits, n_features): the
            majority-class rate of the decoded samples (every fold alike; ``1/k`` for a
            balanced k-class feature).
        """
        K, P, F = self.correct.shape
        feats = self.targets.features
        out: dict[str, np.ndarray] = {
            k: np.full((K, P, F), np.nan) for k in ("accuracy", "balanced_accuracy", "r2")
        }
        chance = np.full((K, F), np.nan)
        n_te = self.n_test[:, None]
        mean_y = self.sum_y / n_te
        sst_col = self.sumsq_y - n_te * mean_y**2  # (K, q)
        ent = np.full((K, F), np.nan)
        for j, f in enumerate(feats):
            cols = slice(f.start, f.stop)
            sse = self.sse[:, :, cols].sum(axis=2)
            sst = sst_col[:, cols].sum(axis=1)
            if not self._has_proba:
                # a held-out fold whose targets do not vary (one class) has no R^2: NaN
                flat = sst <= 1e-12 * self.sumsq_y[:, cols].sum(axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2_j = 1.0 - sse / sst[:, None]
                out["r2"][:, :, j] = np.where(flat[:, None], np.nan, r2_j)
            if f.kind != "categorical":
                continue
            out["accuracy"][:, :, j] = self.correct[:, :, j] / n_te
            cnt = self.class_count[j]  # (K, C)
            present = cnt > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                recall = self.class_hits[j] / cnt[:, None, :]
            recall = np.where(present[:, None, :], recall, 0.0)
            out["balanced_accuracy"][:, :, j] = recall.sum(axis=2) / present.sum(axis=1)[:, None]
            train_counts = self._train_class_counts(j, f.n_classes)  # (K, C)
            chance[:, j] = self._majority_rate(j, f.n_classes)
            prior = train_counts / train_counts.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore"):
                ent[:, j] = -(cnt * np.log(prior)).sum(axis=1) / self.n_test
        out["vinfo"] = np.maximum(out["r2"], 0.0)
        out["chance"] = chance
        if self._has_proba:
            ce = self.ce / n_te[:, :, None]
            out["cross_entropy"] = np.where(np.isnan(out["accuracy"]), np.nan, ce)
            # per fold unclipped; select_penalty clips the mean over folds, as for vinfo
            out["vinfo_bits"] = (ent[:, None, :] - out["cross_entropy"]) / np.log(2)
            out["vinfo"] = np.full((K, P, F), np.nan)
        return out

    def _majority_rate(self, j: int, n_classes: int) -> float:
        """Frequency of the most frequent class among all decoded samples."""
        counts = np.bincount(self.targets.codes[:, j], minlength=n_classes)
        return float(counts.max() / counts.sum())

    def _train_class_counts(self, j: int, n_classes: int) -> np.ndarray:
        codes = self.targets.codes[:, j]
        out = np.zeros((self.folds.n_splits, n_classes))
        for k in range(self.folds.n_splits):
            out[k] = np.bincount(codes[self.folds.train_mask(k)], minlength=n_classes)
        return out


def _like(a: np.ndarray, like: Any) -> Any:
    """Host array ``a`` on the namespace and device of ``like``."""
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return a
    from array_api_compat import device

    dtype = xp.float64 if a.dtype.kind == "f" else xp.int64
    return xp.asarray(a, dtype=dtype, device=device(like))


def select_penalty(
    scores: dict[str, np.ndarray], kinds: list[str], strong_first: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Choose one penalty per feature by the mean held-out score over folds.

    The score is accuracy for categorical features and R^2 for continuous ones. Ties go to the
    stronger penalty (the simpler decoder).

    Parameters
    ----------
    scores : dict name -> array (n_splits, n_penalties, n_features)
    kinds : list of str, one per feature
    strong_first : ndarray of int, optional
        Penalty indices from the strongest to the weakest (default: the order given).

    Returns
    -------
    chosen : ndarray of shape (n_features,), int
    summary : dict name -> ndarray of shape (n_features,)
        Mean over folds of each score at the chosen penalty (``*_std``: spread over folds),
        and ``score_path`` (n_penalties, n_features): the selection criterion per penalty.
        ``vinfo`` is ``max(0, summary["r2"])``: the V-information of the mean held-out R^2
        (PAPERS.md C), not the mean of per-fold clipped values.
    """
    crit = _criterion(scores, kinds)
    filled = np.where(np.isnan(crit), -np.inf, crit)
    order = np.arange(crit.shape[0]) if strong_first is None else np.asarray(strong_first)
    chosen = order[np.argmax(filled[order], axis=0)]
    K = next(iter(scores.values())).shape[0]
    return chosen, _summarize(scores, np.broadcast_to(chosen, (K, chosen.size)), crit)


def _criterion(scores: dict[str, np.ndarray], kinds: list[str]) -> np.ndarray:
    """Mean over folds of the selection score per penalty (n_penalties, n_features):
    accuracy for categorical features, R^2 for continuous ones."""
    return np.stack(
        [scores["accuracy"][:, :, j] if kinds[j] == "categorical" else scores["r2"][:, :, j]
         for j in range(len(kinds))], axis=2,
    ).mean(axis=0)


def _summarize(scores: dict[str, np.ndarray], at: np.ndarray, crit: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Every score of fold k and feature j at penalty ``at[k, j]``, averaged over folds
    (``*_std``: spread of accuracy and R^2), with ``score_path`` = ``crit``."""
    K, F = at.shape
    kk, ff = np.meshgrid(np.arange(K), np.arange(F), indexing="ij")
    summary: dict[str, np.ndarray] = {"score_path": crit}
    P = crit.shape[0]
    for name, arr in scores.items():
        if arr.ndim == 3 and arr.shape[:2] != (K, P):
            continue  # not a score per (fold, penalty, feature): solver diagnostics
        if arr.ndim == 3:
            vals = arr[kk, at, ff]  # (K, F)
            summary[name] = vals.mean(axis=0)
            if name in ("accuracy", "r2"):
                summary[f"{name}_std"] = vals.std(axis=0)
        else:
            summary[name] = arr.mean(axis=0)
    if "vinfo" in summary and "r2" in summary:
        # I_V = max(0, held-out R^2) of the same aggregate that is reported as r2 (NaN stays
        # NaN: logistic decoders, folds without variance)
        summary["vinfo"] = np.maximum(summary["r2"], 0.0)
    if "vinfo_bits" in summary:
        summary["vinfo_bits"] = np.maximum(summary["vinfo_bits"], 0.0)
    return summary


def select_nested(
    scores: dict[str, np.ndarray], kinds: list[str], inner: np.ndarray,
    strong_first: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores of nested cross-validation: fold k's held-out scores at the penalty chosen by
    the inner cross-validation of its training rows.

    Parameters
    ----------
    scores : dict name -> array (n_splits, n_penalties, n_features)
    kinds : list of str
    inner : ndarray (n_splits, n_features), int
        Penalty index chosen for each outer fold.
    strong_first : ndarray, optional
        Penalty indices from the strongest to the weakest (breaks ties of the reported
        penalty).

    Returns
    -------
    chosen : ndarray (n_features,)
        The penalty chosen most often over the outer folds (the stronger on ties), reported
        as the decoder's penalty.
    summary : dict
        As :func:`select_penalty`, with every score taken fold by fold at ``inner``.
    """
    K, F = inner.shape
    P = next(iter(scores.values())).shape[1]
    order = np.arange(P) if strong_first is None else np.asarray(strong_first)
    rank = np.empty(P, dtype=np.int64)
    rank[order] = np.arange(P)
    votes = np.zeros((P, F))
    for k in range(K):
        votes[inner[k], np.arange(F)] += 1
    # most votes; among equals the stronger penalty (lower rank)
    chosen = np.argmax(votes * (P + 1) - rank[:, None], axis=0)
    return chosen, _summarize(scores, inner, _criterion(scores, kinds))
