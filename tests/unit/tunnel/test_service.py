"""The parts of the tunnel shell that need no kernel: construction and reconfiguration."""

from __future__ import annotations

from dataclasses import replace

from gateway.config.model import ClientProxy, PortRange
from gateway.observability.counters import Counters
from gateway.tunnel.tun import TunnelService
from tests.unit.tunnel.test_switch import config


def test_service_clamps_mss_to_the_outer_mtu() -> None:
    service = TunnelService(config(), Counters())
    assert service.switch.mss_limit == 1500 - 28 - 40
    assert service.tun_mtu == 1472
    assert service.plan.ports == ("eth1", "eth2")


def test_reload_with_new_detection_ports_changes_what_is_selected() -> None:
    service = TunnelService(config(), Counters())
    client, server = bytes([10, 1, 0, 10]), bytes([10, 2, 0, 20])
    assert not service.switch.selection.matches(0, client, server, 993)
    cfg = config()
    wider = replace(cfg, client_proxies=(ClientProxy("outbound", "ca", (PortRange(443, 443), PortRange(993, 993))),))
    service.reconfigure(wider)
    assert service.switch.selection.matches(0, client, server, 993)
    assert PortRange(993, 993) in service.plan.segments[0].ports
