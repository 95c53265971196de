"""Issue 9: the files `tlsgw appliance init` writes, applied by the real systemd-networkd in
a namespace, give the bridge the doctor expects - and the doctor says so, or names what
is missing when it is not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.appliance.doctor import Severity, diagnose, has_problems
from gateway.appliance.host_facts import gather
from gateway.appliance.networkd import parse_layout, render_networkd
from tests.support.netfilter_netns import namespace, run
from tests.support.networkd_netns import networkd_in, networkd_unavailable, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.skipif(networkd_unavailable() is not None,
                                                    reason=networkd_unavailable() or "")]


def _links(netns: str) -> dict[str, dict[str, object]]:
    return {item["ifname"]: item for item in json.loads(run("ip", "-n", netns, "-d", "-j", "address", "show"))}


@pytest.fixture
def wired() -> Iterator[str]:
    """A namespace with two veth ports, eth1 and eth2, whose far ends are up."""
    with namespace("tlsgw-nd-") as netns:
        for port, peer in (("eth1", "peer1"), ("eth2", "peer2")):
            run("ip", "-n", netns, "link", "add", port, "type", "veth", "peer", "name", peer)
            run("ip", "-n", netns, "link", "set", peer, "up")
        yield netns


def _bridge_ready(netns: str) -> bool:
    links = _links(netns)
    bridge = links.get("br0", {})
    addresses = [a["local"] for a in bridge.get("addr_info", []) if a["family"] == "inet"]  # type: ignore[union-attr]
    return (all(links.get(p, {}).get("master") == "br0" for p in ("eth1", "eth2"))
            and addresses == ["192.0.2.2"] and "LOWER_UP" in bridge.get("flags", []))  # type: ignore[operator]


def test_networkd_builds_the_bridge_from_generated_files(wired: str, tmp_path: Path) -> None:
    files = render_networkd(parse_layout("br0", "eth1,eth2", "192.0.2.2/24", stp=False))
    config_dir = tmp_path / "network"
    config_dir.mkdir()
    for name, text in files.items():
        (config_dir / name).write_text(text)
    with networkd_in(wired, config_dir, tmp_path):
        wait_until(lambda: _bridge_ready(wired), "br0 up with 192.0.2.2/24 and eth1, eth2 enslaved",
                   tmp_path / "networkd.log")
        links = _links(wired)
        for port in ("eth1", "eth2"):
            assert links[port]["addr_info"] == [], f"{port} must carry no address, not even link-local"
        assert links["br0"]["linkinfo"]["info_data"]["stp_state"] == 0  # type: ignore[index]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tlsgw.yaml"
    path.write_text(yaml.safe_dump({
        "gateway": {"bridge": "br0", "segments": [
            {"name": "lan-wan", "client_port": "eth1", "server_port": "eth2", "profile": "default"}]},
        "pki": {"dir": str(tmp_path / "pki")},
        "profiles": [{"name": "default"}],
    }))
    return path


def test_doctor_names_a_missing_bridge_then_passes_once_networkd_built_it(wired: str, tmp_path: Path) -> None:
    config = _config(tmp_path)
    before = diagnose(gather(str(config), wired))
    assert has_problems(before)
    assert any(f.check == "bridge" and "br0 does not exist" in f.message for f in before)

    config_dir = tmp_path / "network"
    config_dir.mkdir()
    assert subprocess.run([sys.executable, "-m", "gateway", "appliance", "init", "--ports", "eth1,eth2",
                           "--address", "192.0.2.2/24", "--dir", str(config_dir)],
                          capture_output=True, text=True, check=False).returncode == 0
    with networkd_in(wired, config_dir, tmp_path):
        wait_until(lambda: _bridge_ready(wired), "br0 ready", tmp_path / "networkd.log")
        after = diagnose(gather(str(config), wired))
        problems = [f for f in after if f.severity is Severity.PROBLEM]
        assert problems == [], problems
        assert {f.check for f in after if f.severity is Severity.OK} >= {"config", "nft", "kernel", "bridge"}
        # the CLI agrees: exit 0, and it says the bridge is fine
        done = subprocess.run([sys.executable, "-m", "gateway", "doctor", "--config", str(config), "--netns", wired],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok    bridge: br0 with ports eth1, eth2" in done.stdout
    # (with networkd stopped: while it runs, it puts an unplugged port straight back)
    run("ip", "-n", wired, "link", "set", "eth2", "nomaster")
    unplugged = diagnose(gather(str(config), wired))
    assert any(f.severity is Severity.PROBLEM and "server_port eth2 is not in bridge br0" in f.message
                   for f in unplugged)
