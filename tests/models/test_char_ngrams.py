"""The character n-gram path's words and buckets: hand-counted n-grams, stable hashing, misspellings that keep
most of a word's buckets."""

from __future__ import annotations

import zlib

from eclip.models import char_ngrams
from eclip.models.char_ngrams import CharNgrams, word_ngrams
from eclip.models.text import train_wordpiece

TITLES = ["Reebok Men Black Sports Shoes", "Baggit Women Brown Handbag", "Ray-Ban Unisex Sunglasses"] * 20


def test_word_ngrams_are_counted_by_hand():
    assert word_ngrams("tee", 3, 4) == ["<tee>", "<te", "tee", "ee>", "<tee", "tee>"]
    # A word shorter than n_min gives itself alone; "<a>" is not listed twice.
    assert word_ngrams("a", 3, 5) == ["<a>"]


def test_buckets_are_crc32_of_the_ngrams_and_misspellings_keep_most_of_them():
    path = CharNgrams(train_wordpiece(TITLES, vocab_size=120), buckets=1 << 20, dim=4)
    assert list(path.buckets_of("tee")) == [zlib.crc32(g.encode()) % (1 << 20) for g in word_ngrams("tee", 3, 5)]
    right, wrong = set(path.buckets_of("sunglasses")), set(path.buckets_of("sunlgasses"))
    assert len(right & wrong) >= 0.4 * len(right)  # 12 of its 28 n-grams survive the swapped letters
    assert not right & set(path.buckets_of("handbag"))


def test_words_are_rebuilt_from_word_pieces_and_special_tokens_are_skipped():
    tokenizer = train_wordpiece(TITLES, vocab_size=120)  # too small for whole words: they split into pieces
    path = CharNgrams(tokenizer, buckets=64, dim=4)
    encoding = tokenizer.encode("Reebok Sunlgasses Handbag")
    assert any(token.startswith("##") for token in encoding.tokens)
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert path.words(encoding.ids, [1] * len(encoding.ids)) == ["reebok", "sunlgasses", "handbag"]
    assert path.words(encoding.ids, [1] * 3 + [0] * (len(encoding.ids) - 3)) == \
        path.words(encoding.ids[:3], [1, 1, 1])


def test_the_word_cache_stays_bounded_and_gives_the_same_buckets(monkeypatch):
    monkeypatch.setattr(char_ngrams, "CACHED_WORDS", 10)
    path = CharNgrams(train_wordpiece(TITLES, vocab_size=120), buckets=1 << 20, dim=4)
    first = list(path.buckets_of("sunglasses"))
    for i in range(25):
        path.buckets_of(f"word{i}")
        assert len(path._word_buckets) <= 10
    assert list(path.buckets_of("sunglasses")) == first
