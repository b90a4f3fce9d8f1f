"""The registry of analyses: the one place that study files, the report, ``ls`` and the
command line read to know which analyses exist.

Each :class:`Analysis` names its result group (``/results/<group>/<name>``), its frozen
settings class, the function that runs it on a store, its figures and its report section.
Adding an analysis is one driver, one config class and one entry in :data:`ANALYSES`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actstore._errors import ActstoreError
from actstore._execution import Execution
from actstore.alignment import AlignConfig
from actstore.decode import ProbeConfig
from actstore.features import ComplexityConfig, VarianceConfig
from actstore.similarity import SimilarityConfig

__all__ = ["ANALYSES", "Analysis", "analysis", "by_group", "seed_groups"]


@dataclass(frozen=True)
class Analysis:
    """One analysis of a store's activations.

    Attributes
    ----------
    name : str
        The name a study file gives as ``kind`` (``"probe"``).
    group : str
        Where its results are written: ``/results/<group>/<result name>``.
    title : str
        A heading for listings and reports.
    config : type
        The frozen settings class (``to_json()`` gives the stored settings).
    run : callable
        ``run(url, name, config, options, execution)``: compute and write the result
        ``name`` of ``url``; ``config`` comes from :meth:`configure`, ``options`` holds the
        selection (runs, layers, checkpoints...) and any other option of a study file.
    options : tuple of str
        The keys a study file may give for this analysis.
    selection : tuple of str
        Those of ``options`` that select what is analysed (arguments of the driver); the
        others are settings, turned into ``config``.
    plots : callable
        ``plots()`` -> ``[(label, figure function)]`` of its results.
    section : callable
        ``section()`` -> the HTML section function of the report, or ``None``.
    """

    name: str
    group: str
    title: str
    config: type
    run: Callable[[str, str, Any, Mapping[str, Any], Execution], Any]
    options: tuple[str, ...]
    selection: tuple[str, ...]
    plots: Callable[[], list[tuple[str, Callable[..., str]]]]
    section: Callable[[], Callable[..., str] | None]

    def result(self, name: str) -> str:
        """Where the result ``name`` is written in a store: ``results/<group>/<name>``."""
        return f"results/{self.group}/{name}"

    def configure(self, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Check a study file's ``options``; the settings object and the remaining options.

        Raises
        ------
        ActstoreError
            An option this analysis does not take (the message lists the valid keys), or a
            setting its config refuses.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ActstoreError(
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                f"analysis {self.name}; valid keys: {', '.join(self.options)}"
            )
        settings = {k: v for k, v in options.items() if k not in self.selection}
        config = self.config.from_options(settings)  # type: ignore[attr-defined]
        return config, {k: v for k, v in options.items() if k in self.selection}


def _csv(v: Any) -> Any:
    return ",".join(str(x) for x in v) if isinstance(v, list) else v


# -- runners: study options -> the analysis's driver ------------------------------------------


def _probe(url: str, name: str, config: Any, o: Mapping[str, Any], ex: Execution) -> Any:
    from actstore.decode import run_probes

    return run_probes(url, name=name, runs=_csv(o.get("runs")),
                      checkpoints=_csv(o.get("checkpoints")),
                      layers=_csv(o.get("layers", "all")), features=_csv(o.get("features")),
                      config=config, execution=ex)


def _variance(url: str, name: str, config: Any, o: Mapping[str, Any], ex: Execution) -> Any:
    from actstore.features import run_variance

    return run_variance(url, name=name, runs=_csv(o.get("runs")),
                        checkpoints=_csv(o.get("checkpoints")),
                        layers=_csv(o.get("layers", "all")), features=_csv(o.get("features")),
                        config=config, execution=ex)


def _similarity(url: str, name: str, config: Any, o: Mapping[str, Any], ex: Execution) -> Any:
    from actstore.similarity import similarity_job

    sel: dict[str, Any] = {k: o[k] for k in ("runs", "layers", "checkpoints", "where",
                                             "stimuli") if k in o}
    for k in ("runs", "layers"):
        if k in sel:
            sel[k] = None if sel[k] == "all" else _csv(sel[k])
    return similarity_job(url, sel, name, config=config, execution=ex)


def seed_groups(url: str, pattern: Any = None) -> dict[str, list[str]]:
    """Runs of a store that differ only in their seed, grouped.

    Parameters
    ----------
    url : str
        Store path or URL.
    pattern : str or list of str, optional
        Run ids or globs (comma-separated); ``None`` or ``"all"``: every run.

    Returns
    -------
    dict
        ``<dataset>-<task>-<model>[-<variant>]`` -> run ids, for groups of two runs or more.
    """
    from actstore.store import open_store

    st = open_store(url)
    pats = None if pattern in (None, "all") else [p.strip() for p in _csv(pattern).split(",")]
    groups: dict[str, list[str]] = {}
    for rid in st.run_ids():
        if pats is not None and not any(fnmatch.fnmatchcase(rid, p) for p in pats):
            continue
        a = st.reader(rid).attrs
        key = "-".join(str(a.get(k) or "") for k in ("dataset", "task", "model", "variant"))
        key = "".join(c if c.isalnum() or c in "_-" else "_" for c in key.strip("-"))
        groups.setdefault(key, []).append(rid)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def _align(url: str, name: str, config: Any, o: Mapping[str, Any], ex: Execution) -> Any:
    from actstore.alignment import alignment_job

    groups = seed_groups(url, o.get("runs"))
    if not groups:
        raise ActstoreError(
            f"alignment needs at least two runs that differ only in their seed in {url}"
        )
    return {key: alignment_job(url, runs, layers=_csv(o.get("layers")),
                               checkpoint=o.get("checkpoint", "last"), stimuli=o.get("stimuli"),
                               name=f"{name}-{key}", config=config, execution=ex)
            for key, runs in groups.items()}


def _complexity(url: str, name: str, config: Any, o: Mapping[str, Any],
                ex: Execution) -> Any:
    from actstore.features import run_complexity

    return run_complexity(url, name=name, runs=_csv(o.get("runs")), config=config,
                          execution=ex)


# -- figures and report sections (read when a report is drawn) --------------------------------


def _plots(group: str) -> Callable[[], list[tuple[str, Callable[..., str]]]]:
    def plots() -> list[tuple[str, Callable[..., str]]]:
        from actstore.report import PLOTS

        return list(PLOTS.get(group, []))

    return plots


def _section(group: str) -> Callable[[], Callable[..., str] | None]:
    def section() -> Callable[..., str] | None:
        from actstore.report import SECTIONS

        return SECTIONS.get(group)

    return section


def _entry(name: str, group: str, title: str, config: type, run: Callable[..., Any],
           options: tuple[str, ...], selection: tuple[str, ...]) -> Analysis:
    return Analysis(name=name, group=group, title=title, config=config, run=run,
                    options=options, selection=selection, plots=_plots(group),
                    section=_section(group))


#: Every analysis by the name a study file gives as ``kind``, in the order a report shows them.
ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    _entry("probe", "probes", "Linear decoders", ProbeConfig, _probe,
           ("runs", "layers", "checkpoints", "features", "decoders", "folds", "seed", "split",
            "device"), ("runs", "layers", "checkpoints", "features")),
    _entry("variance", "variance", "Variance explained by each feature", VarianceConfig,
           _variance, ("runs", "layers", "checkpoints", "features", "folds", "seed", "split",
                       "denominator"), ("runs", "layers", "checkpoints", "features")),
    _entry("similarity", "similarity", "Representational similarity", SimilarityConfig,
           _similarity, ("runs", "layers", "checkpoints", "where", "stimuli", "metric",
                         "params", "bootstrap", "ci", "seed"),
           ("runs", "layers", "checkpoints", "where", "stimuli")),
    _entry("align", "alignment", "Unit alignment between runs", AlignConfig, _align,
           ("runs", "layers", "checkpoint", "stimuli", "mutual_info", "lasso", "n_clusters",
            "positions", "seed"), ("runs", "layers", "checkpoint", "stimuli")),
    _entry("complexity", "complexity", "Feature complexity", ComplexityConfig, _complexity,
           ("runs", "k", "layer", "step", "layers", "folds", "seed", "split", "threshold",
            "checkpoints", "layer_checkpoints", "flow_layers", "importance", "negative",
            "max_epochs"),
           ("runs",)),
)}


def analysis(name: str) -> Analysis:
    """The analysis called ``name``; an unknown name is refused with the list of names."""
    if name not in ANALYSES:
        raise ActstoreError(
            f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}"
        )
    return ANALYSES[name]


def by_group(group: str) -> Analysis | None:
    """The analysis whose results are under ``/results/<group>`` (``None`` if none)."""
    return next((a for a in ANALYSES.values() if a.group == group), None)
