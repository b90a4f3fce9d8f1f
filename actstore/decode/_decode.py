"""Decode every feature from one activation matrix: the unit of work of the probe engine.

:func:`decode` takes a streamed activation matrix (one run x checkpoint x layer) and the labels
of its probe set, makes the folds, accumulates the statistics once, runs every requested
decoder for every penalty and feature, and chooses a penalty per feature by cross-validation.
:func:`probe_arrays` is the same on an in-memory array, returning an xarray Dataset.

Decoders are plain functions in :data:`DECODERS` (name -> solver); each takes the streamed
source, the targets, the folds, its penalties and the shared statistics, and returns held-out
scores of shape (n_splits, n_penalties, n_features).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from actstore._args import as_mapping, whole_number
from actstore._errors import ActstoreError
from actstore.core._backend import BACKENDS, get_namespace, move_to
from actstore.core._folds import Folds, check_folds, label_folds
from actstore.core._reprs import short_list
from actstore.core._stats import (
    ArraySource,
    BlockSource,
    CachedSource,
    GramStats,
    GroupStats,
    _index_on,
    accumulate_gram,
    accumulate_groups,
    unit_sums,
)
from actstore.core._targets import Targets, encode_targets
from actstore.decode._logistic import DEFAULT_CS, logistic_cv
from actstore.decode._metrics import select_nested, select_penalty
from actstore.decode._ridge import DEFAULT_ALPHAS, choose_form, ridge_cv

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "DECODERS",
    "DecodeResult",
    "ProbeConfig",
    "decode",
    "make_folds",
    "probe_arrays",
]

Solver = Callable[..., dict[str, np.ndarray]]


def _ridge(
    source: CachedSource,
    targets: Targets,
    folds: Folds,
    penalties: Sequence[float],
    stats: GroupStats | GramStats,
    config: ProbeConfig,
) -> dict[str, np.ndarray]:
    """Ridge decoders (scikit-learn ``Ridge``/``RidgeClassifier``) for every ``alpha``."""
    return ridge_cv(source, targets, folds, penalties, stats=stats,
                    standardize=config.standardize)


def _logistic(
    source: CachedSource,
    targets: Targets,
    folds: Folds,
    penalties: Sequence[float],
    stats: GroupStats | GramStats,
    config: ProbeConfig,
) -> dict[str, np.ndarray]:
    """Multinomial logistic decoders (scikit-learn ``LogisticRegression``) for every ``C``."""
    X = _materialize(source)
    return logistic_cv(
        X, targets, folds, penalties, stats=stats, tol=config.tol, max_iter=config.max_iter,
        dtype=config.logistic_dtype, standardize=config.standardize,
    )


#: name -> solver; the CLI's ``--decoders`` and the planner look names up here.
DECODERS: dict[str, Solver] = {"ridge": _ridge, "logistic": _logistic}

#: How penalties are chosen (:attr:`ProbeConfig.select`).
SELECTIONS = ("cv", "nested")

#: The penalty each decoder is swept over, and whether larger values regularise more.
PENALTY = {"ridge": ("alpha", True), "logistic": ("C", False)}


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of a probe computation (recorded with the results).

    Attributes
    ----------
    decoders : tuple of str
        Names in :data:`DECODERS`.
    alphas : tuple of float
        Ridge penalties.
    Cs : tuple of float
        Logistic inverse penalties.
    n_splits : int
        Folds of stratified cross-validation (ignored with ``split``).
    seed : int
        Seed of the folds.
    split : str, optional
        Name of a label array holding an explicit train/validation split (booleans, 0/1 or
        ``train``/``val``/``test`` strings); that label is then not decoded itself.
    device : {"numpy", "torch", "cuda", "cupy"}
        Where the numerical work runs.
    tol, max_iter : float, int
        Logistic convergence tolerance and iteration cap per penalty.
    logistic_dtype : {"float32", "float64"}
        Working precision of the logistic solver's iterations (about twice as fast in
        float32, on CPUs and GPUs; accuracies agree to the reported digits). Statistics,
        whitening and ridge decoders are float64 either way.
    cache_mb : float
        Activation blocks are kept in memory up to this size so that a job reads its array
        once; larger arrays are streamed twice. Memory per job is bounded by this plus the
        statistics.
    standardize : bool
        Decoders see units z-scored with each training fold's mean and standard deviation,
        as ``make_pipeline(StandardScaler(), model)`` does (default); decodability then does
        not depend on a layer's scale. ``False`` fits the raw activations.
    select : {"cv", "nested"}
        How the penalty of a reported score is chosen. ``"cv"``: the penalty with the best
        mean held-out score, reported at that score (the usual ``*CV`` estimators; slightly
        optimistic near chance). ``"nested"``: the penalty of outer fold k is chosen by
        cross-validation on fold k's training rows only (with an explicit split: on the
        training part, in ``n_splits`` stratified inner folds), and fold k's held-out score
        is taken at it: an unbiased estimate, at about ``n_splits`` times the cost.
    permutations : int
        Label-permutation null: the decoders are also fitted, with the same folds and the same
        penalty selection, to this many random permutations of each feature's labels;
        ``null_mean``, ``null_p95`` and ``p_value`` are reported (0: none).
    extend_grid : int
        Where the chosen penalty is an end of the grid and the score still rises toward it,
        the penalties beyond that end, half a decade apart up to this many decades, are tried
        too (with ``select="cv"``), and the feature's penalty and scores are those of the
        extended grid (the ``*_score`` paths keep the base grid). 0: only record
        ``penalty_at_edge``.
    """

    decoders: tuple[str, ...] = ("ridge", "logistic")
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    Cs: tuple[float, ...] = DEFAULT_CS
    n_splits: int = 5
    seed: int = 0
    split: str | None = None
    device: str = "numpy"
    tol: float = 1e-4
    max_iter: int = 500
    logistic_dtype: str = "float32"
    cache_mb: float = 256.0
    standardize: bool = True
    select: str = "cv"
    permutations: int = 0
    extend_grid: int = 3
    #: The settings that determine the numbers (``device`` and ``cache_mb`` do not).
    RESULT_KEYS: ClassVar[tuple[str, ...]] = (
        "decoders", "alphas", "Cs", "n_splits", "seed", "split", "tol", "max_iter",
        "logistic_dtype", "standardize", "select", "permutations", "extend_grid",
    )

    def __post_init__(self) -> None:
        if isinstance(self.decoders, str):  # one name, not its letters
            object.__setattr__(self, "decoders", (self.decoders,))
        unknown = [d for d in self.decoders if d not in DECODERS]
        if unknown or not self.decoders:
            raise ActstoreError(
                f"unknown decoder {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"available: {', '.join(DECODERS)}"
            )
        if self.logistic_dtype not in ("float32", "float64"):
            raise ActstoreError(
                f"logistic_dtype must be float32 or float64, not {self.logistic_dtype!r}"
            )
        if self.device not in BACKENDS:
            raise ActstoreError(
                f"unknown device {self.device!r}; choose one of {', '.join(BACKENDS)}"
            )
        for name, vals in (("alphas", self.alphas), ("Cs", self.Cs)):
            if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
                raise ActstoreError(f"{name} must be positive numbers, got {list(vals)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise ActstoreError(f"seed must be a non-negative integer, got {self.seed!r}")
        whole_number(self.n_splits, "n_splits (number of folds)", minimum=1)
        whole_number(self.max_iter, "max_iter", minimum=1)
        if self.split is not None and not isinstance(self.split, str):
            raise ActstoreError(
                f"split must be the name of a label array (a str), not {self.split!r}"
            )
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ActstoreError(f"standardize must be True or False, not {self.standardize!r}")
        object.__setattr__(self, "standardize", bool(self.standardize))
        if self.select not in SELECTIONS:
            raise ActstoreError(
                f"select must be one of {', '.join(SELECTIONS)}, not {self.select!r}")
        whole_number(self.permutations, "permutations", minimum=0)
        whole_number(self.extend_grid, "extend_grid (decades)", minimum=0)
        if self.extend_grid > 12:
            raise ActstoreError(f"extend_grid is at most 12 decades, got {self.extend_grid}")
        if not self.cache_mb >= 0:
            raise ActstoreError(f"cache_mb must be >= 0 (MiB), got {self.cache_mb!r}")
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        object.__setattr__(self, "Cs", tuple(float(c) for c in self.Cs))
        object.__setattr__(self, "decoders", tuple(self.decoders))

    def penalties(self, decoder: str) -> tuple[float, ...]:
        """The penalty sweep of a decoder."""
        return self.alphas if PENALTY[decoder][0] == "alpha" else self.Cs

    def to_json(self) -> dict[str, Any]:
        """The settings that determine the numbers (device and cache do not)."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                if k in self.RESULT_KEYS}

    def key(self) -> str:
        """A short hash of :meth:`to_json`: results with the same key are interchangeable."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def make_folds(labels: Mapping[str, np.ndarray], config: ProbeConfig) -> tuple[Folds, dict]:
    """Folds for a probe set, and the labels that are decoded.

    With ``config.split`` the named label array is the explicit split (and is not decoded);
    otherwise stratified K-fold on all categorical labels together.

    Parameters
    ----------
    labels : mapping name -> ndarray of shape (n_samples,)
    config : ProbeConfig
        ``split``, ``n_splits`` and ``seed`` are used.

    Returns
    -------
    folds : Folds
    decoded : dict name -> labels
        ``labels`` without the split array.

    Raises
    ------
    ActstoreError
        If ``config.split`` names no label array, or the split or folds cannot be made.
    """
    return label_folds(labels, config.n_splits, config.seed, config.split)


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


def _materialize(source: CachedSource) -> Any:
    """The whole activation matrix (from the cache when it fits, else read once more)."""
    blocks = [blk for _, _, blk in source.blocks()]
    xp = get_namespace(blocks[0])
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=0)


def decode(
    source: BlockSource,
    labels: Mapping[str, np.ndarray],
    config: ProbeConfig | None = None,
    folds: Folds | None = None,
) -> DecodeResult:
    """Run every decoder of ``config`` on one streamed activation matrix.

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
    config = config or ProbeConfig()
    if not isinstance(config, ProbeConfig):
        raise ActstoreError(
            f"config must be a ProbeConfig, not {type(config).__name__}; e.g. "
            "ProbeConfig(decoders=('ridge',), n_splits=5)"
        )
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
    if "logistic" in config.decoders and not targets.categorical():
        # Logistic decoders need classes; continuous features are the ridge decoders' job.
        kept = tuple(d for d in config.decoders if d != "logistic")
        if not kept:
            raise ActstoreError(
                f"logistic decoders need a categorical feature, but {', '.join(names)} "
                "are continuous; add --decoders ridge"
            )
        config = ProbeConfig(**{**asdict(config), "decoders": kept})
    backend = None if config.device == "numpy" else config.device
    src = CachedSource(source, backend=backend, cache_bytes=int(config.cache_mb * 2**20))
    t0 = time.perf_counter()
    form = choose_form(source.d, folds, len(config.alphas), src.cache_bytes,
                       config.standardize)
    stats: GroupStats | GramStats
    # per-fold moments are needed only by the primal ridge form
    pooled = form == "lgo" or "ridge" not in config.decoders
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
        scores = DECODERS[name](src, targets, folds, pen, stats, config)
        larger_is_stronger = PENALTY[name][1]
        strong_first = np.argsort(-np.asarray(pen)) if larger_is_stronger else np.argsort(pen)
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
    larger_is_stronger = PENALTY[name][1]
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
        more = DECODERS[name](src, sub, folds, ext, sub_stats, config)
        grid = np.concatenate([pen, ext])
        strong_first = np.argsort(-grid) if larger_is_stronger else np.argsort(grid)
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

    X = _materialize(src)
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
        Xk = xp.take(X, _index_on(rows, X), axis=0)
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
    elif not isinstance(config, ProbeConfig):
        raise ActstoreError(
            f"config must be a ProbeConfig, not {type(config).__name__}; e.g. "
            "ProbeConfig(decoders=('ridge',), n_splits=5), or pass its fields as keywords"
        )
    elif options:
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
        pname = PENALTY[d][0]
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
