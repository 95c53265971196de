"""YAML text → `GatewayConfig`, validated as a whole.

Theory of operation: an operator fixing a configuration wants every mistake at once, not
one per attempt. So the loader never stops at a problem. Each converter records a
`ConfigIssue` at the field's dotted path (`profiles[0].client_policies[1].client_proxy`)
and hands back a placeholder (the field's default, an empty name, an empty tuple), so that
the rest of the file is still read and cross-checked. A name that breaks the naming rules
is kept as written rather than replaced, and cross-reference checks skip empty names, so
one mistake produces one issue, not a cascade. Placeholders never escape: if any issue was
recorded, one `ConfigError` carrying all of them is raised instead of returning.

The loader is pure: it reads the file it is given and nothing else (certificates named in
the file are checked for existence by the PKI store, not here).
"""

from __future__ import annotations

import difflib
import enum
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

import yaml

from gateway.config import names
from gateway.config.model import (
    BulkCipher,
    CipherSuiteCriteria,
    DEFAULT_CA_FROM_STORE,
    MAX_DRAIN_TIMEOUT,
    MAX_WORKERS,
    WORKERS_AUTO,
    ClientPolicy,
    ClientProxy,
    ControlSettings,
    DecryptedService,
    DecryptionPolicy,
    FailMode,
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    KeyExchange,
    Limits,
    MacAlgorithm,
    MetricsSettings,
    NetfilterBackendName,
    NetfilterSettings,
    OnExceed,
    PkiSection,
    PortRange,
    Segment,
    ServerPolicy,
    ServerProxy,
    SslInspection,
    TlsVersion,
    TrustStore,
    TunnelSettings,
)
from gateway.errors import ConfigError, ConfigIssue
from gateway.tls.ciphers import selection_problems

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

MAX_SERVER_CERTIFICATES = 1000
"""The product accepts up to 1000 certificates for one server proxy."""
MIN_KEY_LENGTHS = (1024, 2048, 3072, 4096)
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")
_DIGITS = re.compile(r"[0-9]+")
# shadow-utils' default NAME_REGEX, the names useradd/groupadd accept.
_GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Policy-routing tables the kernel owns: 253 default, 254 main, 255 local.
_RESERVED_ROUTE_TABLES = frozenset({0, 253, 254, 255})
_PROTOCOL_LABELS = {v.label: v for v in TlsVersion}


def load_config(path: str) -> GatewayConfig:
    """Read and validate the configuration file at `path`.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or breaks any rule; it carries
            every problem found, each with the dotted path of the offending field.
    """
    return parse_config(read_config_text(path), source=path)


def read_config_text(path: str) -> str:
    """The file's text, for callers that must hand the very text they validated to other
    processes (the worker processes of issue 8 parse what the main process checked, not
    what the file holds by the time they start).

    Raises:
        ConfigError: the file cannot be read or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError([ConfigIssue("", f"cannot read configuration: {e.strerror or e}")], source=path) from e
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue("", f"configuration is not UTF-8 text: {e}")], source=path) from e


def parse_config(text: str, source: str = "<string>") -> GatewayConfig:
    """Validate configuration text; `source` names it in messages and in `GatewayConfig.source`.

    Raises:
        ConfigError: with every problem found (see `load_config`).
    """
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue("", f"not valid YAML: {_yaml_problem(e)}")], source=source) from e
    if document is None:
        raise ConfigError([ConfigIssue("", "the configuration is empty")], source=source)
    reader = _Reader()
    config = _read_config(reader, document, source)
    if reader.issues:
        raise ConfigError(reader.issues, source=source)
    return config


# ---------------------------------------------------------------------------------------
# YAML: PyYAML's safe loader, but duplicate keys are remembered instead of silently
# letting the last one win (a second `client_proxies:` block would otherwise replace the
# first without a word).


class _Mapping(dict[Any, Any]):
    __slots__ = ("duplicates",)

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: list[tuple[str, int]] = []
        """(key, line) of every repeated key."""


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Mapping]:
    data = _Mapping()
    yield data
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str":
            if key_node.value in seen:
                data.duplicates.append((key_node.value, key_node.start_mark.line + 1))
            seen.add(key_node.value)
    data.update(loader.construct_mapping(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


# ---------------------------------------------------------------------------------------
# The reader: converters that record issues and return None on failure.


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _suggestion(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Reader:
    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def problem(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    # -- structure ------------------------------------------------------------------

    def mapping(
        self, node: object, path: str, known: Collection[str], required: Collection[str] = ()
    ) -> Mapping[str, object]:
        """The node as a mapping of known keys; unknown, duplicate and missing keys are issues."""
        if node is None and not required:
            return {}
        if not isinstance(node, Mapping):
            self.problem(path, f"expected a mapping, got {_type_name(node)}")
            return {}
        for key, line in getattr(node, "duplicates", ()):
            self.problem(_join(path, key), f"key {key!r} appears more than once (again at line {line})")
        result: dict[str, object] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                self.problem(path, f"keys must be strings, got {_type_name(key)}")
            elif key not in known:
                self.problem(_join(path, key), f"unknown key {key!r}{_suggestion(key, known)}")
            else:
                result[key] = value
        for key in required:
            if key not in node:
                self.problem(_join(path, key), "is required")
        return result

    def items(self, node: object, path: str) -> list[tuple[str, object]]:
        """(path, item) for each element of a list; null is an empty list."""
        if node is None:
            return []
        if not isinstance(node, list):
            self.problem(path, f"expected a list, got {_type_name(node)}")
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(node)]

    def field(
        self,
        node: Mapping[str, object],
        path: str,
        key: str,
        convert: Callable[[str, object], T | None],
        default: T,
    ) -> T:
        if key not in node:
            return default
        value = convert(_join(path, key), node[key])
        return default if value is None else value

    def list_of(
        self,
        convert: Callable[[str, object], T | None],
        *,
        min_items: int = 0,
        max_items: int | None = None,
        what: str = "entries",
        unique: bool = True,
    ) -> Callable[[str, object], tuple[T, ...] | None]:
        """A converter for a list whose items go through `convert`; duplicates are dropped."""

        def read(path: str, node: object) -> tuple[T, ...] | None:
            if node is None:
                node = []
            if not isinstance(node, list):
                self.problem(path, f"expected a list, got {_type_name(node)}")
                return None
            values: list[T] = []
            for item_path, item in self.items(node, path):
                value = convert(item_path, item)
                if value is not None and not (unique and value in values):
                    values.append(value)
            if len(node) < min_items:
                self.problem(path, f"needs at least {min_items} {what}")
            elif max_items is not None and len(values) > max_items:
                self.problem(path, f"has {len(values)} {what}; the limit is {max_items}")
            return tuple(values)

        return read

    # -- scalars --------------------------------------------------------------------

    def string(self, path: str, value: object) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {_type_name(value)}")
            return None
        return value

    def boolean(self, path: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {_type_name(value)}")
            return None
        return value

    def integer(self, low: int, high: int) -> Callable[[str, object], int | None]:
        def read(path: str, value: object) -> int | None:
            if isinstance(value, bool) or not isinstance(value, int):
                self.problem(path, f"expected an integer, got {_type_name(value)}")
                return None
            if not low <= value <= high:
                self.problem(path, f"{value} is out of range {low}..{high}")
                return None
            return value

        return read

    def workers(self, path: str, value: object) -> int | str | None:
        """`auto` or a number of processes (issue 8)."""
        if value == WORKERS_AUTO:
            return WORKERS_AUTO
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"expected {WORKERS_AUTO} or a number of processes 1..{MAX_WORKERS}, "
                               f"got {_type_name(value)}")
            return None
        return self.integer(1, MAX_WORKERS)(path, value)

    def seconds(self, path: str, value: object) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"expected a number of seconds, got {_type_name(value)}")
            return None
        if not (value > 0 and math.isfinite(value)):  # `not >` also refuses NaN
            self.problem(path, f"must be a finite number greater than 0, got {value}")
            return None
        return float(value)

    def drain_seconds(self, path: str, value: object) -> float | None:
        """`gateway.drain_timeout`: unlike the other timeouts, 0 is meaningful (no drain)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"expected a number of seconds (0 for no drain), got {_type_name(value)}")
            return None
        if not (0 <= value <= MAX_DRAIN_TIMEOUT):  # `not <=` also refuses NaN
            self.problem(path, f"must be between 0 (no drain) and {MAX_DRAIN_TIMEOUT:g} seconds, got {value}")
            return None
        return float(value)

    def choice(self, enum_type: type[E]) -> Callable[[str, object], E | None]:
        """A converter for an enum whose members' values are the words the file uses."""
        words = [str(member.value) for member in enum_type]

        def read(path: str, value: object) -> E | None:
            if not isinstance(value, str):
                self.problem(path, f"expected one of {', '.join(words)}; got {_type_name(value)}")
                return None
            for member in enum_type:
                if member.value == value:
                    return member
            self.problem(path, f"{value!r} is not one of {', '.join(words)}{_suggestion(value, words)}")
            return None

        return read

    def absolute_path(self, path: str, value: object) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        if not text.startswith("/"):
            # The daemon's working directory is not the operator's: a relative path would
            # point somewhere different at boot than in a shell.
            self.problem(path, f"{text!r} must be an absolute path")
            return None
        return text

    def name(self, rule: names.NameRule) -> Callable[[str, object], str | None]:
        def read(path: str, value: object) -> str | None:
            text = self.string(path, value)
            if text is None:
                return None
            problem = rule.problem(text)
            if problem:
                self.problem(path, problem)
            # Even a badly formed name is kept, so references to it still resolve and the
            # one mistake is reported once, not again at every place that uses the name.
            return text

        return read

    def description(self, path: str, value: object) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        problem = names.description_problem(text)
        if problem:
            self.problem(path, problem)
            return None
        return text

    def interface(self, path: str, value: object) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        problem = names.interface_name_problem(text)
        if problem:
            self.problem(path, problem)
            return None
        return text

    def domain_pattern(self, path: str, value: object) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        pattern = names.normalise_host_name(text.strip())
        problem = names.domain_pattern_problem(pattern)
        if problem:
            self.problem(path, problem)
            return None
        return pattern

    def network(self, path: str, value: object) -> IPv4Network | None:
        text = self.string(path, value)
        if text is None:
            return None
        text = text.strip()
        if ":" in text:
            self.problem(path, f"{text!r} is IPv6; tlsgw inspects IPv4 only")
            return None
        try:
            return IPv4Network(text, strict=True)
        except ValueError as e:
            try:
                loose = IPv4Network(text, strict=False)
            except ValueError:
                self.problem(path, f"{text!r} is not an IPv4 address or CIDR range ({e})")
            else:
                self.problem(path, f"{text!r} has host bits set; did you mean {str(loose)!r}?")
            return None

    def port_range(self, path: str, value: object) -> PortRange | None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.problem(path, f'expected a port or a range such as "8443-8445", got {_type_name(value)}')
            return None
        text = str(value).strip()
        low_text, dash, high_text = text.partition("-")
        parts = [low_text.strip(), high_text.strip()] if dash else [low_text.strip()]
        if not all(_DIGITS.fullmatch(p) for p in parts):
            self.problem(path, f'{text!r} is not a port or a range such as "8443-8445"')
            return None
        low, high = int(parts[0]), int(parts[-1])
        for port in (low, high):
            if not 1 <= port <= 65535:
                self.problem(path, f"port {port} is out of range 1..65535")
                return None
        if low > high:
            self.problem(path, f"range {text!r} ends before it starts")
            return None
        return PortRange(low, high)

    def protocols(self, path: str, value: object) -> tuple[TlsVersion, ...] | None:
        """TLS versions by label; the enabled set must be contiguous, as in the product."""
        if not isinstance(value, list):
            self.problem(path, f"expected a list of versions such as [TLSv1.2, TLSv1.3], got {_type_name(value)}")
            return None
        versions: set[TlsVersion] = set()
        labels = list(_PROTOCOL_LABELS)
        for item_path, item in self.items(value, path):
            if not isinstance(item, str) or item not in _PROTOCOL_LABELS:
                hint = _suggestion(item, labels) if isinstance(item, str) else ""
                self.problem(item_path, f"{item!r} is not one of {', '.join(labels)}{hint}")
                continue
            versions.add(_PROTOCOL_LABELS[item])
        if not value:
            self.problem(path, "at least one protocol version must be enabled")
            return None
        if not versions:
            return None
        lowest, highest = min(versions), max(versions)
        missing = [v for v in TlsVersion if lowest < v < highest and v not in versions]
        if missing:
            self.problem(
                path,
                f"{', '.join(v.label for v in missing)} must also be enabled: enabling a version "
                f"requires every version between the lowest ({lowest.label}) and the highest "
                f"({highest.label}) enabled",
            )
            return None
        return tuple(sorted(versions))

    def cipher_suites(self, path: str, value: object) -> CipherSuiteCriteria | None:
        """The product's criteria; each needs at least one choice, as in the product."""
        m = self.mapping(value, path, ("key_exchange", "bulk", "mac"))
        d = CipherSuiteCriteria()

        def criterion(enum_type: type[E], what: str) -> Callable[[str, object], tuple[E, ...] | None]:
            words = ", ".join(str(member.value) for member in enum_type)
            read_list = self.list_of(self.choice(enum_type), what=what)

            def read(p: str, node: object) -> tuple[E, ...] | None:
                if node is None or node == []:
                    self.problem(p, f"choose at least one {what} ({words})")
                    return None
                return read_list(p, node)

            return read

        return CipherSuiteCriteria(
            key_exchange=self.field(m, path, "key_exchange", criterion(KeyExchange, "key exchange"), d.key_exchange),
            bulk=self.field(m, path, "bulk", criterion(BulkCipher, "bulk cipher"), d.bulk),
            mac=self.field(m, path, "mac", criterion(MacAlgorithm, "MAC"), d.mac),
        )

    def tls_combination(self, path: str, protocols: tuple[TlsVersion, ...], criteria: CipherSuiteCriteria) -> None:
        """Every enabled version needs a chosen suite (pure table knowledge; what the
        running OpenSSL can do is checked with the certificates, in gateway.runtime)."""
        for field_name, message in selection_problems(criteria, protocols):
            self.problem(_join(path, field_name), message)

    # -- whole-file rules -------------------------------------------------------------

    def unique(self, kind: str, named: Iterable[tuple[str, str]]) -> None:
        """`named` is (path of the name field, name); empty names were already reported."""
        first: dict[str, str] = {}
        for path, name in named:
            if not name:
                continue
            if name in first:
                self.problem(path, f"duplicate {kind} name {name!r} (also at {first[name]})")
            else:
                first[name] = path

    def reference(self, path: str, kind: str, name: str | None, known: Collection[str]) -> None:
        if name and name not in known:
            self.problem(path, f"no {kind} named {name!r}{_suggestion(name, known)}")


# ---------------------------------------------------------------------------------------
# Sections. Each returns a model object even when parts of it are wrong (see the module
# docstring): indices of lists stay aligned with the file, so cross-checks can name paths.

_TOP_KEYS = (
    "gateway",
    "pki",
    "server_proxies",
    "client_proxies",
    "decryption_policies",
    "trust_stores",
    "profiles",
    "categories",
)


def _read_config(r: _Reader, document: object, source: str) -> GatewayConfig:
    top = r.mapping(document, "", _TOP_KEYS)
    categories = _read_categories(r, top.get("categories"), "categories")
    config = GatewayConfig(
        gateway=_read_gateway(r, top.get("gateway"), "gateway"),
        pki=_read_pki(r, top.get("pki"), "pki"),
        server_proxies=tuple(
            _read_server_proxy(r, n, p) for p, n in r.items(top.get("server_proxies"), "server_proxies")
        ),
        client_proxies=tuple(
            _read_client_proxy(r, n, p) for p, n in r.items(top.get("client_proxies"), "client_proxies")
        ),
        decryption_policies=tuple(
            _read_decryption_policy(r, n, p) for p, n in r.items(top.get("decryption_policies"), "decryption_policies")
        ),
        trust_stores=tuple(_read_trust_store(r, n, p) for p, n in r.items(top.get("trust_stores"), "trust_stores")),
        profiles=tuple(_read_profile(r, n, p) for p, n in r.items(top.get("profiles"), "profiles")),
        categories=categories,
        source=source,
    )
    _check_config(r, config)
    return config


def _read_categories(r: _Reader, node: object, path: str) -> dict[str, tuple[str, ...]]:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        r.problem(path, f"expected a mapping of category name to domains, got {_type_name(node)}")
        return {}
    for key, line in getattr(node, "duplicates", ()):
        r.problem(_join(path, key), f"key {key!r} appears more than once (again at line {line})")
    categories: dict[str, tuple[str, ...]] = {}
    for key, value in node.items():
        name = r.name(names.CATEGORY)(_join(path, str(key)), key)
        domains = r.list_of(r.domain_pattern, what="domains")(_join(path, str(key)), value)
        if name is not None:
            categories[name] = domains or ()
    return categories


_SEGMENT_KEYS = ("name", "client_port", "server_port", "profile", "vlans", "sources", "destinations")


def _read_segment(r: _Reader, node: object, path: str) -> Segment:
    m = r.mapping(node, path, _SEGMENT_KEYS, required=("name", "client_port", "server_port", "profile"))
    if isinstance(m, dict) and m.get("vlans"):
        # The bridge rules could divert tagged frames, but the gateway has no VLAN devices
        # to receive them on, so they would be lost: refuse rather than black-hole traffic.
        r.problem(_join(path, "vlans"), "VLAN segments are not supported in this version; remove 'vlans'")
    return Segment(
        name=r.field(m, path, "name", r.name(names.SEGMENT), ""),
        client_port=r.field(m, path, "client_port", r.interface, ""),
        server_port=r.field(m, path, "server_port", r.interface, ""),
        profile=r.field(m, path, "profile", r.string, ""),
        vlans=r.field(m, path, "vlans", r.list_of(r.integer(1, 4094), what="VLAN IDs"), ()),
        sources=r.field(m, path, "sources", r.list_of(r.network, what="networks"), ()),
        destinations=r.field(m, path, "destinations", r.list_of(r.network, what="networks"), ()),
    )


def _read_gateway(r: _Reader, node: object, path: str) -> GatewaySection:
    keys = (
        "bridge",
        "segments",
        "ssl_inspection",
        "limits",
        "listen_port",
        "inspection_log",
        "netfilter",
        "handshake_timeout",
        "idle_timeout",
        "client_idle_timeout",
        "server_idle_timeout",
        "fail_mode",
        "drain_timeout",
        "control",
        "metrics",
        "tunnels",
        "workers",
    )
    m = r.mapping(node, path, keys)
    d = GatewaySection()
    segments_path = _join(path, "segments")
    return GatewaySection(
        bridge=r.field(m, path, "bridge", r.interface, d.bridge),
        segments=tuple(_read_segment(r, n, p) for p, n in r.items(m.get("segments"), segments_path)),
        ssl_inspection=_read_ssl_inspection(r, m.get("ssl_inspection"), _join(path, "ssl_inspection")),
        limits=_read_limits(r, m.get("limits"), _join(path, "limits")),
        listen_port=r.field(m, path, "listen_port", r.integer(1, 65535), d.listen_port),
        inspection_log=r.field(m, path, "inspection_log", r.absolute_path, d.inspection_log),
        netfilter=_read_netfilter(r, m.get("netfilter"), _join(path, "netfilter")),
        handshake_timeout=r.field(m, path, "handshake_timeout", r.seconds, d.handshake_timeout),
        idle_timeout=r.field(m, path, "idle_timeout", r.seconds, d.idle_timeout),
        client_idle_timeout=r.field(m, path, "client_idle_timeout", r.seconds, d.client_idle_timeout),
        server_idle_timeout=r.field(m, path, "server_idle_timeout", r.seconds, d.server_idle_timeout),
        fail_mode=r.field(m, path, "fail_mode", r.choice(FailMode), d.fail_mode),
        drain_timeout=r.field(m, path, "drain_timeout", r.drain_seconds, d.drain_timeout),
        control=_read_control(r, m.get("control"), _join(path, "control")),
        metrics=_read_metrics(r, m.get("metrics"), _join(path, "metrics")) if m.get("metrics") is not None else None,
        tunnels=_read_tunnels(r, m.get("tunnels"), _join(path, "tunnels")),
        workers=r.field(m, path, "workers", r.workers, d.workers),
    )


def _read_tunnels(r: _Reader, node: object, path: str) -> TunnelSettings:
    m = r.mapping(node, path, ("enabled", "outer_mtu", "route_table"))
    d = TunnelSettings()

    def route_table(p: str, value: object) -> int | None:
        number = r.integer(1, 0xFFFFFF00)(p, value)
        if number is not None and any(t in _RESERVED_ROUTE_TABLES for t in range(number, number + 16)):
            r.problem(p, f"tables {number}.. would reach the kernel's (253 default, 254 main, 255 local)")
            return None
        return number

    return TunnelSettings(
        enabled=r.field(m, path, "enabled", r.boolean, d.enabled),
        # 576: the IPv4 minimum every host accepts (RFC 791); 9216: jumbo frames.
        outer_mtu=r.field(m, path, "outer_mtu", r.integer(576, 9216), d.outer_mtu),
        route_table=r.field(m, path, "route_table", route_table, d.route_table),
    )


def _read_control(r: _Reader, node: object, path: str) -> ControlSettings:
    m = r.mapping(node, path, ("socket", "group", "bypass_file"))
    d = ControlSettings()

    def group(p: str, value: object) -> str | None:
        text = r.string(p, value)
        if text is not None and not _GROUP_NAME.fullmatch(text):
            r.problem(p, f"{text!r} is not a valid group name")
            return None
        return text

    return ControlSettings(
        socket=r.field(m, path, "socket", r.absolute_path, d.socket),
        group=r.field(m, path, "group", group, d.group),
        bypass_file=r.field(m, path, "bypass_file", r.absolute_path, d.bypass_file),
    )


def _read_metrics(r: _Reader, node: object, path: str) -> MetricsSettings | None:
    """`metrics: {listen: 127.0.0.1:9598}`; `listen: 9598` keeps the loopback address."""
    m = r.mapping(node, path, ("listen",), required=("listen",))
    if "listen" not in m:
        return None
    p = _join(path, "listen")
    value = m["listen"]
    d = MetricsSettings()
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = str(d.address), str(value)
    elif isinstance(value, str):
        host, _, port_text = value.rpartition(":")
        host = host or str(d.address)
    else:
        r.problem(p, f"expected ADDRESS:PORT such as 127.0.0.1:9598, got {_type_name(value)}")
        return None
    try:
        address = IPv4Address(host)
    except ValueError:
        r.problem(p, f"{host!r} is not an IPv4 address (expected ADDRESS:PORT such as 127.0.0.1:9598)")
        return None
    port = r.integer(1, 65535)(p, int(port_text)) if _DIGITS.fullmatch(port_text) else None
    if port is None:
        if not _DIGITS.fullmatch(port_text):
            r.problem(p, f"{port_text!r} is not a port (expected ADDRESS:PORT such as 127.0.0.1:9598)")
        return None
    return MetricsSettings(address=address, port=port)


def _read_ssl_inspection(r: _Reader, node: object, path: str) -> SslInspection:
    m = r.mapping(node, path, ("client", "server"))
    d = SslInspection()
    return SslInspection(
        client=r.field(m, path, "client", r.boolean, d.client),
        server=r.field(m, path, "server", r.boolean, d.server),
    )


def _read_limits(r: _Reader, node: object, path: str) -> Limits:
    m = r.mapping(node, path, ("max_concurrent", "on_exceed"))
    d = Limits()
    return Limits(
        max_concurrent=r.field(m, path, "max_concurrent", r.integer(1, 2**31 - 1), d.max_concurrent),
        on_exceed=r.field(m, path, "on_exceed", r.choice(OnExceed), d.on_exceed),
    )


def _read_netfilter(r: _Reader, node: object, path: str) -> NetfilterSettings:
    m = r.mapping(node, path, ("backend", "table", "mark", "route_table"))
    d = NetfilterSettings()

    def table(p: str, value: object) -> str | None:
        text = r.string(p, value)
        if text is not None and not _TABLE_NAME.fullmatch(text):
            # Short enough that iptables chain names built from it stay under 29 characters.
            r.problem(p, f"{text!r} must start with a letter and hold at most 16 letters, digits or underscores")
            return None
        return text

    def route_table(p: str, value: object) -> int | None:
        number = r.integer(1, 0xFFFFFFFF)(p, value)
        if number in _RESERVED_ROUTE_TABLES:
            r.problem(p, f"routing table {number} belongs to the kernel (253 default, 254 main, 255 local)")
            return None
        return number

    return NetfilterSettings(
        backend=r.field(m, path, "backend", r.choice(NetfilterBackendName), d.backend),
        table=r.field(m, path, "table", table, d.table),
        mark=r.field(m, path, "mark", r.integer(1, 0xFFFFFFFF), d.mark),
        route_table=r.field(m, path, "route_table", route_table, d.route_table),
    )


def _read_pki(r: _Reader, node: object, path: str) -> PkiSection:
    m = r.mapping(node, path, ("dir", "default_ca_bundle", "key_secret_file", "encrypt_keys", "persist_keys"))
    d = PkiSection()

    def bundle(p: str, value: object) -> str | None:
        if value == DEFAULT_CA_FROM_STORE:
            return DEFAULT_CA_FROM_STORE
        if isinstance(value, str) and not value.startswith("/"):
            r.problem(p, f"{value!r} must be an absolute path, or {DEFAULT_CA_FROM_STORE!r} for the package "
                         "imported with `tlsgw cert update-default-ca`")
            return None
        return r.absolute_path(p, value)

    return PkiSection(
        dir=r.field(m, path, "dir", r.absolute_path, d.dir),
        default_ca_bundle=r.field(m, path, "default_ca_bundle", bundle, d.default_ca_bundle),
        key_secret_file=r.field(m, path, "key_secret_file", r.absolute_path, d.key_secret_file),
        encrypt_keys=r.field(m, path, "encrypt_keys", r.boolean, d.encrypt_keys),
        persist_keys=r.field(m, path, "persist_keys", r.boolean, d.persist_keys),
    )


def _read_server_proxy(r: _Reader, node: object, path: str) -> ServerProxy:
    keys = (
        "name",
        "description",
        "destinations",
        "detection_ports",
        "decrypted_service",
        "certificates",
        "protocols",
        "logging",
        "tcp_reset_server",
        "encrypt_then_mac",
        "cipher_suites",
    )
    m = r.mapping(node, path, keys, required=("name", "destinations", "detection_ports", "certificates"))
    d = ServerProxy(name="", destinations=(), detection_ports=(), certificates=())
    issues_before_tls = len(r.issues)
    protocols = r.field(m, path, "protocols", r.protocols, d.protocols)
    cipher_suites = r.field(m, path, "cipher_suites", r.cipher_suites, d.cipher_suites)
    if len(r.issues) == issues_before_tls:
        r.tls_combination(path, protocols, cipher_suites)
    return ServerProxy(
        name=r.field(m, path, "name", r.name(names.SERVER_PROXY), ""),
        description=r.field(m, path, "description", r.description, d.description),
        destinations=r.field(m, path, "destinations", r.list_of(r.network, min_items=1, what="destinations"), ()),
        detection_ports=r.field(
            m, path, "detection_ports", r.list_of(r.port_range, min_items=1, what="detection ports"), ()
        ),
        decrypted_service=r.field(m, path, "decrypted_service", r.choice(DecryptedService), d.decrypted_service),
        certificates=r.field(
            m,
            path,
            "certificates",
            r.list_of(r.name(names.CERTIFICATE), min_items=1, max_items=MAX_SERVER_CERTIFICATES, what="certificates"),
            (),
        ),
        protocols=protocols,
        logging=r.field(m, path, "logging", r.boolean, d.logging),
        tcp_reset_server=r.field(m, path, "tcp_reset_server", r.boolean, d.tcp_reset_server),
        encrypt_then_mac=r.field(m, path, "encrypt_then_mac", r.boolean, d.encrypt_then_mac),
        cipher_suites=cipher_suites,
    )


def _read_client_proxy(r: _Reader, node: object, path: str) -> ClientProxy:
    keys = (
        "name",
        "description",
        "signing_certificate",
        "detection_ports",
        "decrypted_service",
        "min_key_length",
        "block_invalid_certificates",
        "block_expired_certificates",
        "downgrade_http2",
        "protocols",
        "logging",
        "tcp_reset_client",
        "encrypt_then_mac",
        "cipher_suites",
        "client_certificate_bypass_seconds",
        "pinning_failures",
        "pinning_window_seconds",
        "pinning_bypass_seconds",
    )
    m = r.mapping(node, path, keys, required=("name", "signing_certificate", "detection_ports"))
    d = ClientProxy(name="", signing_certificate="", detection_ports=())
    issues_before_tls = len(r.issues)
    protocols = r.field(m, path, "protocols", r.protocols, d.protocols)
    cipher_suites = r.field(m, path, "cipher_suites", r.cipher_suites, d.cipher_suites)
    if len(r.issues) == issues_before_tls:
        r.tls_combination(path, protocols, cipher_suites)

    def key_length(p: str, value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value in MIN_KEY_LENGTHS:
            return value
        r.problem(p, f"expected one of {', '.join(map(str, MIN_KEY_LENGTHS))} bits, got {_type_name(value)}")
        return None

    return ClientProxy(
        name=r.field(m, path, "name", r.name(names.CLIENT_PROXY), ""),
        description=r.field(m, path, "description", r.description, d.description),
        signing_certificate=r.field(m, path, "signing_certificate", r.name(names.CERTIFICATE), ""),
        detection_ports=r.field(
            m, path, "detection_ports", r.list_of(r.port_range, min_items=1, what="detection ports"), ()
        ),
        decrypted_service=r.field(m, path, "decrypted_service", r.choice(DecryptedService), d.decrypted_service),
        min_key_length=r.field(m, path, "min_key_length", key_length, d.min_key_length),
        block_invalid_certificates=r.field(
            m, path, "block_invalid_certificates", r.boolean, d.block_invalid_certificates
        ),
        block_expired_certificates=r.field(
            m, path, "block_expired_certificates", r.boolean, d.block_expired_certificates
        ),
        downgrade_http2=r.field(m, path, "downgrade_http2", r.boolean, d.downgrade_http2),
        protocols=protocols,
        logging=r.field(m, path, "logging", r.boolean, d.logging),
        tcp_reset_client=r.field(m, path, "tcp_reset_client", r.boolean, d.tcp_reset_client),
        encrypt_then_mac=r.field(m, path, "encrypt_then_mac", r.boolean, d.encrypt_then_mac),
        cipher_suites=cipher_suites,
        client_certificate_bypass_seconds=r.field(
            m, path, "client_certificate_bypass_seconds", r.seconds, d.client_certificate_bypass_seconds
        ),
        pinning_failures=r.field(m, path, "pinning_failures", r.integer(1, 1000), d.pinning_failures),
        pinning_window_seconds=r.field(m, path, "pinning_window_seconds", r.seconds, d.pinning_window_seconds),
        pinning_bypass_seconds=r.field(m, path, "pinning_bypass_seconds", r.seconds, d.pinning_bypass_seconds),
    )


def _read_decryption_policy(r: _Reader, node: object, path: str) -> DecryptionPolicy:
    keys = ("name", "description", "domains", "categories", "category_overrides")
    m = r.mapping(node, path, keys, required=("name",))
    return DecryptionPolicy(
        name=r.field(m, path, "name", r.name(names.DECRYPTION_POLICY), ""),
        description=r.field(m, path, "description", r.description, ""),
        domains=r.field(m, path, "domains", r.list_of(r.domain_pattern, what="domains"), ()),
        categories=r.field(m, path, "categories", r.list_of(r.string, what="categories"), ()),
        category_overrides=r.field(m, path, "category_overrides", r.list_of(r.domain_pattern, what="domains"), ()),
    )


def _read_trust_store(r: _Reader, node: object, path: str) -> TrustStore:
    m = r.mapping(node, path, ("name", "description", "include_default_ca", "ca_certificates", "crl_files"),
                  required=("name",))
    d = TrustStore(name="")
    return TrustStore(
        name=r.field(m, path, "name", r.name(names.TRUST_STORE), ""),
        description=r.field(m, path, "description", r.description, d.description),
        include_default_ca=r.field(m, path, "include_default_ca", r.boolean, d.include_default_ca),
        ca_certificates=r.field(
            m, path, "ca_certificates", r.list_of(r.name(names.CERTIFICATE), what="CA certificates"), ()
        ),
        crl_files=r.field(m, path, "crl_files", r.list_of(r.absolute_path, what="CRL files"), ()),
    )


def _read_server_policy(r: _Reader, node: object, path: str) -> ServerPolicy:
    keys = ("name", "server_proxy", "source_exceptions", "enabled", "locked")
    m = r.mapping(node, path, keys, required=("name", "server_proxy"))
    return ServerPolicy(
        name=r.field(m, path, "name", r.name(names.SERVER_POLICY), ""),
        server_proxy=r.field(m, path, "server_proxy", r.string, ""),
        source_exceptions=r.field(m, path, "source_exceptions", r.list_of(r.network, what="networks"), ()),
        enabled=r.field(m, path, "enabled", r.boolean, True),
        locked=r.field(m, path, "locked", r.boolean, False),
    )


def _read_client_policy(r: _Reader, node: object, path: str) -> ClientPolicy:
    keys = (
        "name",
        "client_proxy",
        "decryption_policy",
        "trust_store",
        "enabled",
        "locked",
        "never_decrypt",
        "always_decrypt",
    )
    m = r.mapping(node, path, keys, required=("name", "client_proxy", "trust_store"))

    def optional_name(p: str, value: object) -> str | None:
        return None if value is None else r.string(p, value)  # null: decrypt every domain

    return ClientPolicy(
        name=r.field(m, path, "name", r.name(names.CLIENT_POLICY), ""),
        client_proxy=r.field(m, path, "client_proxy", r.string, ""),
        trust_store=r.field(m, path, "trust_store", r.string, ""),
        decryption_policy=r.field(m, path, "decryption_policy", optional_name, None),
        enabled=r.field(m, path, "enabled", r.boolean, True),
        locked=r.field(m, path, "locked", r.boolean, False),
        never_decrypt=r.field(m, path, "never_decrypt", r.list_of(r.network, what="networks"), ()),
        always_decrypt=r.field(m, path, "always_decrypt", r.list_of(r.network, what="networks"), ()),
    )


def _read_profile(r: _Reader, node: object, path: str) -> InspectionProfile:
    m = r.mapping(node, path, ("name", "description", "server_policies", "client_policies"), required=("name",))
    sp_path, cp_path = _join(path, "server_policies"), _join(path, "client_policies")
    return InspectionProfile(
        name=r.field(m, path, "name", r.name(names.PROFILE), ""),
        description=r.field(m, path, "description", r.description, ""),
        server_policies=tuple(_read_server_policy(r, n, p) for p, n in r.items(m.get("server_policies"), sp_path)),
        client_policies=tuple(_read_client_policy(r, n, p) for p, n in r.items(m.get("client_policies"), cp_path)),
    )


# ---------------------------------------------------------------------------------------
# Rules that span objects: uniqueness, references, ports.


@dataclass(frozen=True, slots=True)
class _Indexed:
    path: str
    name: str


def _indexed(prefix: str, objects: Iterable[Any]) -> list[_Indexed]:
    return [_Indexed(f"{prefix}[{i}]", o.name) for i, o in enumerate(objects)]


def _check_config(r: _Reader, c: GatewayConfig) -> None:
    for kind, prefix, objects in (
        ("server proxy", "server_proxies", c.server_proxies),
        ("client proxy", "client_proxies", c.client_proxies),
        ("decryption policy", "decryption_policies", c.decryption_policies),
        ("trust store", "trust_stores", c.trust_stores),
        ("inspection profile", "profiles", c.profiles),
        ("segment", "gateway.segments", c.gateway.segments),
    ):
        r.unique(kind, ((f"{o.path}.name", o.name) for o in _indexed(prefix, objects)))
    _check_segments(r, c)
    for i, policy in enumerate(c.decryption_policies):
        for j, category in enumerate(policy.categories):
            r.reference(f"decryption_policies[{i}].categories[{j}]", "category", category, c.categories)
    for i, profile in enumerate(c.profiles):
        _check_profile(r, c, profile, f"profiles[{i}]")


def _check_segments(r: _Reader, c: GatewayConfig) -> None:
    profiles = [p.name for p in c.profiles]
    owner: dict[str, str] = {}
    for i, segment in enumerate(c.gateway.segments):
        path = f"gateway.segments[{i}]"
        r.reference(f"{path}.profile", "inspection profile", segment.profile, profiles)
        if segment.client_port and segment.client_port == segment.server_port:
            r.problem(
                f"{path}.server_port", f"{segment.server_port!r} is also the client port; a segment joins two ports"
            )
        for side in ("client_port", "server_port"):
            port = getattr(segment, side)
            if not port:
                continue
            if port == c.gateway.bridge:
                r.problem(f"{path}.{side}", f"{port!r} is the bridge itself, not one of its ports")
            elif port in owner and not (side == "server_port" and port == segment.client_port):
                r.problem(f"{path}.{side}", f"bridge port {port!r} already belongs to {owner[port]}")
            else:
                owner.setdefault(port, f"{path}.{side}")
    last_port = c.gateway.listen_port + len(c.gateway.segments) - 1
    if last_port > 65535:
        r.problem("gateway.listen_port", f"segment {len(c.gateway.segments) - 1} would listen on port {last_port}")


def _check_profile(r: _Reader, c: GatewayConfig, profile: InspectionProfile, path: str) -> None:
    server_proxies = [p.name for p in c.server_proxies]
    client_proxies = {p.name: p for p in c.client_proxies}
    decryption_policies = [p.name for p in c.decryption_policies]
    trust_stores = [t.name for t in c.trust_stores]

    servers = _indexed(f"{path}.server_policies", profile.server_policies)
    clients = _indexed(f"{path}.client_policies", profile.client_policies)
    r.unique("server policy", ((f"{s.path}.name", s.name) for s in servers))
    r.unique("client policy", ((f"{s.path}.name", s.name) for s in clients))
    server_names = {s.name: s.path for s in reversed(servers) if s.name}
    for client in clients:
        if client.name in server_names:
            r.problem(
                f"{client.path}.name",
                f"client policy name {client.name!r} is also the name of the server policy at "
                f"{server_names[client.name]}; server and client policies of a profile need different names",
            )

    for s, policy in zip(servers, profile.server_policies):
        r.reference(f"{s.path}.server_proxy", "server proxy", policy.server_proxy, server_proxies)
    for s, client_policy in zip(clients, profile.client_policies):
        r.reference(f"{s.path}.client_proxy", "client proxy", client_policy.client_proxy, client_proxies)
        r.reference(
            f"{s.path}.decryption_policy", "decryption policy", client_policy.decryption_policy, decryption_policies
        )
        r.reference(f"{s.path}.trust_store", "trust store", client_policy.trust_store, trust_stores)

    # The product: if two client policies of one profile use the same port for their
    # proxies, the device cannot tell which policy to enforce.
    for j, (s, later) in enumerate(zip(clients, profile.client_policies)):
        later_proxy = client_proxies.get(later.client_proxy)
        if later_proxy is None:
            continue
        for earlier_s, earlier in zip(clients[:j], profile.client_policies[:j]):
            earlier_proxy = client_proxies.get(earlier.client_proxy)
            if earlier_proxy is None:
                continue
            overlaps = sorted(
                {
                    (str(a), str(b))
                    for a in later_proxy.detection_ports
                    for b in earlier_proxy.detection_ports
                    if a.overlaps(b)
                }
            )
            if overlaps:
                shown = ", ".join(a if a == b else f"{a} (with {b})" for a, b in overlaps)
                r.problem(
                    f"{s.path}.client_proxy",
                    f"detection ports {shown} of client proxy {later_proxy.name!r} (client policy "
                    f"{later.name!r}) overlap those of client proxy {earlier_proxy.name!r} (client "
                    f"policy {earlier.name!r} at {earlier_s.path}); the gateway could not tell which "
                    "policy applies",
                )
