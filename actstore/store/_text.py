"""Probe sets from sentences: a CSV or JSON Lines table of texts and labels, tokenised with a
Hugging Face tokenizer loaded from a local folder (never downloaded).

The probe set holds named inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``
where the tokenizer makes them), int64 of shape (n, tokens); its attrs record the tokenizer,
the padding, the truncation and how many texts were cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.store._probeset import ProbeSet
from actstore.store._sources import column_cells, label_columns, read_table

__all__ = ["TEXT_OPTIONS", "load_tokenizer", "text_probe_set"]

#: options of :func:`text_probe_set` beyond the source, tokenizer, text column and length
TEXT_OPTIONS = ("labels", "padding", "truncation")
_PADDING = ("longest", "max_length")
#: models accept no more tokens than this; a tokenizer without a limit reports a huge number
_NO_LIMIT = 10**6


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local folder written by ``tokenizer.save_pretrained`` (or holding a
    model's ``tokenizer.json``/vocab files), loaded with
    ``AutoTokenizer.from_pretrained(path, local_files_only=True)``: nothing is downloaded.

    Raises
    ------
    ActstoreError
        If the folder is missing, transformers is not installed, or the folder holds no
        tokenizer transformers can load.
    """
    p = Path(path)
    if not p.is_dir():
        raise ActstoreError(
            f"tokenizer folder {p} does not exist; give a local folder written by "
            "tokenizer.save_pretrained (nothing is downloaded)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ActstoreError(
            "tokenising text needs transformers and tokenizers: pip install 'actstore[hf]'"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        from actstore.store._store import first_line

        raise ActstoreError(
            f"cannot load a tokenizer from {p} ({first_line(e)}); give a folder written by "
            "tokenizer.save_pretrained (tokenizer.json, or vocab files with "
            "tokenizer_config.json)"
        ) from None


def _tokenizer_name(tok: Any, given: Any) -> str:
    if isinstance(given, (str, Path)):
        return Path(given).name
    return str(getattr(tok, "name_or_path", "") or type(tok).__name__)


def text_probe_set(path: str | Path, tokenizer: Any, *, name: str | None = None,
                   text_column: str = "text", labels: list[str] | None = None,
                   max_length: int | None = None, padding: str = "longest",
                   truncation: bool | None = None) -> ProbeSet:
    """A probe set of sentences from a CSV (with a header) or JSON Lines file.

    Parameters
    ----------
    path : str or Path
        ``.csv`` or ``.jsonl``: a text column, label columns, optional ``sample`` ids.
    tokenizer : str, Path or a Hugging Face tokenizer
        A local tokenizer folder (see :func:`load_tokenizer`) or a loaded tokenizer. One
        without a pad token (GPT-2) pads with its end-of-text token; the mask marks it.
    name : str, optional
        Probe set name (default: the file name without suffix).
    text_column : str
        The column of texts (default ``text``).
    labels : list of str, optional
        Label columns (default: every column but the text column and ``sample``). Numbers are
        kept (integers: classes, floats: continuous); strings become class codes 0, 1, ... in
        sorted order, their names in ``attrs["classes"]``.
    max_length : int, optional
        Most tokens per text (special tokens included); longer texts are cut at the end
        (``truncation``), and counted in ``attrs["n_truncated"]``.
    padding : {"longest", "max_length"}
        Pad every text to the longest one (at most ``max_length``), or to ``max_length``.
    truncation : bool, optional
        Cut texts longer than ``max_length`` (default: whenever ``max_length`` is given);
        ``False`` refuses such texts instead.

    Returns
    -------
    ProbeSet
        Named inputs ``input_ids``, ``attention_mask`` (1 = token, 0 = padding) and, where the
        tokenizer makes them, ``token_type_ids``: int64 arrays of shape (n, tokens).

    Raises
    ------
    ActstoreError
        A missing file, text or label column, an empty text, a label column with empty or
        NaN cells, a tokenizer folder that cannot be loaded, bad padding options, or texts
        longer than the model takes (give ``max_length``).

    Examples
    --------
    ``actstore dump s.zarr ckpts/ -m hf:bert -p sentences.csv --tokenizer bert/ --max-length 64``
    """
    p = Path(path)
    if padding not in _PADDING:
        raise ActstoreError(f"padding {padding!r} is not one of {', '.join(_PADDING)}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ActstoreError(f"max_length must be a positive whole number, not {max_length!r}")
    if padding == "max_length" and max_length is None:
        raise ActstoreError("padding to max_length needs --max-length N")
    truncation = max_length is not None if truncation is None else bool(truncation)
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    table = read_table(p)
    texts = column_cells(table, p, text_column, "text", "--text-column")
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ActstoreError(f"{p}: text column {text_column!r} is empty in data row "
                            f"{empty[0]} ({len(empty)} row(s)); give a text in every row")
    lab, classes = label_columns(table, p, {text_column, "sample"}, labels)
    pad_note = None
    if getattr(tok, "pad_token", None) is None:
        if getattr(tok, "eos_token", None) is None:
            raise ActstoreError(
                f"tokenizer {_tokenizer_name(tok, tokenizer)} has neither a pad token nor an "
                "end-of-text token to pad with; set tokenizer.pad_token and save it again"
            )
        tok.pad_token = tok.eos_token
        pad_note = "eos_token (the tokenizer has no pad token)"
    full = [len(ids) for ids in tok(texts, truncation=False)["input_ids"]]
    limit = max_length or int(getattr(tok, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
    too_long = [i for i, k in enumerate(full) if k > limit]
    if too_long and (max_length is None or not truncation):
        i = too_long[0]
        raise ActstoreError(
            f"{p}: text in data row {i + 1} has {full[i]} tokens, more than {limit} "
            f"({len(too_long)} such text(s)); give --max-length N to cut them"
            + ("" if max_length is None else " (and allow truncation)")
        )
    enc = tok(texts, padding=padding, truncation=truncation, max_length=max_length,
              return_attention_mask=True)
    inputs = {k: np.asarray(enc[k], dtype=np.int64)
              for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    attrs: dict[str, Any] = {
        "generator": "text", "source": p.name, "text_column": text_column,
        "tokenizer": _tokenizer_name(tok, tokenizer), "tokenizer_class": type(tok).__name__,
        "vocab_size": len(tok), "max_length": max_length, "padding": padding,
        "padding_side": str(getattr(tok, "padding_side", "right")),
        "truncation": truncation, "truncation_side": str(getattr(tok, "truncation_side",
                                                                 "right")),
        "n_truncated": len(too_long), "tokens": int(inputs["input_ids"].shape[1]),
    }
    if pad_note:
        attrs["pad_token"] = pad_note
    if classes:
        attrs["classes"] = classes
    return ProbeSet(name=name or p.stem, labels=lab, inputs=inputs,
                    sample=table.get("sample"), attrs=attrs)
