"""The nftables backend: the rendered script through `nft -f -`, one transaction per call.

`nft -f` commits a whole input or nothing, so a ruleset the kernel refuses leaves the
previous tables exactly as they were (the backend contract test proves it against the
real kernel). `nft -c` runs the parser, the evaluator and - for most objects - the
kernel's checks without committing; some refusals (for example tproxy bound outside
prerouting) only happen at commit, so `apply` may still fail after a clean `check`.

Error handling: nft's stderr (`/dev/stdin:6:5-40: Error: <text>`) becomes a
`NetfilterError` with the script line, that line's text, and the errno when nft printed
a kernel error string.
"""

from __future__ import annotations

import errno as errno_module
import os
import re
import subprocess

from netfilter.errors import NetfilterError
from netfilter.model import Ruleset
from netfilter.render_nft import render, render_remove

# Loading a ruleset takes well under a second; this only bounds a hung nft (or a stuck
# netlink socket) so the daemon reports it instead of waiting forever.
NFT_TIMEOUT_S = 60.0

_LOCATED = re.compile(r"^(?:/dev/stdin|-):(?P<line>\d+):[\d-]+: Error: (?P<text>.*)$")
_STRERRORS: dict[str, int] = {os.strerror(code): code for code in sorted(errno_module.errorcode, reverse=True)}


class NftBackend:
    """Drives nft, optionally inside the named network namespace via `ip netns exec`."""

    def __init__(self, netns: str | None = None, nft: str = "nft") -> None:
        self.netns = netns
        self.nft = nft

    def check(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        self._load(render(ruleset), check=True)

    def apply(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        self._load(render(ruleset), check=False)

    def remove(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        self._load(render_remove(ruleset), check=False)

    def dump(self) -> str:
        return self._run([self.nft, "list", "ruleset"], stdin="")

    def load_script(self, script: str, *, check: bool = False) -> None:
        """Load a hand-written script; for tests and for operators' foreign tables."""
        self._load(script, check=check)

    def _load(self, script: str, *, check: bool) -> None:
        argv = [self.nft, *(["-c"] if check else []), "-f", "-"]
        self._run(argv, stdin=script)

    def _run(self, argv: list[str], *, stdin: str) -> str:
        full = (["ip", "netns", "exec", self.netns] if self.netns else []) + argv
        command = " ".join(full)
        try:
            done = subprocess.run(
                full, input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT_S, check=False
            )
        except FileNotFoundError as exc:
            raise NetfilterError(command, f"{full[0]} is not installed", errno=exc.errno) from exc
        except subprocess.TimeoutExpired as exc:
            raise NetfilterError(command, f"no answer within {NFT_TIMEOUT_S:g}s", errno=errno_module.ETIMEDOUT) from exc
        if done.returncode != 0:
            raise parse_nft_error(command, done.stderr, stdin)
        return done.stdout


def parse_nft_error(command: str, stderr: str, script: str) -> NetfilterError:
    """Turn nft's stderr into one NetfilterError located at the first script line it names."""
    lines = script.splitlines()
    located: list[tuple[int, str]] = []
    for raw in stderr.splitlines():
        found = _LOCATED.match(raw)
        if found:
            located.append((int(found["line"]), found["text"]))
    if not located:
        text = stderr.strip() or "failed without a message"
        return NetfilterError(command, text, errno=_errno_in(text))
    line, _ = located[0]
    parts = []
    for number, text in located:
        source = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        parts.append(f"line {number}: {text}" + (f": {source}" if source else ""))
    return NetfilterError(command, "\n".join(parts), line=line, errno=_errno_in(located[0][1]))


def _errno_in(text: str) -> int | None:
    """nft prints kernel errors as strerror text ("Could not process rule: No such file or directory")."""
    return _STRERRORS.get(text.strip().rsplit(": ", 1)[-1])
