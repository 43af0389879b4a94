"""Sentence embeddings with SimCSE (chapter 11), and a synthetic semantic-similarity benchmark.

* :func:`tiny_bert` / :class:`SentenceEncoder` – a small BERT with masked mean pooling (Sentence-BERT, Reimers and
  Gurevych, 2019), trained with SimCSE (Gao et al., 2021; the loss is :func:`mmutils.nn.losses.simcse_loss`).
* :func:`fact_atoms` / :func:`fact_similarity` – gold similarity of two captions from their ShapesWorld facts.
* :func:`sts_pairs` / :func:`supervised_triplets` – an STS benchmark of caption pairs, and SimCSE training triplets.
* :func:`bag_of_words` / :func:`bag_of_words_similarity` – the word-count baseline.
* :func:`pair_embeddings` / :func:`pair_cosines` / :func:`kind_auc` – scoring any sentence encoder on the pairs.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import world
from .checks import check_choice, check_float, check_instance, check_int, check_mask, check_subset, check_tensor, \
    check_texts
from .runtime import evaluating

__all__ = ["tiny_bert", "SentenceEncoder", "fact_atoms", "fact_similarity", "STSPairs", "PAIR_KINDS", "sts_pairs",
           "supervised_triplets", "bag_of_words", "bag_of_words_similarity", "pair_embeddings", "pair_cosines",
           "kind_auc"]

PAIR_KINDS = ("paraphrase", "attribute", "relation", "swap", "unrelated")
_ATTRIBUTES = tuple(world.ATTRIBUTE_VALUES)  # ("shape", "color", "size")
# Canonical direction of each relation: "a right of b" is stored as "b left of a" (via world.OPPOSITE).
_CANONICAL = ("left of", "above")


# -- Model --------------------------------------------------------------------
def tiny_bert(vocab_size: int, dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 32,
              dropout: float = 0.1, pad_id: int = 0):
    """A small, randomly initialised ``transformers.BertModel``.

    The real BERT architecture (Devlin et al., 2019) from a tiny ``BertConfig``: ``layers`` Transformer layers of width
    ``dim`` with ``heads`` heads, a feed-forward width of ``4 * dim``, ``max_len`` learned positions, and dropout
    ``dropout`` on the hidden states and the attention probabilities (SimCSE's noise; BERT's default is 0.1).
    ``model(input_ids=(B, L), attention_mask=(B, L)).last_hidden_state`` has shape (B, L, dim). Swap it for
    ``BertModel.from_pretrained(...)`` to start from a real checkpoint.
    """
    from transformers import BertConfig, BertModel

    vocab_size = check_int("vocab_size", vocab_size, min=2)
    dim, layers = check_int("dim", dim, min=1), check_int("layers", layers, min=1)
    heads = check_int("heads", heads, min=1)
    max_len = check_int("max_len", max_len, min=2)
    pad_id = check_int("pad_id", pad_id, min=0, max=vocab_size - 1)
    dropout = check_float("dropout", dropout, min=0.0, max=1.0)
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    config = BertConfig(vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * dim, max_position_embeddings=max_len, type_vocab_size=1,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=pad_id)
    return BertModel(config, add_pooling_layer=False)


class SentenceEncoder(nn.Module):
    """A sentence encoder: a Hugging Face Transformer and masked mean pooling.

    ``backbone`` is any model whose output has ``last_hidden_state`` (e.g. :func:`tiny_bert`, or a pretrained
    ``BertModel``). ``forward(ids, mask)``: ids (B, L) int, mask (B, L) (1 = token, 0 = padding) -> (B, D), the mean of
    the token states over real tokens (Reimers and Gurevych, 2019). Padding changes nothing. In train mode dropout is
    on: two calls on the same batch give two different views, which is all unsupervised SimCSE needs (Gao et al., 2021).
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = check_instance("backbone", backbone, nn.Module)
        self.out_dim = int(getattr(getattr(backbone, "config", None), "hidden_size", 0)) or None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._embed(*self._inputs(ids, mask))

    def _inputs(self, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` (B, L) checked, and the mask (B, L) as the 0/1 ints the backbone takes (all ones if None)."""
        check_tensor("ids", ids, 2, dtype="int")
        max_len = getattr(getattr(self.backbone, "config", None), "max_position_embeddings", None)
        if isinstance(max_len, int) and ids.shape[1] > max_len:  # else an obscure index error in the backbone
            raise ValueError(f"ids has length {ids.shape[1]}, more than the backbone's {max_len} positions")
        return ids, check_mask("mask", mask, ids).long()

    def _embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, D)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None, batch_size: int = 512) -> torch.Tensor:
        """L2-normalised embeddings (n, D) in eval mode (no dropout), ``batch_size`` rows at a time.

        The module's train/eval mode is restored afterwards.
        """
        ids, mask = self._inputs(ids, mask)
        batch_size = check_int("batch_size", batch_size, min=1)
        with evaluating(self):
            out = [self._embed(ids[k:k + batch_size], mask[k:k + batch_size])
                   for k in range(0, ids.shape[0], batch_size)]
            return F.normalize(torch.cat(out).float(), dim=1)


# -- Gold similarity from facts -----------------------------------------------
def _partials(desc) -> list[tuple]:
    """Every non-empty partial description a descriptor entails: (circle, red, small) ->
    'a circle', 'a red thing', 'a red circle', ..., as (shape|None, color|None, size|None)."""
    if not isinstance(desc, tuple):
        raise TypeError(f"a descriptor in facts must be a (shape, color, size) tuple, got {desc!r}")
    if len(desc) != 3:
        raise ValueError(f"a descriptor in facts must be a (shape, color, size) tuple, got {desc!r}")
    given = [i for i, v in enumerate(desc) if v is not None]
    out = []
    for r in range(1, len(given) + 1):
        for keep in combinations(given, r):
            out.append(tuple(desc[i] if i in keep else None for i in range(3)))
    return out


def fact_atoms(facts: Iterable[tuple]) -> tuple[frozenset, frozenset]:
    """The atomic statements a set of ShapesWorld facts entails: ``(objects, relations)``.

    ``facts``: ``("exists", desc)`` and ``("rel", desc_a, relation, desc_b)`` tuples, as returned by
    :func:`mmutils.world.parse_caption` or :func:`mmutils.world.scene_facts` (descriptors are ``(shape, color, size)``,
    ``None`` for an attribute not stated).

    * Objects: every non-empty partial description of every object: "a small red circle" entails "a circle", "a red
      thing", "a small thing", "a red circle", "a small circle", "a small red thing" and itself (7 atoms).
    * Relations: the relation in a canonical direction ("a right of b" becomes "b left of a", "below" becomes "above"),
      between every partial description of each side (49 atoms for two full descriptions).

    Raises ``ValueError`` on an unknown fact kind (``moves`` included) or relation.
    """
    check_instance("facts", facts, (Set, list, tuple))
    objects, relations = set(), set()
    for fact in facts:
        if not isinstance(fact, tuple) or not fact:
            raise TypeError(f"facts must contain tuples such as ('exists', desc), got {fact!r}")
        if fact[0] == "exists" and len(fact) == 2:
            objects.update(_partials(fact[1]))
        elif fact[0] == "rel" and len(fact) == 4:
            _, a, rel, b = fact
            if rel not in world.OPPOSITE:
                raise ValueError(f"facts has an unknown relation {rel!r}; expected one of {world.RELATIONS}")
            if rel not in _CANONICAL:
                a, rel, b = b, world.OPPOSITE[rel], a
            objects.update(_partials(a))
            objects.update(_partials(b))
            relations.update((pa, rel, pb) for pa in _partials(a) for pb in _partials(b))
        else:
            raise ValueError(f"facts has an unsupported fact {fact!r}; expected ('exists', desc) or "
                             f"('rel', desc_a, relation, desc_b)")
    return frozenset(objects), frozenset(relations)


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def fact_similarity(facts_a: Iterable[tuple], facts_b: Iterable[tuple]) -> float:
    """Gold similarity of two captions from their facts, in [0, 1].

    With ``O`` and ``R`` the object and relation atoms of :func:`fact_atoms`,

        s(a, b) = (J(O_a, O_b) + J(R_a, R_b)) / 2,   J(X, Y) = |X & Y| / |X | Y|  (Jaccard),

    and ``s = J(O_a, O_b)`` when neither states a relation. Paraphrases (same facts in other words, or the same relation
    read from the other side) score 1; captions sharing no object attribute score 0; a changed attribute, a flipped
    relation or two objects swapping an attribute land in between.

    ``facts_a, facts_b``: sets of facts (see :func:`fact_atoms`), each with at least one object.
    """
    oa, ra = fact_atoms(facts_a)
    ob, rb = fact_atoms(facts_b)
    for name, o in (("facts_a", oa), ("facts_b", ob)):
        if not o:
            raise ValueError(f"{name} must describe at least one object by its shape, color or size, "
                             f"got no such fact")
    if not ra and not rb:
        return _jaccard(oa, ob)
    return 0.5 * _jaccard(oa, ob) + 0.5 * (_jaccard(ra, rb) if ra | rb else 0.0)


# -- The benchmark ------------------------------------------------------------
@dataclass
class STSPairs:
    """Caption pairs with gold similarities: ``texts_a[i]``, ``texts_b[i]``, ``gold[i]`` (float
    array of shape (n,), in [0, 1]) and ``kinds[i]`` (one of :data:`PAIR_KINDS`)."""

    texts_a: list[str]
    texts_b: list[str]
    gold: np.ndarray
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts_a)

    def select(self, kind: str) -> np.ndarray:
        """Indices (int array) of the pairs of one ``kind``."""
        check_choice("kind", kind, PAIR_KINDS)
        return np.array([i for i, k in enumerate(self.kinds) if k == kind], dtype=int)


def _change_attribute(scene: world.Scene, rng: np.random.Generator) -> world.Scene:
    """The scene with one attribute of one object changed (objects stay distinct)."""
    while True:
        k = int(rng.integers(len(scene)))
        attr = _ATTRIBUTES[rng.integers(3)]
        values = world.ATTRIBUTE_VALUES[attr]
        new = [v for v in values if v != getattr(scene.objects[k], attr)][rng.integers(len(values) - 1)]
        cand = world.with_attribute(scene, k, attr, new)
        if len({(o.shape, o.color) for o in cand.objects}) == len(cand):
            return cand


def _swap_attribute(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """A two-object scene whose objects exchange one attribute in which they differ.

    Returns ``None`` when the objects differ in a single attribute: exchanging it would only exchange the objects.
    """
    a, b = scene.objects
    options = [t for t in _ATTRIBUTES if getattr(a, t) != getattr(b, t)]
    if len(options) < 2:
        return None
    attr = options[rng.integers(len(options))]
    return world.with_attribute(world.with_attribute(scene, 0, attr, getattr(b, attr)), 1, attr, getattr(a, attr))


def _variant(kind: str, scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    if kind == "attribute":
        return _change_attribute(scene, rng)
    if kind == "relation":  # the two objects exchange their centres exactly: the relation turns around
        return world.swap_positions(scene, 0, 1, keep_inside=False)
    return _swap_attribute(scene, rng)


def _rewordings(scene: world.Scene, rng: np.random.Generator, tries: int = 20) -> tuple[str, str]:
    """Two different captions of the same scene (the same facts in other words)."""
    first = world.caption(scene, rng=rng)
    for _ in range(tries):
        second = world.caption(scene, rng=rng)
        if second != first:
            return first, second
    return first, second  # pragma: no cover - every scene has several wordings


def _pair(kind: str, rng: np.random.Generator) -> tuple[str, str]:
    if kind == "unrelated":
        s, t = world.sample_scenes(2, min_objects=1, max_objects=2, seed=rng)
        return world.caption(s, rng=rng), world.caption(t, rng=rng)
    two = kind in ("relation", "swap")
    while True:
        (scene,) = world.sample_scenes(1, min_objects=2 if two else 1, max_objects=2, seed=rng)
        if kind == "paraphrase":
            return _rewordings(scene, rng)
        other = _variant(kind, scene, rng)
        if other is not None:
            return world.caption(scene, rng=rng), world.caption(other, rng=rng)


def sts_pairs(n: int = 1000, seed: int = 0, kinds: Sequence[str] = PAIR_KINDS) -> STSPairs:
    """A synthetic STS benchmark: ``n`` caption pairs of 1- and 2-object scenes with gold similarities.

    The pairs are split evenly over ``kinds`` (in shuffled order):

    * ``paraphrase``: two different captions of the same scene (gold 1);
    * ``attribute``: a scene and the same scene with one attribute of one object changed;
    * ``relation``: a two-object scene and the same objects with their positions exchanged;
    * ``swap``: two objects exchange an attribute (same words, other binding);
    * ``unrelated``: two independent scenes.

    Both captions are drawn with random wording (patterns and synonyms), parsed back with
    :func:`mmutils.world.parse_caption`, and the gold score is :func:`fact_similarity` of the parsed facts. Returns an
    :class:`STSPairs`; the same ``seed`` gives the same pairs.
    """
    n = check_int("n", n, min=1)
    seed = check_int("seed", seed, min=0)
    kinds = check_subset("kinds", kinds, PAIR_KINDS)
    rng = np.random.default_rng(seed)
    order = [kinds[i % len(kinds)] for i in range(n)]
    order = [order[i] for i in rng.permutation(n)]
    texts_a, texts_b, gold = [], [], []
    for kind in order:
        a, b = _pair(kind, rng)
        texts_a.append(a)
        texts_b.append(b)
        gold.append(fact_similarity(world.parse_caption(a), world.parse_caption(b)))
    return STSPairs(texts_a, texts_b, np.asarray(gold, dtype=float), order)


def supervised_triplets(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Training data for supervised SimCSE: ``(anchors, positives, hard_negatives)``, ``n`` strings each.

    The positive is another caption of the anchor's scene (a paraphrase, the role of an entailment pair in Gao et al.,
    2021); the hard negative describes a slightly different scene (one attribute changed, the relation flipped, or an
    attribute swapped between the objects: the role of a contradiction). Scenes have 1 or 2 objects.
    """
    n = check_int("n", n, min=1)
    seed = check_int("seed", seed, min=0)
    rng = np.random.default_rng(seed)
    scenes = world.sample_scenes(n, min_objects=1, max_objects=2, seed=rng)
    anchors, positives, negatives = [], [], []
    for scene in scenes:
        a, p = _rewordings(scene, rng)
        other = None
        while other is None:
            kind = ("attribute", "relation", "swap")[rng.integers(3)] if len(scene) == 2 else "attribute"
            other = _variant(kind, scene, rng)
        anchors.append(a)
        positives.append(p)
        negatives.append(world.caption(other, rng=rng))
    return anchors, positives, negatives


# -- Bag of words -------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _text_pairs(texts_a, texts_b) -> tuple[list[str], list[str]]:
    texts_a, texts_b = check_texts("texts_a", texts_a), check_texts("texts_b", texts_b)
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_a and texts_b must have the same length, got {len(texts_a)} and {len(texts_b)}")
    return texts_a, texts_b


def _counts(texts: list[str], vocab: Sequence[str]) -> torch.Tensor:
    index = {w: j for j, w in enumerate(vocab)}
    out = torch.zeros(len(texts), len(vocab))
    for i, t in enumerate(texts):
        for w in _words(t):
            if w in index:
                out[i, index[w]] += 1
    return out  # (n, V)


def bag_of_words(texts: Sequence[str], vocabulary: Sequence[str] | None = None) -> torch.Tensor:
    """Word-count vectors: a float tensor (n, V), entry (i, j) the count of word j in text i.

    Words are lowercase runs of letters and digits. ``vocabulary`` (V words) defaults to
    :func:`mmutils.world.vocabulary`; words outside it are ignored.
    """
    texts = check_texts("texts", texts)
    return _counts(texts, world.vocabulary() if vocabulary is None else check_texts("vocabulary", vocabulary))


def bag_of_words_similarity(texts_a: Sequence[str], texts_b: Sequence[str]) -> torch.Tensor:
    """Cosine similarity of the word-count vectors of ``texts_a[i]`` and ``texts_b[i]``: a tensor (n,).

    Word order, and therefore which attribute belongs to which object, is ignored: the classic baseline of sentence
    similarity.
    """
    texts_a, texts_b = _text_pairs(texts_a, texts_b)
    vocab = sorted({w for t in texts_a + texts_b for w in _words(t)}) or ["<none>"]
    a, b = _counts(texts_a, vocab), _counts(texts_b, vocab)
    return F.cosine_similarity(a, b, dim=1, eps=1e-12)


# -- Scoring a benchmark ------------------------------------------------------
def pair_embeddings(embed, texts_a: Sequence[str], texts_b: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm embeddings of both sides of ``n`` sentence pairs: ``(z_a, z_b)``, float tensors (n, D) on the CPU.

    ``embed`` maps a list of ``m`` strings to an (m, D) tensor (for example ``mm.text.load_minilm().encode``, or a
    :class:`SentenceEncoder` behind a tokenizer). Every distinct sentence is embedded once, shortest first (so batches
    need little padding), which matters for a large encoder: a benchmark repeats many captions.
    """
    if not callable(embed):
        raise TypeError(f"embed must be a callable list[str] -> (m, D) tensor, got {type(embed).__name__}")
    texts_a, texts_b = _text_pairs(texts_a, texts_b)
    distinct = sorted(set(texts_a) | set(texts_b), key=lambda t: (len(t), t))
    z = check_tensor("embed(texts)", embed(distinct), 2, size={0: len(distinct)})  # (m, D), one row per sentence
    z = F.normalize(z.detach().float().cpu(), dim=1)  # (m, D)
    row = {t: i for i, t in enumerate(distinct)}
    return z[[row[t] for t in texts_a]], z[[row[t] for t in texts_b]]  # (n, D) each


def pair_cosines(embed, texts_a: Sequence[str], texts_b: Sequence[str]) -> torch.Tensor:
    """Cosine similarity of ``embed(texts_a[i])`` and ``embed(texts_b[i])``: a float tensor (n,) on the CPU.

    See :func:`pair_embeddings` (each distinct sentence is embedded once).
    """
    z_a, z_b = pair_embeddings(embed, texts_a, texts_b)
    return (z_a * z_b).sum(dim=1)


def kind_auc(scores, pairs: STSPairs, kind: str) -> float:
    """How often a paraphrase pair scores higher than a pair of ``kind``: an AUC in [0, 1].

    ``scores``: (n,) similarities of the ``n`` pairs of ``pairs`` (a tensor or array). Over every (paraphrase pair,
    ``kind`` pair) combination, count 1 where the paraphrase scores higher and 1/2 for a tie: the area under the ROC
    curve of telling the two kinds apart by the score. Gold similarities always rank the paraphrase higher (AUC 1); 0.5
    is chance, and below 0.5 the model prefers the near miss to a real paraphrase.
    """
    check_instance("pairs", pairs, STSPairs)
    check_choice("kind", kind, PAIR_KINDS[1:])
    check_instance("scores", scores, (torch.Tensor, np.ndarray))
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if scores.shape != (len(pairs),):
        raise ValueError(f"scores must have shape ({len(pairs)},), one per pair, got {scores.shape}")
    para, other = pairs.select("paraphrase"), pairs.select(kind)
    if not len(para) or not len(other):
        raise ValueError(f"pairs must hold paraphrase and {kind!r} pairs, got {len(para)} and {len(other)}")
    p = scores[para].astype(float)[:, None]  # (P, 1)
    o = scores[other].astype(float)[None, :]  # (1, K)
    return float((p > o).mean() + 0.5 * (p == o).mean())
