"""`eclip distill`: train the fast query encoder (eclip/models/query_encoder.py) to reproduce a trained model's
text vectors, then measure on the test split how close it comes and what that does to text->image retrieval.

What it learns from: the train split's titles and query-like strings cut from them (a run of consecutive words,
a few words in order, attribute values with the category leaf such as "blue men shirts"), since shoppers type
fragments rather than titles. The teacher embeds each string once; the student then regresses onto those unit
vectors (loss 1 - cosine) for a few epochs."""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from eclip.config import validate
from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models.query_encoder import (QueryEncoder, QueryEncoderShape, embed_queries, query_encoder_report,
                                        save_query_encoder)
from eclip.progress import progress_bar
from eclip.train.config import DistillConfig


def query_strings(product: dict, attribute_columns: list[str], count: int, rng: random.Random) -> list[str]:
    """Query-like strings cut from one product: a run of consecutive title words, a few title words in their
    order, and its attribute values with the category's leaf (lower case, as people type); `count` of them."""
    words = product["title"].split()
    leaf = (product.get("category") or "").split(" > ")[-1]
    attributes = [product[name] for name in attribute_columns if product.get(name)]
    made = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            start = rng.randrange(len(words))
            made.append(" ".join(words[start:rng.randrange(start + 1, len(words) + 1)]))
        elif kind == 1:
            kept = sorted(rng.sample(range(len(words)), min(len(words), rng.randint(2, 4))))
            made.append(" ".join(words[j] for j in kept))
        else:
            parts = [value for value in attributes if rng.random() < 0.7] + ([leaf] if leaf else [])
            made.append(" ".join(parts).lower() if parts else " ".join(words[:2]))
    return made


def _strings(products: list[dict], attribute_columns: list[str], config: DistillConfig,
             rng: random.Random) -> tuple[list[str], list[str]]:
    """-> (titles, query-like strings) of these products, each list without repeats."""
    titles = list(dict.fromkeys(product["title"] for product in products))
    queries = [query for product in products
               for query in query_strings(product, attribute_columns, config.queries_per_title, rng)]
    return titles, list(dict.fromkeys(queries))


def _teacher_vectors(model, strings: list[str], description: str) -> np.ndarray:
    """The full text tower's unit vectors (N, D), with a progress bar."""
    from eclip.models import embed_texts

    with progress_bar(description, len(strings)) as advance:
        return embed_texts(model, strings, on_batch=advance)


def _ms_per_query(embed, queries: list[str]) -> float:
    """Mean milliseconds to embed one query on its own (a lone search request), one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed(queries[:5])  # warm-up
        started = time.perf_counter()
        for query in queries:
            embed([query])
        return round((time.perf_counter() - started) / len(queries) * 1000, 3)
    finally:
        torch.set_num_threads(threads)


def distill(run_dir: Path, data_dir: Path, config: DistillConfig | None = None, force: bool = False) -> dict:
    """Train RUN_DIR's query encoder on DATA_DIR -> its report (also in RUN_DIR/query_encoder.json).
    An encoder distilled from the same weights, data and options is reused unless `force`."""
    from eclip.models import load_model
    from eclip.runs.provenance import output_signature

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    config = config or DistillConfig()
    validate(config)
    signature = output_signature(run_dir, data_dir, asdict(config))
    existing = query_encoder_report(run_dir)
    if existing is not None and existing.get("signature") == signature and not force:
        return {**existing, "reused": True}
    model, processor, _ = load_model(run_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    table = read_products(data_dir)
    attribute_columns = sorted(name for name in table.column_names if name.startswith("attr_"))
    products = table.select(["title", "category", "split", "group_id", *attribute_columns]).to_pylist()
    train_products = [p for p in products if p["split"] == "train"]
    test_rows = [i for i, p in enumerate(products) if p["split"] == "test"]
    test_products = [products[i] for i in test_rows]
    test_thumbnails = table.column("thumbnail").take(test_rows).to_pylist()
    if not train_products:
        raise EclipError(f"{data_dir} has no products in the train split: nothing to distil from")

    titles, queries = _strings(train_products, attribute_columns, config, rng)
    strings = titles + queries
    targets = torch.from_numpy(_teacher_vectors(model, strings, "teacher vectors"))  # (N, D)

    piece_embeddings = model.text.bert.get_input_embeddings().weight  # (V, W); BERT, XLM-R, CLIP or SigLIP text
    shape = QueryEncoderShape(vocab_size=piece_embeddings.shape[0], width=piece_embeddings.shape[1],
                              hidden=config.hidden, embed_dim=model.config.embed_dim)
    encoder = QueryEncoder(shape, processor)
    with torch.no_grad():  # the teacher's word-piece embeddings are a far better start than noise
        encoder.pieces.weight.copy_(piece_embeddings)
    encoder.train()
    batches_per_epoch = max(1, len(strings) // config.batch_size)
    steps = config.epochs * batches_per_epoch
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    loss = torch.zeros(())
    with progress_bar("distil", steps, "loss") as advance:
        for _ in range(config.epochs):
            order = torch.randperm(len(strings))
            for batch in range(batches_per_epoch):
                rows = order[batch * config.batch_size:(batch + 1) * config.batch_size]  # (B,)
                vectors = encoder(*encoder.inputs([strings[i] for i in rows]))  # (B, D)
                loss = (1 - (vectors * targets[rows]).sum(dim=-1)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                advance(loss=f"{loss.item():.4f}")
    encoder.eval()

    report = {"signature": signature, "train_strings": len(strings), "train_titles": len(titles),
              "final_loss": round(loss.item(), 5), "test": _evaluate(model, encoder, test_products, test_thumbnails,
                                                                     attribute_columns, config)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    save_query_encoder(encoder, run_dir, report)
    return {**report, "shape": asdict(shape), "reused": False}


def _evaluate(model, encoder: QueryEncoder, products: list[dict], thumbnails: list[bytes],
              attribute_columns: list[str], config: DistillConfig) -> dict | None:
    """Student against teacher on the test split: mean cosine between their vectors for titles and for
    query-like strings, text->image recall@1/10 with each (a title's positives: its group's images), and the
    milliseconds each takes for a lone query."""
    from eclip.models import embed_images, embed_texts
    from eclip.eval.retrieval import retrieval_scores

    if not products:
        return None
    rng = random.Random(config.seed + 1)
    titles = [p["title"] for p in products]
    _, queries = _strings(products, attribute_columns, config, rng)
    teacher_titles = _teacher_vectors(model, titles, "test titles")
    teacher_queries = _teacher_vectors(model, queries, "test queries")
    student_titles, student_queries = embed_queries(encoder, titles), embed_queries(encoder, queries)
    images = embed_images(model, thumbnails)
    groups = np.array([p["group_id"] for p in products])
    retrieval = {name: retrieval_scores(images, text, groups, [1, 10], 10)[0]["t2i"]
                 for name, text in (("teacher", teacher_titles), ("student", student_titles))}
    timed = queries[:200]
    return {
        "products": len(products), "queries": len(queries),
        "cosine_titles": round(float((student_titles * teacher_titles).sum(axis=1).mean()), 4),
        "cosine_queries": round(float((student_queries * teacher_queries).sum(axis=1).mean()), 4),
        "t2i": {name: {k: round(v, 4) for k, v in scores.items()} for name, scores in retrieval.items()},
        "ms_per_query": {"teacher": _ms_per_query(lambda q: embed_texts(model, q), timed),
                         "student": _ms_per_query(lambda q: embed_queries(encoder, q), timed)},
    }
