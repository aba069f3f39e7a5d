"""`eclip graph train`: products table -> graph -> meta-path walks -> skip-gram -> RUN_DIR.

RUN_DIR/
  embeddings.parquet   product_id, graph (fixed-size list of float32): the products the walks reached
  nodes.parquet        node, type, name: every node of the graph, in embedding row order
  model.safetensors    center (N, D) and context (N, D) embeddings of every node
  train.json           written last: options, data, graph size, walk and training statistics
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from eclip.errors import EclipError
from eclip.files import output_folder
from eclip.graph.build import build_product_graph, load_products
from eclip.graph.config import GraphTrainConfig
from eclip.graph.skipgram import train_skipgram
from eclip.graph.walks import generate_walks
from eclip.index import EMBEDDINGS_FILE
from eclip.index.vectors import write_embeddings
from eclip.runs.provenance import file_version


def train_graph(data: Path, out: Path, config: GraphTrainConfig, force: bool = False) -> dict:
    """Train one run; a finished RUN_DIR with the same options and data is reused unless `force`, and retrained
    (`data_changed`) when its data file has changed since."""
    out = Path(out)
    products = load_products(data)
    signature = json.loads(json.dumps({"config": asdict(config), "data": str(Path(data).resolve()),
                                       "data_version": file_version(data), "products": products.num_rows}))
    finished = out / "train.json"
    data_changed = False
    if finished.exists() and not force:
        previous = json.loads(finished.read_text())
        if previous["signature"] == signature:
            return {**previous, "reused": True, "data_changed": False}
        if any(previous["signature"][key] != signature[key] for key in ("config", "data")):
            raise EclipError(f"{out}: holds a finished run with other options or data; pass --force to overwrite it or choose another --out")
        data_changed = True
    output_folder(out)
    finished.unlink(missing_ok=True)

    graph = build_product_graph(products, config.brand_max_words, config.brand_min_count)
    started = time.perf_counter()
    walks = generate_walks(graph, config.metapaths, config.walks_per_node, config.walk_length, config.seed)
    walk_seconds = time.perf_counter() - started
    groups = graph.node_type_ids() if config.variant == "metapath2vec++" else np.zeros(graph.num_nodes, np.int64)
    model, stats = train_skipgram(walks, groups, config.dim, config.window, config.negatives, config.epochs,
                                  config.batch_size, config.lr, config.seed)

    n_products = len(graph.names["product"])
    walked = np.flatnonzero(np.bincount(walks[walks >= 0], minlength=graph.num_nodes)[:n_products] > 0)
    product_ids = graph.names["product"][walked].tolist()
    write_embeddings(out / EMBEDDINGS_FILE, product_ids, {"graph": model.center[walked].numpy()})
    pq.write_table(graph.node_table(), out / "nodes.parquet")
    from safetensors.torch import save_file
    save_file({"center": model.center.data.contiguous(), "context": model.context.data.contiguous()}, out / "model.safetensors")

    summary = {"signature": signature, "graph": graph.summary(), "nodes": graph.num_nodes,
               "products": n_products, "products_embedded": len(product_ids),
               "walks": len(walks), "walk_seconds": walk_seconds, "walks_per_second": len(walks) / max(walk_seconds, 1e-9),
               "pairs": stats.pairs, "train_seconds": stats.seconds, "pairs_per_second": stats.pairs / max(stats.seconds, 1e-9),
               "first_loss": stats.first_loss, "last_loss": stats.last_loss}
    finished.write_text(json.dumps(summary, indent=2))
    return {**summary, "reused": False, "data_changed": data_changed}
