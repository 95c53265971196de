"""The sans-I/O core stays free of sockets and event loops (STYLE.md A): policy, config,
certificate logic, TLS parsing and rule rendering are tested without either, and a stray
import would quietly make them need one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = [
    "gateway/config", "gateway/policy", "gateway/session", "gateway/tls", "gateway/pki", "gateway/inspect",
    "gateway/observability", "netfilter/model.py", "netfilter/plan.py", "netfilter/render_nft.py",
    "netfilter/render_iptables.py", "gateway/tunnel/frames.py", "gateway/tunnel/encap.py",
    "gateway/tunnel/flows.py", "gateway/tunnel/mss.py",
]
FORBIDDEN = {"asyncio", "socket", "selectors", "uvloop"}


def modules() -> list[Path]:
    found: list[Path] = []
    for entry in PURE:
        path = ROOT / entry
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.relative_to(ROOT)} imports {sorted(imported & FORBIDDEN)}"
