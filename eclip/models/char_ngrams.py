"""fastText's subword vectors (Bojanowski et al. 2017) beside the text tower: every word of a title, rebuilt from
its word pieces, is the set of its character n-grams (with "<" and ">" marking its ends) plus the whole word, each
hashed into one of `buckets` trainable vectors; the title's vector is their mean. A misspelt word ("Sunlgasses")
keeps most of its n-grams, where the word pieces split it into unrelated pieces."""

from __future__ import annotations

import zlib
from array import array

import torch
from torch import nn

CACHED_WORDS = 100_000  # about 60 MB; a catalogue of millions of listings has more distinct words than that


def word_ngrams(word: str, n_min: int, n_max: int) -> list[str]:
    """The whole word and its character n-grams of n_min..n_max letters, the word marked "<word>"."""
    marked = f"<{word}>"
    grams = [marked[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(marked) - n + 1)]
    return [marked] + [gram for gram in grams if gram != marked]


class CharNgrams(nn.Module):
    def __init__(self, tokenizer, buckets: int, dim: int, n_min: int = 3, n_max: int = 5):
        super().__init__()
        self.buckets, self.n_min, self.n_max = buckets, n_min, n_max
        self.table = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.zeros_(self.table.weight)  # the text vector begins as it would without this path
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.pieces = [""] * (max(vocab.values()) + 1)
        for piece, index in vocab.items():
            self.pieces[index] = piece
        self.skipped = {index for index, token in tokenizer.get_added_tokens_decoder().items() if token.special}
        self._word_buckets: dict[str, array] = {}  # a catalogue repeats its words: hash each one once

    def buckets_of(self, word: str) -> array:
        known = self._word_buckets.get(word)
        if known is None:
            # crc32, not hash(): the same word must land in the same buckets in every process and run
            known = array("l", (zlib.crc32(gram.encode()) % self.buckets
                                for gram in word_ngrams(word, self.n_min, self.n_max)))
            if len(self._word_buckets) >= CACHED_WORDS:
                self._word_buckets.clear()
            self._word_buckets[word] = known
        return known

    def words(self, ids: list[int], mask: list[int]) -> list[str]:
        """One title's token ids -> its words: a "##" piece continues the word before it."""
        words: list[str] = []
        for index, keep in zip(ids, mask):
            if not keep or index in self.skipped or index >= len(self.pieces):
                continue
            piece = self.pieces[index]
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
            else:
                words.append(piece)
        return words

    def bucket_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """(B, L) token ids and mask -> each title's n-gram buckets (an exported text tower takes them as input)."""
        return [[bucket for word in self.words(ids, mask) for bucket in self.buckets_of(word)]
                for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> (B, D): the mean of the title's n-gram vectors (zero for no words)."""
        flat: list[int] = []
        offsets: list[int] = []
        for row in self.bucket_rows(input_ids, attention_mask):
            offsets.append(len(flat))
            flat.extend(row)
        device = self.table.weight.device
        return self.table(torch.tensor(flat, dtype=torch.long, device=device),
                          torch.tensor(offsets, dtype=torch.long, device=device))  # (B, D)
