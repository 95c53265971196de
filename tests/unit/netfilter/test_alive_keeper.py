"""The renewal of the dead-man switch (issue 6): renewed while the event loop beats,
not renewed once it has hung, so a hung gateway stops holding the bridge too."""

from __future__ import annotations

import logging

import pytest

from netfilter.live import AliveKeeper


class FakeShell:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def send(self, line: str) -> bool:
        self.lines.append(line)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keeper() -> tuple[AliveKeeper, FakeShell, Clock]:
    shell, clock = FakeShell(), Clock()
    return AliveKeeper("tlsgw", shell, stall_limit=3.0, clock=clock), shell, clock  # type: ignore[arg-type]


def test_renews_while_the_loop_beats() -> None:
    alive, shell, clock = keeper()
    for step in range(10):
        clock.now = step * 0.5
        alive.beat()
        assert alive.renew_once()
    assert len(shell.lines) == 10 and alive.renewals == 10
    assert shell.lines[0].startswith("add element bridge tlsgw alive { tcp timeout 500ms }")


def test_a_busy_loop_is_still_renewed_a_hung_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    alive, shell, clock = keeper()
    alive.beat()
    clock.now = 2.9  # busy: late, not hung
    assert alive.renew_once()
    clock.now = 3.1
    with caplog.at_level(logging.ERROR):
        assert not alive.renew_once()
        assert not alive.renew_once()
    assert alive.stalled and caplog.text.count("no longer renewing") == 1
    alive.beat()
    assert alive.renew_once() and not alive.stalled
    assert len(shell.lines) == 2
