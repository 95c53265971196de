"""One intercepted TCP connection, from accept to the flow log line.

    accept ──► PEEK (ClientHello, pure parser) ──► decide() ──┬─ SPLICE: connect upstream
                                                              │   as the client, replay the
                                                              │   ClientHello, relay bytes
                                                              ├─ BLOCK: close (or reset)
                                                              ├─ DECRYPT_SERVER: the
                                                              │   organisation's certificate
                                                              │   for the SNI, real server
                                                              │   upstream, relay plaintext
                                                              └─ DECRYPT_CLIENT:
        connect upstream as the client ─► TLS handshake upstream (client's SNI and ALPN)
        ─► verify the chain with browser rules ─► judge_upstream():
             BLOCK | forge under signing CA | forge under untrusted CA
        ─► TLS handshake with the client, replaying its ClientHello ─► relay plaintext

Every decision is taken by pure code (`policy.engine.decide`, `pki.verify`,
`session.verdict.judge_upstream`); this module only moves bytes and records what happened.
Nothing from the client reaches the server in decrypted mode until the upstream
certificate has been judged. A misbehaving peer ends its own flow, logged; it never
raises out of `handle()`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from dataclasses import replace
from collections.abc import Callable
from datetime import datetime, timezone
from ipaddress import IPv4Address

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from gateway.config.model import DecryptedService, Segment
from gateway.inspect.http import HttpObserver
from gateway.observability.counters import Counters
from gateway.observability.flowlog import FlowRecord, InspectionLog
from gateway.pki.verify import verify_upstream
from gateway.policy.decision import Action, Decision, Outcome
from gateway.policy.engine import decide, exempt_by_certificate
from gateway.policy.facts import FlowFacts
from gateway.proxy import sockets
from gateway.proxy.relay import RawTransform, Relay, TlsTransform, Transform
from gateway.runtime import ClientProxyMaterial, Runtime
from gateway.session.verdict import UpstreamVerdictKind, judge_upstream
from gateway.tls.alerts import explain_handshake_failure
from gateway.tls.clienthello import ClientHello, ClientHelloError, ClientHelloParser
from gateway.tls.contexts import new_client_connection, new_server_proxy_connection, new_upstream_connection
from gateway.tls.endpoint import CHUNK, TlsEndpoint, TlsFailure

logger = logging.getLogger(__name__)

_flow_ids = itertools.count(1)
# A per-process prefix keeps flow ids unique across restarts and worker processes.
_FLOW_PREFIX = f"{os.getpid():x}"

CONNECT_TIMEOUT = 10.0  # seconds for the upstream TCP handshake, as a browser's connect timeout


class FlowEnded(Exception):
    """Internal: the flow ends here with the outcome already written into the record."""


class Leg:
    """One side's TCP connection as asyncio streams, with byte counting left to callers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Leg:
        reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def half_close(self) -> None:
        try:
            if self.writer.can_write_eof() and not self.writer.is_closing():
                self.writer.write_eof()
        except OSError:
            pass

    def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            self.writer.transport.abort()
        else:
            self.writer.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _name_of(name: x509.Name) -> str:
    return name.rfc4514_string()


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names of the SAN, or the CN when there is no SAN (as browsers no longer do, but
    for exemption matching only: being generous here can only keep a site undecrypted)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))


class FlowHandler:
    """Handles connections accepted on one segment's listener."""

    def __init__(self, segment: Segment, runtime: Callable[[], Runtime], log: InspectionLog,
                 counters: Counters) -> None:
        self.segment = segment
        self.runtime = runtime
        self.log = log
        self.counters = counters
        self.active_decrypted = 0

    async def handle(self, client_sock: socket.socket) -> None:
        """Never raises except CancelledError: one flow's failure is that flow's alone."""
        runtime = self.runtime()  # the snapshot this flow keeps until it ends
        started = time.monotonic()
        client_ip, client_port = client_sock.getpeername()[:2]
        server_ip, server_port = client_sock.getsockname()[:2]
        record = FlowRecord(
            flow=f"{_FLOW_PREFIX}-{next(_flow_ids)}", time=_now().isoformat(timespec="milliseconds"),
            segment=self.segment.name, client=client_ip, client_port=client_port,
            server=server_ip, server_port=server_port,
        )
        self.counters.add("connections")
        client: Leg | None = None
        upstream: Leg | None = None
        try:
            client = await Leg.open(client_sock)
            hello = await self._read_clienthello(runtime, client, record)
            facts = FlowFacts(
                segment=self.segment.name, client=IPv4Address(client_ip), client_port=client_port,
                server=IPv4Address(server_ip), server_port=server_port, sni=hello.sni,
                alpn=hello.alpn, offered_versions=hello.supported_versions,
            )
            record.sni = hello.sni
            decision = self._limit(runtime, decide(runtime.config, facts))
            record.profile, record.policy = decision.profile, decision.policy
            record.policy_kind = decision.policy_kind.value if decision.policy_kind else None
            if decision.action is Action.BLOCK:
                self._end(record, decision.outcome, decision.reason)
                client.close(reset=self._reset_client(runtime, decision))
                return
            if decision.action is Action.SPLICE:
                upstream = await self._connect(client_ip, server_ip, server_port)
                record.outcome, record.reason = decision.outcome.value, decision.reason
                await upstream.send(hello.raw)
                record.bytes_up += len(hello.raw)
                await self._splice(runtime, client, upstream, record)
                return
            self.active_decrypted += 1
            try:
                if decision.action is Action.DECRYPT_SERVER:
                    upstream = await self._decrypt_server(runtime, decision, hello, client, record)
                else:
                    upstream = await self._decrypt_client(runtime, decision, hello, client, record)
            finally:
                self.active_decrypted -= 1
        except FlowEnded:
            pass
        except asyncio.CancelledError:
            if record.outcome is None:
                self._end(record, Outcome.BLOCKED, "gateway shutting down")
            raise
        except (ConnectionError, TimeoutError, OSError) as exc:
            if record.outcome is None:
                self._end(record, Outcome.BLOCKED, f"connection failed: {exc.__class__.__name__}: {exc}")
        except Exception as exc:  # a bug: logged with traceback, flow closed, daemon keeps serving
            logger.exception("flow %s crashed", record.flow)
            self.counters.add("internal_errors")
            if record.outcome is None:
                self._end(record, Outcome.BLOCKED, f"internal error: {exc.__class__.__name__}")
        finally:
            for leg in (client, upstream):
                if leg is not None:
                    leg.close()
            if client is None:
                client_sock.close()
            record.duration_ms = round((time.monotonic() - started) * 1000, 1)
            self.counters.add(f"outcome.{record.outcome}")
            self.counters.add("bytes_up", record.bytes_up)
            self.counters.add("bytes_down", record.bytes_down)
            self.log.write(record)

    # -- steps ---------------------------------------------------------------------------

    def _end(self, record: FlowRecord, outcome: Outcome, reason: str) -> None:
        record.outcome, record.reason = outcome.value, reason

    def _reset_client(self, runtime: Runtime, decision: Decision) -> bool:
        material = runtime.client_proxies.get(decision.proxy or "")
        return bool(material and material.proxy.tcp_reset_client)

    def _limit(self, runtime: Runtime, decision: Decision) -> Decision:
        limits = runtime.config.gateway.limits
        decrypting = decision.action in (Action.DECRYPT_CLIENT, Action.DECRYPT_SERVER)
        if not decrypting or self.active_decrypted < limits.max_concurrent:
            return decision
        self.counters.add("limit_reached")
        reason = f"max concurrent connections ({limits.max_concurrent}) reached"
        if limits.on_exceed.value == "block":
            return replace(decision, action=Action.BLOCK, outcome=Outcome.BLOCKED, reason=reason)
        return replace(decision, action=Action.SPLICE, outcome=Outcome.BYPASSED, reason=reason)

    async def _read_clienthello(self, runtime: Runtime, client: Leg, record: FlowRecord) -> ClientHello:
        parser = ClientHelloParser()
        try:
            async with asyncio.timeout(runtime.config.gateway.handshake_timeout):
                while True:
                    data = await client.reader.read(CHUNK)
                    if not data:
                        self._end(record, Outcome.BLOCKED, "client closed before sending a ClientHello")
                        raise FlowEnded
                    hello = parser.feed(data)
                    if hello is not None:
                        return hello
        except ClientHelloError as exc:
            self.counters.add("not_tls")
            self._end(record, Outcome.BLOCKED, f"not a TLS ClientHello: {exc}")
            client.close(reset=True)
            raise FlowEnded from None
        except TimeoutError:
            self._end(record, Outcome.BLOCKED, "no ClientHello within the handshake timeout")
            raise FlowEnded from None

    async def _connect(self, client_ip: str, server_ip: str, server_port: int) -> Leg:
        sock = await sockets.connect_as(client_ip, (server_ip, server_port), CONNECT_TIMEOUT)
        return await Leg.open(sock)

    async def _handshake(self, endpoint: TlsEndpoint, leg: Leg, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                done = endpoint.handshake()
                await leg.send(endpoint.data_to_send())
                if done:
                    return
                endpoint.feed(await leg.reader.read(CHUNK))

    async def _upstream_tls(self, runtime: Runtime, context: SSL.Context, hello: ClientHello,
                            alpn: tuple[str, ...], client: Leg, record: FlowRecord,
                            reset_client: bool) -> tuple[Leg, TlsEndpoint]:
        """Connect to the real server as the client and complete TLS with the client's SNI."""
        upstream = await self._connect(record.client, record.server, record.server_port)
        up_tls = TlsEndpoint(new_upstream_connection(context, hello.sni, alpn))
        try:
            await self._handshake(up_tls, upstream, runtime.config.gateway.handshake_timeout)
        except (TlsFailure, TimeoutError) as exc:
            detail = exc.detail if isinstance(exc, TlsFailure) else "timed out"
            self.counters.add("handshake_failures.upstream")
            self._end(record, Outcome.BLOCKED,
                      explain_handshake_failure("upstream", detail, f"{record.server}:{record.server_port}", hello.sni))
            upstream.close()
            client.close(reset=reset_client)
            raise FlowEnded from None
        record.upstream_tls.version, record.upstream_tls.cipher, record.upstream_tls.alpn = (
            up_tls.version, up_tls.cipher, up_tls.alpn)
        return upstream, up_tls

    async def _client_tls(self, runtime: Runtime, connection: SSL.Connection, hello: ClientHello, client: Leg,
                          upstream: Leg, up_tls: TlsEndpoint, record: FlowRecord, note: str = "",
                          reset_upstream: bool = False) -> TlsEndpoint:
        """Complete TLS with the client, replaying its ClientHello. On failure the upstream
        gets a close_notify, or a TCP reset when the server proxy asks for one."""
        client_tls = TlsEndpoint(connection)
        client_tls.feed(hello.raw)
        try:
            await self._handshake(client_tls, client, runtime.config.gateway.handshake_timeout)
        except (TlsFailure, TimeoutError) as exc:
            detail = exc.detail if isinstance(exc, TlsFailure) else "timed out"
            self.counters.add("handshake_failures.client")
            sentence = explain_handshake_failure("client", detail, f"{record.client}:{record.client_port}", hello.sni)
            self._end(record, Outcome.BLOCKED, sentence + (f"; {note}" if note else ""))
            if reset_upstream:
                upstream.close(reset=True)
            else:
                up_tls.close()
                await upstream.send(up_tls.data_to_send())
            raise FlowEnded from None
        record.client_tls.version, record.client_tls.cipher, record.client_tls.alpn = (
            client_tls.version, client_tls.cipher, client_tls.alpn)
        return client_tls

    async def _decrypt_server(self, runtime: Runtime, decision: Decision, hello: ClientHello,
                              client: Leg, record: FlowRecord) -> Leg:
        """Server inspection: the organisation's own certificate, chosen by SNI, toward the
        client; the real server upstream (not validated: tlsgw holds its key already)."""
        material = runtime.server_proxies[decision.proxy or ""]
        certificate, context = material.client_context(hello.sni)
        record.forged_issuer = None
        record.server_certificate = certificate.name
        upstream, up_tls = await self._upstream_tls(runtime, material.upstream_context, hello, hello.alpn,
                                                    client, record, reset_client=False)
        client_tls = await self._client_tls(runtime, new_server_proxy_connection(context, up_tls.alpn), hello,
                                            client, upstream, up_tls, record,
                                            reset_upstream=material.proxy.tcp_reset_server)
        self._end(record, Outcome.DECRYPTED, decision.reason)
        await self._relay_decrypted(runtime, material.proxy.decrypted_service, client, client_tls,
                                    upstream, up_tls, record)
        return upstream

    async def _decrypt_client(self, runtime: Runtime, decision: Decision, hello: ClientHello,
                              client: Leg, record: FlowRecord) -> Leg:
        material = runtime.client_proxies[decision.proxy or ""]
        proxy = material.proxy
        alpn = tuple(p for p in hello.alpn if not (proxy.downgrade_http2 and p == "h2"))
        upstream, up_tls = await self._upstream_tls(runtime, material.upstream_context, hello, alpn, client,
                                                    record, reset_client=proxy.tcp_reset_client)

        chain = up_tls.connection.get_peer_cert_chain(as_cryptography=True) or []
        now = _now()
        host = hello.sni or record.server
        anchors = runtime.trust_anchors[decision.trust_store or ""]
        result = verify_upstream(chain, host, anchors, now=now, min_key_length=proxy.min_key_length)
        if chain:
            leaf = chain[0]
            info = record.upstream_certificate
            info.subject, info.issuer = _name_of(leaf.subject), _name_of(leaf.issuer)
            info.sha256 = leaf.fingerprint(hashes.SHA256()).hex()
            info.not_after = leaf.not_valid_after_utc.isoformat()
        record.upstream_certificate.verification = "ok" if result.ok else (
            f"{result.reason.value if result.reason else 'invalid'}: {result.detail}")

        if chain and hello.sni is None:
            exemption = exempt_by_certificate(runtime.config, decision, certificate_names(chain[0]))
            if exemption is not None:
                # No SNI: the server certificate decides. Nothing was sent to the client yet,
                # so start over with an untouched relay and the original ClientHello.
                upstream.close()
                upstream = await self._connect(record.client, record.server, record.server_port)
                self._end(record, Outcome.NOT_DECRYPTED, exemption + " (by server certificate, no SNI)")
                await upstream.send(hello.raw)
                record.bytes_up += len(hello.raw)
                await self._splice(runtime, client, upstream, record)
                return upstream

        verdict = judge_upstream(proxy, result)
        if verdict.kind is UpstreamVerdictKind.BLOCK or not chain:
            self.counters.add("blocked.upstream_certificate")
            self._end(record, Outcome.BLOCKED, verdict.reason if chain else "upstream sent no certificate")
            up_tls.close()
            await upstream.send(up_tls.data_to_send())
            client.close(reset=proxy.tcp_reset_client)
            raise FlowEnded
        trusted = verdict.kind is UpstreamVerdictKind.FORGE_TRUSTED
        leaf_cert, leaf_key = self._forged_leaf(runtime, material, chain[0], trusted, hello.sni, now)
        record.forged_issuer = _name_of(leaf_cert.issuer)

        context = material.trusted_context if trusted else material.untrusted_context
        client_tls = await self._client_tls(
            runtime, new_client_connection(context, leaf_cert, leaf_key, up_tls.alpn), hello, client,
            upstream, up_tls, record, note="" if trusted else verdict.reason)
        self._end(record, Outcome.DECRYPTED, decision.reason if trusted else verdict.reason)
        await self._relay_decrypted(runtime, proxy.decrypted_service, client, client_tls, upstream, up_tls, record)
        return upstream

    def _forged_leaf(self, runtime: Runtime, material: ClientProxyMaterial, upstream_cert: x509.Certificate,
                     trusted: bool, sni: str | None, now: datetime) -> tuple[x509.Certificate, object]:
        process = runtime.process
        issuer = material.signing if trusted else runtime.untrusted_ca
        assert issuer is not None and issuer.key is not None
        leaf_key = process.leaf_keys.get()
        misses = process.forge_cache.misses
        cached = process.forge_cache.get_or_forge(upstream_cert, issuer.certificate, issuer.key, process.leaf_keys,
                                                  now=now, sni=sni)
        if process.forge_cache.misses != misses:
            self.counters.add("forged_certificates")
        return cached, leaf_key

    # -- relays --------------------------------------------------------------------------

    async def _splice(self, runtime: Runtime, client: Leg, upstream: Leg, record: FlowRecord) -> None:
        def up(n: int) -> None:
            record.bytes_up += n

        def down(n: int) -> None:
            record.bytes_down += n

        await self._relay(runtime, client, upstream, RawTransform(up), RawTransform(down))

    async def _relay_decrypted(self, runtime: Runtime, service: DecryptedService,
                               client: Leg, client_tls: TlsEndpoint,
                               upstream: Leg, up_tls: TlsEndpoint, record: FlowRecord) -> None:
        observer = HttpObserver() if service is DecryptedService.HTTP else None

        def up(plain: bytes) -> None:
            record.bytes_up += len(plain)
            if observer is not None:
                observer.client_data(plain)

        def down(plain: bytes) -> None:
            record.bytes_down += len(plain)
            if observer is not None:
                observer.server_data(plain)

        try:
            await self._relay(runtime, client, upstream, TlsTransform(client_tls, up_tls, up),
                              TlsTransform(up_tls, client_tls, down))
        finally:
            if observer is not None:
                record.http = observer.messages

    async def _relay(self, runtime: Runtime, client: Leg, upstream: Leg,
                     client_to_upstream: Transform, upstream_to_client: Transform) -> None:
        relay = Relay(((client.reader, client.writer), (upstream.reader, upstream.writer)),
                      (client_to_upstream, upstream_to_client), runtime.config.gateway.idle_timeout)
        await relay.run()
        if relay.timed_out:
            self.counters.add("relay.idle_timeout")
        elif isinstance(relay.error, TlsFailure):
            self.counters.add("relay.tls_errors")
