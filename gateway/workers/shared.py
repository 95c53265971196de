"""`limits.max_concurrent` across worker processes: one limit for the whole gateway.

Users set the limit for the gateway, not per process, and SO_REUSEPORT spreads flows by
a hash of their addresses, not evenly at every instant: splitting the limit N ways would
refuse flows in one worker while another has room. So every worker counts its decrypting
sessions in its own slot of a small shared memory array (a memfd the main process
creates and hands to each worker) and checks the limit against the sum of all slots.

One writer per slot, no lock: each slot is an aligned 8-byte integer written whole, and
readers only add them up. Two workers deciding at the same instant may both see room
for one more, so the gateway can exceed the limit by at most `workers - 1` sessions for
a moment; the limit protects memory and CPU, for which that is nothing. A worker that
dies leaves its count behind; the main process clears its slot before restarting it.
"""

from __future__ import annotations

import mmap
import os

from gateway.config.model import MAX_WORKERS
from gateway.policy.limits import ConcurrencyLimit

SLOT_BYTES = 8
SLOTS = MAX_WORKERS


class SharedCounts:
    """An array of SLOTS signed 64-bit counts in memory shared by the gateway's processes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SLOTS * SLOT_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._slots = memoryview(self._map).cast("q")

    @classmethod
    def create(cls) -> SharedCounts:
        """A new zeroed array; `fd` is what a worker process is given to attach to it."""
        fd = os.memfd_create("tlsgw-concurrency", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, SLOTS * SLOT_BYTES)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    def get(self, slot: int) -> int:
        return int(self._slots[slot])

    def set(self, slot: int, value: int) -> None:
        self._slots[slot] = value

    def total(self) -> int:
        return sum(self._slots)

    def close(self) -> None:
        self._slots.release()
        self._map.close()
        os.close(self.fd)


class SharedConcurrency(ConcurrencyLimit):
    """The concurrency limit of one worker: `active` is this worker's slot (the proxy
    raises and lowers it around each decrypted session), the limit is checked against
    the sum of every worker's."""

    def __init__(self, counts: SharedCounts, slot: int) -> None:
        self.counts = counts
        self.slot = slot
        super().__init__()

    @property  # type: ignore[override]
    def active(self) -> int:
        return self.counts.get(self.slot)

    @active.setter
    def active(self, value: int) -> None:
        self.counts.set(self.slot, value)

    def total(self) -> int:
        return self.counts.total()
