"""Representation selection over a store: which (run, checkpoint, layer), on which stimuli.

The selection every analysis shares: :func:`select` and :func:`select_many` choose
representations (read lazily, :class:`LazyRep`), :func:`parse_checkpoints` is the one reader of
a checkpoint selection (``all``, ``first``, ``last``, steps, or a comma-separated mix such as
``first,last``; each analysis gives its own default), :func:`stimulus_subset` the one reader of
a stimulus subset.

Examples
--------
All layers of all runs at the last checkpoint::

    select(store)

Layer ``fc6`` across all checkpoints of seed 0::

    select(store, layers="fc6", checkpoints="all", where={"seed": 0})

The same as a command-line string (``actstore similarity --select ...``)::

    parse_selection("layer=fc6;checkpoint=all;seed=0")

The union of several selections, in order, without duplicates (``--select`` given several
times; each selection has its own defaults for the keys it does not give)::

    select_many(store, [{"runs": "mlp_a", "checkpoints": "all"},
                        {"runs": "cnn_c", "layers": "conv*"}])
    select_many(store, parse_selections(["checkpoint=all;run=mlp_a", "run=cnn_c;layer=conv*"]))

Stimulus subsets (``stimuli=``): an index array, or ``"all"``, ``"first:N"``,
``"random:N[:SEED]"``, ``"per:FEATURE[,FEATURE...]:K[:SEED]"`` (K stimuli per combination of
the named label features, e.g. an RSA set of one image per shape x colour).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._args import as_mapping
from actstore._dask import for_workers
from actstore._errors import ActstoreError

__all__ = [
    "ATTR_KEYS",
    "CHECKPOINT_WORDS",
    "COORDS",
    "LazyRep",
    "RepRef",
    "Selection",
    "check_not_blank",
    "parse_checkpoints",
    "select",
    "select_many",
    "stimulus_subset",
]


@dataclass(frozen=True)
class LazyRep:
    """A representation that is read only when the engine needs it.

    Parameters
    ----------
    shape : tuple of int
        ``(n_stimuli, n_units)`` of the array that ``load`` returns.
    load : callable
        Returns the activations, an array of shape ``shape`` (any dtype, any backend).
    name : str
        Used in error messages and results.
    """

    shape: tuple[int, int]
    load: Callable[[], Any]
    name: str = ""


#: Coordinates that describe each selected representation.
COORDS = ("run", "model", "task", "seed", "checkpoint", "layer")

#: Run attributes usable as filters.
ATTR_KEYS = ("model", "task", "seed", "dataset", "variant")


#: Words of a checkpoint selection besides training steps.
CHECKPOINT_WORDS = ("all", "first", "last")


@dataclass(frozen=True)
class RepRef:
    """One representation: a layer of a run at a checkpoint (training step)."""

    run: str
    checkpoint: int
    layer: str
    units: int
    model: str = ""
    task: str = ""
    seed: int = -1

    @property
    def label(self) -> str:
        """``run@step/layer``."""
        return f"{self.run}@{self.checkpoint}/{self.layer}"


@dataclass(frozen=True)
class _StoreLoader:
    """Reads one representation by store URL, so that Dask workers can run it (picklable)."""

    url: str
    run: str
    layer: str
    checkpoint: int
    stimuli: tuple[int, ...] | None
    storage_options: dict | None = None

    def __call__(self) -> np.ndarray:
        from actstore.store import open_store

        r = open_store(self.url, storage_options=self.storage_options).reader(self.run)
        X = r.read(self.layer, self.checkpoint)
        return X if self.stimuli is None else X[np.asarray(self.stimuli)]


@dataclass
class Selection:
    """Representations chosen from a store, all on the same stimuli.

    Attributes
    ----------
    url : str
        Store location (workers re-open it).
    refs : list of RepRef
        In run order, then checkpoint, then layer (forward order).
    stimuli : ndarray of int or None
        Selected rows of the probe set (None: all).
    sample : ndarray
        Sample ids of the selected stimuli.
    """

    url: str
    refs: list[RepRef]
    stimuli: np.ndarray | None
    sample: np.ndarray
    storage_options: dict | None = None
    layer_info: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        runs = list(dict.fromkeys(r.run for r in self.refs))
        layers = list(dict.fromkeys(r.layer for r in self.refs))
        return (f"Selection({self.url!r}, {len(self.refs)} representations of {len(runs)} "
                f"runs x {len(layers)} layers, {self.n} stimuli)")

    @property
    def n(self) -> int:
        """Number of stimuli."""
        return len(self.sample)

    @property
    def labels(self) -> list[str]:
        """``run@step/layer`` of each representation."""
        return [r.label for r in self.refs]

    def lazy_reps(self) -> list[LazyRep]:
        """One :class:`LazyRep` per representation (read when the engine needs it)."""
        stim = None if self.stimuli is None else tuple(int(i) for i in self.stimuli)
        return [
            LazyRep(
                (self.n, r.units),
                _StoreLoader(self.url, r.run, r.layer, r.checkpoint, stim, self.storage_options),
                r.label,
            )
            for r in self.refs
        ]

    def coords(self) -> dict[str, list[Any]]:
        """Coordinate values (``run, model, task, seed, checkpoint, layer``) per representation."""
        return {k: [getattr(r, k) for r in self.refs] for k in COORDS}


def _split(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [str(v) for v in value]
    return [str(value)]


def _match(name: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)




def parse_checkpoints(spec: Any, default: str = "all") -> list[str | int] | None:
    """Read a checkpoint selection: ``None`` for every checkpoint, else its items in order.

    Parameters
    ----------
    spec : str, int or sequence of str or int, or None
        ``"all"``, ``"first"``, ``"last"``, a training step, or several of them as a
        comma-separated string (``"first,last"``, ``"0,1000"``) or a sequence (``[0, 1000]``).
        ``None``: ``default``.
    default : str
        The analysis's default selection (a string of the same syntax).

    Returns
    -------
    list of {"first", "last"} or int, or None
        ``None`` when ``"all"`` is among the items; else ``"first"``/``"last"`` (to be read
        as a run's first or last complete checkpoint) and steps, repeats dropped.

    Raises
    ------
    ActstoreError
        An empty selection, or an item that is neither a word above nor a whole number.
    """
    if spec is None:
        spec = default
    words = _split(int(spec) if isinstance(spec, (int, np.integer)) else spec) or []
    bad = [w for w in words if w not in CHECKPOINT_WORDS and not w.lstrip("-").isdigit()]
    if bad or not words or isinstance(spec, (bool, np.bool_)):
        raise ActstoreError(
            f"cannot read the checkpoint selection {str(spec)!r}; give last, first, all or "
            "training steps, or several separated by commas (e.g. first,last or 0,1000)"
        )
    if "all" in words:
        return None
    items = [w if w in CHECKPOINT_WORDS else int(w) for w in words]
    return list(dict.fromkeys(items))


def _steps(reader: Any, spec: Any) -> list[int]:
    """The complete checkpoints of a run that ``spec`` selects (default: the last)."""
    done = sorted(reader.complete_steps)
    try:
        items = parse_checkpoints(spec, default="last")
    except ActstoreError as e:
        raise ActstoreError(
            f"{e} (run {reader.run_id!r} has {', '.join(map(str, done)) or 'no complete one'})"
        ) from None
    if not done:
        return []
    if items is None:
        return done
    wanted = [done[0] if s == "first" else done[-1] if s == "last" else int(s) for s in items]
    missing = [s for s in wanted if s not in done]
    if missing:
        raise ActstoreError(
            f"run {reader.run_id!r} has no complete checkpoint at step(s) {missing}; "
            f"complete steps: {done}"
        )
    return sorted(set(wanted)) if len(items) > 1 else wanted



def select(
    store: Any,
    *,
    runs: str | Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    checkpoints: str | int | Sequence[int] | None = "last",
    where: dict[str, Any] | None = None,
    stimuli: Any = None,
) -> Selection:
    """Choose representations (run x checkpoint x layer) from a store.

    Parameters
    ----------
    store : Store or str
        An open store or its path/URL.
    runs, layers : str or sequence of str, optional
        Names or shell-style patterns (``"seed*"``, ``"fc*"``); comma-separated strings
        work too. Default: all.
    checkpoints : {"last", "first", "all"} or int or sequence of int
        Training steps, among each run's complete checkpoints.
    where : dict, optional
        Run attributes to match (``model``, ``task``, ``seed``, ``dataset``, ``variant``);
        a value may be a list of accepted values.
    stimuli : optional
        Stimulus subset (see the module docstring).

    Returns
    -------
    Selection

    Raises
    ------
    ActstoreError
        Nothing matched (the message lists what exists), unknown filters, or runs recorded
        on different stimuli (the message names both runs).
    """
    from actstore.store import open_store

    if isinstance(store, str):
        store = open_store(store)
    where = as_mapping(where or {}, "where", "give run attributes to match, e.g. "
                       "where={'seed': 0, 'task': 'shape'}")
    bad = [k for k in where if k not in ATTR_KEYS]
    if bad:
        raise ActstoreError(
            f"unknown selection key {bad[0]!r}; use run, layer, checkpoint, "
            f"{', '.join(ATTR_KEYS)}"
        )
    run_pat, layer_pat = _split(runs), _split(layers)
    all_runs = store.run_ids()
    if run_pat == []:
        raise ActstoreError(
            f"the run selection is empty; give run ids or patterns, or leave it out for all "
            f"runs; runs: {', '.join(all_runs) or 'none'}"
        )
    refs: list[RepRef] = []
    first_sample: tuple[str, np.ndarray] | None = None
    info: dict[tuple[str, str], dict[str, Any]] = {}
    seen_layers: set[str] = set()
    for run in all_runs:
        if not _match(run, run_pat):
            continue
        rd = store.reader(run)
        attrs = rd.attrs
        if any(str(attrs.get(k)) not in (_split(v) or []) for k, v in where.items()):
            continue
        seen_layers.update(rd.layers)
        layers_here = [ly for ly in rd.layers if _match(ly, layer_pat)]
        steps = _steps(rd, checkpoints) if layers_here else []
        if not steps:
            continue
        sample = rd.sample
        if first_sample is None:
            first_sample = (run, sample)
        elif len(sample) != len(first_sample[1]) or not np.array_equal(sample, first_sample[1]):
            raise ActstoreError(
                f"runs {first_sample[0]!r} and {run!r} were recorded on different samples "
                f"(or in another order): {len(first_sample[1])} vs {len(sample)} stimuli; "
                "select runs of one probe set (e.g. --select 'run=...')"
            )
        for step in steps:
            for ly in layers_here:
                refs.append(RepRef(
                    run=run, checkpoint=int(step), layer=ly, units=rd.units(ly),
                    model=str(attrs.get("model", "")), task=str(attrs.get("task", "")),
                    seed=int(attrs["seed"]) if str(attrs.get("seed", "")).lstrip("-").isdigit()
                    else -1,
                ))
                info[(run, ly)] = dict(rd.layer_table.get(ly, {}))
    if not refs or first_sample is None:
        raise ActstoreError(
            f"the selection matched no representation in {store.url}"
            + _why_nothing(run_pat, layer_pat, all_runs, seen_layers)
            + f"; runs: {', '.join(all_runs) or 'none'}; layers: "
            + (", ".join(sorted(seen_layers)) or "none")
        )
    labels = store.reader(first_sample[0]).labels
    idx = stimulus_subset(stimuli, len(first_sample[1]), labels)
    sample = first_sample[1] if idx is None else first_sample[1][idx]
    return Selection(
        url=for_workers(store.url), refs=refs, stimuli=idx, sample=sample,
        storage_options=getattr(store, "storage_options", None), layer_info=info,
    )


def is_blank(value: Any) -> bool:
    """A selection given but empty (``""``, ``" , "``, ``[]``), as opposed to None (all)."""
    if value is None:
        return False
    if isinstance(value, str):
        return not [v for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return not [v for v in value if str(v).strip()]
    return False


def check_not_blank(
    value: Any, what: str, names: Sequence[Any] | None = None, hint: str | None = None
) -> None:
    """Refuse an empty selection of ``what`` (run, layer, ...), listing the valid names."""
    if is_blank(value):
        valid = f"; {what}s: {', '.join(map(str, names)) or 'none'}" if names is not None else ""
        raise ActstoreError(
            f"the {what} selection is empty; "
            + (hint or f"give {what} names or patterns separated by commas, or 'all'")
            + valid
        )


def _why_nothing(
    run_pat: list[str] | None, layer_pat: list[str] | None, runs: list[str], layers: set[str]
) -> str:
    """``: no run matches 'x'`` (or layer) for the first pattern that matched nothing."""
    for kind, pats, names in (("run", run_pat, runs), ("layer", layer_pat, layers)):
        if pats == []:
            return f": the {kind} selection is empty"
        miss = [p for p in pats or [] if not any(fnmatch.fnmatchcase(x, p) for x in names)]
        if miss and (kind == "run" or layers):
            return f": no {kind} matches {miss[0]!r}"
    return ""


def stimulus_subset(spec: Any, n: int, labels: dict[str, np.ndarray]) -> np.ndarray | None:
    """Resolve a stimulus subset to row indices (None: all stimuli).

    Parameters
    ----------
    spec : None, "all", "first:N", "random:N[:SEED]", "per:F1[,F2]:K[:SEED]", or indices
    n : int
        Stimuli in the probe set.
    labels : dict of str to ndarray of shape (n,)
        Label features (for ``per:``).

    Returns
    -------
    ndarray of shape (k,), int64, or None
        None for all stimuli. The string forms give sorted, distinct indices (at most ``N``;
        ``per:`` at most ``K`` per combination of the features' values); indices given as
        an array are returned in their order, repeats kept, and a boolean mask as its True
        positions.
    """
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return None
    if not isinstance(spec, str):
        idx = np.asarray(spec)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ActstoreError(f"stimulus indices must be a 1-D array within 0..{n - 1}")
        return np.asarray(idx, dtype=np.int64)
    parts = spec.strip().split(":")
    kind, nums = parts[0], parts[1:]
    if kind == "per" and len(parts) in (3, 4):
        feats, nums = _split(parts[1]) or [], parts[2:]
    ints = [int(p) for p in nums if p.strip().isdigit()]
    if len(ints) == len(nums) and ints and ints[0] >= 1:
        if kind == "first" and len(ints) == 1:
            return np.arange(min(n, ints[0]))
        if kind == "random" and len(ints) in (1, 2):
            rng = np.random.default_rng(ints[1] if len(ints) == 2 else 0)
            return np.sort(rng.choice(n, size=min(n, ints[0]), replace=False))
        if kind == "per" and len(parts) in (3, 4):
            return _per_combination(feats, ints[0], ints[1] if len(ints) == 2 else 0, labels)
    raise ActstoreError(
        f"cannot read the stimulus subset {spec!r}; use all, first:N, random:N[:SEED] or "
        "per:FEATURE[,FEATURE]:K[:SEED] (N, K >= 1; SEED >= 0)"
    )


def _per_combination(
    feats: list[str], k: int, seed: int, labels: dict[str, np.ndarray]
) -> np.ndarray:
    missing = [f for f in feats if f not in labels]
    if missing or not feats:
        raise ActstoreError(
            f"no label feature {missing[0] if missing else '(none given)'!r} in the probe set; "
            f"features: {', '.join(labels) or 'none'}"
        )
    keys = np.stack([np.unique(np.asarray(labels[f]), return_inverse=True)[1].reshape(-1)
                     for f in feats], axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        chosen.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def _same_stimuli(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a.strip() == b.strip()
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def select_many(
    store: Any, selections: Sequence[dict[str, Any]], *, stimuli: Any = None
) -> Selection:
    """The union of several selections: their representations in order, without duplicates.

    Parameters
    ----------
    store : Store or str
        An open store or its path/URL.
    selections : sequence of dict
        Keyword arguments of :func:`select`, one dict per selection; each selection has its
        own defaults (``checkpoints="last"``, all runs, all layers) for the keys it leaves out.
    stimuli : optional
        Stimulus subset of the whole union (see the module docstring). All representations
        are compared on the same stimuli, so the subset is given once: here, or as the
        ``stimuli`` key of selections, which must then agree.

    Returns
    -------
    Selection
        The representations of the first selection, then those of the next that are not
        already in, and so on.

    Raises
    ------
    ActstoreError
        No selection, a selection that is no dict or matches nothing (the message says
        which), selections that ask for different stimuli, or runs recorded on different
        samples.
    """
    from actstore.store import open_store

    if isinstance(selections, dict) or not isinstance(selections, (list, tuple)):
        raise ActstoreError(
            f"selections must be a list of dicts of select() keywords, not "
            f"{type(selections).__name__}; e.g. [{{'runs': 'a'}}, {{'runs': 'b', "
            "'layers': 'fc*'}]"
        )
    if not selections:
        raise ActstoreError("no selection was given; give at least one (e.g. [{}] for all)")
    sels = [as_mapping(s, f"selection {i + 1}", "give keywords of select(), e.g. "
                       "{'runs': 'a', 'checkpoints': 'all'}") for i, s in enumerate(selections)]
    asked = [("stimuli=", stimuli)] if stimuli is not None else []
    asked += [(f"selection {i + 1}", s["stimuli"]) for i, s in enumerate(sels)
              if s.get("stimuli") is not None]
    for who, other in asked[1:]:
        if not _same_stimuli(asked[0][1], other):
            raise ActstoreError(
                f"{asked[0][0]} asks for stimuli {_show(asked[0][1])} and {who} for "
                f"{_show(other)}; the representations of one matrix share their stimuli: "
                "give the stimulus subset once (--stimuli)"
            )
    stim = asked[0][1] if asked else None
    if isinstance(store, str):
        store = open_store(store)
    if len(sels) == 1:
        return select(store, **{**sels[0], "stimuli": stim})
    parts: list[Selection] = []
    for i, s in enumerate(sels):
        try:
            parts.append(select(store, **{k: v for k, v in s.items() if k != "stimuli"}))
        except ActstoreError as e:
            raise type(e)(f"selection {i + 1} of {len(sels)}: {e}") from None
    first = parts[0]
    refs: list[RepRef] = []
    seen: set[tuple[str, int, str]] = set()
    info: dict[tuple[str, str], dict[str, Any]] = {}
    for i, part in enumerate(parts):
        if not np.array_equal(part.sample, first.sample):
            raise ActstoreError(
                f"runs {first.refs[0].run!r} (selection 1) and {part.refs[0].run!r} (selection "
                f"{i + 1}) were recorded on different samples (or in another order): "
                f"{len(first.sample)} vs {len(part.sample)} stimuli; select runs of one probe set"
            )
        for r in part.refs:
            if (r.run, r.checkpoint, r.layer) not in seen:
                seen.add((r.run, r.checkpoint, r.layer))
                refs.append(r)
        info.update(part.layer_info)
    labels = store.reader(first.refs[0].run).labels
    idx = stimulus_subset(stim, len(first.sample), labels)
    return Selection(
        url=first.url, refs=refs, stimuli=idx,
        sample=first.sample if idx is None else first.sample[idx],
        storage_options=first.storage_options, layer_info=info,
    )


def _show(stimuli: Any) -> str:
    if isinstance(stimuli, str):
        return repr(stimuli)
    arr = np.asarray(stimuli)
    return f"(an array of {arr.size} indices)"
