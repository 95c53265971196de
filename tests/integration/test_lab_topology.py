"""The lab itself: wiring, isolation, real HTTPS origins, and a teardown that leaves nothing.

No gateway runs here: the bridge in the gateway namespace forwards untouched, which is
the baseline every gateway test compares against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.lab import netns
from gateway.lab.netns import NetnsError
from gateway.lab.origin import NginxOrigin, OriginSite
from gateway.lab.topology import Lab, new_run_id
from tests.support.lab_certs import make_ca, make_leaf
from tests.support.netns import lab, require_root  # noqa: F401 - `lab` is a fixture

pytestmark = pytest.mark.netns

SHOP_BODY = "welcome to the shop\n"
BANK_BODY = "your bank, securely\n"


def _lab_namespaces(run_id: str) -> list[str]:
    return [name for name in netns.list_namespaces() if name.endswith(f"-{run_id}")]


def test_client_fetches_each_origin_by_name_through_bare_bridge_and_teardown_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    ca = make_ca(tmp_path)
    shop = make_leaf(ca, tmp_path, "shop.example")
    bank = make_leaf(ca, tmp_path, "www.bank.example")
    lab_run = Lab()
    pids: list[int] = []
    try:
        lab_run.build()
        origins = {}
        for host, leaf, body in ((lab_run.server1, shop, SHOP_BODY), (lab_run.server2, bank, BANK_BODY)):
            origin = NginxOrigin(host.namespace, [OriginSite(leaf.name, leaf.cert_file, leaf.key_file, body)])
            lab_run.track(origin)
            origin.start()
            pids += [origin.pid, *origin.worker_pids]
            origins[leaf.name] = origin

        for name, body in (("shop.example", SHOP_BODY), ("www.bank.example", BANK_BODY)):
            # Each origin holds only its own name's certificate, so a name resolved to the
            # wrong server fails verification instead of passing by accident.
            curl = ["curl", "--silent", "--show-error", "--fail", "--max-time", "5"]
            result = lab_run.run(lab_run.client_ns, [*curl, "--cacert", str(ca.cert_file), f"https://{name}/"])
            assert result.stdout == body

        for name, server in (("shop.example", lab_run.server1), ("www.bank.example", lab_run.server2)):
            (entry,) = origins[name].wait_for_access_log(1)
            assert entry.remote_addr == lab_run.client_address
            assert entry.server_addr == server.address
            assert (entry.server_name, entry.ssl_server_name, entry.host) == (name, name, name)
            assert entry.ssl_protocol == "TLSv1.3"
            assert entry.ssl_session_reused is False
            assert (entry.request, entry.status) == ("GET / HTTP/1.1", 200)
    finally:
        lab_run.teardown()

    assert _lab_namespaces(lab_run.run_id) == []
    assert not netns.etc_dir(lab_run.client_ns).exists()
    assert len(pids) >= 4  # two masters and at least one worker each
    assert [pid for pid in pids if netns.pid_alive(pid)] == []


def test_gateway_namespace_bridges_two_ports_with_fixed_mac_and_no_forwarding(lab: Lab) -> None:  # noqa: F811
    gw = lab.gateway_ns
    links = json.loads(netns.ip(gw, "-j", "link", "show").stdout)
    by_name = {link["ifname"]: link for link in links}

    assert by_name[lab.bridge]["address"] == lab.bridge_mac
    assert sorted(n for n, link in by_name.items() if link.get("master") == lab.bridge) == sorted(
        [lab.client_port, lab.server_port]
    )
    assert all("UP" in by_name[n]["flags"] for n in (lab.bridge, lab.client_port, lab.server_port))
    addresses = json.loads(netns.ip(gw, "-j", "-4", "address", "show", "dev", lab.bridge).stdout)
    assert [f"{a['local']}/{a['prefixlen']}" for a in addresses[0]["addr_info"]] == [str(lab.gateway_interface)]
    assert netns.get_sysctl(gw, "net.ipv4.ip_forward") == "0"


def test_host_names_resolve_only_in_client_namespace(lab: Lab) -> None:  # noqa: F811
    client_hosts = lab.run(lab.client_ns, ["getent", "hosts", "shop.example"]).stdout.split()
    gateway_hosts = lab.run(lab.gateway_ns, ["cat", "/etc/hosts"]).stdout

    assert client_hosts == [str(lab.server1_address), "shop.example"]
    assert "shop.example" not in gateway_hosts


def test_build_failure_midway_removes_what_was_created() -> None:
    require_root()
    # A bridge named like a port already in the namespace fails after the namespaces and
    # veths exist, which is the partial state teardown must undo.
    broken = Lab(run_id=new_run_id(), bridge="eth1", client_port="eth1")
    with pytest.raises(NetnsError) as caught:
        broken.build()

    assert "eth1" in " ".join(caught.value.command)
    assert _lab_namespaces(broken.run_id) == []
    assert not netns.etc_dir(broken.client_ns).exists()


def test_teardown_twice_is_harmless() -> None:
    require_root()
    lab_run = Lab().build()
    lab_run.teardown()
    lab_run.teardown()

    assert _lab_namespaces(lab_run.run_id) == []


def test_run_in_failure_names_the_command(lab: Lab) -> None:  # noqa: F811
    with pytest.raises(NetnsError) as caught:
        lab.run(lab.client_ns, ["sh", "-c", "exit 3"])

    assert caught.value.command[:4] == ("ip", "netns", "exec", lab.client_ns)
    assert caught.value.returncode == 3
