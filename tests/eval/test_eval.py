"""`eclip eval` and `eclip predict` end to end on real fashion-dev products: every report key the issue names,
scores that match a recomputation from the EMB_DIR, plots, saved heads, reuse, and bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from eclip.cli import main
from eclip.data.store import read_products
from eclip.models import embed_images, embed_texts, load_model
from eclip.index.embed import fuse
from eclip.index.vectors import read_embeddings
from eclip.eval.heads import apply_head, head_view, load_heads
from eclip.eval.report import PLOT_FILES, lookup, markdown
from eclip.eval.retrieval import retrieval_scores
from tests.conftest import trained_further
from tests.eval.conftest import rewritten_copy, with_column

pytestmark = pytest.mark.slow

TASK_KEYS = [f"retrieval.{d}.r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)] + [
    f"category.{kind}.{m}" for kind in ("zeroshot", "probe") for m in ("top1", "weighted_f1")] + [
    f"category.levels.{level}.{kind}.{m}" for level in ("1", "2", "3") for kind in ("zeroshot", "probe")
    for m in ("top1", "weighted_f1")] + [
    f"attributes.{name}.{m}" for name in ("gender", "color", "season", "usage")
    for m in ("zeroshot_macro_f1", "probe_macro_f1")] + [
    "matching.ap", "matching.f1", "matching.knn_f1", "matching.threshold", "matching.expansion_alpha",
    "matching.unexpanded.f1", "clustering.nmi", "clustering.ari", "clustering.category.nmi", "clustering.category.ari",
    "adult.auc", "adult.precision_at_recall_90"]
BASELINE_KEYS = {
    "tfidf": [k for k in TASK_KEYS if not k.startswith("retrieval")],
    "image_hash": ["matching.ap", "matching.f1", "matching.knn_f1", "matching.threshold", "matching.expansion_neighbours",
                   "matching.unexpanded.f1"],
    "untrained": TASK_KEYS,
}


@pytest.fixture(scope="module")
def report(eval_run) -> dict:
    return json.loads((eval_run[0] / "report.json").read_text())


def test_report_has_every_key_for_the_model_and_each_baseline(report, labelled_data):
    missing = [key for key in TASK_KEYS if not isinstance(lookup(report, key), float)]
    assert not missing
    assert sorted(report["baselines"]) == ["image_hash", "tfidf", "untrained"]
    for name, keys in BASELINE_KEYS.items():
        assert [key for key in keys if lookup(report["baselines"][name], key) is None] == [], name
    assert "retrieval" not in report["baselines"]["tfidf"] and list(report["baselines"]["image_hash"]) == ["matching"]
    assert report["skipped"] == {} and report["notes"] == []
    assert report["model"]["objective"] == "eclip" and report["model"]["steps"] == 4
    assert report["splits"]["test"] > 0 and sum(report["splits"].values()) == read_products(labelled_data).num_rows
    assert {"embed", "retrieval", "category", "attributes", "matching", "clustering", "adult", "total"} <= set(report["seconds"])
    assert report["versions"]["torch"] and report["versions"]["scikit-learn"]


def test_scores_are_in_range(report):
    for scores in [report] + list(report["baselines"].values()):
        for key in TASK_KEYS:
            value = lookup(scores, key)
            if value is not None and not key.endswith("threshold"):
                assert 0 <= value <= 1, key


def test_retrieval_matches_a_recomputation_from_embed(report, run_dir, labelled_data, tmp_path):
    emb = tmp_path / "emb"
    assert main(["embed", "--model", str(run_dir), "--data", str(labelled_data), "--out", str(emb)]) == 0
    table, vectors = read_embeddings(emb)
    test = pc.equal(table.column("split"), "test").to_numpy(zero_copy_only=False)
    vectors = {view: matrix[test] for view, matrix in vectors.items()}
    groups = read_products(labelled_data, split="test", columns=["group_id"]).column("group_id").to_numpy(zero_copy_only=False)
    expected, _ = retrieval_scores(vectors["image"], vectors["text"], groups, [1, 5, 10], 50)
    for direction in ("t2i", "i2t"):
        assert report["retrieval"][direction] == pytest.approx(expected[direction], abs=1e-6)


def test_markdown_plots_and_printed_headline(eval_run, report):
    out, printed = eval_run
    for name in ("report.md", "category_confusion.png", "matching_pr.png", "adult_pr.png", "retrieval_recall.png"):
        assert (out / name).stat().st_size > 1000, name
    markdown = (out / "report.md").read_text()
    assert "## Headline" in markdown and "| adult recognition | ROC AUC |" in markdown
    assert f"{report['matching']['f1']:.3f}" in markdown
    probe = report["category"]["probe"]
    assert f"category: {probe['view']} vectors, C = {probe['c']:g}; " in markdown  # what each head kept on val
    assert printed.strip().endswith(f"report: {out / 'report.md'}")
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert table[0] == "| task | metric | ours | best baseline | target | pass |" and len(table) == 2 + 13
    assert any(line.startswith("| category zero-shot (leaf), image view | weighted F1 |") for line in table)


def test_unchanged_run_is_reused(eval_run, run_dir, labelled_data, fast_config, capsys):
    out, _ = eval_run
    before = (out / "report.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["eval", "--model", str(run_dir), "--data", str(labelled_data), "--out", str(out),
                 "--config", str(fast_config)]) == 0
    assert "unchanged" in capsys.readouterr().out and (out / "report.json").stat().st_mtime_ns == before


def test_predict_applies_the_saved_heads(eval_run, run_dir, labelled_data, tmp_path, capsys):
    meta, tensors = load_heads(run_dir / "heads")
    assert sorted(meta["heads"]) == ["adult", "attr_color", "attr_gender", "attr_season", "attr_usage", "category"]
    product = read_products(labelled_data, split="test", columns=["title", "thumbnail"]).slice(0, 1).to_pylist()[0]
    image = tmp_path / "product.jpg"
    image.write_bytes(product["thumbnail"])
    model, _, _ = load_model(run_dir)
    vectors = {"image": embed_images(model, [product["thumbnail"]]), "text": embed_texts(model, [product["title"]])}
    vectors = {**vectors, "fused": fuse(vectors["image"], vectors["text"])}
    features = {name: vectors[head_view(meta, name)][0] for name in meta["heads"]}  # each head reads its own view
    capsys.readouterr()
    assert main(["predict", "--model", str(run_dir), "--task", "category", "--image", str(image),
                 "--title", product["title"], "--top", "2"]) == 0
    label, probability = apply_head(meta, tensors, "category", features["category"])[0]
    assert capsys.readouterr().out.startswith(f"category: {label} ({probability:.3f}), ")
    assert main(["predict", "--model", str(run_dir), "--task", "adult", "--image", str(image),
                 "--title", product["title"]]) == 0
    adult = dict(apply_head(meta, tensors, "adult", features["adult"]))[True]
    verdict = "restricted" if adult >= meta["heads"]["adult"]["threshold"] else "not restricted"
    assert f"adult: {verdict} (p = {adult:.3f}" in capsys.readouterr().out
    assert main(["predict", "--model", str(run_dir), "--task", "attributes", "--image", str(image),
                 "--title", product["title"]]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "attr_gender", "attr_color", "attr_season", "attr_usage"]
    # An input the category head reads is left out: a one-line error names it.
    view = head_view(meta, "category")
    partial, needs = {"image": (["--title", product["title"]], "give --image"),
                      "text": (["--image", str(image)], "give --title"),
                      "fused": (["--title", product["title"]], "give --image and --title")}[view]
    assert main(["predict", "--model", str(run_dir), "--task", "category", *partial]) == 2
    assert needs in capsys.readouterr().err


def _eval(run_dir, data, out, config, *extra) -> int:
    return main(["eval", "--model", str(run_dir), "--data", str(data), "--out", str(out), "--config", str(config), *extra])


def test_tasks_without_labels_are_skipped_with_a_note(run_dir, prepared_fashion, fast_config, tmp_path, capsys):
    def unlabel(table):
        table = table.drop_columns([name for name in table.column_names if name.startswith("attr_")])
        return with_column(table, "adult", pa.nulls(table.num_rows, pa.bool_()))

    data = rewritten_copy(prepared_fashion, tmp_path / "data", unlabel)
    capsys.readouterr()
    assert _eval(run_dir, data, tmp_path / "report", fast_config, "--tasks", "retrieval,attributes,adult",
                 "--baselines", "") == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert sorted(report["skipped"]) == ["adult", "attributes"] and report["baselines"] == {}
    assert "note: attributes skipped: no attr_* column" in printed and "note: adult skipped" in printed
    assert isinstance(lookup(report, "retrieval.t2i.r10"), float)


def test_only_the_products_the_tasks_read_are_embedded(run_dir, prepared_fashion, tmp_path):
    config = tmp_path / "eval.toml"
    config.write_text("probe_max_train = 100\n")
    assert _eval(run_dir, prepared_fashion, tmp_path / "retrieval", config, "--tasks", "retrieval", "--baselines", "") == 0
    report = json.loads((tmp_path / "retrieval" / "report.json").read_text())
    assert report["products_used"] == {"train": 0, "val": 0, "test": report["splits"]["test"]}
    assert _eval(run_dir, prepared_fashion, tmp_path / "category", config, "--tasks", "category", "--baselines", "") == 0
    report = json.loads((tmp_path / "category" / "report.json").read_text())
    assert 90 <= report["products_used"]["train"] <= 100 < report["splits"]["train"]  # whole groups of 3 offers
    assert report["products_used"]["val"] == report["splits"]["val"]  # the zero-shot view is chosen on val


def test_bad_input_is_one_line(run_dir, prepared_fashion, fast_config, tmp_path, capsys):
    no_test = rewritten_copy(prepared_fashion, tmp_path / "no_test",
                             lambda t: with_column(t, "split", pc.replace_substring(t.column("split"), "test", "train")))
    foreign = rewritten_copy(prepared_fashion, tmp_path / "foreign",
                             lambda t: with_column(t, "title", pa.array(["갈색 가죽 지갑 남성용"] * t.num_rows)))
    cases = [
        ((prepared_fashion, "--tasks", "retrieval,colour"), "unknown task(s) colour; choose from retrieval"),
        ((prepared_fashion, "--baselines", "bm25"), "unknown baseline(s) bm25"),
        ((no_test,), "the test split is empty"),
        ((foreign,), "tokenizer does not fit"),
    ]
    for (data, *extra), message in cases:
        capsys.readouterr()
        assert _eval(run_dir, data, tmp_path / "report", fast_config, *extra) == 2, message
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("option, message", [("tfidf_max_features = 0", "tfidf_max_features and confusion_classes"),
                                             ("seed = -1", "seed must be 0 or more")])
def test_bad_config_values_are_one_line(run_dir, prepared_fashion, tmp_path, capsys, option, message):
    config = tmp_path / "eval.toml"
    config.write_text(option + "\n")
    assert _eval(run_dir, prepared_fashion, tmp_path / "report", config) == 2
    error = capsys.readouterr().err
    assert f"bad eval config: {message}" in error and error.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_every_table_row_has_as_many_cells_as_its_separator(eval_run, report):
    model_alone = markdown({**report, "baselines": {}})
    assert "| score | ours |\n| --- | --- |" in model_alone
    for text in ((eval_run[0] / "report.md").read_text(), model_alone):
        tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("| ")]
        assert len(tables) == 7  # the headline and one per task
        for table in tables:
            cells = [line.count("|") for line in table]
            assert set(table[1].strip("| ").split(" | ")) == {"---"} and cells == [cells[1]] * len(table), table


def test_plots_of_tasks_the_report_does_not_hold_are_removed(eval_run, run_dir, labelled_data, fast_config,
                                                               tmp_path):
    out = Path(shutil.copytree(eval_run[0], tmp_path / "report"))
    assert sorted(path.name for path in out.glob("*.png")) == sorted(PLOT_FILES)
    assert _eval(run_dir, labelled_data, out, fast_config, "--tasks", "retrieval", "--baselines", "") == 0
    assert sorted(path.name for path in out.glob("*.png")) == ["retrieval_recall.png"]


def test_out_is_checked_before_any_work(run_dir, prepared_fashion, fast_config, tmp_path, capsys):
    prepare_report = (prepared_fashion / "report.json").read_bytes()
    afile = tmp_path / "afile.txt"
    afile.write_text("hi")
    cases = [(prepared_fashion, "holds other files than `eclip eval` writes"), (afile, "is a file, not a folder"),
             (afile / "sub", f"lies under {afile}, which is a file")]
    for out, message in cases:
        capsys.readouterr()
        assert _eval(run_dir, prepared_fashion, out, fast_config) == 2, out
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert (prepared_fashion / "report.json").read_bytes() == prepare_report and afile.read_text() == "hi"


def _product(data, folder) -> tuple[Path, str]:
    """A test product's image file and title."""
    product = read_products(data, split="test", columns=["title", "thumbnail"]).slice(0, 1).to_pylist()[0]
    image = folder / "product.jpg"
    image.write_bytes(product["thumbnail"])
    return image, product["title"]


def _saved_heads(run) -> dict:
    return json.loads((run / "heads" / "heads.json").read_text())["heads"]


def test_an_eval_of_some_tasks_keeps_the_other_tasks_heads(eval_run, run_dir, labelled_data, fast_config, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    before = _saved_heads(run)
    assert _eval(run, labelled_data, tmp_path / "attributes", fast_config, "--tasks", "attributes", "--baselines", "") == 0
    after = _saved_heads(run)
    assert sorted(after) == sorted(before)
    for name, entry in after.items():
        if name.startswith("attr_"):  # refit by this eval, which is recorded with each
            assert entry["report"] == str((tmp_path / "attributes").resolve())
            assert entry["data"] == str(labelled_data.resolve()) and entry["weights"]["sha256"]
        else:
            assert entry == before[name]
    image, title = _product(labelled_data, tmp_path)
    assert main(["predict", "--model", str(run), "--task", "category", "--image", str(image), "--title", title]) == 0


def test_a_reused_report_needs_its_heads_still_saved(run_dir, labelled_data, fast_config, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    shutil.rmtree(run / "heads")
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):  # the second eval of the adult task replaces the first one's adult head
        assert _eval(run, labelled_data, out, fast_config, "--tasks", "adult", "--baselines", "") == 0
    assert _saved_heads(run)["adult"]["report"] == str(second.resolve())
    capsys.readouterr()
    assert _eval(run, labelled_data, first, fast_config, "--tasks", "adult", "--baselines", "") == 0
    assert "unchanged" not in capsys.readouterr().out  # run again: its head is back
    assert _saved_heads(run)["adult"]["report"] == str(first.resolve())
    assert _eval(run, labelled_data, first, fast_config, "--tasks", "adult", "--baselines", "") == 0
    assert "unchanged" in capsys.readouterr().out
    image, title = _product(labelled_data, tmp_path)
    assert main(["predict", "--model", str(run), "--task", "category", "--image", str(image), "--title", title]) == 2
    error = capsys.readouterr().err
    assert f"has no category head: run `eclip eval --model {run} --data DATA_DIR --out REPORT_DIR --tasks category`" \
           in error and error.count("\n") == 1


def test_predict_refuses_heads_fit_on_other_weights(eval_run, run_dir, prepared_fashion, labelled_data, tmp_path,
                                                    capsys):
    image, title = _product(labelled_data, tmp_path)
    copied = Path(shutil.copytree(run_dir, tmp_path / "copied"))
    os.utime(copied / "model.safetensors")  # a copy with new file times keeps the weights: its heads still apply
    assert main(["predict", "--model", str(copied), "--task", "adult", "--image", str(image), "--title", title]) == 0
    further = trained_further(run_dir, prepared_fashion, tmp_path / "further")
    capsys.readouterr()
    assert main(["predict", "--model", str(further), "--task", "adult", "--image", str(image), "--title", title]) == 2
    error = capsys.readouterr().err
    assert f"the adult heads in {further / 'heads'} were not fit on the current weights of {further}" in error
    assert "re-run `eclip eval" in error and error.count("\n") == 1


def test_predict_bad_input_is_one_line(eval_run, run_dir, labelled_data, tmp_path, capsys, monkeypatch):
    from PIL import Image

    # Pillow's own limit, as in a fresh `eclip predict` process (importing eclip.data.images lifts it).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    image, title = _product(labelled_data, tmp_path)
    bomb, large = tmp_path / "bomb.png", tmp_path / "large.png"
    Image.new("1", (15000, 12000)).save(bomb)  # 180 megapixels in a few kilobytes: Pillow refuses it as it opens
    Image.new("1", (8000, 6000)).save(large)  # 48 megapixels: under Pillow's limit, over prepare's cap
    cases = [
        (["--image", str(image), "--title", title, "--top", "0"], "--top must be positive"),
        (["--image", str(image), "--title", title, "--top", "-1"], "--top must be positive"),
        (["--image", str(image), "--title", "   "], "--title is blank"),
        (["--image", str(bomb), "--title", title], "image_too_large"),
        (["--image", str(large), "--title", title], "image_too_large"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["predict", "--model", str(run_dir), "--task", "category", *extra]) == 2, extra
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
