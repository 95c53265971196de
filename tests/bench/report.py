"""The benchmark's table: rounds in, lines of text out. Pure.

Every row of issue 8's table is one line: the median over the rounds with the [min-max]
range for each route, and how the gateway compares. For rates the comparison is the
ratio gateway/direct of the medians, with the range of the per-pair ratios (round k of
the gateway against round k direct, run next to each other); for latency it is the
difference gateway - direct, the latency the gateway adds. Rows only the gateway has
(memory, CPU) leave the direct and comparison columns empty. The last column is the goal
issue 8 sets, so a reader sees at once where the gateway stands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from tests.bench.figures import GB, KIB, Round, Route, Spread


class Compare(Enum):
    RATIO = "ratio"
    ADDED = "added"
    GATEWAY_ONLY = "gateway only"


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    value: Callable[[Round], float | None]
    """None: this round has no such figure (direct rounds for gateway-only rows)."""
    compare: Compare
    goal: str


@dataclass(frozen=True, slots=True)
class Settings:
    """What the rows' titles quote."""

    clients: int
    connections: int
    bulk_mib: int
    parallel: int
    idle: int


def _per_gb(r: Round) -> float | None:
    loads = [("bulk", r.bulk.size), ("parallel", r.parallel.size)]
    if not all(name in r.costs for name, _ in loads):
        return None
    return sum(r.costs[name].cpu_seconds for name, _ in loads) / (sum(size for _, size in loads) / GB)


def _per_1000_handshakes(r: Round) -> float | None:
    cost = r.costs.get("handshakes")
    if cost is None or r.handshakes.window_connections == 0:
        return None
    return cost.cpu_seconds / r.handshakes.window_connections * 1000


def rows(s: Settings) -> tuple[Row, ...]:
    return (
        Row(f"new TLS connections/s, {s.clients} concurrent, full", lambda r: r.handshakes.rate, Compare.RATIO, ">= 0.50x"),
        Row(f"keep-alive requests/s, {s.connections} concurrent", lambda r: r.keepalive.rate, Compare.RATIO, ">= 0.40x"),
        Row(f"one bulk download, MB/s ({s.bulk_mib} MiB)", lambda r: r.bulk.mb_per_second, Compare.RATIO, ">= 0.40x"),
        Row(f"{s.parallel} parallel bulk downloads, MB/s total", lambda r: r.parallel.mb_per_second, Compare.RATIO,
            ">= 0.30x"),
        Row("request latency, kept-alive conn., p50 us", lambda r: r.latency.p50_us, Compare.ADDED, "<= +100 us"),
        Row("request latency, kept-alive conn., p99 us", lambda r: r.latency.p99_us, Compare.ADDED, "<= +300 us"),
        Row(f"gateway KiB per idle connection ({s.idle})",
            lambda r: r.idle.kib_per_connection if r.idle else None, Compare.GATEWAY_ONLY, "<= 64 KiB"),
        Row("gateway CPU seconds per GB relayed", _per_gb, Compare.GATEWAY_ONLY, "<= 5"),
        Row("gateway CPU seconds per 1000 handshakes", _per_1000_handshakes, Compare.GATEWAY_ONLY, "<= 4"),
    )


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(spread: Spread) -> str:
    return f"{fmt(spread.median)} [{fmt(spread.low)}-{fmt(spread.high)}]"


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + fmt(abs(value))


def _values(group: Sequence[Round], row: Row) -> list[float]:
    return [v for v in (row.value(r) for r in group) if v is not None]


def comparison(row: Row, direct: Sequence[Round], gateway: Sequence[Round]) -> str:
    """The ratio or the added amount, over the medians, with the per-pair range."""
    d, g = _values(direct, row), _values(gateway, row)
    if row.compare is Compare.GATEWAY_ONLY or not d or not g:
        return "-"
    partner = {r.repetition: r for r in direct}
    pairs = [(row.value(gr), row.value(partner[gr.repetition])) for gr in gateway if gr.repetition in partner]
    known = [(gv, dv) for gv, dv in pairs if gv is not None and dv is not None]
    gm, dm = Spread.of(g).median, Spread.of(d).median
    if row.compare is Compare.RATIO:
        ratios = [gv / dv for gv, dv in known]
        return f"{gm / dm:.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
    added = [gv - dv for gv, dv in known]
    return f"{_signed(gm - dm)} [{_signed(min(added))}..{_signed(max(added))}]"


def table(rounds: Sequence[Round], settings: Settings) -> list[str]:
    direct = [r for r in rounds if r.route is Route.DIRECT]
    gateway = [r for r in rounds if r.route is Route.GATEWAY]
    header = ("median [min-max] over rounds", "direct", "gateway", "gateway vs direct", "issue 8 goal")
    body = []
    for row in rows(settings):
        d, g = _values(direct, row), _values(gateway, row)
        body.append((row.title, cell(Spread.of(d)) if d else "-", cell(Spread.of(g)) if g else "n/a",
                     comparison(row, direct, gateway), row.goal))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    return ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in (header, *body)]


def proofs(rounds: Sequence[Round]) -> list[str]:
    """Which path each route measured, and that every handshake was a full one."""
    lines = []
    for route in Route:
        group = [r for r in rounds if r.route is route]
        if not group:
            continue
        name = route.value
        issuers = sorted({r.issuer for r in group})
        lines.append(f"{name:<7} path: the leaf shown to the client was issued by {' / '.join(issuers)}")
        h = [r.handshakes for r in group]
        lines.append(
            f"{name:<7} handshakes: resumed sessions seen by the {h[0].clients} clients "
            f"{sum(x.client_resumed for x in h)}/{sum(x.client_connections for x in h)}, by the origin "
            f"{sum(x.resumed for x in h)}/{sum(x.connections for x in h)} (0 = all full handshakes); "
            f"{sum(x.window_connections for x in h)} in {sum(x.window_seconds for x in h):.1f} s of windows")
    lines += [
        f"warning: {r.route.value} round {r.repetition}: wrk {r.keepalive.socket_errors} socket errors, "
        f"{r.keepalive.non_2xx} non-2xx"
        for r in rounds if r.keepalive.socket_errors or r.keepalive.non_2xx
    ]
    return lines


LOAD_UNITS: dict[str, tuple[str, Callable[[Round], float], float] | None] = {
    # load -> (unit, how many units the load did, scale), or None: CPU share only
    "idle": None,
    "handshakes": ("ms CPU per connection", lambda r: r.handshakes.window_connections, 1e3),
    "keepalive": ("us CPU per request", lambda r: r.keepalive.requests, 1e6),
    "latency": ("us CPU per request", lambda r: r.latency.requests, 1e6),
    "bulk": ("s CPU per GB", lambda r: r.bulk.size / GB, 1.0),
    "parallel": ("s CPU per GB", lambda r: r.parallel.size / GB, 1.0),
}


def gateway_process(rounds: Sequence[Round]) -> list[str]:
    """tlsgw's own CPU and memory, load by load."""
    gateway = [r for r in rounds if r.route is Route.GATEWAY]
    if not gateway:
        return []
    lines = ["tlsgw processes (gateway rounds; CPU = utime + stime of tlsgw and its children):"]
    for load, per in LOAD_UNITS.items():
        have = [r for r in gateway if load in r.costs]
        if not have:
            continue
        shares = Spread.of([100 * r.costs[load].cpu_share for r in have])
        line = f"  {load:<11} CPU {cell(shares)} % of one core"
        if per is not None:
            unit, count, scale = per
            line += f"; {cell(Spread.of([r.costs[load].cpu_seconds / count(r) * scale for r in have]))} {unit}"
        lines.append(line)
    total_cpu = sum(c.cpu_seconds for r in gateway for c in r.costs.values())
    total_wall = sum(c.wall_seconds for r in gateway for c in r.costs.values())
    if total_wall > 0:
        lines.append(f"  all loads   {total_cpu:.2f} CPU seconds in {total_wall:.1f} s of load "
                     f"({100 * total_cpu / total_wall:.0f} % of one core)")
    idle = [r.idle for r in gateway if r.idle is not None]
    if idle:
        before = Spread.of([m.rss_before_kib / KIB for m in idle])
        after = Spread.of([m.rss_after_kib / KIB for m in idle])
        lines.append(f"  idle        VmRSS {cell(before)} MiB before, {cell(after)} MiB with "
                     f"{idle[0].connections} idle decrypted connections")
    usages = [r.usage for r in gateway if r.usage is not None]
    if usages:
        rss = Spread.of([u.rss_kib / KIB for u in usages])
        lines.append(f"  memory      VmRSS at end of round {cell(rss)} MiB; peak VmHWM "
                     f"{max(u.hwm_kib for u in usages) / KIB:.1f} MiB; processes {max(u.processes for u in usages)}")
    outcomes: Counter[str] = Counter()
    for r in gateway:
        outcomes.update(r.outcomes)
    lines.append("  inspection log: " + (", ".join(f"{n} {k}" for k, n in outcomes.most_common()) or "no records"))
    return lines
