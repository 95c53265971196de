"""Issue 9: the whole demo scenario with `netfilter.backend: iptables` - a real tlsgw on the
namespace bridge, its IP-layer rules in legacy iptables, its bridge divert in nft.

One decrypted flow and one exempted flow, both reaching the server from the client's own
address, prove that the translated rules (socket match, TPROXY with its mark, the
segment tag) steer like the nft ones; the rules are gone once tlsgw stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest

from gateway.lab.scenario import InterceptionLab, environment_ready

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]


@pytest.fixture(scope="module")
def env() -> Iterator[InterceptionLab]:
    lab = InterceptionLab()
    try:
        lab.start(with_gateway=False)
        config = copy.deepcopy(lab.config)
        config["gateway"]["netfilter"] = {"backend": "iptables"}
        lab.start_gateway(config)
        yield lab
    finally:
        lab.stop()


def _legacy_rules(env: InterceptionLab) -> str:
    return env.lab.run(env.lab.gateway_ns, ["iptables-legacy-save", "-t", "mangle"]).stdout


def test_rules_are_in_legacy_iptables_while_tlsgw_runs(env: InterceptionLab) -> None:
    assert "-j TPROXY --on-port 8443" in _legacy_rules(env)
    tables = env.lab.run(env.lab.gateway_ns, ["nft", "list", "tables"]).stdout.split("\n")
    assert "table bridge tlsgw" in tables and "table ip tlsgw" not in tables


def test_shop_is_decrypted_and_bank_exempted(env: InterceptionLab) -> None:
    shop = env.fetch("shop.example")
    bank = env.fetch("www.bank.example")
    assert shop.ok and shop.verify_ok and shop.body == "hello from shop.example\n"
    assert shop.issuer is not None and "Signing CA" in shop.issuer
    assert bank.ok and bank.verify_ok and bank.issuer is not None and "Public Root" in bank.issuer
    outcomes = {r["sni"]: r["outcome"] for r in env.flow_records(wait_for=2)}
    assert outcomes == {"shop.example": "decrypted", "www.bank.example": "not decrypted"}
    for host in ("shop.example", "www.bank.example"):
        entries = env.origin_for(host).wait_for_access_log(1)
        assert entries and all(e.remote_addr == env.lab.client_address for e in entries)


def test_stopping_tlsgw_removes_its_legacy_rules(env: InterceptionLab) -> None:
    env.stop_gateway()
    assert "tlsgw" not in _legacy_rules(env)
    assert "tlsgw" not in env.lab.run(env.lab.gateway_ns, ["nft", "list", "tables"]).stdout
