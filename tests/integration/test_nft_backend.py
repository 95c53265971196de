"""NftBackend against the real nft and kernel, inside a fresh network namespace."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from netfilter.backend import Backend
from netfilter.errors import NetfilterError
from netfilter.nft_backend import NftBackend
from netfilter.plan import steering
from netfilter.render_nft import render
from tests.support.backend_contract import BAD, FOREIGN_KEYS, OURS, check_backend, tables_in
from tests.support.netfilter_netns import in_netns, namespace, require_root, unique_name
from tests.support.steering_samples import BRIDGE_MAC, SAMPLES

pytestmark = pytest.mark.netns

GOLDEN = Path(__file__).parent.parent / "unit" / "netfilter" / "golden"

# Written by hand, not through the backend: tables tlsgw did not create, one of them
# with tlsgw's own table name in a family tlsgw does not use.
FOREIGN_SCRIPT = """\
table inet other {
	set allowed {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.0/24 }
	}
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @allowed counter accept
	}
}
table inet tlsgw {
	chain spare {
	}
}
"""


@pytest.fixture
def netns() -> Iterator[str]:
    require_root("nft")
    with namespace() as name:
        yield name


def _install_foreign_by_hand(backend: Backend) -> None:
    assert isinstance(backend, NftBackend) and backend.netns is not None
    in_netns(backend.netns, "nft", "-f", "-", stdin=FOREIGN_SCRIPT)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.nft")), ids=lambda p: p.name)
def test_golden_script_passes_real_nft_check(netns: str, path: Path) -> None:
    in_netns(netns, "nft", "-c", "-f", str(path))


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_sample_ruleset_applies_and_removes(netns: str, sample: str) -> None:
    """`nft -c` does not run every kernel check; a real commit does."""
    backend = NftBackend(netns)
    ruleset = steering(SAMPLES[sample](), BRIDGE_MAC)
    backend.apply(ruleset)
    assert {t.label for t in ruleset.tables} <= set(tables_in(backend.dump()))
    backend.remove(ruleset)
    assert tables_in(backend.dump()) == {}


def test_nft_backend_meets_backend_contract(netns: str) -> None:
    check_backend(lambda: NftBackend(netns), install_foreign=_install_foreign_by_hand)


def test_contract_saw_the_foreign_tables(netns: str) -> None:
    """Guards the contract itself: the hand-written foreign tables really load and list."""
    _install_foreign_by_hand(NftBackend(netns))
    assert FOREIGN_KEYS <= set(tables_in(NftBackend(netns).dump()))


def test_kernel_refusal_keeps_line_errno_and_old_tables(netns: str) -> None:
    backend = NftBackend(netns)
    backend.apply(OURS)
    before = backend.dump()
    with pytest.raises(NetfilterError) as caught:
        backend.apply(BAD)
    lines = render(BAD).splitlines()
    assert caught.value.command.endswith("nft -f -")
    assert caught.value.line is not None and "tproxy" in lines[caught.value.line - 1]
    assert caught.value.errno == errno.EOPNOTSUPP
    assert backend.dump() == before


def test_missing_namespace_is_enoent() -> None:
    require_root("nft")
    with pytest.raises(NetfilterError) as caught:
        NftBackend(unique_name("tlsgw-nf-gone-")).dump()
    assert caught.value.errno == errno.ENOENT
