"""Run the real systemd-networkd inside a network namespace, on a given directory of
.netdev/.network files, to prove generated files do what they say.

networkd runs in a private mount namespace too, where the file directory is bind-mounted
over /etc/systemd/network, /run/systemd and /run/dbus are empty tmpfs (so it neither
sees nor registers with the host's services), and /sys is read-only (networkd then does
not wait for udev, which is not running in a namespace). The host's mounts are never
changed. The process is started here and stopped here, by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

NETWORKD = "/lib/systemd/systemd-networkd"
# Generous bound for networkd to configure a few veths on a loaded 2-core machine; a
# deadline for polling, not a timing assertion.
SETTLE_TIMEOUT_S = 30.0

_WRAPPER = """#!/bin/sh
set -e
mount --make-rprivate /
mount --bind "$1" /etc/systemd/network
mkdir -p /run/systemd /run/dbus
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/dbus
mount -o remount,bind,ro /sys
mkdir -p /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif
exec "$2"
"""


def networkd_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: runs systemd-networkd in a network namespace"
    if not os.access(NETWORKD, os.X_OK):
        return f"needs {NETWORKD} (Debian's systemd package)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    try:
        import pwd

        pwd.getpwnam("systemd-network")
    except KeyError:
        return "needs the systemd-network user"
    return None


@contextmanager
def networkd_in(netns: str, config_dir: Path, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    wrapper = workdir / "networkd-wrapper.sh"
    wrapper.write_text(_WRAPPER)
    wrapper.chmod(0o755)
    log = (workdir / "networkd.log").open("wb")
    # ip netns exec, unshare and the wrapper all exec: the PID is networkd's own.
    process = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "-m", str(wrapper), str(config_dir),
                                NETWORKD], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_until(condition: Callable[[], bool], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"networkd did not get there: {what}\n{tail}")
        time.sleep(0.1)
