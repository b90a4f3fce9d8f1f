"""Feature complexity (Fel et al. 2024): V-information of dictionary features across layers.

A layer's activations are factorised into ``k`` dictionary features (:func:`~._nmf.nmf`);
each feature's per-input value (its code ``z``) becomes a continuous decoding target. With the
linear-Gaussian predictive family and ``z`` standardised, the V-information a layer ``l`` holds
about ``z`` is the held-out R^2 of a ridge probe, clipped at zero::

    I_V(f_l(x) -> z) = max(0, R^2)

where R^2 is the mean over folds of the held-out R^2 at the penalty it selects (the clip
applies to that mean, not to each fold)

computed by the probe engine for all ``k`` features at once (one eigendecomposition per fold
serves every feature and penalty, :func:`~actstore.probes.ridge_cv`). Then

* complexity ``K(z) = 1 - mean over probed layers of I_V`` (in [0, 1]: features decodable
  from early layers are simple);
* time-to-decode ``1 - mean over checkpoints of I_V`` from the feature's own layer (in
  [0, 1]: features decodable from early in training have small values; inferred);
* ``decodable_step``: the first checkpoint whose I_V reaches ``threshold`` (inferred);
* importance: signed gradient x activation of the class logit (:mod:`._importance`).

Results: ``/results/complexity/<name>`` (one Dataset over runs), and the codes of each run as
a feature set ``/results/nmf/<name>.<run>`` with dims (sample, atom) (docs/analyses.md).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._dask import for_workers, in_this_process_only
from actstore._errors import ActstoreError
from actstore.core._folds import Folds, describe_folds
from actstore.core._stats import ArraySource, BlockSource, CachedSource
from actstore.core._targets import FeatureSpec, Targets
from actstore.decode._metrics import select_penalty
from actstore.decode._ridge import DEFAULT_ALPHAS, ridge_cv

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ANALYSIS",
    "CODES_ANALYSIS",
    "code_targets",
    "codes_as_labels",
    "complexity_score",
    "decodable_step",
    "read_codes",
    "run_complexity",
    "time_to_decode",
    "vinfo_of_codes",
]

ANALYSIS = "complexity"
#: The codes of every run are a feature set under ``/results/nmf/<name>.<run>``.
CODES_ANALYSIS = "nmf"


def code_targets(codes: np.ndarray, prefix: str = "atom") -> tuple[Targets, np.ndarray]:
    """Standardised continuous targets from feature values, for the decoder engine.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, k)

    Returns
    -------
    targets : Targets
        One z-scored column per feature that varies (named ``<prefix><i>``).
    usable : ndarray of shape (k,), bool
        False for constant (e.g. unused, all-zero) features, which have no target column.
    """
    Z = np.asarray(codes, dtype=np.float64)
    if Z.ndim != 2:
        raise ActstoreError(f"codes must be 2-D (samples, atoms), got shape {Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ActstoreError("codes hold NaN or infinite values")
    sd = Z.std(axis=0)
    usable = sd > 1e-12 * np.maximum(np.abs(Z).max(axis=0), 1e-300)
    idx = np.flatnonzero(usable)
    Y = (Z[:, idx] - Z[:, idx].mean(axis=0)) / sd[idx]
    specs = tuple(FeatureSpec(f"{prefix}{i}", "continuous", j, j + 1) for j, i in enumerate(idx))
    codes_int = np.full((Z.shape[0], idx.size), -1, dtype=np.int64)
    return Targets(Y, codes_int, specs), usable


def vinfo_of_codes(
    source: BlockSource | Any,
    codes: np.ndarray,
    folds: Folds,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    backend: str | None = None,
    standardize: bool = True,
) -> dict[str, np.ndarray]:
    """V-information (linear-Gaussian family) of every feature from one representation.

    Parameters
    ----------
    source : BlockSource or array of shape (n_samples, n_units)
        The representation the features are decoded from (streamed).
    codes : ndarray of shape (n_samples, k)
        Feature values (any real values; standardised here).
    folds : Folds
    alphas : sequence of float
        Ridge penalties; one is chosen per feature by the mean held-out R^2 over folds.
    backend : str, optional
        ``"torch"``, ``"cuda"`` or ``"cupy"`` for the arithmetic.
    standardize : bool
        Decode from units z-scored with each training fold's statistics (default), so that
        the V-information does not depend on the layer's scale.

    Returns
    -------
    dict
        ``vinfo`` (k,): ``max(0, r2)``; ``r2`` (k,): mean over folds of the held-out R^2 at
        the chosen penalty (the selection criterion); ``alpha`` (k,); NaN for constant
        features.
    """
    Folds.check(folds)
    if not hasattr(source, "blocks"):
        source = ArraySource(source)
    targets, usable = code_targets(codes)
    k = usable.size
    out = {key: np.full(k, np.nan) for key in ("vinfo", "r2", "alpha")}
    if not usable.any():
        return out
    src = CachedSource(source, backend=backend)
    scores = ridge_cv(src, targets, folds, alphas, standardize=standardize)
    q = len(targets.features)
    strong_first = np.argsort(-np.asarray(alphas))
    chosen, summary = select_penalty(
        {k_: v for k_, v in scores.items() if k_ != "chance"}, ["continuous"] * q, strong_first
    )
    out["r2"][usable] = summary["r2"]
    out["vinfo"][usable] = np.maximum(summary["r2"], 0.0)
    out["alpha"][usable] = np.asarray(alphas)[chosen]
    return out


def complexity_score(vinfo: np.ndarray) -> np.ndarray:
    """``K = 1 - mean over layers of I_V``, clipped to [0, 1].

    Parameters
    ----------
    vinfo : ndarray of shape (n_layers, k)
        V-information of each feature from each probed layer (NaN layers are ignored).

    Returns
    -------
    ndarray of shape (k,)
    """
    v = np.asarray(vinfo, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            m = np.nanmean(np.clip(v, 0.0, 1.0), axis=0)
    return np.clip(1.0 - m, 0.0, 1.0)


def time_to_decode(vinfo: np.ndarray) -> np.ndarray:
    """``1 - mean over checkpoints of I_V`` (in [0, 1]; 0 = decodable from the start).

    Parameters
    ----------
    vinfo : ndarray of shape (n_checkpoints, k)
        V-information of each feature at each checkpoint, in training order (NaN
        checkpoints are ignored).

    Returns
    -------
    ndarray of shape (k,), float64
        In [0, 1]; NaN for a feature with no finite value.
    """
    return complexity_score(vinfo)


def decodable_step(vinfo: np.ndarray, steps: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """First training step at which each feature's V-information reaches ``threshold``.

    Parameters
    ----------
    vinfo : ndarray of shape (n_checkpoints, k)
    steps : sequence of int, length n_checkpoints (increasing)

    Returns
    -------
    ndarray of shape (k,), float64
        The step, or NaN if the feature never reaches the threshold.
    """
    v = np.nan_to_num(np.asarray(vinfo, dtype=np.float64), nan=-np.inf)
    hit = v >= threshold
    first = np.argmax(hit, axis=0)
    out = np.asarray(steps, dtype=np.float64)[first]
    return np.where(hit.any(axis=0), out, np.nan)


def codes_as_labels(ds: Any, prefix: str = "atom") -> dict[str, np.ndarray]:
    """The codes of a ``/results/nmf`` Dataset as continuous labels for the decoder engine.

    Constant (unused) atoms are left out. The result can be passed as ``labels`` to
    :func:`actstore.probes.decode` or :func:`actstore.probes.probe_arrays`.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/nmf/<name>.<run>`` result (see :func:`read_codes`): ``codes`` of dims
        (sample, atom) and the ``atom`` coordinate.
    prefix : str
        Label names are ``<prefix><atom>``.

    Returns
    -------
    dict str -> ndarray of shape (n_samples,), float64
        One entry per atom whose code varies over samples, in atom order.

    Raises
    ------
    ActstoreError
        If the codes hold NaN or infinite values.
    """
    Z = np.asarray(ds["codes"].values, dtype=np.float64)
    _, usable = code_targets(Z)
    atoms = ds["atom"].values.tolist()
    return {f"{prefix}{atoms[i]}": Z[:, i] for i in np.flatnonzero(usable)}


def read_codes(store: Any, name: str, run: str) -> xr.Dataset:
    """The dictionary features of one run (``/results/nmf/<name>.<run>``) as a Dataset.

    Parameters
    ----------
    store : Store
        An open store (:func:`actstore.open`).
    name : str
        Name of the complexity computation (``run_complexity(name=...)``).
    run : str
        Run id.

    Returns
    -------
    xarray.Dataset
        Loaded into memory: ``codes`` (sample, atom), float32, the codes ``Z``, and
        ``dictionary`` (atom, ``<layer>_unit``), float32, unit-norm atoms ``D``; the run's
        ``sample`` ids as coordinate; attributes ``run``, ``layer``, ``checkpoint``, ``k``
        and the fit's ``error``, ``relative_error``, ``clipped`` and ``n_epochs``.

    Raises
    ------
    ActstoreError
        If the store holds no such result (the message lists the results).
    """
    return store.read_result(CODES_ANALYSIS, f"{name}.{run}")


# -- store level -------------------------------------------------------------------------------


def _head_layer(reader: Any, head: str | None) -> str:
    """The logits layer: ``head`` (which the run must record), or ``out`` by default."""
    if head is None:
        return "out"
    if head not in reader.layers:
        raise ActstoreError(
            f"run {reader.run_id!r} has no layer {head!r} to use as the logits layer; "
            f"layers: {', '.join(reader.layers)}"
        )
    return head


def _dictionary_layer(reader: Any, layer: str | None, head: str) -> str:
    layers = reader.layers
    if layer is not None:
        if layer not in layers:
            raise ActstoreError(
                f"run {reader.run_id!r} has no layer {layer!r}; layers: {', '.join(layers)}"
            )
        return layer
    if head in layers and layers.index(head) > 0:
        return str(layers[layers.index(head) - 1])
    return str(layers[-1])


def _probed_layers(order: Sequence[str], layer: str, head: str,
                   patterns: Sequence[str] | None) -> list[str]:
    """Layers probed for complexity: up to ``layer`` (not the head), or those matching."""
    import fnmatch

    if patterns is None:
        return [x for x in order[: list(order).index(layer) + 1] if x != head]
    return list(dict.fromkeys(x for p in patterns for x in order if fnmatch.fnmatchcase(x, p)))


def _heads(reader: Any, n_logits: int) -> list[tuple[str, int, int]]:
    """``(feature, first logit column, n_classes)`` of each output head of a zoo run."""
    cfg = reader.attrs.get("config") or {}
    heads = (cfg.get("task") or {}).get("heads") if isinstance(cfg, dict) else None
    out, start = [], 0
    for h in heads or []:
        out.append((str(h["name"]), start, int(h["n_classes"])))
        start += int(h["n_classes"])
    return out if start == n_logits else []


def _job(url: str, run: str, opts: dict[str, Any], storage_options: dict | None,
         tick: Callable[[], None] | None = None) -> dict:
    """One run: NMF, V-information per layer and checkpoint, importance (small arrays back).

    ``tick()`` is called after the NMF and after each decoded layer or checkpoint.
    """
    from actstore.decode._decode import ProbeConfig, make_folds
    from actstore.features._importance import linear_importance, recover_linear_head
    from actstore.features._nmf import nmf
    from actstore.features._variance import ReaderSource, default_features
    from actstore.store import open_store

    rd = open_store(url, storage_options=storage_options).reader(run)
    head = _head_layer(rd, opts["head_layer"])
    layer = _dictionary_layer(rd, opts["layer"], head)
    tick = tick or (lambda: None)
    steps = rd.complete_steps
    if not steps:
        raise ActstoreError(f"run {run!r} has no complete checkpoint")
    step = steps[-1] if opts["step"] is None else int(opts["step"])
    if step not in steps:
        raise ActstoreError(f"run {run!r} has no complete checkpoint {step}; complete: {steps}")
    order = rd.layers
    probed = _probed_layers(order, layer, head, opts["layers"])
    res = nmf(ReaderSource(rd, layer, step), opts["k"], mode=opts["mode"],
              batch_rows=opts["batch_rows"], max_epochs=opts["max_epochs"], tol=opts["tol"],
              seed=opts["seed"], negative=opts["negative"], backend=opts["backend"])
    tick()
    Z = res.codes
    labels = rd.labels
    feats = default_features(labels, opts["split"])
    use = {f: labels[f] for f in feats}
    if opts["split"] is not None:
        use[opts["split"]] = labels[opts["split"]]
    if use:
        folds, _ = make_folds(use, ProbeConfig(decoders=("ridge",), n_splits=opts["n_splits"],
                                               seed=opts["seed"], split=opts["split"]))
    else:  # a probe set without labels: plain seeded K-fold
        from actstore.core._folds import stratified_folds

        folds = stratified_folds(Z.shape[0], opts["n_splits"], opts["seed"])
    alphas = opts["alphas"]
    by_layer = {}
    for lay in probed:
        by_layer[lay] = vinfo_of_codes(ReaderSource(rd, lay, step), Z, folds, alphas,
                                       opts["backend"], opts["standardize"])
        tick()
    ckpts = steps if opts["over_checkpoints"] else [step]
    by_step = {}
    for s in ckpts:
        if s == step and layer in by_layer:
            by_step[s] = by_layer[layer]
            continue
        by_step[s] = vinfo_of_codes(ReaderSource(rd, layer, s), Z, folds, alphas,
                                    opts["backend"], opts["standardize"])
        tick()
    imp: dict[str, np.ndarray] = {}
    basis: dict[str, str] = {}
    residual = np.nan
    if opts["importance"] and head in order:
        A = rd.read(layer, step)
        logits = rd.read(head, step)
        lin = recover_linear_head(A, logits)
        residual = lin.residual
        if lin.is_exact(opts["head_tol"]):
            for fname, start, n_cls in _heads(rd, logits.shape[1]):
                y = np.asarray(labels.get(fname, []))
                basis[fname] = "label"
                if y.shape != (Z.shape[0],) or y.dtype.kind not in "iu" or (
                    y.size and (y.min() < 0 or y.max() >= n_cls)
                ):
                    # the probe set does not label this head's feature: use the network's
                    # own decision (the predicted class)
                    y = np.argmax(logits[:, start : start + n_cls], axis=1)
                    basis[fname] = "predicted"
                W = lin.W[start : start + n_cls]
                imp[fname] = linear_importance(Z, res.dictionary, W, y)["importance"]
    return {
        "run": run, "layer": layer, "step": step, "probed": probed, "steps": ckpts,
        "codes": Z.astype(np.float32), "dictionary": res.dictionary.astype(np.float32),
        "sample": rd.sample, "error": res.error, "relative_error": res.relative_error,
        "clipped": res.clipped, "n_epochs": res.n_epochs,
        "vinfo_layer": {k: v["vinfo"] for k, v in by_layer.items()},
        "vinfo_step": {k: v["vinfo"] for k, v in by_step.items()},
        "importance": imp, "basis": basis, "head_residual": residual, "folds": folds.description,
    }


def _codes_dataset(p: dict[str, Any], name: str) -> Any:
    import xarray as xr

    k = p["codes"].shape[1]
    unit = f"{p['layer']}_unit"
    return xr.Dataset(
        {"codes": (("sample", "atom"), p["codes"]),
         "dictionary": (("atom", unit), p["dictionary"])},
        coords={"sample": p["sample"], "atom": np.arange(k)},
        attrs={"analysis": CODES_ANALYSIS, "result": name, "run": p["run"],
               "layer": p["layer"], "checkpoint": int(p["step"]), "k": int(k),
               "error": float(p["error"]), "relative_error": float(p["relative_error"]),
               "clipped": float(p["clipped"]), "n_epochs": int(p["n_epochs"]),
               "description": (
                   "Dictionary features of one layer: activations ~ codes @ dictionary with "
                   "codes, dictionary >= 0 (NMF); dictionary rows have unit norm, so codes are "
                   "in activation units. Use the codes as continuous decoding targets "
                   "(actstore.probes.codes_as_labels).")},
    )


def run_complexity(
    url: str,
    name: str = "default",
    runs: str | Sequence[str] | None = None,
    k: int = 32,
    layer: str | None = None,
    step: int | None = None,
    layers: Sequence[str] | None = None,
    head_layer: str | None = None,
    n_splits: int = 5,
    seed: int = 0,
    split: str | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    over_checkpoints: bool = True,
    threshold: float = 0.5,
    importance: bool = True,
    head_tol: float = 1e-3,
    negative: str = "clip",
    mode: str = "minibatch",
    batch_rows: int = 2048,
    max_epochs: int = 200,
    tol: float = 1e-5,
    standardize: bool = True,
    backend: str | None = None,
    scheduler: str | None = None,
    n_workers: int | None = 1,
    write: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> xr.Dataset:
    """Dictionary features, their complexity, time-to-decode and importance for runs of a store.

    Parameters
    ----------
    url : str
        Store path or URL.
    name : str
        Results: ``/results/complexity/<name>`` and ``/results/nmf/<name>.<run>``.
    runs : str or list of str, optional
        Run ids or glob patterns (default all).
    k : int
        Dictionary features per run (may exceed the layer's width).
    layer : str, optional
        The factorised layer (default: the layer before ``head_layer``, i.e. the input of
        the read-out; else the last layer).
    step : int, optional
        Checkpoint of the dictionary (default: the last complete one).
    layers : list of str, optional
        Layers (names or glob patterns) probed for complexity (default: every layer up to
        ``layer``, forward order).
    head_layer : str, optional
        The recorded logits layer; every run must record it. Default: ``out`` where a run
        records it (the model zoo's name).
    n_splits, seed, split
        Folds, as in :func:`actstore.probes.run_probes`.
    alphas : sequence of float
        Ridge penalties.
    over_checkpoints : bool
        Also decode the features from ``layer`` at every complete checkpoint.
    threshold : float
        V-information that counts as decodable (``decodable_step``).
    importance : bool
        Gradient x activation of the class logit of every head whose logits are an exact
        linear function of ``layer`` (to ``head_tol``; recovered from the recorded logits).
        The class is each input's label when the probe set labels the head's feature, else
        the network's predicted class (``importance_class``).
    negative : {"clip", "error"}
        Negative activations (leaky ReLU, logits) are clipped to zero (the clipped fraction
        is reported), or refused.
    mode, batch_rows, max_epochs, tol, backend
        NMF solver settings (:func:`actstore.probes.nmf`).
    standardize : bool
        The V-information decoders see units z-scored with each training fold's statistics
        (default), so that untrained layers of tiny scale are not read as empty.
    scheduler, n_workers
        Dask (one task per run); ``n_workers=1``: in this process.
    overwrite : bool
        Replace results of this name (the complexity result and the codes of each run)
        computed with other settings (else refused before anything is computed; results with
        the same settings are replaced). Once the new result is written, codes of this name
        for runs it does not hold (``/results/nmf/<name>.<run>`` of runs no longer selected)
        are removed.
    progress : callable, optional
        ``progress(stage, done, total)`` over NMF fits and decoded layers / checkpoints.

    Returns
    -------
    xarray.Dataset
        Dims run, atom, layer, checkpoint, target (the feature a head reports); see
        docs/analyses.md.

    Raises
    ------
    ActstoreError
        If an argument is invalid (name, ``k``, ``threshold``, folds, workers), a selected
        run lacks the layers or checkpoint asked for, negative activations are met with
        ``negative="error"``, or results of this name exist with other settings and not
        ``overwrite``.
    """
    import fnmatch

    import xarray as xr

    from actstore.similarity._jobs import check_seed, check_workers
    from actstore.similarity._select import check_not_blank
    from actstore.store import open_store
    from actstore.store._store import check_settings, settings_json

    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ActstoreError(f"result name {name!r} must use letters, digits, _ - .")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ActstoreError(f"the number of features k must be a positive integer, got {k!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ActstoreError(f"threshold must lie in [0, 1], got {threshold}")
    check_seed(seed)
    check_workers(n_workers)
    if isinstance(n_splits, bool) or n_splits < 2:
        raise ActstoreError(f"cross-validation needs at least 2 folds, got {n_splits}")
    for what, v in (("max_epochs", max_epochs), ("batch_rows", batch_rows)):
        if isinstance(v, bool) or v < 1:
            raise ActstoreError(f"{what} must be 1 or more, got {v}")
    store = open_store(url, mode="a" if write else "r", storage_options=storage_options)
    all_runs = store.run_ids()
    check_not_blank(runs, "run", all_runs)
    pats = None if runs is None else ([runs] if isinstance(runs, str) else list(runs))
    if pats is not None:
        pats = [p.strip() for x in pats for p in x.split(",") if p.strip()]
        if pats == ["all"]:
            pats = None
    chosen = [r for r in all_runs if pats is None or any(fnmatch.fnmatchcase(r, p)
                                                         for p in pats)]
    if not chosen:
        raise ActstoreError(
            f"no run of {url} matches {runs!r}; runs: {', '.join(all_runs) or 'none'}"
        )
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        layers = [p.strip() for x in layers for p in str(x).split(",") if p.strip()]
    units = 0
    known: list[str] = []
    probed_of: dict[str, list[str]] = {}
    used_steps: dict[str, list[int]] = {}
    for r in chosen:  # check names before computing anything
        rd = store.reader(r)
        known += [x for x in rd.layers if x not in known]
        head = _head_layer(rd, head_layer)
        src = _dictionary_layer(rd, layer, head)
        if split is not None and split not in rd.labels:
            raise ActstoreError(f"run {r!r} has no label {split!r} to split on")
        complete = rd.complete_steps
        if not complete or (step is not None and step not in complete):
            raise ActstoreError(
                f"run {r!r} has no complete checkpoint"
                + (f" {step}; complete: {', '.join(map(str, complete))}"
                   if step is not None and complete else "")
            )
        probed_of[r] = _probed_layers(rd.layers, src, head, layers)
        used_steps[r] = [int(x) for x in complete] if over_checkpoints else [
            int(complete[-1] if step is None else step)]
        n_steps = len(complete) if over_checkpoints else 1
        units += 1 + len(probed_of[r]) + n_steps - (1 if src in probed_of[r] else 0)
    if layers == []:
        raise ActstoreError(
            "the probed layer selection is empty; give layer names or patterns, or leave it "
            f"out for every layer up to the factorised one; layers: {', '.join(known)}"
        )
    for pat in layers or []:
        if not any(fnmatch.fnmatchcase(x, pat) for x in known):
            raise ActstoreError(f"no layer matches {pat!r}; layers: {', '.join(known)}")
    for r, probed in probed_of.items():
        if not probed:
            raise ActstoreError(
                f"no layer of run {r!r} matches {', '.join(layers or [])!r}; layers: "
                f"{', '.join(store.reader(r).layers)}"
            )
    opts = {"k": int(k), "layer": layer, "step": step, "layers": layers,
            "head_layer": head_layer, "n_splits": n_splits, "seed": seed, "split": split,
            "alphas": tuple(float(a) for a in alphas), "over_checkpoints": over_checkpoints,
            "importance": importance, "head_tol": head_tol, "negative": negative,
            "mode": mode, "batch_rows": batch_rows, "max_epochs": max_epochs, "tol": tol,
            "standardize": bool(standardize), "backend": backend}
    # what determines the numbers (not the array backend); each written result records it
    # the runs as asked for: the same command on a store with more runs or checkpoints
    # refreshes the results
    settings = {**{key: v for key, v in opts.items() if key != "backend"},
                "runs": runs if runs is None or isinstance(runs, str) else list(runs),
                "threshold": float(threshold)}
    if write:
        check_settings(store, ANALYSIS, name, settings, overwrite)
        for r in chosen:
            check_settings(store, CODES_ANALYSIS, f"{name}.{r}", settings, overwrite)
    done = [0]

    def tick(n: int = 1) -> None:
        done[0] = min(units, done[0] + n)
        if progress is not None:
            progress(ANALYSIS, done[0], units)

    tick(0)
    in_process = in_this_process_only(url) or (scheduler is None and n_workers == 1)
    if in_process:
        parts = [_job(url, r, opts, storage_options, tick) for r in chosen]
    else:
        from distributed import as_completed

        from actstore._dask import dask_client

        with dask_client(scheduler, n_workers) as client:
            futs = {client.submit(_job, for_workers(url), r, opts, storage_options, pure=False): i
                    for i, r in enumerate(chosen)}
            got: list[Any] = [None] * len(chosen)
            for fut in as_completed(futs):
                one = fut.result()
                got[futs[fut]] = one
                tick(1 + len(one["probed"]) + len(one["steps"])
                     - (1 if one["layer"] in one["probed"] and one["step"] in one["steps"]
                        else 0))
            parts = got
    lays = list(dict.fromkeys(x for p in parts for x in p["probed"]))
    ckpts = sorted({int(s) for p in parts for s in p["steps"]})
    heads = list(dict.fromkeys(h for p in parts for h in p["importance"]))
    R, K, L, S, H = len(parts), int(k), len(lays), len(ckpts), len(heads)
    v_lay = np.full((R, L, K), np.nan)
    v_step = np.full((R, S, K), np.nan)
    imp = np.full((R, H, K), np.nan)
    basis = np.full((R, H), "", dtype=object)
    comp, ttd, first, mean_code = (np.full((R, K), np.nan) for _ in range(4))
    per_run: dict[str, list[Any]] = {key: [] for key in (
        "layer", "checkpoint", "error", "relative_error", "clipped", "head_residual")}
    for i, p in enumerate(parts):
        for lay, v in p["vinfo_layer"].items():
            v_lay[i, lays.index(lay)] = v
        for s, v in p["vinfo_step"].items():
            v_step[i, ckpts.index(int(s))] = v
        for h, v in p["importance"].items():
            imp[i, heads.index(h)] = v
            basis[i, heads.index(h)] = p["basis"][h]
        comp[i] = complexity_score(np.stack([p["vinfo_layer"][x] for x in p["probed"]]))
        vs = np.stack([p["vinfo_step"][s] for s in p["steps"]])
        ttd[i] = time_to_decode(vs)
        first[i] = decodable_step(vs, p["steps"], threshold)
        mean_code[i] = p["codes"].astype(np.float64).mean(axis=0)
        per_run["layer"].append(p["layer"])
        per_run["checkpoint"].append(int(p["step"]))
        for key in ("error", "relative_error", "clipped", "head_residual"):
            per_run[key].append(float(p[key]))
    run_ids = [p["run"] for p in parts]
    ds = xr.Dataset(
        {
            "complexity": (("run", "atom"), comp),
            "time_to_decode": (("run", "atom"), ttd),
            "decodable_step": (("run", "atom"), first),
            "code_mean": (("run", "atom"), mean_code),
            "vinfo_layer": (("run", "layer", "atom"), v_lay),
            "vinfo_checkpoint": (("run", "checkpoint", "atom"), v_step),
            "importance": (("run", "target", "atom"), imp),
            "importance_class": (("run", "target"), basis),
            "source_layer": (("run",), np.asarray(per_run["layer"], dtype=object)),
            "source_checkpoint": (("run",), np.asarray(per_run["checkpoint"], dtype=np.int64)),
            "nmf_error": (("run",), np.asarray(per_run["error"])),
            "nmf_relative_error": (("run",), np.asarray(per_run["relative_error"])),
            "clipped": (("run",), np.asarray(per_run["clipped"])),
            "head_residual": (("run",), np.asarray(per_run["head_residual"])),
        },
        coords={"run": run_ids, "atom": np.arange(K), "layer": lays,
                "checkpoint": np.asarray(ckpts, dtype=np.int64),
                "target": np.asarray(heads, dtype=str)},
        attrs={
            "analysis": ANALYSIS,
            "description": (
                "Dictionary features (NMF, k per run) of one layer; V-information (held-out "
                "ridge R^2 of the standardised code, clipped at 0) from every probed layer "
                "(vinfo_layer) and from the feature's layer at every checkpoint "
                "(vinfo_checkpoint); complexity = 1 - mean over layers; time_to_decode = 1 - "
                "mean over checkpoints (inferred); importance = mean gradient x activation of "
                "each input's class logit (linear head recovered from the recorded logits)."
            ),
            "folds": describe_folds(p["folds"] for p in parts),
            "threshold": float(threshold),
            "codes": f"results/{CODES_ANALYSIS}/{name}.<run>",
            "actstore.config": settings_json(settings),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    if write:
        for p in parts:
            codes = _codes_dataset(p, name)
            codes.attrs["actstore.config"] = settings_json(settings)
            store.write_result(CODES_ANALYSIS, f"{name}.{p['run']}", codes)
        store.write_result(ANALYSIS, name, ds)
        # only now that the new result is complete: codes of this name for runs it does not
        # hold (an --overwrite with another run selection, a run removed from the store)
        # belong to no current result
        _remove_stale_codes(store, name, run_ids)
    return ds


def _remove_stale_codes(store: Any, name: str, runs: Sequence[str]) -> list[str]:
    """Remove ``/results/nmf/<name>.<run>`` of every run not in ``runs``.

    Only codes written for the complexity result ``name`` (their ``result`` attribute) are
    removed, not those of a result whose name merely starts with ``<name>.``.

    Returns
    -------
    list of str
        The removed result names.
    """
    keep = {f"{name}.{r}" for r in runs}
    removed = []
    for other in store.result_names(CODES_ANALYSIS):
        if not other.startswith(f"{name}.") or other in keep:
            continue
        if store.result_attrs(CODES_ANALYSIS, other).get("result") != name:
            continue
        store.remove_result(CODES_ANALYSIS, other)
        removed.append(other)
    return removed
