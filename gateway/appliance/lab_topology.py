"""One source of truth for the namespace lab and the Vagrant lab.

The Vagrant VMs (vagrant/Vagrantfile) are the namespace lab (gateway/lab/topology.py)
made of machines: the same addresses, host names, bridge and demo scenario. Rather than
copy those facts, `vagrant/topology.yaml` is *rendered* from the lab's constants and the
demo's configuration (`gateway.lab.scenario.base_config`), and a unit test fails when the
committed file differs from what this module renders:

    python -m gateway.appliance.lab_topology topology > vagrant/topology.yaml

The gateway VM's tlsgw configuration is rendered from the same `base_config`, with the
VM's interface names and the appliance's paths:

    python -m gateway.appliance.lab_topology config --client-port eth1 --server-port eth2

Only what Vagrant alone needs (box, memory, MAC addresses that identify the ports inside
the VMs, provider networks) lives in the Vagrantfile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from gateway.config.model import DEFAULT_INSPECTION_LOG, DEFAULT_PKI_DIR
from gateway.lab.demo_pki import PUBLIC_ROOT_NAME, SIGNING_CA_NAME
from gateway.lab.scenario import base_config
from gateway.lab.topology import (
    CLIENT_INTERFACE,
    DEFAULT_HOSTS,
    GATEWAY_INTERFACE,
    LAB_NETWORK,
    SERVER1_INTERFACE,
    SERVER2_INTERFACE,
)
from gateway.policy.domains import first_match

HEADER = (
    "# Generated from gateway/lab/topology.py and gateway/lab/scenario.py by\n"
    "#   python -m gateway.appliance.lab_topology topology > vagrant/topology.yaml\n"
    "# Do not edit: tests/unit/appliance/test_lab_topology.py fails when this file and the\n"
    "# namespace lab disagree.\n"
)
# What the client is shown, as `tlsgw demo` checks it (gateway/lab/demo.py): a decrypted
# flow carries a certificate issued by the signing CA, an exempted one the server's own.
# The common names are those of gateway/lab/demo_pki.py, which the VMs reuse.
SIGNING_CA_CN = "tlsgw Demo Signing CA"
PUBLIC_ROOT_CN = "Demo Public Root CA"
ORGANIZATION = "tlsgw demo"
DECRYPTED_ISSUER = "Signing CA"
EXEMPTED_ISSUER = "Public Root"
LAB_BRIDGE = "br0"


def _demo_config(client_port: str, server_port: str, pki_dir: str, log_dir: Path) -> dict[str, Any]:
    lab = SimpleNamespace(bridge=LAB_BRIDGE, client_port=client_port, server_port=server_port)
    pki = SimpleNamespace(store_dir=Path(pki_dir))
    return base_config(log_dir, lab, pki)  # type: ignore[arg-type]


def topology() -> dict[str, Any]:
    config = _demo_config("eth1", "eth2", DEFAULT_PKI_DIR, Path("/"))
    exempt = tuple(config["decryption_policies"][0]["domains"])
    ports = config["client_proxies"][0]["detection_ports"]
    servers = []
    for (host, address), interface in zip(DEFAULT_HOSTS.items(), (SERVER1_INTERFACE, SERVER2_INTERFACE)):
        assert interface.ip == address, "DEFAULT_HOSTS and the server interfaces disagree"
        decrypted = first_match(exempt, host) is None
        servers.append({
            "host": host,
            "address": interface.with_prefixlen,
            "decrypted": decrypted,
            "issuer": DECRYPTED_ISSUER if decrypted else EXEMPTED_ISSUER,
        })
    return {
        "network": str(LAB_NETWORK),
        "bridge": config["gateway"]["bridge"],
        "gateway": {"address": GATEWAY_INTERFACE.with_prefixlen},
        "client": {"address": CLIENT_INTERFACE.with_prefixlen},
        "servers": servers,
        "detection_ports": [str(p) for p in ports],
        "exempt_domains": list(exempt),
        "pki": {
            "public_root": {"name": PUBLIC_ROOT_NAME, "cn": PUBLIC_ROOT_CN},
            "signing_ca": {"name": SIGNING_CA_NAME, "cn": SIGNING_CA_CN},
            "organization": ORGANIZATION,
        },
    }


def render_topology() -> str:
    return HEADER + yaml.safe_dump(topology(), sort_keys=False)


def render_vm_config(client_port: str, server_port: str, pki_dir: str = DEFAULT_PKI_DIR) -> str:
    """The demo configuration for the gateway VM: the lab's, on the VM's ports and the
    appliance's default paths (control socket and fallback file at their defaults)."""
    config = _demo_config(client_port, server_port, pki_dir, Path(DEFAULT_INSPECTION_LOG).parent)
    config["gateway"].pop("control", None)
    return ("# The tlsgw demo scenario (gateway/lab/scenario.py base_config) on the Vagrant gateway VM.\n"
            + yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.appliance.lab_topology",
                                     description="render the lab facts shared with the Vagrant lab")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("topology", help="vagrant/topology.yaml")
    vm = sub.add_parser("config", help="tlsgw.yaml of the Vagrant gateway VM")
    vm.add_argument("--client-port", required=True)
    vm.add_argument("--server-port", required=True)
    vm.add_argument("--pki-dir", default=DEFAULT_PKI_DIR)
    args = parser.parse_args(argv)
    if args.what == "topology":
        sys.stdout.write(render_topology())
    else:
        sys.stdout.write(render_vm_config(args.client_port, args.server_port, args.pki_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
