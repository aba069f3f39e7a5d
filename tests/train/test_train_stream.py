"""The stream over DATA_DIR's row groups (process shares, windows, exact positions) and the locked text features
file, on real fashion-dev rows laid out as several shards of small row groups."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models.image_processing import ImagePreprocessing
from eclip.models.text import TextProcessor, train_wordpiece
from eclip.train.config import AugmentConfig
from eclip.train.dataset import PairDataset
from eclip.train.features import cached_text_features
from eclip.train.stream import PairStream, epoch_windows, find_units
from tests.train.train_helpers import WORDPIECE_TITLES, resharded_copy, rewritten_copy, tiny_model

BUFFER = 40


@pytest.fixture(scope="module")
def sharded(fashion_data_dir, tmp_path_factory):
    return resharded_copy(fashion_data_dir, tmp_path_factory.mktemp("sharded") / "data", shards=3, row_group_rows=24)


def _dataset(data_dir, world=1, category_fraction=0.0, group_fraction=None) -> PairDataset:
    dataset = PairDataset(data_dir, ImagePreprocessing(16), AugmentConfig(), world=world)
    dataset.set_batch_rules(TextProcessor(train_wordpiece(WORDPIECE_TITLES, 64), 10), category_fraction,
                            group_fraction)
    return dataset


def _stream(dataset, reader, rank=0, world=1, seed=0) -> PairStream:
    return PairStream(dataset.units, seed, rank, world, BUFFER,
                      lambda key, units: dataset.open_window(key, units, seed, rank), reader)


def _product_ids(pieces) -> list[str]:
    return [window.product_ids[i] for pending, start, stop in pieces
            for window in [pending.result()] for i in window.order[start:stop]]


def test_two_processes_read_disjoint_shares_that_cover_the_split_each_epoch(sharded):
    dataset = _dataset(sharded, world=2)
    train_ids = read_products(sharded, split="train", columns=["product_id"]).column("product_id").to_pylist()
    assert len(dataset.units) > 10 and len(dataset) == len(train_ids)
    with ThreadPoolExecutor(1) as reader:
        for epoch in (0, 1):
            shares = []
            for rank in (0, 1):
                windows = epoch_windows(dataset.units, 0, epoch, rank, 2, BUFFER)
                assert len(windows) > 1 and max(sum(u.rows for u in w) for w in windows) <= BUFFER
                stream = _stream(dataset, reader, rank, world=2)
                stream.load_state_dict({"epoch": epoch, "window": 0, "cursor": 0})
                shares.append(_product_ids(stream.next(sum(u.rows for w in windows for u in w))))
                assert stream.state_dict() == {"epoch": epoch + 1, "window": 0, "cursor": 0}
            assert not set(shares[0]) & set(shares[1])
            assert sorted(shares[0] + shares[1]) == sorted(train_ids)  # each product once per epoch


def test_a_stream_resumed_mid_window_draws_the_same_rows_and_batches(sharded):
    dataset = _dataset(sharded, category_fraction=0.5, group_fraction=1.0)
    sizes = [16, 24, 8, 32, 16, 40, 16, 24, 32, 16] * 2
    with ThreadPoolExecutor(1) as reader:
        reference = _stream(dataset, reader)
        expected = [_product_ids(reference.next(size)) for size in sizes]
        interrupted = _stream(dataset, reader)
        got = [_product_ids(interrupted.next(size)) for size in sizes[:3]]
        state = interrupted.state_dict()
        assert state["cursor"] > 0 and state["epoch"] == 0  # mid-window
        resumed = _stream(dataset, reader)
        resumed.load_state_dict(state)
        got += [_product_ids(resumed.next(size)) for size in sizes[3:]]
        assert got == expected and reference.epoch >= 1  # across a window and an epoch boundary
        pieces = _stream(dataset, reader).next(16)
        first, again = dataset.batch(pieces, np.random.default_rng(0)), dataset.batch(pieces, np.random.default_rng(0))
        assert all(torch.equal(first[key], again[key]) for key in first)
        assert first["pixels"].shape == (16, 3, 16, 16) and first["groups"].dtype == torch.int64
        other = _stream(dataset, reader, seed=1)
        assert _product_ids(other.next(16)) != expected[0]
        with pytest.raises(EclipError, match="older eclip"):
            resumed.load_state_dict({"epoch": 0, "cursor": 5})


def test_batch_rules_hold_inside_each_window(sharded):
    grouped = _dataset(sharded, group_fraction=1.0)
    units = epoch_windows(grouped.units, 0, 0, 0, 1, BUFFER)[0]
    window = grouped.open_window((0, 0), units, 0, 0)
    table = read_products(sharded, split="train", columns=["group_id"])
    rows = np.concatenate([np.arange(u.first, u.first + u.rows) for u in units])
    groups = np.array(table.column("group_id").to_pylist())[rows][window.order]
    assert len(set(groups)) < len(groups)  # the window holds sibling offers
    assert (groups[1:] != groups[:-1]).sum() + 1 == len(set(groups))  # each group one contiguous run
    keys = window.groups[window.order]
    assert all((keys == keys[i]).sum() == (groups == groups[i]).sum() for i in range(len(groups)))


@pytest.fixture
def locked_tower():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits (as `threads = 1` in the train tests)
    encoder = tiny_model().text
    encoder.requires_grad_(False)
    yield encoder
    torch.set_num_threads(threads)


def test_locked_text_features_are_computed_once_and_reused(sharded, tmp_path, locked_tower):
    data = rewritten_copy(sharded, tmp_path / "data", lambda table: table)
    dataset = _dataset(data)
    features = cached_text_features(dataset, locked_tower, "fp32", batch_size=100)
    files = sorted((data / "features").glob("*.npy"))
    assert len(files) == 1 and isinstance(features, np.memmap) and features.shape == (len(dataset), 32)
    titles = list(dataset.titles())
    input_ids, attention_mask = dataset.processor.pad(dataset.processor.token_ids(titles[-5:]))
    with torch.no_grad():
        direct = locked_tower.eval()(input_ids, attention_mask).numpy()
    assert np.allclose(features[-5:], direct, atol=1e-5)
    written = files[0].stat().st_mtime_ns

    assert np.array_equal(cached_text_features(_dataset(data), locked_tower, "fp32"), features)  # a second run
    assert sorted((data / "features").glob("*.npy")) == files and files[0].stat().st_mtime_ns == written

    with torch.no_grad():
        locked_tower.bert.embeddings.word_embeddings.weight[5] += 1.0  # another model
    before = cached_text_features(dataset, locked_tower, "fp32")[0].copy()
    assert len(list((data / "features").glob("*.npy"))) == 2

    shard = sorted((data / "shards").glob("*.parquet"))[0]  # other data: one title changed
    table = pq.read_table(shard)
    titles_column = table.column("title").to_pylist()
    train_rows = np.flatnonzero(pc.equal(table.column("split"), "train").to_numpy(zero_copy_only=False))
    titles_column[train_rows[0]] = "Reebok Women Brown Handbag"
    pq.write_table(table.set_column(table.column_names.index("title"), "title", pa.array(titles_column)), shard,
                   row_group_size=24)
    changed = cached_text_features(_dataset(data), locked_tower, "fp32")
    assert len(list((data / "features").glob("*.npy"))) == 3
    assert not np.allclose(changed[0], before) and np.allclose(changed[1:3], features[1:3], atol=1e-2)


def test_a_share_held_whole_is_read_once_and_reshuffled_each_epoch(sharded):
    dataset = _dataset(sharded)
    with ThreadPoolExecutor(1) as reader:
        stream = PairStream(dataset.units, 0, 0, 1, 0, lambda key, units: dataset.open_window(key, units, 0, 0), reader)
        first = stream.next(len(dataset))
        second = stream.next(len(dataset))
        assert stream.state_dict() == {"epoch": 2, "window": 0, "cursor": 0}
    (one, _, _), (two, _, _) = first[0], second[0]
    assert len(first) == len(second) == 1 and one.result().thumbnails is two.result().thumbnails  # not read again
    assert sorted(_product_ids(first)) == sorted(_product_ids(second)) and _product_ids(first) != _product_ids(second)


def test_a_single_row_group_is_cut_into_a_slice_per_process(fashion_data_dir, tmp_path):
    data = resharded_copy(fashion_data_dir, tmp_path / "data", shards=1, row_group_rows=100_000)
    whole, = find_units(data, "train", ["title"], world=1)
    slices = find_units(data, "train", ["title"], world=3)
    assert [(u.row_group, u.first) for u in slices] == [(0, 0), (0, slices[0].stop), (0, slices[1].stop)]
    assert [u.start for u in slices[1:]] == [u.stop for u in slices[:-1]] and slices[-1].stop == whole.rows
    assert max(u.rows for u in slices) - min(u.rows for u in slices) <= 1
    with pytest.raises(EclipError, match="no column"):
        find_units(data, "train", ["title", "no_such_column"], world=1)
