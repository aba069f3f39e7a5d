"""Validation during training on real fashion-dev rows: the val scores logged against the untrained start, the
best checkpoint kept (and re-scored from model.safetensors), early stopping, a length in epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models import load_model
from eclip.train.loop import train
from eclip.train.loss import Objective
from eclip.train.schedule import batch_size_at, steps_for_epochs
from eclip.train.validation import CRITERION, load_val_set, validate
from eclip.config import validate as validate_config
from tests.train.test_train_loop import small_config


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_kept_model_is_the_best_validation_and_scores_as_logged(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    train(fashion_data_dir, run, small_config(steps=6, val_every=2, lr=5e-3))
    validations = {line["step"]: line["val"] for line in _lines(run) if "val" in line}
    assert sorted(validations) == [0, 2, 4, 6]
    for scores in validations.values():
        assert scores["score"] == pytest.approx(np.mean([scores[key] for key in CRITERION]), abs=1e-5)
        assert 0 <= min(scores[key] for key in CRITERION) and max(scores[key] for key in CRITERION) <= 1
    selection = json.loads((run / "selection.json").read_text())
    best_step = max(validations, key=lambda step: (validations[step]["score"], -step))
    assert (selection["select"], selection["step"], selection["best_step"]) == ("best", best_step, best_step)
    assert selection["untrained_score"] == validations[0]["score"] and selection["last_step"] == 6
    assert selection["below_untrained"] is False

    # model.safetensors holds the chosen step's weights: scored again, it gives that step's logged numbers.
    model, _, _ = load_model(run)
    val = load_val_set(fashion_data_dir, 96, 0)  # small_config's val_max_products
    again = validate(model, val, Objective("eclip"))
    assert {k: again[k] for k in CRITERION} == pytest.approx({k: validations[best_step][k] for k in CRITERION},
                                                             abs=1e-4)


def test_select_last_keeps_the_last_step(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    train(fashion_data_dir, run, small_config(steps=3, val_every=1, select="last"))
    selection = json.loads((run / "selection.json").read_text())
    assert (selection["step"], selection["last_step"]) == (3, 3)
    assert selection["score"] == [line["val"]["score"] for line in _lines(run) if line["step"] == 3][0]


def test_early_stopping_ends_a_run_that_no_longer_improves_and_keeps_the_start(fashion_data_dir, tmp_path):
    """At a learning rate too small to move any score, no validation beats the untrained start: the run stops
    after `patience` of them, keeps the untrained weights, and says so; resuming it changes nothing."""
    run = tmp_path / "run"
    config = small_config(steps=20, val_every=1, patience=2, lr=1e-12, warmup_steps=0)
    record = train(fashion_data_dir, run, config)
    assert record["step"] == 2 and [line["step"] for line in _lines(run)] == [0, 1, 2]
    selection = json.loads((run / "selection.json").read_text())
    assert (selection["step"], selection["last_step"], selection["stopped_early"]) == (0, 2, True)
    assert "stopped early after 2 validations" in selection["reason"]
    assert sorted(path.name for path in (run / "checkpoints").iterdir())[-1] == "step-0000002.pt"
    before = {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.is_file()}
    assert train(fashion_data_dir, run, config, resume=True) == record
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.is_file()} == before


def test_no_validation_keeps_the_last_step(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    train(fashion_data_dir, run, small_config(steps=2, val_every=0))
    assert all("val" not in line for line in _lines(run))
    assert json.loads((run / "selection.json").read_text())["step"] == 2


def test_a_length_in_epochs_covers_the_train_split(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    train(fashion_data_dir, run, small_config(epochs=0.5, val_every=0, batch_size_multiple=16))
    train_pairs = read_products(fashion_data_dir, split="train", columns=["product_id"]).num_rows
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    assert steps == steps_for_epochs(0.5, train_pairs, 16, 32, "cosine", 16)
    drawn = [line["batch_size"] for line in _lines(run)]
    assert len(drawn) == steps and sum(drawn) >= train_pairs / 2


def test_steps_for_epochs_is_the_fewest_steps_drawing_the_pairs():
    assert steps_for_epochs(2, 100, 32, 32, "constant", 32) == 7  # 7 x 32 = 224 >= 200 > 192
    steps = steps_for_epochs(3, 1000, 128, 256, "cosine", 32)
    drawn = lambda n: sum(batch_size_at(step, n, 128, 256, "cosine", 32) for step in range(n))
    assert drawn(steps) >= 3000 > drawn(steps - 1)


def test_patience_without_validations_is_refused():
    config = small_config(val_every=0, patience=3)
    with pytest.raises(EclipError, match="patience needs validations"):
        validate_config(config)
