import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from eclip.errors import EclipError
from eclip.rec.data import next_item_batch
from eclip.rec.evaluate import Popularity, evaluate
from eclip.rec.report import ensemble, recommend
from eclip.rec.config import RecConfig
from eclip.rec.run import build_model, load_run, load_run_data, start_from
from eclip.rec.train import make_optimizers, optimization_step, softmax_sample, train

SMALL = ["model.dim=16", "model.max_len=10", "model.dropout=0.1", "model.attention_dropout=0.1",
         "train.batch_size=32", "train.lr=0.005", "train.val_cases=0"]


@pytest.fixture
def cyclic(tmp_path):
    """200 users walking a cycle of 30 items (next = last + 1): a sequence model can learn it, popularity cannot."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(200):
        start, length = rng.integers(30), rng.integers(4, 9)
        lines.append(f"u{u} " + " ".join(f"i{(start + k) % 30}" for k in range(length)))
    path = tmp_path / "cyclic.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("causal, negatives, next_item_weight", [("false", 0, 0), ("false", 0, 1), ("true", 0, 0),
                                                                 ("true", 8, 0)])
def test_learns_the_cycle(tmp_path, cyclic, causal, negatives, next_item_weight):
    """Also with a sampled softmax (8 of the 30 items as negatives per batch), and BERT4Rec also trained on next
    items."""
    config = RecConfig().override(SMALL + ["train.epochs=8", "train.lr=0.01", f"model.causal={causal}",
                                           f"train.softmax_negatives={negatives}",
                                           f"train.next_item_weight={next_item_weight}"])
    summary = train(tmp_path / "run", cyclic, config)
    run = load_run(tmp_path / "run")
    model = evaluate(run.model.score, run.data.split.test)["full"]
    popular = evaluate(Popularity(run.data.counts), run.data.split.test)["full"]
    # The Cloze objective alone learns the next item more slowly than next-item training (most of the context is
    # masked): 0.60 against 0.96 with next items too and 1.0 for the causal model.
    learns_next_items = causal == "true" or next_item_weight > 0
    assert model["HR@10"] > (0.9 if learns_next_items else 0.5) and model["HR@10"] > popular["HR@10"] + 0.15
    assert summary["epoch"] == 8 and len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 8
    top = [item for item, _ in recommend([run], ["i1", "i2", "i3", "i4"], k=10)]
    assert not {"i1", "i2", "i3", "i4"} & set(top) and len(top) == 10
    if causal == "true":
        assert top[0] == "i5"


@pytest.mark.slow
@pytest.mark.parametrize("negatives", [0, 8])
def test_resume_repeats_an_uninterrupted_run_exactly(tmp_path, cyclic, negatives):
    """Also with the sampled softmax: its negatives and its second optimizer's state resume too."""
    config = RecConfig().override(SMALL + ["train.epochs=3", f"train.softmax_negatives={negatives}"])
    train(tmp_path / "whole", cyclic, config)
    # A time limit below one epoch stops after the first epoch, as a kill would after its checkpoint.
    first = train(tmp_path / "cut", cyclic, config.override(["train.time_limit_minutes=1e-9"]))
    assert first["epoch"] == 1
    train(tmp_path / "cut", cyclic, config, resume=True)
    for name in ("model.safetensors", "last.safetensors"):
        whole, cut = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert all((whole[k] == cut[k]).all() for k in whole)
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
                          for line in path.read_text().splitlines()]
    assert strip(tmp_path / "whole" / "history.jsonl") == strip(tmp_path / "cut" / "history.jsonl")


def test_init_starts_from_the_other_runs_best_weights_and_refuses_runs_that_do_not_fit(tmp_path, cyclic):
    train(tmp_path / "sasrec", cyclic, RecConfig().override(SMALL + ["train.epochs=1", "model.causal=true"]))
    config = RecConfig().override(SMALL)
    data = load_run_data(cyclic, config)
    model = build_model(config, data)
    start_from(model, tmp_path / "sasrec", data.vocab)
    best = load_file(tmp_path / "sasrec" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[name], best[name]) for name in best)

    with pytest.raises(EclipError, match="has model.dim=16, this run 32; dim, layers, heads, max_len"):
        start_from(build_model(config.override(["model.dim=32"]), data), tmp_path / "sasrec", data.vocab)
    renamed = tmp_path / "renamed.txt"
    renamed.write_text(cyclic.read_text().replace(" i", " item"))
    other_items = load_run_data(renamed, config)
    with pytest.raises(EclipError, match="trained on other items"):
        start_from(build_model(config, other_items), tmp_path / "sasrec", other_items.vocab)
    cold = config.override(["train.cold_fraction=0.2"])
    with pytest.raises(EclipError, match="trained on another split"):
        start_from(build_model(cold, load_run_data(cyclic, cold)), tmp_path / "sasrec", data.vocab)
    with pytest.raises(EclipError, match="--init starts a new run"):
        train(tmp_path / "sasrec", cyclic, config, resume=True, init=tmp_path / "sasrec")


def test_an_ensemble_ranks_as_its_runs_together(tmp_path, cyclic):
    """A run with itself ranks exactly as alone (the mean of equal log-probabilities); two runs rank by the mean of
    theirs; runs on other items are refused."""
    for name, causal in (("sasrec", "true"), ("bert4rec", "false")):
        train(tmp_path / name, cyclic, RecConfig().override(SMALL + ["train.epochs=2", f"model.causal={causal}"]))
    sasrec, bert4rec = load_run(tmp_path / "sasrec"), load_run(tmp_path / "bert4rec")
    cases = sasrec.data.split.test
    assert evaluate(ensemble([sasrec, sasrec]), cases) == evaluate(sasrec.model.score, cases)
    histories = cases.histories[:5]
    each = [torch.log_softmax(run.model.score(histories), 1) for run in (sasrec, bert4rec)]
    assert torch.allclose(ensemble([sasrec, bert4rec])(histories), (each[0] + each[1]) / 2)
    renamed = tmp_path / "renamed.txt"
    renamed.write_text(cyclic.read_text().replace(" i", " item"))
    train(tmp_path / "other", renamed, RecConfig().override(SMALL + ["train.epochs=1"]))
    with pytest.raises(EclipError, match="trained on other items than .*sasrec; an ensemble needs runs on the same"):
        ensemble([sasrec, load_run(tmp_path / "other")])


@pytest.mark.slow
def test_bert4rec_started_from_a_causal_run_learns_faster(tmp_path, cyclic):
    """The cycle, which the Cloze objective learns slowly: from a causal run's weights, two epochs of it go much
    further than from scratch."""
    train(tmp_path / "sasrec", cyclic, RecConfig().override(SMALL + ["train.epochs=8", "train.lr=0.01",
                                                                      "model.causal=true"]))
    cloze = RecConfig().override(SMALL + ["train.epochs=2"])
    train(tmp_path / "fresh", cyclic, cloze)
    train(tmp_path / "warm", cyclic, cloze, init=tmp_path / "sasrec")
    fresh, warm = (evaluate(run.model.score, run.data.split.test)["full"]["HR@10"]
                   for run in (load_run(tmp_path / "fresh"), load_run(tmp_path / "warm")))
    assert warm > fresh + 0.1  # measured 0.605 against 0.36
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["init"] == str((tmp_path / "sasrec").resolve())


def test_sampled_softmax_updates_only_the_item_rows_each_batch_touches(cyclic):
    """SparseAdam, not AdamW, for the item table: a row the second batch does not touch keeps its value, where
    AdamW's momentum would still move every row the first batch touched."""
    config = RecConfig().override(SMALL + ["model.causal=true", "train.softmax_negatives=4"])
    data = load_run_data(cyclic, config)
    model = build_model(config, data).train()
    optimizers = make_optimizers(model, config.train)
    assert [type(o).__name__ for o in optimizers] == ["AdamW", "SparseAdam"]
    torch.manual_seed(0)
    for rows in (data.split.train[:2], data.split.train[2:4]):
        batch, negatives = next_item_batch(rows, 10), softmax_sample(model, 4)
        before = model.item_embedding.weight.detach().clone()
        optimization_step(optimizers, model.loss(batch, negatives))
        assert model.item_embedding.weight.grad.is_sparse
    touched = set(torch.cat([batch.tokens.flatten(), batch.labels.flatten(), negatives]).tolist()) - {0}
    changed = set(torch.nonzero((model.item_embedding.weight != before).any(1)).flatten().tolist())
    assert changed == touched
    # As many negatives as trained items is the full softmax: one dense AdamW.
    full = RecConfig().override(SMALL + ["train.softmax_negatives=1000"])
    assert [type(o).__name__ for o in make_optimizers(build_model(full, data), full.train)] == ["AdamW"]


def test_run_folder_guards(tmp_path, cyclic):
    config = RecConfig().override(SMALL + ["train.epochs=1"])
    with pytest.raises(EclipError, match="nothing to resume"):
        train(tmp_path / "run", cyclic, config, resume=True)
    train(tmp_path / "run", cyclic, config)
    with pytest.raises(EclipError, match="already holds a run"):
        train(tmp_path / "run", cyclic, config)
    with pytest.raises(EclipError, match=r"model.dim=32.*only patience, time_limit_minutes may change"):
        train(tmp_path / "run", cyclic, config.override(["model.dim=32"]), resume=True)
    with pytest.raises(EclipError, match="no model.safetensors"):
        load_run(tmp_path / "absent")
    with pytest.raises(EclipError, match="train.next_item_weight adds next-item training to BERT4Rec"):
        train(tmp_path / "causal", cyclic, config.override(["model.causal=true", "train.next_item_weight=1"]))
    assert not (tmp_path / "causal").exists()
    # A run saved before a config field existed resumes with that field at its default.
    two = config.override(["train.epochs=2"])
    assert train(tmp_path / "old", cyclic, two.override(["train.time_limit_minutes=1e-9"]))["epoch"] == 1
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    del saved["train"]["softmax_negatives"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    assert train(tmp_path / "old", cyclic, two, resume=True)["epoch"] == 2


def test_config_from_toml_and_overrides(tmp_path):
    path = tmp_path / "rec.toml"
    path.write_text("[model]\ndim = 32\ncausal = true\n[train]\nlr = 1\n")
    config = RecConfig.from_toml(path)
    assert config.model.dim == 32 and config.model.causal and config.train.lr == 1.0
    assert config.override(["train.epochs=7"]).train.epochs == 7
    for bad, message in (("[model]\ndimension = 3\n", "unknown key.*dimension"), ("[model]\ndim = 'x'\n", "dim must be int"),
                         ("[optim]\n", "unknown key.*optim")):
        path.write_text(bad)
        with pytest.raises(EclipError, match=message):
            RecConfig.from_toml(path)
    with pytest.raises(EclipError, match="--set 'epochs=3'"):
        config.override(["epochs=3"])


@pytest.mark.parametrize("assignment, message", [
    ("model.heads=3", r"\[model\] dim 64 is not divisible by heads 3"),
    ("model.max_len=0", "max_len must be at least 1, got 0"),
    ("model.dropout=1.5", "dropout must be at least 0 and below 1, got 1.5"),
    ("train.batch_size=0", "batch_size must be at least 1, got 0"),
    ("train.epochs=0", r"train\.epochs must be at least 1, got 0"),
    ("train.lr=-1", "lr must be positive, got -1.0"),
    ("train.seed=-1", "seed must be 0 or more, got -1"),
    ("train.mask_prob=2", "mask_prob must be between 0 and 1, got 2.0"),
    ("train.cold_fraction=1", "cold_fraction must be at least 0 and below 1, got 1.0"),
    ("train.softmax_negatives=-5", "softmax_negatives must be 0 or more, got -5"),
])
def test_out_of_range_config_values_are_refused(assignment, message):
    with pytest.raises(EclipError, match=message):
        RecConfig().override([assignment])


@pytest.mark.parametrize("device, message", [
    ("foo", "--device 'foo': not a device; use cpu, cuda, cuda:N or mps"),
    ("cuda:99", r"--device cuda:99: this machine has \d+ CUDA GPU\(s\); use --device cpu"),
])
def test_unknown_or_absent_devices_are_refused_before_anything_is_written(tmp_path, cyclic, device, message):
    with pytest.raises(EclipError, match=message):
        train(tmp_path / "run", cyclic, RecConfig(), device=device)
    assert not (tmp_path / "run").exists()


def test_every_sweep_variant_is_a_valid_override():
    """bench/rec_sweep.py's variants are --set overrides of the shipped beauty recipe: a typo would cost a GPU lease."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("rec_sweep", root / "bench" / "rec_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    base = RecConfig.from_toml("beauty")
    for name, overrides in sweep.VARIANTS.items():
        config = base.override(sweep.SWEPT_FROM + overrides)
        assert config.model.causal == name.startswith("sasrec"), name
