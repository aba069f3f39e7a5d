"""Gradient caching (Gao et al. 2021): an effective batch of B pairs in micro-batches of m, exact.

1. Embed every micro-batch without autograd, saving the RNG state before each (dropout, stochastic depth).
2. Compute the loss over the full B x B similarity matrix on detached copies of the embeddings and of the
   logit scale/bias, and take its gradient with respect to them: the cache.
3. Re-run each micro-batch with autograd from its saved RNG state, so it draws the same dropout masks, and
   back-propagate <embeddings, cached gradient>. The logit scale's cached gradient enters once, with the
   last micro-batch, which is also the only one that synchronizes under DDP.

The parameter gradients equal those of one full-batch forward/backward; memory is one micro-batch's graph
plus the B x D embeddings.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from eclip.runs.rng import capture_rng, restore_rng


def _sum_of_products(outputs, grads) -> torch.Tensor:
    return sum((output.float() * grad).sum() for output, grad in zip(outputs, grads))


def contrastive_backward(embed, micro_batches: list, objective, scalars: list[torch.Tensor], groups: torch.Tensor,
                         *, no_sync=nullcontext, loss_multiplier: float = 1.0) -> float:
    """Accumulate d(loss)/d(parameters) into `.grad`; returns the loss.

    embed(micro_batch) -> tuple of (m, D) embeddings (image, text[, second view]) with autograd;
    objective(embeddings, scalars, groups) -> scalar loss over the concatenated (global) batch;
    scalars: the model's logit scale (and bias) parameters; groups: (B,) group codes of the local batch;
    no_sync: DDP's context that skips gradient synchronization; loss_multiplier: e.g. fp16's loss scale.
    One micro-batch is a plain forward/backward; more are cached as above.
    """
    if len(micro_batches) == 1:
        loss = objective(embed(micro_batches[0]), scalars, groups)
        (loss * loss_multiplier).backward()
        return loss.item()

    device = scalars[0].device
    rng_states, cached = [], []
    with torch.no_grad():
        for micro_batch in micro_batches:
            rng_states.append(capture_rng(device))
            cached.append(embed(micro_batch))
    rng_after = capture_rng(device)

    leaves = [torch.cat(parts).float().requires_grad_() for parts in zip(*cached)]  # each (B, D)
    scalar_leaves = [scalar.detach().requires_grad_() for scalar in scalars]
    loss = objective(leaves, scalar_leaves, groups)
    grads = torch.autograd.grad(loss * loss_multiplier, leaves + scalar_leaves)
    embedding_grads, scalar_grads = grads[:len(leaves)], grads[len(leaves):]
    del cached, leaves

    start = 0
    for index, micro_batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with nullcontext() if last else no_sync():
            restore_rng(rng_states[index], device)
            outputs = embed(micro_batch)
            rows = slice(start, start + len(outputs[0]))
            surrogate = _sum_of_products(outputs, [grad[rows] for grad in embedding_grads])
            if last:
                surrogate = surrogate + _sum_of_products(scalars, scalar_grads)
            surrogate.backward()
            start = rows.stop
    restore_rng(rng_after, device)  # continue the stream as if each micro-batch had run once
    return loss.item()
