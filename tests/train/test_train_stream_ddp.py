"""Two gloo processes train on the stream (each its own share of the row groups, windows smaller than the share,
category and group batches): a run killed after step 3 and resumed from its step-2 checkpoint ends with the
weights and losses of the uninterrupted run, bit for bit. The processes are set up as torchrun sets them up."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from eclip.models.image_processing import ImagePreprocessing
from eclip.train.config import AugmentConfig
from eclip.train.dataset import PairDataset
from eclip.train.loop import train
from eclip.train.stream import epoch_windows
from tests.ports import free_port
from tests.train.train_helpers import resharded_copy, small_config


class _Killed(Exception):
    pass


def _config():
    return small_config(steps=5, checkpoint_every=2, shuffle_buffer=40, category_batches=True, group_batches=True)


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    try:
        train(data, f"{out}/whole", _config())

        def die_after_step_3(step):
            if step == 3:  # every process dies at the same step, as when the job is killed
                raise _Killed
        try:
            train(data, f"{out}/broken", _config(), on_step=die_after_step_3)
        except _Killed:
            pass
        train(data, f"{out}/broken", _config(), resume=True)
        dist.barrier()  # neither process tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_streamed_processes_killed_and_resumed_equal_an_uninterrupted_run(fashion_data_dir, tmp_path):
    data = resharded_copy(fashion_data_dir, tmp_path / "data", shards=3, row_group_rows=24)
    mp.spawn(_worker, args=(2, free_port(), str(data), str(tmp_path)), nprocs=2, join=True)

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "broken" / "model.safetensors"))
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    lines = lambda run: [record for record in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                         if "loss" in record]  # the steps' lines, not a validation's
    assert [r["loss"] for r in lines(tmp_path / "whole")] == [r["loss"] for r in lines(tmp_path / "broken")]
    checkpoint = torch.load(tmp_path / "broken" / "checkpoints" / "step-0000002.pt", weights_only=True)
    drawn = sum(r["batch_size"] for r in lines(tmp_path / "whole")[:2]) // 2  # rows each process drew
    expected = []
    for rank in (0, 1):  # each process's own place in its own share: the windows it has passed, the cursor
        sizes = [sum(u.rows for u in window) for window in
                 epoch_windows(PairDataset(data, ImagePreprocessing(16), AugmentConfig(), world=2).units, 0, 0, rank, 2, 40)]
        window = int(np.searchsorted(np.cumsum(sizes), drawn, side="right"))
        expected.append({"epoch": 0, "window": window, "cursor": drawn - sum(sizes[:window])})
    assert checkpoint["sampler"] == expected
    assert sum(r["batch_size"] for r in lines(tmp_path / "whole")) // 2 > 40  # the run crossed a window
