from __future__ import annotations

import pytest

from gateway.workers.sizing import resolve_workers, uses_worker_processes


@pytest.mark.parametrize(("setting", "cpus", "expected"), [
    ("auto", 2, 2),
    ("auto", 1, 1),
    ("auto", 128, 64),
    ("auto", 0, 1),
    (1, 16, 1),
    (3, 2, 3),
    (64, 2, 64),
], ids=["auto-two-cpus", "auto-one-cpu", "auto-capped-at-64", "auto-never-zero", "one-ignores-cpus",
        "explicit-above-cpus", "explicit-maximum"])
def test_worker_count_resolves_setting_and_cpus(setting: int | str, cpus: int, expected: int) -> None:
    assert resolve_workers(setting, cpus) == expected


@pytest.mark.parametrize("setting", [0, 65, "two", True], ids=["zero", "above-64", "word", "boolean"])
def test_worker_count_refuses_values_the_loader_would_refuse(setting: object) -> None:
    with pytest.raises(ValueError):
        resolve_workers(setting, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "separate"), [(1, False), (2, True), (64, True)], ids=["one", "two", "many"])
def test_only_more_than_one_serving_process_means_workers(count: int, separate: bool) -> None:
    assert uses_worker_processes(count) is separate
