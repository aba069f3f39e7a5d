"""Scores the duplicate decisions of a prepared `eclip offers` catalogue against the offers' ground truth.

The truth is each offer's source product (offers_truth.parquet): offers of one source are duplicates, offers of
two sources are not (fashion-dev itself holds some listings of two products with one title or photo, so a few
"false" links are real ones). Measures, from DATA_DIR's rejected.parquet and duplicate_groups.parquet:
- groups: duplicate groups, their size histogram, and pair precision/recall of "same group" against "same source";
- rejections: of the rows rejected as duplicates, the share rejected for an offer of their own source;
- kept offers per source: sources with one offer kept, with more (re-uploads a catalogue without catalog ids
  should not keep), with none; sources split between kept and duplicate-rejected offers, and among them those
  whose original (offer 0) was removed as a duplicate while a re-upload was kept.

Usage: .venv/bin/python bench/dedup_groups.py DATA_DIR OFFERS_DIR [--name NAME]  (prints one JSON line)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.data.store import read_products  # noqa: E402


def same_source_pairs(members: list[str], source: dict[str, str]) -> int:
    return sum(n * (n - 1) // 2 for n in Counter(source[m] for m in members).values())


def score_decisions(source: dict[str, str], originals: set[str], groups: dict[str, list[str]],
                    duplicates: list[tuple[str, str]], kept: list[str]) -> dict:
    """source: product_id -> source product; originals: the product_ids of offer 0; groups: group_id ->
    product_ids; duplicates: (product_id, duplicate_of) of the rows rejected as duplicates; kept: the accepted
    product_ids."""
    grouped_pairs = sum(len(m) * (len(m) - 1) // 2 for m in groups.values())
    true_grouped = sum(same_source_pairs(m, source) for m in groups.values())
    true_pairs = same_source_pairs(list(source), source)
    own_source = sum(source[row] == source[of] for row, of in duplicates)
    kept_per_source = Counter(source[p] for p in kept)
    sources = set(source.values())
    return {
        "accepted": len(kept), "duplicate_groups": len(groups),
        "group_pairs": grouped_pairs, "group_pair_precision": round(true_grouped / max(1, grouped_pairs), 4),
        "group_pair_recall": round(true_grouped / max(1, true_pairs), 4),
        "duplicate_rejections": len(duplicates), "rejected_for_own_source": round(own_source / max(1, len(duplicates)), 4),
        "sources": len(sources), "sources_kept_once": sum(n == 1 for n in kept_per_source.values()),
        "extra_kept_offers": sum(n - 1 for n in kept_per_source.values()),
        "sources_with_none_kept": len(sources) - len(kept_per_source),
        "sources_split_kept_and_duplicate": len({source[row] for row, _ in duplicates} & set(kept_per_source)),
        # the case: the original listing removed as another's duplicate, a re-upload of it kept
        "reupload_kept_of_removed_original": len({source[row] for row, _ in duplicates if row in originals}
                                                 & set(kept_per_source)),
    }


def score(data_dir: Path, offers_dir: Path) -> dict:
    truth = pq.read_table(offers_dir / "offers_truth.parquet").to_pylist()
    source = {t["product_id"]: t["source_product_id"] for t in truth}
    originals = {t["product_id"] for t in truth if t["offer_index"] == 0}
    report = json.loads((data_dir / "report.json").read_text())
    groups: dict[str, list[str]] = {}
    for g in pq.read_table(data_dir / "duplicate_groups.parquet").to_pylist():
        groups.setdefault(g["group_id"], []).append(g["product_id"])
    duplicates = [(r["product_id"], r["detail"].removeprefix("duplicate_of="))
                  for r in pq.read_table(data_dir / "rejected.parquet").to_pylist()
                  if r["reason"].startswith("duplicate_") and r["reason"] != "duplicate_product_id"]
    kept = read_products(data_dir, columns=["product_id"]).column("product_id").to_pylist()
    return {"rejected": report["rejected"],
            "group_sizes": dict(sorted(Counter(len(m) for m in groups.values()).items())),
            "duplicate_group_sizes": report.get("duplicate_group_sizes"),
            "keep_first_duplicate_groups": report.get("keep_first_duplicate_groups"),
            **score_decisions(source, originals, groups, duplicates, kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("offers_dir", type=Path)
    parser.add_argument("--name", default=None, help="a label printed with the scores")
    args = parser.parse_args()
    print(json.dumps({"name": args.name or str(args.data_dir), **score(args.data_dir, args.offers_dir)}))


if __name__ == "__main__":
    main()
