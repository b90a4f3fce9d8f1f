"""Decode every feature from one activation matrix: the unit of work of the probe engine.

:func:`decode` takes a streamed activation matrix (one run x checkpoint x layer) and the labels
of its probe set, makes the folds, accumulates the statistics once, runs every requested
decoder for every penalty and feature, and chooses a penalty per feature by cross-validation.
:func:`probe_arrays` is the same on an in-memory array, returning an xarray Dataset.

The decoders are the entries of the registry :data:`~actstore.decode.DECODERS` (a solver and
its penalty); each solver takes the streamed source, the targets, the folds, its penalties and
the shared statistics, and returns held-out scores of shape (n_splits, n_penalties,
n_features).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace, index_on, move_to
from actstore.core._blocks import ArraySource, BlockSource, CachedSource
from actstore.core._folds import Folds, check_folds
from actstore.core._gram import GramStats, accumulate_gram, unit_sums
from actstore.core._pages import plain_pages
from actstore.core._reprs import short_list
from actstore.core._stats import GroupStats, accumulate_groups
from actstore.core._targets import Targets, encode_targets
from actstore.decode._config import ProbeConfig, make_folds
from actstore.decode._decoders import DECODERS, materialize
from actstore.decode._metrics import select_nested, select_penalty
from actstore.decode._ridge import choose_form

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "RESULT_VARS",
    "DecodeResult",
    "decode",
    "probe_arrays",
]


@dataclass
class DecodeResult:
    """Everything decoded from one activation matrix.

    Attributes
    ----------
    features : list of str
    kinds : list of str
    decoders : dict name -> dict
        Per decoder: ``penalty`` (n_features,) chosen value; ``summary`` name -> (n_features,)
        scores at the chosen penalty (mean over folds); ``path`` (n_penalties, n_features)
        the selection criterion per penalty; ``extra`` diagnostics.
    chance : ndarray (n_features,)
        The majority-class rate of the decoded samples (1/k for a balanced k-class feature;
        NaN if continuous).
    n_train, n_test : float
        Mean rows per fold.
    form : str
        ``"primal"`` or ``"dual"``.
    seconds : dict
        Time spent per stage.
    """

    features: list[str]
    kinds: list[str]
    decoders: dict[str, dict[str, Any]]
    chance: np.ndarray
    n_train: float
    n_test: float
    form: str
    seconds: dict[str, float]
    passes: int = 0

    def __repr__(self) -> str:
        return (f"DecodeResult(features={short_list(self.features)}, "
                f"decoders={short_list(list(self.decoders))}, form={self.form!r}, "
                f"n_train={self.n_train:g}, n_test={self.n_test:g})")


def penalty_at_edge(path: np.ndarray, chosen: np.ndarray, strong_first: np.ndarray,
                    tol: float = 1e-9) -> np.ndarray:
    """1 where the chosen penalty is the grid's strongest or weakest and the score still rises
    toward that end (the best penalty may lie beyond the grid), 0 otherwise, NaN where no
    penalty has a score.

    Parameters
    ----------
    path : ndarray (n_penalties, n_features)
        Mean held-out selection score per penalty.
    chosen : ndarray (n_features,)
        Index of the chosen penalty.
    strong_first : ndarray (n_penalties,)
        Penalty indices from the strongest to the weakest.
    """
    out = np.zeros(path.shape[1])
    if path.shape[0] > 1:
        for end, inner in ((strong_first[0], strong_first[1]), (strong_first[-1],
                                                                  strong_first[-2])):
            rising = path[end] > path[inner] + tol
            out[(chosen == end) & rising] = 1.0
    return np.where(np.isnan(path).all(axis=0), np.nan, out)

@plain_pages
def decode(
    source: BlockSource,
    labels: Mapping[str, np.ndarray],
    config: ProbeConfig | None = None,
    folds: Folds | None = None,
) -> DecodeResult:
    """Run every decoder of ``config`` on one streamed activation matrix.

    One pass over the blocks accumulates each fold's moments and Gram matrices; every decoder,
    penalty and feature is then solved from those statistics (no second read).

    Parameters
    ----------
    source : BlockSource
        Activations (n_samples, n_units), read in blocks of rows.
    labels : mapping name -> array (n_samples,)
        The features to decode (and the split label, if ``config.split``).
    config : ProbeConfig
    folds : Folds, optional
        Overrides the folds made from ``config``.

    Returns
    -------
    DecodeResult
    """
    config = ProbeConfig.of(config)
    labels = as_mapping(labels, "labels", "give a dict of feature name -> array of shape "
                        "(n_samples,), e.g. {'shape': shape_labels}")
    if folds is not None:
        Folds.check(folds)
    made, decoded = make_folds(labels, config)
    folds = folds or made
    names = list(decoded)
    if config.permutations:
        decoded = {**decoded, **permuted_copies(decoded, config.permutations, config.seed)}
    targets = encode_targets(decoded)
    check_folds(folds, targets.labels())
    present = {f.kind for f in targets.features}
    kept = tuple(d for d in config.decoders if present & set(DECODERS[d].kinds))
    if kept != config.decoders:
        # e.g. logistic decoders need classes; continuous features are the ridge decoders' job
        if not kept:
            first = DECODERS[config.decoders[0]]
            fit = [d.name for d in DECODERS.values() if present & set(d.kinds)]
            raise ActstoreError(
                f"{first.name} decoders need a {' or '.join(first.kinds)} feature, but "
                f"{', '.join(names)} are {' or '.join(sorted(present))}; add --decoders "
                f"{fit[0]}"
            )
        config = ProbeConfig(**{**asdict(config), "decoders": kept})
    backend = None if config.device == "numpy" else config.device
    src = CachedSource(source, backend=backend, cache_bytes=int(config.cache_mb * 2**20))
    t0 = time.perf_counter()
    form = choose_form(source.d, folds, len(config.alphas), src.cache_bytes,
                       config.standardize, host=backend is None)
    stats: GroupStats | GramStats
    # per-fold moments are needed only by the primal ridge form
    pooled = form == "lgo" or not any(DECODERS[d].fold_moments for d in config.decoders)
    if form == "dual" and config.standardize:
        # every fold builds the kernel of its own z-scored units from the per-fold unit sums
        stats = GramStats(None, units=unit_sums(src, folds))
    elif form == "dual":
        stats = accumulate_gram(src, cache_bytes=src.cache_bytes)
    else:
        stats = accumulate_groups(src, targets.Y, folds, pooled=pooled)
    seconds = {"statistics": time.perf_counter() - t0}
    kinds = [f.kind for f in targets.features]
    F = len(names)
    out: dict[str, dict[str, Any]] = {}
    chance = np.full(F, np.nan)
    for name in config.decoders:
        t = time.perf_counter()
        pen = config.penalties(name)
        scores = DECODERS[name].solve(src, targets, folds, pen, stats, config)
        strong_first = DECODERS[name].strong_first(pen)
        per_fold = {k: v for k, v in scores.items() if k not in ("n_iter", "converged")}
        if config.select == "nested":
            inner = _inner_choices(src, decoded, folds, config, name, strong_first)
            chosen, summary = select_nested(per_fold, kinds, inner, strong_first)
        else:
            chosen, summary = select_penalty(per_fold, kinds, strong_first)
        chance = summary.pop("chance")[:F]
        extra = {}
        if "converged" in scores:
            ncat = sum(k == "categorical" for k in kinds[:F])
            extra["converged"] = scores["converged"].mean(axis=(0, 1))[:ncat]
            extra["n_iter"] = scores["n_iter"].sum(axis=(0, 1))[:ncat]
        path = summary.pop("score_path")
        summary["penalty_at_edge"] = penalty_at_edge(path, chosen, strong_first)
        # no penalty is chosen where no penalty has a score (a continuous feature for the
        # logistic decoder, folds whose targets do not vary)
        penalty = np.where(np.isnan(path).all(axis=0), np.nan, np.asarray(pen, float)[chosen])
        if config.extend_grid and config.select == "cv" and (
                summary["penalty_at_edge"] == 1).any():
            _extend(name, src, decoded, targets, folds, stats, config, per_fold, kinds,
                    summary, penalty)
        if config.permutations:
            crit = np.array([summary["accuracy" if kind == "categorical" else "r2"][j]
                             for j, kind in enumerate(kinds)])
            nulls = null_summary(crit, F)
        summary = {k: v[:F] for k, v in summary.items()}
        if config.permutations:
            summary.update(nulls)
        out[name] = {"penalty": penalty[:F], "summary": summary, "path": path[:, :F],
                     "extra": extra}
        seconds[name] = time.perf_counter() - t
    n_train, n_test = folds.counts()
    return DecodeResult(
        names, kinds[:F], out, chance, float(n_train.mean()), float(n_test.mean()),
        form, seconds, src.passes,
    )


def extension(grid: Sequence[float] | np.ndarray, end: str, decades: int) -> tuple[float, ...]:
    """Penalties beyond one end of ``grid`` (``"high"`` or ``"low"``), in half-decade steps
    up to ``decades`` decades."""
    steps = np.arange(1, 2 * int(decades) + 1) / 2
    if end == "high":
        return tuple(float(v) for v in 10 ** (np.log10(max(grid)) + steps))
    return tuple(float(v) for v in 10 ** (np.log10(min(grid)) - steps))


def _extend(
    name: str, src: CachedSource, labels: Mapping[str, np.ndarray], targets: Targets,
    folds: Folds, stats: GroupStats | GramStats, config: ProbeConfig,
    per_fold: dict[str, np.ndarray], kinds: list[str], summary: dict[str, np.ndarray],
    penalty: np.ndarray,
) -> None:
    """Choose again, over the grid extended beyond the end it sits at, the penalty of every
    feature flagged ``penalty_at_edge``; ``summary`` and ``penalty`` are updated in place
    (``penalty_at_edge`` then tells whether the extended grid's end was chosen)."""
    pen = np.asarray(config.penalties(name), dtype=float)
    flagged = np.flatnonzero(summary["penalty_at_edge"] == 1)
    names = list(labels)
    for end in ("high", "low"):
        at = [j for j in flagged if penalty[j] == (pen.max() if end == "high" else pen.min())]
        if not at:
            continue
        ext = extension(pen, end, config.extend_grid)
        sub_labels = {names[j]: np.asarray(labels[names[j]]) for j in at}
        sub = encode_targets(sub_labels)
        # the statistics of X are shared; those of the targets are the subset's columns
        cols = np.concatenate([np.arange(targets.features[j].start, targets.features[j].stop)
                               for j in at])
        sub_stats = stats.columns(cols) if isinstance(stats, GroupStats) else stats
        more = DECODERS[name].solve(src, sub, folds, ext, sub_stats, config)
        grid = np.concatenate([pen, ext])
        strong_first = DECODERS[name].strong_first(grid)
        both = {k: np.concatenate([per_fold[k][:, :, at], more[k]], axis=1)
                for k in per_fold if k != "chance" and k in more}
        chosen, again = select_penalty(both, [kinds[j] for j in at], strong_first)
        again_path = again.pop("score_path")
        again["penalty_at_edge"] = penalty_at_edge(again_path, chosen, strong_first)
        for key, vals in again.items():
            if key in summary:
                summary[key][at] = vals
        penalty[at] = grid[chosen]


_PERM = "\x00perm"


def permuted_copies(labels: Mapping[str, np.ndarray], count: int, seed: int
                    ) -> dict[str, np.ndarray]:
    """``count`` random permutations of every label array (seeded by ``seed``), named
    ``<feature>\\x00perm<i>`` (a name no probe set can hold)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    n = len(next(iter(labels.values())))
    perms = [rng.permutation(n) for _ in range(count)]
    return {f"{f}{_PERM}{i}": np.asarray(v)[p] for i, p in enumerate(perms)
            for f, v in labels.items()}


def null_summary(crit: np.ndarray, n_features: int) -> dict[str, np.ndarray]:
    """The permutation null of each feature's reported score.

    Parameters
    ----------
    crit : ndarray (n_features * (1 + N),)
        Reported score (accuracy, or R^2 for continuous features) of the features, then of
        their N permuted copies (:func:`permuted_copies` order).

    Returns
    -------
    dict
        ``null_mean``, ``null_p95`` (95th percentile) and ``p_value``
        ``(1 + #{null >= observed}) / (1 + N)``, each (n_features,); NaN where the score is.
    """
    F = n_features
    observed = crit[:F]
    null = crit[F:].reshape(-1, F)  # permutation i of feature j at [i, j]
    N = null.shape[0]
    out = {k: np.full(F, np.nan) for k in ("null_mean", "null_p95", "p_value")}
    ok = ~np.isnan(observed) & ~np.isnan(null).any(axis=0)
    if ok.any():
        out["null_mean"][ok] = null[:, ok].mean(axis=0)
        out["null_p95"][ok] = np.percentile(null[:, ok], 95, axis=0)
        ties = 1e-12 * np.maximum(1.0, np.abs(observed[ok]))
        out["p_value"][ok] = (1.0 + (null[:, ok] >= observed[ok] - ties).sum(axis=0)) / (1 + N)
    return out


def _inner_choices(
    src: CachedSource, labels: Mapping[str, np.ndarray], folds: Folds, config: ProbeConfig,
    decoder: str, strong_first: np.ndarray,
) -> np.ndarray:
    """Penalty index chosen for each outer fold by cross-validation on its training rows
    only: (n_splits, n_features)."""
    from actstore.core._folds import predefined_folds

    X = materialize(src)
    xp = get_namespace(X)
    inner_cfg = ProbeConfig(**{**asdict(config), "decoders": (decoder,), "select": "cv",
                               "permutations": 0, "split": None, "extend_grid": 0})
    out = []
    for k in range(folds.n_splits):
        rows = np.flatnonzero(folds.train_mask(k))
        sub = {f: np.asarray(v)[rows] for f, v in labels.items()}
        if folds.n_splits > 1:
            tf = folds.test_fold[rows]
            inner = predefined_folds(np.where(tf > k, tf - 1, tf),
                                     f"the training rows of fold {k}")
        else:
            inner, _ = make_folds(sub, inner_cfg)
        Xk = xp.take(X, index_on(rows, X), axis=0)
        res = decode(ArraySource(Xk, name=src.name), sub, inner_cfg, inner)
        path = res.decoders[decoder]["path"]
        filled = np.where(np.isnan(path), -np.inf, path)
        out.append(strong_first[np.argmax(filled[strong_first], axis=0)])
    return np.stack(out)


def probe_arrays(
    X: Any,
    labels: Mapping[str, np.ndarray],
    config: ProbeConfig | None = None,
    folds: Folds | None = None,
    **options: Any,
) -> xr.Dataset:
    """Decode every feature from an in-memory activation matrix.

    Parameters
    ----------
    X : array of shape (n_samples, n_units)
        numpy, torch or cupy.
    labels : mapping name -> array (n_samples,)
    config : ProbeConfig, optional
    folds : Folds, optional
    **options
        Fields of :class:`ProbeConfig` (e.g. ``decoders=("ridge",)``, ``n_splits=3``).

    Returns
    -------
    xarray.Dataset
        Dims ``decoder``, ``feature`` (and ``alpha``/``C`` for the penalty paths); variables
        ``accuracy``, ``balanced_accuracy``, ``r2``, ``vinfo``, ``vinfo_bits``, ``penalty``,
        ``chance``, ``ridge_score``, ``logistic_score``.
    """
    import xarray as xr

    unknown = sorted(set(options) - {f.name for f in fields(ProbeConfig)})
    if unknown:
        raise ActstoreError(
            f"probe_arrays has no option {', '.join(map(repr, unknown))}; options (fields of "
            f"ProbeConfig): {', '.join(f.name for f in fields(ProbeConfig))}"
        )
    if config is None:
        config = ProbeConfig(**options)
    else:
        config = ProbeConfig.of(config, keywords=True)
        if options:
            config = ProbeConfig(**{**asdict(config), **options})
    if config.device != "numpy":
        X = move_to(X, config.device)
    res = decode(ArraySource(X), labels, config, folds)
    ds = xr.Dataset(coords={"decoder": list(res.decoders), "feature": res.features})
    for var in RESULT_VARS:
        ds[var] = (("decoder", "feature"), np.stack(
            [_summary_var(res, d, var) for d in res.decoders]))
    ds["chance"] = ("feature", res.chance)
    for d, info in res.decoders.items():
        pname = DECODERS[d].penalty
        ds = ds.assign_coords({pname: list(config.penalties(d))})
        ds[f"{d}_score"] = ((pname, "feature"), info["path"])
    ds.attrs.update({"n_train": res.n_train, "n_test": res.n_test, "form": res.form})
    return ds


#: Per-(decoder, feature) variables of probe results.
RESULT_VARS = (
    "accuracy",
    "accuracy_std",
    "balanced_accuracy",
    "r2",
    "r2_std",
    "vinfo",
    "vinfo_bits",
    "cross_entropy",
    "penalty",
    "penalty_at_edge",
    "null_mean",
    "null_p95",
    "p_value",
)


def _summary_var(res: DecodeResult, decoder: str, var: str) -> np.ndarray:
    info = res.decoders[decoder]
    if var == "penalty":
        return np.asarray(info["penalty"], dtype=np.float64)
    val = info["summary"].get(var)
    return np.full(len(res.features), np.nan) if val is None else np.asarray(val, np.float64)
