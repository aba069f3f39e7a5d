"""Interaction sequences: loading, the item vocabulary, leave-one-out and cold-start splits, training batches.

Item ids are strings (the catalogue's `product_id` when content features are used). Inside the model an item
is an index: 0 is padding, 1..n_items are items, n_items + 1 is the [mask] token.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from eclip.errors import EclipError
from eclip.files import parquet_schema, read_parquet

PAD = 0


@dataclass
class Sequences:
    """Per-user item-id sequences in time order."""

    users: list[str]
    items: list[list[str]]


def load_sequences(path: Path) -> Sequences:
    """Read `user item1 item2 ...` lines (.txt) or a Parquet of `user`, `item`, `timestamp`."""
    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such file; pass a sequences .txt or a Parquet of user, item, timestamp")
    if path.suffix.lower() == ".parquet":
        return _load_parquet(path)
    return _load_text(path)


def _load_text(path: Path) -> Sequences:
    """Lines starting with '#' are comments (a header naming the format, say); a UTF-8 byte-order mark, which
    some editors write at the start of the file, is not part of the first user's id."""
    users, items, first_line = [], [], {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise EclipError(f"{path}:{number}: not UTF-8 (byte {error.start + 1} of the line); save the file "
                                 "as UTF-8, or give a Parquet file a .parquet name") from None
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            if any("," in token for token in tokens):
                raise EclipError(f"{path}:{number}: commas found; expected whitespace-separated 'user item1 item2 ...' "
                                 "(use a .parquet of user, item, timestamp for tables)")
            if len(tokens) < 2:
                raise EclipError(f"{path}:{number}: user {tokens[0]!r} has no items; expected 'user item1 item2 ...'")
            if tokens[0] in first_line:
                raise EclipError(f"{path}:{number}: user {tokens[0]!r} already has a line ({first_line[tokens[0]]}); "
                                 "merge the user's items into one line in time order")
            first_line[tokens[0]] = number
            users.append(tokens[0])
            items.append(tokens[1:])
    if not users:
        raise EclipError(f"{path}: no sequences; expected lines of 'user item1 item2 ...'")
    return Sequences(users, items)


def _is_id_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_id_type(kind.value_type)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)


# What each Parquet column may hold: ids become strings, and timestamps must sort in time order (text would sort
# "10" before "9").
_PARQUET_COLUMNS = {
    "user": (_is_id_type, "expected strings or integers, one user per row"),
    "item": (_is_id_type, "expected strings or integers, one item per row"),
    "timestamp": (lambda kind: any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating,
                                                            pa.types.is_timestamp, pa.types.is_date)),
                  "expected numbers, dates or timestamps (parse text times before writing the Parquet)"),
}


def _load_parquet(path: Path) -> Sequences:
    import pyarrow.compute as pc

    schema = parquet_schema(path)
    missing = set(_PARQUET_COLUMNS) - set(schema.names)
    if missing:
        raise EclipError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected user, item, timestamp")
    for name, (allowed, expected) in _PARQUET_COLUMNS.items():
        if not allowed(schema.field(name).type):
            raise EclipError(f"{path}: column {name} is {schema.field(name).type}; {expected}")
    table = read_parquet(path, columns=list(_PARQUET_COLUMNS))
    for name in _PARQUET_COLUMNS:
        nulls = table[name].null_count
        if nulls:
            row = pc.index(pc.is_null(table[name]), True).as_py()
            raise EclipError(f"{path}: row {row + 1}: {name} is null ({nulls} null(s) in all); drop or fill those rows")
    table = table.set_column(0, "user", pc.cast(table["user"], "string"))
    table = table.set_column(1, "item", pc.cast(table["item"], "string"))
    # Stable sort keeps the file order of equal timestamps, the only order they have.
    order = pc.sort_indices(table, sort_keys=[("user", "ascending"), ("timestamp", "ascending")])
    table = table.take(order)
    user_col, item_col = table["user"].to_pylist(), table["item"].to_pylist()
    users, items = [], []
    for user, item in zip(user_col, item_col):
        if not users or users[-1] != user:
            users.append(user)
            items.append([])
        items[-1].append(item)
    if not users:
        raise EclipError(f"{path}: no rows")
    return Sequences(users, items)


@dataclass
class Vocabulary:
    """Item ids in index order: `ids[k - 1]` is the id of index k."""

    ids: list[str]

    def __post_init__(self):
        self.index = {item: k for k, item in enumerate(self.ids, 1)}

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def mask_token(self) -> int:
        return len(self.ids) + 1

    @classmethod
    def build(cls, sequences: Sequences, extra_ids: list[str] = ()) -> Vocabulary:
        """Items in order of first appearance, then `extra_ids` (items known only from their content) not yet seen."""
        seen = dict.fromkeys(item for seq in sequences.items for item in seq)
        seen.update(dict.fromkeys(extra_ids))
        return cls(list(seen))

    def encode(self, items: list[str]) -> np.ndarray:
        unknown = [item for item in items if item not in self.index]
        if unknown:
            raise EclipError(f"unknown item id(s) {', '.join(map(repr, unknown[:5]))}: not in the run's vocabulary")
        return np.array([self.index[item] for item in items], dtype=np.int64)


@dataclass
class EvalCases:
    """One next-item prediction per user: the model reads `histories[u]` and should rank `targets[u]` first."""

    users: np.ndarray            # (U,) user row in Sequences
    histories: list[np.ndarray]  # item indices, time order
    targets: np.ndarray          # (U,) item index

    def subset(self, keep: np.ndarray) -> EvalCases:
        rows = np.flatnonzero(keep)
        return EvalCases(self.users[rows], [self.histories[r] for r in rows], self.targets[rows])


@dataclass
class Split:
    train: list[np.ndarray]      # training sequence per user (may be empty)
    val: EvalCases
    test: EvalCases
    cold_items: np.ndarray       # item indices hidden from training (empty without a cold-start split)


def cold_item_mask(item_ids: list[str], fraction: float, seed: int = 0) -> np.ndarray:
    """(n_items + 1,) bool: about `fraction` of the items, chosen by a hash of (seed, item id), so the same items
    are cold whatever the vocabulary's order or extra items (runs with and without features compare)."""
    cold = np.zeros(len(item_ids) + 1, dtype=bool)
    if fraction > 0:
        cold[1:] = [zlib.crc32(f"{seed}:{item}".encode()) < fraction * 2**32 for item in item_ids]
    return cold


def split_sequences(encoded: list[np.ndarray], cold: np.ndarray) -> Split:
    """Leave-one-out: train on s[:-2], validate on s[-2] given s[:-2], test on s[-1] given s[:-1].

    `cold` ((n_items + 1,) bool) items are removed from every sequence except as a user's last item, so they are
    never trained on and appear only as test targets (the cold-start test); all False for the plain split.
    Users with fewer than 3 items are used for training only.
    """
    train, val, test = [], ([], [], []), ([], [], [])
    for user, seq in enumerate(encoded):
        seq = np.concatenate([seq[:-1][~cold[seq[:-1]]], seq[-1:]])
        if len(seq) < 3:
            train.append(seq[~cold[seq]])
            continue
        train.append(seq[:-2])
        for cases, history, target in ((val, seq[:-2], seq[-2]), (test, seq[:-1], seq[-1])):
            cases[0].append(user)
            cases[1].append(history)
            cases[2].append(target)
    as_cases = lambda c: EvalCases(np.array(c[0], dtype=np.int64), c[1], np.array(c[2], dtype=np.int64))  # noqa: E731
    return Split(train, as_cases(val), as_cases(test), np.flatnonzero(cold))


def item_counts(train: list[np.ndarray], n_items: int) -> np.ndarray:
    """(n_items + 1,) interactions per item index in the training sequences; index 0 unused."""
    return np.bincount(np.concatenate(train + [np.zeros(0, np.int64)]), minlength=n_items + 1)


@dataclass
class Batch:
    tokens: torch.Tensor   # (B, L) item indices, [mask] tokens, 0 = padding (on the left)
    labels: torch.Tensor   # (B, L) item index to predict at each position, 0 = no loss there

    def to(self, device: torch.device) -> Batch:
        return Batch(self.tokens.to(device), self.labels.to(device))


def pad_left(rows: list[np.ndarray]) -> torch.Tensor:
    """(B, L) with each row right-aligned, so the last item of every row sits at the same position."""
    length = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        if len(r):
            out[i, length - len(r):] = r
    return torch.from_numpy(out)


def cloze_batch(seqs: list[np.ndarray], max_len: int, mask_token: int, mask_prob: float,
                last_item_fraction: float, rng: np.random.Generator) -> Batch:
    """BERT4Rec's Cloze task on the last `max_len` items: mask each item with `mask_prob` (at least one per row);
    a `last_item_fraction` of the rows mask only their last item, as at inference time."""
    tokens, labels = [], []
    for seq in seqs:
        seq = seq[-max_len:]
        if rng.random() < last_item_fraction:
            masked = np.zeros(len(seq), dtype=bool)
            masked[-1] = True
        else:
            masked = rng.random(len(seq)) < mask_prob
            if not masked.any():
                masked[rng.integers(len(seq))] = True
        tokens.append(np.where(masked, mask_token, seq))
        labels.append(np.where(masked, seq, PAD))
    return Batch(pad_left(tokens), pad_left(labels))


def next_item_batch(seqs: list[np.ndarray], max_len: int) -> Batch:
    """SASRec's objective: every position predicts the item after it (sequences need at least 2 items)."""
    return Batch(pad_left([s[:-1][-max_len:] for s in seqs]), pad_left([s[1:][-max_len:] for s in seqs]))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per batch, grouped by sequence length (shuffled within a length and across batches) so a
    batch pads to little more than its own longest row."""
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
