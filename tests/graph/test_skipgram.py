import numpy as np
import pytest
import torch

from eclip.graph.skipgram import (NegativeSampler, SkipGram, context_pairs, count_pairs, pair_gradients,
                                  skipgram_loss, train_skipgram)
from eclip.graph.walks import generate_walks


def test_pair_gradients_match_autograd():
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(6, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    u = torch.randn(6, 4, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    (skipgram_loss(v, u) * len(v)).backward()  # the pairs' summed loss
    grad_v, grad_u = pair_gradients(v.detach(), u.detach())
    torch.testing.assert_close(grad_v, v.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_u, u.grad, rtol=0, atol=1e-12)


def test_loss_by_hand():
    v = torch.tensor([[1.0, 0.0]])
    u = torch.tensor([[[2.0, 5.0], [-1.0, 3.0], [0.5, 0.0]]])  # context, then two negatives
    expected = -(np.log(1 / (1 + np.exp(-2.0))) + np.log(1 / (1 + np.exp(-1.0))) + np.log(1 / (1 + np.exp(0.5))))
    assert skipgram_loss(v, u).item() == pytest.approx(expected, rel=1e-6)


def test_step_is_rowwise_adagrad_on_summed_gradients():
    model = SkipGram(3, 2)
    with torch.no_grad():
        model.center.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.context.copy_(torch.tensor([[0.5, 0.0], [0.0, -1.0], [2.0, 0.0]]))
    centers, contexts, negatives = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]), torch.tensor([[2], [1], [0]])
    for _ in range(2):
        v, u = model.center[centers].clone(), model.context[torch.cat([contexts[:, None], negatives], 1)].clone()
        grad_v, _ = pair_gradients(v, u)
        row0, row1 = grad_v[:2].sum(0), grad_v[2]                  # row 0 is in the batch twice: summed
        squares = model.center_sq.clone() + torch.stack([row0.square().mean(), row1.square().mean(), torch.tensor(0.0)])
        before = model.center.clone()
        loss = model.step(centers, contexts, negatives, lr=0.1)
        assert loss == pytest.approx(skipgram_loss(v, u).item())
        torch.testing.assert_close(model.center_sq, squares)      # accumulates across steps
        torch.testing.assert_close(model.center[0], before[0] - 0.1 * row0 / squares[0].sqrt())
        torch.testing.assert_close(model.center[1], before[1] - 0.1 * row1 / squares[1].sqrt())
        torch.testing.assert_close(model.center[2], before[2])  # not a centre in the batch: untouched


def test_context_pairs_by_hand():
    walks = torch.tensor([[0, 1, 2, -1], [5, 6, -1, -1]], dtype=torch.int32)
    centers, contexts = context_pairs(walks, window=2)
    pairs = sorted(zip(centers.tolist(), contexts.tolist()))
    assert pairs == sorted([(0, 1), (1, 0), (1, 2), (2, 1), (5, 6), (6, 5), (0, 2), (2, 0)])
    assert count_pairs(walks.numpy(), 2) == len(pairs)


def test_negatives_follow_unigram_within_the_context_type():
    counts = np.array([8, 0, 1, 3, 2, 2, 5])
    groups = np.array([0, 0, 0, 1, 1, 2, 2])  # type-blocked ids, as HeteroGraph numbers them
    sampler = NegativeSampler(counts, groups)
    contexts = torch.tensor([0, 3, 6]).repeat(20_000)
    draws = sampler.sample(contexts, 2, torch.Generator().manual_seed(0))
    for context, members in ((0, [0, 1, 2]), (3, [3, 4]), (6, [5, 6])):
        drawn = draws[contexts == context].flatten().numpy()
        assert set(np.unique(drawn)) <= set(members)       # ++: never another type
        share = np.bincount(drawn, minlength=7)[members] / len(drawn)
        expected = counts[members] ** 0.75 / (counts[members] ** 0.75).sum()
        np.testing.assert_allclose(share, expected, atol=0.01)
    assert not np.any(draws.numpy() == 1)                   # a node absent from the walks is never a negative
    everything = NegativeSampler(counts, np.zeros(7, np.int64)).sample(torch.tensor([0] * 50_000), 1, torch.Generator().manual_seed(0))
    share = np.bincount(everything.flatten().numpy(), minlength=7) / 50_000
    np.testing.assert_allclose(share, counts ** 0.75 / (counts ** 0.75).sum(), atol=0.01)


@pytest.mark.parametrize("variant", ["metapath2vec", "metapath2vec++"])
def test_two_disconnected_communities_separate(communities, variant):
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    walks = generate_walks(communities, ("product-brand-product", "product-color-product"), 20, 11, seed=0)
    groups = communities.node_type_ids() if variant == "metapath2vec++" else np.zeros(communities.num_nodes, np.int64)
    model, stats = train_skipgram(walks, groups, dim=16, window=3, negatives=5, epochs=3, batch_size=256, lr=0.2, seed=0)
    assert stats.last_loss < stats.first_loss
    x = torch.nn.functional.normalize(model.center[:24], dim=1)
    side = np.arange(24) >= 12
    cosine = (x @ x.T).numpy()
    within = cosine[side[:, None] == side[None, :]].mean()
    across = cosine[side[:, None] != side[None, :]].mean()
    assert within - across > 0.3
    clusters = KMeans(2, n_init=5, random_state=0).fit_predict(x.numpy())
    assert normalized_mutual_info_score(side, clusters) == pytest.approx(1.0)


def test_training_is_seeded(communities):
    walks = generate_walks(communities, ("product-brand-product",), 5, 7, seed=0)
    groups = communities.node_type_ids()
    runs = [train_skipgram(walks, groups, 8, 2, 3, 1, 64, 0.1, seed)[0].center for seed in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
