"""Token reductions that respect the attention mask, checked against hand computations:
on tensors, and on what a dump of tiny Hugging Face models (built from configs) stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_bert, tiny_gpt2, token_batch

from actstore import ActstoreError
from actstore.store import ProbeSet, create_store, dump, reduce_output

transformers = pytest.importorskip("transformers")


def _mask(n: int, t: int, left: bool) -> np.ndarray:
    lengths = [1 + (i * 2) % t for i in range(n)]
    m = np.zeros((n, t), dtype=np.int64)
    for i, k in enumerate(lengths):
        m[i, slice(t - k, t) if left else slice(0, k)] = 1
    return m


def _by_hand(x: np.ndarray, m: np.ndarray, how: str) -> np.ndarray:
    """Loops over samples and their valid tokens, as one would write it on paper."""
    out = []
    for xi, mi in zip(x, m, strict=True):
        valid = [xi[j] for j in range(len(mi)) if mi[j]]
        out.append({"mean": sum(valid) / len(valid), "max": np.max(valid, axis=0),
                    "first": valid[0], "last": valid[-1]}[how])
    return np.stack(out)


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("how", ["mean", "max", "first", "last"])
def test_masked_reductions_equal_a_hand_computation(how, left):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 6, 4))
    m = _mask(5, 6, left)
    x[m == 0] = 1e6  # pads hold huge values: any that leaks shows
    got, used = reduce_output(torch.from_numpy(x), how, "h", torch.from_numpy(m))
    assert used == how
    np.testing.assert_allclose(got.numpy(), _by_hand(x, m, how), rtol=1e-12)


def test_without_a_mask_every_token_counts():
    x = np.random.default_rng(0).normal(size=(3, 4, 2))
    t = torch.from_numpy(x)
    np.testing.assert_allclose(reduce_output(t, "mean", "h")[0].numpy(), x.mean(axis=1))
    np.testing.assert_array_equal(reduce_output(t, "first", "h")[0].numpy(), x[:, 0])
    np.testing.assert_array_equal(reduce_output(t, "last", "h")[0].numpy(), x[:, -1])


def test_all_keeps_every_token_with_pads_zeroed():
    x = np.random.default_rng(1).normal(size=(4, 5, 3)) + 10
    m = _mask(4, 5, left=True)
    got = reduce_output(torch.from_numpy(x), "all", "h", torch.from_numpy(m))[0].numpy()
    assert got.shape == (4, 5, 3)
    np.testing.assert_array_equal(got[m == 1], x[m == 1])
    assert (got[m == 0] == 0).all()


def test_mask_of_other_length_or_conv_maps_is_not_applied():
    x = torch.ones(2, 3, 4, 4)
    m = torch.tensor([[1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(reduce_output(x, "mean", "c", m)[0].numpy(), np.ones((2, 3)))
    with pytest.raises(ActstoreError, match="'first' needs a token sequence"):
        reduce_output(x, "first", "c", m)


def test_a_sample_without_tokens_is_refused():
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ActstoreError, match="no valid token"):
        reduce_output(torch.ones(2, 3, 4), "mean", "h", m)


def _hidden(model, batch):
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()},
                    output_hidden_states=True)
    return [h.double().numpy() for h in out.hidden_states]


def _dump(tmp_path, factory, batch, **kw):
    n = len(batch["input_ids"])
    ps = ProbeSet("sents", labels={"length": batch["attention_mask"].sum(axis=1)},
                  inputs=batch)
    url = str(tmp_path / "s.zarr")
    st = create_store(url)
    st.add_probe_set(ps)
    rep = dump(url, "r0", factory, None, "sents", step=0, batch_size=4, **kw)
    assert rep.written == [0] and n == 6
    return st.reader("r0")


def test_bert_dump_records_block_outputs_pooled_over_valid_tokens(tmp_path):
    batch = token_batch()
    rd = _dump(tmp_path, tiny_bert, batch)
    assert rd.layers == ["embeddings", "encoder_layer_0", "encoder_layer_1", "pooler"]
    hs = _hidden(tiny_bert(), batch)
    m = batch["attention_mask"]
    for name, h in zip(rd.layers[:3], hs, strict=False):
        np.testing.assert_allclose(rd.read(name, 0), _by_hand(h, m, "mean"), atol=1e-5)
        assert rd.layer_table[name]["token_mask"] == "attention_mask"
    # pads left out: the pooled embeddings do not tell the sentence length by the pad count
    padded = np.where(m[..., None] == 1, hs[0], 0).sum(axis=1) / m.shape[1]
    assert not np.allclose(rd.read("embeddings", 0), padded, atol=1e-3)


@pytest.mark.parametrize("how", ["first", "last", "max"])
def test_gpt2_left_padded_tokens_reduce_as_by_hand(tmp_path, how):
    batch = token_batch(left=True)
    rd = _dump(tmp_path, tiny_gpt2, batch, reduce=how, layers="h.0,ln_f")
    hs = _hidden(tiny_gpt2(), batch)
    m = batch["attention_mask"]
    np.testing.assert_allclose(rd.read("h_0", 0), _by_hand(hs[1], m, how), atol=1e-5)
    np.testing.assert_allclose(rd.read("ln_f", 0), _by_hand(hs[2], m, how), atol=1e-5)


def test_all_tokens_are_stored_with_the_mask_beside(tmp_path):
    batch = token_batch()
    rd = _dump(tmp_path, tiny_bert, batch, reduce="all", layers="encoder.layer.1")
    h = _hidden(tiny_bert(), batch)[2]
    m = batch["attention_mask"]
    got = rd.array("encoder_layer_1")[0]  # (sample, token, unit)
    assert got.shape == h.shape
    assert rd.layer_table["encoder_layer_1"]["token_mask"] == "attention_mask"
    np.testing.assert_allclose(got[m == 1], h[m == 1], atol=1e-5)
    assert (got[m == 0] == 0).all()
