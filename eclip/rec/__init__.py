"""Sequential recommendation: BERT4Rec (Sun et al., 2019) with optional e-CLIP content item embeddings.

One model covers both BERT4Rec (bidirectional attention, Cloze objective) and the SASRec-style baseline
(the same code with a causal mask, next-item objective); see `docs/recommendation.md`.
"""
