"""The kernel side of fail-open: which sets the bridge table holds, and the nft commands
that change them while the gateway runs. Pure: values in, nft text out.

Theory of operation
===================

Every divert rule of the bridge table (see `plan.py`) also requires `meta l4proto
@alive`. The set `alive` holds one element, `tcp`, with a short timeout that the running
gateway keeps renewing (`render_refresh`). When the gateway stops renewing it - killed
with SIGKILL, crashed, hung - the element expires and the kernel itself stops diverting:
the bridge forwards every frame untouched, with no process involved (DESIGN.md section 3,
"a kernel dead-man's switch"). `add element` does not renew an element that exists, so
the refresh is `add; delete; add` in one transaction: the first add makes the delete
safe when the element has already expired, the second add starts a fresh timeout.

Fallback (manual, `tlsgw bypass on`, or engaged by the gateway when overloaded) must let
*new* flows pass untouched while sessions already proxied keep working. New-flow divert
rules therefore also require `meta l4proto != @fallback`; engaging fallback adds `tcp`
to `fallback`. The sessions in flight keep their divert through the set `proxied`, of
`ip saddr . tcp sport . ip daddr . tcp dport` keys, matched by one rule that ignores
`fallback`. Each key is the direction of a connection *towards* one of the gateway's
sockets, so the same lookup serves both legs:

    client leg    client:cport   -> server:443     (arrives on the client port)
    upstream leg  server:443     -> client:uport   (the server's answers to the gateway's
                                                    transparent socket, on the server port)

Engaging fallback adds the keys of every live socket and `tcp` to `fallback` in one
transaction, so no packet of a live session is ever bridged past the proxy. Releasing
it removes `tcp` from `fallback`; the kept keys stay until their sockets close (the
daemon removes them then), because some of them may belong to sessions that the normal
rules no longer steer (kept through a reload that changed the rules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from netfilter.model import Element, FlowKey, Proto
from netfilter.render_nft import render_element

ALIVE_SET = "alive"
FALLBACK_SET = "fallback"
PROXIED_SET = "proxied"

# The dead-man timeout bounds how long a dead gateway can keep diverting flows: the issue
# asks that new connections pass within one second of a SIGKILL. 0.5 s leaves room for a
# client's next connection attempt inside that second.
ALIVE_TIMEOUT = 0.5
# Five renewals per timeout: a renewal may be late by up to 0.4 s (a busy machine, a
# garbage-collection pause) before live sessions would lose their divert.
ALIVE_REFRESH_INTERVAL = 0.1


@dataclass(frozen=True, slots=True, order=True)
class FlowTuple:
    """One direction of a TCP connection, towards one of the gateway's sockets."""

    saddr: str
    sport: int
    daddr: str
    dport: int

    def key(self) -> FlowKey:
        return FlowKey(IPv4Address(self.saddr), self.sport, IPv4Address(self.daddr), self.dport)


@dataclass(frozen=True, slots=True)
class SteeringState:
    """The state the bridge table's sets are created with.

    A ruleset is replaced as a whole (a reload, a restart), so it must carry the current
    state: otherwise replacing it would re-enable steering during a fallback, or cut the
    sessions that fallback keeps.
    """

    alive_timeout: float | None = None
    """None: `alive` never expires (rules managed by hand, `tlsgw rules apply`); a number:
    the dead-man timeout a running gateway renews."""
    fallback: bool = False
    proxied: tuple[FlowTuple, ...] = ()

    def alive_elements(self) -> tuple[Element, ...]:
        return (Element(Proto.TCP, timeout=self.alive_timeout),)

    def fallback_elements(self) -> tuple[Element, ...]:
        return (Element(Proto.TCP),) if self.fallback else ()

    def proxied_elements(self) -> tuple[Element, ...]:
        return tuple(Element(t.key()) for t in sorted(set(self.proxied)))


def _set_ref(table: str, name: str) -> str:
    return f"bridge {table} {name}"


def render_refresh(table: str, timeout: float = ALIVE_TIMEOUT) -> str:
    """One line (one transaction in `nft -i`) that renews the dead-man element."""
    alive = _set_ref(table, ALIVE_SET)
    element = render_element(Element(Proto.TCP, timeout=timeout))
    return (f"add element {alive} {{ {element} }}; delete element {alive} {{ tcp }}; "
            f"add element {alive} {{ {element} }}")


def render_engage(table: str, proxied: Iterable[FlowTuple]) -> str:
    """Fallback on, for `nft -f` (one transaction): keep `proxied` diverted and let every
    other new flow pass, atomically."""
    lines = [_proxied_command("add", table, proxied)]
    lines.append(f"add element {_set_ref(table, FALLBACK_SET)} {{ tcp }}")
    return "".join(line + "\n" for line in lines if line)


def render_release(table: str) -> str:
    """Fallback off, for `nft -f`: steer new flows again.

    `add` before `delete` makes the delete safe when fallback was not engaged.
    """
    fallback = _set_ref(table, FALLBACK_SET)
    return f"add element {fallback} {{ tcp }}\ndelete element {fallback} {{ tcp }}\n"


def render_proxied_change(table: str, add: Iterable[FlowTuple], remove: Iterable[FlowTuple]) -> str:
    """One line: sessions that appeared (upstream legs set up during fallback) and ended.

    Removing a key that is already gone would fail the whole line, so removals are
    written as add-then-delete, which always succeeds.
    """
    add, remove = sorted(set(add)), sorted(set(remove))
    parts = []
    if add or remove:
        parts.append(_proxied_command("add", table, [*add, *remove]))
    if remove:
        parts.append(_proxied_command("delete", table, remove))
    return "; ".join(parts)


def _proxied_command(verb: str, table: str, tuples: Iterable[FlowTuple]) -> str:
    elements = ", ".join(render_element(Element(t.key())) for t in sorted(set(tuples)))
    return f"{verb} element {_set_ref(table, PROXIED_SET)} {{ {elements} }}" if elements else ""

