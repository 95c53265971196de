"""pytest fixtures for tests that need network namespaces (the lab of `gateway.lab`).

Import the fixtures into a test module (`from tests.support.netns import lab`) or list
this module in a conftest's `pytest_plugins`. Every lab gets a fresh run id, so tests may
run in parallel, and is torn down even when the test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from gateway.lab.topology import Lab

ROOT_REASON = "needs root: creates network namespaces, veths and bridges"
TOOLS = ("ip", "nginx", "curl", "ss", "sysctl")


def missing_tools(tools: tuple[str, ...] = TOOLS) -> tuple[str, ...]:
    return tuple(t for t in tools if shutil.which(t) is None)


def lab_unavailable_reason(tools: tuple[str, ...] = TOOLS) -> str | None:
    """Why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return ROOT_REASON
    missing = missing_tools(tools)
    if missing:
        return f"lab needs these commands on PATH: {', '.join(missing)}"
    return None


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_REASON)
"""Marker for tests that need root but not the whole lab."""


def require_root(tools: tuple[str, ...] = TOOLS) -> None:
    """Skip the calling test (or fixture) with a clear reason unless the lab can run."""
    reason = lab_unavailable_reason(tools)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A built lab for one test; torn down afterwards, also when the test failed."""
    require_root()
    built = Lab().build()
    try:
        yield built
    finally:
        built.teardown()


@pytest.fixture(scope="module")
def module_lab() -> Iterator[Lab]:
    """One lab shared by the tests of a module (faster; tests must not leave state in it)."""
    require_root()
    built = Lab().build()
    try:
        yield built
    finally:
        built.teardown()
