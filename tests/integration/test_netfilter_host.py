"""Policy routing and sysctls, in a fresh network namespace (never the host's)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from netfilter.__main__ import main
from netfilter.errors import NetfilterError
from netfilter.nft_backend import NftBackend
from netfilter.plan import steering
from netfilter.routing import (
    PolicyRoutingState,
    ensure_policy_routing,
    link_address,
    read_policy_routing,
    remove_policy_routing,
)
from netfilter.sysctl import BRIDGE_NF_CALL_IPTABLES, prepare_steering, read_sysctl, restore, set_sysctls
from tests.support.netfilter_netns import in_netns, namespace, require_root, run, unique_name
from tests.support.backend_contract import tables_in
from tests.support.steering_samples import BRIDGE_MAC, ONE_SEGMENT_YAML, one_segment

pytestmark = pytest.mark.netns

MARK, TABLE = 0x1, 100


@pytest.fixture
def netns() -> Iterator[str]:
    require_root()
    with namespace() as name:
        yield name


def _rules(netns: str) -> list[dict[str, object]]:
    return json.loads(run("ip", "-n", netns, "-j", "rule", "show"))  # type: ignore[no-any-return]


def _fwmark_rules(netns: str, mark: str, table: str) -> int:
    return sum(1 for r in _rules(netns) if r.get("fwmark") == mark and r.get("table") == table)


def _routes(netns: str, table: int) -> list[str]:
    return [line.strip() for line in run("ip", "-n", netns, "route", "show", "table", str(table)).splitlines()]


def _sysctl(netns: str, key: str) -> str:
    return in_netns(netns, "cat", f"/proc/sys/{key}").strip()


# ------------------------------------------------------------------ routing


def test_ensure_policy_routing_is_idempotent(netns: str) -> None:
    ensure_policy_routing(MARK, TABLE, netns)
    ensure_policy_routing(MARK, TABLE, netns)
    assert _fwmark_rules(netns, "0x1", "100") == 1
    assert [r.split(" proto")[0] for r in _routes(netns, TABLE)] == ["local default dev lo"]
    assert read_policy_routing(MARK, TABLE, netns) == PolicyRoutingState(rule=True, route=True)


def test_remove_policy_routing_removes_exactly_ours(netns: str) -> None:
    # Neighbours that look alike: another mark to the same table, another route in it.
    run("ip", "-n", netns, "rule", "add", "fwmark", "0x2", "lookup", str(TABLE))
    run("ip", "-n", netns, "route", "add", "local", "10.0.0.0/8", "dev", "lo", "table", str(TABLE))
    ensure_policy_routing(MARK, TABLE, netns)
    remove_policy_routing(MARK, TABLE, netns)
    remove_policy_routing(MARK, TABLE, netns)
    assert read_policy_routing(MARK, TABLE, netns) == PolicyRoutingState(rule=False, route=False)
    assert _fwmark_rules(netns, "0x1", "100") == 0
    assert _fwmark_rules(netns, "0x2", "100") == 1
    assert [r.split(" proto")[0] for r in _routes(netns, TABLE)] == ["local 10.0.0.0/8 dev lo scope host"]


def test_routing_works_when_called_from_a_running_event_loop(netns: str) -> None:
    """pyroute2 0.9 refuses to start inside a running loop; the daemon calls from one."""

    async def from_the_daemon() -> PolicyRoutingState:
        ensure_policy_routing(MARK, TABLE, netns)
        return read_policy_routing(MARK, TABLE, netns)

    assert asyncio.run(from_the_daemon()) == PolicyRoutingState(rule=True, route=True)


def test_routing_in_missing_namespace_is_enoent_and_creates_nothing() -> None:
    require_root()
    name = unique_name("tlsgw-nf-gone-")
    with pytest.raises(NetfilterError) as caught:
        ensure_policy_routing(MARK, TABLE, name)
    assert caught.value.errno == errno.ENOENT
    assert not os.path.exists(f"/run/netns/{name}")


def test_link_address_reads_the_bridge_mac(netns: str) -> None:
    run("ip", "-n", netns, "link", "add", "br0", "address", "02:00:00:00:AB:01", "type", "bridge")
    assert link_address("br0", netns) == "02:00:00:00:ab:01"
    with pytest.raises(NetfilterError) as caught:
        link_address("br9", netns)
    assert caught.value.errno == errno.ENODEV


# ------------------------------------------------------------------ sysctl


def _interfaces(netns: str, *names: str) -> None:
    for name in names:
        run("ip", "-n", netns, "link", "add", name, "type", "bridge")  # no dummy module here


def test_prepare_steering_sets_and_restore_puts_back(netns: str) -> None:
    _interfaces(netns, "br0", "eth1", "eth2")
    keys = [f"net/ipv4/conf/{i}/rp_filter" for i in ("all", "br0", "eth1", "eth2")]
    for key, value in zip(keys, ("2", "1", "2", "1")):
        in_netns(netns, "sh", "-c", f"echo {value} > /proc/sys/{key}")
    has_br_netfilter = in_netns(netns, "sh", "-c", f"test -e /proc/sys/{BRIDGE_NF_CALL_IPTABLES} && echo yes").strip()
    if has_br_netfilter:
        in_netns(netns, "sh", "-c", f"echo 1 > /proc/sys/{BRIDGE_NF_CALL_IPTABLES}")
    host_before = read_sysctl("net/ipv4/conf/all/rp_filter")

    state = prepare_steering(steering(one_segment(), BRIDGE_MAC), netns)

    assert [_sysctl(netns, k) for k in keys] == ["0", "0", "0", "0"]
    assert [state.previous(k) for k in keys] == ["2", "1", "2", "1"]
    if has_br_netfilter:
        assert _sysctl(netns, BRIDGE_NF_CALL_IPTABLES) == "0"
        assert state.previous(BRIDGE_NF_CALL_IPTABLES) == "1"
    assert read_sysctl("net/ipv4/conf/all/rp_filter") == host_before, "the host's value changed"
    assert read_sysctl("net/ipv4/conf/eth1/rp_filter", netns) == "0"

    restore(state)
    assert [_sysctl(netns, k) for k in keys] == ["2", "1", "2", "1"]
    if has_br_netfilter:
        assert _sysctl(netns, BRIDGE_NF_CALL_IPTABLES) == "1"


def test_missing_interface_fails_and_changes_nothing(netns: str) -> None:
    _interfaces(netns, "br0", "eth1")  # eth2 is missing
    in_netns(netns, "sh", "-c", "echo 2 > /proc/sys/net/ipv4/conf/all/rp_filter")
    with pytest.raises(NetfilterError) as caught:
        prepare_steering(steering(one_segment(), BRIDGE_MAC), netns)
    assert caught.value.errno == errno.ENOENT
    assert "eth2" in caught.value.command
    assert _sysctl(netns, "net/ipv4/conf/all/rp_filter") == "2"


def test_restore_skips_interfaces_that_have_gone(netns: str) -> None:
    _interfaces(netns, "eth1")
    state = set_sysctls([("net/ipv4/conf/all/rp_filter", "0"), ("net/ipv4/conf/eth1/rp_filter", "0")], netns)
    run("ip", "-n", netns, "link", "del", "eth1")
    restore(state)
    assert _sysctl(netns, "net/ipv4/conf/all/rp_filter") == state.previous("net/ipv4/conf/all/rp_filter")


# ------------------------------------------------------------------ python -m netfilter


def test_cli_apply_then_remove_in_namespace(netns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_root("nft")
    _interfaces(netns, "br0", "eth1", "eth2")
    config = tmp_path / "tlsgw.yaml"
    config.write_text(ONE_SEGMENT_YAML)
    bridge_mac = link_address("br0", netns)

    assert main(["apply", "--config", str(config), "--netns", netns]) == 0
    assert "net/ipv4/conf/br0/rp_filter" in capsys.readouterr().out
    tables = tables_in(NftBackend(netns).dump())
    assert {"bridge tlsgw", "ip tlsgw"} <= set(tables)
    assert f"ether daddr set {bridge_mac}" in tables["bridge tlsgw"], "the MAC must be read from the bridge"
    assert read_policy_routing(MARK, TABLE, netns) == PolicyRoutingState(rule=True, route=True)

    run("ip", "-n", netns, "link", "del", "br0")  # remove must not need the bridge any more
    for _ in range(2):  # remove is idempotent, as systemd's ExecStopPost needs
        assert main(["remove", "--config", str(config), "--netns", netns]) == 0
        assert tables_in(NftBackend(netns).dump()) == {}
        assert read_policy_routing(MARK, TABLE, netns) == PolicyRoutingState(rule=False, route=False)
