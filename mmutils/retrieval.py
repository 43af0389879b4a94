"""Cross-modal search and retrieval-augmented answering (chapter 16): vector indexes, recall against exact search,
and questions about a collection of ShapesWorld scenes with their exact answers.

* :func:`exact_search` – brute-force top-``k`` by inner product (cosine on unit vectors), the ground truth of any
  approximate index.
* :func:`build_index`, :func:`search`, :func:`ivf_lists`, :func:`index_bytes` – faiss indexes (Johnson et al.,
  2019): exact (``IndexFlatIP``), inverted file (``IndexIVFFlat``, Sivic and Zisserman, 2003; Jégou et al., 2011)
  and HNSW graphs (``IndexHNSWFlat``, Malkov and Yashunin, 2018).
* :func:`neighbour_recall` – recall@k of an approximate search against the exact one.
* :func:`scene_table` / :func:`fits` – which scenes of a whole collection a set of facts (a parsed caption) holds
  of, vectorized: :func:`mmutils.world.facts_hold` for 50,000 scenes at once.
* :class:`CollectionQuestion`, :func:`collection_questions`, :func:`answers_in` – questions about one picture of a
  collection that the question describes ("what color is the star above the red circle?"), the
  description a retriever searches with, and the answers a picture gives.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import world
from .checks import check_choice, check_instance, check_int, check_rng, check_tensor

__all__ = ["INDEX_KINDS", "exact_search", "build_index", "search", "ivf_lists", "index_bytes", "neighbour_recall",
           "scene_table", "fits", "CollectionQuestion", "collection_questions", "answers_in"]

INDEX_KINDS = ("flat", "ivf", "hnsw")
ASKED = ("color", "shape")
_ATTRS = ("shape", "color", "size")  # the order of a descriptor
_VALUES = {"shape": world.SHAPES, "color": world.COLORS, "size": world.SIZES}


# -- Nearest neighbours --------------------------------------------------------
def _vectors(name: str, x, dim: int | None = None) -> torch.Tensor:
    check_tensor(name, x, 2, size=None if dim is None else {1: dim}, dtype="float")
    return x


def exact_search(queries: torch.Tensor, database: torch.Tensor, k: int = 10,
                 chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact maximum-inner-product search: the ``k`` database rows with the largest ``q . x`` for each query.

    ``queries``: (Q, D); ``database``: (N, D) (unit rows make the inner product a cosine similarity). The scores are
    one matrix product per chunk of ``chunk`` queries, (chunk, D) @ (D, N), then a top-``k``: O(Q N D) work, what
    faiss's ``IndexFlatIP`` computes (Johnson et al., 2019). Returns ``(scores (Q, k) float, ids (Q, k) int64)``,
    best first.
    """
    _vectors("queries", queries)
    _vectors("database", database, queries.shape[1])
    k = check_int("k", k, min=1, max=database.shape[0])
    chunk = check_int("chunk", chunk, min=1)
    scores, ids = [], []
    for part in queries.split(chunk):
        top = (part @ database.t()).topk(k, dim=1)  # (chunk, N) -> (chunk, k)
        scores.append(top.values)
        ids.append(top.indices)
    return torch.cat(scores), torch.cat(ids)


def build_index(vectors: torch.Tensor, kind: str = "flat", *, nlist: int = 256, m: int = 16,
                ef_construction: int = 40, seed: int = 0):
    """A faiss index over ``vectors`` (N, D) for inner-product search (``METRIC_INNER_PRODUCT``).

    * ``"flat"``: ``IndexFlatIP``, exact; compares a query with every vector.
    * ``"ivf"``: ``IndexIVFFlat``, an inverted file (Jégou et al., 2011): k-means (seeded with ``seed``) cuts the
      space into ``nlist`` cells around centroids (the *coarse quantizer*); each vector is stored in the list of its
      nearest centroid, and a search visits only the ``nprobe`` lists whose centroids score highest.
    * ``"hnsw"``: ``IndexHNSWFlat``, a hierarchical navigable small-world graph (Malkov and Yashunin, 2018) with
      ``m`` neighbours per node (2m on the bottom layer), built with a candidate list of ``ef_construction``; a
      search walks the graph greedily from the top layer down, keeping ``efSearch`` candidates on the bottom one.

    Returns the trained, filled index (faiss copies the vectors).
    """
    import faiss

    x = np.ascontiguousarray(_vectors("vectors", vectors).detach().cpu().numpy(), dtype=np.float32)
    check_choice("kind", kind, INDEX_KINDS)
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = check_int("nlist", nlist, min=1, max=n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = check_int("seed", seed, min=0)
        index.train(x)
    else:
        index = faiss.IndexHNSWFlat(d, check_int("m", m, min=2), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = check_int("ef_construction", ef_construction, min=1)
    index.add(x)
    return index


def search(index, queries: torch.Tensor, k: int = 10, *, nprobe: int | None = None,
           ef_search: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Search a faiss ``index`` with ``queries`` (Q, D): ``(scores (Q, k) float32, ids (Q, k) int64)``, best first.

    ``nprobe`` (IVF indexes: inverted lists visited) and ``ef_search`` (HNSW: candidates kept) trade speed for
    recall; they are set on the index before the search. Ids of -1 mean fewer than ``k`` results were found.
    """
    import faiss

    check_instance("index", index, faiss.Index)
    q = np.ascontiguousarray(_vectors("queries", queries, index.d).detach().cpu().numpy(), dtype=np.float32)
    k = check_int("k", k, min=1, max=index.ntotal)
    if nprobe is not None:
        if not hasattr(index, "nprobe"):
            raise ValueError(f"nprobe applies to IVF indexes, got {type(index).__name__}")
        index.nprobe = check_int("nprobe", nprobe, min=1, max=index.nlist)
    if ef_search is not None:
        if not hasattr(index, "hnsw"):
            raise ValueError(f"ef_search applies to HNSW indexes, got {type(index).__name__}")
        index.hnsw.efSearch = check_int("ef_search", ef_search, min=1)
    scores, ids = index.search(q, k)
    return torch.from_numpy(scores), torch.from_numpy(ids)


def ivf_lists(index) -> tuple[torch.Tensor, torch.Tensor]:
    """What an IVF index stores: the coarse quantizer's centroids (nlist, D) float32, and the inverted list of every
    stored vector (ntotal,) int64 (vector ``i`` sits in list ``assignment[i]``), read from faiss's inverted lists.
    """
    import faiss

    check_instance("index", index, faiss.Index)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError as err:
        raise ValueError(f"index must be an IVF index, got {type(index).__name__}") from err
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)  # (nlist, D)
    assignment = np.full(ivf.ntotal, -1, dtype=np.int64)
    for lst in range(ivf.nlist):
        size = ivf.invlists.list_size(lst)
        if size:
            assignment[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size)] = lst
    return torch.from_numpy(np.ascontiguousarray(centroids)), torch.from_numpy(assignment)


def index_bytes(index) -> int:
    """The size of ``index`` serialized by ``faiss.serialize_index``: vectors, lists or graph, and headers."""
    import faiss

    check_instance("index", index, faiss.Index)
    return int(faiss.serialize_index(index).size)


def neighbour_recall(approx_ids: torch.Tensor, exact_ids: torch.Tensor) -> float:
    """Recall@k of an approximate search: the share of the exact top-``k`` that the approximate top-``k`` found.

    ``approx_ids``, ``exact_ids``: (Q, k) int; each row is a set of database ids (order does not matter). The usual
    measure of approximate nearest-neighbour indexes (e.g. the "10-recall@10" of ANN benchmarks).
    """
    check_tensor("approx_ids", approx_ids, 2, dtype="int")
    check_tensor("exact_ids", exact_ids, 2, size={0: approx_ids.shape[0], 1: approx_ids.shape[1]}, dtype="int")
    if approx_ids.numel() == 0:
        raise ValueError("approx_ids must hold at least one query and one id")
    found = (approx_ids[:, :, None] == exact_ids[:, None, :]).any(dim=1)  # (Q, k): exact item j found
    return found.float().mean().item()


# -- A collection as arrays ----------------------------------------------------
def scene_table(scenes: Sequence[world.Scene]) -> dict[str, np.ndarray]:
    """The objects of ``scenes`` as arrays of shape (n, K), K = the most objects of a scene.

    ``shape``, ``color``, ``size``: indices into SHAPES, COLORS, SIZES (-1 where a scene has fewer objects);
    ``x``, ``y``: centres; ``present``: bool; ``relation``: (n, K, K) int8, the index into RELATIONS of where
    object i stands relative to object j (as :meth:`mmutils.world.Scene.relation`), -1 on the diagonal (entries of
    absent objects are never read: ``present`` masks them). What :func:`fits` reads.
    """
    check_instance("scenes", scenes, (list, tuple))
    if not scenes:
        raise ValueError("scenes must not be empty")
    n, k = len(scenes), max(len(check_instance("scenes", s, world.Scene)) for s in scenes)
    table = {a: np.full((n, k), -1, dtype=np.int64) for a in _ATTRS}
    table.update(x=np.zeros((n, k)), y=np.zeros((n, k)))
    for i, s in enumerate(scenes):
        for j, o in enumerate(s.objects):
            for a in _ATTRS:
                table[a][i, j] = _VALUES[a].index(getattr(o, a))
            table["x"][i, j], table["y"][i, j] = o.x, o.y
    table["present"] = table["shape"] >= 0
    table["relation"] = _relations(table)
    return table


def _desc_mask(table: dict[str, np.ndarray], desc) -> np.ndarray:
    """(n, K) bool: the objects that fit a descriptor ``(shape, color, size)`` (None = any)."""
    mask = table["present"].copy()
    for a, v in zip(_ATTRS, desc):
        if v is not None:
            mask &= table[a] == _VALUES[a].index(v)
    return mask


def _relations(table: dict[str, np.ndarray]) -> np.ndarray:
    """(n, K, K) int8: index into RELATIONS of where object i is relative to object j (as Scene.relation), -1 on
    the diagonal."""
    dx = table["x"][:, :, None] - table["x"][:, None, :]
    dy = table["y"][:, :, None] - table["y"][:, None, :]
    horizontal = np.abs(dx) >= np.abs(dy)
    rel = np.where(horizontal, np.where(dx < 0, 0, 1), np.where(dy < 0, 2, 3)).astype(np.int8)  # l, r, a, b
    rel[:, np.arange(rel.shape[1]), np.arange(rel.shape[1])] = -1  # an object has no relation to itself
    return rel


def fits(facts, table: dict[str, np.ndarray]) -> np.ndarray:
    """Which scenes of a :func:`scene_table` every fact holds of: bool (n,).

    ``facts``: an iterable of facts as :func:`mmutils.world.parse_caption` returns them (``exists`` and ``rel``,
    attributes may be None; ``moves`` is not checked). Equals ``[world.facts_hold(facts, s) for s in scenes]``,
    computed for all scenes at once.
    """
    check_instance("table", table, dict)
    ok = np.ones(table["present"].shape[0], dtype=bool)
    rel = table["relation"]  # (n, K, K)
    for fact in facts:
        if fact[0] == "exists":
            ok &= _desc_mask(table, fact[1]).any(axis=1)
        elif fact[0] == "rel":
            _, da, r, db = fact
            pair = (_desc_mask(table, da)[:, :, None] & _desc_mask(table, db)[:, None, :]
                    & (rel == world.RELATIONS.index(r)))  # (n, K, K); the diagonal is -1, never a relation
            ok &= pair.any(axis=(1, 2))
        elif fact[0] != "moves":
            raise ValueError(f"facts contains an unknown fact kind {fact[0]!r}")
    return ok


# -- Questions about a collection -----------------------------------------------
@dataclass(frozen=True)
class CollectionQuestion:
    """A question about the one picture of a collection that it describes, and how to check an answer.

    "what color is the star above the red circle?" asks for ``asked`` (``"color"`` or ``"shape"``) of
    the object that fits ``target`` (a descriptor with the asked attribute None) and stands in ``relation`` to an
    object that fits ``anchor`` (shape and color). ``description`` ("a star above a red circle") is
    what a retriever searches the collection with; ``answer`` is the answer in the scene the question was drawn
    from. Other pictures may fit the description with another answer: :func:`answers_in` checks any picture.
    """

    text: str
    description: str
    asked: str
    target: tuple
    relation: str
    anchor: tuple
    answer: str

    @property
    def facts(self) -> frozenset:
        """The facts of :attr:`description` (a target, an anchor and their relation)."""
        return frozenset({("exists", self.target), ("exists", self.anchor),
                          ("rel", self.target, self.relation, self.anchor)})

    def filled(self, value: str) -> CollectionQuestion:
        """The question with the asked attribute of the target set to ``value`` (a hypothesis)."""
        check_choice("value", value, _VALUES[self.asked])
        target = tuple(value if a == self.asked else v for a, v in zip(_ATTRS, self.target))
        return replace(self, target=target, description=_describe(target, self.relation, self.anchor))


def _noun(desc) -> str:
    shape, color, size = desc
    return " ".join(w for w in (size, color, shape or "object") if w)


def _indefinite(noun: str) -> str:
    """``noun`` with its indefinite article: "an orange star", "an object", "a red circle"."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _describe(target, relation: str, anchor) -> str:
    return f"{_indefinite(_noun(target))} {relation} {_indefinite(_noun(anchor))}"


def collection_questions(scenes: Sequence[world.Scene], *, seed: int | np.random.Generator = 0,
                         asked: Sequence[str] = ASKED) -> list[CollectionQuestion]:
    """One :class:`CollectionQuestion` per scene (each needs two or more objects).

    A random ordered pair of objects (target, anchor) and a random ``asked`` attribute of the target: "what color is
    the {shape} {relation} the {color} {shape}?" or "what shape is the {color} object {relation} the {color}
    {shape}?", the relation being the target's position relative to the anchor (sizes are not named).
    """
    check_instance("scenes", scenes, (list, tuple))
    rng = check_rng("seed", seed)
    kinds = [check_choice("asked", a, ASKED) for a in check_instance("asked", asked, (list, tuple))]
    if not kinds:
        raise ValueError("asked must name at least one attribute")
    out = []
    for n, s in enumerate(scenes):
        if len(check_instance("scenes", s, world.Scene)) < 2:
            raise ValueError(f"scenes[{n}] has {len(s)} object(s); a question needs two")
        i, j = rng.choice(len(s), size=2, replace=False)
        kind = kinds[rng.integers(len(kinds))]
        t, a, rel = s.objects[i], s.objects[j], s.relation(i, j)
        # the target is named by its other attribute, the anchor by shape and color; sizes are left out
        target = (t.shape, None, None) if kind == "color" else (None, t.color, None)
        anchor = (a.shape, a.color, None)
        word = "what color is the" if kind == "color" else "what shape is the"
        text = f"{word} {_noun(target)} {rel} the {_noun(anchor)}?"
        out.append(CollectionQuestion(text, _describe(target, rel, anchor), kind, target, rel, anchor,
                                      getattr(t, kind)))
    return out


def answers_in(question: CollectionQuestion, scene: world.Scene) -> frozenset:
    """The answers ``scene`` gives to ``question``: the asked attribute of every object that fits the target and
    stands in the relation to an object that fits the anchor. Empty if the picture does not fit the description.
    """
    check_instance("question", question, CollectionQuestion)
    check_instance("scene", scene, world.Scene)
    objs = scene.objects
    return frozenset(
        getattr(o, question.asked) for i, o in enumerate(objs) if world.desc_matches(question.target, o.desc)
        and any(j != i and world.desc_matches(question.anchor, b.desc) and scene.relation(i, j) == question.relation
                for j, b in enumerate(objs)))
