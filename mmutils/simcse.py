"""Sentence embeddings with SimCSE, and a synthetic semantic-similarity benchmark.

* :func:`tiny_bert` – a small, untrained ``transformers.BertModel`` (Devlin et al., 2019).
* :class:`SentenceEncoder` – a Hugging Face encoder with masked mean pooling (as in
  Sentence-BERT, Reimers and Gurevych, 2019), trained with SimCSE (Gao et al., 2021).
* :func:`fact_atoms` / :func:`fact_similarity` – a ground-truth similarity of two captions
  computed from their ShapesWorld facts.
* :func:`sts_pairs` – a semantic textual similarity (STS) benchmark of caption pairs with
  gold similarities: paraphrases, one-attribute changes, relation flips, attribute swaps
  between two objects, and unrelated scenes.
* :func:`supervised_triplets` – (sentence, paraphrase, hard negative) triplets for
  supervised SimCSE.
* :func:`bag_of_words` / :func:`bag_of_words_similarity` – the word-count baseline.
* :func:`pair_embeddings` / :func:`pair_cosines` – embeddings and cosine similarity of each
  pair under any sentence encoder, embedding every distinct sentence once.
* :func:`kind_auc` – a per-kind score: how often a paraphrase pair scores above a pair of
  a given kind (an AUC; 0.5 is chance).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import world

__all__ = [
    "tiny_bert", "SentenceEncoder", "fact_atoms", "fact_similarity", "STSPairs", "PAIR_KINDS", "sts_pairs",
    "supervised_triplets", "bag_of_words", "bag_of_words_similarity", "pair_embeddings", "pair_cosines", "kind_auc",
]

PAIR_KINDS = ("paraphrase", "attribute", "relation", "swap", "unrelated")
_ATTRIBUTES = ("shape", "color", "size")
_VALUES = {"shape": world.SHAPES, "color": world.COLORS, "size": world.SIZES}
# Canonical direction of each relation: "a right of b" is stored as "b left of a".
_CANONICAL = {"left of": ("left of", False), "right of": ("left of", True),
              "above": ("above", False), "below": ("above", True)}


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def _check_pos_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def tiny_bert(vocab_size: int, dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 32,
              dropout: float = 0.1, pad_id: int = 0):
    """A small, randomly initialised ``transformers.BertModel``.

    The real BERT architecture (Devlin et al., 2019) from a tiny ``BertConfig``:
    ``layers`` Transformer layers of width ``dim`` with ``heads`` heads, a feed-forward
    width of ``4 * dim``, ``max_len`` learned positions, and dropout ``dropout`` on the
    hidden states and the attention probabilities (SimCSE's noise; BERT's default
    is 0.1). ``model(input_ids=(B, L), attention_mask=(B, L)).last_hidden_state`` has
    shape (B, L, dim). Swap it for ``BertModel.from_pretrained(...)`` to start from a
    real checkpoint.
    """
    from transformers import BertConfig, BertModel

    vocab_size = _check_pos_int("vocab_size", vocab_size, 2)
    dim = _check_pos_int("dim", dim)
    layers = _check_pos_int("layers", layers)
    heads = _check_pos_int("heads", heads)
    max_len = _check_pos_int("max_len", max_len, 2)
    pad_id = _check_pos_int("pad_id", pad_id, 0)
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    if pad_id >= vocab_size:
        raise ValueError(f"pad_id ({pad_id}) must be < vocab_size ({vocab_size})")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * dim, max_position_embeddings=max_len, type_vocab_size=1,
        hidden_dropout_prob=float(dropout), attention_probs_dropout_prob=float(dropout), pad_token_id=pad_id,
    )
    return BertModel(config, add_pooling_layer=False)


class SentenceEncoder(nn.Module):
    """A sentence encoder: a Hugging Face Transformer and masked mean pooling.

    ``backbone`` is any model whose output has ``last_hidden_state`` (e.g.
    :func:`tiny_bert`, or a pretrained ``BertModel``). ``forward(ids, mask)``: ids
    (B, L) int, mask (B, L) (1 = token, 0 = padding) -> (B, D), the mean of the
    token states over real tokens (Reimers and Gurevych, 2019). Padding changes
    nothing. In train mode dropout is on: two calls on the same batch give two
    different views, which is all unsupervised SimCSE needs (Gao et al., 2021).
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.out_dim = int(getattr(getattr(backbone, "config", None), "hidden_size", 0)) or None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ids, mask = _check_ids_mask(ids, mask)
        max_len = getattr(getattr(self.backbone, "config", None), "max_position_embeddings", None)
        if isinstance(max_len, int) and ids.shape[1] > max_len:
            raise ValueError(f"ids has length {ids.shape[1]}, more than the backbone's {max_len} positions")
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, D)

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None, batch_size: int = 512) -> torch.Tensor:
        """L2-normalised embeddings (n, D) in eval mode (no dropout), ``batch_size`` rows at a time.

        The module's train/eval mode is restored afterwards.
        """
        ids, mask = _check_ids_mask(ids, mask)
        batch_size = _check_pos_int("batch_size", batch_size)
        was_training = self.training
        self.eval()
        try:
            out = [self(ids[k:k + batch_size], mask[k:k + batch_size]) for k in range(0, ids.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return F.normalize(torch.cat(out).float(), dim=1)


def _check_ids_mask(ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.ndim != 2:
        raise ValueError(f"ids must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
    if mask is None:
        return ids, torch.ones_like(ids)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != ids.shape:
        raise ValueError(f"mask must have the shape of ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
    if mask.is_floating_point() or not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (padding) and 1 (token) as integers or bools")
    if (mask.sum(dim=1) == 0).any():
        raise ValueError("mask must keep at least one token in every row")
    return ids, mask.long()


# --------------------------------------------------------------------------- #
# Gold similarity from facts
# --------------------------------------------------------------------------- #
def _partials(desc) -> list[tuple]:
    """Every non-empty partial description a descriptor entails: (circle, red, small) ->
    'a circle', 'a red thing', 'a red circle', ..., as (shape|None, color|None, size|None)."""
    if not isinstance(desc, tuple) or len(desc) != 3:
        raise ValueError(f"a descriptor must be a (shape, color, size) tuple, got {desc!r}")
    given = [i for i, v in enumerate(desc) if v is not None]
    out = []
    for r in range(1, len(given) + 1):
        for keep in combinations(given, r):
            out.append(tuple(desc[i] if i in keep else None for i in range(3)))
    return out


def fact_atoms(facts: Iterable[tuple]) -> tuple[frozenset, frozenset]:
    """The atomic statements a set of ShapesWorld facts entails: ``(objects, relations)``.

    ``facts``: ``("exists", desc)`` and ``("rel", desc_a, relation, desc_b)`` tuples, as
    returned by :func:`mmutils.world.parse_caption` or :func:`mmutils.world.scene_facts`
    (descriptors are ``(shape, color, size)``, ``None`` for an attribute not stated).

    * Objects: every non-empty partial description of every object: "a small red circle"
      entails "a circle", "a red thing", "a small thing", "a red circle", "a small circle",
      "a small red thing" and itself (7 atoms).
    * Relations: the relation in a canonical direction ("a right of b" becomes "b left of
      a", "below" becomes "above"), between every partial description of each side (49
      atoms for two full descriptions).

    Raises ``ValueError`` on an unknown fact kind (``moves`` included) or relation.
    """
    if isinstance(facts, (str, bytes)) or not isinstance(facts, Iterable):
        raise TypeError(f"facts must be a set of fact tuples, got {type(facts).__name__}")
    objects, relations = set(), set()
    for fact in facts:
        if not isinstance(fact, tuple) or not fact:
            raise TypeError(f"facts must contain tuples such as ('exists', desc), got {fact!r}")
        if fact[0] == "exists" and len(fact) == 2:
            objects.update(_partials(fact[1]))
        elif fact[0] == "rel" and len(fact) == 4:
            _, a, rel, b = fact
            if rel not in _CANONICAL:
                raise ValueError(f"facts has an unknown relation {rel!r}; expected one of {world.RELATIONS}")
            rel, swap = _CANONICAL[rel]
            if swap:
                a, b = b, a
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

    and ``s = J(O_a, O_b)`` when neither states a relation. Paraphrases (same facts in
    other words, or the same relation read from the other side) score 1; captions
    sharing no object attribute score 0; a changed attribute, a flipped relation or two
    objects swapping an attribute land in between.

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


# --------------------------------------------------------------------------- #
# The benchmark
# --------------------------------------------------------------------------- #
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
        if kind not in PAIR_KINDS:
            raise ValueError(f"kind must be one of {PAIR_KINDS}, got {kind!r}")
        return np.array([i for i, k in enumerate(self.kinds) if k == kind], dtype=int)


def _with(obj: world.Obj, **changes) -> world.Obj:
    values = {"shape": obj.shape, "color": obj.color, "size": obj.size, "x": obj.x, "y": obj.y, **changes}
    return world.Obj(**values)


def _change_attribute(scene: world.Scene, rng: np.random.Generator) -> world.Scene:
    """The scene with one attribute of one object changed (objects stay distinct)."""
    objs = list(scene.objects)
    while True:
        k = int(rng.integers(len(objs)))
        attr = _ATTRIBUTES[rng.integers(3)]
        old = getattr(objs[k], attr)
        new = [v for v in _VALUES[attr] if v != old][rng.integers(len(_VALUES[attr]) - 1)]
        cand = objs[:k] + [_with(objs[k], **{attr: new})] + objs[k + 1:]
        if len({(o.shape, o.color) for o in cand}) == len(cand):
            return world.Scene(tuple(cand))


def _flip_relation(scene: world.Scene) -> world.Scene:
    """A two-object scene with the objects' positions exchanged: the relation turns around."""
    a, b = scene.objects
    return world.Scene((_with(a, x=b.x, y=b.y), _with(b, x=a.x, y=a.y)))


def _swap_attribute(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """A two-object scene whose objects exchange one attribute in which they differ.

    Returns ``None`` when the objects differ in a single attribute: exchanging it would
    only exchange the objects.
    """
    a, b = scene.objects
    options = [t for t in _ATTRIBUTES if getattr(a, t) != getattr(b, t)]
    if len(options) < 2:
        return None
    attr = options[rng.integers(len(options))]
    return world.Scene((_with(a, **{attr: getattr(b, attr)}), _with(b, **{attr: getattr(a, attr)})))


def _variant(kind: str, scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    if kind == "attribute":
        return _change_attribute(scene, rng)
    if kind == "relation":
        return _flip_relation(scene)
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
    :func:`mmutils.world.parse_caption`, and the gold score is :func:`fact_similarity` of
    the parsed facts. Returns an :class:`STSPairs`; the same ``seed`` gives the same pairs.
    """
    n = _check_pos_int("n", n)
    seed = _check_pos_int("seed", seed, 0)
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
        raise TypeError(f"kinds must be a non-empty list of pair kinds, got {kinds!r}")
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown:
        raise ValueError(f"kinds has unknown values {unknown}; expected some of {PAIR_KINDS}")
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

    The positive is another caption of the anchor's scene (a paraphrase, the role of an
    entailment pair in Gao et al., 2021); the hard negative describes a slightly different
    scene (one attribute changed, the relation flipped, or an attribute swapped between
    the objects: the role of a contradiction). Scenes have 1 or 2 objects.
    """
    n = _check_pos_int("n", n)
    seed = _check_pos_int("seed", seed, 0)
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


# --------------------------------------------------------------------------- #
# Bag of words
# --------------------------------------------------------------------------- #
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _check_texts(name: str, texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} must not be empty")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must contain only strings")
    return list(texts)


def bag_of_words(texts: Sequence[str], vocabulary: Sequence[str] | None = None) -> torch.Tensor:
    """Word-count vectors: a float tensor (n, V), entry (i, j) the count of word j in text i.

    Words are lowercase runs of letters and digits. ``vocabulary`` (V words) defaults to
    :func:`mmutils.world.vocabulary`; words outside it are ignored.
    """
    texts = _check_texts("texts", texts)
    vocab = world.vocabulary() if vocabulary is None else _check_texts("vocabulary", vocabulary)
    index = {w: j for j, w in enumerate(vocab)}
    out = torch.zeros(len(texts), len(vocab))
    for i, t in enumerate(texts):
        for w in _words(t):
            if w in index:
                out[i, index[w]] += 1
    return out


def bag_of_words_similarity(texts_a: Sequence[str], texts_b: Sequence[str]) -> torch.Tensor:
    """Cosine similarity of the word-count vectors of ``texts_a[i]`` and ``texts_b[i]``: a tensor (n,).

    Word order, and therefore which attribute belongs to which object, is ignored: the
    classic baseline of sentence similarity.
    """
    texts_a, texts_b = _check_texts("texts_a", texts_a), _check_texts("texts_b", texts_b)
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_a and texts_b must have the same length, got {len(texts_a)} and {len(texts_b)}")
    vocab = sorted({w for t in texts_a + texts_b for w in _words(t)}) or ["<none>"]
    a, b = bag_of_words(texts_a, vocab), bag_of_words(texts_b, vocab)
    return F.cosine_similarity(a, b, dim=1, eps=1e-12)


# --------------------------------------------------------------------------- #
# Scoring a benchmark
# --------------------------------------------------------------------------- #
def pair_embeddings(embed, texts_a: Sequence[str], texts_b: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm embeddings of both sides of ``n`` sentence pairs: ``(z_a, z_b)``, float tensors (n, D) on the CPU.

    ``embed`` maps a list of ``m`` strings to an (m, D) tensor (for example
    ``mm.text.load_minilm().encode``, or a :class:`SentenceEncoder` behind a tokenizer).
    Every distinct sentence is embedded once, shortest first (so batches need little
    padding), which matters for a large encoder: a benchmark repeats many captions.
    """
    if not callable(embed):
        raise TypeError(f"embed must be a callable list[str] -> (m, D) tensor, got {type(embed).__name__}")
    texts_a, texts_b = _check_texts("texts_a", texts_a), _check_texts("texts_b", texts_b)
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_a and texts_b must have the same length, got {len(texts_a)} and {len(texts_b)}")
    distinct = sorted(set(texts_a) | set(texts_b), key=lambda t: (len(t), t))
    z = embed(distinct)
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != len(distinct):
        raise ValueError(f"embed must return a tensor of shape ({len(distinct)}, D) for {len(distinct)} "
                         f"sentences, got {getattr(z, 'shape', type(z).__name__)}")
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

    ``scores``: (n,) similarities of the ``n`` pairs of ``pairs`` (a tensor or array).
    Over every (paraphrase pair, ``kind`` pair) combination, count 1 where the paraphrase
    scores higher and 1/2 for a tie: the area under the ROC curve of telling the two kinds
    apart by the score. Gold similarities always rank the paraphrase higher (AUC 1); 0.5 is
    chance, and below 0.5 the model prefers the near miss to a real paraphrase.
    """
    if not isinstance(pairs, STSPairs):
        raise TypeError(f"pairs must be an STSPairs, got {type(pairs).__name__}")
    if kind not in PAIR_KINDS or kind == "paraphrase":
        raise ValueError(f"kind must be one of {PAIR_KINDS[1:]}, got {kind!r}")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if not isinstance(scores, np.ndarray):
        raise TypeError(f"scores must be a torch.Tensor or numpy array, got {type(scores).__name__}")
    if scores.shape != (len(pairs),):
        raise ValueError(f"scores must have shape ({len(pairs)},), one per pair, got {scores.shape}")
    para, other = pairs.select("paraphrase"), pairs.select(kind)
    if not len(para) or not len(other):
        raise ValueError(f"pairs must hold paraphrase and {kind!r} pairs, got {len(para)} and {len(other)}")
    p = scores[para].astype(float)[:, None]  # (P, 1)
    o = scores[other].astype(float)[None, :]  # (1, K)
    return float((p > o).mean() + 0.5 * (p == o).mean())
