"""A method's product vectors per split and view, as every eval task reads them: the trained towers', the
baselines' (`baselines.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from eclip.eval.similarity import cosine
from eclip.eval.tasks import TASKS
from eclip.index import VIEWS
from eclip.index.embed import embed_products


@dataclass
class Representation:
    """One method's product vectors per split and view, and what it can do with free text.

    views[split][view] holds (N, D) unit rows (dense, or sparse for TF-IDF) in the split's product order."""
    name: str
    views: dict[str, dict[str, object]]
    primary: str  # the view that matching, clustering and the probes use
    tasks: frozenset[str]
    encode_text: Callable | None = None  # prompts -> rows comparable with every view (zero-shot, search)
    similarity: Callable = field(default=cosine)  # (A rows, B rows) -> (A, B) dense
    every_view: bool = False  # classify on every view, not only the headline one (the model's own table)

    def view_names(self) -> list[str]:
        return [view for view in VIEWS if view in next(iter(self.views.values()))]


def tower_representation(name: str, model, titles: dict[str, list[str]], thumbnails: dict[str, pa.Array],
                         batch_size: int, every_view: bool = False) -> Representation:
    """Embed the titles and JPEG thumbnails of each split with `model`."""
    from eclip.models import embed_texts

    views = {split: embed_products(model, titles[split], thumbnails[split], batch_size, f"embed {split} ({name})")
             for split in titles}
    return Representation(name, views, primary="fused", tasks=frozenset(TASKS),
                          encode_text=_remembered(lambda prompts: embed_texts(model, prompts, batch_size)),
                          every_view=every_view)


def _remembered(encode_text: Callable) -> Callable:
    """`encode_text` that embeds each distinct text once per run: the tasks ask again for the same class
    prompts (choosing the zero-shot view on val, then scoring on test; the same leaf names at every level)."""
    known: dict[str, np.ndarray] = {}

    def encode(texts: list[str]) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in known]
        if new:
            known.update(zip(new, encode_text(new)))
        return np.stack([known[text] for text in texts]) if texts else encode_text([])

    return encode
