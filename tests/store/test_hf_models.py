"""Pretrained models without checkpoint files: ``dump --step N`` records a factory's own
weights; ``--model hf:FOLDER`` loads a Hugging Face model folder offline, from safetensors
only. The models are tiny and built from configs (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_bert, tiny_gpt2, token_batch
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore.cli import app
from actstore.store import ProbeSet, dump, load_hf_model, open_store, weights_hash

pytest.importorskip("transformers")


runner = CliRunner()


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "bert"
    tiny_bert().save_pretrained(folder)
    return folder


def _probe_set() -> ProbeSet:
    batch = token_batch()
    return ProbeSet("sents", labels={"length": batch["attention_mask"].sum(axis=1)},
                    inputs=batch)


def test_a_saved_folder_loads_back_with_the_same_weights(bert_folder):
    net = load_hf_model(bert_folder)
    assert type(net).__name__ == "BertModel" and not net.training
    assert weights_hash(net) == weights_hash(tiny_bert())


def test_hf_folder_dump_equals_the_factory_dump(tmp_path, bert_folder):
    url = str(tmp_path / "s.zarr")
    ps = _probe_set()
    a = dump(url, "hf", f"hf:{bert_folder}", None, ps, step=0)
    b = dump(url, "fac", tiny_bert, None, ps, step=0)
    assert a.written == b.written == [0]
    st = open_store(url)
    ra, rb = st.reader("hf"), st.reader("fac")
    assert ra.layers == rb.layers == ["embeddings", "encoder_layer_0", "encoder_layer_1",
                                      "pooler"]
    for name in ra.layers:
        np.testing.assert_array_equal(ra.read(name, 0), rb.read(name, 0))
    assert ra.attrs["model"] == f"hf:{bert_folder.resolve()}"
    # recorded again: nothing to do, the weights hash matches
    assert dump(url, "hf", f"hf:{bert_folder}", None, ps, step=0).skipped == [0]


def test_gpt2_all_picks_token_embeddings_blocks_and_final_norm(tmp_path):
    url = str(tmp_path / "g.zarr")
    dump(url, "g", tiny_gpt2, None, _probe_set(), step=5)
    rd = open_store(url).reader("g")
    # wpe's output (1, tokens, d) is the same for every sample: not a layer of the batch
    assert rd.layers == ["wte", "h_0", "h_1", "ln_f"]
    assert rd.complete_steps == [5]


def test_a_folder_with_only_pickled_weights_is_refused(tmp_path, bert_folder):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((bert_folder / "config.json").read_text())
    torch.save(tiny_bert().state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ActstoreError, match=r"only pytorch_model.bin \(a pickle, which "
                                            r"actstore never loads\); save the weights as "
                                            "safetensors"):
        load_hf_model(folder)
    with pytest.raises(ActstoreError, match="no such folder"):
        load_hf_model(tmp_path / "missing")
    with pytest.raises(ActstoreError, match="no config.json"):
        load_hf_model(tmp_path)


def test_cli_dump_of_an_hf_folder_with_step(tmp_path, bert_folder):
    batch = token_batch()
    npz = tmp_path / "sents.npz"
    np.savez(npz, **{"inputs.input_ids": batch["input_ids"],
                     "inputs.attention_mask": batch["attention_mask"]},
             length=batch["attention_mask"].sum(axis=1))
    store = str(tmp_path / "c.zarr")
    args = ["dump", store, "--model", f"hf:{bert_folder}", "--probe-set", str(npz),
            "--run", "bert", "--layers", "all", "--json"]
    res = runner.invoke(app, [*args, "--step", "7"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["written"] == [7]
    rd = open_store(store).reader("bert")
    assert rd.layer_table["encoder_layer_1"]["token_mask"] == "attention_mask"
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--step N" in res.output
    res = runner.invoke(app, [*args[:2], str(tmp_path), *args[2:], "--step", "7"])
    assert res.exit_code == 2 and "not both" in res.output


class _Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(40, 4)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids) * attention_mask[..., None]


def test_named_inputs_the_model_does_not_take_fail_in_one_line(tmp_path):
    ids = token_batch()["input_ids"]
    ps = ProbeSet("odd", labels={"y": np.arange(len(ids)) % 2},
                  inputs={"input_ids": ids, "pixel_values": np.zeros((len(ids), 3), "float32")})
    with pytest.raises(ActstoreError) as e:
        dump(str(tmp_path / "s.zarr"), "r", _Tokens, None, ps, step=0)
    msg = str(e.value)
    assert "\n" not in msg and "_Tokens" in msg and "probe set 'odd'" in msg
    assert "input_ids=int64[2, 7], pixel_values=float32[2, 3] passed by name" in msg
    assert "pixel_values" in msg.split("): ")[-1]  # the model's own complaint
    assert not (tmp_path / "s.zarr").exists()
