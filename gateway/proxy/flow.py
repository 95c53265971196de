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
import functools
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from ipaddress import IPv4Address

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from gateway.config.model import DecryptedService, Segment
from gateway.inspect.http import HttpObserver
from gateway.observability.counters import Counters
from gateway.observability.flowlog import FlowRecord, InspectionLog
from gateway.observability.reasons import flow_counts
from gateway.observability.sessions import SessionTable
from gateway.pki.verify import VerifyResult
from gateway.policy.decision import Action, Decision, Outcome, PolicyKind
from gateway.policy.engine import decide, exempt_by_certificate
from gateway.policy.facts import FlowFacts
from gateway.policy.limits import ConcurrencyLimit
from gateway.policy.site_bypass import (
    BypassReason,
    BypassSettings,
    Site,
    is_pinning_symptom,
)
from gateway.proxy import sockets
from gateway.proxy.relay import PlainSide, Relay, TlsSide
from gateway.runtime import ClientProxyMaterial, Runtime
from gateway.session.verdict import UpstreamVerdictKind, judge_upstream
from gateway.tls import protocol_stats
from gateway.tls.alerts import explain_handshake_failure
from gateway.tls.ciphers import Signature
from gateway.tls.clienthello import ClientHello, ClientHelloError, ClientHelloParser
from gateway.tls.contexts import (
    UpstreamContexts,
    new_client_connection,
    new_server_proxy_connection,
    server_requested_client_certificate,
    signature_of,
)
from gateway.tls.endpoint import CHUNK, TlsEndpoint, TlsFailure
from gateway.tls.groups import upstream_groups
from gateway.tls.versions import OfferRefusal, UpstreamOffer
from gateway.tunnel.flows import FlowTable

logger = logging.getLogger(__name__)
# The proxies' `logging: true` troubleshooting detail: each step of a flow with its time.
troubleshoot = logging.getLogger("tlsgw.troubleshoot")

_flow_ids = itertools.count(1)
# A per-process prefix keeps flow ids unique across restarts and worker processes.
_FLOW_PREFIX = f"{os.getpid():x}"

CONNECT_TIMEOUT = 10.0  # seconds for the upstream TCP handshake, as a browser's connect timeout
# Appended to the reason of a flow bypassed because of what an earlier flow to the site
# showed, so the log tells it from the flow that found out (issue 5).
REMEMBERED_NOTE = "(remembered for this site: relayed untouched from the first packet)"


class FlowEnded(Exception):
    """Internal: the flow ends here with the outcome already written into the record."""


class Leg:
    """One side's TCP connection: a non-blocking socket that the event loop reads and
    writes for the ClientHello and the handshakes, and the relay drives directly after.
    No asyncio transport or stream: they would own the descriptor (the relay could not
    hand it to OpenSSL) and cost a buffer and several objects per idle connection."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def recv(self) -> bytes:
        # Try first: what the peer sent may be here already (a ClientHello right behind the
        # TCP handshake), and waiting costs a poll registration in uvloop.
        try:
            return self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return await asyncio.get_running_loop().sock_recv(self.sock, CHUNK)

    async def send(self, data: bytes) -> None:
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def close(self, reset: bool = False) -> None:
        if reset:
            sockets.reset_on_close(self.sock)
        self.sock.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _name_of(name: x509.Name) -> str:
    return name.rfc4514_string()


@functools.lru_cache(maxsize=1024)
def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names of the SAN, or the CN when there is no SAN (as browsers no longer do, but
    for exemption matching only: being generous here can only keep a site undecrypted).
    Cached by certificate: every connection without SNI asks, and parsing the extension
    showed in the handshake profile (issue 8)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))


@functools.lru_cache(maxsize=1024)
def _leaf_facts(leaf: x509.Certificate) -> tuple[str, str, str, str]:
    """Subject, issuer, SHA-256 fingerprint and expiry as the flow log shows them. Cached
    by certificate (equal when their DER is): a site sends the same leaf to every
    connection, and formatting the names was a visible part of each handshake (issue 8)."""
    return (_name_of(leaf.subject), _name_of(leaf.issuer), leaf.fingerprint(hashes.SHA256()).hex(),
            leaf.not_valid_after_utc.isoformat())


def _note_upstream_certificate(record: FlowRecord, chain: list[x509.Certificate], result: VerifyResult) -> None:
    """The upstream certificate in the flow record: by subject, issuer and fingerprint."""
    info = record.upstream_certificate
    if chain:
        info.subject, info.issuer, info.sha256, info.not_after = _leaf_facts(chain[0])
    info.verification = "ok" if result.ok else (
        f"{result.reason.value if result.reason else 'invalid'}: {result.detail}")


class FlowHandler:
    """Handles connections accepted on one segment's listener."""

    def __init__(self, segment: Segment, runtime: Callable[[], Runtime], log: InspectionLog,
                 counters: Counters) -> None:
        self.segment = segment
        self.runtime = runtime
        self.log = log
        self.counters = counters
        self.concurrency = ConcurrencyLimit()
        """Decrypting sessions against limits.max_concurrent; the daemon shares one across
        segments (issue 6)."""
        self.sessions: SessionTable | None = None
        """The live session list of `tlsgw sessions`, set by the daemon (issue 6)."""
        self.tunnels: FlowTable | None = None
        """The tunnel flow table, set by the daemon when `gateway.tunnels.enabled` (issue 7)."""
        self._traced: dict[str, float] = {}
        """Flows whose proxy has `logging: true`, by flow id -> start time."""

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
        if self.tunnels is not None:
            record.tunnel = self.tunnels.describe(client_ip, client_port, server_ip, server_port)
        self.counters.add("connections")
        if self.sessions is not None:
            self.sessions.attach(record)
        client: Leg | None = None
        upstream: Leg | None = None
        try:
            client = Leg(client_sock)
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
            if self._proxy_logging(runtime, decision):
                self._traced[record.flow] = started
                self._step(record, f"ClientHello sni={hello.sni} alpn={','.join(hello.alpn) or '-'} "
                                   f"versions={','.join(hex(v) for v in hello.supported_versions)}; "
                                   f"decision {decision.action.value}: {decision.reason}")
            if decision.action is Action.BLOCK:
                self._end(record, decision.outcome, decision.reason)
                client.close(reset=self._reset_client(runtime, decision))
                return
            # Each branch creates the coroutine that serves the flow, then this frame lets
            # go of the parsed ClientHello (about 2 KiB) before awaiting it: the relay may
            # last hours, and the callee drops its own reference after the handshakes.
            if decision.action is Action.SPLICE:
                untouched = self._relay_untouched(runtime, client, hello, record, decision.outcome, decision.reason)
                del hello, facts
                upstream = await untouched
                return
            site = Site(IPv4Address(server_ip), server_port, hello.sni)
            bypass = runtime.process.site_bypass.lookup(site, time.monotonic())
            if bypass is not None:
                self.counters.add(f"bypassed.{bypass.name.lower()}")
                untouched = self._relay_untouched(runtime, client, hello, record, Outcome.BYPASSED,
                                                  f"{bypass.value} {REMEMBERED_NOTE}")
                del hello, facts
                upstream = await untouched
                return
            decrypt = self._decrypt_server if decision.action is Action.DECRYPT_SERVER else self._decrypt_client
            decrypting = decrypt(runtime, decision, hello, client, record, site)
            del hello, facts
            self.concurrency.active += 1
            try:
                upstream = await decrypting
            finally:
                self.concurrency.active -= 1
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
            for name, amount in flow_counts(record):
                self.counters.add(name, amount)
            self.counters.add("bytes_up", record.bytes_up)
            self.counters.add("bytes_down", record.bytes_down)
            self.log.write(record)
            if self._traced.pop(record.flow, None) is not None:
                self._step_final(record, started)

    # -- steps ---------------------------------------------------------------------------

    def _proxy_logging(self, runtime: Runtime, decision: Decision) -> bool:
        """The `logging` switch of the client or server proxy that handles the flow."""
        if decision.proxy is None:
            return False
        if decision.policy_kind is PolicyKind.SERVER:
            server = runtime.server_proxies.get(decision.proxy)
            return bool(server and server.proxy.logging)
        client = runtime.client_proxies.get(decision.proxy)
        return bool(client and client.proxy.logging)

    def _step(self, record: FlowRecord, message: str) -> None:
        started = self._traced.get(record.flow)
        if started is not None:
            troubleshoot.info("flow=%s +%.1fms %s", record.flow, (time.monotonic() - started) * 1000, message)

    def _step_final(self, record: FlowRecord, started: float) -> None:
        troubleshoot.info("flow=%s +%.1fms end: %s (%s) up=%d down=%d", record.flow,
                          (time.monotonic() - started) * 1000, record.outcome, record.reason,
                          record.bytes_up, record.bytes_down)

    def _end(self, record: FlowRecord, outcome: Outcome, reason: str) -> None:
        record.outcome, record.reason = outcome.value, reason

    def _reset_client(self, runtime: Runtime, decision: Decision) -> bool:
        material = runtime.client_proxies.get(decision.proxy or "")
        return bool(material and material.proxy.tcp_reset_client)

    def _limit(self, runtime: Runtime, decision: Decision) -> Decision:
        limits = runtime.config.gateway.limits
        if decision.action not in (Action.DECRYPT_CLIENT, Action.DECRYPT_SERVER):
            return decision
        check = self.concurrency.check(limits.max_concurrent, limits.on_exceed)
        if check.message is not None:
            logger.warning("%s", check.message)  # once per episode: "reached critical threshold"
        if not check.exceeded:
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
                    data = await client.recv()
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
        return Leg(await sockets.connect_as(client_ip, (server_ip, server_port), CONNECT_TIMEOUT))

    async def _handshake(self, endpoint: TlsEndpoint, leg: Leg, timeout: float) -> None:
        """Run one leg's handshake. What a TLS 1.3 endpoint writes as the handshake
        completes (our Finished toward the server, session tickets toward the client) is
        left in its outgoing buffer: no peer waits for it, and the relay sends it with the
        first data that follows, one system call (and packet) fewer per leg (issue 8).
        The relay flushes the server-facing leg as it starts, so server-first protocols
        (the server speaks once it has our Finished) are not held up. A TLS 1.2 peer does
        wait for our last flight, which is sent at once."""
        async with asyncio.timeout(timeout):
            while True:
                done = endpoint.handshake()
                if done and endpoint.version == "TLSv1.3":
                    return
                await leg.send(endpoint.data_to_send())
                if done:
                    return
                endpoint.feed(await leg.recv())

    async def _relay_untouched(self, runtime: Runtime, client: Leg, hello: ClientHello, record: FlowRecord,
                               outcome: Outcome, reason: str) -> Leg:
        """Connect upstream as the client, replay its ClientHello and relay bytes untouched:
        the not-decrypted and bypassed paths, also after an upstream TLS attempt that was
        abandoned before the client saw anything."""
        upstream = await self._connect(record.client, record.server, record.server_port)
        self._end(record, outcome, reason)
        await upstream.send(hello.raw)
        record.bytes_up += len(hello.raw)
        del hello  # not needed while relaying (see `handle`)
        await self._splice(runtime, client, upstream, record)
        return upstream

    def _offer(self, contexts: UpstreamContexts, hello: ClientHello, signature: Signature,
               record: FlowRecord) -> UpstreamOffer | None:
        """What to offer the server for this client; None (counted) when the client offers
        nothing the proxy enables, which the product calls bypassed: requirements not met."""
        offer = contexts.offer_for(hello, signature)
        if isinstance(offer, OfferRefusal):
            self.counters.add(f"{protocol_stats.PREFIX}refused.{offer.value}")
            if offer is OfferRefusal.NO_COMMON_CIPHER:
                self.counters.add(protocol_stats.CLIENT_CIPHER_OTHER)
            return None
        return offer

    async def _upstream_tls(self, runtime: Runtime, contexts: UpstreamContexts, offer: UpstreamOffer,
                            hello: ClientHello, alpn: tuple[str, ...], client: Leg, record: FlowRecord,
                            reset_client: bool, site: Site) -> tuple[Leg, TlsEndpoint | None]:
        """Connect to the real server as the client and complete TLS with the client's SNI,
        resuming tlsgw's last session with `site` when there is one (the chain of a resumed
        session is the one OpenSSL kept from the full handshake, and is validated again).

        Returns (leg, None) when the server asked for a client certificate: tlsgw cannot
        present the client's, so the flow must not be decrypted (the caller bypasses it).
        """
        upstream = await self._connect(record.client, record.server, record.server_port)
        groups = upstream_groups(hello.supported_groups, hello.key_share_groups)
        up_tls = TlsEndpoint(contexts.new_connection(offer, hello.sni, alpn, site, time.monotonic(), groups))
        try:
            await self._handshake(up_tls, upstream, runtime.config.gateway.handshake_timeout)
        except (TlsFailure, TimeoutError) as exc:
            detail = exc.detail if isinstance(exc, TlsFailure) else "timed out"
            requested = server_requested_client_certificate(up_tls.connection)
            self.counters.add(protocol_stats.classify_server_failure(detail, requested).counter)
            if requested:
                return upstream, None
            self.counters.add("handshake_failures.upstream")
            self._end(record, Outcome.BLOCKED,
                      explain_handshake_failure("upstream", detail, f"{record.server}:{record.server_port}", hello.sni))
            upstream.close()
            client.close(reset=reset_client)
            raise FlowEnded from None
        if server_requested_client_certificate(up_tls.connection):
            # TLS 1.3: the request arrives in the server's flight; the handshake "succeeds"
            # and the server refuses on the first read. Nothing was sent yet: bypass.
            self.counters.add(protocol_stats.ServerFailure.CLIENT_CERTIFICATE.counter)
            return upstream, None
        record.upstream_tls.version, record.upstream_tls.cipher, record.upstream_tls.alpn = (
            up_tls.version, up_tls.cipher, up_tls.alpn)
        self._step(record, f"upstream TLS {up_tls.version} {up_tls.cipher} alpn={up_tls.alpn or '-'}")
        return upstream, up_tls

    async def _bypass_client_certificate(self, runtime: Runtime, site: Site, settings: BypassSettings | None,
                                         upstream: Leg, client: Leg, hello: ClientHello,
                                         record: FlowRecord) -> Leg:
        upstream.close()
        if settings is not None:
            runtime.process.site_bypass.note_client_certificate_requested(site, time.monotonic(), settings)
            logger.info("site %s:%d (SNI %s) requests a client certificate; bypassing it for %.0f s",
                        site.server, site.port, site.sni or "-", settings.client_certificate_seconds)
        self.counters.add("bypassed.client_certificate")
        return await self._relay_untouched(runtime, client, hello, record, Outcome.BYPASSED,
                                           BypassReason.CLIENT_CERTIFICATE.value)

    async def _client_tls(self, runtime: Runtime, connection: SSL.Connection, hello: ClientHello, client: Leg,
                          upstream: Leg, up_tls: TlsEndpoint, record: FlowRecord, note: str = "",
                          reset_upstream: bool = False,
                          on_failure: Callable[[str], None] | None = None,
                          issuer: str = "the signing CA") -> TlsEndpoint:
        """Complete TLS with the client, replaying its ClientHello. On failure the upstream
        gets a close_notify, or a TCP reset when the server proxy asks for one."""
        client_tls = TlsEndpoint(connection)
        client_tls.feed(hello.raw)
        try:
            await self._handshake(client_tls, client, runtime.config.gateway.handshake_timeout)
        except (TlsFailure, TimeoutError) as exc:
            detail = exc.detail if isinstance(exc, TlsFailure) else "timed out"
            self.counters.add("handshake_failures.client")
            self.counters.add(protocol_stats.classify_client_failure(detail).counter)
            if on_failure is not None:
                on_failure(detail)
            sentence = explain_handshake_failure("client", detail, f"{record.client}:{record.client_port}", hello.sni,
                                                 issuer)
            self._end(record, Outcome.BLOCKED, sentence + (f"; {note}" if note else ""))
            if reset_upstream:
                upstream.close(reset=True)
            else:
                up_tls.close()
                await upstream.send(up_tls.data_to_send())
            raise FlowEnded from None
        record.client_tls.version, record.client_tls.cipher, record.client_tls.alpn = (
            client_tls.version, client_tls.cipher, client_tls.alpn)
        self._step(record, f"client TLS {client_tls.version} {client_tls.cipher} alpn={client_tls.alpn or '-'}")
        return client_tls

    async def _decrypt_server(self, runtime: Runtime, decision: Decision, hello: ClientHello,
                              client: Leg, record: FlowRecord, site: Site) -> Leg:
        """Server inspection: the organisation's own certificate, chosen by SNI, toward the
        client; the real server upstream (not validated: tlsgw holds its key already)."""
        material = runtime.server_proxies[decision.proxy or ""]
        certificate, client_contexts = material.client_contexts_for(hello.sni)
        record.server_certificate = certificate.name
        self._step(record, f"certificate {certificate.name!r} chosen for SNI {hello.sni}")
        offer = self._offer(material.upstream_contexts, hello, signature_of(certificate.certificate), record)
        if offer is None:
            return await self._relay_untouched(runtime, client, hello, record, Outcome.BYPASSED,
                                               "client offered no protocol version or cipher suite enabled "
                                               "in the server proxy")
        upstream, up_tls = await self._upstream_tls(runtime, material.upstream_contexts, offer, hello, hello.alpn,
                                                    client, record, reset_client=False, site=site)
        if up_tls is None:
            return await self._bypass_client_certificate(runtime, site, None, upstream, client, hello, record)
        context = client_contexts.for_upstream(up_tls.version, up_tls.cipher)
        client_tls = await self._client_tls(runtime, new_server_proxy_connection(context, up_tls.alpn), hello,
                                            client, upstream, up_tls, record,
                                            reset_upstream=material.proxy.tcp_reset_server)
        self._end(record, Outcome.DECRYPTED, decision.reason)
        del hello  # not needed past the handshakes (see `handle`)
        await self._relay_decrypted(runtime, material.proxy.decrypted_service, client, client_tls,
                                    upstream, up_tls, record)
        # After the relay: TLS 1.3 servers send their tickets after the handshake.
        material.upstream_contexts.remember_session(offer, site, up_tls.connection, time.monotonic())
        return upstream

    async def _decrypt_client(self, runtime: Runtime, decision: Decision, hello: ClientHello,
                              client: Leg, record: FlowRecord, site: Site) -> Leg:
        material = runtime.client_proxies[decision.proxy or ""]
        proxy = material.proxy
        bypass_settings = BypassSettings.of(proxy)
        offer = self._offer(material.upstream_contexts, hello, Signature.ECDSA, record)
        if offer is None:
            return await self._relay_untouched(runtime, client, hello, record, Outcome.BYPASSED,
                                               "client offered no protocol version or cipher suite enabled "
                                               "in the client proxy")
        alpn = tuple(p for p in hello.alpn if not (proxy.downgrade_http2 and p == "h2"))
        upstream, up_tls = await self._upstream_tls(runtime, material.upstream_contexts, offer, hello, alpn,
                                                    client, record, reset_client=proxy.tcp_reset_client, site=site)
        if up_tls is None:
            return await self._bypass_client_certificate(runtime, site, bypass_settings, upstream, client,
                                                         hello, record)

        chain = up_tls.connection.get_peer_cert_chain(as_cryptography=True) or []
        now = _now()
        host = hello.sni or record.server
        anchors = runtime.trust_anchors[decision.trust_store or ""]
        result = runtime.verify_cache.verify(chain, host, anchors, now=now, min_key_length=proxy.min_key_length)
        _note_upstream_certificate(record, chain, result)

        if chain and hello.sni is None:
            exemption = exempt_by_certificate(runtime.config, decision, certificate_names(chain[0]))
            if exemption is not None:
                # No SNI: the server certificate decides. Nothing was sent to the client yet,
                # so start over with an untouched relay and the original ClientHello.
                upstream.close()
                return await self._relay_untouched(runtime, client, hello, record, Outcome.NOT_DECRYPTED,
                                                   exemption + " (by server certificate, no SNI)")

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
        self._step(record, f"upstream certificate {record.upstream_certificate.subject}: "
                           f"{record.upstream_certificate.verification}; forged under {record.forged_issuer}")

        contexts = material.trusted_contexts if trusted else material.untrusted_contexts
        context = contexts.for_upstream(up_tls.version, up_tls.cipher)

        def pinning_symptom(failure: str | None) -> None:
            if is_pinning_symptom(trusted_issuer=trusted, handshake_failure=failure,
                                  handshake_completed=failure is None, client_sent_data=record.bytes_up > 0):
                self.counters.add("pinning_failures")
                if runtime.process.site_bypass.note_pinning_failure(site, time.monotonic(), bypass_settings):
                    logger.warning("site %s:%d (SNI %s) refuses the forged certificate repeatedly (pinned); "
                                   "bypassing it for %.0f s", site.server, site.port, site.sni or "-",
                                   bypass_settings.pinning_seconds)

        client_tls = await self._client_tls(
            runtime, new_client_connection(context, leaf_cert, leaf_key, up_tls.alpn), hello, client,
            upstream, up_tls, record, note="" if trusted else verdict.reason, on_failure=pinning_symptom,
            issuer="the signing CA" if trusted else "the untrusted CA")
        self._end(record, Outcome.DECRYPTED, decision.reason if trusted else verdict.reason)
        # The relay may last hours: do not keep the parsed upstream chain, its verdict and
        # the ClientHello alive in this frame meanwhile (memory per idle connection, issue 8).
        del chain, result, hello
        await self._relay_decrypted(runtime, proxy.decrypted_service, client, client_tls, upstream, up_tls, record)
        material.upstream_contexts.remember_session(offer, site, up_tls.connection, time.monotonic())
        pinning_symptom(None)
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
        def up(data: bytes) -> None:
            record.bytes_up += len(data)

        def down(data: bytes) -> None:
            record.bytes_down += len(data)

        await self._relay(Relay((PlainSide(client.sock), PlainSide(upstream.sock)), (up, down),
                                         runtime.config.gateway.idle_timeouts()))

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
            # The client's session tickets wait for the first data toward it; our Finished
            # toward the server goes out as the relay starts (see _handshake).
            await self._relay(Relay((TlsSide(client.sock, client_tls), TlsSide(upstream.sock, up_tls)), (up, down),
                                    runtime.config.gateway.idle_timeouts(), prompt=(False, True)))
        finally:
            if observer is not None:
                record.http = observer.messages

    async def _relay(self, relay: Relay) -> None:
        await relay.run()
        if relay.timed_out is not None:
            self.counters.add(f"relay.idle_timeout.{'client' if relay.timed_out == 0 else 'server'}")
        elif isinstance(relay.error, TlsFailure):
            self.counters.add("relay.tls_errors")
