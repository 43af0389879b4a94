"""Tests of mmutils.retrieval: exact and faiss search, recall against exact, collection facts and questions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmutils import retrieval as R
from mmutils import world


@pytest.fixture(autouse=True)
def _one_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # small indexes: threads cost more than they give
    yield
    faiss.omp_set_num_threads(before)


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


# --------------------------------------------------------------------------- #
# Search
# --------------------------------------------------------------------------- #
def test_exact_search_equals_a_loop_and_faiss_flat():
    db, q = _unit(200, 16, 0), _unit(12, 16, 1)
    scores, ids = R.exact_search(q, db, k=5, chunk=7)  # chunks do not change the result
    for i in range(len(q)):
        sims = [float(q[i] @ db[j]) for j in range(len(db))]
        best = sorted(range(len(db)), key=lambda j: -sims[j])[:5]
        assert ids[i].tolist() == best
        assert np.allclose(scores[i].numpy(), [sims[j] for j in best], atol=1e-5)
    f_scores, f_ids = R.search(R.build_index(db, "flat"), q, k=5)
    assert torch.equal(f_ids, ids)
    torch.testing.assert_close(f_scores, scores, rtol=1e-5, atol=1e-5)


def test_ivf_probing_every_list_and_wide_hnsw_are_exact():
    db, q = _unit(2000, 16, 2), _unit(50, 16, 3)
    _, exact_ids = R.exact_search(q, db, k=10)
    ivf = R.build_index(db, "ivf", nlist=16, seed=0)
    _, ids = R.search(ivf, q, k=10, nprobe=16)
    assert R.neighbour_recall(ids, exact_ids) == 1.0
    _, ids = R.search(ivf, q, k=10, nprobe=1)
    assert R.neighbour_recall(ids, exact_ids) < 1.0  # one list of 16 misses neighbours
    _, ids = R.search(R.build_index(db, "hnsw", m=8), q, k=10, ef_search=500)
    assert R.neighbour_recall(ids, exact_ids) > 0.99


def test_ivf_lists_match_the_quantizer_and_the_search():
    db = _unit(1500, 8, 4)
    ivf = R.build_index(db, "ivf", nlist=12, seed=1)
    centroids, assignment = R.ivf_lists(ivf)
    assert centroids.shape == (12, 8) and assignment.shape == (1500,)
    nearest = (db @ centroids.t()).argmax(1)  # inner-product quantizer
    assert (nearest == assignment).float().mean() > 0.99
    assert torch.bincount(assignment, minlength=12).sum() == 1500


def test_index_bytes_counts_the_vectors():
    db = _unit(300, 32, 5)
    assert R.index_bytes(R.build_index(db, "flat")) >= 300 * 32 * 4
    assert R.index_bytes(R.build_index(db, "hnsw")) > R.index_bytes(R.build_index(db, "flat"))


def test_neighbour_recall_hand_made():
    approx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    exact = torch.tensor([[3, 2, 1], [4, 7, 8]])  # order does not matter; 3 of 3, then 1 of 3
    assert R.neighbour_recall(approx, exact) == pytest.approx(2 / 3)
    assert R.neighbour_recall(exact, exact) == 1.0


# --------------------------------------------------------------------------- #
# Facts over a collection, questions
# --------------------------------------------------------------------------- #
def test_fits_equals_facts_hold():
    scenes = world.sample_scenes(300, min_objects=1, max_objects=3, seed=0)
    table = R.scene_table(scenes)
    probes = world.sample_scenes(20, min_objects=1, max_objects=3, seed=1)
    facts = [world.parse_caption(c) for c in world.captions(probes, seed=2)]
    facts += [q.facts for q in R.collection_questions([s for s in probes if len(s) >= 2], seed=3)]
    facts += [world.parse_caption("a red object above a circle"), world.parse_caption("a star")]
    for f in facts:
        assert R.fits(f, table).tolist() == [world.facts_hold(f, s) for s in scenes]


def test_questions_describe_and_answer_their_scene():
    scenes = world.sample_scenes(200, min_objects=2, max_objects=3, seed=4)
    for q, s in zip(R.collection_questions(scenes, seed=5), scenes):
        assert world.parse_caption(q.description) == q.facts  # the grammar reads the description
        assert world.facts_hold(q.facts, s) and q.answer in R.answers_in(q, s)
        assert world.facts_hold(q.filled(q.answer).facts, s)
        assert q.text.startswith(f"what {q.asked}")
        assert None in q.target and q.target[("shape", "color").index(q.asked)] is None  # not given away


def test_answers_in_hand_made():
    star = world.Obj("star", "green", "small", 0.5, 0.2)
    circle = world.Obj("circle", "red", "large", 0.5, 0.7)
    q = R.CollectionQuestion("what color is the star above the red circle?", "a star above a red circle",
                             "color", ("star", None, None), "above", ("circle", "red", None), "green")
    assert R.answers_in(q, world.Scene((star, circle))) == {"green"}
    assert R.answers_in(q, world.Scene((circle, star))) == {"green"}  # the object order does not matter
    moved = world.Scene((world.Obj("star", "green", "small", 0.5, 0.8), world.Obj("circle", "red", "large",
                                                                                  0.5, 0.3)))
    assert R.answers_in(q, moved) == frozenset()  # the star is below: the picture does not fit
    assert q.filled("blue").description == "a blue star above a red circle"
    assert q.filled("orange").description == "an orange star above a red circle"  # "an" before a vowel


def test_descriptions_use_the_right_article():
    scenes = world.sample_scenes(300, min_objects=2, max_objects=3, seed=6)
    words = [q.description.split() for q in R.collection_questions(scenes, seed=7)]
    pairs = [(w[i], w[i + 1]) for w in words for i in range(len(w) - 1) if w[i] in ("a", "an")]
    assert {b for a, b in pairs if a == "an"} & {"orange", "object"}  # both cases occur
    assert all((a == "an") == (b[0] in "aeiou") for a, b in pairs)


# --------------------------------------------------------------------------- #
# Bad input: one test per kind of mistake
# --------------------------------------------------------------------------- #
def test_search_rejects_bad_vectors():
    db = _unit(10, 4, 0)
    with pytest.raises(TypeError, match="queries must be a torch.Tensor"):
        R.exact_search(np.zeros((2, 4)), db)
    with pytest.raises(ValueError, match="queries must have 2 dimensions"):
        R.exact_search(db[0], db)
    with pytest.raises(ValueError, match="database must have size 4 in dimension 1"):
        R.exact_search(db, _unit(10, 5, 1))
    with pytest.raises(TypeError, match="database must be a floating-point tensor"):
        R.exact_search(db, torch.zeros(10, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 10\]"):
        R.exact_search(db, db, k=11)


def test_index_options_are_checked():
    db = _unit(50, 4, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        R.build_index(db, "lsh")
    with pytest.raises(ValueError, match=r"nlist must be an int in \[1, 50\]"):
        R.build_index(db, "ivf", nlist=100)
    flat = R.build_index(db)
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes"):
        R.search(flat, db, nprobe=2)
    with pytest.raises(ValueError, match="ef_search applies to HNSW indexes"):
        R.search(flat, db, ef_search=8)
    with pytest.raises(TypeError, match="index must be a Index"):
        R.search("index", db)
    with pytest.raises(ValueError, match="index must be an IVF index"):
        R.ivf_lists(flat)


def test_neighbour_recall_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="exact_ids must have size 3 in dimension 1"):
        R.neighbour_recall(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="approx_ids must be an integer tensor"):
        R.neighbour_recall(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


def test_collection_arguments_are_checked():
    scenes = world.sample_scenes(3, min_objects=1, max_objects=1, seed=0)
    with pytest.raises(ValueError, match="scenes must not be empty"):
        R.scene_table([])
    with pytest.raises(TypeError, match="scenes must be a Scene"):
        R.scene_table(["a red circle"])
    with pytest.raises(ValueError, match=r"scenes\[0\] has 1 object\(s\)"):
        R.collection_questions(scenes)
    with pytest.raises(ValueError, match="asked must be one of"):
        R.collection_questions(scenes, asked=("size",))
    with pytest.raises(ValueError, match="unknown fact kind 'maybe'"):
        R.fits([("maybe", ("circle", None, None))], R.scene_table(scenes))
    q = R.collection_questions(world.sample_scenes(1, min_objects=2, seed=1))[0]
    with pytest.raises(ValueError, match="value must be one of"):
        q.filled("large")
    with pytest.raises(TypeError, match="scene must be a Scene"):
        R.answers_in(q, "a picture")
