"""Gradient caching gives the full-batch gradients: every parameter, the temperature counted once,
dropout replayed per micro-batch, for every objective and with a second SimCLR view."""

from __future__ import annotations

import pytest
import torch

from eclip.train.gradcache import contrastive_backward
from eclip.train.loss import Objective
from tests.train.train_helpers import gradients, max_relative_error, split, tiny_batch, tiny_model

BATCH, MICRO = 12, 4
GROUPS = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7]  # positives that straddle micro-batches


def full_batch_gradients(model, batch, objective, micro_batches, seed):
    """One autograd graph over the whole batch; the towers run chunk by chunk only so that dropout draws
    the same masks, in the same order, as gradient caching's first pass."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = [model(**micro) for micro in micro_batches]
    embeddings = [torch.cat(parts) for parts in zip(*outputs)]
    objective(embeddings, [getattr(model, n) for n in objective.scalar_names], batch["groups"]).backward()
    return gradients(model)


def cached_gradients(model, batch, objective, micro_batches, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = contrastive_backward(lambda micro: model(**micro), micro_batches, objective,
                                [getattr(model, n) for n in objective.scalar_names], batch["groups"])
    return gradients(model), loss


@pytest.mark.parametrize("objective", [Objective("clip"), Objective("eclip"), Objective("siglip"),
                                       Objective("eclip", image_ssl_weight=0.5)], ids=["clip", "eclip", "siglip", "eclip+simclr"])
def test_cached_gradients_equal_full_batch_gradients_with_dropout(objective):
    model = tiny_model(dropout=0.1)
    model.logit_bias.requires_grad_(objective.name == "siglip")
    batch = tiny_batch(BATCH, groups=GROUPS)
    if objective.needs_second_view:
        batch["second_view"] = batch["pixels"].flip(-1)
    micro_batches = split(batch, MICRO)
    expected = full_batch_gradients(model, batch, objective, micro_batches, seed=7)
    got, loss = cached_gradients(model, batch, objective, micro_batches, seed=7)
    assert max_relative_error(got, expected) < 1e-5
    # The temperature's gradient is counted once, not once per micro-batch.
    assert torch.allclose(got["logit_scale"], expected["logit_scale"], rtol=1e-5, atol=1e-8)
    assert expected["logit_scale"].abs() > 1e-6
    assert loss > 0


def test_dropout_is_live_so_the_replay_is_what_makes_them_equal():
    model = tiny_model(dropout=0.1)
    batch = tiny_batch(BATCH, groups=GROUPS)
    micro_batches = split(batch, MICRO)
    objective = Objective("eclip")
    other_masks = full_batch_gradients(model, batch, objective, micro_batches, seed=8)
    got, _ = cached_gradients(model, batch, objective, micro_batches, seed=7)
    assert max_relative_error(got, other_masks) > 1e-3


def test_rng_stream_continues_as_after_one_pass():
    model = tiny_model(dropout=0.1)
    batch = tiny_batch(BATCH)
    micro_batches = split(batch, MICRO)
    torch.manual_seed(3)
    with torch.no_grad():
        for micro in micro_batches:
            model(**micro)
    after_one_pass = torch.rand(4)
    cached_gradients(model, batch, Objective("clip"), micro_batches, seed=3)
    assert torch.equal(torch.rand(4), after_one_pass)


def test_single_micro_batch_is_a_plain_step():
    model = tiny_model(dropout=0.0)
    batch = tiny_batch(BATCH, groups=GROUPS)
    objective = Objective("eclip")
    expected = full_batch_gradients(model, batch, objective, split(batch, BATCH), seed=0)
    got, _ = cached_gradients(model, batch, objective, split(batch, BATCH), seed=0)
    assert max_relative_error(got, expected) == 0.0


@pytest.mark.parametrize("lexical, char_ngram_buckets", [(False, 0), (True, 0), (True, 128)],
                         ids=["tower only", "lexical path", "lexical and char n-gram paths"])
@pytest.mark.parametrize("mask_ratio", [0.0, 0.5], ids=["all patches", "FLIP masking"])
def test_locked_text_features_and_conv_stem(mask_ratio, lexical, char_ngram_buckets):
    model = tiny_model(dropout=0.0, stem="conv", mask_ratio=mask_ratio, lexical=lexical,
                       char_ngram_buckets=char_ngram_buckets)
    model.text.requires_grad_(False)
    # The paths start at zero; trained a little already, they change the text vectors and their gradients.
    for path in (model.lexical, model.char_ngrams and model.char_ngrams.table):
        if path is not None:
            torch.nn.init.normal_(path.weight, std=0.1)
    batch = tiny_batch(BATCH, groups=GROUPS)
    with torch.no_grad():
        batch["text_features"] = model.text(batch["input_ids"], batch["attention_mask"])
    micro_batches = split(batch, MICRO)
    objective = Objective("eclip")
    expected = full_batch_gradients(model, batch, objective, micro_batches, seed=0)
    got, _ = cached_gradients(model, batch, objective, micro_batches, seed=0)
    assert not any(name.startswith("text.") for name in got)
    assert "text_projection.weight" in got
    assert ("lexical.weight" in got) == lexical
    assert ("char_ngrams.table.weight" in got) == bool(char_ngram_buckets)
    assert max_relative_error(got, expected) < 1e-5


def test_bf16_autocast_cached_matches_direct():
    model = tiny_model(dropout=0.0)
    batch = tiny_batch(BATCH, groups=GROUPS)
    objective = Objective("eclip")

    def run(micro_size):
        model.zero_grad(set_to_none=True)

        def embed(micro):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(**micro)
        contrastive_backward(embed, split(batch, micro_size), objective, [model.logit_scale], batch["groups"])
        return gradients(model)

    assert max_relative_error(run(MICRO), run(BATCH)) < 0.05


def test_loss_multiplier_scales_every_gradient():
    model = tiny_model(dropout=0.0)
    batch = tiny_batch(BATCH)
    objective = Objective("clip")

    def run(multiplier):
        model.zero_grad(set_to_none=True)
        contrastive_backward(lambda micro: model(**micro), split(batch, MICRO), objective, [model.logit_scale],
                             batch["groups"], loss_multiplier=multiplier)
        return gradients(model)

    plain, scaled = run(1.0), run(torch.tensor(1024.0))
    assert max_relative_error({n: g / 1024 for n, g in scaled.items()}, plain) < 1e-6
