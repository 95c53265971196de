"""Benchmark: choosing a server proxy's certificate by SNI among 1000 certificates.

Run from the repository root (no root needed, no network)::

    .venv/bin/python -m tests.bench.bench_sni_pick [--certificates N] [--picks K]

Issue 3 asks for a pick "in well under a millisecond" with the product's maximum of 1000
certificates. This prints the time per pick for three kinds of SNI (exact name, wildcard,
no match so the fallback), each the best of several rounds of K picks spread over all
certificates. A script that prints figures, never a test: speed is not asserted anywhere
(STYLE.md E); correctness with 1000 certificates is tested in
tests/unit/pki/test_server_certs.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gateway.pki.server_certs import ServerCertificates
from gateway.pki.store import StoredCert
from tests.support.pki_factory import ec_key, issue

ROUNDS = 5  # best of five damps a shared machine's noise without a long run


def build(count: int) -> ServerCertificates:
    key = ec_key()  # one key for all: selection never looks at keys, and EC signing is fast
    return ServerCertificates(
        StoredCert(f"cert{i}", issue(f"host{i}.example.test", key=key,
                                     names=(f"host{i}.example.test", f"*.svc{i}.example.test")).cert, (), key)
        for i in range(count)
    )


def per_pick_seconds(certs: ServerCertificates, snis: Sequence[str | None]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for sni in snis:
            certs.pick(sni)
        best = min(best, time.perf_counter() - start)
    return best / len(snis)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    certs = build(args.certificates)
    print(f"built {len(certs)} certificates and their index in {time.perf_counter() - start:.2f} s")

    n = args.certificates
    cases: dict[str, list[str | None]] = {
        "exact": [f"host{i % n}.example.test" for i in range(args.picks)],
        "wildcard": [f"api.svc{i % n}.example.test" for i in range(args.picks)],
        "fallback": [f"unknown{i % n}.example.test" for i in range(args.picks)],
    }
    for label, snis in cases.items():
        print(f"{label:>9}: {per_pick_seconds(certs, snis) * 1e6:.3f} us per pick ({args.picks} picks, best of {ROUNDS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
