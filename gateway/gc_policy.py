"""How the gateway's processes tune Python's cyclic garbage collector once they serve.

Every flow allocates a few hundred container objects (records, frames, futures), so with
the default thresholds the collector runs every few flows, and each full collection walks
every object the process holds: the configuration, trust stores, certificates and every
idle connection's objects. That showed in the handshake profile (issue 8). Freezing what
startup built moves it out of the collector's sight for good (it lives as long as the
process anyway), and a higher first threshold makes collections rarer. Flow objects are
freed by reference counting as soon as a flow ends; only reference cycles wait for the
collector, and they are few and small.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) of container objects between young collections; the
# default is 700. The older generations keep their default ratios.
YOUNG_THRESHOLD = 20_000


def settle_after_startup() -> None:
    """Call once the process has built its runtime and is about to serve."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
