from __future__ import annotations

import math

import pytest

from eclip.train.schedule import batch_size_at, lr_at


def test_cosine_batch_schedule_grows_from_start_to_end_along_a_half_cosine():
    sizes = [batch_size_at(step, 101, 256, 4096, "cosine", 64) for step in range(101)]
    assert sizes[0] == 256 and sizes[-1] == 4096
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert all(size % 64 == 0 for size in sizes)
    # Halfway along a half-cosine is the midpoint; a quarter of the way is 1 - cos(pi/4) over 2 of the range.
    assert sizes[50] == 64 * round((256 + 4096) / 2 / 64)
    assert sizes[25] == 64 * round((256 + (4096 - 256) * (1 - math.cos(math.pi / 4)) / 2) / 64)


def test_constant_schedule_and_rounding_to_the_micro_batch():
    assert {batch_size_at(step, 10, 0, 512, "constant", 128) for step in range(10)} == {512}
    assert batch_size_at(0, 10, 100, 512, "cosine", 128) == 128  # rounded, and never below one micro-batch
    with pytest.raises(ValueError):
        batch_size_at(0, 10, 128, 512, "linear", 128)


def test_lr_warmup_then_constant_or_cosine():
    assert lr_at(0, 100, 1.0, 10, "constant") == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, "constant") == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10, "constant") == 1.0
    assert lr_at(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(99, 100, 1.0, 10, "cosine") < 0.01
