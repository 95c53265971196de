"""`python -m gateway.workers --index I --channel-fd F --shared-fd S --parent PID`: a
worker process, started only by the main process (`pool.py`), never by hand.

The first thing it does is ask the kernel to SIGKILL it when its parent dies
(PR_SET_PDEATHSIG), then check that the parent did not die before that request: a worker
must never outlive the process that owns the rules and would restart or stop it.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_ORPHANED = 3


def set_parent_death_signal(signum: int = signal.SIGKILL) -> None:
    """Raises: OSError when prctl fails (it does not on Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway.workers", description=__doc__)
    parser.add_argument("--index", type=int, required=True, help="worker number, 0..workers-1")
    parser.add_argument("--channel-fd", type=int, required=True, help="this worker's end of its channel")
    parser.add_argument("--shared-fd", type=int, required=True, help="the shared concurrency counts (memfd)")
    parser.add_argument("--parent", type=int, required=True, help="PID of the main process")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    set_parent_death_signal()
    if os.getppid() != args.parent:
        return EXIT_ORPHANED  # the main process died before the request above took effect
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(levelname)s worker {args.index} (pid {os.getpid()}) %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Ctrl-C in a terminal and a reload signal sent to the whole group are the main
    # process's business; it stops and reloads the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    import socket

    from gateway.workers.shared import SharedCounts
    from gateway.workers.worker import Worker

    worker = Worker(args.index, socket.socket(fileno=args.channel_fd), SharedCounts(args.shared_fd))
    try:
        import uvloop  # as the main process: the event loop in C (see cli.cmd_run)
    except ImportError:
        import asyncio

        asyncio.run(worker.run())
    else:
        uvloop.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
