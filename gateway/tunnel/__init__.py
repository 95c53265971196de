"""TLS inspection inside one layer of GRE or IP-in-IP (issue 7).

For operators
=============

Turn it on with::

    gateway:
      tunnels: {enabled: true, outer_mtu: 1500}

Inner TCP flows that match a segment's client policies (their detection ports) or a
server policy (its server proxy's destinations and ports), within the segment's
`sources`/`destinations`, are inspected exactly like plain flows: same policies, same
outcomes, one line each in the SSL inspection log, whose `tunnel` field names the tunnel
type (`gre`, `ipip`), the outer addresses and the GRE key (`null` without one). The
server sees the inner client address. Everything else crosses the bridge untouched,
byte for byte: other inner flows, flows that were open before tlsgw started, and every
unsupported tunnel packet, counted by reason as `tunnel.unsupported.<reason>`
(`tlsgw stats`):

    gre_sequence, gre_checksum, gre_routing, gre_version, gre_flags, gre_payload,
    nested (a second tunnel layer: GRE, IP-in-IP, 6in4 or GTP-U inside), ipv6_inner,
    ipv6_outer, gtp (GTP-U on the bridge), outer_fragment, inner_fragment, truncated,
    bad_header, inner_malformed

Supported: GRE (RFC 2784) with or without the key of RFC 2890 (the same key both ways),
carrying IPv4; IP-in-IP. The kernel needs no GRE or IP-in-IP support: tlsgw
decapsulates in user space (`switch.py`; the kernel side is `netfilter/tunnel_plan.py`).

Limits, by design:
- Outer fragments are not reassembled: they cross untouched (`outer_fragment`). The
  inner TCP MSS of every inspected flow is clamped so that the gateway's re-encapsulated
  packets fit `outer_mtu`, so inspected flows do not produce them.
- VLAN-tagged tunnel frames are not diverted (VLAN segments are not supported yet).
- Two tunnels carrying the same inner client, server and port at the same time: only
  the first is inspected; the second crosses untouched (`tunnel.conflicts`).
- Fail-open: `tlsgw` stopping hands the tunnels back to the bridge at once; a killed
  tlsgw stops diverting them within one second (`tunnel_plan.ALIVE_TIMEOUT`). Flows that
  tlsgw was inspecting end with it, as plain inspected flows do.
- Every GRE and IP-in-IP packet on a segment's ports passes through tlsgw's user-space
  loop while it runs; `tests/bench/bench_tunnels.py` measures what that costs.

Module map: `frames` (parse outer headers, pure), `encap` (build them, pure), `mss`
(clamp, pure), `flows` (inner flow <-> tunnel table, pure), `selection` (which inner
flows to take, pure), `switch` (the sans-I/O core), `tun` (the I/O shell).
"""
