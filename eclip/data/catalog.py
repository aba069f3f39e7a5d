"""Reading a catalogue in any column layout as a stream of Arrow record batches in the canonical layout.

Canonical columns: `row` (1-based data row), `product_id`, `title`, `image` (path relative to the catalogue's
folder; null where the images are bytes and no path column is mapped), and where present `image_bytes` (the
encoded image itself, from a Parquet binary column), `category`, `catalog_id`, `brand`, `price`, `description`,
`adult`, `flagged`, `attr_<name>`. Everything is read as text (but `adult`, a nullable bool, and `image_bytes`): a
catalogue's types are its seller's guess, checked later. Ids lose surrounding spaces, so ' p1' and 'p1' are one id.
"""

from __future__ import annotations

import csv
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.files import is_utf8

REQUIRED = ("product_id", "title", "image")
# image_bytes: a row's image is these bytes rather than the file `image` names (a Parquet binary column only)
IMAGE_BYTES = "image_bytes"
OPTIONAL = ("category", "catalog_id", "brand", "price", "description", "adult", "flagged", IMAGE_BYTES)
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
TRUE_TEXTS = ("1", "true", "t", "yes", "y")  # case-blind, around spaces
FALSE_TEXTS = ("0", "false", "f", "no", "n", "")


@dataclass
class ColumnMapping:
    """Where each canonical field comes from in the catalogue's own layout."""

    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    image_template: str | None = None  # e.g. "images/{id}.jpg", filled from source columns
    category_columns: tuple[str, ...] = ()  # joined as "a > b > c"
    attribute_columns: tuple[str, ...] = ()  # extra source columns read as attr_<column>

    def __post_init__(self):
        if self.image_template is not None:
            self._check_template()

    def _check_template(self) -> None:
        """A one-line EclipError for a template that no row could fill: the format syntax is Python's."""
        problem = f"--image-template {self.image_template!r}"
        invalid = lambda error: EclipError(
            f"{problem} is not a valid template ({type(error).__name__}: {error}); write columns as {{column}}, "
            "e.g. 'images/{id}.jpg', and a literal brace as {{ or }}")
        try:
            fields = self.template_fields()
        except ValueError as error:  # an unclosed or unopened brace
            raise invalid(error) from None
        for name in fields:  # format would read an attribute or an item of the column's text
            if "." in name or "[" in name:
                raise EclipError(f"{problem}: {{{name}}} is not a column; '.' and '[' are format syntax, so name "
                                 "whole columns, e.g. 'images/{id}.jpg'")
        if not fields:
            raise EclipError(f"{problem} names no column, so every product would get the same image; "
                             "write the column that differs as {column}, e.g. 'images/{id}.jpg'")
        try:  # a dry run with a stand-in value per column: positional {} or {0}, format specs strings lack
            self.image_template.format(**{name: "x" for name in fields})
        except (ValueError, KeyError, IndexError) as error:
            raise invalid(error) from None

    @classmethod
    def from_cli(cls, pairs, image_template=None, category_columns=None, attribute_columns=None) -> "ColumnMapping":
        known = set(REQUIRED) | set(OPTIONAL)
        columns = {}
        for key, value in pairs:
            if key not in known and not key.startswith("attr_"):
                raise EclipError(f"--map {key}={value}: unknown field {key!r}; fields are {', '.join(sorted(known))} and attr_<name>")
            columns[key] = value
        split = lambda text: tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()
        return cls(columns, image_template, split(category_columns), split(attribute_columns))

    def template_fields(self) -> list[str]:
        if not self.image_template:
            return []
        return [name for _, name, _, _ in string.Formatter().parse(self.image_template) if name]

    def resolve(self, found: list[str], source: Path) -> dict[str, str]:
        """canonical field -> source column for this file; a clear error if something required is missing."""
        resolved = {name: name for name in (*REQUIRED, *OPTIONAL) if name in found}
        resolved.update({name: name for name in found if name.startswith("attr_")})
        resolved.update(self.columns)
        resolved.update({f"attr_{name}": name for name in self.attribute_columns})
        if self.image_template:
            resolved.pop("image", None)
        if self.category_columns:
            resolved.pop("category", None)
        missing_sources = [c for c in self.source_columns(resolved) if c not in found]
        has_image = self.image_template or IMAGE_BYTES in resolved
        missing_fields = [f for f in REQUIRED if f not in resolved and not (f == "image" and has_image)]
        if missing_fields or missing_sources:
            what = ", ".join([f"field {f}" for f in missing_fields] + [f"column {c}" for c in missing_sources])
            raise EclipError(f"{source}: missing {what}; columns found: {', '.join(found)}. "
                             f"Map them with --map FIELD=COLUMN (images inside a Parquet table: --map "
                             f"image_bytes=COLUMN), --image-template or --category-columns")
        return resolved

    def source_columns(self, resolved: dict[str, str]) -> list[str]:
        """The catalogue's columns that `resolved` (from `resolve`) and this mapping read, each once, in order."""
        return list(dict.fromkeys([*resolved.values(), *self.template_fields(), *self.category_columns]))


def check_distinct_columns(path: Path, header: list[str]) -> None:
    """EclipError naming a column that appears twice: readers keep one copy and drop the other quietly."""
    for position, name in enumerate(header):
        if name in header[:position]:
            raise EclipError(f"{path}: column {name!r} appears twice in the header (columns {header.index(name) + 1} "
                             f"and {position + 1}); rename or remove one of them")


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EclipError(f"{path}: unknown catalogue format {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    return fmt


def bad_utf8_line(path: Path) -> int | None:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


RawReader = Callable[[list[str], str | None], Iterator[pa.RecordBatch]]


def _raw_batches(path: Path, fmt: str, batch_rows: int) -> tuple[list[str], RawReader]:
    """The file's own column names, and a reader of the given columns' rows as string record batches, but for the
    image-bytes column (Parquet only), kept as binary: columns the mapping does not use are never read (nor
    converted, whatever their type)."""
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        try:  # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark, which Arrow skips too
            with open(path, "rb") as handle:
                header_line = handle.readline().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise EclipError(f"{path}: line 1 is not valid UTF-8; re-encode the file as UTF-8") from None
        header = next(csv.reader([header_line.rstrip("\r\n")], delimiter=delimiter), []) if header_line.strip() else []
        if not header:
            raise EclipError(f"{path}: the file is empty; a catalogue needs a header row and at least one product")
        def csv_error(error: pa.ArrowInvalid) -> EclipError:
            if "UTF8" in str(error):
                return EclipError(f"{path}: line {bad_utf8_line(path)} is not valid UTF-8; re-encode the file as UTF-8")
            return EclipError(f"{path}: cannot parse the CSV: {error}")

        def read_csv(columns: list[str], image_bytes: str | None) -> Iterator[pa.RecordBatch]:
            try:  # the first block is parsed on open, so an error there is raised before any row is checked
                reader = pacsv.open_csv(
                    path, read_options=pacsv.ReadOptions(block_size=1 << 22),
                    parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in columns},
                                                         include_columns=columns, strings_can_be_null=False))
            except pa.ArrowInvalid as error:
                raise csv_error(error) from None

            def batches():
                try:
                    for batch in reader:
                        yield from (batch.slice(i, batch_rows) for i in range(0, batch.num_rows, batch_rows))
                except pa.ArrowInvalid as error:
                    raise csv_error(error) from None

            return batches()

        return header, read_csv
    if fmt == "parquet":
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:
            raise EclipError(f"{path}: not a readable Parquet file ({error})") from None
        header = parquet.schema_arrow.names

        def read_parquet(columns: list[str], image_bytes: str | None) -> Iterator[pa.RecordBatch]:
            if image_bytes is not None:
                kind = parquet.schema_arrow.field(image_bytes).type
                if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
                    raise EclipError(f"{path}: column {image_bytes!r} (--map image_bytes) is {kind}, not binary; "
                                     "map the column that holds the encoded image files (JPEG, PNG, WebP bytes)")

            def batches():
                first_row = 1
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                    yield pa.RecordBatch.from_arrays(
                        [c.cast(pa.binary()) if name == image_bytes else _as_strings(c, name, first_row, path)
                         for c, name in zip(batch.columns, batch.schema.names)], names=batch.schema.names)
                    first_row += batch.num_rows

            return batches()

        return header, read_parquet
    return _jsonl_batches(path, batch_rows)


def _as_strings(column: pa.Array, name: str, first_row: int, path: Path) -> pa.Array:
    """A typed Parquet column as text, written the way a JSONL catalogue's values are (`_records_to_batch`)."""
    kind = column.type
    if pa.types.is_boolean(kind) or pa.types.is_nested(kind):
        return pa.array([_text(v) for v in column.to_pylist()], pa.string())
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:  # binary that is not UTF-8 text
        values = column.to_pylist()
        bad = next(k for k, v in enumerate(values) if not is_utf8(v))
        raise EclipError(f"{path}: column {name!r}, row {first_row + bad} is not UTF-8 text; map a text column "
                         f"there or re-encode it") from None
    except pa.ArrowNotImplementedError:  # types Arrow has no text form for (durations, extension types)
        return pa.array([_text(v) for v in column.to_pylist()], pa.string())


def _jsonl_batches(path: Path, batch_rows: int) -> tuple[list[str], RawReader]:
    def records():
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:  # a byte-order mark may start the file, as in CSV
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
                except UnicodeDecodeError:
                    raise EclipError(f"{path}: line {number} is not valid UTF-8; re-encode the file as UTF-8") from None
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise EclipError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise EclipError(f"{path}: line {number} is not a JSON object")
                yield record

    # Lines need not share keys: the columns are every key of every line, in order of first appearance, which
    # takes a first pass over the file (it also finds a bad line before any row is checked).
    header = list(dict.fromkeys(key for record in records() for key in record))

    def read_jsonl(columns: list[str], image_bytes: str | None) -> Iterator[pa.RecordBatch]:
        pending = []
        for record in records():
            pending.append(record)
            if len(pending) == batch_rows:
                yield _records_to_batch(pending, columns)
                pending = []
        if pending:
            yield _records_to_batch(pending, columns)

    return header, read_jsonl


def _text(value) -> str | None:
    """A JSON or Parquet value as catalogue text: flags as 1/0, lists and objects as JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value if isinstance(value, str) else str(value)


def _records_to_batch(records: list[dict], columns: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({name: [_text(r.get(name)) for r in records] for name in columns})


def flag_value(value: str | None) -> bool | None:
    """A yes/no cell as a bool (a blank cell is no), or None when it is neither."""
    text = (value or "").strip().lower()
    return True if text in TRUE_TEXTS else False if text in FALSE_TEXTS else None


def _blank_to_null(values: pa.Array) -> pa.Array:
    """An empty or all-space cell means 'not given', whatever the file format wrote for it."""
    blank = pc.equal(pc.utf8_trim_whitespace(values), "")
    return pc.if_else(blank, pa.scalar(None, pa.string()), values)


def canonical_batch(raw: pa.RecordBatch, resolved: dict[str, str], mapping: ColumnMapping,
                    first_row: int) -> pa.RecordBatch:
    """The canonical batch of `raw` (the source columns `open_catalog` reads, as text), its rows numbered from
    `first_row`: the one column mapping, whichever engine reads the file."""
    data: dict[str, pa.Array] = {"row": pa.array(range(first_row, first_row + raw.num_rows), pa.int64())}
    column = lambda name: raw.column(raw.schema.get_field_index(name))
    for name, source in resolved.items():
        data[name] = column(source) if name == IMAGE_BYTES else _blank_to_null(column(source))
    for name in ("product_id", "catalog_id"):  # the duplicate checks must see ' p1' and 'p1' as one id
        if name in data:
            data[name] = pc.utf8_trim_whitespace(data[name])
    if mapping.image_template:
        rows = raw.select(mapping.template_fields()).to_pylist()
        data["image"] = pa.array([mapping.image_template.format(**{k: (v or "") for k, v in r.items()}) for r in rows], pa.string())
    elif "image" not in resolved:  # the images are bytes: no path to record
        data["image"] = pa.nulls(raw.num_rows, pa.string())
    if mapping.category_columns:
        parts = [column(c).to_pylist() for c in mapping.category_columns]
        data["category"] = pa.array([" > ".join(p.strip() for p in path if p and p.strip()) or None for path in zip(*parts)], pa.string())
    if "adult" in data:
        data["adult"] = pa.array([flag_value(v) for v in data["adult"].to_pylist()], pa.bool_())
    return pa.RecordBatch.from_pydict(data, schema=canonical_schema(resolved, mapping))


def canonical_schema(resolved: dict[str, str], mapping: ColumnMapping) -> pa.Schema:
    """The columns `canonical_batch` gives for this resolved mapping, in its order."""
    names = ["row", *resolved]
    names += ["image"] * (bool(mapping.image_template) or "image" not in resolved)
    names += ["category"] * bool(mapping.category_columns)
    kind = {"row": pa.int64(), "adult": pa.bool_(), IMAGE_BYTES: pa.binary()}
    return pa.schema([(name, kind.get(name, pa.string())) for name in names])


def open_catalog(path: Path, mapping: ColumnMapping | None = None,
                 batch_rows: int = 256) -> tuple[dict[str, str], Iterator[pa.RecordBatch]]:
    """The resolved mapping (canonical field -> source column) of one catalogue file and a stream of its source
    columns as text batches; raises EclipError on unusable input before yielding."""
    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such catalogue file")
    mapping = mapping or ColumnMapping()
    try:
        header, read = _raw_batches(path, detect_format(path), batch_rows)
    except OSError as error:  # no permission, an I/O error: the reader's own exception would be a traceback
        raise EclipError(f"{path}: cannot read the catalogue ({error.strerror or error}); check that the file "
                         "is readable") from None
    if not header:
        raise EclipError(f"{path}: the catalogue is empty; it needs at least one product")
    check_distinct_columns(path, header)
    resolved = mapping.resolve(header, path)
    image_bytes = resolved.get(IMAGE_BYTES)
    if image_bytes is not None and detect_format(path) != "parquet":
        raise EclipError(f"{path}: images as bytes (--map image_bytes={image_bytes}) are read from a Parquet binary "
                         "column only; this file holds text: give image paths (--map image=COLUMN) or write the "
                         "catalogue as Parquet")
    raw = read(mapping.source_columns(resolved), image_bytes)
    return resolved, (batch for batch in raw if batch.num_rows)


def read_catalog(path: Path, mapping: ColumnMapping | None = None, batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
    """Stream the catalogue as canonical record batches; raises EclipError on unusable input before yielding."""
    mapping = mapping or ColumnMapping()
    resolved, raw = open_catalog(path, mapping, batch_rows)

    def stream():
        first_row = 1
        for batch in raw:
            yield canonical_batch(batch, resolved, mapping, first_row)
            first_row += batch.num_rows

    return stream()
