"""The concurrency limit shared by worker processes (issue 8): one limit for the gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.config.model import OnExceed
from gateway.workers.shared import SharedConcurrency, SharedCounts


@pytest.fixture
def counts() -> Iterator[SharedCounts]:
    shared = SharedCounts.create()
    try:
        yield shared
    finally:
        shared.close()


def test_each_worker_counts_in_its_own_slot(counts: SharedCounts) -> None:
    first, second = SharedConcurrency(counts, 0), SharedConcurrency(counts, 1)
    first.active += 1
    first.active += 1
    second.active += 1
    first.active -= 1
    assert (first.active, second.active, counts.total()) == (1, 1, 2)


def test_the_limit_is_checked_against_every_worker_together(counts: SharedCounts) -> None:
    first, second = SharedConcurrency(counts, 0), SharedConcurrency(counts, 1)
    for _ in range(3):
        first.active += 1
    assert not second.check(4, OnExceed.BYPASS).exceeded  # 3 of 4 taken, by the other worker
    second.active += 1
    check = second.check(4, OnExceed.BYPASS)
    assert check.exceeded and check.message is not None


def test_another_mapping_of_the_same_memory_sees_the_counts(counts: SharedCounts) -> None:
    """What a worker process does with the descriptor it inherits."""
    other = SharedCounts(os.dup(counts.fd))
    try:
        SharedConcurrency(other, 5).active = 7
        assert counts.get(5) == 7 and counts.total() == 7
        counts.set(5, 0)  # the main process clearing a dead worker's slot
        assert other.total() == 0
    finally:
        other.close()
