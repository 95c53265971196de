"""The SSL inspection log: exactly one JSON line per flow, whatever its outcome.

The record is a plain value filled in as the flow progresses, so the proxy shell can emit
it from a single `finally`; the writer appends whole lines with one write() each, so
several worker processes may share the file without interleaving (O_APPEND).
Never logged: keys, plaintext payloads. Certificates appear by subject, issuer and
SHA-256 fingerprint only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields

logger = logging.getLogger("tlsgw.flow")


@dataclass(slots=True)
class TlsLegInfo:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None


@dataclass(slots=True)
class UpstreamCertInfo:
    subject: str | None = None
    issuer: str | None = None
    sha256: str | None = None
    not_after: str | None = None
    verification: str | None = None
    """'ok' or the reason the upstream certificate failed browser-grade validation."""


@dataclass(slots=True)
class FlowRecord:
    flow: str
    time: str
    segment: str
    client: str
    client_port: int
    server: str
    server_port: int
    profile: str | None = None
    policy: str | None = None
    policy_kind: str | None = None
    sni: str | None = None
    outcome: str | None = None
    reason: str | None = None
    client_tls: TlsLegInfo = field(default_factory=TlsLegInfo)
    upstream_tls: TlsLegInfo = field(default_factory=TlsLegInfo)
    upstream_certificate: UpstreamCertInfo = field(default_factory=UpstreamCertInfo)
    forged_issuer: str | None = None
    """Client inspection: the issuer of the certificate forged for the client."""
    server_certificate: str | None = None
    """Server inspection: the name of the organisation's certificate shown to the client."""
    bytes_up: int = 0
    """Bytes from client to server (plaintext when decrypted, raw otherwise)."""
    bytes_down: int = 0
    duration_ms: float = 0.0
    http: list[dict[str, str]] = field(default_factory=list)
    """For decrypted HTTP: the first requests seen (method, host, path, status)."""
    tunnel: dict[str, object] | None = None
    """For a flow carried inside a GRE or IP-in-IP tunnel (issue 7): `type` (gre, ipip),
    `outer_client`, `outer_server` and, for GRE, `gre_key` (null without a key); None
    for plain flows. `client` and `server` above are the inner addresses."""

    def to_dict(self) -> dict[str, object]:
        """Field by field: `dataclasses.asdict` deep-copies every value, which cost half a
        millisecond per flow (issue 8 profile)."""
        out: dict[str, object] = {}
        for name in FLOW_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (TlsLegInfo, UpstreamCertInfo)):
                value = {n: getattr(value, n) for n in value.__slots__}  # type: ignore[attr-defined]
            out[name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def summary(self) -> str:
        return (f"flow={self.flow} client={self.client}:{self.client_port} server={self.server}:"
                f"{self.server_port} sni={self.sni or '-'} segment={self.segment} policy={self.policy or '-'} "
                f"outcome={self.outcome!r} reason={self.reason!r} bytes_up={self.bytes_up} "
                f"bytes_down={self.bytes_down} ms={self.duration_ms:.1f}" + _tunnel_summary(self.tunnel))


def _tunnel_summary(tunnel: dict[str, object] | None) -> str:
    if not tunnel:
        return ""
    key = f" gre_key={tunnel.get('gre_key')}" if tunnel.get("type") == "gre" else ""
    return f" tunnel={tunnel.get('type')} outer={tunnel.get('outer_client')}>{tunnel.get('outer_server')}{key}"


FLOW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FlowRecord))


class InspectionLog:
    """Appends FlowRecords to a JSON-lines file (created 0640) and to the `tlsgw.flow` logger."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        if path:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, mode=0o750, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, record: FlowRecord) -> None:
        logger.info("%s", record.summary())
        if self._fd is not None:
            os.write(self._fd, (record.to_json() + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
