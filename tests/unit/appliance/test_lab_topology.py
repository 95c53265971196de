"""vagrant/topology.yaml is the namespace lab's facts, rendered: one source of truth (issue 9)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.appliance.lab_topology import render_topology, render_vm_config, topology
from gateway.config.load import parse_config
from gateway.lab.topology import CLIENT_INTERFACE, DEFAULT_HOSTS, GATEWAY_INTERFACE

TOPOLOGY_FILE = Path(__file__).resolve().parents[3] / "vagrant" / "topology.yaml"


def test_committed_topology_is_the_rendered_one() -> None:
    assert TOPOLOGY_FILE.read_text() == render_topology(), (
        "vagrant/topology.yaml is stale: python -m gateway.appliance.lab_topology topology > vagrant/topology.yaml")


def test_topology_has_the_lab_addresses_and_hosts() -> None:
    facts = yaml.safe_load(TOPOLOGY_FILE.read_text())
    assert facts["gateway"]["address"] == GATEWAY_INTERFACE.with_prefixlen
    assert facts["client"]["address"] == CLIENT_INTERFACE.with_prefixlen
    assert {s["host"]: s["address"].split("/")[0] for s in facts["servers"]} == {
        host: str(address) for host, address in DEFAULT_HOSTS.items()}


def test_exactly_the_exempted_domain_is_not_decrypted() -> None:
    """The demo's scenario: shop.example decrypted, *.bank.example exempted by policy."""
    decrypted = {s["host"]: s["decrypted"] for s in topology()["servers"]}
    assert decrypted == {"shop.example": True, "www.bank.example": False}


def test_vm_config_is_valid_and_uses_the_vm_ports_and_appliance_paths() -> None:
    config = parse_config(render_vm_config("enp0s8", "enp0s9"))
    segment = config.gateway.segments[0]
    assert (segment.client_port, segment.server_port) == ("enp0s8", "enp0s9")
    assert config.pki.dir == "/var/lib/tlsgw/pki"
    assert config.gateway.inspection_log == "/var/log/tlsgw/inspection.jsonl"
    assert config.decryption_policies[0].domains == ("*.bank.example",)
