"""The objectives against values computed by hand with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eclip.train.loss
from eclip.train.loss import Objective, clip_loss, eclip_loss, nt_xent, siglip_loss


def _embeddings(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_clip_loss_by_hand():
    image, text = _embeddings(4, seed=1), _embeddings(4, seed=2)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * image.numpy() @ text.numpy().T
    expected = (-np.diag(_log_softmax(logits)).mean() - np.diag(_log_softmax(logits.T)).mean()) / 2
    assert clip_loss(image, text, scale).item() == pytest.approx(expected, rel=1e-6)


def dense_soft_label_loss(image, text, logit_scale, groups):
    """The textbook form, one autograd graph over the whole B x B matrix: the reference for the blockwise one."""
    logits = logit_scale.exp() * image @ text.T
    same = (groups[:, None] == groups[None, :]).to(image.dtype)
    targets = same / same.sum(dim=1, keepdim=True)  # row-normalized same-group matrix
    return (-(targets * F.log_softmax(logits, 1)).sum(1).mean() - (targets * F.log_softmax(logits.T, 1)).sum(1).mean()) / 2


def dense_siglip_loss(image, text, logit_scale, logit_bias):
    logits = logit_scale.exp() * image @ text.T + logit_bias
    return -F.logsigmoid((2 * torch.eye(len(logits), dtype=logits.dtype) - 1) * logits).sum() / len(logits)


@pytest.mark.parametrize("block_elements", [2 ** 22, 40], ids=["one-block", "rows-of-2"])
def test_blockwise_losses_and_gradients_equal_the_dense_ones(monkeypatch, block_elements):
    monkeypatch.setattr(eclip.train.loss, "BLOCK_ELEMENTS", block_elements)  # 40 // 19 columns = 2 rows a block
    image = F.normalize(torch.randn(19, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=-1)
    text = F.normalize(torch.randn(19, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=-1)
    scale, bias = torch.tensor(2.5, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    groups = torch.tensor([4, 4, 0, 1, 1, 1, 2, 3, 5, 5, 6, 7, 8, 8, 8, 8, 9, 10, 11])
    cases = [(lambda *a: eclip_loss(*a, groups), lambda *a: dense_soft_label_loss(*a, groups), [image, text, scale]),
             (clip_loss, lambda *a: dense_soft_label_loss(*a, torch.arange(19)), [image, text, scale]),
             (siglip_loss, dense_siglip_loss, [image, text, scale, bias])]
    for blockwise, dense, inputs in cases:
        inputs = [x.clone().requires_grad_() for x in inputs]
        got, expected = blockwise(*inputs), dense(*inputs)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12)
        for got_grad, expected_grad in zip(torch.autograd.grad(2 * got, inputs), torch.autograd.grad(2 * expected, inputs)):
            assert torch.allclose(got_grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_eclip_loss_by_hand_with_shared_groups():
    image, text = _embeddings(4, seed=3), _embeddings(4, seed=4)
    groups = torch.tensor([0, 0, 1, 2])
    logits = np.exp(2.0) * image.numpy() @ text.numpy().T
    targets = np.array([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    expected = (-(targets * _log_softmax(logits)).sum(1).mean() - (targets * _log_softmax(logits.T)).sum(1).mean()) / 2
    assert eclip_loss(image, text, torch.tensor(2.0), groups).item() == pytest.approx(expected, rel=1e-6)


def test_eclip_equals_clip_when_every_group_is_alone():
    image, text = _embeddings(6, seed=5), _embeddings(6, seed=6)
    scale = torch.tensor(3.0)
    assert eclip_loss(image, text, scale, torch.arange(6)).item() == pytest.approx(clip_loss(image, text, scale).item(), rel=1e-6)


def test_eclip_pulls_a_group_mate_closer_where_clip_pushes_it_away():
    image, text = torch.eye(3), torch.eye(3)  # orthogonal pairs: only similarity (image 0, text 1) moves below
    scale, groups = torch.tensor(math.log(20.0)), torch.tensor([0, 0, 1])

    def slope(loss_fn):
        """d(loss)/ds where s moves text 1 (image 0's group mate) towards image 0."""
        step = torch.zeros((), requires_grad=True)
        moved = text.clone()
        moved[1] = F.normalize(text[1] + step * image[0], dim=-1)
        loss_fn(moved).backward()
        return step.grad.item()

    assert slope(lambda t: clip_loss(image, t, scale)) > 0
    assert slope(lambda t: eclip_loss(image, t, scale, groups)) < 0


def test_siglip_loss_by_hand():
    image, text = _embeddings(3, seed=8), _embeddings(3, seed=9)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-2.0)
    logits = 10.0 * image.numpy() @ text.numpy().T - 2.0
    signs = 2 * np.eye(3) - 1
    expected = np.log1p(np.exp(-signs * logits)).sum() / 3
    assert siglip_loss(image, text, scale, bias).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_by_hand():
    view1, view2 = _embeddings(3, seed=10), _embeddings(3, seed=11)
    views = np.concatenate([view1.numpy(), view2.numpy()])
    similarity = views @ views.T / 0.5
    total = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        total += -similarity[i, partner] + np.log(np.exp(similarity[i, others]).sum())
    assert nt_xent(view1, view2, 0.5).item() == pytest.approx(total / 6, rel=1e-6)


def test_objective_adds_the_weighted_simclr_term_and_names_its_scalars():
    image, text, second = _embeddings(4, seed=12), _embeddings(4, seed=13), _embeddings(4, seed=14)
    scale, groups = torch.tensor(2.0), torch.arange(4)
    objective = Objective("eclip", image_ssl_weight=0.25, ssl_temperature=0.2)
    expected = eclip_loss(image, text, scale, groups) + 0.25 * nt_xent(image, second, 0.2)
    assert objective([image, text, second], [scale], groups).item() == pytest.approx(expected.item(), rel=1e-6)
    assert objective.scalar_names == ("logit_scale",)
    assert Objective("siglip").scalar_names == ("logit_scale", "logit_bias")
