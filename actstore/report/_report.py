"""``actstore report``: one static HTML page (plus PNG figures) summarising a store's results.

The page lists the runs (model, task, seed, checkpoints, final accuracy), then one section per
result under ``/results``: its description, its figures (:mod:`._plots`), and a summary table.
Analyses without a dedicated section (written by other tools) are listed with their variables,
so that nothing in ``/results`` is left out. The folder holds ``index.html`` and the PNGs,
referenced relatively: it can be copied or served as it is. Nothing is loaded from the network.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.report import _plots as P
from actstore.report._dictionary import dictionary_html
from actstore.report._findings import findings_html
from actstore.report._lasso import lasso_html
from actstore.report._layout import (
    MANY_LAYERS,
    drawn_features,
    model_label,
    network_order,
    run_groups,
    run_layers,
    with_values,
)
from actstore.report._probe_plots import probe_score

__all__ = ["SECTIONS", "Report", "default_report_dir", "write_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc;
       padding-bottom: 0.2em; margin-top: 2em; } h3 { margin-top: 1.5em; }
.meta { color: #666; font-size: 0.9em; } .desc { color: #444; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; display: block; }
nav ul { columns: 2; } code, pre { background: #f6f6f6; padding: 0.1em 0.3em; }
pre { padding: 0.8em; overflow-x: auto; } .problem { color: #a00; }
"""


@dataclass
class Report:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    path : str
        ``index.html``.
    figures : list of str
        PNG files.
    sections : list of str
        ``analysis/name`` of every result summarised.
    problems : list of str
        Figures or tables that could not be made (with the reason); also shown on the page.
    """

    path: str
    figures: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def default_report_dir(url: str) -> str:
    """``<store>-report`` next to a local store (``demo.zarr`` -> ``demo-report``).

    Parameters
    ----------
    url : str
        Store path (or ``file://`` URL).

    Returns
    -------
    str
        Absolute path of the report folder.

    Raises
    ------
    ActstoreError
        If ``url`` is a remote URL.
    """
    if "://" in str(url) and not str(url).startswith("file://"):
        raise ActstoreError(
            f"{url} is not a local path; give the report folder with --out"
        )
    p = Path(str(url).removeprefix("file://")).resolve()
    stem = p.name[:-5] if p.name.endswith(".zarr") else p.name
    return str(p.parent / f"{stem}-report")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "result"


def _table(df: Any, float_format: str = "{:.3f}") -> str:
    """An HTML table from a DataFrame (cells escaped)."""
    cols = [str(c) for c in df.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in [df.index.name or "", *cols])
    rows = []
    for idx, row in df.iterrows():
        cells = []
        for v in row.tolist():
            if isinstance(v, (float, np.floating)):
                cells.append("-" if not np.isfinite(v) else float_format.format(float(v)))
            else:
                cells.append(_e(v))
        rows.append(f"<tr><td>{_e(idx)}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


#: Run attributes the runs table shows in their own columns, or never (bookkeeping).
_RUN_COLUMNS = ("model", "task", "seed", "dataset", "probe_set", "config", "metrics", "data",
                "dump", "probe_set_hash", "config_hash", "actstore_version", "created")


def _known(value: Any) -> str:
    """A run attribute for a table: ``-`` when it was not recorded (a dumped run has no
    task or seed unless given with --attr)."""
    return "-" if value is None or value == "" else str(value)


def _source(a: dict[str, Any]) -> str:
    """How a run came into the store: trained by actstore, dumped from checkpoints or a
    model factory, or ingested from arrays."""
    cfg = a.get("config")
    if isinstance(cfg, dict) and "train" in cfg:
        return "trained"
    if isinstance(a.get("dump"), dict):
        reduce = a["dump"].get("reduce")
        return f"dumped ({a['dump'].get('layers', 'all')} layers{', ' + reduce if reduce else ''})"
    return "ingested" if a.get("model") == "external" else "-"


def _run_table(store: Any) -> tuple[str, dict[str, list[str]]]:
    import pandas as pd

    rows, targets = {}, {}
    for rid in store.run_ids():
        rd = store.reader(rid)
        a = rd.attrs
        cfg = a.get("config") if isinstance(a.get("config"), dict) else {}
        heads = [str(h["name"]) for h in (cfg.get("task") or {}).get("heads", [])]
        if heads:
            targets[rid] = heads
        acc = ""
        val = ((a.get("metrics") or {}).get("val") or {}).get("acc") or {}
        if isinstance(val, dict) and val:
            # float(): a non-finite value is stored as the string "NaN" / "Infinity"
            acc = ", ".join(f"{h} {float(v[-1]):.2f}" for h, v in val.items()
                            if isinstance(v, list) and v)
        steps = rd.complete_steps
        extra = ", ".join(f"{k}={v}" for k, v in a.items()
                          if k not in _RUN_COLUMNS and v is not None)
        rows[rid] = {
            "model": model_label(a.get("model")) or "-", "task": _known(a.get("task")),
            "seed": _known(a.get("seed")),
            "probe set": _known(a.get("probe_set") or a.get("dataset")),
            "source": _source(a),
            "checkpoints": f"{len(steps)} ({steps[0]}..{steps[-1]})" if steps else "0",
            "layers": len(rd.layers), "final val. accuracy": acc or "-",
            "attributes": extra or "-",
        }
    if not rows:
        return "<p>The store holds no runs.</p>", targets
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "run"
    return _table(df), targets


def _mean_table(da: Any, index: str, columns: str) -> Any:
    """Mean over every other dimension of a DataArray, as a DataFrame ``index x columns``."""
    import pandas as pd

    other = [d for d in da.dims if d not in (index, columns)]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = da.mean(other, skipna=True) if other else da
    m = m.transpose(index, columns)
    df = pd.DataFrame(m.values, index=[str(v) for v in m[index].values],
                      columns=[str(v) for v in m[columns].values])
    df.index.name = index
    return df


# -- sections ---------------------------------------------------------------------------------


def _layers_down(df: Any, order: list[str]) -> Any:
    """A features x layers table with its layers in network order, turned to one row per
    layer when there are more layers than features (tens of layers fit a page down, not
    across)."""
    df = df[[c for c in order if c in df.columns] + [c for c in df.columns if c not in order]]
    if len(df.columns) <= len(df.index):
        return df
    df = df.T
    df.index.name = "layer"
    return df


def _grouped_table(groups: list[Any], df: Any, text: str) -> str:
    """A result's run groups, a paragraph of HTML and its table, layers in network order."""
    return (_groups_html(groups) + f"<p>{text}</p>"
            + _table(_layers_down(df, network_order(groups))))


def _groups_html(groups: list[Any]) -> str:
    """The run groups of a result's figures, with each group's layers in network order."""
    if len(groups) < 2 and not any(len(g.layers) > MANY_LAYERS for g in groups):
        return ""
    items = []
    for g in groups:
        first, last = g.layers[0], g.layers[-1]
        span = f"{_e(first)} &hellip; {_e(last)}" if len(g.layers) > 2 else _e(", ".join(g.layers))
        items.append(
            f'<li class="group"><b>{_e(g.name)}</b>: {_e(g.model or "model not recorded")}, '
            f"runs {_e(', '.join(g.runs))}; <details><summary>{len(g.layers)} layers: {span}"
            f'</summary><ol class="layers" start="0">'
            + "".join(f"<li>{_e(x)}</li>" for x in g.layers) + "</ol></details></li>")
    return ("<p>Run groups (each drawn as its own row of panels, its layers in network "
            f"order):</p><ul>{''.join(items)}</ul>")


def _probes(ds: Any, fig: Callable[..., str], ctx: dict[str, Any]) -> str:
    from actstore.decode import summary_table

    runs = ctx.get("runs")
    fig("layers", P.plot_probe_layers, ds, targets=ctx.get("targets"), runs=runs)
    fig("checkpoints", P.plot_probe_checkpoints, ds, runs=runs)
    score, decoder = probe_score(ds)
    groups = run_groups(ds, with_values(score.sel(feature=drawn_features(ds))), runs)
    table = summary_table(ds)
    table.index.name = "feature"
    jobs = int(ds["done"].sum()) if "done" in ds else "?"
    return _grouped_table(
        groups, table,
        f"Held-out score of the <b>{_e(decoder)}</b> decoders (accuracy; R<sup>2</sup> for "
        f"continuous features), first &rarr; last checkpoint, mean over runs. {jobs} jobs; "
        f"folds: {_e(ds.attrs.get('folds', '?'))}.")


def _variance(ds: Any, fig: Callable[..., str], ctx: dict[str, Any]) -> str:
    runs = ctx.get("runs")
    fig("variance", P.plot_variance, ds, runs=runs)
    groups = run_groups(ds, with_values(ds["r2"]), runs)
    last = ds.isel(checkpoint=-1)
    return _grouped_table(
        groups, _mean_table(last["r2"], "feature", "layer"),
        f"Held-out R<sup>2</sup> of each layer regressed on each feature at step "
        f"{int(ds['checkpoint'].values[-1])} (mean over runs). Folds: "
        f"{_e(ds.attrs.get('folds', '?'))}; denominator over training: "
        f"{_e(ds.attrs.get('denominator', '?'))}.")


def _similarity(ds: Any, fig: Callable[..., str], ctx: dict[str, Any]) -> str:
    import pandas as pd

    fig("heatmap", P.plot_similarity, ds)
    S = np.asarray(ds["similarity"].values, dtype=float)
    M = S.shape[0]
    off = S[~np.eye(M, dtype=bool)]
    off = off[np.isfinite(off)]
    spread = (f"Off-diagonal similarity: mean {off.mean():.3f}, min {off.min():.3f}, "
              f"max {off.max():.3f}." if off.size else "No off-diagonal similarity.")
    text = (f"<p>{M} representations, metric <b>{_e(ds.attrs.get('metric', '?'))}</b> "
            f"{_e(ds.attrs.get('params', ''))}, {_e(ds.attrs.get('n_stimuli', '?'))} stimuli. "
            f"{spread}</p>")
    if "layer_a" in ds.coords and "layer_b" in ds.coords:
        la = [str(v) for v in ds["layer_a"].values]
        layers = list(dict.fromkeys(la))
        if len(layers) > 1:
            # mean similarity between layers over all pairs of representations
            tab = np.full((len(layers), len(layers)), np.nan)
            arr = np.asarray(la)
            for i, x in enumerate(layers):
                for j, y in enumerate(layers):
                    block = S[np.ix_(arr == x, arr == y)]
                    if x == y:  # pairs of different representations only (not 1.0 self-pairs)
                        block = block[~np.eye(block.shape[0], dtype=bool)]
                    tab[i, j] = np.nanmean(block) if block.size else np.nan
            df = pd.DataFrame(tab, index=layers, columns=layers)
            df.index.name = "layer"
            text += ("<p>Mean similarity between layers (over runs and checkpoints; the "
                     "diagonal pairs different representations of one layer, - where a layer "
                     "has one):</p>")
            text += _table(df)
    return text


def _complexity(ds: Any, fig: Callable[..., str], ctx: dict[str, Any]) -> str:
    import pandas as pd
    from scipy.stats import spearmanr

    fig("complexity", P.plot_complexity, ds)
    rows = {}
    for i, r in enumerate(ds["run"].values):
        comp = ds["complexity"].values[i]
        row: dict[str, Any] = {
            "layer": str(ds["source_layer"].values[i]),
            "step": int(ds["source_checkpoint"].values[i]),
            "NMF rel. error": float(ds["nmf_relative_error"].values[i]),
            "mean K": float(np.nanmean(comp)) if np.isfinite(comp).any() else np.nan,
        }
        if ds.sizes.get("target", 0):
            imp = np.nanmean(ds["importance"].values[i], axis=0)
            ok = np.isfinite(imp) & np.isfinite(comp)
            row["Spearman(K, importance)"] = (
                float(spearmanr(comp[ok], imp[ok]).statistic) if ok.sum() > 2 and np.ptp(
                    imp[ok]) > 0 else np.nan)
        rows[str(r)] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "run"
    return (f"<p>{ds.sizes['atom']} dictionary features per run; complexity "
            f"K = 1 - mean V-information over {ds.sizes['layer']} layers. Codes: "
            f"<code>{_e(ds.attrs.get('codes', ''))}</code>.</p>" + _table(df)
            + dictionary_html(ds, fig, ctx.get("store")))


def _in_network_order(group: dict[str, Any], runs: dict[str, Any]) -> dict[str, Any]:
    """The per-layer results of one alignment, in the aligned runs' layer order."""
    import json

    aligned: list[str] = []
    for ds in group.values():
        try:
            aligned = list(json.loads(ds.attrs.get("actstore.config", "{}")).get("runs", []))
        except (TypeError, ValueError):
            continue
        break
    order = next((list(runs[r].layers) for r in aligned if r in runs), [])
    rank = {x: i for i, x in enumerate(order)}
    return {x: group[x] for x in sorted(group, key=lambda x: rank.get(x, len(rank)))}


def _alignment(group: dict[str, Any], fig: Callable[..., str], ctx: dict[str, Any]) -> str:
    import pandas as pd

    from actstore.alignment import summary_rows

    group = _in_network_order(group, ctx.get("runs") or {})
    fig("alignment", P.plot_alignment, group)
    df = pd.DataFrame(summary_rows(group))
    keep = [c for c in ("layer", "run_a", "run_b", "bipartite_corr_mean", "semi_corr_mean",
                        "bipartite_mi_mean", "mixed_clusters") if c in df.columns]
    df = df[keep].set_index("layer")
    return (f"<p>{len(group)} layers aligned between runs.</p>" + _table(df.fillna(np.nan))
            + lasso_html(group, fig))


def _generic(ds: Any) -> str:
    items = "".join(
        f"<li><code>{_e(k)}</code> {_e(tuple(v.dims))}</li>" for k, v in ds.data_vars.items()
    )
    return f"<p>Variables:</p><ul>{items}</ul>"


#: The section of each result group (``/results/<group>``), in the order the page shows them:
#: ``section(result, fig, ctx) -> html``, ``result`` a Dataset (for ``alignment``: the
#: Datasets of one result by layer). Results of other groups get a list of their variables.
SECTIONS: dict[str, Callable[..., str]] = {
    "probes": _probes,
    "variance": _variance,
    "similarity": _similarity,
    "alignment": _alignment,
    "complexity": _complexity,
}

#: Groups summarised in another group's section (the NMF codes in their complexity result's)
#: or at the top of the page (a study's findings tables, :mod:`._findings`).
SHOWN_ELSEWHERE = ("nmf", "findings")


def _alignment_name(name: str, ds: Any) -> tuple[str, str]:
    """``<name>.<layer>`` -> (name, layer); the layer is the one recorded in the result's
    settings, since layer names may hold dots (``encoder.layer.3``)."""
    import json

    try:
        layer = json.loads(ds.attrs.get("actstore.config", "{}")).get("layer")
    except (TypeError, ValueError):
        layer = None
    if isinstance(layer, str) and name.endswith("." + layer):
        return name[: -len(layer) - 1], layer
    base, _, layer = name.rpartition(".")
    return base, layer


def _groups(store: Any) -> list[tuple[str, str, Any]]:
    """``(group, name, dataset or {layer: dataset})`` for every result, in page order.

    Results are ordered as :data:`SECTIONS`, then by group and name. Alignment results
    ``<name>.<layer>`` are grouped by name.
    """
    out: list[tuple[str, str, Any]] = []
    align: dict[str, dict[str, Any]] = {}
    for full in store.result_names():
        group, name = full.split("/", 1)
        if group in SHOWN_ELSEWHERE:
            continue
        ds = store.read_result(group, name)
        if group == "alignment" and "." in name:
            base, layer = _alignment_name(name, ds)
            align.setdefault(base, {})[layer] = ds
            continue
        out.append((group, name, ds))
    for base, layers in align.items():
        out.append(("alignment", base, layers))
    order = {k: i for i, k in enumerate(SECTIONS)}
    out.sort(key=lambda t: (order.get(t[0], len(order)), t[0], t[1]))
    return out


def write_report(
    url: str,
    out: str | None = None,
    title: str | None = None,
    storage_options: dict | None = None,
) -> Report:
    """Write ``index.html`` and its PNG figures summarising every result of a store.

    Parameters
    ----------
    url : str
        Store path or URL.
    out : str, optional
        Folder of the report (created; default ``<store>-report`` next to a local store).
    title : str, optional

    Returns
    -------
    Report
    """
    from actstore.store import open_store

    store = open_store(url, storage_options=storage_options)
    folder = Path(out or default_report_dir(url))
    if folder.exists() and not folder.is_dir():
        raise ActstoreError(f"{folder} exists and is not a folder; choose another --out")
    groups = _groups(store)
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(path=str(folder / "index.html"))
    run_html, targets = _run_table(store)
    findings = findings_html(store)
    from actstore.report._training import training_section

    training, train_figs, train_problems = training_section(store, folder)
    report.figures += train_figs
    report.problems += train_problems
    ctx = {"targets": targets or None, "runs": run_layers(store), "store": store}
    body: list[str] = []
    toc: list[str] = []
    for analysis, name, ds in groups:
        key = f"{analysis}/{name}"
        anchor = _slug(key)
        toc.append(f'<li><a href="#{anchor}">{_e(key)}</a></li>')
        figs: list[tuple[str, str]] = []

        def fig(label: str, fn: Callable[..., str], data: Any, _a: str = analysis,
                _n: str = name, _figs: list = figs, **kw: Any) -> str:
            fname = f"{_slug(_a)}-{_slug(_n)}-{label}.png"
            try:
                fn(data, str(folder / fname), **kw)
            except Exception as e:  # a figure that cannot be drawn is reported, not fatal
                report.problems.append(f"{_a}/{_n} {label}: {type(e).__name__}: {e}")
                return ""
            report.figures.append(str(folder / fname))
            _figs.append((label, fname))
            return fname

        try:
            section = SECTIONS.get(analysis)
            text = _generic(ds) if section is None else section(ds, fig, ctx)
        except Exception as e:
            msg = f"{key}: {type(e).__name__}: {e}"
            report.problems.append(msg)
            text = f'<p class="problem">Could not summarise this result: {_e(msg)}</p>'
        attrs = ds.attrs if hasattr(ds, "attrs") else next(iter(ds.values())).attrs
        desc = attrs.get("description", "")
        imgs = "".join(f'<img src="{_e(f)}" alt="{_e(key)} {_e(lab)}">' for lab, f in figs)
        body.append(
            f'<h3 id="{anchor}">{_e(key)}</h3>'
            + (f'<p class="desc">{_e(desc)}</p>' if desc else "")
            + imgs + text
        )
        report.sections.append(key)
    problems = "".join(f'<li class="problem">{_e(p)}</li>' for p in report.problems)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from actstore import __version__

    title = title or f"actstore report: {Path(str(url)).name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">Store <code>{_e(url)}</code> &middot; {len(store.run_ids())} runs &middot;
{len(report.sections)} results &middot; written {_e(now)} by actstore {_e(__version__)}</p>
{f'<h2 id="findings">Findings</h2>{findings}' if findings else ''}
<nav><h2>Contents</h2><ul><li><a href="#runs">Runs</a></li>
{'<li><a href="#training">Training curves</a></li>' if training else ''}{''.join(toc)}</ul></nav>
<h2 id="runs">Runs</h2>
{run_html}
{training}
<h2>Results</h2>
{''.join(body) if body else '<p>No results yet: run <code>actstore probe</code>, '
 '<code>actstore similarity</code>, <code>actstore variance</code> or '
 '<code>actstore complexity</code> on the store first.</p>'}
{f'<h2>Problems</h2><ul>{problems}</ul>' if problems else ''}
<h2>Open the data yourself</h2>
<pre>import xarray as xr
tree = xr.open_datatree({_e(repr(str(url)))}, engine="zarr")
tree["results/&lt;analysis&gt;/&lt;name&gt;"].to_dataset()</pre>
</body></html>
"""
    Path(report.path).write_text(page, encoding="utf-8")
    return report
