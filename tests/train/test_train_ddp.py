"""Two CPU processes on gloo (DDP + differentiable all-gather) give the single-process full-batch gradients,
with and without gradient caching; each process holds half of the batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eclip.train.gradcache import contrastive_backward
from eclip.train.loss import Objective
from tests.ports import free_port
from tests.train.train_helpers import gradients, max_relative_error, split, tiny_batch, tiny_model

BATCH = 8
GROUPS = [0, 1, 1, 2, 3, 3, 3, 4]  # group 1 and group 3 straddle the two processes' halves


SCENARIOS = [(2, "eclip"), (4, "clip"), (2, "siglip")]  # (micro-batch per process, objective): 2 = cached


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for index, (micro, objective_name) in enumerate(SCENARIOS):
            model = tiny_model(seed=rank, dropout=0.0)  # different seeds: DDP must broadcast rank 0's weights
            model.logit_bias.requires_grad_(objective_name == "siglip")
            network = torch.nn.parallel.DistributedDataParallel(model)
            objective = Objective(objective_name)
            batch = tiny_batch(BATCH, groups=GROUPS)
            half = BATCH // world
            local = {key: value[rank * half:(rank + 1) * half] for key, value in batch.items()}
            contrastive_backward(lambda micro_batch: network(**micro_batch), split(local, micro), objective,
                                 [getattr(model, n) for n in objective.scalar_names], local["groups"],
                                 no_sync=network.no_sync)
            if rank == 0:
                torch.save(gradients(model), f"{out}-{index}.pt")
        # Neither rank tears gloo down while the other still uses it: an early teardown aborted a rank now and
        # then ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_gradients(tmp_path_factory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("ddp") / "rank0")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
    return [torch.load(f"{out}-{index}.pt", weights_only=True) for index in range(len(SCENARIOS))]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=["cached-eclip", "plain-clip", "cached-siglip"])
def test_two_gloo_processes_match_the_single_process_gradient(ddp_gradients, index):
    objective = SCENARIOS[index][1]
    model = tiny_model(seed=0, dropout=0.0)
    model.logit_bias.requires_grad_(objective == "siglip")
    batch = tiny_batch(BATCH, groups=GROUPS)
    loss_fn = Objective(objective)
    loss_fn(list(model(**{k: v for k, v in batch.items() if k != "groups"})),
            [getattr(model, n) for n in loss_fn.scalar_names], batch["groups"]).backward()
    assert max_relative_error(ddp_gradients[index], gradients(model)) < 1e-5
