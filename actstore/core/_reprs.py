"""Short one-line descriptions of arrays, lists and text, for the reprs of result classes.

Every helper reads only shapes, dtypes and a few items: a repr never copies or scans an array
(it may live on a GPU or be large).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["array_summary", "short_list", "short_text"]


def array_summary(x: Any) -> str:
    """``float64[54, 54]``: dtype and shape of an array (numpy, torch, cupy), or ``None``."""
    if x is None:
        return "None"
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    dtype = str(getattr(x, "dtype", "?")).removeprefix("torch.")
    return f"{dtype}[{', '.join(str(int(s)) for s in shape)}]"


def short_list(items: Sequence[Any], most: int = 4) -> str:
    """``['a', 'b', 'c', ... (40 in all)]``: a list in one short line."""
    shown = ", ".join(short_text(x, 24) if isinstance(x, str) else str(x) for x in items[:most])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > most else ''}]"


def short_text(text: str, most: int = 60) -> str:
    """``repr(text)``, cut to about ``most`` characters with ``...``."""
    return repr(text if len(text) <= most else text[: most - 3] + "...")
