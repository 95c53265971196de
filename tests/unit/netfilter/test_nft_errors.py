"""nft's stderr -> NetfilterError; the stderr samples were captured from nft 1.0.6."""

from __future__ import annotations

import errno

import pytest

from netfilter.nft_backend import parse_nft_error

SCRIPT = "\n".join(
    [
        "add table ip tlsgw",
        "delete table ip tlsgw",
        "table ip tlsgw {",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        "    tcp dport 443 tproxy to :8443 accept",
        "  }",
        "}",
    ]
)

CASES = [
    (
        "/dev/stdin:6:5-40: Error: Could not process rule: Operation not supported\n"
        "    tcp dport 443 tproxy to :8443 accept\n"
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
        6,
        errno.EOPNOTSUPP,
        "tcp dport 443 tproxy to :8443 accept",
        "kernel-refusal",
    ),
    (
        "/dev/stdin:4:17-19: Error: No symbol type information\n  tcp dport 443 foo bar\n                ^^^\n",
        4,
        None,
        "chain input {",
        "syntax-error-has-no-errno",
    ),
    (
        "/dev/stdin:6:5-40: Error: Could not process rule: No such file or directory\nx\n^\n"
        "/dev/stdin:3:1-3: Error: Could not process rule: Operation not supported\nx\n^\n",
        6,
        errno.ENOENT,
        "line 3: Could not process rule: Operation not supported",
        "several-errors-first-wins-all-kept",
    ),
]


@pytest.mark.parametrize(("stderr", "line", "code", "fragment"), [c[:4] for c in CASES], ids=[c[4] for c in CASES])
def test_located_error_keeps_line_errno_and_script_text(
    stderr: str, line: int, code: int | None, fragment: str
) -> None:
    error = parse_nft_error("nft -f -", stderr, SCRIPT)
    assert error.command == "nft -f -"
    assert error.line == line
    assert error.errno == code
    assert fragment in error.message


def test_unlocated_error_keeps_text_and_errno() -> None:
    error = parse_nft_error("nft list ruleset", "Error: cache initialization failed: Operation not permitted\n", "")
    assert error.line is None
    assert error.errno == errno.EPERM
    assert "cache initialization failed" in error.message


def test_empty_stderr_still_gives_a_message() -> None:
    error = parse_nft_error("nft -f -", "", SCRIPT)
    assert error.message and error.line is None and error.errno is None
