"""JSON-lines logs (metrics.jsonl, history.jsonl): one record a line, appended as a run goes."""

from __future__ import annotations

import json
from pathlib import Path

from eclip.runs.atomic import write_text


def read_jsonl(path: Path) -> list[dict]:
    """The records of `path` (none when it is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(record) + "\n")


def rewrite_jsonl(path: Path, records: list[dict]) -> None:
    """Replace the log with `records` (e.g. a resumed run drops what came after its checkpoint)."""
    write_text(Path(path), "".join(json.dumps(record) + "\n" for record in records))
