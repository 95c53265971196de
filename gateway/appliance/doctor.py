"""`tlsgw doctor`: what is missing or wrong on this host, each finding with its fix.

Pure: `diagnose(HostFacts) -> findings`. The facts (what nft says about a throwaway
table, the sysctls, the links, the certificates, the service state) are gathered by
`gateway.appliance.host_facts`, so every rule here is unit-tested with facts written by
hand, and the integration test feeds it facts from a real namespace.

What is checked, and why it matters to tlsgw:
- the configuration loads (everything else is derived from it);
- nft is installed and recent enough, and the kernel accepts the three expressions the
  steering rules need: `tproxy`, `socket transparent`, and the bridge-family divert
  (`ether daddr set`, `meta pkttype set host`) - probed with `nft -c` on a throwaway
  table, which runs the kernel's checks without committing;
- for `netfilter.backend: iptables`: iptables-legacy and the TPROXY, socket, mark,
  MARK, multiport and comment extensions, in the kernel and in libxtables;
- `net.bridge.bridge-nf-call-iptables`: with 1 the IP hooks also run in bridge context
  and TPROXYed connections are reset (DESIGN.md section 3). tlsgw sets 0 while it runs;
  a sysctl.d file or a container runtime setting 1 conflicts with it;
- rp_filter and the bridge-nf sysctl while tlsgw runs (someone may have changed them);
- the bridge exists, is up, has an address (the upstream legs leave through it), each
  segment port is enslaved to it and carries no address, each VLAN device exists;
- every certificate the configuration names can be used, and none has expired or
  expires within 30 days;
- certificates whose private key lives only in the running gateway's memory
  (`pki.persist_keys: false`) and that it does not hold (after a restart, until imported
  again): their policies are out of service. The running gateway is asked, as
  `tlsgw status` does, and its own words (path, effect, repair) are reported; with no
  gateway answering, the references a gateway starting now would lack are warned about,
  in `tlsgw check-config`'s words;
- the service state, and rules left loaded with no tlsgw running (after a crash).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.config.model import GatewayConfig, NetfilterBackendName
from gateway.errors import ConfigIssue
from gateway.pki.expiry import EXPIRY_WARNING_DAYS
from gateway.pki.memory_keys import reimport_hint

# nft 0.9.3 is the first release whose parser has both the `tproxy` statement and
# `socket transparent`; older versions cannot even read tlsgw's rules.
MIN_NFT_VERSION = (0, 9, 3)
BRIDGE_NF_CALL_IPTABLES = "net/bridge/bridge-nf-call-iptables"
IP_FORWARD = "net/ipv4/ip_forward"
# The iptables backend's rules use these (netfilter/render_iptables.py).
XT_TARGETS = ("TPROXY", "MARK")
XT_MATCHES = ("socket", "mark", "multiport", "comment", "tcp")


class Severity(enum.Enum):
    OK = "ok"
    NOTE = "note"
    WARNING = "warn"
    PROBLEM = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    check: str
    """Short area name: config, nft, kernel, iptables, sysctl, bridge, certificates, service, rules."""
    message: str
    fix: str = ""


class ServiceState(enum.Enum):
    NO_SYSTEMD = "no systemd"
    ACTIVE = "active"
    ACTIVATING = "activating"
    INACTIVE = "inactive"
    FAILED = "failed"
    NOT_INSTALLED = "not installed"


@dataclass(frozen=True, slots=True)
class Probe:
    """Did the kernel accept a throwaway table using one feature (`nft -c`)?"""

    feature: str
    """`tproxy`, `socket` or `bridge divert`."""
    ok: bool | None
    """None: not probed (nft missing, or not root)."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LinkFacts:
    name: str
    kind: str | None = None
    """`bridge`, `veth`, `vlan`... or None for a plain device."""
    master: str | None = None
    up: bool = False
    ipv4: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CertDates:
    """A certificate the configuration uses, as loaded from the store (no key needed)."""

    role: str
    """E.g. `signing certificate of client proxy 'outbound'`."""
    name: str
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class XtFacts:
    """What the iptables backend needs, as found (None when not looked at)."""

    legacy_tools: bool
    """`iptables-legacy` and `iptables-legacy-save` are on PATH."""
    python_iptables: bool
    kernel_targets: frozenset[str]
    """Registered (/proc/net/ip_tables_targets) or loadable as a module."""
    kernel_matches: frozenset[str]
    library_extensions: frozenset[str]
    """libxt_*.so files python-iptables can load, by extension name."""


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """What the running gateway answered about keys kept only in its memory (the `keys`
    of `tlsgw status`)."""

    missing: tuple[ConfigIssue, ...]
    """Each reference to a certificate whose key it lacks, worded by the gateway
    (`gateway.runtime.missing_key_issues`: what is out of service, and the repair)."""


@dataclass(frozen=True, slots=True)
class HostFacts:
    now: dt.datetime
    config_path: str
    config: GatewayConfig | None
    config_problems: tuple[str, ...] = ()
    is_root: bool = True
    nft_version: tuple[int, ...] | None = None
    """None: nft is not installed."""
    probes: tuple[Probe, ...] = ()
    xt: XtFacts | None = None
    sysctls: Mapping[str, str | None] = field(default_factory=dict)
    """Key below /proc/sys -> value, None when the key does not exist."""
    sysctl_files_enabling_bridge_nf: tuple[str, ...] = ()
    """sysctl.d files (`path:line`) that set bridge-nf-call-iptables to 1 at boot."""
    links: Mapping[str, LinkFacts] = field(default_factory=dict)
    """Only interfaces that exist."""
    certificate_problems: tuple[str, ...] = ()
    """From `check_certificates`: references that cannot be used, by config path."""
    certificates: tuple[CertDates, ...] = ()
    memory_key_references: tuple[ConfigIssue, ...] = ()
    """From `check_certificates`'s warnings: references to certificates whose key lives
    only in a gateway's memory, which a gateway starting now would lack."""
    gateway_keys: GatewayKeys | None = None
    """None: no gateway answered on the configuration's control socket."""
    gateway_silent: str = ""
    """Why no gateway answered (the control socket's error), when none did."""
    service: ServiceState = ServiceState.NO_SYSTEMD
    rules_loaded: bool = False
    """tlsgw's tables (or iptables chains) are in the kernel."""


def diagnose(facts: HostFacts) -> tuple[Finding, ...]:
    """Every finding, problems and warnings first within each area, areas in a fixed order."""
    found: list[Finding] = []
    found += _config(facts)
    found += _nft(facts)
    found += _kernel(facts)
    found += _iptables(facts)
    found += _sysctls(facts)
    found += _bridge(facts)
    found += _certificates(facts)
    found += _service(facts)
    return tuple(found)


def has_problems(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.PROBLEM for f in findings)


def render_report(findings: Iterable[Finding]) -> str:
    items = list(findings)
    lines: list[str] = []
    for finding in items:
        lines.append(f"{finding.severity.value:<4}  {finding.check}: {finding.message}")
        if finding.fix and finding.severity is not Severity.OK:
            lines += [f"      fix: {line}" if i == 0 else f"           {line}"
                      for i, line in enumerate(finding.fix.splitlines())]
    problems = sum(f.severity is Severity.PROBLEM for f in items)
    warnings = sum(f.severity is Severity.WARNING for f in items)
    verdict = "nothing wrong found" if not problems and not warnings else (
        f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    lines.append(f"tlsgw doctor: {verdict}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- areas


def _ok(check: str, message: str) -> Finding:
    return Finding(Severity.OK, check, message)


def _config(facts: HostFacts) -> list[Finding]:
    if facts.config is not None:
        return [_ok("config", f"{facts.config_path} is valid")]
    return [
        Finding(Severity.PROBLEM, "config", f"{facts.config_path}: {problem}",
                f"edit {facts.config_path}, then `tlsgw check-config {facts.config_path}` "
                "(a sample is examples/tlsgw.yaml, installed as /etc/tlsgw/tlsgw.yaml)")
        for problem in facts.config_problems or ("cannot be loaded",)
    ]


def _backend(facts: HostFacts) -> NetfilterBackendName:
    return facts.config.gateway.netfilter.backend if facts.config else NetfilterBackendName.NFTABLES


def _nft(facts: HostFacts) -> list[Finding]:
    if facts.nft_version is None:
        return [Finding(Severity.PROBLEM, "nft", "nft is not installed; both backends need it for the bridge "
                        "divert (nft bridge family)", "apt-get install nftables")]
    shown = ".".join(map(str, facts.nft_version))
    if facts.nft_version < MIN_NFT_VERSION:
        wanted = ".".join(map(str, MIN_NFT_VERSION))
        return [Finding(Severity.PROBLEM, "nft", f"nft {shown} is older than {wanted}, the first with the tproxy "
                        "and socket expressions", f"install nftables {wanted} or later")]
    return [_ok("nft", f"nft {shown}")]


_PROBE_FIX = {
    "tproxy": "load nft_tproxy (`modprobe nft_tproxy`), or use a kernel built with CONFIG_NFT_TPROXY",
    "socket": "load nft_socket (`modprobe nft_socket`), or use a kernel built with CONFIG_NFT_SOCKET",
    "bridge divert": "load nf_tables_bridge and nft_meta_bridge (`modprobe nft_meta_bridge`), or use a kernel "
                     "built with CONFIG_NF_TABLES_BRIDGE",
}


def _kernel(facts: HostFacts) -> list[Finding]:
    found: list[Finding] = []
    for probe in facts.probes:
        if probe.ok is None:
            reason = "not root" if not facts.is_root else "nft missing"
            found.append(Finding(Severity.WARNING, "kernel", f"{probe.feature}: not checked ({reason})",
                                 "run `tlsgw doctor` as root with nftables installed"))
        elif probe.ok:
            found.append(_ok("kernel", f"{probe.feature}: supported"))
        else:
            detail = f" ({probe.detail})" if probe.detail else ""
            found.append(Finding(Severity.PROBLEM, "kernel", f"{probe.feature}: refused by this kernel{detail}",
                                 _PROBE_FIX.get(probe.feature, "")))
    return found


def _iptables(facts: HostFacts) -> list[Finding]:
    if _backend(facts) is not NetfilterBackendName.IPTABLES:
        return []
    xt = facts.xt
    if xt is None:
        return [Finding(Severity.WARNING, "iptables", "the iptables backend was not checked")]
    found: list[Finding] = []
    if not xt.legacy_tools:
        found.append(Finding(Severity.PROBLEM, "iptables", "iptables-legacy is not installed",
                             "apt-get install iptables"))
    if not xt.python_iptables:
        found.append(Finding(Severity.PROBLEM, "iptables", "python-iptables cannot be imported (libxtables?)",
                             "apt-get install iptables; reinstall tlsgw"))
    missing_kernel = [f"target {t}" for t in XT_TARGETS if t not in xt.kernel_targets]
    missing_kernel += [f"match {m}" for m in XT_MATCHES if m not in xt.kernel_matches]
    if missing_kernel:
        found.append(Finding(Severity.PROBLEM, "iptables", "the kernel lacks xtables " + ", ".join(missing_kernel),
                             "load the xt_* modules (e.g. `modprobe xt_TPROXY xt_socket`), or use the nftables "
                             "backend"))
    missing_lib = [e for e in (*XT_TARGETS, *XT_MATCHES) if e not in xt.library_extensions]
    if missing_lib:
        found.append(Finding(Severity.PROBLEM, "iptables", "libxtables extensions missing: "
                             + ", ".join(f"libxt_{e}.so" for e in missing_lib), "apt-get install --reinstall iptables"))
    return found or [_ok("iptables", "legacy iptables with TPROXY and socket support")]


def _running(facts: HostFacts) -> bool:
    return facts.service in (ServiceState.ACTIVE, ServiceState.ACTIVATING)


def _sysctls(facts: HostFacts) -> list[Finding]:
    found: list[Finding] = []
    bridge_nf = facts.sysctls.get(BRIDGE_NF_CALL_IPTABLES)
    files = ", ".join(facts.sysctl_files_enabling_bridge_nf)
    if bridge_nf == "1" and _running(facts):
        found.append(Finding(
            Severity.PROBLEM, "sysctl",
            "net.bridge.bridge-nf-call-iptables is 1 while tlsgw runs: something set it back (TPROXYed "
            "connections are reset)" + (f"; set at boot by {files}" if files else ""),
            "find who sets it (container runtimes such as Docker need 1 and cannot share this bridge host), "
            "then `systemctl restart tlsgw`"))
    elif files:
        found.append(Finding(
            Severity.WARNING, "sysctl",
            f"{files} sets net.bridge.bridge-nf-call-iptables=1; tlsgw sets 0 while it runs, and a later "
            "`sysctl --system` would break steering",
            "remove that line, or override it with a later file setting 0"))
    elif bridge_nf is None:
        found.append(_ok("sysctl", "br_netfilter is not loaded (bridged frames skip the IP hooks)"))
    else:
        found.append(_ok("sysctl", f"net.bridge.bridge-nf-call-iptables is {bridge_nf} (tlsgw sets 0 while it runs)"))
    if _running(facts) and facts.config is not None:
        gw = facts.config.gateway
        names = dict.fromkeys(["all", gw.bridge, *(p for s in gw.segments for p in (s.client_port, s.server_port))])
        wrong = [n for n in names if facts.sysctls.get(f"net/ipv4/conf/{n}/rp_filter") not in (None, "0")]
        if wrong:
            found.append(Finding(Severity.PROBLEM, "sysctl", "rp_filter is on for " + ", ".join(wrong)
                                 + " while tlsgw runs (diverted return traffic is dropped)",
                                 "find what re-enabled it (a sysctl.d file?), then `systemctl restart tlsgw`"))
    if facts.sysctls.get(IP_FORWARD) == "1":
        found.append(Finding(Severity.NOTE, "sysctl",
                             "net.ipv4.ip_forward is 1: a steered flow that finds no listener is routed through "
                             "the bridge (TTL and MAC change) instead of being lost",
                             "set it to 0 unless this host also routes"))
    return found


def _bridge(facts: HostFacts) -> list[Finding]:
    if facts.config is None:
        return []
    gw = facts.config.gateway
    init = "tlsgw appliance init --ports " + ",".join(
        dict.fromkeys(p for s in gw.segments for p in (s.client_port, s.server_port))) + f" --bridge {gw.bridge}"
    bridge = facts.links.get(gw.bridge)
    if bridge is None:
        return [Finding(Severity.PROBLEM, "bridge", f"bridge {gw.bridge} does not exist",
                        f"{init}\nthen `networkctl reload` (systemd-networkd)")]
    if bridge.kind != "bridge":
        return [Finding(Severity.PROBLEM, "bridge", f"{gw.bridge} is a {bridge.kind or 'plain'} device, not a bridge",
                        f"set gateway.bridge to the bridge's name, or create it: {init}")]
    found: list[Finding] = []
    if not bridge.up:
        found.append(Finding(Severity.PROBLEM, "bridge", f"bridge {gw.bridge} is down", f"ip link set {gw.bridge} up"))
    if not bridge.ipv4:
        found.append(Finding(Severity.WARNING, "bridge", f"bridge {gw.bridge} has no IPv4 address; tlsgw's "
                             "connections to servers leave through it and need an address in their subnet",
                             f"{init} --address ADDRESS/PREFIX"))
    for segment in gw.segments:
        for role, port in (("client_port", segment.client_port), ("server_port", segment.server_port)):
            link = facts.links.get(port)
            where = f"segment {segment.name}: {role} {port}"
            if link is None:
                found.append(Finding(Severity.PROBLEM, "bridge", f"{where} does not exist",
                                     "fix the port name in the configuration (`ip link` lists the devices)"))
                continue
            if link.master != gw.bridge:
                found.append(Finding(Severity.PROBLEM, "bridge",
                                     f"{where} is not in bridge {gw.bridge} (its master is {link.master or 'none'})",
                                     f"{init}\nor now: ip link set {port} master {gw.bridge}"))
            elif not link.up:
                found.append(Finding(Severity.PROBLEM, "bridge", f"{where} is down", f"ip link set {port} up"))
            if link.ipv4:
                found.append(Finding(Severity.WARNING, "bridge", f"{where} has an address ({', '.join(link.ipv4)}); "
                                     "bridge ports carry none", f"ip address flush dev {port}; put addresses on "
                                     f"{gw.bridge} (`{init} --address ...`)"))
        for vlan in segment.vlans:
            device = f"{gw.bridge}.{vlan}"
            if device not in facts.links:
                found.append(Finding(Severity.PROBLEM, "bridge", f"segment {segment.name}: VLAN device {device} "
                                     "does not exist (steered tagged frames reach the IP stack through it)",
                                     f"ip link add link {gw.bridge} name {device} type vlan id {vlan}"))
    return found or [_ok("bridge", f"{gw.bridge} with ports " + ", ".join(
        dict.fromkeys(p for s in gw.segments for p in (s.client_port, s.server_port))))]


def _certificates(facts: HostFacts) -> list[Finding]:
    if facts.config is None:
        return []
    pki = facts.config.pki.dir
    found = [Finding(Severity.PROBLEM, "certificates", problem, _certificate_fix(problem, pki))
             for problem in facts.certificate_problems]
    keys = _memory_keys(facts, facts.config)
    found += [f for f in keys if f.severity is not Severity.OK]
    for cert in facts.certificates:
        left = cert.not_after - facts.now
        day = cert.not_after.date().isoformat()
        if left <= dt.timedelta(0):
            found.append(Finding(Severity.PROBLEM, "certificates", f"{cert.role} ({cert.name!r}) expired on {day}",
                                 f"renew it and replace {cert.name!r} in {pki}, then `systemctl reload tlsgw`"))
        elif left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            found.append(Finding(Severity.WARNING, "certificates", f"{cert.role} ({cert.name!r}) expires on {day}",
                                 f"renew it before then and replace {cert.name!r} in {pki}"))
    return found or [_ok("certificates", f"{len(facts.certificates)} in use, none expiring within "
                                         f"{EXPIRY_WARNING_DAYS} days"), *keys]


# The config paths `gateway.runtime` names a certificate reference by.
_SIGNING_PATH = re.compile(r"client_proxies\[(\d+)\]\.signing_certificate")
_SERVER_CERTIFICATE_PATH = re.compile(r"server_proxies\[(\d+)\]\.certificates\[(\d+)\]")


def certificate_at(config: GatewayConfig, path: str) -> str | None:
    """The certificate name a reference's config path points at in `config`, if any."""
    if found := _SIGNING_PATH.fullmatch(path):
        i = int(found[1])
        return config.client_proxies[i].signing_certificate if i < len(config.client_proxies) else None
    if found := _SERVER_CERTIFICATE_PATH.fullmatch(path):
        i, j = int(found[1]), int(found[2])
        if i < len(config.server_proxies) and j < len(config.server_proxies[i].certificates):
            return config.server_proxies[i].certificates[j]
    return None


def _repair(config: GatewayConfig, issue: ConfigIssue) -> tuple[str, str | None]:
    """(the finding's message, the repair command) from a missing-key issue. The issue
    already ends with the repair (`reimport_hint`); it moves to the fix line when the
    certificate's name can be told, and stays in the message otherwise (a running gateway
    whose configuration is not the file's)."""
    name = certificate_at(config, issue.path)
    if name is None or f"certificate {name!r}" not in issue.message:
        return str(issue), None
    hint = reimport_hint(name)
    return str(ConfigIssue(issue.path, issue.message.removesuffix(f"; {hint}"))), hint


def _memory_keys(facts: HostFacts, config: GatewayConfig) -> list[Finding]:
    """Only the running gateway knows which keys it holds, so it is asked; the file alone
    can only say what a gateway starting now would lack."""
    answer = facts.gateway_keys
    found: list[Finding] = []
    if answer is not None:
        for issue in answer.missing:
            message, hint = _repair(config, issue)
            found.append(Finding(Severity.PROBLEM, "certificates", message,
                                 f"{hint or 'run the `tlsgw cert import` it names'}\n(as root or a member of "
                                 "tlsgw-admin; the key goes to the running gateway, which puts the policies back "
                                 "in service)"))
        if not found and facts.memory_key_references:
            found.append(_ok("certificates", f"the running gateway holds every key kept only in its memory "
                                             f"({len(facts.memory_key_references)} reference(s))"))
        return found
    if not facts.memory_key_references:
        return []
    if _running(facts):
        return [Finding(Severity.WARNING, "certificates",
                        f"{len(facts.memory_key_references)} certificate reference(s) need a key kept only in the "
                        f"running gateway's memory, but the gateway did not answer ({facts.gateway_silent or '?'}): "
                        "whether it holds them is unknown",
                        "run `tlsgw doctor` as root (or as a user who may run `tlsgw status`, which lists the "
                        "keys it lacks)")]
    for issue in facts.memory_key_references:
        message, hint = _repair(config, issue)
        found.append(Finding(Severity.WARNING, "certificates", message,
                             f"start tlsgw, then {hint}" if hint else "start tlsgw, then run the `tlsgw cert import` "
                             "it names"))
    return found


def _certificate_fix(problem: str, pki: str) -> str:
    """The fix depends on who uses the certificate, which the problem's config path says."""
    if problem.startswith("client_proxies"):
        return (f"create the signing CA: tlsgw cert --pki-dir {pki} create-signing NAME --cn 'ORG TLS inspection', "
                "then deploy `tlsgw cert export NAME` to the clients")
    if problem.startswith("trust_stores"):
        return f"import the CA: tlsgw cert --pki-dir {pki} import-ca NAME FILE.pem"
    if problem.startswith("server_proxies"):
        return f"put the server's certificate and key in {pki}/NAME/ (cert.pem, and key.pem with mode 0600)"
    return f"check the certificate store {pki}"


def _service(facts: HostFacts) -> list[Finding]:
    found: list[Finding] = []
    state = facts.service
    if state is ServiceState.NO_SYSTEMD:
        found.append(Finding(Severity.NOTE, "service", "systemd is not running here; the unit was not checked",
                             "run `tlsgw run --config FILE` under your supervisor"))
    elif state is ServiceState.NOT_INSTALLED:
        found.append(Finding(Severity.WARNING, "service", "tlsgw.service is not installed",
                             "scripts/install-appliance.sh installs it"))
    elif state is ServiceState.FAILED:
        found.append(Finding(Severity.PROBLEM, "service", "tlsgw.service has failed",
                             "journalctl -u tlsgw -b says why; fix it, then `systemctl restart tlsgw`"))
    elif state is ServiceState.INACTIVE:
        found.append(Finding(Severity.WARNING, "service", "tlsgw.service is not running",
                             "systemctl enable --now tlsgw"))
    else:
        found.append(_ok("service", f"tlsgw.service is {state.value}"))
    if facts.rules_loaded and state not in (ServiceState.ACTIVE, ServiceState.ACTIVATING, ServiceState.NO_SYSTEMD):
        found.append(Finding(Severity.PROBLEM, "rules", "tlsgw's steering rules are loaded but tlsgw is not running: "
                             "steered flows find no listener", "tlsgw rules remove (or start tlsgw)"))
    return found
