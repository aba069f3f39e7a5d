"""The served products: an EMB_DIR's vectors and FAISS index, plus the products added and removed while serving.

Updates are operations, `add` (an upsert) and `remove`, made durable in EMB_DIR/serving/ before they are
acknowledged:
    journal.jsonl      one JSON line per operation, appended under an exclusive file lock and fsynced
    snapshot.parquet   the operations folded in by `compact()` (a durable atomic write), after which the
                       journal is truncated. Replaying an operation twice gives the same state, so a crash between
                       the replace and the truncation loses nothing.
Worker processes share the journal: each reads the lines the others appended before it answers (`sync`).
EMB_DIR's own index and vectors are memory-mapped read-only (every worker shares one copy in the page cache);
added products go into a small exact index of their own, searched beside it. Removed rows stay in the indexes
and are masked out of every search with a bitmap selector.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.index import EMBEDDINGS_FILE, SERVING_DIR, VIEWS
from eclip.index.build import load_vectors
from eclip.index.faiss_index import load_index, search as search_index
from eclip.index.vectors import PartRows, read_embeddings
from eclip.runs.atomic import atomic_write

JOURNAL_FILE = "journal.jsonl"
SNAPSHOT_FILE = "snapshot.parquet"
OPERATIONS = ("add", "remove")


@dataclass
class Operation:
    op: str  # "add" or "remove"
    product_id: str
    title: str | None = None
    category: str | None = None
    vectors: dict[str, np.ndarray] | None = None  # view -> (D,) float32 unit vector
    thumbnail: bytes | None = None  # JPEG

    def to_json(self) -> str:
        record = {"op": self.op, "product_id": self.product_id}
        if self.op == "add":
            # float32 -> Python float -> float32 is exact, so a replayed vector equals the acknowledged one.
            record.update(title=self.title, category=self.category,
                          vectors={view: vector.tolist() for view, vector in self.vectors.items()},
                          thumbnail=base64.b64encode(self.thumbnail).decode() if self.thumbnail else None)
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Operation:
        record = json.loads(line)
        vectors = {view: np.asarray(v, np.float32) for view, v in (record.get("vectors") or {}).items()} or None
        thumbnail = base64.b64decode(record["thumbnail"]) if record.get("thumbnail") else None
        return cls(record["op"], record["product_id"], record.get("title"), record.get("category"), vectors, thumbnail)


class _Rows:
    """One view's vectors by row: EMB_DIR's rows (a memory map, or lookups in the parts), then the rows added
    while serving, in a matrix that grows by doubling its capacity."""

    def __init__(self, base, dim: int):
        self.base, self.base_count = base, len(base)
        self._added, self._count = np.zeros((0, dim), np.float32), 0

    def append(self, vector: np.ndarray) -> None:
        if self._count == len(self._added):
            grown = np.zeros((max(16, 2 * len(self._added)), self._added.shape[1]), np.float32)
            grown[:self._count] = self._added[:self._count]
            self._added = grown
        self._added[self._count] = vector
        self._count += 1

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        return np.asarray(self.base[row], np.float32) if row < self.base_count else self._added[row - self.base_count]


class ProductIndex:
    """Search, add and remove products of EMB_DIR; thread-safe (one re-entrant lock around the index and the journal
offset), shared by processes through the journal. `read_only` (`eclip search`): search with the served updates
applied, creating nothing in EMB_DIR and keeping no vectors beside the FAISS index's."""

    def __init__(self, emb_dir: str | Path, read_only: bool = False):
        import faiss

        self.emb_dir = Path(emb_dir)
        self.read_only = read_only
        table, _ = read_embeddings(self.emb_dir, columns=["product_id", "title", "category"])
        self.faiss_index, self.description = load_index(self.emb_dir)
        self.view = self.description.get("vectors", "fused")
        self.exact = load_vectors(self.emb_dir)  # (N, D) memory map of the indexed view
        if not self.faiss_index.ntotal == len(self.exact) == table.num_rows:
            raise EclipError(f"{self.emb_dir}: index.faiss holds {self.faiss_index.ntotal} vectors, vectors.npy "
                             f"{len(self.exact)} and embeddings.parquet {table.num_rows} rows; rebuild it with "
                             "`eclip embed ... --force`")
        self._faiss = faiss
        self.dim = self.description["dim"]
        self.added_index = faiss.IndexFlatIP(self.dim)  # products added while serving, rows from base_count on
        self.ids: list[str] = table.column("product_id").to_pylist()
        self.titles: list[str] = table.column("title").to_pylist()
        self._category_names: list[str | None] = []
        self._category_code: dict[str | None, int] = {}
        self._codes = np.array([self._code(c) for c in table.column("category").to_pylist()], np.int32)
        self.vectors = {} if read_only else {
            view: _Rows(self.exact if view == self.view else PartRows(self.emb_dir / EMBEDDINGS_FILE, view), self.dim)
            for view in VIEWS}
        self.live = np.ones(len(self.ids), bool)
        self.row_of: dict[str, int] = {}
        for row, product_id in enumerate(self.ids):
            if product_id in self.row_of:  # the later row of a repeated id wins, as an upsert would
                self.live[self.row_of[product_id]] = False
            self.row_of[product_id] = row
        self.base_count = len(self.ids)
        self.added_thumbnails: dict[str, bytes] = {}
        self.version = 0
        self._masks: dict[str | None, tuple] = {}
        self._categories: tuple[int, list[str]] = (-1, [])
        self._lock = threading.RLock()
        self.state_dir = self.emb_dir / SERVING_DIR
        self.journal_path = self.state_dir / JOURNAL_FILE
        if not read_only:
            self.state_dir.mkdir(exist_ok=True)
            self.journal_path.touch()
        self._journal_offset = 0
        snapshot = self.state_dir / SNAPSHOT_FILE
        if snapshot.is_file():
            for operation in _read_snapshot(snapshot):
                self._apply(operation)
        self.sync()

    # ------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.row_of)

    def product(self, product_id: str) -> dict | None:
        row = self.row_of.get(product_id)
        if row is None:
            return None
        return {"product_id": product_id, "title": self.titles[row], "category": self.category(row), "row": row}

    def category(self, row: int) -> str | None:
        return self._category_names[self._codes[row]]

    def categories(self) -> list[str]:
        """Every category path of a live product and all its prefixes, sorted."""
        if self._categories[0] != self.version:
            self._categories = (self.version, self._category_paths())
        return self._categories[1]

    def _category_paths(self) -> list[str]:
        names = {self._category_names[code] for code in np.unique(self._codes[self.live])}
        paths = set()
        for name in names - {None}:
            parts = name.split(" > ")
            paths.update(" > ".join(parts[:i]) for i in range(1, len(parts) + 1))
        return sorted(paths)

    def search(self, queries: np.ndarray, k: int, category: str | None = None) -> list[list[tuple[int, float]]]:
        """(Q, D) unit queries -> per query up to k (row, score), best first, over live products in `category`
        (a path or a prefix of one, e.g. "Apparel" or "Apparel > Topwear")."""
        with self._lock:
            base_selector, added_selector = self._selector(category)
            if base_selector is False and added_selector is False:
                return [[] for _ in queries]
            k = max(1, min(k, len(self.row_of)))
            queries = np.ascontiguousarray(queries, np.float32)  # (Q, D)
            found = [[] for _ in queries]
            if base_selector is not False:
                scores, rows = search_index(self.faiss_index, self.description, queries, k, base_selector, self.exact)
                found = [[(int(r), float(s)) for s, r in zip(*pair) if r >= 0] for pair in zip(scores, rows)]
            if added_selector is not False and self.added_index.ntotal:
                scores, rows = search_index(self.added_index, {"type": "flat"}, queries, k, added_selector)
                for hits, score_row, row_row in zip(found, scores, rows):
                    hits += [(int(r) + self.base_count, float(s)) for s, r in zip(score_row, row_row) if r >= 0]
                    hits.sort(key=lambda hit: -hit[1])
                    del hits[k:]
        return found

    # ------------------------------------------------------------ updates
    def append(self, operations: list[Operation]) -> None:
        """Make `operations` durable (journal + fsync), then apply them; returns once they survive a crash."""
        self._check_writable()
        for operation in operations:
            _check(operation, self.dim)
        with self._lock, open(self.journal_path, "a+b") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            try:
                self._read_journal(journal)  # other workers' lines come first, in journal order
                journal.seek(0, os.SEEK_END)
                journal.write("".join(op.to_json() + "\n" for op in operations).encode())
                journal.flush()
                os.fsync(journal.fileno())
                self._read_journal(journal)
            finally:
                fcntl.flock(journal, fcntl.LOCK_UN)

    def sync(self) -> None:
        """Apply the lines other processes appended to the journal since the last call (a stat when none)."""
        if not self.journal_path.is_file() or self.journal_path.stat().st_size == self._journal_offset:
            return
        with self._lock, open(self.journal_path, "rb") as journal:
            fcntl.flock(journal, fcntl.LOCK_SH)
            try:
                self._read_journal(journal)
            finally:
                fcntl.flock(journal, fcntl.LOCK_UN)

    def compact(self) -> int:
        """Fold the journal into snapshot.parquet and truncate it -> operations in the snapshot. Run it while no
        other process serves this EMB_DIR (`eclip serve` does, before its workers start)."""
        self._check_writable()
        with open(self.journal_path, "a+b") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            try:
                self._read_journal(journal)
                with self._lock:
                    operations = [Operation("remove", product_id) for product_id in self.ids[:self.base_count]
                                  if product_id not in self.row_of]
                    operations += [self._add_operation(product_id, row) for product_id, row in self.row_of.items()
                                   if row >= self.base_count]
                _write_snapshot(self.state_dir / SNAPSHOT_FILE, operations, self.dim)
                journal.truncate(0)
                os.fsync(journal.fileno())
                self._journal_offset = 0
            finally:
                fcntl.flock(journal, fcntl.LOCK_UN)
        return len(operations)

    # ------------------------------------------------------------ internals
    def _check_writable(self) -> None:
        if self.read_only:  # it keeps no vectors: a snapshot written from it would lose those of added products
            raise EclipError(f"{self.emb_dir} was opened read-only: open it with ProductIndex(emb_dir) to update it")

    def _code(self, category: str | None) -> int:
        if category not in self._category_code:
            self._category_code[category] = len(self._category_names)
            self._category_names.append(category)
        return self._category_code[category]

    def _read_journal(self, journal) -> None:
        journal.seek(self._journal_offset)
        data = journal.read()
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written by another process waits
        for number, line in enumerate(complete.decode().splitlines(), 1):
            try:
                operation = Operation.from_json(line)
                _check(operation, self.dim)
            except (ValueError, KeyError, TypeError, EclipError) as error:
                raise EclipError(f"{self.journal_path}: unreadable entry after byte {self._journal_offset} "
                                 f"(line {number} of the new ones): {error}; move the file away to serve without it")
            self._apply(operation)
        self._journal_offset += len(complete)

    def _apply(self, operation: Operation) -> None:
        with self._lock:
            old = self.row_of.pop(operation.product_id, None)
            if old is not None:
                self.live[old] = False
            self.added_thumbnails.pop(operation.product_id, None)
            if operation.op == "add":
                row = len(self.ids)
                self.ids.append(operation.product_id)
                self.titles.append(operation.title or "")
                self._codes = np.append(self._codes, np.int32(self._code(operation.category)))
                for view, rows in self.vectors.items():
                    rows.append(operation.vectors[view])
                self.live = np.append(self.live, True)
                self.added_index.add(operation.vectors[self.view][None].astype(np.float32))
                self.row_of[operation.product_id] = row
                if operation.thumbnail:
                    self.added_thumbnails[operation.product_id] = operation.thumbnail
            self.version += 1
            self._masks.clear()

    def _add_operation(self, product_id: str, row: int) -> Operation:
        return Operation("add", product_id, self.titles[row], self.category(row),
                         {view: rows[row] for view, rows in self.vectors.items()},
                         self.added_thumbnails.get(product_id))

    def _selector(self, category: str | None):
        """(for EMB_DIR's index, for the added products' index), each None (every row qualifies), False (none
        does) or a FAISS bitmap selector over that index's own rows; cached until the next update."""
        if category not in self._masks:
            allowed = self.live.copy()
            if category is not None:
                codes = [code for code, name in enumerate(self._category_names)
                         if name is not None and (name == category or name.startswith(category + " > "))]
                allowed &= np.isin(self._codes, codes)
            self._masks[category] = (self._bitmap(allowed[:self.base_count]), self._bitmap(allowed[self.base_count:]))
            if len(self._masks) > 256:
                self._masks.pop(next(iter(self._masks)))
        base, added = self._masks[category]
        return base[0], added[0]

    def _bitmap(self, allowed: np.ndarray) -> tuple:
        """-> (selector, the bitmap it points into, kept beside it)."""
        if allowed.all():
            return None, None
        if not allowed.any():
            return False, None
        bitmap = np.packbits(allowed, bitorder="little")
        return self._faiss.IDSelectorBitmap(len(allowed), self._faiss.swig_ptr(bitmap)), bitmap



def holds_served_updates(emb_dir: Path) -> bool:
    """Whether EMB_DIR/serving holds operations (journal lines or snapshot rows); an unreadable snapshot counts."""
    state = Path(emb_dir) / SERVING_DIR
    journal, snapshot = state / JOURNAL_FILE, state / SNAPSHOT_FILE
    if journal.is_file() and journal.stat().st_size > 0:
        return True
    try:
        return snapshot.is_file() and pq.read_metadata(snapshot).num_rows > 0
    except (OSError, pa.ArrowException):
        return True


def _check(operation: Operation, dim: int) -> None:
    if operation.op not in OPERATIONS:
        raise EclipError(f"unknown operation {operation.op!r}")
    if not isinstance(operation.product_id, str) or not operation.product_id:
        raise EclipError("an operation without a product_id")
    if operation.op == "add":
        if not operation.vectors or set(operation.vectors) != set(VIEWS):
            raise EclipError(f"product {operation.product_id}: an add needs the vectors {', '.join(VIEWS)}")
        for view, vector in operation.vectors.items():
            if vector.shape != (dim,) or not np.isfinite(vector).all():
                raise EclipError(f"product {operation.product_id}: the {view} vector is not {dim} finite numbers")


def _write_snapshot(path: Path, operations: list[Operation], dim: int) -> None:
    adds = [op.vectors is not None for op in operations]

    def vectors(view: str) -> pa.Array:
        flat = np.concatenate([op.vectors[view] if op.vectors else np.zeros(dim, np.float32) for op in operations]) \
            if operations else np.zeros(0, np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim, mask=pa.array([not a for a in adds], pa.bool_()))

    table = pa.table({"op": [op.op for op in operations], "product_id": [op.product_id for op in operations],
                      "title": pa.array([op.title for op in operations], pa.string()),
                      "category": pa.array([op.category for op in operations], pa.string()),
                      **{view: vectors(view) for view in VIEWS},
                      "thumbnail": pa.array([op.thumbnail for op in operations], pa.binary())})
    atomic_write(path, lambda temporary: pq.write_table(table, temporary), durable=True)


def _read_snapshot(path: Path) -> list[Operation]:
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in ("op", "product_id", "title", "category", "thumbnail")}
    vectors = {view: table.column(view).to_pylist() for view in VIEWS}
    return [Operation(columns["op"][i], columns["product_id"][i], columns["title"][i], columns["category"][i],
                      {view: np.asarray(vectors[view][i], np.float32) for view in VIEWS}
                      if columns["op"][i] == "add" else None, columns["thumbnail"][i])
            for i in range(table.num_rows)]
