"""`eclip embed`'s index settings (flags generated from the fields) and the rule that fills the ones left at 0 from
the catalogue's size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from eclip.config import option, require, to_dict
from eclip.index import VIEWS

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
EXACT_INDEX_LIMIT = 200_000  # above this many vectors "auto" builds an IVF-PQ index
MAX_AUTO_NLIST = 4096  # k-means over more lists costs more than a few cores give at build time
TRAIN_POINTS_PER_LIST = 40  # FAISS warns below 39 training points per list
MIN_TRAIN_SAMPLE = 65_536  # the product quantizer's 256 centroids per sub-space want this many


@dataclass
class IndexConfig:
    LABEL: ClassVar[str] = "index"
    index: str = option("auto", "FAISS index: flat (exact), ivf (inverted lists), hnsw (graph), ivfpq (inverted "
                                "lists of product-quantized codes, exactly re-ranked; for large catalogues); auto = "
                                f"flat up to {EXACT_INDEX_LIMIT:,} products, else ivfpq", choices=INDEX_KINDS)
    index_vectors: str = option("fused", "which vectors the index holds", choices=VIEWS)
    nlist: int = option(0, "ivf/ivfpq: inverted lists; 0 = 4 sqrt(N) as a power of two, at most "
                           f"{MAX_AUTO_NLIST}", low=0)
    # nlist / 16: re-ranked recall@10 0.973 at 1M (0.86 at nlist / 64), 6 ms a query (2026-12-08 page)
    nprobe: int = option(0, "ivf/ivfpq: lists searched per query; 0 = nlist / 16, at least 16", low=0)
    pq_m: int = option(0, "ivfpq: sub-quantizers (bytes per vector at 8 bits); 0 = dim / 4", low=0)
    pq_nbits: int = option(8, "ivfpq: bits per sub-quantizer code", low=4, high=12)
    rerank: int = option(100, "ivfpq: candidates re-scored exactly against the float vectors per query "
                              "(at least k); 0 = no re-rank", low=0)
    train_sample: int = option(0, "ivf/ivfpq: vectors the index is trained on, drawn from every part; 0 = "
                                  f"{TRAIN_POINTS_PER_LIST} per list, at least {MIN_TRAIN_SAMPLE:,}", low=0)
    seed: int = option(0, "seed of the training sample and k-means", low=0)

    def check(self) -> None:
        require(self.nprobe <= self.nlist or not self.nlist,
                f"bad index config: nprobe (--nprobe) {self.nprobe} exceeds nlist (--nlist) {self.nlist}")

    def to_dict(self) -> dict:
        return to_dict(self)

    def resolved(self, count: int, dim: int) -> dict:
        """The kind and parameters for `count` vectors of `dim` dimensions, zeros replaced by the rule ->
        index.json's description (less count and vectors)."""
        kind = self.index if self.index != "auto" else ("flat" if count <= EXACT_INDEX_LIMIT else "ivfpq")
        description = {"type": kind, "metric": "inner_product", "dim": dim}
        if kind in ("ivf", "ivfpq"):
            nlist = self.nlist or min(MAX_AUTO_NLIST, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count)))))
            # FAISS wants >= 39 training points per list; a small catalogue gets fewer, larger lists.
            nlist = max(1, min(nlist, count // 39 or 1))
            nprobe = min(nlist, self.nprobe or max(16, nlist // 16))
            sample = min(count, self.train_sample or max(TRAIN_POINTS_PER_LIST * nlist, MIN_TRAIN_SAMPLE))
            description.update(nlist=nlist, nprobe=nprobe, train_sample=sample, seed=self.seed)
        if kind == "ivfpq":
            m = self.pq_m or max(1, dim // 4)
            require(dim % m == 0, f"bad index config: pq_m (--pq-m) {m} must divide the dimension {dim}")
            description.update(pq_m=m, pq_nbits=self.pq_nbits, rerank=self.rerank)
        if kind == "hnsw":
            description.update(m=32, ef_construction=80, ef_search=64)
        return description
