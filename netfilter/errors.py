"""The one error type of the netfilter package.

Kernel and nft failures keep what an operator needs to act on them: the command that
failed, the line of the generated script nft complained about, and the errno the kernel
returned. Tests assert on these fields, never on the message text.
"""

from __future__ import annotations

from gateway.errors import TlsgwError


class NetfilterError(TlsgwError):
    """Programming rules, policy routing or sysctls failed, or a ruleset is invalid.

    `command` names what was run (`nft -f -`, `ip rule add fwmark 0x1 lookup 100`,
    `validate`, `plan`, a sysctl path); `line` is the 1-based line of the nft script when
    nft reported one; `errno` is the kernel's error number when known.
    """

    def __init__(self, command: str, message: str, *, line: int | None = None, errno: int | None = None) -> None:
        self.command = command
        self.line = line
        self.errno = errno
        self.message = message
        where = f" (script line {line})" if line is not None else ""
        super().__init__(f"{command}{where}: {message}")
