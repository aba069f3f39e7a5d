import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eclip.rec.data import Batch, next_item_batch, pad_left
from eclip.rec.model import ModelConfig, SequenceRecommender

N_ITEMS = 12


def make_model(causal=False, trained=None, content=None, sparse_items=False, **overrides):
    torch.manual_seed(0)
    trained = np.ones(N_ITEMS + 1, dtype=bool) if trained is None else trained
    trained[0] = False
    config = ModelConfig(dim=16, layers=2, heads=2, max_len=8, causal=causal, **overrides)
    return SequenceRecommender(config, N_ITEMS, trained, content, sparse_items).eval()


def test_attention_masks_exclude_padding_and_the_future():
    tokens = torch.tensor([[0, 0, 3, 4, 5]])
    bidirectional = make_model().attention_mask(tokens, causal=False)[0, 0]
    expected = torch.tensor([[1, 0, 1, 1, 1], [0, 1, 1, 1, 1]] + [[0, 0, 1, 1, 1]] * 3, dtype=torch.bool)
    assert torch.equal(bidirectional, expected)  # padding rows see only themselves
    causal = make_model().attention_mask(tokens, causal=True)[0, 0]
    assert torch.equal(causal, expected & torch.ones(5, 5, dtype=torch.bool).tril() | torch.eye(5, dtype=torch.bool))


def test_a_bert4rec_model_asked_for_causal_attention_is_its_causal_twin():
    """train.next_item_weight trains BERT4Rec on next-item batches with the causal mask: the same loss as the
    SASRec-style model with the same weights, and not the bidirectional one (which would see the answer)."""
    batch = next_item_batch([np.array([1, 2, 3, 4]), np.array([5, 6, 7])], 8)
    bert4rec, sasrec = make_model(), make_model(causal=True)
    assert torch.equal(bert4rec.loss(batch, causal=True), sasrec.loss(batch))
    assert not torch.allclose(bert4rec.loss(batch), sasrec.loss(batch))


def hidden(model, tokens):
    vectors, _ = model.item_table(model.id_usable)
    return model.encode(torch.tensor(tokens), vectors)


def test_causal_outputs_ignore_later_items_bidirectional_ones_do_not():
    a, b = [[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 9]]
    causal = make_model(causal=True)
    assert torch.allclose(hidden(causal, a)[0, :4], hidden(causal, b)[0, :4])
    assert not torch.allclose(hidden(causal, a)[0, 4], hidden(causal, b)[0, 4])
    bert = make_model()
    assert not torch.allclose(hidden(bert, a)[0, :4], hidden(bert, b)[0, :4], atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_scores_do_not_depend_on_padding_or_batch_mates(causal):
    model = make_model(causal=causal)
    short, long = np.array([3, 4]), np.arange(1, 12)
    alone = model.score([short])
    together = model.score([long, short])
    assert torch.allclose(alone[0], together[1], atol=1e-5)
    # last-N truncation: only the last max_len (BERT4Rec: max_len - 1, then [mask]) items matter
    keep = 8 if causal else 7
    assert torch.allclose(model.score([long])[0], model.score([long[-keep:]])[0], atol=1e-5)
    assert not torch.allclose(model.score([long])[0], model.score([long[-keep + 1:]])[0], atol=1e-5)


def test_bert4rec_scores_the_appended_mask_token():
    model = make_model()
    vectors, bias = model.item_table(model.id_usable)
    tokens = pad_left([np.array([3, 4, N_ITEMS + 1])])
    expected = model.logits(model.encode(tokens, vectors)[:, -1], vectors, bias)
    assert torch.allclose(model.score([np.array([3, 4])]), expected)


def test_loss_is_softmax_cross_entropy_tied_to_the_item_embeddings():
    trained = np.ones(N_ITEMS + 1, dtype=bool)
    trained[[5, 9]] = False
    model = make_model(trained=trained)
    batch = Batch(torch.tensor([[0, 2, 13, 4], [1, 13, 13, 6]]), torch.tensor([[0, 0, 3, 0], [0, 7, 8, 0]]))
    loss = model.loss(batch)
    vectors, bias = model.item_table(model.id_usable)
    h = model.head(model.encode(batch.tokens, vectors)[batch.labels > 0])  # (3, D)
    items = torch.tensor([i for i in range(1, N_ITEMS + 1) if trained[i]])
    logits = h @ model.item_embedding.weight[items].T + model.output_bias[items]
    targets = torch.tensor([items.tolist().index(t) for t in (3, 7, 8)])
    assert torch.allclose(loss, F.cross_entropy(logits, targets))
    loss.backward()
    grad = model.item_embedding.weight.grad
    assert grad[[5, 9]].abs().sum() == 0  # untrained items take no part
    assert grad[11].abs().sum() > 0  # a negative in the softmax: the output layer is the item table


def test_untrained_items_need_content_to_be_scored():
    trained = np.ones(N_ITEMS + 1, dtype=bool)
    trained[[2, 7]] = False
    id_only = make_model(trained=trained)
    scores = id_only.score([np.array([1, 3])])[0]
    assert torch.isinf(scores[[1, 6]]).all() and torch.isfinite(scores[[0, 2, 5]]).all()

    content = np.random.default_rng(0).normal(size=(N_ITEMS + 1, 6)).astype(np.float32)
    content[0] = 0
    content[7] = 0  # no content and never trained: still unscorable
    with_content = make_model(trained=trained.copy(), content=content)
    scores = with_content.score([np.array([1, 3])])[0]
    assert torch.isfinite(scores[1]) and torch.isinf(scores[6])
    # an untrained item's ID embedding never reaches its score (it is random, not learnt)
    before = with_content.score([np.array([1, 3])])[0, 1].item()
    with torch.no_grad():
        with_content.item_embedding.weight[2] += 5.0
    assert with_content.score([np.array([1, 3])])[0, 1].item() == pytest.approx(before)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_content", [False, True])
def test_sampled_softmax_over_every_trained_item_is_the_full_softmax(causal, with_content):
    """With every trained item as a negative the sampled loss is the full one, gradients included: the batch's
    rows of the item table (inputs, targets, negatives) stand in for the whole table exactly."""
    assert make_model(sparse_items=True).item_embedding.sparse
    trained = np.ones(N_ITEMS + 1, dtype=bool)
    trained[[5, 9]] = False
    content = np.random.default_rng(1).normal(size=(N_ITEMS + 1, 6)).astype(np.float32) if with_content else None
    batch = Batch(torch.tensor([[0, 2, 13, 4], [1, 13, 11, 6]]), torch.tensor([[0, 0, 3, 0], [0, 7, 8, 0]]))
    grads = []
    for negatives in (None, torch.tensor([i for i in range(1, N_ITEMS + 1) if trained[i]][::-1])):
        # The sampled softmax trains with a sparse item table: its gradient holds only the batch's rows.
        model = make_model(causal=causal, trained=trained.copy(), content=content, sparse_items=negatives is not None)
        loss = model.loss(batch, negatives)
        loss.backward()
        grads.append((loss.detach(), {name: p.grad.to_dense() for name, p in model.named_parameters()
                                       if p.grad is not None}))
    (full, full_grads), (sampled, sampled_grads) = grads
    assert torch.allclose(full, sampled, atol=1e-6)
    assert full_grads.keys() == sampled_grads.keys()
    for name in full_grads:
        assert torch.allclose(full_grads[name], sampled_grads[name], atol=1e-6), name


def test_sampled_softmax_by_hand_leaves_a_negative_equal_to_the_target_out():
    model = make_model()
    batch = Batch(torch.tensor([[0, 2, 13, 4], [1, 13, 11, 6]]), torch.tensor([[0, 0, 3, 0], [0, 7, 8, 0]]))
    negatives = torch.tensor([8, 1, 12])  # 8 is the second row's second target
    loss = model.loss(batch, negatives)
    vectors, bias = model.item_table(model.id_usable)
    h = model.head(model.encode(batch.tokens, vectors)[batch.labels > 0])  # (3, D): targets 3, 7, 8
    score = lambda rows, items: (h[rows] * vectors[items]).sum(-1) + bias[items]  # noqa: E731
    expected = []
    for row, target in enumerate((3, 7, 8)):
        candidates = [target] + [n for n in negatives.tolist() if n != target]
        expected.append(-F.log_softmax(score([row] * len(candidates), torch.tensor(candidates)), 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-6)
