"""Every metric of `eclip eval` against values worked out by hand on tiny inputs (and scikit-learn where it has
the same metric)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from eclip.errors import EclipError
from eclip.eval.adult import precision_at_recall
from eclip.eval.baselines import hash_digits, hash_similarity
from eclip.eval.classification import probe_view, probe_views, _zero_shot_view
from eclip.eval.clustering import clustering_scores
from eclip.eval.config import load_eval_config
from eclip.eval.config import EvalConfig
from eclip.eval.data import whole_groups
from eclip.eval.representation import Representation
from eclip.eval.heads import apply_head, head_view, load_heads, save_heads
from eclip.eval.matching import (IMAGE_WEIGHTS, average_precision, best_f1, best_knn_threshold, expand_similarity,
                                  f1_at, knn_f1, matching_scores, pair_scores, setup_on_val)
from eclip.eval.probe import classification_scores, fit_probe, select_probe
from eclip.eval.report import headline_rows, lookup
from eclip.eval.retrieval import recall_curve, retrieval_scores
from eclip.eval.tasks import TASKS, TASK_NAMES
from eclip.eval.zeroshot import class_prompts, name_variants, prompt_classifier, zero_shot_predict
from eclip.index.embed import SPLITS


def test_recall_at_k_by_hand():
    similarity = np.array([[0.9, 0.1, 0.5, 0.2],   # group a: its positive (item 0) ranks 1st
                           [0.1, 0.2, 0.3, 0.8],   # group b: item 3 (d) first, item 2 (b) 2nd
                           [0.4, 0.3, 0.2, 0.1]])  # group c: no positive anywhere -> not scored
    curve = recall_curve(similarity, np.array(["a", "b", "c"]), np.array(["a", "b", "b", "d"]), max_k=3)
    assert curve.tolist() == [0.5, 1.0, 1.0]


def test_retrieval_positives_are_the_whole_group():
    # Products 0 and 1 are offers of one group: title 0 finding image 1 first is a hit at rank 1.
    image = np.eye(3, dtype=np.float32)
    text = np.array([[0.6, 0.8, 0], [0, 0, 1], [0, 0.6, 0.8]], dtype=np.float32)
    scores, curves = retrieval_scores(image, text, np.array(["g", "g", "h"]), ks=[1, 2], max_k=3)
    # t2i: title 0 -> image 1 (same group g: a hit); title 1 (g) -> image 2 (h, miss), then g images; title 2 -> image 2.
    assert scores["t2i"] == {"r1": pytest.approx(2 / 3), "r2": 1.0}
    # i2t: images 0 and 1 -> title 0 (g: hits); image 2 (h) -> title 1 (g, miss), then title 2 (h).
    assert scores["i2t"] == {"r1": pytest.approx(2 / 3), "r2": 1.0}
    assert curves["t2i"].shape == (3,)


def test_average_precision_and_best_f1_by_hand():
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    # Recall steps at 0.9 (precision 1) and 0.7 (precision 2/3), half the recall each.
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # F1 at thresholds 0.9, 0.8, 0.7, 0.6: 2/3, 1/2, 4/5, 2/3.
    assert best_f1(scores, labels) == (pytest.approx(0.8), 0.7)
    assert f1_at(scores, labels, 0.75) == pytest.approx(0.5)  # 1 true positive, 2 predicted, 2 positives


def test_tied_scores_move_together_as_in_scikit_learn():
    scores, labels = np.array([0.9, 0.9, 0.5]), np.array([True, False, True])
    assert average_precision(scores, labels) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 20, 500) / 20, rng.random(500) < 0.3
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores))


SIMILARITY = np.array([[1.0, 0.9, 0.8, 0.1],
                       [0.9, 1.0, 0.3, 0.2],
                       [0.8, 0.3, 1.0, 0.85],
                       [0.1, 0.2, 0.85, 1.0]])
GROUPS = np.array(["a", "a", "b", "c"])


def test_best_f1_from_the_top_pairs_equals_sorting_them_all():
    rng = np.random.default_rng(1)
    labels = rng.random(20000) < 0.01
    for scores in (np.round(rng.random(20000) + labels * rng.random(20000), 2),  # many ties, a separable part
                   rng.random(20000)):  # no signal: the best F1 sits far down, so every pair is sorted
        everything = best_f1(scores, labels, top_per_positive=10 ** 9)
        assert best_f1(scores, labels, top_per_positive=3) == everything
        assert best_f1(scores, labels) == everything
    assert best_f1(np.full(500, 0.5), np.arange(500) < 2) == (pytest.approx(2 * 2 / 502), 0.5)  # one tie group


def test_knn_threshold_f1_by_hand():
    # t = 0.5, k = 2: product 0 predicts {0,1,2} vs {0,1}: 0.8; product 1 {1,0}: 1; product 2 {2,3,0} vs {2}: 0.5;
    # product 3 {3,2} vs {3}: 2/3. At t = 0.95 every product stands alone: 2/3, 2/3, 1, 1.
    assert knn_f1(SIMILARITY, GROUPS, [0.5, 0.95], k=2) == pytest.approx([(0.8 + 1 + 0.5 + 2 / 3) / 4, 5 / 6])
    # k = 1 keeps only the nearest: 0 and 1 find each other (1, 1); 2 and 3 find each other wrongly (2/3, 2/3).
    assert knn_f1(SIMILARITY, GROUPS, 0.5, k=1) == pytest.approx([5 / 6])
    # Between 0.85 and 0.9 exactly the true pair survives.
    f1, threshold = best_knn_threshold(SIMILARITY, GROUPS, k=2)
    assert f1 == pytest.approx(1.0) and 0.85 < threshold <= 0.9


def test_matching_threshold_comes_from_val_not_test():
    # On val the same-group pairs score 0.9, the others at most 0.3: the best threshold is 0.9.
    val = np.array([[1, 0.9, 0.3], [0.9, 1, 0.2], [0.3, 0.2, 1]])
    scores, _ = matching_scores(val, np.array(["a", "a", "b"]), SIMILARITY, GROUPS, k=2)
    assert scores["threshold"] == pytest.approx(0.9)
    # On test only pair (0, 1) reaches 0.9: one true positive, one predicted, one positive pair.
    assert scores["f1"] == pytest.approx(1.0)
    assert scores["pairs"] == 6 and scores["positive_pairs"] == 1
    # Ranking the 6 test pairs: (0,1) 0.9 is first and the only positive.
    assert scores["ap"] == pytest.approx(1.0)


def _weight_on_val(image, text, groups):
    (weight, expansion), unexpanded = setup_on_val(lambda w: w * image + (1 - w) * text, list(IMAGE_WEIGHTS),
                                                   [(0, 1.0)], groups)
    assert expansion == (0, 1.0) and unexpanded == (weight, expansion)
    return weight


def test_matching_image_weight_is_the_best_val_f1():
    groups = np.array(["a", "a", "b", "b"])
    # Images: same-group pairs 0.9, others 0.5. Titles: product 2 reads like group a (0.8), everything else 0.4.
    image = np.array([[1, .9, .5, .5], [.9, 1, .5, .5], [.5, .5, 1, .9], [.5, .5, .9, 1]])
    text = np.array([[1, .6, .8, .4], [.6, 1, .8, .4], [.8, .8, 1, .6], [.4, .4, .6, 1]])
    # w = 1: true pairs 0.9, false 0.5: F1 1. Every w up to 0.3 lets a false pair (0.8 title) reach the true
    # pairs' level (w * .9 + (1 - w) * .6 vs w * .5 + (1 - w) * .8: equal at w = 1/3); from 0.4 on, F1 is 1.
    assert _weight_on_val(image, text, groups) == pytest.approx(0.4)
    assert best_f1(*pair_scores(0.3 * image + 0.7 * text, groups))[0] < 1
    # Roles swapped: every weight up to 0.6 gives F1 1; ties go to the first grid point.
    assert _weight_on_val(text, image, groups) == pytest.approx(0.0)


# Group a is a chain: offers 0 and 2 look alike only through offer 1; product 3 (group b) looks like offer 0.
CHAIN = np.array([[1, .9, .5, .6, .2], [.9, 1, .85, .2, .2], [.5, .85, 1, .2, .2], [.6, .2, .2, 1, .8],
                  [.2, .2, .2, .8, 1]])
CHAIN_GROUPS = np.array(list("aaabb"))


def test_expansion_by_hand():
    # k = 1, alpha = 1: v0 = e0 + .9 e1 (its nearest), v2 = e2 + .85 e1. v0.v2 = .5 + .85 * .9 + .9 * .85 + .9 * .85
    # = 2.795; |v0|^2 = 1 + 2 * .9 * .9 + .81 = 3.43; |v2|^2 = 1 + 2 * .85 * .85 + .7225 = 3.1675.
    expanded = expand_similarity(CHAIN, 1, 1.0)
    assert expanded[0, 2] == pytest.approx(2.795 / np.sqrt(3.43 * 3.1675), abs=1e-6)
    assert np.allclose(np.diag(expanded), 1) and np.allclose(expanded, expanded.T)
    assert expand_similarity(CHAIN, 0, 3.0) is CHAIN


def test_expansion_equals_the_cosine_of_the_expanded_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(9, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    expanded = []
    for row in similarity:
        others = np.argsort(-np.where(np.arange(9) == len(expanded), -np.inf, row))[:2]
        vector = vectors[len(expanded)] + (np.clip(row[others], 0, None) ** 3) @ vectors[others]
        expanded.append(vector / np.linalg.norm(vector))
    expanded = np.array(expanded)
    assert np.allclose(expand_similarity(similarity, 2, 3.0), expanded @ expanded.T, atol=1e-6)


def test_setup_expands_only_when_val_gains():
    # Unexpanded, the best F1 is 8/9 (threshold 0.5 takes the look-alike pair 0-3 with the weak true pair 0-2);
    # one neighbour lifts 0-2 to 0.848 while 0-3 falls to 0.343: F1 1.
    assert best_f1(*pair_scores(CHAIN, CHAIN_GROUPS))[0] == pytest.approx(8 / 9)
    grid = [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert setup_on_val(lambda w: CHAIN, [None], grid, CHAIN_GROUPS) == ((None, (1, 1.0)), (None, (0, 1.0)))
    # Without k = 0 in the grid the expanded choice still comes from the grid, the unexpanded one is still scored.
    assert setup_on_val(lambda w: CHAIN, [None], [(2, 1.0)], CHAIN_GROUPS) == ((None, (2, 1.0)), (None, (0, 1.0)))
    # Separable already: no expansion (the tie goes to the first grid entry).
    separable = np.where(CHAIN_GROUPS[:, None] == CHAIN_GROUPS[None, :], 0.9, 0.1)
    assert setup_on_val(lambda w: separable, [None], grid, CHAIN_GROUPS)[0] == (None, (0, 1.0))


def test_zero_shot_view_is_chosen_on_val_never_on_test():
    # Prompts "shirt" and "watch" embed to the two axes. On val the text vectors point at their class and the
    # image vectors at the other one; on test it is the other way round. "auto" must pick text (val's best).
    axes = {"shirt": [1.0, 0.0], "watch": [0.0, 1.0]}
    encode = lambda prompts: np.array([axes[p] for p in prompts], dtype=np.float32)  # noqa: E731
    right, wrong = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    views = {"train": {v: right for v in ("image", "text", "fused")},
             "val": {"image": wrong, "text": right, "fused": wrong},
             "test": {"image": right, "text": wrong, "fused": right}}
    rep = Representation("m", views, "fused", frozenset(), encode_text=encode)
    labels = np.array(["shirt", "watch"], dtype=object)
    names = {"shirt": "shirt", "watch": "watch"}
    pick = lambda view, val: _zero_shot_view(rep, EvalConfig(zeroshot_view=view), labels, val, names, {}, ["{}"])  # noqa: E731
    assert pick("auto", labels) == "text"
    assert pick("image", labels) == "image"  # a configured view is used as is
    assert pick("auto", np.array([None, None], dtype=object)) == "fused"  # nothing labelled on val: the default


def test_probe_strength_is_chosen_on_val():
    # Two well-separated classes, one four times rarer. A very strong regularization (C = 1e-4) shrinks the
    # weights to nothing and predicts the majority class everywhere; C = 10 separates them. The choice must be
    # the C with the best val score, fit on train alone.
    rng = np.random.default_rng(0)

    def draw(n_common, n_rare):
        points = np.vstack([rng.normal([1, 0], 0.2, (n_common, 2)), rng.normal([0, 1], 0.2, (n_rare, 2))])
        return points, np.array(["common"] * n_common + ["rare"] * n_rare)

    (train_x, train_y), (val_x, val_y) = draw(80, 20), draw(40, 10)
    macro = lambda truth, probe, x: classification_scores(truth, probe.predict(x))["macro_f1"]  # noqa: E731
    chosen, on_val = select_probe(train_x, train_y, val_x, val_y, [10.0, 1e-4], 100, macro)
    assert chosen.C == 10.0 and on_val == pytest.approx(macro(val_y, chosen, val_x)) and on_val > 0.9
    assert np.allclose(chosen.coef_, fit_probe(train_x, train_y, 10.0, 100).coef_)
    assert set(fit_probe(train_x, train_y, 1e-4, 100).predict(val_x)) == {"common"}  # why 1e-4 loses
    # Ties go to the smaller C; without val labels the middle of the sorted list is fit alone.
    by_c = {1.0: 0.2, 10.0: 0.9, 100.0: 0.9, 1000.0: 0.1}
    assert select_probe(train_x, train_y, val_x, val_y, [1000.0, 100.0, 10.0, 1.0], 100,
                        lambda truth, probe, x: by_c[probe.C])[0].C == 10.0
    unscored, none = select_probe(train_x, train_y, None, None, [1000.0, 100.0, 10.0, 1.0], 100, macro)
    assert unscored.C == 100.0 and none is None


def test_probe_view_is_chosen_on_val():
    views = {split: {v: np.eye(2) for v in ("image", "text", "fused")} for split in ("train", "val", "test")}
    rep = Representation("m", views, "fused", frozenset())
    auto, fixed = EvalConfig(probe_view="auto"), EvalConfig(probe_view="image")
    assert probe_views(rep, auto) == ["image", "text", "fused"] and probe_views(rep, fixed) == ["image"]
    assert probe_view(rep, auto, {"image": 0.9, "text": 0.7, "fused": 0.8}) == "image"
    assert probe_view(rep, auto, {"image": 0.8, "text": 0.8, "fused": 0.8}) == "fused"  # ties: fused, text, image
    assert probe_view(rep, auto, {"image": 0.8, "text": 0.8, "fused": 0.7}) == "text"
    assert probe_view(rep, auto, {"image": None, "text": None, "fused": None}) == "fused"  # nothing scored on val
    assert probe_view(rep, fixed, {"image": 0.1, "text": 0.9}) == "image"  # a configured view is used as is


def test_precision_at_recall_90_by_hand():
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([True, False, True, True, False])
    # All 3 positives are found first at threshold 0.6, with 4 predicted.
    assert precision_at_recall(scores, labels, 0.9) == (pytest.approx(0.75), 0.6)


def test_image_hash_similarity():
    digits = hash_digits(["0" * 25 + "1414", "9" * 25 + "1414", "9" + "0" * 24 + "0202"])
    similarity = hash_similarity(digits, digits)
    assert similarity[0, 0] == 1.0 and similarity[0, 1] == 0.0
    # One of 25 digits differs by 9; the size digits (last 4) are ignored.
    assert similarity[0, 2] == pytest.approx(1 - 9 / (9 * 25))


def test_prompt_ensemble_is_the_normalized_mean_of_normalized_prompts():
    assert name_variants("Tshirts") == ["Tshirts", "Tshirt"] and name_variants("Dress") == ["Dress"]
    assert class_prompts("Red", ["{}", "{name} {}"], name="color") == ["Red", "color Red"]
    table = {"Red": [3.0, 4.0], "color Red": [1.0, 0.0], "Blue": [0.0, 2.0], "color Blue": [0.0, 1.0]}
    classifier = prompt_classifier(lambda prompts: np.array([table[p] for p in prompts]), ["Red", "Blue"],
                                   ["{}", "{name} {}"], name="color")
    red = np.array([0.6, 0.8]) + np.array([1.0, 0.0])
    assert np.allclose(classifier.toarray() if hasattr(classifier, "toarray") else classifier,
                       [red / np.linalg.norm(red), [0.0, 1.0]])
    predicted = zero_shot_predict(np.array([[1.0, 0.1], [0.0, 1.0]]), np.asarray(classifier), ["Red", "Blue"])
    assert predicted.tolist() == ["Red", "Blue"]


def test_classification_scores_by_hand():
    truth = np.array(["a", "a", "a", "b"])
    scores = classification_scores(truth, np.array(["a", "a", "b", "b"]))
    # F1: a = 2*2/(2+3) = 0.8, b = 2*1/(2+1) = 2/3; weighted by support 3 and 1.
    assert scores["top1"] == 0.75
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert scores["weighted_f1"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)


def test_clustering_recovers_separated_groups_and_scores_a_wrong_cut():
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    points = np.repeat(centres, 4, axis=0) + 0.01 * rng.standard_normal((12, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = np.repeat(["x", "y", "z"], 4)
    assert clustering_scores(points @ points.T, labels) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    shuffled = clustering_scores(points @ points.T, rng.permutation(labels))
    assert shuffled["nmi"] < 0.6 and shuffled["ari"] < 0.3


@pytest.mark.parametrize("classes", [2, 4])
def test_saved_heads_give_scikit_learns_probabilities(tmp_path, classes):
    rng = np.random.default_rng(classes)
    features = rng.standard_normal((80, 5)).astype(np.float32)
    labels = np.array([f"c{i}" for i in rng.integers(0, classes, 80)])
    probe = LogisticRegression(max_iter=200).fit(features, labels)
    save_heads(tmp_path / "heads", {"category": (probe, "text")}, {"data": "x"})
    meta, tensors = load_heads(tmp_path / "heads")
    ranked = apply_head(meta, tensors, "category", features[0])
    expected = dict(zip(probe.classes_, probe.predict_proba(features[:1])[0]))
    assert ranked[0][0] == probe.predict(features[:1])[0]
    assert {label: p for label, p in ranked} == pytest.approx(expected, abs=1e-5)
    assert head_view(meta, "category") == "text"
    # Heads saved before each head had its own view read the file's one view.
    assert head_view({"view": "fused", "heads": {"category": {"classes": []}}}, "category") == "fused"


def test_headline_passes_only_above_target_and_every_baseline():
    report = {"category": {"probe": {"top1": 0.9}, "zeroshot": {"weighted_f1": 0.72}},
              "attributes": {"color": {"probe_macro_f1": 0.4}, "usage": {"probe_macro_f1": 0.6}},
              "baselines": {"tfidf": {"category": {"probe": {"top1": 0.95}, "zeroshot": {"weighted_f1": 0.5}}},
                            "untrained": {"category": {"probe": {"top1": 0.3}}}}}
    assert lookup(report, "attributes.*.probe_macro_f1") == pytest.approx(0.5)
    assert lookup(report, "matching.f1") is None
    rows = {row["key"]: row for row in headline_rows(report)}
    assert set(rows) == {"category.probe.top1", "category.zeroshot.weighted_f1", "attributes.*.probe_macro_f1"}
    probe = rows["category.probe.top1"]
    assert probe["best_baseline"] == "tfidf" and probe["baseline"] == 0.95
    assert not probe["pass"] and probe["why"] == "below tfidf"
    assert rows["category.zeroshot.weighted_f1"]["pass"]


def test_headline_shows_the_image_view_zero_shot_beside_the_text_view():
    """The line CLIP and FashionCLIP compare with is the image view's, whichever view val chose for the headline."""
    by_view = {"image": {"weighted_f1": 0.48}, "text": {"weighted_f1": 0.81}}
    report = {"category": {"zeroshot": {"weighted_f1": 0.81, "view": "text", "by_view": by_view}},
              "baselines": {"untrained": {"category": {"zeroshot": {"by_view": {"image": {"weighted_f1": 0.05},
                                                                                "text": {"weighted_f1": 0.84}}}}}}}
    rows = [(row["task"], row["ours"], row["baseline"], row["pass"]) for row in headline_rows(report)]
    assert rows[1:] == [("category zero-shot (leaf), image view", 0.48, 0.05, True),
                        ("category zero-shot (leaf), text view", 0.81, 0.84, False)]


def test_eval_config_errors(tmp_path):
    with pytest.raises(EclipError, match="unknown task.*colour"):
        load_eval_config(tasks=["retrieval", "colour"])
    bad = tmp_path / "eval.toml"
    bad.write_text("probe_cc = 1.0\n")
    with pytest.raises(EclipError, match="eval.toml: unknown key.*probe_cc"):
        load_eval_config(bad)
    bad.write_text('category_templates = ["a photo"]\n')
    with pytest.raises(EclipError, match="exactly one"):
        load_eval_config(bad)
    bad.write_text("matching_expansion_neighbours = [0, -1]\n")
    with pytest.raises(EclipError, match="matching_expansion_neighbours must be >= 0"):
        load_eval_config(bad)
    bad.write_text("probe_cs = []\n")
    with pytest.raises(EclipError, match="probe_cs not empty"):
        load_eval_config(bad)
    assert load_eval_config().matching_expansions()[:3] == [(0, 1.0), (1, 1.0), (1, 3.0)]


def test_the_task_registry_is_the_only_list_of_tasks():
    assert EvalConfig().tasks == list(TASK_NAMES) == load_eval_config().tasks  # the shipped defaults too
    for name in TASK_NAMES:
        load_eval_config(tasks=[name])
    with pytest.raises(EclipError, match=f"choose from {', '.join(TASK_NAMES)}$"):
        load_eval_config(tasks=["colour"])


@pytest.mark.parametrize("task", TASKS.values(), ids=TASK_NAMES)
def test_every_registered_task_has_a_runner_and_splits(task):
    assert callable(task.runner)
    assert task.splits and task.splits <= set(SPLITS)


def test_caps_keep_whole_groups():
    groups = np.array(["a", "b", "a", "c", "c", "c", "d", "b", "a"])
    for seed in range(5):
        rows = whole_groups(groups, 5, np.random.default_rng(seed))
        kept = set(groups[rows])
        assert len(rows) <= 5 and sorted(rows) == list(rows)
        assert all(set(np.flatnonzero(groups == g)) <= set(rows) for g in kept)  # every offer of a kept group
    assert len(whole_groups(groups, 100, np.random.default_rng(0))) == len(groups)
