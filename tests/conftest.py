"""Test-suite wide options and fixtures.

Keep this file small: area-specific fixtures live in `tests/support/` or in a
conftest.py next to the tests that use them. Add a command-line option by adding one
`group.addoption(...)` line in `pytest_addoption` and, if tests need it, one fixture.
"""

from __future__ import annotations

import pytest

# Benchmark scripts print figures and are run by hand (`python -m tests.bench.<name>`);
# speed is never asserted (STYLE.md E), so pytest must not import them.
collect_ignore_glob = ["bench/*"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tlsgw")
    group.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files (e.g. tests/unit/netfilter/golden/*.nft) from the current output",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files instead of comparing with them."""
    return bool(request.config.getoption("--update-golden"))
