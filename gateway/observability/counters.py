"""Counters of what the gateway saw, by outcome and reason (in the spirit of the product's
npSslInspStats). Plain integers in one dict: cheap to bump on the hot path and trivially
exported by `tlsgw status` and a metrics endpoint later."""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self._values: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        self._values[name] += amount

    def get(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._values.items()))
