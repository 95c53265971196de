"""Benchmark: throughput of HTTPS inside a GRE tunnel through tlsgw, next to plain HTTPS.

Run as root from the repository root (it builds a namespace lab, see gateway/lab/)::

    .venv/bin/python -m tests.bench.bench_tunnels [--repeat K] [--bulk-mb M]

A script that prints figures, never a test (STYLE.md E; pytest does not collect
tests/bench). One lab serves every case: the client and server1 namespaces run the
user-space GRE endpoints of `tests/support/tunnel_endpoint.py` (key 42), and `curl`
downloads `/bulk` (`--bulk-mb` MiB) from nginx, either plainly (`--resolve` to the
server's outer address) or inside the tunnel (the inner address). MiB/s = size /
(total time - time until the request was sent), as in `bench_gateway.py`.

Cases, each round in this order (rounds repeated `--repeat` times, figures are medians
with their range):

    plain  bridge      tlsgw stopped: the bridge forwards the frames
    tunnel bridge      tlsgw stopped: the tunnel endpoints' own cost (Python, both ends)
    plain  decrypted   tlsgw decrypts and re-encrypts
    tunnel decrypted   tlsgw decapsulates, decrypts, re-encrypts, re-encapsulates
    tunnel untouched   tlsgw forwards the tunnel frames untouched (HTTP on port 80: no policy)

Every tlsgw round checks the inspection log: the decrypted cases must add a `decrypted`
record (the tunnel one with tunnel details once the proxy fills them), so a case that
silently took another path cannot pass unnoticed. On a 2-core machine the endpoints,
tlsgw, curl and nginx share the cores: compare the figures with each other only.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

from gateway.lab.origin import OriginOptions
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import CLIENT_INTERFACE, SERVER1_INTERFACE, SERVER2_INTERFACE, Lab

ENDPOINT = Path(__file__).resolve().parents[1] / "support" / "tunnel_endpoint.py"
INNER_CLIENT, INNER_SERVER = "10.1.0.10", "10.2.0.20"
CASES = ("plain bridge", "tunnel bridge", "plain decrypted", "tunnel decrypted", "tunnel untouched")


def start_endpoints(env: InterceptionLab) -> None:
    lab = env.lab
    for namespace, local, remote, address, route in (
            (lab.client_ns, CLIENT_INTERFACE.ip, SERVER1_INTERFACE.ip, INNER_CLIENT, "10.2.0.0/24"),
            (lab.server1_ns, SERVER1_INTERFACE.ip, CLIENT_INTERFACE.ip, INNER_SERVER, "10.1.0.0/24")):
        log = env.workdir / f"endpoint-{namespace}.log"
        process = lab.spawn(namespace, [sys.executable, str(ENDPOINT), "--mode", "gre", "--key", "42",
                                        "--local", str(local), "--remote", str(remote), "--address", address,
                                        "--route", route], log_path=log)
        deadline = time.monotonic() + 20
        while "ready" not in log.read_text():
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"tunnel endpoint did not start:\n{log.read_text()}")
            time.sleep(0.05)


def download(env: InterceptionLab, case: str) -> float:
    """MiB/s of one `/bulk` download for the case."""
    if case.startswith("plain"):
        target = ["--resolve", f"shop.example:443:{SERVER1_INTERFACE.ip}", "https://shop.example/bulk"]
    elif case == "tunnel untouched":
        target = ["http://shop.example/bulk"]
    else:
        target = ["https://shop.example/bulk"]
    done = env.lab.run(env.lab.client_ns, [
        "curl", "-sS", "-o", "/dev/null", "--max-time", "300", "--cacert", str(env.client_bundle),
        "-w", "%{size_download} %{time_total} %{time_pretransfer}", *target], check=False, timeout=320)
    if done.returncode != 0:
        raise RuntimeError(f"{case}: curl failed: {done.stderr.strip()}")
    size, total, pretransfer = (float(x) for x in done.stdout.split())
    return size / (1024 * 1024) / max(total - pretransfer, 1e-6)


def decrypted_records(env: InterceptionLab) -> list[dict[str, object]]:
    return [r for r in env.flow_records(timeout=0) if r.get("outcome") == "decrypted"]


def check_logged(env: InterceptionLab, case: str, before: int) -> None:
    """The download's flow is in the log as decrypted, from the inner client if tunneled."""
    deadline = time.monotonic() + 10
    while len(records := decrypted_records(env)) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{case}: tlsgw logged no decrypted flow")
        time.sleep(0.05)
    client = INNER_CLIENT if case.startswith("tunnel") else str(CLIENT_INTERFACE.ip)
    if records[-1]["client"] != client:
        raise RuntimeError(f"{case}: decrypted flow from {records[-1]['client']}, expected {client}")


def measure_round(env: InterceptionLab, config: dict[str, object]) -> dict[str, float]:
    figures: dict[str, float] = {}
    env.stop_gateway()
    for case in CASES[:2]:
        figures[case] = download(env, case)
    env.start_gateway(config)
    try:
        for case in CASES[2:]:
            before = len(decrypted_records(env))
            figures[case] = download(env, case)
            if case.endswith("decrypted"):
                check_logged(env, case, before)
    finally:
        env.stop_gateway()
    return figures


def report(rounds: Sequence[dict[str, float]], bulk_mb: int) -> list[str]:
    lines = [f"bulk download of {bulk_mb} MiB, MiB/s, median (min..max) of {len(rounds)} round(s):"]
    plain = statistics.median(r["plain decrypted"] for r in rounds)
    for case in CASES:
        values = [r[case] for r in rounds]
        middle = statistics.median(values)
        note = f"   {middle / plain:4.2f} x plain decrypted" if case != "plain decrypted" else ""
        lines.append(f"  {case:<17} {middle:8.1f}  ({min(values):.1f}..{max(values):.1f}){note}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bulk-mb", type=int, default=32)
    args = parser.parse_args(argv)
    reason = environment_ready()
    if reason is not None:
        print(f"bench_tunnels: {reason}", file=sys.stderr)
        return 2
    hosts = {"shop.example": IPv4Address(INNER_SERVER), "www.bank.example": SERVER2_INTERFACE.ip}
    env = InterceptionLab(lab=Lab(hosts=hosts), origin_options=OriginOptions(http_port=80, bulk_mb=args.bulk_mb))
    try:
        env.start(with_gateway=False)
        config = copy.deepcopy(env.config)
        config["gateway"]["tunnels"] = {"enabled": True}  # type: ignore[index]
        start_endpoints(env)
        rounds = []
        for repetition in range(1, args.repeat + 1):
            figures = measure_round(env, config)
            rounds.append(figures)
            print(f"round {repetition}: " + json.dumps({k: round(v, 1) for k, v in figures.items()}), flush=True)
        print()
        for line in report(rounds, args.bulk_mb):
            print(line)
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
