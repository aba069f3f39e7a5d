"""EMB_DIR: product vectors, the FAISS index over them and the products served since, owned here alone.

EMB_DIR (`eclip embed`; `eclip search`, `eclip serve`, the recommender and the graph evaluation read it):
    embeddings.parquet/  one part-NNNNN.parquet per DATA_DIR shard (same number), read in name order: product_id
                         (string), split, category, title, and fixed-size-list float32 columns image, text, fused:
                         each L2-normalized; fused = normalize(image + text)  (`vectors`, written by `parts`)
    vectors.npy          the indexed column's (N, D) float32 rows in the same order, memory-mapped by the
                         service (exact re-rank, similar-products queries)  (`build`)
    index.faiss          inner-product index over one of the vector columns (rows = parquet rows), memory-mapped
                         by the service  (`faiss_index`)
    index.json           its type (flat, ivf, hnsw, ivfpq), parameters, which vectors it holds, count, dim
    meta.json            model, data, counts per split, the model weights' fingerprint, seconds; written last: an
                         EMB_DIR without it is incomplete  (`embed`)
    serving/             products added and removed through `eclip serve`  (`journal`)
"""

EMBEDDINGS_FILE = "embeddings.parquet"
INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"
VECTORS_FILE = "vectors.npy"
META_FILE = "meta.json"
SERVING_DIR = "serving"
VIEWS = ("image", "text", "fused")
