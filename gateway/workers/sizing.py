"""How many processes serve connections. Pure: the CPU count is passed in.

`workers: 1` keeps today's single process, which serves and owns everything. Above one,
the main process stops serving and N workers do: the main process then runs only the
control plane (rules, the dead-man switch's heartbeat, the control socket, counters),
so a flood of handshakes can neither starve the heartbeat that keeps the rules alive
nor crash the process that must leave the bridge in fallback.
"""

from __future__ import annotations

from gateway.config.model import MAX_WORKERS, WORKERS_AUTO


def resolve_workers(setting: int | str, usable_cpus: int) -> int:
    """The number of serving processes for `gateway.workers`.

    `auto` is one per CPU this process may run on (its affinity mask, not the machine's
    CPU count: a gateway pinned to 2 of 16 cores gains nothing from 16 workers), within
    1..MAX_WORKERS.
    """
    if setting == WORKERS_AUTO:
        return max(1, min(usable_cpus, MAX_WORKERS))
    if isinstance(setting, bool) or not isinstance(setting, int) or not 1 <= setting <= MAX_WORKERS:
        raise ValueError(f"gateway.workers: {setting!r} is neither {WORKERS_AUTO} nor 1..{MAX_WORKERS}")
    return setting


def uses_worker_processes(count: int) -> bool:
    """One serving process is the main process itself; more are separate workers."""
    return count > 1
