"""Findings tables: each claim of a study's paper, measured on the study's results.

A claim is a small declarative entry (:class:`Claim`): the paper's sentence, its citation,
what is measured, and a function of the store's results returning a :class:`Measure` (value,
uncertainty, verdict, reason). Nothing in a table is written by hand: the verdict is a
comparison of measured numbers, under one rule for every row (:func:`directional`):

- **holds**: the effect lies in the claimed direction by more than ``Z`` (2) uncertainties;
- **does not hold**: it lies against the claimed direction by more than ``Z`` uncertainties
  (or is exactly zero with no spread);
- **not testable**: a result the claim needs is missing, what the claim presupposes is not
  met at this scale (a target feature not learned, a feature not decodable before training),
  or the effect is within ``Z`` uncertainties of zero; the reason says which, with numbers.

The table of study ``S`` is stored as ``/results/findings/<S>``: an xarray Dataset over the
dimension ``claim`` (:func:`findings_dataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FAILS",
    "HOLDS",
    "UNTESTABLE",
    "Claim",
    "Measure",
    "Results",
    "Untestable",
    "Z",
    "directional",
    "evaluate_claims",
    "findings_dataset",
    "findings_rows",
    "mean_se",
    "write_findings",
]

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
#: an effect counts when it is more than Z uncertainties from zero
Z = 2.0
#: a network has learned a feature when its held-out accuracy is at least this fraction of
#: the way from chance to 1 (0.5: half-way; 10 classes -> 0.55)
LEARNED = 0.5


class Untestable(Exception):
    """Raised by a claim's measure: the claim cannot be tested on these results (the message
    is the measured reason)."""


@dataclass(frozen=True)
class Measure:
    """A claim measured: ``value`` with its ``uncertainty`` (a standard error), the verdict
    and the reason (the numbers behind it)."""

    value: float
    uncertainty: float
    verdict: str
    reason: str


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, and how a study's results test it.

    Attributes
    ----------
    key : str
        A short identifier (``target_enhanced``).
    statement : str
        The claim in one sentence, quoted or closely paraphrased from the paper.
    citation : str
        Where the sentence is from (``Hermann & Lampinen 2020, abstract``).
    quantity : str
        What ``value`` and ``uncertainty`` are.
    measure : callable
        ``measure(results) -> Measure``; raises :class:`Untestable` with the reason when a
        result is missing or the claim's premise is not met.
    """

    key: str
    statement: str
    citation: str
    quantity: str
    measure: Callable[[Results], Measure]


class Results:
    """Read access to a store's runs and results for claims (each result read once).

    Parameters
    ----------
    store : actstore.store.Store
        An open store.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[str, Any] = {}
        self._names = list(store.result_names())

    def names(self, group: str) -> list[str]:
        """Names of the results of ``group``."""
        return [n.split("/", 1)[1] for n in self._names if n.split("/", 1)[0] == group]

    def get(self, group: str, name: str) -> Any:
        """The result ``group/name`` (a Dataset)."""
        key = f"{group}/{name}"
        if key not in self._cache:
            self._cache[key] = self.store.read_result(group, name)
        return self._cache[key]

    def need(self, group: str, what: str, match: Callable[[Any], bool] | None = None) -> Any:
        """The first result of ``group`` (that ``match`` accepts); :class:`Untestable` naming
        ``what`` is missing otherwise."""
        for name in self.names(group):
            ds = self.get(group, name)
            if match is None or match(ds):
                return ds
        raise Untestable(f"no {what} in the store (results/{group})")

    def runs(self) -> dict[str, dict[str, Any]]:
        """Attributes of every run, by run id."""
        if "runs" not in self._cache:
            self._cache["runs"] = {r: dict(self.store.reader(r).attrs)
                                   for r in self.store.run_ids()}
        return self._cache["runs"]

    def val_accuracy(self, run: str, head: str) -> float:
        """Held-out accuracy of ``run``'s output ``head`` at its last checkpoint (NaN if
        not recorded)."""
        acc = (((self.runs()[run].get("metrics") or {}).get("val") or {}).get("acc") or {})
        v = acc.get(head) if isinstance(acc, dict) else None
        return float(v[-1]) if isinstance(v, list) and v else float("nan")

    def chance(self, run: str, head: str) -> float:
        """1 / number of classes of ``run``'s output ``head`` (NaN if unknown)."""
        cfg = self.runs()[run].get("config") or {}
        for h in (cfg.get("task") or {}).get("heads", []):
            if str(h.get("name")) == head and h.get("n_classes"):
                return 1.0 / float(h["n_classes"])
        return float("nan")

    def learned(self, run: str, head: str) -> bool:
        """Whether ``run`` learned ``head`` (:data:`LEARNED` of the way from chance to 1)."""
        acc, ch = self.val_accuracy(run, head), self.chance(run, head)
        return bool(np.isfinite(acc) and np.isfinite(ch) and acc >= ch + LEARNED * (1 - ch))


def mean_se(values: Sequence[float], fallback: float = float("nan")) -> tuple[float, float]:
    """Mean of ``values`` and its standard error (``fallback`` for a single value)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(fallback)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def directional(value: float, uncertainty: float, sign: int, evidence: str) -> Measure:
    """The verdict on an effect claimed to have ``sign`` (+1: positive, -1: negative, 0: non-zero
    either way), from its value and uncertainty; ``evidence`` (the numbers) ends the reason."""
    u = float(uncertainty) if np.isfinite(uncertainty) else 0.0
    if not np.isfinite(value):
        return Measure(value, uncertainty, UNTESTABLE, f"no finite value; {evidence}")
    signed = abs(value) if sign == 0 else sign * value
    if signed > Z * u:
        return Measure(value, uncertainty, HOLDS, evidence)
    if signed <= -Z * u or (sign == 0 and value == 0 and u == 0):
        return Measure(value, uncertainty, FAILS, f"against the claim: {evidence}")
    return Measure(value, uncertainty, UNTESTABLE,
                   f"effect {value:+.3f} within {Z:g} x its uncertainty {u:.3f} at this scale; "
                   f"{evidence}")


def evaluate_claims(claims: Iterable[Claim], store: Any) -> list[tuple[Claim, Measure]]:
    """Measure every claim on ``store`` (an open store)."""
    res = Results(store)
    out = []
    for c in claims:
        try:
            m = c.measure(res)
        except Untestable as e:
            m = Measure(float("nan"), float("nan"), UNTESTABLE, str(e))
        out.append((c, m))
    return out


def findings_dataset(study: str, paper: str, measured: Sequence[tuple[Claim, Measure]]) -> Any:
    """The findings table as an xarray Dataset over ``claim`` (what the store keeps).

    Variables: ``statement``, ``citation``, ``quantity``, ``verdict``, ``reason`` (strings),
    ``value``, ``uncertainty`` (float64).
    """
    import xarray as xr

    keys = [c.key for c, _ in measured]

    def col(values: list[Any], dtype: Any = object) -> tuple[str, np.ndarray]:
        return ("claim", np.asarray(values, dtype=dtype))

    return xr.Dataset(
        {
            "statement": col([c.statement for c, _ in measured]),
            "citation": col([c.citation for c, _ in measured]),
            "quantity": col([c.quantity for c, _ in measured]),
            "value": col([m.value for _, m in measured], float),
            "uncertainty": col([m.uncertainty for _, m in measured], float),
            "verdict": col([m.verdict for _, m in measured]),
            "reason": col([m.reason for _, m in measured]),
        },
        coords={"claim": np.asarray(keys, dtype=object)},
        attrs={"analysis": "findings", "study": study, "paper": paper,
               "rule": f"holds: the effect is in the claimed direction by more than {Z:g} "
                       f"uncertainties; does not hold: against it by more than {Z:g}; not "
                       "testable: a result or premise is missing, or the effect is within "
                       f"{Z:g} uncertainties",
               "description": f"The claims of {paper}, each measured on this store's "
                              "results, with a verdict computed from the numbers."},
    )


def findings_rows(ds: Any) -> list[dict[str, Any]]:
    """The rows of a findings Dataset as JSON-ready dicts (NaN as ``None``)."""
    def num(x: Any) -> float | None:
        x = float(x)
        return round(x, 4) if np.isfinite(x) else None

    return [{"claim": str(k), "statement": str(ds["statement"].values[i]),
             "citation": str(ds["citation"].values[i]),
             "quantity": str(ds["quantity"].values[i]),
             "value": num(ds["value"].values[i]),
             "uncertainty": num(ds["uncertainty"].values[i]),
             "verdict": str(ds["verdict"].values[i]), "reason": str(ds["reason"].values[i])}
            for i, k in enumerate(ds["claim"].values)]


def write_findings(study: Any, url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """Measure the claims of ``study`` (a :class:`~actstore.studies.Study`) on the store
    ``url`` (opened with ``storage_options``) and write the table to
    ``/results/findings/<study name>``.

    Returns
    -------
    xarray.Dataset or None
        The table; ``None`` for a study with no claims (a study file of one's own).
    """
    from actstore.store import open_store
    from actstore.studies.claims import CLAIMS

    claims = CLAIMS.get(study.name)
    if not claims:
        return None
    store = open_store(url, mode="a", storage_options=storage_options)
    ds = findings_dataset(study.name, study.paper, evaluate_claims(claims, store))
    ds.attrs["scale"] = study.scale
    store.write_result("findings", study.name, ds)
    return ds
