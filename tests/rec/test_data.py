import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eclip.errors import EclipError
from eclip.rec.data import (Vocabulary, cloze_batch, cold_item_mask, item_counts, length_batches, load_sequences,
                            next_item_batch, pad_left, split_sequences)

from tests.conftest import BEAUTY, require


def write(tmp_path, text, name="seq.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_text_sequences_keep_order_and_skip_blank_lines(tmp_path):
    seqs = load_sequences(write(tmp_path, "u1 a b c\n\nu2 c a\n"))
    assert seqs.users == ["u1", "u2"] and seqs.items == [["a", "b", "c"], ["c", "a"]]


@pytest.mark.parametrize("text, line, words", [
    ("u1 a b\nu2,a,b\n", 2, "commas"),
    ("u1 a b\nu2 c\nu3\n", 3, "has no items"),
    ("u1 a b\nu2 c\nu1 d\n", 3, r"already has a line \(1\)"),
])
def test_malformed_lines_name_the_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(EclipError, match=rf"seq.txt:{line}: .*{words}"):
        load_sequences(path)


def test_text_byte_order_mark_comments_and_crlf(tmp_path):
    beauty = require(BEAUTY / "sequences.txt").read_text().splitlines()[:3]
    path = tmp_path / "seq.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "# Amazon beauty: user item1 item2\r\n".encode()
                     + "\r\n".join(beauty).encode() + b"\r\n")
    seqs = load_sequences(path)
    assert seqs.users == [line.split()[0] for line in beauty] and seqs.users[0] == "1"
    assert seqs.items[0] == beauty[0].split()[1:]


def test_non_utf8_lines_and_parquet_named_in_capitals(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_bytes("u1 a b\nu2 caf\u00e9 b\n".encode("latin-1"))
    with pytest.raises(EclipError, match=r"seq.txt:2: not UTF-8 \(byte 7 of the line\); save the file as UTF-8"):
        load_sequences(path)
    upper = tmp_path / "LOG.PARQUET"
    pq.write_table(pa.table({"user": ["a", "a"], "item": ["x", "y"], "timestamp": [2, 1]}), upper)
    assert load_sequences(upper).items == [["y", "x"]]


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(EclipError, match="no sequences"):
        load_sequences(write(tmp_path, "\n\n"))
    with pytest.raises(EclipError, match="no such file"):
        load_sequences(tmp_path / "absent.txt")


def test_parquet_sorts_by_user_then_time_keeping_file_order_of_ties(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": ["b", "a", "b", "a", "a"], "item": [7, 1, 5, 2, 3],
                             "timestamp": [20, 3, 10, 3, 1]}), path)
    seqs = load_sequences(path)
    assert seqs.users == ["a", "b"]
    assert seqs.items == [["3", "1", "2"], ["5", "7"]]  # item ids become strings; 1 before 2 (same time, file order)


def test_parquet_bad_columns_and_nulls(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": ["a"], "item": ["x"]}), path)
    with pytest.raises(EclipError, match="missing column.*timestamp"):
        load_sequences(path)
    pq.write_table(pa.table({"user": ["a", None], "item": ["x", "y"], "timestamp": [1, 2]}), path)
    with pytest.raises(EclipError, match="row 2: user is null"):
        load_sequences(path)


@pytest.mark.parametrize("columns, message", [
    ({"user": ["a", "a"], "item": ["x", "y"], "timestamp": ["9", "10"]},
     "column timestamp is string; expected numbers, dates or timestamps"),
    ({"user": ["a", "a"], "item": [[1, 2], [3]], "timestamp": [1, 2]},
     r"column item is list<element: int64>; expected strings or integers, one item per row"),
    ({"user": [1.5, 1.5], "item": ["x", "y"], "timestamp": [1, 2]}, "column user is double"),
])
def test_parquet_column_types_that_cannot_be_ids_or_times_are_refused(tmp_path, columns, message):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(EclipError, match=message):
        load_sequences(path)


def test_parquet_dates_and_category_ids_load_and_a_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "log.parquet"
    days = pa.array([20, 3, 11], pa.date32())
    pq.write_table(pa.table({"user": pa.array(["a", "a", "a"]).dictionary_encode(),
                             "item": pa.array([9, 10, 11]).dictionary_encode(), "timestamp": days}), path)
    assert load_sequences(path).items == [["10", "11", "9"]]
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(EclipError, match="log.parquet: not a readable Parquet file"):
        load_sequences(path)


def test_vocabulary_indices_and_unknown_ids():
    vocab = Vocabulary.build(load_like([["b", "a"], ["a", "c"]]), extra_ids=["d", "a"])
    assert vocab.ids == ["b", "a", "c", "d"] and vocab.mask_token == 5
    np.testing.assert_array_equal(vocab.encode(["c", "b"]), [3, 1])
    with pytest.raises(EclipError, match="unknown item id.*'z'"):
        vocab.encode(["z"])


def load_like(items):
    from eclip.rec.data import Sequences
    return Sequences([f"u{i}" for i in range(len(items))], items)


def test_leave_one_out_split():
    encoded = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([2, 3, 5])]
    split = split_sequences(encoded, np.zeros(7, dtype=bool))
    assert [s.tolist() for s in split.train] == [[1, 2], [5, 6], [2]]  # user 1 (2 items) trains only
    np.testing.assert_array_equal(split.val.users, [0, 2])
    assert [h.tolist() for h in split.val.histories] == [[1, 2], [2]] and split.val.targets.tolist() == [3, 3]
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3], [2, 3]] and split.test.targets.tolist() == [4, 5]
    assert item_counts(split.train, 6).tolist() == [0, 1, 2, 0, 0, 1, 1]


def test_cold_items_are_only_ever_last_items():
    encoded = [np.array([1, 2, 3, 4, 2]), np.array([2, 1, 3]), np.array([3, 1, 4, 1])]
    cold = np.zeros(5, dtype=bool)
    cold[2] = True
    split = split_sequences(encoded, cold)
    assert not any(np.isin(s, [2]).any() for s in split.train)
    assert not any(np.isin(h, [2]).any() for h in split.test.histories + split.val.histories)
    # user 0: [1, 3, 4, 2] -> test target 2 (cold) given [1, 3, 4]; user 1: [1, 3] has 2 items -> training only
    assert split.test.targets.tolist() == [2, 1] and split.test.histories[0].tolist() == [1, 3, 4]
    assert split.cold_items.tolist() == [2]


def test_cold_item_mask_depends_on_ids_not_order():
    ids = [f"p{i}" for i in range(2000)]
    mask = cold_item_mask(ids, 0.1, seed=3)
    assert mask[0] == False and 150 < mask.sum() < 250  # noqa: E712
    shuffled = ids[::-1] + ["new"]
    again = cold_item_mask(shuffled, 0.1, seed=3)
    assert {ids[k - 1] for k in np.flatnonzero(mask)} == {shuffled[k - 1] for k in np.flatnonzero(again)} - {"new"}
    assert not cold_item_mask(ids, 0.0).any()


def test_pad_left_right_aligns():
    assert pad_left([np.array([1, 2, 3]), np.array([4]), np.zeros(0, np.int64)]).tolist() == \
        [[1, 2, 3], [0, 0, 4], [0, 0, 0]]


def test_cloze_masks_exactly_what_it_labels():
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, 31), np.arange(40, 45)]
    batch = cloze_batch(seqs, max_len=20, mask_token=99, mask_prob=0.5, last_item_fraction=0.0, rng=rng)
    tokens, labels = batch.tokens.numpy(), batch.labels.numpy()
    assert tokens.shape == (2, 20)
    # last-20 truncation, right-aligned
    original = np.array([np.arange(11, 31), np.r_[np.zeros(15, int), np.arange(40, 45)]])
    masked = tokens == 99
    np.testing.assert_array_equal(labels, np.where(masked, original, 0))
    np.testing.assert_array_equal(tokens[~masked], original[~masked])
    assert (original[masked] > 0).all()  # padding is never masked
    assert 5 <= masked[0].sum() <= 15


def test_cloze_extremes():
    rng = np.random.default_rng(1)
    seqs = [np.array([3, 4, 5]), np.array([6, 7])]
    none = cloze_batch(seqs, 10, 9, mask_prob=0.0, last_item_fraction=0.0, rng=rng)
    assert ((none.tokens == 9).sum(1) == 1).all()  # at least one masked item per row
    every = cloze_batch(seqs, 10, 9, mask_prob=1.0, last_item_fraction=0.0, rng=rng)
    assert every.tokens.tolist() == [[9, 9, 9], [0, 9, 9]] and every.labels.tolist() == [[3, 4, 5], [0, 6, 7]]
    last = cloze_batch(seqs, 10, 9, mask_prob=1.0, last_item_fraction=1.0, rng=rng)
    assert last.tokens.tolist() == [[3, 4, 9], [0, 6, 9]] and last.labels.tolist() == [[0, 0, 5], [0, 0, 7]]


def test_next_item_batch_shifts_by_one_and_truncates():
    batch = next_item_batch([np.array([1, 2, 3, 4, 5]), np.array([6, 7])], max_len=3)
    assert batch.tokens.tolist() == [[2, 3, 4], [0, 0, 6]]
    assert batch.labels.tolist() == [[3, 4, 5], [0, 0, 7]]


def test_length_batches_cover_every_row_once_and_group_lengths():
    lengths = np.array([1, 9, 2, 8, 1, 9, 2, 8])
    batches = length_batches(lengths, 2, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    assert all(len(set(lengths[b])) == 1 for b in batches)
