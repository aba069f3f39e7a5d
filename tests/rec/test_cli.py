import json

import numpy as np
import pytest

from eclip.cli import main


@pytest.mark.slow
def test_train_resume_eval_recommend(tmp_path, capsys):
    rng = np.random.default_rng(0)
    starts = rng.integers(20, size=150)
    lines = [f"u{u} " + " ".join(f"i{(s + k) % 20}" for k in range(6)) for u, s in enumerate(starts)]
    sequences = tmp_path / "seq.txt"
    sequences.write_text("\n".join(lines) + "\n")
    small = ["--set", "model.dim=16", "--set", "model.max_len=8", "--set", "train.batch_size=32",
             "--set", "train.val_cases=0", "--set", "train.epochs=2"]
    bert, sas = tmp_path / "bert", tmp_path / "sas"
    assert main(["rec", "train", str(sequences), "--out", str(bert), *small]) == 0
    assert main(["rec", "train", str(sequences), "--out", str(sas), *small, "--set", "model.causal=true",
                 "--set", "train.time_limit_minutes=1e-9"]) == 0
    assert "epoch 1:" in capsys.readouterr().out
    # --resume takes the run's own config; only the stopping rule changes here
    assert main(["rec", "train", str(sequences), "--out", str(sas), "--resume",
                 "--set", "train.time_limit_minutes=0"]) == 0
    assert "epoch 2:" in capsys.readouterr().out

    # 20 items: the default 100 negatives cannot be drawn, and the error says how many can.
    assert main(["rec", "eval", str(bert)]) == 2
    assert capsys.readouterr().err.startswith("eclip rec: error: --negatives 100: a user has only 14 items to draw "
                                              "negatives from (the 20 items with training interactions less their own)")
    assert main(["rec", "eval", str(bert), str(sas), "--negatives", "10", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "150 test cases, 20 items" in out and "full ranking" in out and "10 popularity-sampled negatives" in out
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [(r["model"], r["protocol"]) for r in report["rows"]] == [
        ("most popular", "full"), ("most popular", "sampled"), ("BERT4Rec [bert]", "full"),
        ("BERT4Rec [bert]", "sampled"), ("SASRec (causal) [sas]", "full"), ("SASRec (causal) [sas]", "sampled")]

    assert main(["rec", "recommend", str(sas), "--user", "u0", "-k", "3"]) == 0
    recommended = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert len(recommended) == 3 and not set(recommended) & set(lines[0].split()[1:])

    # BERT4Rec started from the SASRec-style run's weights, and the two scored and recommending as one ensemble.
    warm = tmp_path / "warm"
    assert main(["rec", "train", str(sequences), "--out", str(warm), *small, "--init", str(sas)]) == 0
    assert main(["rec", "eval", str(warm), str(sas), "--ensemble", "--negatives", "10", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["model"] for r in report["rows"] if r["protocol"] == "full"] == [
        "most popular", "BERT4Rec [warm]", "SASRec (causal) [sas]", "ensemble: BERT4Rec [warm] + SASRec (causal) [sas]"]
    assert main(["rec", "eval", str(sas), "--ensemble"]) == 2
    assert capsys.readouterr().err == "eclip rec: error: --ensemble needs at least two RUN_DIRs\n"
    assert main(["rec", "recommend", str(warm), str(sas), "--user", "u0", "-k", "3"]) == 0
    together = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert len(together) == 3 and not set(together) & set(lines[0].split()[1:])

    # The sequences file moves: --items needs only the run, --user and eval take --sequences.
    moved = sequences.rename(tmp_path / "moved.txt")
    assert main(["rec", "recommend", str(sas), "--items", *lines[0].split()[1:], "-k", "3"]) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == recommended
    assert main(["rec", "recommend", str(sas), "--user", "u0"]) == 2
    assert capsys.readouterr().err == (f"eclip rec: error: {sas}: trained on {sequences}, which is no longer there; "
                                       "pass --sequences with the file's new place\n")
    assert main(["rec", "recommend", str(sas), "--user", "u0", "-k", "3", "--sequences", str(moved)]) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == recommended


def test_bad_input_is_one_line_with_the_line_number(tmp_path, capsys):
    sequences = tmp_path / "seq.txt"
    sequences.write_text("u1 a b c\nu2\n")
    assert main(["rec", "train", str(sequences), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (f"eclip rec: error: {sequences}:2: user 'u2' has no items; "
                                               "expected 'user item1 item2 ...'")
    assert main(["rec", "train", str(sequences), "--out", str(tmp_path / "run"), "--set", "train.epoch=3"]) == 2
    assert "--set 'train.epoch=3'" in capsys.readouterr().err
    assert main(["rec", "eval", str(tmp_path / "absent")]) == 2
    assert "no model.safetensors" in capsys.readouterr().err
    graph_run = tmp_path / "graph-run"  # what `eclip graph train` leaves: a model.safetensors but no rec config
    graph_run.mkdir()
    for name in ("model.safetensors", "train.json", "embeddings.parquet"):
        (graph_run / name).write_bytes(b"")
    assert main(["rec", "recommend", str(graph_run), "--items", "a"]) == 2
    assert capsys.readouterr().err == (f"eclip rec: error: {graph_run}: not a rec run (no config.json); give a folder "
                                       "written by eclip rec train\n")
    assert main(["rec", "eval", str(tmp_path / "absent"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "eclip rec: error: --negatives and --seed must be 0 or more\n"


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    sequences = tmp_path / "seq.txt"
    sequences.write_text("u1 a b c\nu2 b c a\n")
    taken = tmp_path / "afile"
    taken.write_text("not a folder")
    assert main(["rec", "train", str(sequences), "--out", str(taken), "--set", "train.epochs=1"]) == 2
    assert capsys.readouterr().err == f"eclip rec: error: {taken}: exists and is not a folder; choose another --out\n"
    assert main(["rec", "eval", str(tmp_path / "run"), "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"eclip rec: error: {taken}: exists and is not a folder; choose another --out\n"
