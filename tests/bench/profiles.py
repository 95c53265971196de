"""Profiles of tlsgw under the benchmark's loads, with py-spy.

py-spy samples a running interpreter from outside (it reads the process's memory, so
tlsgw runs unmodified). By default it samples Python frames only, without stopping the
process (`--nonblocking`): time in C (OpenSSL, uvloop, system calls) is charged to the
Python function that called it (`Connection.do_handshake`, `Runner.run` for uvloop's
loop). With `native`, py-spy adds the C frames below the Python ones, which answers the
question a profile of tlsgw must answer (which share is OpenSSL doing crypto, which is
Python around it, which is the kernel's sockets), but it must stop the process for every
sample to unwind its C stack: tlsgw then runs at about half speed (the proportions hold
roughly, the profiled round's figures do not), and names inside the bundled OpenSSL are
unreliable where py-spy cannot unwind through it. On a 2-core machine py-spy's own CPU
slows the profiled round either way.

The benchmark records one raw file ("collapsed stacks": `frame;frame;frame COUNT` per
line) per tlsgw process and load; `summarise` turns them into the frames that cost the
most: by self time (where the samples were taken), grouped by library and by function,
and the share of time each of tlsgw's own functions was on the stack. Samples of threads
that were waiting are left out (`is_idle`). Pure except `Recorder`, which starts and
stops py-spy by PID, and `summarise_files`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 100  # samples per second: a few hundred in a 3-second load; py-spy's own CPU stays small
STOP_TIMEOUT = 30.0  # py-spy writes its file on SIGINT; with --native that takes a while
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
OWN_PACKAGES = ("gateway/", "netfilter/")
"""Frames from these files are tlsgw's own code (paths as py-spy prints them)."""
WAITS = frozenset({"PyThread_acquire_lock_timed", "pthread_cond_wait", "pthread_cond_timedwait", "epoll_wait",
                   "sem_wait", "sem_timedwait", "take_gil", "Condition.wait", "Event.wait", "Queue.get"})
"""A sample with one of these on its stack was waiting (for a lock, the GIL, events),
not working: py-spy --native samples every thread, busy or not, and without it py-spy's
guess of idleness misses some threads waiting in Python."""
BLOCKING_CALLS = frozenset({"read", "recv", "recvfrom", "accept", "accept4", "poll", "select", "wait4", "waitpid"})
"""In a background thread (`Thread._bootstrap` on the stack) these at the leaf are a
thread blocked on a pipe or socket (tlsgw's reader of nft's errors): idle as well."""


LIBRARIES = {
    "_rust.abi3.so": "OpenSSL, as bundled by cryptography (pyOpenSSL uses it too)",
    "libc.so.6": "system calls; unnamed addresses are memcpy, malloc and the like",
    "loop.c": "uvloop",
    "_cffi_backend.cpython-311-x86_64-linux-gnu.so": "cffi, pyOpenSSL's calls into OpenSSL",
}
"""What the libraries py-spy names are, for readers of the summary."""
ALWAYS_ON_STACK = 0.95
"""Functions on at least this share of the stacks are the program's entry points (main,
the event loop's run): left out of the total-time list, which is about where time goes."""


def py_spy() -> str | None:
    """The py-spy executable, next to this interpreter (a venv) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def is_python(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name.startswith("python")
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Frame:
    name: str
    file: str
    """As py-spy prints it: a path relative to sys.path for Python code, the shared
    library or C source file for native frames."""

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = _FRAME.match(text)
        return cls(match.group("name"), match.group("file")) if match else cls(text, "?")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.file})"

    @property
    def group(self) -> str:
        """Python code by top-level package (`gateway`, `asyncio`, `OpenSSL` ...), native
        code by library or source file (`libc.so.6`, `_rust.abi3.so` = OpenSSL as
        bundled by cryptography, `loop.c` = uvloop)."""
        if self.file.endswith(".py"):
            return f"{self.file.split('/')[0].removesuffix('.py')} (Python)"
        name = Path(self.file).name
        return f"{name}: {LIBRARIES[name]}" if name in LIBRARIES else name


def is_idle(frames: Sequence[Frame]) -> bool:
    if any(f.name in WAITS for f in frames):
        return True
    return frames[-1].name in BLOCKING_CALLS and any(f.name == "Thread._bootstrap" for f in frames)


@dataclass(frozen=True, slots=True)
class Costs:
    samples: int
    idle: int
    """Samples left out as waiting (see `is_idle`)."""
    self_samples: Counter[str]
    """Leaf frame label -> busy samples."""
    groups: Counter[str]
    """Leaf frame group -> busy samples."""
    own_total: Counter[str]
    """tlsgw's own functions -> busy samples with the function anywhere on the stack."""

    @property
    def busy(self) -> int:
        return self.samples - self.idle


def parse_collapsed(lines: Iterable[str]) -> Costs:
    """py-spy's raw output (`frame;frame;... COUNT`, root first) to costs per frame.

    A function appearing twice in one stack (recursion) counts once towards its total.
    """
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = idle = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [Frame.parse(f) for f in stack.split(";")]
        samples += n
        if is_idle(frames):
            idle += n
            continue
        own[frames[-1].label] += n
        groups[frames[-1].group] += n
        for label in {f.label for f in frames if f.file.startswith(OWN_PACKAGES)}:
            total[label] += n
    return Costs(samples, idle, own, groups, total)


def summarise(costs: Costs, top: int = 10) -> list[str]:
    if costs.busy == 0:
        return [f"    {costs.samples} samples, none busy"]

    def share(n: int) -> str:
        return f"{100 * n / costs.busy:5.1f} %"

    lines = [f"    {costs.busy} busy samples ({costs.idle} waiting left out); self time by library or package:"]
    lines += [f"    {share(n)}  {group}" for group, n in costs.groups.most_common(top)]
    lines.append("    self time by function (where the samples were taken):")
    lines += [f"    {share(n)}  {label}" for label, n in costs.self_samples.most_common(top)]
    lines.append("    tlsgw functions on the stack (total time; entry points left out):")
    inner = [(label, n) for label, n in costs.own_total.most_common() if n < ALWAYS_ON_STACK * costs.busy]
    lines += [f"    {share(n)}  {label}" for label, n in inner[:top]]
    return lines


@dataclass
class Recorder:
    """py-spy attached to each of a load's tlsgw processes for the duration of the load."""

    executable: str
    directory: Path
    native: bool = False
    _running: list[tuple[subprocess.Popen[bytes], Path]] | None = None

    def start(self, load: str, pids: Sequence[int]) -> None:
        """Attach to those of `pids` that are Python (tlsgw's tree also holds `nft`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._running = []
        for pid in pids:
            if not is_python(pid):
                continue
            out = self.directory / f"{load}-{pid}.txt"
            argv = [self.executable, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format", "raw",
                    "--output", str(out), *(["--native"] if self.native else ["--nonblocking"])]
            log = open(self.directory / f"{load}-{pid}.log", "wb")  # noqa: SIM115 - the child keeps it
            try:
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            finally:
                log.close()
            self._running.append((popen, out))

    def stop(self) -> list[Path]:
        """Stop every py-spy this recorder started (SIGINT by PID: it then writes its file)."""
        written = []
        for popen, out in self._running or []:
            if popen.poll() is None:
                os.kill(popen.pid, signal.SIGINT)
            try:
                popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            if out.exists():
                written.append(out)
        self._running = None
        return written


def summarise_files(paths: Sequence[Path], top: int = 10) -> list[str]:
    lines: list[str] = []
    for path in paths:
        lines.append(f"  {path.name}:")
        lines += summarise(parse_collapsed(path.read_text(errors="replace").splitlines()), top)
    return lines
