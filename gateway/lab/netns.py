"""Network-namespace primitives for the test lab, driving iproute2's `ip` command.

Why a subprocess and not netlink: the lab is built once per test or demo, a few dozen
operations, so `ip` costs milliseconds and every step is one command an operator can paste
into a shell to reproduce a failure. Every failure therefore names the exact command.

Why `ip netns exec` for processes: it bind-mounts `/etc/netns/NAME/*` over `/etc/`
(DESIGN.md section 3), which is how a host name can exist for one namespace only, and it
`exec`s the command without forking, so the PID we hold is the program's own PID.

A process started in a namespace survives the deletion of that namespace, so everything
that starts one returns a `BackgroundProcess` that is stopped by its PID, never by name.

Only the lab and its tests use this module; the gateway never creates namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import IO

from gateway.errors import TlsgwError

IP = "ip"
NETNS_RUN_DIR = Path("/run/netns")
# Per-namespace files that `ip netns exec` bind-mounts over /etc (iproute2 convention).
NETNS_ETC_DIR = Path("/etc/netns")
# Linux IFNAMSIZ is 16 including the terminating NUL.
IFNAME_MAX = 15
# Generous bound for one `ip`/`sysctl` call; they take milliseconds, so hitting it means a hang.
COMMAND_TIMEOUT = 30.0
# How long a process gets to exit after SIGTERM before SIGKILL; nginx and Python servers
# exit in well under a second.
STOP_GRACE_SECONDS = 5.0
# Lines of a background process's output quoted in an error, enough to show why it died.
LOG_TAIL_LINES = 20


class NetnsError(TlsgwError):
    """A lab command failed; carries the command so the failure can be reproduced by hand."""

    def __init__(
        self, command: Sequence[str], message: str, returncode: int | None = None, stderr: str = ""
    ) -> None:
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        code = f" (exit {returncode})" if returncode is not None else ""
        super().__init__(f"{' '.join(self.command)}: {message}{code}{detail}")


def check_ifname(name: str) -> str:
    """Refuse an interface name the kernel would reject, before running anything."""
    if not name or len(name) > IFNAME_MAX or "/" in name or any(c.isspace() for c in name):
        rule = f"1..{IFNAME_MAX} characters, no '/' or spaces"
        raise NetnsError(("ip", "link", name), f"invalid interface name {name!r} ({rule})")
    return name


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command in the current namespace, text mode, output captured.

    Raises:
        NetnsError: the command is missing, timed out, or (with `check`) exited non-zero.
    """
    command = list(argv)
    try:
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except FileNotFoundError as e:
        raise NetnsError(command, f"command not found ({e.filename})") from e
    except subprocess.TimeoutExpired as e:
        raise NetnsError(command, f"timed out after {timeout:g}s") from e
    if check and result.returncode != 0:
        raise NetnsError(command, "failed", result.returncode, result.stderr)
    return result


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside `namespace`."""
    return [IP, "netns", "exec", namespace, *argv]


def run_in(
    namespace: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (`ip netns exec NAME ...`) and wait for it.

    Raises:
        NetnsError: as `run`; the command in the error includes the `ip netns exec` prefix.
    """
    return run(exec_argv(namespace, argv), check=check, input=input, timeout=timeout)


def ip(namespace: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n NS] ARGS...`; `-n` avoids a mount namespace per call, unlike `netns exec`."""
    prefix = [IP] if namespace is None else [IP, "-n", namespace]
    return run([*prefix, *args], check=check)


# --- namespaces ----------------------------------------------------------------------------


def list_namespaces() -> tuple[str, ...]:
    """Names of every named network namespace (`ip netns list`)."""
    out = run([IP, "netns", "list"]).stdout
    # Lines look like "name" or "name (id: 3)".
    return tuple(line.split()[0] for line in out.splitlines() if line.strip())


def namespace_exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists()


def create_namespace(name: str) -> None:
    """Create a named namespace with its loopback up (servers and TPROXY routes need `lo`).

    Raises:
        NetnsError: the name is taken or the kernel refused.
    """
    if namespace_exists(name):
        raise NetnsError([IP, "netns", "add", name], "namespace already exists")
    run([IP, "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def delete_namespace(name: str) -> None:
    """Delete a namespace and its per-namespace /etc files; absent is not an error.

    Deleting a namespace destroys the veths in it (and so their peers elsewhere), but not
    the processes running in it: stop those by PID first.
    """
    remove_etc_dir(name)
    if namespace_exists(name):
        run([IP, "netns", "delete", name])


def set_sysctl(namespace: str, key: str, value: str | int) -> None:
    """Set a sysctl as seen from inside the namespace (net.* keys are per namespace)."""
    run_in(namespace, ["sysctl", "-q", "-w", f"{key}={value}"])


def get_sysctl(namespace: str, key: str) -> str:
    return run_in(namespace, ["sysctl", "-n", key]).stdout.strip()


# --- per-namespace /etc --------------------------------------------------------------------


def etc_dir(namespace: str) -> Path:
    return NETNS_ETC_DIR / namespace


def render_hosts(entries: Mapping[str, IPv4Address | str]) -> str:
    """An /etc/hosts text: loopback names first (the file replaces the host's whole
    /etc/hosts inside the namespace), then one line per name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.extend(f"{IPv4Address(str(address))}\t{name}" for name, address in entries.items())
    return "\n".join(lines) + "\n"


def write_hosts(namespace: str, entries: Mapping[str, IPv4Address | str]) -> Path:
    """Write `/etc/netns/NAME/hosts` so these names resolve only for commands run in the
    namespace through `ip netns exec`. Removed by `delete_namespace`/`remove_etc_dir`."""
    directory = etc_dir(namespace)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts"
    path.write_text(render_hosts(entries))
    path.chmod(0o644)
    return path


def remove_etc_dir(namespace: str) -> None:
    directory = etc_dir(namespace)
    if directory.is_dir():
        shutil.rmtree(directory)


# --- links ---------------------------------------------------------------------------------


def add_veth(namespace_a: str, name_a: str, namespace_b: str, name_b: str) -> None:
    """Create a veth pair with one end in each namespace.

    Both ends are created directly where they live, so the names never pass through the
    host namespace and cannot collide with anything there or with another run.
    """
    a, b = check_ifname(name_a), check_ifname(name_b)
    ip(namespace_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", namespace_b)


def add_bridge(namespace: str, name: str, mac: str | None = None) -> None:
    """Create a bridge with STP off and forward delay 0, so ports forward as soon as they
    are up (no 15 s listening/learning wait). A fixed MAC keeps the bridge from adopting
    a port's MAC, which changes as ports come and go."""
    args = ["link", "add", check_ifname(name)]
    if mac is not None:
        args += ["address", mac]
    ip(namespace, *args, "type", "bridge", "stp_state", "0", "forward_delay", "0")


def enslave(namespace: str, port: str, bridge: str) -> None:
    ip(namespace, "link", "set", check_ifname(port), "master", check_ifname(bridge))


def set_up(namespace: str, name: str) -> None:
    ip(namespace, "link", "set", check_ifname(name), "up")


def add_address(namespace: str, name: str, address: IPv4Interface | str) -> None:
    """Add an IPv4 address with prefix, e.g. `192.0.2.10/24`."""
    ip(namespace, "address", "add", str(IPv4Interface(str(address))), "dev", check_ifname(name))


def link_mac(namespace: str, name: str) -> str:
    """The link-layer address of an interface, lower-case `aa:bb:cc:dd:ee:ff`."""
    path = f"/sys/class/net/{check_ifname(name)}/address"
    # /sys is remounted for the namespace by `ip netns exec`.
    return run_in(namespace, ["cat", path]).stdout.strip().lower()


def link_names(namespace: str) -> tuple[str, ...]:
    """Interface names in a namespace (without the `@peer` suffix `ip` prints)."""
    out = ip(namespace, "-o", "link", "show").stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return tuple(names)


# --- background processes ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid is [1])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is parenthesised and may contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def child_pids(pid: int) -> tuple[int, ...]:
    """Direct children of a process. Scans /proc because this kernel has no
    /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN is off)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                children.append(int(entry.name))
    return tuple(sorted(children))


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal one PID; already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass(slots=True)
class BackgroundProcess:
    """A process this lab started, known by PID and stopped only by that PID."""

    argv: tuple[str, ...]
    namespace: str | None
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    """Where stdout and stderr go; None means they were discarded."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; reaps the process.

        Idempotent. Returns the exit status (negative signal number when killed).
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def spawn(
    argv: Sequence[str],
    *,
    namespace: str | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> BackgroundProcess:
    """Start a long-running process, in a namespace if given, without waiting for it.

    Output goes to `log_path` (a file, never a pipe: a pipe nobody reads fills up and
    blocks the process). `stdin` is /dev/null.

    Raises:
        NetnsError: the program cannot be started.
    """
    command = exec_argv(namespace, argv) if namespace is not None else list(argv)
    log: IO[bytes] | int
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    try:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C aimed at the test runner does not hit it first
        )
    except OSError as e:
        raise NetnsError(command, f"cannot start: {e.strerror}") from e
    finally:
        if not isinstance(log, int):
            log.close()
    return BackgroundProcess(tuple(argv), namespace, popen, log_path)


def spawn_in(
    namespace: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> BackgroundProcess:
    """Start a background process inside a namespace; see `spawn`."""
    return spawn(argv, namespace=namespace, log_path=log_path, env=env, cwd=cwd)


def stop_pid(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a process that is not our child (so cannot be waited for): SIGTERM, poll until
    it is gone for up to `grace` seconds, then SIGKILL."""
    kill_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid_alive(pid):
        kill_pid(pid, signal.SIGKILL)
