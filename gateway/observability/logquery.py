"""`tlsgw log`: the SSL inspection log queried by time, address, SNI and outcome.

The log is JSON lines, one per flow, in the order flows ended. A query keeps the last
`limit` matching records (the newest are what an operator asks about), scanning the
file once with memory bounded by `limit`. Pure: lines in, records out; the daemon feeds
the file from a worker thread.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address, IPv4Network
from typing import Any

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000  # the answer travels in one control-socket message

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class QueryError(ValueError):
    """A query parameter that cannot be understood; names the parameter."""


def parse_time(text: str, now: datetime) -> datetime:
    """ISO 8601 (`2024-05-01T10:00`, UTC unless it says otherwise) or an age (`15m`, `2h`, `1d`)."""
    text = text.strip()
    if text and text[-1] in _UNITS and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{text!r} is neither an ISO 8601 time nor an age such as 15m, 2h, 1d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class LogQuery:
    since: datetime | None = None
    until: datetime | None = None
    address: IPv4Network | None = None
    """Matches the client or the server address."""
    sni: str | None = None
    """Exact name, or `*.example.com` for the domain and any subdomain."""
    outcome: str | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_params(cls, params: Mapping[str, Any], now: datetime) -> LogQuery:
        """From the control-socket message (strings as typed by the operator).

        Raises:
            QueryError: naming the parameter.
        """
        def text(name: str) -> str | None:
            value = params.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                raise QueryError(f"{name}: expected a string")
            return value

        try:
            address_text = text("address")
            address = IPv4Network(address_text, strict=False) if address_text else None
        except ValueError:
            raise QueryError(f"address: {params.get('address')!r} is not an IPv4 address or CIDR range") from None
        limit = params.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit: expected an integer 1..{MAX_LIMIT}")
        since, until = text("since"), text("until")
        outcome = text("outcome")
        return cls(
            since=parse_time(since, now) if since else None,
            until=parse_time(until, now) if until else None,
            address=address,
            sni=(text("sni") or "").lower().rstrip(".") or None,
            outcome=outcome.replace("_", " ") if outcome else None,
            limit=limit,
        )

    def to_params(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, IPv4Network) else v)
                for k, v in asdict(self).items() if v is not None}

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        if self.sni is not None and not _sni_matches(self.sni, record.get("sni")):
            return False
        if self.address is not None and not any(_in(self.address, record.get(k)) for k in ("client", "server")):
            return False
        if self.since is not None or self.until is not None:
            try:
                moment = datetime.fromisoformat(str(record.get("time")))
            except ValueError:
                return False
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment > self.until:
                return False
        return True

    def run(self, lines: Iterable[str]) -> list[dict[str, Any]]:
        """The last `limit` matching records, oldest first. Lines that are not JSON
        objects (a torn last line while the gateway writes) are skipped."""
        found: deque[dict[str, Any]] = deque(maxlen=self.limit)
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and self.matches(record):
                found.append(record)
        return list(found)


def _sni_matches(pattern: str, sni: object) -> bool:
    if not isinstance(sni, str):
        return False
    sni = sni.lower()
    if pattern.startswith("*."):
        base = pattern[2:]
        return sni == base or sni.endswith("." + base)
    return sni == pattern


def _in(network: IPv4Network, address: object) -> bool:
    try:
        return IPv4Address(str(address)) in network
    except ValueError:
        return False
