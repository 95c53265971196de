"""Private keys kept only in the gateway's memory (issue 4, `pki.persist_keys: false`), end
to end in the lab: `tlsgw cert import` hands a server certificate's key to the running
gateway over its control socket, a client is shown that certificate by SNI, no key is on
disk, a restarted gateway has lost it (the server policy is out of service: flows cross
the bridge untouched) and says how to repair it, and importing the same files again
repairs it. With `workers: 2` the key reaches both workers, and a worker restarted later.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gateway.lab.demo_pki import ServerCert
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import SERVER1_INTERFACE
from tests.support.operations import lab_env, tlsgw

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"  # served by the lab's first server
FLOWS = 20  # both workers get some: all 20 hashed to one of two listeners has odds of 2 in a million
WAIT = 30.0  # seconds to wait for a worker restart on a loaded 2-core box (not asserted on)
IN_MEMORY = "key in gateway memory only (re-import after restart)"
MISSING = "no key: import it again"


@pytest.fixture
def lab(env: InterceptionLab) -> Iterator[InterceptionLab]:
    try:
        yield env
    finally:
        env.stop_gateway()


def base(env: InterceptionLab, **gateway: Any) -> dict[str, Any]:
    """Keys only in memory; the profile has no client policy, so a flow no policy takes is
    not steered at all and crosses the bridge untouched."""
    config = copy.deepcopy(env.config)
    config["gateway"].update(gateway)
    config["pki"].update({"persist_keys": False, "key_secret_file": str(env.workdir / "no-key-secret")})
    config["profiles"][0]["client_policies"] = []
    return config


def with_server_proxy(config: dict[str, Any], certificate: str) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["server_proxies"] = [{"name": "web", "destinations": [f"{SERVER1_INTERFACE.ip}/32"],
                                 "detection_ports": ["443"], "decrypted_service": "http",
                                 "certificates": [certificate]}]
    config["profiles"][0]["server_policies"] = [{"name": "web-in", "server_proxy": "web"}]
    return config


def cert_cli(env: InterceptionLab, *args: str) -> subprocess.CompletedProcess[str]:
    return tlsgw(env, "cert", "--config", str(env.config_path), *args)


def import_key(env: InterceptionLab, name: str, issued: ServerCert) -> subprocess.CompletedProcess[str]:
    return cert_cli(env, "import", name, str(issued.cert_file), "--key", str(issued.key_file))


def reload(env: InterceptionLab, config: dict[str, Any]) -> None:
    env.write_config(config)
    answer = tlsgw(env, "reload", "--config", str(env.config_path))
    assert answer.returncode == 0, answer.stderr


def doctor(env: InterceptionLab) -> subprocess.CompletedProcess[str]:
    """`tlsgw doctor` on the lab's configuration (its control socket), the network side in
    the gateway's namespace. Other findings about this lab host do not matter here."""
    return subprocess.run([sys.executable, "-m", "gateway", "doctor", "--config", str(env.config_path),
                           "--netns", env.lab.gateway_ns], capture_output=True, text=True, timeout=120, check=False)


def fingerprint(cert: x509.Certificate | None) -> bytes:
    assert cert is not None
    return cert.fingerprint(cert.signature_hash_algorithm)  # type: ignore[arg-type]


def file_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def key_body(issued: ServerCert) -> bytes:
    """A stretch of the key's base64 past the PKCS#8 header (which all P-256 keys share):
    the private value, which must never be found on disk but in its own file."""
    return b"".join(issued.key_file.read_bytes().splitlines()[1:-1])[48:90]


def files_holding(root: Path, needle: bytes, skip: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != skip and needle in path.read_bytes():
            found.append(path)
    return found


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_key_served_from_memory_lost_at_restart_and_imported_again(lab: InterceptionLab) -> None:
    assert lab.pki is not None
    issued = lab.pki.issue_server(HOST, file_stem="shop-gw")  # not the origin's own certificate
    ours, origins = file_cert(issued.cert_file), file_cert(lab.pki.servers[HOST].cert_file)
    lab.start_gateway(base(lab))

    answer = import_key(lab, "shop-gw", issued)
    assert answer.returncode == 0, answer.stderr
    assert "lives only in the memory of the running gateway" in answer.stdout
    assert "must be imported again after every restart" in answer.stdout
    entry = lab.pki.store_dir / "shop-gw"
    assert sorted(p.name for p in entry.iterdir()) == ["cert.pem", "info.json"]  # no key file
    reload(lab, with_server_proxy(base(lab), "shop-gw"))

    cert, verified = lab.peek_certificate(HOST)
    assert fingerprint(cert) == fingerprint(ours) and verified  # by SNI, from the gateway's memory
    record = lab.flow_records(sni=HOST, wait_for=1)[-1]
    assert record["policy_kind"] == "server" and record["server_certificate"] == "shop-gw"
    listing = cert_cli(lab, "list")
    assert IN_MEMORY in listing.stdout, listing.stdout + listing.stderr
    assert files_holding(lab.workdir, key_body(issued), skip=issued.key_file) == []  # not in logs or store

    # A restart: the key is gone; the gateway starts anyway and says what to do.
    lab.stop_gateway()
    records_before = len(lab.flow_records())
    lab.start_gateway(with_server_proxy(base(lab), "shop-gw"))
    log = (lab.workdir / "gateway.log").read_text()
    assert "server_proxies[0].certificates[0]" in log and "import it again" in log
    cert, verified = lab.peek_certificate(HOST)
    assert fingerprint(cert) == fingerprint(origins) and verified  # untouched: the server's own certificate
    assert len(lab.flow_records(timeout=0.5)) == records_before  # not steered to tlsgw at all
    status = tlsgw(lab, "status")
    assert "OUT OF SERVICE: key missing" in status.stdout
    assert "NO KEY:     server_proxies[0].certificates[0]" in status.stdout and "import it again" in status.stdout
    listing = cert_cli(lab, "list")
    assert MISSING in listing.stdout and "shop-gw: no key:" in listing.stdout
    check = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(lab.config_path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0  # systemd runs it before every start: no error
    assert "warning: server_proxies[0].certificates[0]" in check.stderr and "tlsgw cert import" in check.stderr
    report = doctor(lab)  # asks the running gateway, as status does: a problem, with the repair
    assert report.returncode == 1
    assert ("FAIL  certificates: server_proxies[0].certificates[0]: certificate 'shop-gw' keeps its private key "
            "only in the gateway's memory") in report.stdout, report.stdout
    assert "fix: import it again with the same files: tlsgw cert import shop-gw CERTFILE" in report.stdout

    # The same import again repairs it, without touching the store.
    answer = import_key(lab, "shop-gw", issued)
    assert answer.returncode == 0, answer.stderr
    assert "handed to the gateway again" in answer.stdout
    cert, _ = lab.peek_certificate(HOST)
    assert fingerprint(cert) == fingerprint(ours)
    assert "OUT OF SERVICE" not in tlsgw(lab, "status").stdout
    assert IN_MEMORY in cert_cli(lab, "list").stdout
    report = doctor(lab).stdout
    assert "shop-gw" not in report and "ok    certificates: the running gateway holds every key" in report, report


def test_import_without_a_running_gateway_is_refused(lab: InterceptionLab) -> None:
    assert lab.pki is not None
    issued = lab.pki.issue_server(HOST, file_stem="shop-nogw")
    lab.write_config(base(lab))
    answer = import_key(lab, "shop-nogw", issued)
    assert answer.returncode != 0 and "start tlsgw" in answer.stderr and "nothing was imported" in answer.stderr
    assert not (lab.pki.store_dir / "shop-nogw").exists()


def worker_pids(env: InterceptionLab) -> list[int]:
    answer = tlsgw(env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    return [w["pid"] for w in json.loads(answer.stdout)["workers"] if w["state"] == "serving"]


def fetch_all(env: InterceptionLab, count: int = FLOWS) -> list[dict[str, Any]]:
    """`count` new TLS connections to HOST, one after the other; their flow records."""
    before = len(env.flow_records())
    loop = (f"for i in $(seq {count}); do curl -sS -o /dev/null --max-time 10 --cacert {env.client_bundle} "
            f"https://{HOST}/ || exit 1; done")
    done = env.lab.run(env.lab.client_ns, ["sh", "-c", loop], check=False, timeout=count * 15)
    assert done.returncode == 0, done.stderr
    records = env.flow_records(wait_for=before + count)
    assert len(records) == before + count
    return records[before:]


def pid_of(record: dict[str, Any]) -> int:
    """The process that served a flow: flow ids start with its PID in hex (proxy/flow.py)."""
    return int(record["flow"].split("-")[0], 16)


def test_key_reaches_both_workers_and_a_restarted_one(lab: InterceptionLab) -> None:
    assert lab.pki is not None
    issued = lab.pki.issue_server(HOST, file_stem="shop-workers")
    lab.start_gateway(base(lab, workers=2))
    answer = import_key(lab, "shop-workers", issued)
    assert answer.returncode == 0, answer.stderr
    reload(lab, with_server_proxy(base(lab, workers=2), "shop-workers"))
    pids = worker_pids(lab)
    assert len(pids) == 2

    records = fetch_all(lab)
    assert Counter(pid_of(r) for r in records).keys() == set(pids)  # both workers served
    assert {(r["outcome"], r["server_certificate"]) for r in records} == {("decrypted", "shop-workers")}

    victim, survivor = pids
    os.kill(victim, signal.SIGKILL)  # a worker of the gateway this test started
    assert wait_until(lambda: len(worker_pids(lab)) == 2 and victim not in worker_pids(lab))
    [restarted] = set(worker_pids(lab)) - {survivor}
    records = fetch_all(lab)
    served = Counter(pid_of(r) for r in records)
    assert restarted in served  # the restarted worker got the key with the configuration
    assert {(r["outcome"], r["server_certificate"]) for r in records} == {("decrypted", "shop-workers")}
    assert files_holding(lab.workdir, key_body(issued), skip=issued.key_file) == []
