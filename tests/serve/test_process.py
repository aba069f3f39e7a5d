"""`eclip serve` as a real process: two workers sharing updates, an acknowledged add and removal surviving a kill
(SIGKILL: no shutdown code runs), and the command's errors."""

from __future__ import annotations

import io
import os
import signal
import subprocess

import httpx
import pytest
from PIL import Image

from eclip.cli import main
from eclip.index.journal import JOURNAL_FILE, SERVING_DIR, SNAPSHOT_FILE
from tests.conftest import trained_further
from tests.ports import free_port
from tests.serve.conftest import start_server


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the server and its worker processes, as a crash would
    process.wait()


@pytest.mark.slow
def test_acknowledged_updates_survive_a_kill_with_two_workers(served, emb_copy):
    run_dir, _, data_dir = served
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buffer, "JPEG")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(run_dir, emb_copy, data_dir, port, "--workers", "2")
    try:
        removed = httpx.get(f"{base}/api/search", params={"q": "shirt", "k": 1}).json()["results"][0]["product_id"]
        added = httpx.post(f"{base}/api/products", data={"product_id": "crash-1", "title": "Sky blue canvas tote bag"},
                           files={"image": ("t.jpg", buffer.getvalue(), "image/jpeg")}, timeout=30)
        assert added.status_code == 201
        assert httpx.delete(f"{base}/api/products/{removed}", timeout=30).status_code == 200
        # Fresh connections land on either worker: both follow the journal.
        for _ in range(6):
            with httpx.Client() as client:
                assert client.get(f"{base}/api/products/crash-1").status_code == 200
                assert client.get(f"{base}/api/products/{removed}").status_code == 404
    finally:
        kill(server)

    server = start_server(run_dir, emb_copy, data_dir, port)
    try:
        assert httpx.get(f"{base}/api/products/crash-1").json()["title"] == "Sky blue canvas tote bag"
        assert httpx.get(f"{base}/api/products/{removed}").status_code == 404
        # Its own photo and title: the query vector is the product's own (a one-step model ranks titles at random).
        found = httpx.post(f"{base}/api/search/combined", data={"text": "Sky blue canvas tote bag", "k": 100},
                           files={"image": ("t.jpg", buffer.getvalue(), "image/jpeg")}, timeout=30).json()["results"]
        assert found[0]["product_id"] == "crash-1"
        assert "crash-1" in [r["product_id"] for r in found] and removed not in [r["product_id"] for r in found]
        # The restart folded the journal into the snapshot.
        assert (emb_copy / SERVING_DIR / SNAPSHOT_FILE).is_file()
        assert (emb_copy / SERVING_DIR / JOURNAL_FILE).read_bytes() == b""
    finally:
        kill(server)


def test_serve_errors_are_one_line(served, tmp_path, capsys):
    run_dir, emb_dir, data_dir = served
    assert main(["serve", "--model", str(tmp_path), "--index", str(emb_dir)]) == 2
    assert "is not a finished `eclip train` run" in capsys.readouterr().err
    assert main(["serve", "--model", str(run_dir), "--index", str(tmp_path)]) == 2
    assert "is not a finished EMB_DIR (no meta.json)" in capsys.readouterr().err
    assert main(["serve", "--model", str(run_dir), "--index", str(emb_dir), "--max-k", "0"]) == 2
    assert "max_k (--max-k) must be positive, got 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(run_dir), "--index", str(emb_dir), "--query-encoder", "distilled"]) == 2
    assert "has no distilled query encoder: run `eclip distill" in capsys.readouterr().err
    further = trained_further(run_dir, data_dir, tmp_path / "further")  # its queries would land in another space
    assert main(["serve", "--model", str(further), "--index", str(emb_dir)]) == 2
    assert f"whose weights differ from those of {further}" in capsys.readouterr().err
