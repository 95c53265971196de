"""Issue 9: what CI can check of the Vagrant lab without starting VMs.

- `vagrant validate` accepts the Vagrantfile (Debian's vagrant package; the providers
  themselves are not installed here, so their blocks are not evaluated);
- the provisioning scripts pass shellcheck, and their dry runs (DRY_RUN=1) carry out
  the topology: the install script, `tlsgw appliance init` on the right ports with the
  gateway's address, the lab's addresses and host names, an nginx configuration that
  `nginx -t` accepts;
- demo.sh, the scenario the client VM runs, passes in the namespace lab's client
  namespace against a real tlsgw - and fails when tlsgw is not inspecting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.lab.scenario import InterceptionLab, environment_ready
from tests.support.netfilter_netns import namespace, require_root, run

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
PROVISION = VAGRANT_DIR / "provision"
SCRIPTS = sorted(PROVISION.glob("*.sh")) + sorted((REPO / "scripts").glob("*.sh"))
# The MACs of the Vagrantfile (the dry run names interfaces after them).
MACS = {"CLIENT_PORT_MAC": "02:74:6c:73:00:11", "SERVER_PORT_MAC": "02:74:6c:73:00:12"}
COMMAND_TIMEOUT_S = 120


def lab_env() -> dict[str, str]:
    """The environment the Vagrantfile gives the provisioning scripts, from topology.yaml."""
    topology = yaml.safe_load((VAGRANT_DIR / "topology.yaml").read_text())
    pki = topology["pki"]
    return {
        "LAB_BRIDGE": topology["bridge"],
        "GATEWAY_ADDRESS": topology["gateway"]["address"],
        "CLIENT_ADDRESS": topology["client"]["address"],
        "SERVERS": " ".join(f"{s['host']}={s['address']}" for s in topology["servers"]),
        "EXPECT": ";".join(f"{s['host']}={s['issuer']}" for s in topology["servers"]),
        "PUBLIC_ROOT_NAME": pki["public_root"]["name"], "PUBLIC_ROOT_CN": pki["public_root"]["cn"],
        "SIGNING_CA_NAME": pki["signing_ca"]["name"], "SIGNING_CA_CN": pki["signing_ca"]["cn"],
        "PKI_ORG": pki["organization"],
    }


def test_vagrantfile_builds_lab_env_from_the_same_keys() -> None:
    """Guards `lab_env()`: the Vagrantfile sets exactly these variables."""
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    assert set(re.findall(r'"([A-Z_]+)" =>', text)) == set(lab_env()) | {"LAB_MAC", *MACS}


def _vagrant(vagrant_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VAGRANT_CWD=str(vagrant_dir), VAGRANT_HOME=str(tmp_path / "vagrant.d"),
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"), VAGRANT_CHECKPOINT_DISABLE="1")
    return subprocess.run(["vagrant", *args], capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S,
                          check=False)


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="needs Debian's vagrant package (bootstrap.sh installs it)")
def test_vagrantfile_validates(tmp_path: Path) -> None:
    done = _vagrant(VAGRANT_DIR, tmp_path, "validate", "--ignore-provider")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
    for machine in ("server", "gateway", "client"):
        assert f"==> {machine}:" in done.stdout
    assert not (VAGRANT_DIR / ".vagrant").exists()


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="needs Debian's vagrant package (bootstrap.sh installs it)")
def test_vagrant_validate_catches_a_broken_vagrantfile(tmp_path: Path) -> None:
    """Guards the test above: validate really evaluates the file and its topology."""
    broken = tmp_path / "vagrant"
    shutil.copytree(VAGRANT_DIR, broken, ignore=shutil.ignore_patterns(".vagrant"))
    topology = yaml.safe_load((broken / "topology.yaml").read_text())
    del topology["bridge"]
    (broken / "topology.yaml").write_text(yaml.safe_dump(topology))
    done = _vagrant(broken, tmp_path, "validate", "--ignore-provider")
    assert done.returncode != 0 and "bridge" in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="needs shellcheck (bootstrap.sh installs it)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_passes_shellcheck(script: Path) -> None:
    done = subprocess.run(["shellcheck", "-x", "-P", "SCRIPTDIR", str(script)], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout


def _dry_run(script: str, **extra: str) -> str:
    env = {**os.environ, **lab_env(), **MACS, "LAB_MAC": "02:74:6c:73:00:10", "DRY_RUN": "1", **extra}
    done = subprocess.run(["bash", str(PROVISION / script)], capture_output=True, text=True, env=env,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_gateway_provisioning_installs_and_bridges_the_lab_ports() -> None:
    plan = _dry_run("gateway.sh")
    assert f"+ {REPO}/scripts/install-appliance.sh\n" in plan
    assert ("+ /usr/bin/tlsgw appliance init --ports lab02746c730011,lab02746c730012 --bridge br0 "
            "--address 192.0.2.2/24 --stp off\n") in plan
    assert "+ fetch http://192.0.2.20/lab-root.pem" in plan
    assert "+ /usr/bin/tlsgw cert create-signing demo-signing-ca --cn tlsgw Demo Signing CA" in plan
    assert "lab_topology config --client-port lab02746c730011 --server-port lab02746c730012" in plan
    assert plan.index("appliance init") < plan.index("systemctl restart tlsgw.service")


def test_client_provisioning_uses_the_lab_addresses_then_runs_the_demo() -> None:
    plan = _dry_run("client.sh")
    assert "|  Address=192.0.2.10/24\n" in plan
    assert "|  192.0.2.20 shop.example # tlsgw-lab\n|  192.0.2.21 www.bank.example # tlsgw-lab\n" in plan
    assert "+ fetch http://192.0.2.2/signing-ca.pem" in plan
    assert plan.rstrip().endswith("provision/demo.sh")


def test_provisioning_stops_naming_a_missing_topology_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SERVERS"}
    done = subprocess.run(["bash", str(PROVISION / "server.sh")], capture_output=True, text=True,
                          env={**env, "DRY_RUN": "1"}, timeout=COMMAND_TIMEOUT_S, check=False)
    assert done.returncode != 0 and "SERVERS is not set" in done.stderr


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None,
                    reason="needs nginx and openssl")
def test_server_provisioning_writes_an_nginx_config_nginx_accepts(tmp_path: Path) -> None:
    plan = _dry_run("server.sh")
    config = "\n".join(line[3:] for line in plan.splitlines() if line.startswith("|  "))
    config = config.split("[Network]", 1)[1] if "[Network]" in config else config
    site_config = config[config.index("# tlsgw Vagrant lab: the HTTPS sites"):]
    assert "listen 192.0.2.20:443 ssl;" in site_config and "listen 192.0.2.21:443 ssl;" in site_config
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in ("shop.example", "www.bank.example", "root"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "1", "-subj", f"/CN={name}", "-keyout", str(pki / f"{name}.key"),
                        "-out", str(pki / f"{name}.pem")], check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)
    (tmp_path / "sites.conf").write_text(site_config.replace("/etc/tlsgw-lab", str(pki)))
    (tmp_path / "nginx.conf").write_text(
        f"error_log stderr;\npid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/sites.conf;\n}}\n")
    # nginx -t binds the listen addresses: give them to a namespace, as the server VM has them
    require_root("nginx")
    with namespace("tlsgw-vg-") as netns:
        run("ip", "-n", netns, "link", "add", "lab0", "type", "veth", "peer", "name", "lab1")
        run("ip", "-n", netns, "link", "set", "lab1", "up")
        for server in yaml.safe_load((VAGRANT_DIR / "topology.yaml").read_text())["servers"]:
            run("ip", "-n", netns, "address", "add", server["address"], "dev", "lab0")
        run("ip", "-n", netns, "link", "set", "lab0", "up")
        done = subprocess.run(["ip", "netns", "exec", netns, "nginx", "-t", "-p", str(tmp_path),
                               "-c", str(tmp_path / "nginx.conf")],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr


# --- demo.sh against the namespace lab --------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[InterceptionLab]:
    reason = environment_ready()
    if reason is not None:
        pytest.skip(reason)
    running = InterceptionLab()
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _demo_in_client(lab: InterceptionLab) -> subprocess.CompletedProcess[str]:
    return lab.lab.run(lab.lab.client_ns, ["env", f"EXPECT={lab_env()['EXPECT']}", f"CA_BUNDLE={lab.client_bundle}",
                                           "bash", str(PROVISION / "demo.sh")], check=False, timeout=90)


@pytest.mark.netns
def test_demo_script_passes_in_the_namespace_lab(lab: InterceptionLab) -> None:
    done = _demo_in_client(lab)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo OK: 2 sites" in done.stdout
    assert "hello from shop.example" in done.stdout


@pytest.mark.netns
def test_demo_script_fails_when_tlsgw_does_not_inspect(lab: InterceptionLab) -> None:
    lab.stop_gateway()  # its rules go with it: the bridge forwards everything untouched
    done = _demo_in_client(lab)
    assert done.returncode == 1
    assert "https://shop.example/ - expected: decrypted by tlsgw" in done.stdout
    assert "NOT as expected" in done.stdout and "demo FAILED" in done.stdout
