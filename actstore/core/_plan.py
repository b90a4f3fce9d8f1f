"""The plan of a store-wide analysis: which (run, checkpoint, layer) jobs, on which features.

:func:`plan_jobs` selects runs, checkpoints and layers (names or glob patterns) and the
features of each run's probe set, and checks every input (names, labels, folds) before
anything is computed. The probe engine and the variance analysis plan their jobs with it.
"""

from __future__ import annotations

import fnmatch
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from actstore._errors import ActstoreError
from actstore.core._folds import check_folds, label_folds
from actstore.core._reprs import short_list
from actstore.core._targets import encode_targets

__all__ = ["META_PREFIXES", "Checkpoints", "Job", "ProbePlan", "ProbeWarning", "Selection",
           "feature_kinds", "plan_jobs"]

#: A selection of runs, layers or features: names or glob patterns, "all"/None for all.
Selection = str | Sequence[str] | None
#: A selection of checkpoints: "all", "first", "last" or training steps.
Checkpoints = str | Sequence[int | str] | None

#: Labels that describe the split design rather than the stimuli (``heldout_<feature>`` of
#: Trifeature, ``split``): not decoded unless named with ``features``; usable with ``split``.
META_PREFIXES = ("heldout_", "split")


class ProbeWarning(UserWarning):
    """Something was skipped (e.g. an incomplete checkpoint); the rest was computed."""


@dataclass(frozen=True)
class Job:
    """One unit of work: decode all selected features of one (run, checkpoint, layer)."""

    run: str
    step: int
    layer: str
    units: int

    @property
    def key(self) -> str:
        return f"{self.run}/{self.step}/{self.layer}"


@dataclass
class ProbePlan:
    """The jobs of a probe computation and the coordinates of its result.

    Attributes
    ----------
    jobs : list of Job
    runs, layers, features : list of str
    steps : list of int
        Union of the selected checkpoints over runs.
    features_of : dict run -> list of str
        The decoded features of each run (its probe set's labels among the selection).
    kinds : dict feature -> str
    skipped : list of str
        Descriptions of incomplete checkpoints that were left out.
    """

    jobs: list[Job]
    runs: list[str]
    steps: list[int]
    layers: list[str]
    features: list[str]
    features_of: dict[str, list[str]]
    kinds: dict[str, str]
    skipped: list[str]
    units: dict[tuple[str, str], int]

    def __repr__(self) -> str:
        return (f"ProbePlan({len(self.jobs)} jobs: runs={short_list(self.runs, 6)}, "
                f"steps={short_list(self.steps, 6)}, layers={short_list(self.layers, 6)}, "
                f"features={short_list(self.features, 6)}, skipped={len(self.skipped)})")


def _patterns(sel: str | Sequence[str] | None, what: str) -> list[str] | None:
    if sel is None:
        return None
    items = [s.strip() for s in (sel.split(",") if isinstance(sel, str) else sel)]
    items = [s for s in items if s]
    if not items:
        raise ActstoreError(
            f"the {what} selection {sel!r} is empty; give 'all' or comma-separated {what}s"
        )
    return None if items == ["all"] else items


def _match(names: Sequence[str], pats: list[str] | None, what: str, valid: Sequence[str]) -> list:
    if pats is None:
        return list(names)
    out = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    for p in pats:
        if not any(fnmatch.fnmatchcase(v, p) for v in valid):
            raise ActstoreError(
                f"no {what} matches {p!r}; {what}s: {', '.join(valid) or 'none'}"
            )
    return out


def _select_steps(
    reader: Any, sel: str | Sequence[int | str] | None, strict: bool, skipped: list[str]
) -> list[int]:
    planned = reader.planned_steps
    written = [int(s) for s in reader.steps if s >= 0]
    complete = set(reader.complete_steps)
    candidates = sorted(set(planned) | set(written))
    items = _patterns(sel if isinstance(sel, str) or sel is None else [str(s) for s in sel],
                      "checkpoint")
    chosen: list[int] = []
    if items is None:
        chosen = candidates
    else:
        # first/last: the run's first/last *complete* checkpoint (a run still training has
        # planned steps not written yet), as in ``actstore similarity``
        done = sorted(complete)
        for it in items:
            if it in ("first", "last"):
                if done:
                    chosen.append(done[0] if it == "first" else done[-1])
                elif candidates:
                    what = f"run {reader.run_id!r} has no complete checkpoint"
                    if strict:
                        raise ActstoreError(
                            f"{what} for --checkpoints {it}; finish one (re-run training/"
                            "dump), leave the run out with --runs or leave out --strict"
                        )
                    if what not in skipped:
                        skipped.append(what)
                continue
            try:
                step = int(it)
            except ValueError:
                raise ActstoreError(
                    f"checkpoint {it!r} is not a step number, 'first', 'last' or 'all'"
                ) from None
            if step not in candidates:
                raise ActstoreError(
                    f"run {reader.run_id!r} has no checkpoint at step {step}; steps: "
                    f"{', '.join(map(str, candidates)) or 'none'}"
                )
            chosen.append(step)
    out = []
    for s in sorted(set(chosen)):
        if s in complete:
            out.append(s)
            continue
        what = f"run {reader.run_id!r} checkpoint {s} is incomplete"
        if strict:
            raise ActstoreError(
                f"{what}; finish it (re-run training/dump) or leave out --strict to skip it"
            )
        skipped.append(what)
    return out


def feature_kinds(
    rd: Any, feats: list[str], *, n_splits: int, seed: int, split: str | None,
    checked: dict[str, list[str]],
) -> list[str]:
    """Check that a run's features can be decoded together (folds, classes); their kinds.

    The folds are ``n_splits``-fold stratified and seeded, or the explicit split in label
    ``split``; ``checked`` caches the answer per (probe set, features).
    """
    key = json.dumps([rd.attrs.get("probe_set"), feats])
    if key not in checked:
        labels = rd.labels
        use = {f: labels[f] for f in feats}
        if split is not None:
            if split not in labels:
                raise ActstoreError(
                    f"run {rd.run_id!r} has no label {split!r} to split on; "
                    f"labels: {', '.join(labels)}"
                )
            use[split] = labels[split]
        folds, decoded = label_folds(use, n_splits, seed, split)
        targets = encode_targets(decoded)
        check_folds(folds, targets.labels())
        checked[key] = [f.kind for f in targets.features]
    return checked[key]



def plan_jobs(
    store: Any,
    runs: Selection = None, checkpoints: Checkpoints = None,
    layers: Selection = "all", features: Selection = None,
    *,
    n_splits: int = 5, seed: int = 0, split: str | None = None, strict: bool = False,
) -> ProbePlan:
    """Select runs, checkpoints, layers and features, and check every input before computing.

    Parameters
    ----------
    store : actstore.store.Store, str or path
        An open store, or the path or URL of one (opened read-only).
    runs, layers : str or list of str, optional
        Names or glob patterns (comma-separated in a string); ``None``/``"all"``: all.
    checkpoints : str or list, optional
        ``"all"`` (default), ``"first"``, ``"last"``, or step numbers (``"0,1000"``).
        ``first``/``last`` are each run's first/last *complete* checkpoint (a run still
        training keeps its last finished one); runs whose steps differ fill the union of
        their steps, NaN where a run has no job.
    features : str or list of str, optional
        Feature names (default: every label of the probe set except the split design,
        ``heldout_*`` and ``split*``).
    n_splits, seed, split
        The folds the features are checked with (stratified K-fold, or the explicit split in
        label ``split``, which is not a feature then).
    strict : bool
        An incomplete checkpoint is an error instead of a skipped job (with a warning).

    Returns
    -------
    ProbePlan
        One :class:`Job` per selected (run, complete checkpoint, layer) and the coordinates
        of the result; incomplete checkpoints left out are listed in ``skipped`` (each also
        warned about with a :class:`ProbeWarning`).

    Raises
    ------
    ActstoreError
        Unknown names (listing the valid ones), or labels that cannot be decoded.
    """
    if isinstance(store, (str, PathLike)):
        from actstore.store import open_store

        store = open_store(str(store))
    all_runs = store.run_ids()
    if not all_runs:
        raise ActstoreError(f"{store.url} has no runs to probe; train or dump some first")
    run_ids = _match(all_runs, _patterns(runs, "run"), "run", all_runs)
    readers = {r: store.reader(r) for r in run_ids}
    all_layers = list(dict.fromkeys(lay for r in readers.values() for lay in r.layers))
    lay_pats = _patterns(layers, "layer")
    _match(all_layers, lay_pats, "layer", all_layers)
    all_feats = list(dict.fromkeys(f for r in readers.values() for f in r.features))
    feat_sel = _patterns(features, "feature")
    if feat_sel is not None:
        for f in feat_sel:
            if f not in all_feats:
                raise ActstoreError(
                    f"unknown feature {f!r}; features: {', '.join(all_feats) or 'none'}"
                )
    if split is not None and split not in all_feats:
        raise ActstoreError(
            f"no label array {split!r} to split on; labels: {', '.join(all_feats)}"
        )
    jobs: list[Job] = []
    skipped: list[str] = []
    features_of: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    units: dict[tuple[str, str], int] = {}
    steps_all: set[int] = set()
    checked: dict[str, list[str]] = {}
    for rid, rd in readers.items():
        feats = [f for f in rd.features if f != split]
        if feat_sel is not None:
            feats = [f for f in feats if f in feat_sel]
        else:
            feats = [f for f in feats if not f.startswith(META_PREFIXES)]
        if not feats:
            continue
        kinds_of = feature_kinds(rd, feats, n_splits=n_splits, seed=seed, split=split,
                                 checked=checked)
        for f, k in zip(feats, kinds_of, strict=True):
            kinds[f] = k
        features_of[rid] = feats
        lays = _match(rd.layers, lay_pats, "layer", all_layers) if lay_pats else rd.layers
        steps = _select_steps(rd, checkpoints, strict, skipped)
        steps_all.update(steps)
        for lay in lays:
            units[(rid, lay)] = rd.units(lay)
            for s in steps:
                jobs.append(Job(rid, s, lay, units[(rid, lay)]))
    for msg in skipped:
        warnings.warn(f"{msg}; skipped (use --strict to make this an error)", ProbeWarning,
                      stacklevel=3)
    feats_used = [f for f in all_feats if f in kinds]
    lays_used = [lay for lay in all_layers if any(j.layer == lay for j in jobs)]
    return ProbePlan(
        jobs=jobs,
        runs=[r for r in run_ids if r in features_of],
        steps=sorted(steps_all), layers=lays_used,
        features=feats_used, features_of=features_of, kinds=kinds,
        skipped=skipped, units=units,
    )
