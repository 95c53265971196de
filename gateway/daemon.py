"""The gateway's lifecycle: load and validate, start listeners, apply rules, serve, and on
the way out remove exactly what it added.

Order matters. Everything that can fail on bad input (YAML, names, certificates, keys)
is done before the kernel is touched, so a bad configuration changes nothing. Listeners
are bound before the steering rules go in, so that no steered SYN ever finds no socket.
On stop (SIGTERM, SIGINT) the rules go first, then the sessions: new flows cross the
bridge untouched while in-flight ones are cancelled. SIGHUP reloads all-or-nothing: a new
Runtime is built completely and swapped in only if every part of it is valid; flows in
flight keep the Runtime they started with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from dataclasses import dataclass, field

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import TlsgwError
from gateway.observability.counters import Counters
from gateway.observability.flowlog import InspectionLog
from gateway.proxy.flow import FlowHandler
from gateway.proxy.listener import serve
from gateway.proxy.sockets import transparent_listener
from gateway.runtime import ProcessMaterial, Runtime, build_runtime
from netfilter.steering import KernelSteering

logger = logging.getLogger(__name__)

# Issue 3: certificate expiry is reported at start and daily.
EXPIRY_CHECK_INTERVAL = 24 * 60 * 60.0


@dataclass(slots=True)
class Daemon:
    config_path: str
    apply_rules: bool = True
    runtime: Runtime | None = None
    counters: Counters = field(default_factory=Counters)
    process: ProcessMaterial = field(default_factory=ProcessMaterial)

    def current(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def load(self) -> Runtime:
        config = load_config(self.config_path)
        warn_weakenings(config)
        return build_runtime(config, self.process)

    def reload(self) -> None:
        try:
            new = self.load()
        except TlsgwError as exc:
            logger.error("reload refused, configuration unchanged: %s", exc)
            return
        old = self.current().config
        if steering_inputs(old) != steering_inputs(new.config):
            logger.error("reload refused: segments, bridge, ports or netfilter settings changed; "
                         "restart tlsgw to change them")
            return
        self.runtime = new
        logger.info("configuration reloaded from %s", self.config_path)

    async def run(self) -> None:
        self.runtime = self.load()
        config = self.runtime.config
        log = InspectionLog(config.gateway.inspection_log)
        listeners = []
        try:
            for index, segment in enumerate(config.gateway.segments):
                port = config.gateway.listen_port + index
                listeners.append((transparent_listener(port), FlowHandler(segment, self.current, log, self.counters)))
                logger.info("segment %s: listening on TPROXY port %d", segment.name, port)
            steering = KernelSteering(config) if self.apply_rules else None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(serve(sock, handler)) for sock, handler in listeners]
                tasks.append(group.create_task(self.warn_expiry()))
                if steering is not None:
                    steering.apply()
                try:
                    logger.info("tlsgw serving %d segment(s); inspection log %s", len(listeners),
                                config.gateway.inspection_log)
                    await stop.wait()
                    logger.info("stopping")
                finally:
                    if steering is not None:
                        steering.remove()
                    for task in tasks:
                        task.cancel()
        finally:
            for sock, _ in listeners:
                sock.close()
            log.close()

    async def warn_expiry(self) -> None:
        """Log certificates that expire within 30 days, or have, now and every day after."""
        while True:
            try:
                for warning in self.current().expiry_warnings(dt.datetime.now(dt.timezone.utc)):
                    logger.warning("%s", warning)
            except Exception:  # a failed check must not cancel the listeners in the same TaskGroup
                logger.exception("certificate expiry check failed")
            await asyncio.sleep(EXPIRY_CHECK_INTERVAL)


def steering_inputs(config: GatewayConfig) -> tuple[object, ...]:
    """What the kernel rules and listeners are built from; a reload may not change these."""
    gw = config.gateway
    return (gw.bridge, gw.segments, gw.listen_port, gw.netfilter, gw.ssl_inspection,
            tuple(config.client_detection_ports(s) for s in gw.segments))


def warn_weakenings(config: GatewayConfig) -> None:
    """Every deliberate weakening is logged at WARNING on each load (STYLE.md D)."""
    for proxy in config.client_proxies:
        if not proxy.block_invalid_certificates:
            logger.warning("client proxy %r: block_invalid_certificates is off; invalid upstream "
                           "certificates are shown to clients under the untrusted CA", proxy.name)
        if not proxy.block_expired_certificates:
            logger.warning("client proxy %r: block_expired_certificates is off; expired upstream "
                           "certificates are shown to clients under the untrusted CA", proxy.name)
        if min(proxy.protocols).value < 3:
            logger.warning("client proxy %r: protocol %s is enabled", proxy.name, min(proxy.protocols).label)
        if proxy.min_key_length < 2048:
            logger.warning("client proxy %r: min_key_length %d accepts weak upstream keys",
                           proxy.name, proxy.min_key_length)
