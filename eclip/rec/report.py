"""`eclip rec eval` and `eclip rec recommend`: trained runs and the most-popular baseline scored in one table,
and top-k recommendations for one user.

All runs of one table must be trained on the same sequences file with the same cold-start split, so every
model answers the same leave-one-out cases; the 100 sampled negatives of each case are drawn once, as item
ids, and shared by every model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eclip.errors import EclipError
from eclip.rec.evaluate import Popularity, Scorer, evaluate, sample_negatives
from eclip.rec.run import TrainedRun, load_run

METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR")


def run_name(run: TrainedRun) -> str:
    model = "SASRec (causal)" if run.config.model.causal else "BERT4Rec"
    if run.setup["item_features"]:
        model += f" + content ({run.setup['item_feature_column']})"
    return f"{model} [{run.run_dir.name}]"


def ensemble(runs: list[TrainedRun]) -> Scorer:
    """The runs scored as one model: the mean of their log-probabilities of the next item (an item one of them
    cannot score stays -inf). One run's scorer is its own. The runs must share their items."""
    for run in runs[1:]:
        if run.vocab.ids != runs[0].vocab.ids:
            raise EclipError(f"{run.run_dir}: trained on other items than {runs[0].run_dir}; an ensemble needs runs "
                             "on the same sequences and item features")
    if len(runs) == 1:
        return runs[0].model.score

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([torch.log_softmax(run.model.score(histories), 1) for run in runs]).mean(0)
    return score


def evaluate_runs(run_dirs: list[Path], sequences_path: Path | None = None, split: str = "test",
                  negatives: int = 100, seed: int = 0, ensembles: list[tuple[int, ...]] = ()) -> dict:
    """{"cases", "cold_items", "rows": [{"model", "subset", "protocol", metrics...}]}, the popularity baseline first.
    `ensembles`: groups of indices into `run_dirs`, each also scored as one model (`ensemble`), after the runs.

    Subsets: "all" cases, and with a cold-start split also "cold" (the target was hidden from training) and
    "warm" (the rest). Protocols: "full" (ranked against every item), "sampled" (against `negatives`
    popularity-sampled items the user never interacted with; 0 skips it) and, for cold targets, "cold-only"
    (ranked against the other cold items only).
    """
    if split not in ("val", "test"):
        raise EclipError(f"split {split!r}: expected val or test")
    runs = [load_run(d, sequences_path) for d in run_dirs]
    first = runs[0]
    for run in runs[1:]:
        if sequences_path is None and run.setup["sequences"] != first.setup["sequences"]:
            raise EclipError(f"{run.run_dir}: trained on {run.setup['sequences']}, but {first.run_dir} on "
                             f"{first.setup['sequences']}; evaluate runs of the same sequences together")
        for name in ("cold_fraction", "seed"):
            if getattr(run.config.train, name) != getattr(first.config.train, name):
                raise EclipError(f"{run.run_dir}: train.{name} differs from {first.run_dir}'s, so the test cases "
                                 "differ; evaluate runs with the same split together")

    def cases_of(run: TrainedRun):
        return getattr(run.data.split, split)

    base_cases = cases_of(first)
    cold = np.isin(base_cases.targets, first.data.split.cold_items)
    subsets = {"all": np.ones(len(cold), dtype=bool)}
    if cold.any():
        subsets.update(cold=cold, warm=~cold)
    negative_ids = None
    if negatives:
        interacted = [np.append(h, t) for h, t in zip(base_cases.histories, base_cases.targets)]
        drawn = sample_negatives(interacted, first.data.counts, negatives, seed)
        negative_ids = np.array(first.data.vocab.ids, dtype=object)[drawn - 1]  # (U, K) item ids

    scorers = [("most popular", first, Popularity(first.data.counts))]
    scorers += [(run_name(run), run, run.model.score) for run in runs]
    scorers += [("ensemble: " + " + ".join(run_name(runs[i]) for i in group), runs[group[0]],
                 ensemble([runs[i] for i in group])) for group in ensembles]
    rows = []
    for name, run, scorer in scorers:
        cases = cases_of(run)
        if not np.array_equal(run.data.split.test.users, first.data.split.test.users):
            raise EclipError(f"{run.run_dir}: its test users differ from {first.run_dir}'s; evaluate runs of "
                             "the same sequences and split together")
        run_negatives = None if negative_ids is None else \
            np.array([run.data.vocab.index[i] for i in negative_ids.ravel()]).reshape(negative_ids.shape)
        for subset, keep in subsets.items():
            rows_keep = np.flatnonzero(keep)
            result = evaluate(scorer, cases.subset(keep), None if run_negatives is None else run_negatives[rows_keep])
            for protocol, metrics in result.items():
                rows.append({"model": name, "subset": subset, "protocol": protocol, "cases": int(keep.sum()),
                             **metrics})
        if cold.any():
            # A new-arrivals list: the cold target ranked among the cold items only (warm items score -inf).
            cold_columns = torch.zeros(run.data.vocab.n_items, dtype=torch.bool)
            cold_columns[torch.from_numpy(run.data.split.cold_items - 1)] = True
            def among_cold(histories, scorer=scorer, cold_columns=cold_columns):
                return scorer(histories).masked_fill(~cold_columns, float("-inf"))

            metrics = evaluate(among_cold, cases.subset(cold))["full"]
            rows.append({"model": name, "subset": "cold", "protocol": "cold-only", "cases": int(cold.sum()), **metrics})
    return {"split": split, "cases": len(base_cases.targets), "items": first.data.vocab.n_items,
            "cold_items": len(first.data.split.cold_items), "negatives": negatives, "rows": rows}


def markdown_table(report: dict) -> str:
    """One table per protocol, labelled, rows by subset then model."""
    labels = {"full": "full ranking over all items (the user's other items excluded)",
              "sampled": f"{report['negatives']} popularity-sampled negatives (BERT4Rec paper protocol)",
              "cold-only": "cold targets ranked among the cold items only (a new-arrivals list)"}
    out = []
    for protocol in ("full", "sampled", "cold-only"):
        rows = [r for r in report["rows"] if r["protocol"] == protocol]
        if not rows:
            continue
        out.append(f"**{report['split']}, {labels[protocol]}**\n")
        out.append("| model | cases | " + " | ".join(METRICS) + " |")
        out.append("| --- | --- | " + " | ".join("---" for _ in METRICS) + " |")
        for subset in dict.fromkeys(r["subset"] for r in rows):
            for r in (r for r in rows if r["subset"] == subset):
                label = r["model"] if subset == "all" else f"{r['model']}, {subset} targets"
                out.append(f"| {label} | {r['cases']} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def recommend(runs: list[TrainedRun], history: list[str], k: int = 10) -> list[tuple[str, float]]:
    """The top `k` (item id, score) next items after `history` (item ids, time order), history items excluded;
    several runs recommend as their `ensemble`."""
    if not history:
        raise EclipError("empty history: give at least one item id")
    run = runs[0]
    encoded = run.vocab.encode(history)
    scores = ensemble(runs)([encoded])[0].clone()  # (n_items,)
    scores[encoded - 1] = float("-inf")
    top = scores.topk(min(k, int(np.isfinite(scores.numpy()).sum())))
    return [(run.vocab.ids[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]


def user_history(run: TrainedRun, user: str) -> list[str]:
    """All of `user`'s items in the run's sequences file (so the recommendation is the item after the last)."""
    try:
        return run.data.sequences.items[run.data.sequences.users.index(user)]
    except ValueError:
        raise EclipError(f"user {user!r} is not in {run.setup['sequences']}; pass --items instead") from None
