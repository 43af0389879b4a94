"""Tests of the metrics, with closed-form and reference-implementation checks."""

import numpy as np
import pytest
import sacrebleu
import torch

from mmutils import metrics as M
from mmutils import world as w


def test_accuracy_from_logits_and_labels():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert M.accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert M.accuracy(torch.tensor([1, 1]), np.array([1, 0])) == 0.5


@pytest.mark.parametrize("args, error, match", [
    ((torch.zeros(3, 2), torch.zeros(2, dtype=torch.long)), ValueError, "batch size"),
    ((torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long)), ValueError, "logits_or_preds"),
    (([1, 2], torch.zeros(2)), TypeError, "logits_or_preds"),
])
def test_accuracy_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        M.accuracy(*args)


def test_recall_counts_duplicates_as_hits():
    # Query 0 wants key "a": the best gallery item is a duplicate "a" at index 2.
    sim = torch.tensor([[0.1, 0.2, 0.9, 0.3], [0.9, 0.1, 0.0, 0.5]])
    r = M.recall_at_k(sim, ["a", "b"], ["a", "c", "a", "b"], ks=(1, 2))
    assert r == {1: 0.5, 2: 1.0}
    assert M.retrieval_ranks(sim, ["a", "b"], ["a", "c", "a", "b"]).tolist() == [0, 1]
    assert M.retrieval_ranks(sim[:1], ["z"], ["a", "c", "a", "b"]).tolist() == [4]


def test_recall_identity_is_perfect():
    keys = list(range(50))
    assert M.recall_at_k(torch.eye(50), keys, keys) == {1: 1.0, 5: 1.0, 10: 1.0}


def test_recall_bad_input():
    with pytest.raises(ValueError, match="similarity"):
        M.recall_at_k(torch.zeros(3), [1], [1])
    with pytest.raises(ValueError, match="query_keys"):
        M.recall_at_k(torch.zeros(3, 2), [1, 2], [1, 2])


def test_bleu_matches_sacrebleu():
    scenes = w.sample_scenes(60, max_objects=2, seed=0)
    refs = [[w.caption(s, rng=i), w.caption(s, rng=i + 100)] for i, s in enumerate(scenes)]
    hyps = [w.caption(s, rng=i + 7) for i, s in enumerate(scenes)]
    ours = M.corpus_bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyps, [list(r) for r in zip(*refs)], tokenize="none",
                                   smooth_method="none").score / 100
    assert 0.1 < ours < 1
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert M.corpus_bleu(["a red circle x"], [["a red circle x"]]) == pytest.approx(1.0)
    assert M.corpus_bleu(["square"], [["a red circle"]]) == 0.0


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="hypotheses"):
        M.corpus_bleu(["a"], [])
    with pytest.raises(TypeError, match="hypotheses must be a list of strings, got str"):
        M.corpus_bleu("a b", [["a b"], ["a b"], ["a b"]])


def test_fact_accuracy():
    s = w.Scene((w.Obj("circle", "red", "small", 0.2, 0.5), w.Obj("square", "blue", "large", 0.8, 0.45)))
    caps = ["a small red circle left of a large blue square", "a small red circle right of a large blue square",
            "a red circle", "gibberish words"]
    acc = M.fact_accuracy(caps, [s] * 4)
    assert acc == {"parsed": 0.75, "true": 0.5, "complete": 0.25}
    with pytest.raises(ValueError, match="captions"):
        M.fact_accuracy(caps, [s])
    with pytest.raises(TypeError, match="captions must be a list of strings, got str"):
        M.fact_accuracy(caps[0], [s])


def test_spearman():
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="x and y"):
        M.spearman([1, 2], [1, 2, 3])


def test_alignment_and_uniformity_closed_form():
    x = torch.randn(10, 4)
    assert M.alignment(x, x) == pytest.approx(0.0, abs=1e-6)
    assert M.alignment(x, -x) == pytest.approx(4.0, abs=1e-5)  # ||u - (-u)||^2 = 4 for unit u
    # Identical points: every distance is 0, so log E exp(0) = 0, the worst uniformity.
    assert M.uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-6)
    # Two antipodal points: distance^2 = 4, so log exp(-2 * 4) = -8.
    assert M.uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0, abs=1e-5)
    with pytest.raises(ValueError, match="x and y"):
        M.alignment(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x"):
        M.uniformity(torch.zeros(3))
