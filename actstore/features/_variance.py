"""Variance of a representation explained by each feature (Lampinen, Chan & Hermann 2024).

For a representation ``phi`` (n_samples, n_units) and a feature ``f`` the representation is
regressed on the feature (one-hot columns for a categorical feature, one column for a
continuous one, plus an intercept) on the training rows of a fold, and scored on its held-out
rows, pooled over units::

    R^2_f = 1 - sum_test ||phi - phi_hat||^2 / sum_test ||phi - mean_test(phi)||^2

(scikit-learn's ``r2_score(..., multioutput="variance_weighted")`` of a ``LinearRegression``).
Over training, the explained sum of squares of checkpoint ``t`` is divided by the final
checkpoint's total sum of squares instead (``r2_final``), so that curves of one
(run, layer) share a denominator (PAPERS.md B, inferred; option ``denominator``).

This is a multi-target regression *from* labels *to* units, the reverse direction of the
decoders, so its sufficient statistics are small: per group of samples, ``F^T F`` and
``F^T phi`` (n_columns x n_units), the column sums, and the sums of squares of ``phi``. No
unit-by-unit Gram matrix is formed: one streamed float64 pass costs O(n d q) for q label
columns. Folds, the target layout and the block streaming are the probe engine's
(:class:`~actstore.probes.Folds`, :func:`~actstore.probes.encode_targets`,
:class:`~actstore.probes.CachedSource`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from actstore._dask import for_workers, in_this_process_only
from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace
from actstore.core._folds import Folds, describe_folds
from actstore.core._stats import ArraySource, BlockSource, CachedSource, coalesce
from actstore.core._targets import Targets, encode_targets

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ANALYSIS",
    "DesignStats",
    "ReaderSource",
    "VarianceExplained",
    "accumulate_design",
    "default_features",
    "run_variance",
    "variance_arrays",
    "variance_explained",
    "variance_from_stats",
]

#: Results go to ``/results/variance/<name>``.
ANALYSIS = "variance"

#: Probe-set labels that describe the split design, not the stimuli (skipped by default).
_META_PREFIXES = ("heldout_", "split")


class ReaderSource:
    """A :class:`~actstore.core._stats.BlockSource` over one (run, layer, checkpoint).

    Parameters
    ----------
    reader : actstore.store.RunReader
    layer : str
    step : int
        Training step of a complete checkpoint.
    """

    def __init__(self, reader: Any, layer: str, step: int) -> None:
        self.reader, self.layer, self.step = reader, layer, int(step)
        self.n = int(reader.array(layer).shape[1])
        self.d = int(reader.units(layer))
        self.name = f"run {reader.run_id!r}, layer {layer!r}, checkpoint {step}"

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        yield from self.reader.iter_blocks(self.layer, self.step)


@dataclass
class DesignStats:
    """Per-group float64 sums for the regression of units on label columns.

    Attributes
    ----------
    count : ndarray of shape (G,)
    shift : array of shape (d,)
        Subtracted from every row before accumulating (first block's mean), for precision.
    sp : list of G arrays (d,)
        Column sums of ``phi - shift``.
    spp : list of G arrays (d,)
        Column sums of ``(phi - shift)^2``.
    fp : list of G arrays (q, d)
        ``F^T (phi - shift)``.
    ff : ndarray of shape (G, q, q)
        ``F^T F`` (host).
    sf : ndarray of shape (G, q)
        Column sums of ``F`` (host).
    """

    count: np.ndarray
    shift: Any
    sp: list[Any]
    spp: list[Any]
    fp: list[Any]
    ff: np.ndarray
    sf: np.ndarray

    def train(self, k: int) -> tuple[float, np.ndarray, Any, np.ndarray, Any]:
        """Sums over every group but ``k``: ``n, sf, sp, ff, fp``."""
        keep = [g for g in range(len(self.sp)) if g != k]
        return (
            float(self.count[keep].sum()),
            self.sf[keep].sum(axis=0),
            _sum([self.sp[g] for g in keep]),
            self.ff[keep].sum(axis=0),
            _sum([self.fp[g] for g in keep]),
        )


def _sum(arrs: list[Any]) -> Any:
    out = arrs[0]
    for a in arrs[1:]:
        out = out + a
    return out


def _on(a: np.ndarray, like: Any) -> Any:
    """Host float64 array on the namespace and device of ``like``."""
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return np.asarray(a, dtype=np.float64)
    from array_api_compat import device

    return xp.asarray(np.asarray(a, dtype=np.float64), dtype=xp.float64, device=device(like))


def accumulate_design(source: BlockSource, targets: Targets, folds: Folds) -> DesignStats:
    """One streamed pass over ``phi``: the statistics of every fold and feature at once.

    Parameters
    ----------
    source : BlockSource
        The representation (n_samples, n_units), any float dtype and backend.
    targets : Targets
        Label columns (from :func:`~actstore.probes.encode_targets`).
    folds : Folds

    Returns
    -------
    DesignStats
        Memory: one block plus ``n_groups * (q + 2) * d`` floats.
    """
    if targets.n != source.n or folds.n != source.n:
        raise ActstoreError(
            f"{source.name}: {source.n} activation rows but {targets.n} labels and "
            f"{folds.n} fold entries; the probe set and the run do not match"
        )
    Y = targets.Y
    group = folds.group_of()
    G = folds.n_groups
    q = Y.shape[1]
    ff = np.zeros((G, q, q))
    sf = np.zeros((G, q))
    count = np.zeros(G)
    for g in range(G):
        rows = group == g
        Fg = Y[rows]
        ff[g] = Fg.T @ Fg
        sf[g] = Fg.sum(axis=0)
        count[g] = rows.sum()
    from array_api_compat import device

    st: DesignStats | None = None
    for a, b, block in coalesce(source.blocks(), source.d):
        xp = get_namespace(block)
        P = xp.astype(block, xp.float64)
        if st is None:
            d, dev = P.shape[1], device(P)
            st = DesignStats(
                count, xp.mean(P, axis=0),
                [xp.zeros(d, dtype=xp.float64, device=dev) for _ in range(G)],
                [xp.zeros(d, dtype=xp.float64, device=dev) for _ in range(G)],
                [xp.zeros((q, d), dtype=xp.float64, device=dev) for _ in range(G)],
                ff, sf,
            )
        P = P - st.shift
        Fb = Y[a:b]
        g_blk = group[a:b]
        for g in np.unique(g_blk):
            local = np.flatnonzero(g_blk == g)
            if local.size == b - a:
                Pg = P
            else:
                idx = local if xp.__name__.endswith("numpy") else xp.asarray(
                    local, dtype=xp.int64, device=device(P))
                Pg = xp.take(P, idx, axis=0)
            st.sp[g] += xp.sum(Pg, axis=0)
            st.spp[g] += xp.sum(Pg * Pg, axis=0)
            st.fp[g] += xp.matrix_transpose(_on(Fb[local], P)) @ Pg
    if st is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    return st


def _pinv_psd(M: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Pseudo-inverse of a symmetric PSD matrix (the minimum-norm least-squares solution,
    as scikit-learn's ``LinearRegression`` gives for collinear one-hot columns)."""
    s, V = np.linalg.eigh((M + M.T) / 2)
    keep = s > max(float(s.max(initial=0.0)), 0.0) * rtol
    inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return (V * inv) @ V.T


def variance_from_stats(
    stats: DesignStats, targets: Targets, folds: Folds
) -> dict[str, np.ndarray]:
    """Held-out sums of squares of every (fold, feature) from :func:`accumulate_design`.

    Returns
    -------
    dict
        ``sse`` (n_splits, n_features): residual sum of squares over held-out rows and units;
        ``sst`` (n_splits,): total sum of squares around the held-out mean;
        ``n_test`` (n_splits,); ``r2`` (n_splits, n_features) = 1 - sse / sst.
    """
    K, F = folds.n_splits, len(targets.features)
    sse = np.full((K, F), np.nan)
    sst = np.full(K, np.nan)
    n_test = np.zeros(K)
    for k in range(K):
        m = float(stats.count[k])
        n_test[k] = m
        if m == 0:
            continue
        n, sF, sP, FF, FP = stats.train(k)
        xp = get_namespace(sP)
        mF = sF / n  # (q,) host
        mv = sP / n  # (d,) device
        Cff = FF - n * np.outer(mF, mF)
        Cfp = FP - n * _on(mF, sP)[:, None] * mv[None, :]  # (q, d)
        tF, tv, tvv = stats.sf[k], stats.sp[k], stats.spp[k]
        TFF, TFP = stats.ff[k], stats.fp[k]
        sst[k] = float(xp.sum(tvv) - xp.sum(tv * tv) / m)
        # sum_test ||u||^2 with u = v - mv (v = phi - shift)
        uu = float(xp.sum(tvv) - 2.0 * xp.sum(mv * tv) + m * xp.sum(mv * mv))
        for j, f in enumerate(targets.features):
            c = slice(f.start, f.stop)
            B = _on(_pinv_psd(Cff[c, c]), sP) @ Cfp[c]  # (p, d) coefficients
            a = mF[c]
            # sum_test g^T u and g^T g, with g = f_c - a
            Sgu = (TFP[c] - _on(tF[c], tv)[:, None] * mv[None, :]
                   - _on(a, tv)[:, None] * tv[None, :]
                   + m * _on(a, tv)[:, None] * mv[None, :])
            Sgg = TFF[c, c] - np.outer(tF[c], a) - np.outer(a, tF[c]) + m * np.outer(a, a)
            sse[k, j] = uu - 2.0 * float(xp.sum(B * Sgu)) + float(
                xp.sum(B * (_on(Sgg, B) @ B)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst[:, None]
    return {"sse": sse, "sst": sst, "n_test": n_test, "r2": r2}


def default_features(labels: Mapping[str, Any] | Sequence[str], split: str | None = None
                     ) -> list[str]:
    """Label names that are stimulus features (not the ``heldout_*`` split design)."""
    return [k for k in labels if k != split and not k.startswith(_META_PREFIXES)]


class VarianceExplained(TypedDict):
    """What :func:`variance_explained` returns (float64 arrays)."""

    features: list[str]
    r2: np.ndarray
    r2_folds: np.ndarray
    sse: np.ndarray
    sst: np.ndarray
    n_test: np.ndarray


def variance_explained(
    source: BlockSource | Any,
    labels: Mapping[str, np.ndarray],
    folds: Folds,
    kinds: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> VarianceExplained:
    """Variance of a representation explained by each feature, held out, pooled over units.

    Parameters
    ----------
    source : BlockSource or array of shape (n_samples, n_units)
        The representation (streamed in blocks of rows if a source).
    labels : mapping name -> array of shape (n_samples,)
        Features: integer/string labels are categorical (one-hot), float labels continuous.
    folds : Folds
        Training/held-out assignment (K-fold or an explicit split).
    kinds : mapping name -> {"categorical", "continuous"}, optional
    backend : str, optional
        Move blocks to ``"torch"``, ``"cuda"`` or ``"cupy"`` for the arithmetic.

    Returns
    -------
    VarianceExplained
        A dict: ``features`` (list of str); ``r2`` (n_features,): mean over folds of the
        held-out R^2; ``r2_folds``, ``sse`` (n_splits, n_features); ``sst``, ``n_test``
        (n_splits,); arrays float64 numpy.
    """
    Folds.check(folds)
    if not hasattr(source, "blocks"):
        source = ArraySource(source)
    targets = encode_targets(labels, kinds)
    src = CachedSource(source, backend=backend, cache_bytes=0)
    stats = accumulate_design(src, targets, folds)
    out = variance_from_stats(stats, targets, folds)
    return {
        "features": targets.names,
        "r2": np.nanmean(out["r2"], axis=0),
        "r2_folds": out["r2"],
        "sse": out["sse"],
        "sst": out["sst"],
        "n_test": out["n_test"],
    }


def variance_arrays(
    X: Any,
    labels: Mapping[str, np.ndarray],
    folds: Folds | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> xr.Dataset:
    """:func:`variance_explained` of an in-memory array, as an xarray Dataset over features.

    Parameters
    ----------
    X : array of shape (n_samples, n_units)
        numpy, torch or cupy.
    labels : mapping name -> array (n_samples,)
    folds : Folds, optional
        Default: stratified ``n_splits``-fold on the categorical labels, seeded.

    Returns
    -------
    xarray.Dataset
        ``r2`` (feature), ``r2_folds`` (fold, feature), ``sst`` (fold).
    """
    import xarray as xr

    from actstore.core._folds import stratified_folds

    if folds is None:
        n = int(X.shape[0])
        cat = {k: v for k, v in labels.items() if np.asarray(v).dtype.kind not in "fc"}
        folds = stratified_folds(n, n_splits, seed, cat or None)
    res = variance_explained(X, labels, folds)
    return xr.Dataset(
        {
            "r2": ("feature", res["r2"]),
            "r2_folds": (("fold", "feature"), res["r2_folds"]),
            "sst": ("fold", res["sst"]),
        },
        coords={"feature": res["features"]},
        attrs={"folds": folds.description},
    )


# -- store level -------------------------------------------------------------------------------


def _job(
    url: str,
    run: str,
    layer: str,
    steps: list[int],
    features: list[str],
    n_splits: int,
    seed: int,
    split: str | None,
    storage_options: dict | None = None,
    tick: Callable[[], None] | None = None,
    final_step: int | None = None,
) -> dict[str, Any]:
    """Every checkpoint of one (run, layer): sums of squares per (checkpoint, fold, feature).

    ``tick()`` is called after each checkpoint. ``final_step``: the run's final checkpoint,
    whose sums of squares (``final``) are also returned, read even when it is not among
    ``steps`` (the common denominator of ``r2_final``).
    """
    from actstore.decode._decode import ProbeConfig, make_folds
    from actstore.store import open_store

    rd = open_store(url, storage_options=storage_options).reader(run)
    labels = rd.labels
    use = {f: labels[f] for f in features}
    if split is not None:
        use[split] = labels[split]
    folds, decoded = make_folds(use, ProbeConfig(decoders=("ridge",), n_splits=n_splits,
                                                 seed=seed, split=split))
    targets = encode_targets(decoded)
    out = []
    for s in steps:
        src = ReaderSource(rd, layer, s)
        st = accumulate_design(CachedSource(src, cache_bytes=0), targets, folds)
        out.append(variance_from_stats(st, targets, folds))
        if tick is not None:
            tick()
    final = None
    if final_step is not None:
        if int(final_step) in steps:
            final = out[steps.index(int(final_step))]
        else:  # not selected: one more pass, for its total sum of squares
            src = ReaderSource(rd, layer, int(final_step))
            st = accumulate_design(CachedSource(src, cache_bytes=0), targets, folds)
            final = variance_from_stats(st, targets, folds)
    return {"run": run, "layer": layer, "steps": steps, "features": targets.names,
            "folds": folds.description, "parts": out, "final_step": final_step,
            "final": final}


def run_variance(
    url: str,
    name: str = "default",
    runs: str | Sequence[str] | None = None,
    checkpoints: str | Sequence[int | str] | None = None,
    layers: str | Sequence[str] | None = "all",
    features: str | Sequence[str] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    split: str | None = None,
    denominator: str = "final",
    scheduler: str | None = None,
    n_workers: int | None = 1,
    write: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> xr.Dataset:
    """Variance explained by each feature for every (run, checkpoint, layer) of a store.

    Parameters
    ----------
    url : str
        Store path or URL.
    name : str
        Written to ``/results/variance/<name>``.
    runs, checkpoints, layers, features
        Selection, as in :func:`actstore.probes.plan_probes` (features default to every
        label except the ``heldout_*`` split design).
    n_splits, seed, split
        Folds (stratified K-fold, or the explicit split in label ``split``).
    denominator : {"final", "own"}
        ``r2_final`` divides each checkpoint's explained sum of squares by the final
        checkpoint's total sum of squares (``final``, the default): the run's last complete
        checkpoint, read for this even when ``checkpoints`` does not select it (recorded as
        ``final_checkpoint``); ``own`` makes it equal to ``r2``. ``r2`` always uses the
        checkpoint's own total.
    scheduler, n_workers
        Dask: a scheduler address, or local workers (1: in this process).
    overwrite : bool
        Replace a result of this name computed with other settings (else refused before
        anything is computed; a result with the same settings is replaced).
    progress : callable, optional
        ``progress(stage, done, total)`` over (run, layer, checkpoint) jobs.

    Returns
    -------
    xarray.Dataset
        Dims (run, checkpoint, layer, feature): ``r2``, ``r2_final``, ``r2_std`` (over folds),
        ``explained`` (explained sum of squares per held-out sample), ``total``
        (run, checkpoint, layer): total sum of squares per held-out sample, and
        ``final_checkpoint`` (run,): the run's last complete checkpoint (``r2_final``'s
        denominator with ``denominator="final"``).
    """
    import xarray as xr

    from actstore.decode._decode import ProbeConfig
    from actstore.decode._engine import plan_probes
    from actstore.similarity._jobs import check_seed, check_workers
    from actstore.similarity._select import check_not_blank
    from actstore.store import open_store
    from actstore.store._store import check_settings, settings_json

    # recorded as asked for: the same command on a store with more runs or checkpoints
    # refreshes the result
    query = {k: (v if v is None or isinstance(v, str) else [str(x) for x in v])
             for k, v in (("runs", runs), ("checkpoints", checkpoints), ("layers", layers),
                          ("features", features))}
    if denominator not in ("final", "own"):
        raise ActstoreError(f"denominator must be 'final' or 'own', got {denominator!r}")
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ActstoreError(f"result name {name!r} must use letters, digits, _ - .")
    check_seed(seed)
    check_workers(n_workers)
    if isinstance(n_splits, bool) or n_splits < 2:
        raise ActstoreError(f"cross-validation needs at least 2 folds, got {n_splits}")
    store = open_store(url, mode="a" if write else "r", storage_options=storage_options)
    all_runs = store.run_ids()
    readers = [store.reader(r) for r in all_runs]
    check_not_blank(runs, "run", all_runs)
    check_not_blank(layers, "layer", list(dict.fromkeys(x for rd in readers for x in rd.layers)))
    check_not_blank(checkpoints, "checkpoint",
                    hint="give all, first, last or training steps separated by commas")
    check_not_blank(features, "feature",
                    list(dict.fromkeys(f for rd in readers for f in rd.features)))
    if features is None and all_runs:
        # every run's stimulus features (runs may be recorded on different probe sets)
        features = list(dict.fromkeys(
            f for rd in readers for f in default_features(rd.features, split)))
    config = ProbeConfig(decoders=("ridge",), n_splits=n_splits, seed=seed, split=split)
    plan = plan_probes(store, runs, checkpoints, layers, features, config)
    if not plan.jobs:
        raise ActstoreError(f"nothing to compute in {url}: no complete checkpoint selected")
    settings = {"n_splits": n_splits, "seed": seed, "split": split, "denominator": denominator,
                **query}
    if write:
        check_settings(store, ANALYSIS, name, settings, overwrite)
    work: dict[tuple[str, str], list[int]] = {}
    for j in plan.jobs:
        work.setdefault((j.run, j.layer), []).append(j.step)
    # r2_final's denominator: each run's last complete checkpoint, whatever the selection
    # (fixed here, so that every layer of a run shares it)
    final_of = {r: max(store.reader(r).complete_steps, default=-1) for r in plan.runs}
    args = [(url, r, lay, sorted(s), plan.features_of[r], n_splits, seed, split,
             storage_options) for (r, lay), s in work.items()]
    finals = [final_of[r] if denominator == "final" else None for (r, _lay) in work]
    n_jobs = len(plan.jobs)
    if progress is not None:
        progress(ANALYSIS, 0, n_jobs)
    in_process = in_this_process_only(url) or (scheduler is None and n_workers == 1)
    if not in_process:  # workers open the store themselves
        args = [(for_workers(url), *a[1:]) for a in args]
    if in_process:
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(ANALYSIS, done[0], n_jobs)

        parts = [_job(*a, tick=tick, final_step=f) for a, f in zip(args, finals, strict=True)]
    else:
        from distributed import as_completed

        from actstore._dask import dask_client

        with dask_client(scheduler, n_workers) as client:
            futs = {client.submit(_job, *a, final_step=finals[i], pure=False): i
                    for i, a in enumerate(args)}
            got: list[dict[str, Any]] = [{} for _ in args]
            finished = 0
            for fut in as_completed(futs):
                one = fut.result()
                got[futs[fut]] = one
                finished += len(one["steps"])
                if progress is not None:
                    progress(ANALYSIS, finished, n_jobs)
            parts = got
    R, S, L, F = len(plan.runs), len(plan.steps), len(plan.layers), len(plan.features)
    ri = {r: i for i, r in enumerate(plan.runs)}
    si = {s: i for i, s in enumerate(plan.steps)}
    li = {x: i for i, x in enumerate(plan.layers)}
    fi = {x: i for i, x in enumerate(plan.features)}
    r2, r2f, r2s, expl = (np.full((R, S, L, F), np.nan) for _ in range(4))
    total = np.full((R, S, L), np.nan)
    folds_desc = describe_folds(p["folds"] for p in parts)
    for p in parts:
        r, lay = ri[p["run"]], li[p["layer"]]
        cols = [fi[f] for f in p["features"]]
        final = p["final"]
        for s, res in zip(p["steps"], p["parts"], strict=True):
            sst = res["sst"][:, None]
            denom = final["sst"][:, None] if final is not None else sst
            with np.errstate(divide="ignore", invalid="ignore"):
                r2[r, si[s], lay, cols] = np.nanmean(res["r2"], axis=0)
                r2s[r, si[s], lay, cols] = np.nanstd(res["r2"], axis=0)
                r2f[r, si[s], lay, cols] = np.nanmean((sst - res["sse"]) / denom, axis=0)
                expl[r, si[s], lay, cols] = np.nansum(sst - res["sse"], axis=0) / res[
                    "n_test"].sum()
            total[r, si[s], lay] = res["sst"].sum() / res["n_test"].sum()
    dims = ("run", "checkpoint", "layer", "feature")
    ds = xr.Dataset(
        {"r2": (dims, r2), "r2_final": (dims, r2f), "r2_std": (dims, r2s),
         "explained": (dims, expl), "total": (dims[:3], total),
         "final_checkpoint": (("run",), np.asarray([final_of[r] for r in plan.runs],
                                                   dtype=np.int64))},
        coords={"run": plan.runs, "checkpoint": np.asarray(plan.steps, dtype=np.int64),
                "layer": plan.layers, "feature": plan.features},
        attrs={
            "analysis": ANALYSIS,
            "description": (
                "Variance of each layer explained by each feature: representation regressed "
                "on the feature (one-hot + intercept) on training folds, R^2 pooled over units "
                "on held-out folds (mean over folds). r2_final: explained sum of squares over "
                "the final checkpoint's total sum of squares (the run's last complete "
                "checkpoint, final_checkpoint, selected or not; common denominator, inferred)."
            ),
            "folds": folds_desc,
            "denominator": denominator,
            "actstore.config": settings_json(settings),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    if write:
        store.write_result(ANALYSIS, name, ds)
    return ds
