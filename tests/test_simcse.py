"""Tests of mmutils.simcse: the sentence encoder, the fact-based gold similarity, the STS benchmark,
supervised triplets, the bag-of-words baseline, and the scoring of a benchmark."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmutils import simcse as S
from mmutils import world

VOCAB = 40


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return S.SentenceEncoder(S.tiny_bert(VOCAB, dim=16, layers=1, heads=2, max_len=12)).eval()


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_encoder_shapes(encoder, batch):
    ids = torch.randint(5, VOCAB, (batch, 7))
    mask = torch.ones_like(ids)
    assert encoder(ids, mask).shape == (batch, 16)
    z = encoder.encode(ids, mask, batch_size=2)
    assert z.shape == (batch, 16) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(batch), atol=1e-5)
    assert encoder.out_dim == 16


def test_tiny_bert_last_hidden_state_shape():
    model = S.tiny_bert(VOCAB, dim=8, layers=1, heads=2, max_len=10)
    ids = torch.randint(0, VOCAB, (2, 5))
    assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.shape == (2, 5, 8)
    assert model.config.hidden_dropout_prob == pytest.approx(0.1)


def test_padding_does_not_change_the_embedding(encoder):
    ids = torch.randint(5, VOCAB, (3, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # row 1 is a shorter sentence
    ids[1, 4:] = 0
    padded_ids = torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(encoder(ids, mask), encoder(padded_ids, padded_mask), atol=1e-5)
        # Whatever sits in the padded positions is ignored.
        noisy = padded_ids.clone()
        noisy[padded_mask == 0] = 7
        assert torch.allclose(encoder(noisy, padded_mask), encoder(ids, mask), atol=1e-5)
        # A sentence alone equals the same sentence in a batch with longer ones.
        alone = encoder(ids[1:2, :4], mask[1:2, :4])
        assert torch.allclose(alone, encoder(ids, mask)[1:2], atol=1e-5)


def test_dropout_gives_two_views_in_train_mode_only(encoder):
    ids = torch.randint(5, VOCAB, (4, 6))
    encoder.train()
    try:
        assert not torch.allclose(encoder(ids), encoder(ids))
    finally:
        encoder.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(ids), encoder(ids))
    encoder.train()
    encoder.encode(ids)
    assert encoder.training  # encode restores the mode
    encoder.eval()


def test_encode_equals_forward_in_eval_mode(encoder):
    ids = torch.randint(5, VOCAB, (5, 6))
    mask = torch.ones_like(ids)
    mask[3, 4:] = 0
    with torch.no_grad():
        expected = F.normalize(encoder(ids, mask), dim=1)
    assert torch.allclose(encoder.encode(ids, mask.bool(), batch_size=2), expected, atol=1e-6)


@pytest.mark.parametrize("call, error, name", [
    (lambda e: e(torch.zeros(2, 3)), TypeError, "ids"),
    (lambda e: e(torch.ones(1, 20, dtype=torch.long)), ValueError, "ids has length 20"),
    (lambda e: e(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)), ValueError, "mask"),
])
def test_encoder_bad_input(encoder, call, error, name):
    with pytest.raises(error, match=name):
        call(encoder)


def test_tiny_bert_bad_input():
    with pytest.raises(ValueError, match="dim"):
        S.tiny_bert(10, dim=10, heads=4)


# --------------------------------------------------------------------------- #
# Gold similarity
# --------------------------------------------------------------------------- #
RED_CIRCLE = ("circle", "red", "small")
BLUE_SQUARE = ("square", "blue", "large")


def test_fact_atoms_counts():
    objects, relations = S.fact_atoms({("exists", RED_CIRCLE)})
    assert len(objects) == 7 and not relations
    objects, relations = S.fact_atoms({("rel", RED_CIRCLE, "left of", BLUE_SQUARE)})
    assert len(objects) == 14 and len(relations) == 49
    # "a right of b" is "b left of a"; "below" is "above" the other way round.
    assert S.fact_atoms({("rel", BLUE_SQUARE, "right of", RED_CIRCLE)}) == (objects, relations)
    above = S.fact_atoms({("rel", RED_CIRCLE, "above", BLUE_SQUARE)})
    assert S.fact_atoms({("rel", BLUE_SQUARE, "below", RED_CIRCLE)}) == above


def test_fact_similarity_closed_form():
    same = world.parse_caption("a small red circle left of a large blue square")
    assert S.fact_similarity(same, same) == 1.0
    # A paraphrase: other words, the relation read from the other side.
    other_words = world.parse_caption("there is a big blue square to the right of a little red circle")
    assert S.fact_similarity(same, other_words) == 1.0
    # Nothing in common: 0.
    a = world.parse_caption("a small red circle")
    b = world.parse_caption("a large blue square")
    assert S.fact_similarity(a, b) == 0.0
    # One attribute changed on a single object: 3 shared of 7 + 7 - 3 atoms.
    c = world.parse_caption("a small green circle")
    assert S.fact_similarity(a, c) == pytest.approx(3 / 11)
    # Flipped relation: same objects (J = 1), disjoint relations (J = 0) -> 1/2.
    flipped = world.parse_caption("a small red circle right of a large blue square")
    assert S.fact_similarity(same, flipped) == pytest.approx(0.5)
    # Symmetric and in [0, 1].
    assert S.fact_similarity(a, same) == S.fact_similarity(same, a)
    assert 0 < S.fact_similarity(a, same) < 1


@pytest.mark.parametrize("facts_a, facts_b, name, error", [
    ("a red circle", {("exists", RED_CIRCLE)}, "facts", TypeError),
    ({("exists", RED_CIRCLE)}, {("exists", (None, None, None))}, "facts_b", ValueError),
    ({("exists", RED_CIRCLE)}, {("rel", RED_CIRCLE, "near", BLUE_SQUARE)}, "facts", ValueError),
    ({("exists", ("circle", "red"))}, {("exists", RED_CIRCLE)}, "descriptor", ValueError),
])
def test_fact_similarity_bad_input(facts_a, facts_b, name, error):
    with pytest.raises(error, match=name):
        S.fact_similarity(facts_a, facts_b)


# --------------------------------------------------------------------------- #
# Benchmark and triplets
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def pairs():
    return S.sts_pairs(100, seed=3)


def test_sts_pairs_deterministic_and_covering(pairs):
    again = S.sts_pairs(100, seed=3)
    assert again.texts_a == pairs.texts_a and again.texts_b == pairs.texts_b and again.kinds == pairs.kinds
    np.testing.assert_array_equal(again.gold, pairs.gold)
    assert S.sts_pairs(100, seed=4).texts_a != pairs.texts_a
    assert len(pairs) == 100 and pairs.gold.shape == (100,)
    assert sorted(set(pairs.kinds)) == sorted(S.PAIR_KINDS)
    assert all(len(pairs.select(k)) == 20 for k in S.PAIR_KINDS)
    assert ((pairs.gold >= 0) & (pairs.gold <= 1)).all()


def test_sts_pairs_gold_by_kind(pairs):
    gold = {k: pairs.gold[pairs.select(k)] for k in S.PAIR_KINDS}
    assert (gold["paraphrase"] == 1).all()
    para = pairs.select("paraphrase")
    assert all(pairs.texts_a[i] != pairs.texts_b[i] for i in para)  # other words, same facts
    assert (gold["relation"] >= 0.5).all() and (gold["relation"] < 1).all()
    for kind in ("attribute", "swap"):
        assert (gold[kind] > 0).all() and (gold[kind] < 1).all()
    assert gold["unrelated"].mean() < gold["attribute"].mean()
    # Every gold score is fact_similarity of the parsed captions.
    for i in range(0, 100, 17):
        expected = S.fact_similarity(world.parse_caption(pairs.texts_a[i]), world.parse_caption(pairs.texts_b[i]))
        assert pairs.gold[i] == expected


def test_sts_pairs_subset_of_kinds():
    p = S.sts_pairs(6, seed=0, kinds=("paraphrase", "swap"))
    assert sorted(p.kinds) == ["paraphrase"] * 3 + ["swap"] * 3


def test_supervised_triplets():
    anchors, positives, negatives = S.supervised_triplets(30, seed=1)
    assert len(anchors) == len(positives) == len(negatives) == 30
    assert S.supervised_triplets(30, seed=1) == (anchors, positives, negatives)
    for a, p, n in zip(anchors, positives, negatives):
        fa, fp, fn = (world.parse_caption(t) for t in (a, p, n))
        assert a != p and S.fact_similarity(fa, fp) == 1.0  # a paraphrase
        assert S.fact_similarity(fa, fn) < 1.0  # a near miss
    with pytest.raises(ValueError, match="n must be"):
        S.supervised_triplets(0)


# --------------------------------------------------------------------------- #
# Bag of words
# --------------------------------------------------------------------------- #
def test_bag_of_words_counts_and_shapes():
    bow = S.bag_of_words(["a red circle", "a red red square", "a crimson ring"], vocabulary=["a", "red", "square"])
    assert torch.equal(bow, torch.tensor([[1.0, 1, 0], [1, 2, 1], [1, 0, 0]]))
    assert S.bag_of_words(["a red circle"]).shape == (1, len(world.vocabulary()))


@pytest.mark.parametrize("n", [1, 4])
def test_bag_of_words_similarity(n):
    a = ["a small red circle left of a large blue square"] * n
    b = ["a large blue square left of a small red circle"] * n  # same words, other meaning
    c = ["the star"] * n
    assert S.bag_of_words_similarity(a, a).shape == (n,)
    assert torch.allclose(S.bag_of_words_similarity(a, b), torch.ones(n))
    assert torch.allclose(S.bag_of_words_similarity(a, c), torch.zeros(n))


def test_bag_of_words_bad_input():
    with pytest.raises(ValueError, match="texts_a and texts_b"):
        S.bag_of_words_similarity(["a"], ["a", "b"])


# --------------------------------------------------------------------------- #
# Scoring a benchmark
# --------------------------------------------------------------------------- #
def test_pair_cosines_embeds_each_distinct_sentence_once():
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return S.bag_of_words(texts, vocabulary=sorted(set(world.vocabulary())))

    a = ["a red circle", "a blue square", "a red circle"]
    b = ["a red circle", "a red square", "the star"]
    cos = S.pair_cosines(embed, a, b)
    assert cos.shape == (3,) and cos.dtype == torch.float32
    assert len(seen) == 1 and sorted(seen[0]) == sorted(set(a + b))  # one call, no duplicates
    assert [len(t) for t in seen[0]] == sorted(len(t) for t in seen[0])  # shortest first
    assert cos[0].item() == pytest.approx(1.0)
    assert cos[1].item() == pytest.approx(2 / 3)  # {a, red, circle} vs {a, red, square}
    assert torch.allclose(cos, S.bag_of_words_similarity(a, b))
    z_a, z_b = S.pair_embeddings(embed, a, b)
    assert z_a.shape == z_b.shape == (3, len(set(world.vocabulary())))
    assert torch.allclose(z_a.norm(dim=1), torch.ones(3)) and torch.equal(z_a[0], z_a[2])
    assert torch.allclose((z_a * z_b).sum(1), cos)


@pytest.mark.parametrize("n", [1, 5])
def test_pair_cosines_with_the_sentence_encoder(encoder, n):
    from mmutils import text
    tok = text.train_tokenizer(["a red circle", "a blue square left of a red star"])
    embed = lambda t: encoder.encode(*text.encode_batch(tok, t))  # noqa: E731
    a, b = ["a red circle"] * n, ["a blue square left of a red star"] * n
    cos = S.pair_cosines(embed, a, b)
    assert cos.shape == (n,)
    assert torch.allclose(S.pair_cosines(embed, a, a), torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("call, name, error", [
    (lambda: S.pair_cosines("minilm", ["a"], ["b"]), "embed", TypeError),
    (lambda: S.pair_cosines(lambda t: torch.ones(1, 2), ["a"], ["b"]), r"embed\(texts\) must have size 2", ValueError),
])
def test_pair_cosines_bad_input(call, name, error):
    with pytest.raises(error, match=name):
        call()


def test_kind_auc_closed_form():
    pairs = S.STSPairs(["x"] * 5, ["y"] * 5, np.array([1.0, 1.0, 0.5, 0.5, 0.0]),
                       ["paraphrase", "paraphrase", "relation", "relation", "unrelated"])
    # Paraphrases 0.9 and 0.5 against relation flips 0.6 and 0.5: wins 0.9>0.6, 0.9>0.5, tie 0.5=0.5.
    scores = np.array([0.9, 0.5, 0.6, 0.5, 0.1])
    assert S.kind_auc(scores, pairs, "relation") == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert S.kind_auc(torch.tensor(scores), pairs, "unrelated") == 1.0
    assert S.kind_auc(-scores, pairs, "unrelated") == 0.0
    # The gold scores separate every kind perfectly; a constant separates none.
    bench = S.sts_pairs(50, seed=0)
    for kind in S.PAIR_KINDS[1:]:
        if kind != "unrelated":  # two independent scenes may, rarely, be described alike (gold 1)
            assert S.kind_auc(bench.gold, bench, kind) == 1.0
        assert S.kind_auc(bench.gold, bench, kind) > 0.95
        assert S.kind_auc(np.zeros(50), bench, kind) == 0.5


@pytest.mark.parametrize("call, name, error", [
    (lambda p: S.kind_auc(np.zeros(4), p, "relation"), "scores", ValueError),
    (lambda p: S.kind_auc(np.zeros(5), p, "swap"), "swap", ValueError),
])
def test_kind_auc_bad_input(call, name, error):
    kinds = ["paraphrase", "relation", "relation", "unrelated", "attribute"]
    pairs = S.STSPairs(["x"] * 5, ["y"] * 5, np.zeros(5), kinds)
    with pytest.raises(error, match=name):
        call(pairs)
