"""A text CSV -> a tokenised probe set -> dump of a Hugging Face model folder -> probe ->
report, through the command line, with a tiny BERT and a word-level tokenizer made here (no
download)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

transformers = pytest.importorskip("transformers")

runner = CliRunner()
ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat"]
VEHICLES = ["car", "bus", "train", "truck", "bike", "boat"]
FILLER = ["the", "a", "saw", "near", "big", "small", "and", "red"]


def _folders(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ANIMALS, *VEHICLES, *FILLER]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "tok")
    import torch

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=32)).save_pretrained(tmp_path / "bert")
    rng = np.random.default_rng(0)
    with open(tmp_path / "sentences.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "topic", "words"])
        for i in range(32):
            topic = ["animal", "vehicle"][i % 2]
            nouns = ANIMALS if topic == "animal" else VEHICLES
            k = int(rng.integers(2, 9))
            words = [str(rng.choice(nouns if j % 2 else FILLER)) for j in range(k)]
            w.writerow([" ".join(words), topic, float(k)])


def test_text_csv_to_report(tmp_path):
    _folders(tmp_path)
    res = runner.invoke(app, [
        "layers", "--model", f"hf:{tmp_path / 'bert'}", "--probe-set",
        str(tmp_path / "sentences.csv"), "--tokenizer", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    block = next(ln for ln in res.output.splitlines() if ln[9:].split()[:1] == ["encoder.layer.1"])
    assert block[:8].split() == ["*", "+"] and "BertLayer" in block and "(2, " in block

    store = str(tmp_path / "text.zarr")
    res = runner.invoke(app, [
        "dump", store, "--model", f"hf:{tmp_path / 'bert'}", "--step", "0",
        "--probe-set", str(tmp_path / "sentences.csv"), "--tokenizer", str(tmp_path / "tok"),
        "--run", "bert", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["written"] == [0]
    st = open_store(store)
    ps = st.probe_set("sentences")
    assert set(ps.input_names) >= {"input_ids", "attention_mask"}
    rd = st.reader("bert")
    assert rd.layers == ["embeddings", "encoder_layer_0", "encoder_layer_1", "pooler"]
    assert rd.layer_table["encoder_layer_1"]["token_mask"] == "attention_mask"

    res = runner.invoke(app, ["probe", store, "--name", "text", "--folds", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", store, "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report" / "index.html").read_text()
    assert "encoder_layer_1" in html and "topic" in html
