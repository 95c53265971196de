"""IptablesBackend against legacy iptables, nft and the kernel, inside a fresh namespace.

The same contract as the nft backend (tests/support/backend_contract.py), with foreign
rules on both sides: nft tables and legacy iptables rules tlsgw did not create.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netfilter.backend import Backend
from netfilter.errors import NetfilterError
from netfilter.iptables_backend import IptablesBackend
from netfilter.model import Chain, ChainType, Family, Hook, Ruleset, Table
from netfilter.plan import steering
from netfilter.render_iptables import render_dump
from tests.support.backend_contract import BAD, FOREIGN_KEYS, OURS, SMALLER, check_backend, tables_in
from tests.support.netfilter_netns import in_netns, namespace, require_root, unique_name
from tests.support.steering_samples import BRIDGE_MAC, SAMPLES

pytestmark = pytest.mark.netns

FOREIGN_NFT = """\
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
# Legacy rules of someone else, in the table tlsgw uses (mangle) and in one it does not
# (filter), including a user chain whose name starts like tlsgw's but is not `tlsgw.*`.
FOREIGN_IPTABLES = """\
*mangle
:tlsgw-theirs - [0:0]
-A PREROUTING -p udp --dport 53 -j MARK --set-mark 0x9
-A PREROUTING -j tlsgw-theirs
-A tlsgw-theirs -s 198.51.100.0/24 -j ACCEPT
COMMIT
*filter
:INPUT DROP [0:0]
-A INPUT -i lo -j ACCEPT
COMMIT
"""
FOREIGN_XT_KEYS = {"xtables mangle", "xtables filter"}
GOLDEN = Path(__file__).parent.parent / "unit" / "netfilter" / "golden"


def _require_tools() -> None:
    require_root("nft", "iptables-legacy-save", "iptables-legacy-restore")


@pytest.fixture
def netns() -> Iterator[str]:
    _require_tools()
    with namespace("tlsgw-xt-") as name:
        yield name


def _install_foreign_by_hand(backend: Backend) -> None:
    assert isinstance(backend, IptablesBackend) and backend.netns is not None
    in_netns(backend.netns, "nft", "-f", "-", stdin=FOREIGN_NFT)
    in_netns(backend.netns, "iptables-legacy-restore", "--noflush", stdin=FOREIGN_IPTABLES)


def _xt_save(netns: str) -> str:
    return in_netns(netns, "iptables-legacy-save")


def test_iptables_backend_meets_backend_contract(netns: str) -> None:
    check_backend(lambda: IptablesBackend(netns), install_foreign=_install_foreign_by_hand)
    # the contract compared dumps; check the foreign legacy rules were part of them
    assert FOREIGN_XT_KEYS <= set(tables_in(IptablesBackend(netns).dump()))


def test_contract_saw_the_foreign_rules(netns: str) -> None:
    """Guards the contract itself: foreign tables and rules load and show up in the dump."""
    _install_foreign_by_hand(IptablesBackend(netns))
    keys = set(tables_in(IptablesBackend(netns).dump()))
    assert FOREIGN_KEYS | FOREIGN_XT_KEYS <= keys
    assert "ip tlsgw" not in keys, "tlsgw-theirs must not be mistaken for a chain of table ip tlsgw"


def test_rules_land_in_legacy_iptables_and_the_bridge_in_nft(netns: str) -> None:
    backend = IptablesBackend(netns)
    backend.apply(OURS)
    save = _xt_save(netns)
    assert "-A PREROUTING -m comment --comment \"tlsgw ip tlsgw\" -j tlsgw.prerouting" in save
    assert "-j TPROXY --on-port 8443 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff" in save
    listed = in_netns(netns, "nft", "list", "tables")
    assert "table bridge tlsgw" in listed and "table ip tlsgw" not in listed
    backend.remove(OURS)
    assert "tlsgw" not in _xt_save(netns)
    assert "tlsgw" not in in_netns(netns, "nft", "list", "tables")


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_sample_ruleset_applies_and_removes(netns: str, sample: str) -> None:
    """Every plan sample goes through python-iptables and a real commit."""
    backend = IptablesBackend(netns)
    ruleset = steering(SAMPLES[sample](), BRIDGE_MAC)
    backend.apply(ruleset)
    assert {t.label for t in ruleset.tables} <= set(tables_in(backend.dump()))
    backend.remove(ruleset)
    assert tables_in(backend.dump()) == {}


def test_kernel_refusal_keeps_errno_and_old_rules(netns: str) -> None:
    backend = IptablesBackend(netns)
    backend.apply(OURS)
    before = backend.dump()
    with pytest.raises(NetfilterError) as caught:
        backend.apply(BAD)
    assert "filter" in caught.value.command
    assert caught.value.errno == errno.EINVAL
    assert backend.dump() == before


def test_nft_refusal_after_commit_rolls_the_iptables_tables_back(netns: str) -> None:
    """The iptables tables commit before the bridge table loads; a refused bridge table
    must put them back (here nft refuses a chain named like a keyword)."""
    backend = IptablesBackend(netns)
    backend.apply(OURS)
    before = backend.dump()
    bad_bridge = Table(Family.BRIDGE, "tlsgw", chains=(
        Chain("accept", type=ChainType.FILTER, hook=Hook.PREROUTING, priority=-300),))
    with pytest.raises(NetfilterError) as caught:
        backend.apply(Ruleset(tables=(bad_bridge, SMALLER.table(Family.IP, "tlsgw"))))
    assert caught.value.command.endswith("nft -f -")
    assert backend.dump() == before


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.iptables")), ids=lambda p: p.name)
def test_golden_chains_load_with_iptables_restore(netns: str, path: Path) -> None:
    """What `tlsgw rules show` prints for iptables is valid iptables-restore input."""
    in_netns(netns, "iptables-legacy-restore", "--noflush", "--test", stdin=path.read_text())


def test_unused_legacy_tables_stay_unregistered(netns: str) -> None:
    """python-iptables would create every legacy table it looks at; the worker prevents it."""
    backend = IptablesBackend(netns)
    backend.apply(OURS)
    backend.remove(OURS)
    names = in_netns(netns, "cat", "/proc/net/ip_tables_names").split()
    assert names == ["mangle"]


def test_missing_namespace_is_enoent() -> None:
    _require_tools()
    with pytest.raises(NetfilterError) as caught:
        IptablesBackend(unique_name("tlsgw-xt-gone-")).dump()
    assert caught.value.errno == errno.ENOENT


def test_missing_nft_names_the_bridge_divert(netns: str) -> None:
    with pytest.raises(NetfilterError) as caught:
        IptablesBackend(netns, nft="/nonexistent/nft").apply(OURS)
    assert caught.value.errno == errno.ENOENT and "bridge" in caught.value.message
    assert "tlsgw" not in _xt_save(netns)


def test_dump_of_an_untouched_namespace_is_empty(netns: str) -> None:
    assert IptablesBackend(netns).dump() == ""
    assert render_dump(_xt_save(netns)) == ""
    assert shutil.which("iptables-legacy-save")
