"""Probe sets from sentences: CSV / JSON Lines tables tokenised with a tokenizer saved into a
local folder (built here from a tiny vocabulary, nothing downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actstore import ActstoreError
from actstore.store import create_store, open_store, probe_set_from_path, text_probe_set

pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran",
         "far"]
IDS = {w: i for i, w in enumerate(VOCAB)}


def _save(tok_model, tmp_path, name, **special):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=tok_model, **special)
    folder = tmp_path / name
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture
def bert_tokenizer(tmp_path):
    """A BERT-style WordPiece tokenizer: [CLS] text [SEP], [PAD] = 0, token_type_ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tk = Tokenizer(models.WordPiece(IDS, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _save(tk, tmp_path, "bert_tok", pad_token="[PAD]", unk_token="[UNK]",
                 cls_token="[CLS]", sep_token="[SEP]",
                 model_input_names=["input_ids", "token_type_ids", "attention_mask"])


@pytest.fixture
def gpt_tokenizer(tmp_path):
    """A GPT-2-style tokenizer: no pad token, an end-of-text token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {**IDS, "<eos>": len(IDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return _save(tk, tmp_path, "gpt_tok", eos_token="<eos>", unk_token="[UNK]")


@pytest.fixture
def sentences(tmp_path):
    f = tmp_path / "sentences.csv"
    f.write_text("text,animal,length\n"
                 "the cat sat on the mat,cat,6\n"
                 "a dog ran,dog,3\n"
                 "the dog sat,dog,3\n"
                 "a cat ran far,cat,4\n")
    return f


def test_a_csv_of_sentences_becomes_named_inputs_with_mask_and_classes(sentences,
                                                                       bert_tokenizer):
    ps = text_probe_set(sentences, bert_tokenizer)
    assert ps.name == "sentences" and ps.n == 4
    assert ps.input_names == ("input_ids", "attention_mask", "token_type_ids")
    ids = ps.inputs["input_ids"]
    # [CLS] the cat sat on the mat [SEP]: the longest, 8 tokens; the others padded with 0
    assert ids.shape == (4, 8) and ids.dtype == np.int64
    assert ids[0].tolist() == [2, 4, 5, 6, 7, 4, 8, 3]
    assert ids[1].tolist() == [2, 9, 10, 11, 3, 0, 0, 0]
    assert ps.mask.sum(axis=1).tolist() == [8, 5, 5, 6]
    assert (ps.mask.sum(axis=1) - 2).tolist() == ps.labels["length"].tolist()
    assert not ps.inputs["token_type_ids"].any()
    # string labels -> class codes in sorted order, the names kept
    assert ps.labels["animal"].tolist() == [0, 1, 1, 0]
    assert ps.attrs["classes"] == {"animal": ["cat", "dog"]}
    assert ps.labels["length"].dtype.kind == "i"
    a = ps.attrs
    assert (a["generator"], a["tokenizer"], a["padding"], a["truncation"], a["max_length"],
            a["n_truncated"], a["tokens"], a["padding_side"]) == (
        "text", "bert_tok", "longest", False, None, 0, 8, "right")


def test_max_length_cuts_and_is_recorded(sentences, bert_tokenizer):
    ps = text_probe_set(sentences, bert_tokenizer, max_length=6)
    ids = ps.inputs["input_ids"]
    assert ids.shape == (4, 6)
    assert ids[0].tolist() == [2, 4, 5, 6, 7, 3]  # cut at the end, [SEP] kept
    assert ps.attrs["n_truncated"] == 1 and ps.attrs["truncation"] is True
    padded = text_probe_set(sentences, bert_tokenizer, max_length=10, padding="max_length")
    assert padded.inputs["input_ids"].shape == (4, 10)
    assert padded.mask.sum(axis=1).tolist() == [8, 5, 5, 6]
    with pytest.raises(ActstoreError, match=r"data row 1 has 8 tokens, more than 6"):
        text_probe_set(sentences, bert_tokenizer, max_length=6, truncation=False)


def test_jsonl_with_continuous_labels_and_a_tokenizer_without_pad(tmp_path, gpt_tokenizer):
    f = tmp_path / "s.jsonl"
    rows = [{"text": "the cat sat", "valence": 0.5, "sample": "s1"},
            {"text": "a dog", "valence": -1.25, "sample": "s2"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ps = text_probe_set(f, gpt_tokenizer)
    eos = len(VOCAB)
    assert ps.input_names == ("input_ids", "attention_mask")
    assert ps.inputs["input_ids"].tolist() == [[4, 5, 6], [9, 10, eos]]  # padded with <eos>
    assert ps.mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ps.labels["valence"].tolist() == [0.5, -1.25]
    assert ps.sample.tolist() == ["s1", "s2"]
    assert "no pad token" in ps.attrs["pad_token"]


def test_a_text_probe_set_round_trips_through_the_store(tmp_path, sentences, bert_tokenizer):
    ps = probe_set_from_path(sentences, tokenizer=bert_tokenizer, max_length=7)
    url = str(tmp_path / "s.zarr")
    create_store(url).add_probe_set(ps)
    back = open_store(url).probe_set("sentences")
    assert back.hash == ps.hash and back.attrs == ps.attrs
    np.testing.assert_array_equal(back.mask, ps.mask)


@pytest.mark.parametrize(("content", "kwargs", "match"), [
    ("sentence,y\na,1\n", {}, r"has no text column 'text' \(columns: sentence, y\); name it"),
    ("text,y\nthe cat,1\n", {"labels": ["z"]}, "has no column 'z'; its columns: text, y"),
    ("text,y\nthe cat,1\na dog,nan\n", {}, r"label column 'y' has 1 empty or NaN value\(s\) "
                                           r"\(data rows 2\)"),
    ("text,y\nthe cat,1\na dog,\n", {}, "label column 'y' has 1 empty or NaN"),
    ("text,y\nthe cat,1\n ,2\n", {}, "text column 'text' is empty in data row 2"),
    ("text\nthe cat\n", {}, "has no label column"),
    ("text,y\nthe cat,1\n", {"padding": "max_length"}, "padding to max_length needs"),
    ("text,y\nthe cat,1\n", {"padding": "left"}, "padding 'left' is not one of"),
])
def test_bad_tables_are_one_clear_error(tmp_path, bert_tokenizer, content, kwargs, match):
    f = tmp_path / "t.csv"
    f.write_text(content)
    with pytest.raises(ActstoreError, match=match):
        text_probe_set(f, bert_tokenizer, **kwargs)


def test_bad_tokenizer_folders_and_sources(tmp_path, sentences, bert_tokenizer):
    with pytest.raises(ActstoreError, match="tokenizer folder .*nope does not exist"):
        text_probe_set(sentences, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ActstoreError, match="cannot load a tokenizer from .*empty"):
        text_probe_set(sentences, tmp_path / "empty")
    with pytest.raises(ActstoreError, match="give the tokenizer folder .* with --tokenizer"):
        probe_set_from_path(sentences)
    with pytest.raises(ActstoreError, match="--tokenizer applies to a table of sentences"):
        probe_set_from_path(tmp_path / "x.npz", tokenizer=tmp_path)
    with pytest.raises(ActstoreError, match="names a probe set in the store"):
        probe_set_from_path("stim", max_length=3)
    assert probe_set_from_path("stim") is None
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a", "y": 1}\n[1]\n')
    with pytest.raises(ActstoreError, match="line 2: a list, not a JSON object"):
        probe_set_from_path(bad, tokenizer=bert_tokenizer)
