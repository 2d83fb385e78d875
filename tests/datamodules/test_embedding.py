import re

import numpy as np
import pytest
import torch

from datamodules import distributed
from datamodules.embedding import EmbeddingDataModule
from datamodules.errors import InputError
from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from datamodules.streams.read_ahead import read_ahead
from datamodules.streams.rows import BlockShuffleStream, Segment
from tests.conftest import build_store


class FakeArray:
    """What planning needs of a ShardedArray: its row count."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows


def rows_seen(dm: EmbeddingDataModule, epoch: int = 0, key: str = "x") -> list[np.ndarray]:
    """Batches of raw row indices (column 0 of the first model) for one epoch."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does
    out = []
    for batch in loader:
        out.append(batch[key][0][:, 0].numpy().astype(int))
    return out


def make_dm(store, **kw):
    kw.setdefault("normalization", "none")
    kw.setdefault("batch_size", 8)
    kw.setdefault("block_rows", 10)
    kw.setdefault("window_blocks", 2)
    return EmbeddingDataModule(str(store), **kw)


def test_input_dim_and_model_order(tiny_store):
    dm = make_dm(tiny_store)
    assert dm.model_keys == ["m1", "m2"]
    assert dm.input_dim == 10
    assert make_dm(tiny_store, models=["m2"]).input_dim == 4


def test_epoch_order_is_deterministic_disjoint_and_reshuffled(tiny_store):
    dm = make_dm(tiny_store, include_train_queries=False)
    e0, e0_again, e1 = rows_seen(dm, 0), rows_seen(dm, 0), rows_seen(dm, 1)
    assert [b.tolist() for b in e0] == [b.tolist() for b in e0_again]
    flat0 = np.concatenate(e0)
    assert len(set(flat0.tolist())) == len(flat0)  # no row twice in an epoch
    assert all(len(b) == 8 for b in e0)
    assert len(flat0) >= 100 - 5 * 8  # at most one partial batch dropped per window
    assert sorted(flat0.tolist()) != sorted(np.concatenate(e1).tolist()) or e0[0].tolist() != e1[0].tolist()
    assert len(dm.train_dataloader()) == len(e0)
    # batch_rows(): the same batches, planned without reading
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    assert [b.tolist() for b in loader.dataset.batch_rows()] == [b.tolist() for b in e1]


def test_default_shuffle_runs_keep_the_order_every_committed_fit_used(tiny_store):
    # Batch 64 -> runs of 64 // 32 = 2 rows. This first batch was recorded before run_rows existed: a change
    # here changes every fit's batches, hence every committed result.
    dm = make_dm(tiny_store, batch_size=64, block_rows=25, window_blocks=4, include_train_queries=False)
    expected = [
        50,
        51,
        52,
        53,
        54,
        55,
        56,
        57,
        58,
        59,
        62,
        63,
        66,
        67,
        70,
        71,
        72,
        73,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
    ]
    expected += [
        14,
        15,
        16,
        17,
        18,
        19,
        20,
        21,
        22,
        23,
        24,
        27,
        28,
        29,
        30,
        31,
        32,
        35,
        36,
        43,
        44,
        45,
        46,
        47,
    ]
    expected += [48, 49, 75, 76, 77, 86, 87, 90, 91, 92, 93, 94, 95, 96, 97]
    assert [b.tolist() for b in rows_seen(dm)] == [expected]
    assert [
        b.tolist()
        for b in rows_seen(
            make_dm(
                tiny_store,
                batch_size=64,
                block_rows=25,
                window_blocks=4,
                include_train_queries=False,
                run_rows=2,
            )
        )
    ] == [expected]


@pytest.mark.parametrize(
    "rows, batch_size, block_rows, window_blocks, run_rows, drop_last",
    [
        ([300], 64, 25, 4, None, True),  # runs of 2, blocks of 25: chunks cross block edges
        ([257, 40], 24, 37, 3, None, False),  # two segments, a tail batch, a partial last chunk
        ([500], 16, 64, 2, 7, True),  # runs that cross batch edges
        ([90], 8, 30, 2, 40, False),  # runs longer than a batch and than a block
        ([33], 5, 33, 1, 1, False),  # row-level shuffle
    ],
)
def test_window_runs_are_the_window_rows_as_runs(
    rows, batch_size, block_rows, window_blocks, run_rows, drop_last
):
    # The one-process stream plans a window per chunk (_window_runs); batch_rows() and DDP plan it per row
    # (_window_rows). Both must list the same rows, batch for batch: the order every committed fit used.
    segments = [Segment(f"s{i}", (FakeArray(n),)) for i, n in enumerate(rows)]
    stream = BlockShuffleStream(
        segments, batch_size, block_rows, window_blocks, run_rows=run_rows, drop_last=drop_last, seed=3
    )
    checked = 0
    for epoch in range(3):
        stream.set_epoch(epoch)
        for i, window, count in stream._window_counts(*stream.plan(0, 1)):
            pos, lengths, at, sizes = stream._window_runs(window, count, i)
            listed = np.empty(sum(sizes), dtype=np.int64)
            for p, n, a in zip(pos.tolist(), lengths.tolist(), at.tolist()):
                listed[a : a + n] = np.arange(p, p + n)
            assert listed.tolist() == stream._window_rows(window, count, i).tolist()
            assert sizes[:-1] == [batch_size] * (len(sizes) - 1) and 0 < sizes[-1] <= batch_size
            checked += 1
    assert checked >= 6


def test_longer_shuffle_runs_put_fewer_places_in_a_batch(tiny_store):
    def places(batch: np.ndarray) -> int:  # runs of consecutive rows (each batch is in file order)
        return int(1 + np.count_nonzero(np.diff(batch) != 1))

    kw = dict(batch_size=32, block_rows=25, window_blocks=4, include_train_queries=False)
    rows = rows_seen(make_dm(tiny_store, run_rows=8, **kw))
    # 100 rows of one window, 4 blocks: runs of 8 window rows, a run cut at most once by a block edge
    assert [len(b) for b in rows] == [32, 32, 32]
    assert all(places(b) <= 32 // 8 + 3 for b in rows)
    assert len(set(np.concatenate(rows).tolist())) == 96
    assert (
        max(places(b) for b in rows_seen(make_dm(tiny_store, **kw))) > 32 // 8 + 3
    )  # default: rows one by one
    with pytest.raises(
        InputError, match=re.escape("data.run_rows: expected a positive integer or null, got 0")
    ):
        make_dm(tiny_store, run_rows=0)


def test_train_queries_are_streamed_with_the_corpus(tiny_store):
    dm = make_dm(tiny_store, batch_size=4, block_rows=20, window_blocks=1)
    batches = dm.train_dataloader()
    total = sum(len(b["x"][0]) for b in batches)
    assert total == 140  # 100 corpus + 40 train queries, windows of 20 rows divide evenly by 4


def test_ranks_get_disjoint_rows_and_equal_batch_counts(tiny_store, monkeypatch):
    dm = make_dm(tiny_store, include_train_queries=False)
    seen = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        seen[rank] = rows_seen(dm, 3)
    assert len(seen[0]) == len(seen[1]) > 0
    a, b = set(np.concatenate(seen[0]).tolist()), set(np.concatenate(seen[1]).tolist())
    # 100 rows in 13 global batches of 8: the last rank's 4 padding rows repeat rank 0's first ones
    assert len(a | b) == 100 and len(a & b) == 4


def test_workers_yield_the_same_batches_as_the_main_process(tiny_store):
    single = sorted(tuple(b) for b in map(list, rows_seen(make_dm(tiny_store), 2)))
    multi = sorted(tuple(b) for b in map(list, rows_seen(make_dm(tiny_store, num_workers=2), 2)))
    assert single == multi


def test_batches_combine_like_the_store(tiny_store):
    dm = make_dm(tiny_store, normalization="l2-concat-l2", include_train_queries=False)
    loader = dm.val_dataloader()
    batch = dm.on_after_batch_transfer(next(iter(loader)), 0)
    store = EmbeddingStore(tiny_store)
    expected = combine([store.array(m, "corpus").read(0, 8) for m in ("m1", "m2")])
    torch.testing.assert_close(batch["x"], torch.from_numpy(expected))


def test_validation_rows_are_in_store_order_and_complete(tiny_store):
    dm = make_dm(tiny_store, val_rows=30)
    rows = np.concatenate([b["x"][0][:, 0].numpy() for b in dm.val_dataloader()]).astype(int)
    assert rows.tolist() == list(range(30))  # the last, partial batch is kept


def test_supervised_pairs_follow_train_qrels(tiny_store):
    dm = make_dm(tiny_store, mode="supervised")
    loader = dm.train_dataloader()
    n = 0
    for batch in loader:
        qi, di = batch["q"][0][:, 0].numpy().astype(int), batch["d"][0][:, 0].numpy().astype(int)
        assert ((7 * qi) % 100 == di).all()
        n += len(qi)
    assert n == 40


def test_both_mode_zips_rows_and_pairs(tiny_store):
    dm = make_dm(tiny_store, mode="both")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert set(batch) == {"x", "q", "d"} and batch["q"].shape == (8, 10)


def test_eval_data(tiny_store):
    dm = make_dm(tiny_store, normalization="l2-concat-l2")
    data = dm.eval_data("test")
    assert dm.eval_data("test") is data  # loaded once: the callback asks every validation epoch
    assert data.queries.shape == (12, 10) and data.corpus.shape == (100, 10)
    assert data.query_ids[0] == "test-q0" and data.qrels["test-q1"] == {"d7": 1}
    np.testing.assert_allclose(np.linalg.norm(data.corpus, axis=1), 1, rtol=1e-5)


def test_bad_options(tiny_store, tmp_path):
    with pytest.raises(
        InputError, match=re.escape("data.mode: 'semi' is not one of unsupervised, supervised, both")
    ):
        make_dm(tiny_store, mode="semi")
    with pytest.raises(
        InputError, match=re.escape("data.model_weights has 1 entries for 2 models ['m1', 'm2']")
    ):
        _ = make_dm(tiny_store, model_weights=[1.0]).input_dim
    with pytest.raises(InputError, match="model 'nope' is not in this store"):
        _ = make_dm(tiny_store, models=["nope"]).input_dim
    store = build_store(tmp_path / "nosup", splits={"dev": 3, "test": 3})
    with pytest.raises(InputError, match="text set 'queries/train' is not in this store"):
        make_dm(store, mode="supervised").train_dataloader()


def test_models_with_different_shard_layouts_stay_row_aligned(tmp_path):
    store = build_store(tmp_path / "store", shard_rows={"m1": 7, "m2": 16})
    dm = make_dm(store, batch_size=8, block_rows=12, window_blocks=3)
    loader = dm.train_dataloader()
    n = 0
    for batch in loader:
        m1, m2 = (t[:, 0].numpy().astype(int) for t in batch["x"])
        np.testing.assert_array_equal(m1, m2)
        n += len(m1)
    assert n >= 100


def test_read_ahead_keeps_the_order_and_the_stream_matches_the_inline_one(tiny_store):
    inline = rows_seen(make_dm(tiny_store, read_ahead=0), 1)
    ahead = rows_seen(make_dm(tiny_store, read_ahead=3), 1)
    assert [b.tolist() for b in inline] == [b.tolist() for b in ahead]


def test_read_ahead_raises_the_producers_error_and_closes_it_when_stopped_early():
    closed = []

    def items(fail_at=None):
        try:
            for i in range(100):
                if i == fail_at:
                    raise OSError("disk went away")
                yield i
        finally:
            closed.append(True)

    assert list(read_ahead(items(), 2)) == list(range(100))
    with pytest.raises(OSError, match="disk went away"):
        list(read_ahead(items(fail_at=5), 2))
    stream = read_ahead(items(), 2)
    assert [next(stream), next(stream)] == [0, 1]
    closed.clear()
    stream.close()
    assert closed == [True]


def test_read_ahead_default_follows_the_accelerator(tiny_store):
    from types import SimpleNamespace

    dm = make_dm(tiny_store)
    assert dm.train_dataloader().read_ahead == 0  # no trainer: CPU
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert dm.train_dataloader().read_ahead == 2
    assert make_dm(tiny_store, read_ahead=0).train_dataloader().read_ahead == 0


def test_in_process_loading_advances_the_global_rng_like_a_dataloader(tiny_store):
    loader = make_dm(tiny_store).train_dataloader()
    torch.manual_seed(0)
    iter(torch.utils.data.DataLoader(loader.dataset, batch_size=None))
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(loader)
    torch.testing.assert_close(torch.rand(3), expected)


def _keys(batch) -> list:
    return [tuple(batch[k][0][:, 0].int().tolist()) for k in sorted(batch)]


@pytest.mark.parametrize(("mode", "num_workers"), [("unsupervised", 0), ("both", 0), ("supervised", 2)])
def test_stream_loader_resumes_mid_epoch_without_drawing_the_base_seed_again(tiny_store, mode, num_workers):
    def loader():
        out = make_dm(tiny_store, mode=mode, num_workers=num_workers).train_dataloader()
        out.sampler.set_epoch(3)  # what Lightning's fit loop does
        return out

    full = loader()
    torch.manual_seed(0)
    batches = iter(full)
    after_draw = torch.get_rng_state()
    head = [_keys(next(batches)) for _ in range(2)]
    state = full.state_dict()
    assert state == {"epoch": 3, "batches": 2}
    tail = [_keys(b) for b in batches]
    assert tail and full.state_dict() == {"epoch": 3, "batches": 2 + len(tail)}

    resumed = make_dm(tiny_store, mode=mode, num_workers=num_workers).train_dataloader()
    resumed.load_state_dict(state)
    torch.set_rng_state(after_draw)
    batches = iter(resumed)  # a resumed fit makes its iterator before set_epoch
    resumed.sampler.set_epoch(3)
    assert [_keys(b) for b in batches] == tail  # the rest of the epoch, nothing twice
    assert torch.equal(torch.get_rng_state(), after_draw)  # the epoch's draw was made before the checkpoint
    assert resumed.state_dict() == {"epoch": 3, "batches": 2 + len(tail)}
    # The next epoch is whole again, and draws its base seed.
    resumed.sampler.set_epoch(4)
    assert resumed.state_dict() == {"epoch": 4, "batches": 0}  # nothing of epoch 4 handed out yet
    assert len([_keys(b) for b in resumed]) == len(head) + len(tail)
    assert not torch.equal(torch.get_rng_state(), after_draw)
    assert head != tail[: len(head)]


def test_stream_loader_state_from_an_earlier_epoch_skips_nothing(tiny_store):
    # Resumed from the end of epoch 3 (Lightning makes one iterator to close epoch 3, then one for epoch 4).
    end_of_epoch = make_dm(tiny_store).train_dataloader()
    end_of_epoch.load_state_dict({"epoch": 3, "batches": len(end_of_epoch)})
    seeded = torch.manual_seed(0).get_state()
    closing = iter(end_of_epoch)  # never consumed: the epoch's batches were all trained on
    end_of_epoch.sampler.set_epoch(3)
    assert torch.equal(torch.get_rng_state(), seeded)
    del closing
    end_of_epoch.sampler.set_epoch(4)
    resumed = [_keys(b) for b in end_of_epoch]
    assert resumed == [[k] for k in map(tuple, (b.tolist() for b in rows_seen(make_dm(tiny_store), 4)))]
    # A mid-epoch state whose iterator ends up serving a later epoch (Lightning moved on): a whole epoch, drawn.
    stale = make_dm(tiny_store).train_dataloader()
    stale.load_state_dict({"epoch": 3, "batches": 2})
    batches = iter(stale)
    stale.sampler.set_epoch(4)
    assert [_keys(b) for b in batches] == resumed
    assert not torch.equal(torch.get_rng_state(), seeded)


def test_loading_a_state_leaves_the_length_lightning_measures_alone(tiny_store):
    # With these blocks epoch 1 has fewer batches than epoch 0. Lightning fixes a fit's epoch length when it
    # first measures the loader: at the start of a fresh fit, and after load_state_dict (before set_epoch) in a
    # resumed one, which must therefore measure what the fresh fit measured.
    def loader():
        return make_dm(tiny_store, block_rows=40, batch_size=16).train_dataloader()

    fresh = loader()
    length = len(fresh)
    fresh.sampler.set_epoch(1)
    assert len(fresh) != length
    resumed = loader()
    resumed.load_state_dict({"epoch": 1, "batches": 3})
    assert len(resumed) == length


def test_mined_negatives_ride_with_their_pairs(tiny_store):
    from datamodules.negatives import MiningSpec, mine_hard_negatives

    spec = MiningSpec(num_negatives=3, relative_margin=None)
    dm = make_dm(tiny_store, mode="both", negatives=spec)
    dm.prepare_data()
    mined = mine_hard_negatives(dm.store, dm.model_keys, "train", spec, normalization="none")
    assert dm.hparams["negatives"] == spec.__dict__  # plain values: checkpoints load with weights_only=True
    seen = 0
    for raw in dm.train_dataloader():
        batch = dm.on_after_batch_transfer(raw, 0)
        assert batch["n"].shape == (8, 3, 10) and batch["n_mask"].dtype == torch.bool
        q = raw["q"][0][:, 0].numpy().astype(int)
        rows = raw["n"][0][:, :, 0].numpy().astype(int)  # column 0 holds the corpus row
        want = mined.rows[q]
        assert np.array_equal(np.where(want >= 0, want, rows), rows)
        assert np.array_equal(raw["n_mask"].numpy(), want >= 0)
        assert not (rows == ((7 * q) % 100)[:, None])[want >= 0].any()  # never the positive
        seen += 1
    assert seen == len(dm.train_dataloader())


def test_a_label_budget_is_one_seeded_subset_for_every_data_seed(tiny_store):
    pairs = {
        seed: sorted(
            int(i)
            for batch in make_dm(
                tiny_store, mode="supervised", max_train_pairs=16, seed=seed
            ).train_dataloader()
            for i in batch["q"][0][:, 0].numpy()
        )
        for seed in (0, 1)
    }
    assert len(pairs[0]) == 16 and pairs[0] == pairs[1]
    other = make_dm(tiny_store, mode="supervised", max_train_pairs=16, train_pairs_seed=3)
    assert sorted(int(i) for b in other.train_dataloader() for i in b["q"][0][:, 0].numpy()) != pairs[0]
    with pytest.raises(
        InputError, match=re.escape("data.max_train_pairs=41: split 'train' of ") + ".* has only 40"
    ):
        make_dm(tiny_store, mode="supervised", max_train_pairs=41).train_dataloader()
    with pytest.raises(
        InputError, match=re.escape("data.max_train_pairs: expected a positive integer or null, got 0")
    ):
        make_dm(tiny_store, max_train_pairs=0)
    with pytest.raises(InputError, match=re.escape("data.negatives: unknown key 'k'")):
        make_dm(tiny_store, negatives={"k": 3})
