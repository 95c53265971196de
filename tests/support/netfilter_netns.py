"""Fresh network namespaces for the netfilter integration tests.

Each namespace gets a uuid suffix, so runs never collide, and is deleted when the
`with` block ends, also when the test failed. Processes a test starts in a namespace
are its own to stop by PID before that (they outlive a deleted namespace).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ROOT_REASON = "needs root: creates network namespaces and programs nftables in them"
# Generous bound on one `ip`/`nft` call in a namespace, so a hung tool fails the test
# instead of blocking the suite; it is not a timing assertion.
COMMAND_TIMEOUT_S = 60.0


def require_root(*tools: str) -> None:
    """Skip the calling test with a clear reason unless it runs as root with these tools."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs these commands on PATH: {', '.join(missing)}")


def unique_name(prefix: str) -> str:
    """`prefix` + 8 hex characters; keep prefix short (namespace names show up in errors)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextmanager
def namespace(prefix: str = "tlsgw-nf-") -> Iterator[str]:
    """A new, empty network namespace (loopback up), deleted on exit."""
    name = unique_name(prefix)
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def run(*argv: str, stdin: str | None = None) -> str:
    """Run a command, failing with its stderr when it fails; returns stdout."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
    return done.stdout


def in_netns(netns: str, *argv: str, stdin: str | None = None) -> str:
    return run("ip", "netns", "exec", netns, *argv, stdin=stdin)
