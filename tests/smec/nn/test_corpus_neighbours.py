import torch
import torch.nn.functional as F

from smec.nn.corpus_neighbours import CorpusNeighbours


def corpus(n=40, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def brute_force(x, rows, k):
    """Each row's k most cosine-similar rows of ``rows`` other than an identical one, by a full sort."""
    sims = F.normalize(x, dim=1) @ F.normalize(rows, dim=1).T
    sims = sims.masked_fill(sims >= 1 - 1e-6, float("-inf"))
    return sims.sort(dim=1, descending=True, stable=True).indices[:, :k]


def test_corpus_rows_get_their_k_nearest_other_rows_and_never_themselves():
    rows = corpus()
    bank = CorpusNeighbours(rows, chunk_rows=7)  # several chunks: the merge across chunks is exercised
    pick = bank.select(rows[:10], 4)
    found = pick.slots[pick.inverse]
    assert torch.equal(found, brute_force(rows[:10], rows, 4))
    assert not (found == torch.arange(10).unsqueeze(1)).any()
    assert bool(pick.keep.all())
    expected = (F.normalize(rows[:10], dim=1).unsqueeze(1) * F.normalize(rows[found], dim=2)).sum(-1)
    torch.testing.assert_close(pick.teacher, expected)
    assert torch.equal(pick.slots, pick.slots.unique())  # distinct, ascending


def test_a_row_outside_the_corpus_keeps_its_nearest_row():
    rows = corpus()
    outside = rows[3:4] + 0.1 * corpus(1, 6, seed=1)
    pick = CorpusNeighbours(rows).select(outside, 3)
    assert torch.equal(pick.slots[pick.inverse], brute_force(outside, rows, 3))


def test_the_search_is_deterministic_and_the_same_in_one_chunk_or_many():
    rows, x = corpus(), corpus(8, 6, seed=2)
    a = CorpusNeighbours(rows, chunk_rows=5).select(x, 6)
    b = CorpusNeighbours(rows, chunk_rows=5).select(x, 6)
    c = CorpusNeighbours(rows).select(x, 6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(a.slots[a.inverse], c.slots[c.inverse])
    torch.testing.assert_close(a.teacher, c.teacher)


def test_duplicates_of_the_row_are_masked_when_too_few_others_remain():
    rows = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rows 0 and 1: the same direction
    pick = CorpusNeighbours(rows).select(rows[:1], 2)
    assert pick.keep.tolist() == [[True, False]]
    assert pick.slots[pick.inverse][0, 0].item() == 2 and pick.teacher[0, 1].item() == 0.0
