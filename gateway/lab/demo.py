"""`tlsgw demo`: interception shown end to end on a real kernel, in network namespaces.

A client fetches two sites by name through the bridge. `shop.example` is decrypted: the
client sees a certificate with the server's names issued by the demo signing CA. The
domain `*.bank.example` is exempted by the decryption policy: the client sees the bank's
own certificate. Both servers log the client's own address (the gateway is invisible).
Everything is torn down at the end, also on failure or Ctrl-C (SIGINT and SIGTERM).
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType

from gateway.lab.scenario import Fetch, InterceptionLab, environment_ready


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _show_fetch(lab: InterceptionLab, number: int, host: str, expect: str) -> bool:
    fetch: Fetch = lab.fetch(host)
    records = lab.flow_records(sni=host, wait_for=2)
    record = records[0] if records else {}
    origin = lab.origin_for(host)
    entries = origin.wait_for_access_log(1)
    print(f"\n[{number}] client fetches https://{host}/ (expected: {expect})")
    print(f"    outcome (inspection log) : {record.get('outcome')} - {record.get('reason')}")
    print(f"    certificate client saw   : subject {fetch.subject}")
    print(f"                               issuer  {fetch.issuer}")
    print(f"                               client verification {'ok' if fetch.verify_ok else 'FAILED'}")
    print(f"    page                     : {fetch.body.strip() or fetch.curl_error}")
    print(f"    server access log        : request from {entries[0].remote_addr if entries else '?'}"
          f" ({entries[0].ssl_protocol if entries else '?'})")
    print(f"    inspection log line      : {json.dumps(record, separators=(',', ':'))}")
    client_ip = lab.lab.client_address
    ok = (
        fetch.ok and fetch.verify_ok and record.get("outcome") == expect
        and bool(entries) and all(e.remote_addr == client_ip for e in entries)
    )
    if expect == "decrypted":
        ok = ok and fetch.issuer is not None and "Signing CA" in fetch.issuer
    else:
        ok = ok and fetch.issuer is not None and "Public Root" in fetch.issuer
    return ok


def run_demo(keep: bool = False) -> int:
    reason = environment_ready()
    if reason is not None:
        print(f"tlsgw demo: {reason}", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, _interrupt)
    lab = InterceptionLab()
    try:
        print("tlsgw demo: building the lab (client -- gateway bridge -- two HTTPS servers) ...")
        lab.start()
        topo = lab.lab
        print(f"    client {topo.client_address} in {topo.client_ns}; gateway bridge {topo.bridge} "
              f"({topo.client_port} | {topo.server_port}) in {topo.gateway_ns}")
        print(f"    shop.example {topo.server1_address}, www.bank.example {topo.server2_address}; "
              f"tlsgw pid {lab.gateway.pid if lab.gateway else '?'}; config {lab.config_path}")
        ok = _show_fetch(lab, 1, "shop.example", "decrypted")
        ok = _show_fetch(lab, 2, "www.bank.example", "not decrypted") and ok
        if keep:
            input("\nlab is up; press Enter to tear it down ")
        print("\n" + ("demo OK: one flow decrypted, one exempted, the servers saw the client's address"
                      if ok else "demo FAILED: see above"))
        if not ok:
            print(lab.stop_gateway()[-4000:], file=sys.stderr)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        lab.stop()
        signal.signal(signal.SIGTERM, previous)
        print("lab torn down")
