"""The findings tables of a report: each claim of a study's paper with its measured value and
verdict, read from ``/results/findings/<study>`` (written by :mod:`actstore.studies`) and
shown at the top of the page."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

__all__ = ["findings_html"]

_LEFT = ' style="text-align:left"'
_COLOURS = {"holds": "#1a7f37", "does not hold": "#b42318", "not testable": "#8a6d00"}


def _num(x: Any) -> str:
    x = float(x)
    return f"{x:+.3f}" if np.isfinite(x) else "-"


def findings_html(store: Any) -> str:
    """HTML of every findings table of ``store`` (an open store), or ``""`` if it has none."""
    parts = []
    for name in store.result_names("findings"):
        ds = store.read_result("findings", name)
        rows = []
        for i in range(ds.sizes["claim"]):
            def v(k: str, i: int = i, ds: Any = ds) -> str:
                return html.escape(str(ds[k].values[i]))

            verdict = str(ds["verdict"].values[i])
            unc = float(ds["uncertainty"].values[i])
            colour = _COLOURS.get(verdict, "#222")
            rows.append(
                f"<tr><td{_LEFT}>{v('statement')}<br><small>{v('citation')}</small></td>"
                f"<td>{_num(ds['value'].values[i])}"
                f"{f' &plusmn; {unc:.3f}' if np.isfinite(unc) else ''}"
                f"<br><small>{v('quantity')}</small></td>"
                f'<td style="text-align:left;color:{colour}"><b>{html.escape(verdict)}</b></td>'
                f"<td{_LEFT}>{v('reason')}</td></tr>")
        scale = ds.attrs.get("scale")
        parts.append(
            f'<h3 id="findings-{html.escape(name)}">{html.escape(name)}'
            f"{f' ({html.escape(str(scale))} scale)' if scale else ''}: "
            f"{html.escape(str(ds.attrs.get('paper', '')))}</h3>"
            f'<p class="desc">Verdict rule: {html.escape(str(ds.attrs.get("rule", "")))}.</p>'
            '<table class="findings"><thead><tr><th>claim (paper)</th><th>measured &plusmn; '
            "uncertainty</th><th>verdict</th><th>why</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")
    return "".join(parts)
