"""The heterogeneous product graph: products linked to their brand, category at each level, attribute values
and catalog group.

Nodes have a type and a local id within it; global ids put the types one after another (product first), so
the nodes of one type form a contiguous block. Each relation (source type, target type) is a CSR over local
ids, stored in both directions, which is all the vectorized meta-path walks need.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eclip.errors import EclipError
from eclip.files import is_utf8, read_parquet

CATEGORY_SEPARATOR = ">"
# Words that end a title's brand prefix: the Myntra-style "Brand [Line] Men ..." titles name the audience next.
AUDIENCE_WORDS = frozenset("men women man woman men's women's mens womens boy boys boy's girl girls girl's "
                           "kid kids kids-unisex unisex baby infant infants".split())
# A title prefix followed by this many different known brands is a seller tag ("[Free shipping]", "2024 NEW").
SELLER_TAG_MIN_BRANDS = 3


@dataclass
class Relation:
    indptr: np.ndarray   # (n_source + 1,) int64
    indices: np.ndarray  # (n_edges,) int64 local ids in the target type

    def degree(self, local: np.ndarray) -> np.ndarray:
        return self.indptr[local + 1] - self.indptr[local]


@dataclass
class HeteroGraph:
    names: dict[str, np.ndarray]                  # node type -> node names (object array) in local id order
    relations: dict[tuple[str, str], Relation]

    @property
    def types(self) -> list[str]:
        return list(self.names)

    @property
    def offsets(self) -> dict[str, int]:
        starts = np.concatenate([[0], np.cumsum([len(v) for v in self.names.values()])])
        return dict(zip(self.names, starts[:-1].tolist()))

    @property
    def num_nodes(self) -> int:
        return sum(len(v) for v in self.names.values())

    def node_type_ids(self) -> np.ndarray:
        """(N,) the index in `types` of every global node id."""
        return np.repeat(np.arange(len(self.names)), [len(v) for v in self.names.values()])

    def node_table(self) -> pa.Table:
        types = np.repeat(np.array(self.types, dtype=object), [len(v) for v in self.names.values()])
        names = np.concatenate([np.asarray(v, dtype=object) for v in self.names.values()])
        return pa.table({"node": pa.array(np.arange(len(names)), pa.int64()),
                         "type": pa.array(types, pa.string()), "name": pa.array(names, pa.string())})

    def summary(self) -> str:
        nodes = ", ".join(f"{t}={len(v)}" for t, v in self.names.items())
        edges = sum(len(r.indices) for (a, b), r in self.relations.items() if a < b)
        return f"{self.num_nodes} nodes ({nodes}), {edges} edges"

    @classmethod
    def from_edges(cls, names: dict[str, list[str] | np.ndarray],
                   edges: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> "HeteroGraph":
        """`edges[(a, b)] = (source local ids in a, target local ids in b)`; undirected, duplicates merged."""
        for node_type in names:
            if "-" in node_type or not node_type:
                raise EclipError(f"node type {node_type!r}: names must be non-empty and contain no '-' (meta-paths join them with '-')")
        relations = {}
        for (a, b), (source, target) in edges.items():
            if a not in names or b not in names:
                raise EclipError(f"edges ({a}, {b}) name a node type that has no nodes; types: {', '.join(names)}")
            if (b, a) in edges or a == b:
                raise EclipError(f"edges ({a}, {b}): give each relation once between two different types; both directions are stored")
            source, target = np.asarray(source, np.int64), np.asarray(target, np.int64)
            relations[(a, b)] = _csr(source, target, len(names[a]), len(names[b]))
            relations[(b, a)] = _csr(target, source, len(names[b]), len(names[a]))
        return cls({t: np.asarray(v, dtype=object) for t, v in names.items()}, relations)


def _csr(source: np.ndarray, target: np.ndarray, n_source: int, n_target: int) -> Relation:
    if len(source) and (source.min() < 0 or source.max() >= n_source or target.min() < 0 or target.max() >= n_target):
        raise EclipError("edge endpoints must be local ids within their node type")
    pairs = np.unique(np.stack([source, target], axis=1), axis=0) if len(source) else np.zeros((0, 2), np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n_source))]).astype(np.int64)
    return Relation(indptr, pairs[:, 1].astype(np.int64))


def _known_brands(words: list[list[str]], max_words: int, min_count: int) -> tuple[list[int | None], set[str]]:
    """Each title's audience-word position (or None) and the lines (lower-cased words before it) that start at
    least `min_count` titles."""
    stops = [next((i for i, word in enumerate(w[:max_words + 1]) if word.lower() in AUDIENCE_WORDS), None) for w in words]
    lines = [" ".join(w[:stop]).lower() for w, stop in zip(words, stops) if stop]
    return stops, {line for line, n in Counter(lines).items() if n >= min_count}


def _seller_tags(known: set[str]) -> set[str]:
    """Leading words that precede at least SELLER_TAG_MIN_BRANDS different known brands inside known lines:
    "[free shipping]" from "[free shipping] puma", "[free shipping] nike", "[free shipping] titan"."""
    followers: dict[str, set[str]] = {}
    for line in known:
        words = line.split()
        for cut in range(1, len(words)):
            rest = " ".join(words[cut:])
            if rest in known:
                followers.setdefault(" ".join(words[:cut]), set()).add(rest)
    return {prefix for prefix, brands in followers.items() if len(brands) >= SELLER_TAG_MIN_BRANDS}


def _strip_tags(words: list[str], tags: set[str], known: set[str], max_words: int) -> list[str]:
    """`words` without its leading seller tags; a tag goes only when a known brand or an audience word follows
    it, so "New Balance ..." keeps "New" even where "NEW" is a tag."""
    while True:
        lowered = [word.lower() for word in words[:2 * max_words]]
        for cut in range(min(max_words, len(words) - 1), 0, -1):  # the longest tag first
            rest = lowered[cut:]
            if " ".join(lowered[:cut]) in tags and (rest[0] in AUDIENCE_WORDS or any(
                    " ".join(rest[:k]) in known for k in range(1, max_words + 1))):
                words = words[cut:]
                break
        else:
            return words


def brands_from_titles(titles: list[str | None], max_words: int = 4, min_count: int = 2) -> list[str | None]:
    """The brand words at the start of each title, lower-cased.

    A title's *line* is its words before the first audience word ("Men", "Women", "Boys", ...), when that
    comes within the first `max_words + 1` words: "Turtle Check Men Navy Blue Shirt" -> "turtle check".
    Lines that start at least `min_count` titles are known brands. Seller tags in front of the brand
    ("[Free shipping] Puma Men ...", "2024 NEW Titan Women ...": words that precede several different known
    brands) are dropped first. A title's brand is the shortest known brand its words start with
    ("turtle check" -> "turtle" when "Turtle Men ..." titles exist; "united colors of benetton" stays whole),
    else its own line, else (no audience word) its first word. A title that starts with an audience word has
    no brand.
    """
    words = [(title or "").split() for title in titles]
    stops, known = _known_brands(words, max_words, min_count)
    tags = _seller_tags(known)
    if tags:
        words = [_strip_tags(w, tags, known, max_words) for w in words]
        stops, known = _known_brands(words, max_words, min_count)
    brands = []
    for w, stop in zip(words, stops):
        lowered = [word.lower() for word in w[:max_words if stop is None else stop]]
        prefixes = (" ".join(lowered[:k]) for k in range(1, len(lowered) + 1))
        own = " ".join(lowered) if stop else (lowered[0] if lowered else None)
        brands.append(next((p for p in prefixes if p in known), own))
    return brands


def _value_edges(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, product rows, value ids) for a nullable string column; blank values have no node."""
    values = pc.utf8_trim_whitespace(values.cast(pa.string()))
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    encoded = values.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(encoded.is_valid().to_numpy(zero_copy_only=False))
    return np.asarray(encoded.dictionary.to_pylist(), dtype=object), rows, codes[rows].astype(np.int64)


def category_levels(categories: pa.Array) -> list[pa.Array]:
    """The path "a > b > c" cut at each level: [a, "a > b", "a > b > c"]; null past a path's depth."""
    categories = pc.utf8_trim_whitespace(categories.cast(pa.string()))
    parts = pc.split_pattern(pc.fill_null(categories, ""), CATEGORY_SEPARATOR)
    parts = pa.ListArray.from_arrays(parts.offsets, pc.utf8_trim_whitespace(parts.flatten()))
    blank = pc.fill_null(pc.equal(categories, ""), True)
    depth = pc.if_else(blank, 0, pc.list_value_length(parts))
    levels = []
    for level in range(1, max(pc.max(depth).as_py() or 0, 0) + 1):
        joined = pc.binary_join(pc.list_slice(parts, 0, level), f" {CATEGORY_SEPARATOR} ")
        levels.append(pc.if_else(pc.less(depth, level), pa.scalar(None, pa.string()), joined))
    return levels


def build_product_graph(products: pa.Table, brand_max_words: int = 4, brand_min_count: int = 2) -> HeteroGraph:
    """Products (rows of a prepared products table, in order) and the nodes they link to.

    Node types: `product` (named by product_id), `brand` (the brand column, else the title's brand words, else none),
    `category1`, `category2`, ... (the category path cut at each level), one type per `attr_<name>` column
    named `<name>`, and `catalog` (non-null catalog_id).
    """
    if "product_id" not in products.column_names:
        raise EclipError(f"products table has no product_id column (columns: {', '.join(products.column_names)})")
    if products.num_rows == 0:
        raise EclipError("products table is empty: nothing to build a graph from")
    ids = products["product_id"].cast(pa.string()).to_pylist()
    rows = products["row"].to_pylist() if "row" in products.column_names else list(range(1, len(ids) + 1))
    first_row = {}
    for pid, row in zip(ids, rows):
        if pid is None or not pid.strip():
            raise EclipError(f"products row {row}: empty product_id; every product needs an id")
        if pid in first_row:
            raise EclipError(f"products rows {first_row[pid]} and {row}: duplicate product_id {pid!r}; deduplicate the catalogue (eclip prepare)")
        first_row[pid] = row

    columns: dict[str, pa.Array] = {}
    brand = products["brand"].combine_chunks() if "brand" in products.column_names else pa.nulls(len(ids), pa.string())
    # Without titles, a product without a brand value has no brand node, like a blank attribute: the graph serves
    # meta-paths that never go through brand all the same.
    if brand.null_count and "title" in products.column_names:
        from_titles = pa.array(brands_from_titles(products["title"].to_pylist(), brand_max_words, brand_min_count), pa.string())
        brand = pc.coalesce(brand.cast(pa.string()), from_titles)
    columns["brand"] = pc.utf8_lower(brand.cast(pa.string()))
    if "category" in products.column_names:
        for level, values in enumerate(category_levels(products["category"].combine_chunks()), start=1):
            columns[f"category{level}"] = values
    for name in products.column_names:
        if name.startswith("attr_"):
            node_type = name.removeprefix("attr_")
            if node_type in columns or node_type in ("product", "catalog"):
                raise EclipError(f"column {name}: attribute name {node_type!r} clashes with a built-in node type; rename the column")
            columns[node_type] = products[name].combine_chunks()
    if "catalog_id" in products.column_names:
        columns["catalog"] = products["catalog_id"].combine_chunks()

    names: dict[str, np.ndarray] = {"product": np.asarray(ids, dtype=object)}
    edges = {}
    for node_type, values in columns.items():
        value_names, product_rows, value_ids = _value_edges(values)
        if len(value_names):
            names[node_type] = value_names
            edges[("product", node_type)] = (product_rows, value_ids)
    return HeteroGraph.from_edges(names, edges)


def load_products(path: Path) -> pa.Table:
    """A prepared DATA_DIR (eclip.data.store), or one .csv/.parquet file with the same column names."""
    path = Path(path)
    if path.is_dir():
        from eclip.data.store import read_products
        return read_products(path)
    if not path.exists():
        raise EclipError(f"{path}: not found; give a prepared DATA_DIR (eclip prepare) or a .csv/.parquet products file")
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    raise EclipError(f"{path}: unknown products file type {path.suffix!r}; use a DATA_DIR, .csv or .parquet")


def _read_csv(path: Path) -> pa.Table:
    """A products CSV; a row with the wrong number of fields is refused with its line number."""
    import pyarrow.csv as pcsv

    bad_rows = []

    def refuse(row) -> str:
        bad_rows.append(row)
        return "error"

    convert = pcsv.ConvertOptions(column_types={"product_id": pa.string(), "catalog_id": pa.string()})
    try:
        # One thread: only then does Arrow know the line number of a bad row.
        table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False),
                              parse_options=pcsv.ParseOptions(invalid_row_handler=refuse), convert_options=convert)
    except pa.ArrowInvalid as error:
        if bad_rows:
            row = bad_rows[0]
            raise EclipError(f"{path}:{row.number}: {row.actual_columns} fields where the header has "
                             f"{row.expected_columns}; quote values that hold commas") from None
        if "Empty CSV" in str(error):
            raise EclipError(f"{path}: empty; expected a header row with product_id and a row per product") from None
        raise EclipError(f"{path}: cannot read the CSV ({error})") from None
    for column in table.schema:
        if pa.types.is_binary(column.type):  # what Arrow makes of a text column with bytes that are not UTF-8
            row = next(i for i, value in enumerate(table[column.name].to_pylist()) if not is_utf8(value))
            raise EclipError(f"{path}: products row {row + 1}: {column.name} is not UTF-8; save the file as UTF-8")
    return table
