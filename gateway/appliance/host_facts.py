"""Gather the facts `tlsgw doctor` judges (see `gateway.appliance.doctor`).

Everything here only reads: the kernel probes use `nft -c`, which runs the kernel's
checks on a throwaway table and commits nothing; links come from `ip -j`; sysctls from
/proc/sys; the certificate store is opened without keys where dates are all that
matter. With `netns`, the network facts come from that namespace (tests, labs); the
service state, the files on disk and the control socket are the host's. The running
gateway is asked for its `status` only (any role may), to learn which keys kept only in
its memory it lacks.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.appliance.doctor import (
    BRIDGE_NF_CALL_IPTABLES,
    IP_FORWARD,
    XT_MATCHES,
    XT_TARGETS,
    CertDates,
    GatewayKeys,
    HostFacts,
    LinkFacts,
    Probe,
    ServiceState,
    XtFacts,
)
from gateway.config.model import GatewayConfig, NetfilterBackendName
from gateway.errors import ConfigError, ConfigIssue, PkiError

# A stuck tool must not hang the doctor; each of these finishes in well under a second.
COMMAND_TIMEOUT_S = 30.0
GATEWAY_TIMEOUT_S = 10.0  # for the running gateway's status answer
SERVICE = "tlsgw.service"
PROBE_TABLE = "tlsgw_doctor"
_PROBE = "table {family} {table} {{\n\tchain p {{\n\t\ttype filter hook prerouting priority {priority};\n\t\t{rule}\n\t}}\n}}\n"
# One throwaway table per feature, so each failure names its own; `nft -c` never commits.
PROBES: dict[str, str] = {
    "tproxy": _PROBE.format(family="ip", table=PROBE_TABLE, priority=-150,
                            rule="meta l4proto tcp tproxy to :1 accept"),
    "socket": _PROBE.format(family="ip", table=PROBE_TABLE, priority=-150,
                            rule="meta l4proto tcp socket transparent 1 accept"),
    "bridge divert": _PROBE.format(family="bridge", table=PROBE_TABLE, priority=-300,
                                   rule="ether daddr set 02:00:00:00:00:01 meta pkttype set host accept"),
}
SYSCTL_FILES = ("/etc/sysctl.conf", "/etc/sysctl.d/*.conf", "/run/sysctl.d/*.conf", "/usr/local/lib/sysctl.d/*.conf",
                "/usr/lib/sysctl.d/*.conf", "/lib/sysctl.d/*.conf")
_BRIDGE_NF_ON = re.compile(r"^\s*-?\s*net[./]bridge[./]bridge-nf-call-iptables\s*=\s*1\s*$")
XTABLES_DIRS = ("/usr/lib/*/xtables", "/usr/lib/xtables", "/usr/lib64/xtables", "/lib/xtables")
# xtables extension -> the kernel module that provides it (when not built in).
XT_MODULES = {"TPROXY": "xt_TPROXY", "MARK": "xt_mark", "socket": "xt_socket", "mark": "xt_mark",
              "multiport": "xt_multiport", "comment": "xt_comment", "tcp": "xt_tcpudp"}


def gather(config_path: str, netns: str | None = None, *, now: dt.datetime | None = None,
           sysctl_files: Sequence[str] = SYSCTL_FILES) -> HostFacts:
    config, problems = _load(config_path)
    nft_version = _nft_version()
    is_root = os.geteuid() == 0
    cert_problems, certs, memory_key_references = _certificates(config) if config is not None else ((), (), ())
    gateway_keys, gateway_silent = _gateway_keys(config) if config is not None else (None, "")
    return HostFacts(
        now=now or dt.datetime.now(dt.timezone.utc),
        config_path=config_path,
        config=config,
        config_problems=problems,
        is_root=is_root,
        nft_version=nft_version,
        probes=tuple(_probe(name, script, netns, nft_version is not None and is_root)
                     for name, script in PROBES.items()),
        xt=_xt(netns) if config is not None and config.gateway.netfilter.backend is NetfilterBackendName.IPTABLES
        else None,
        sysctls=_sysctls(config, netns),
        sysctl_files_enabling_bridge_nf=_files_enabling_bridge_nf(sysctl_files),
        links=_links(netns),
        certificate_problems=cert_problems,
        certificates=certs,
        memory_key_references=memory_key_references,
        gateway_keys=gateway_keys,
        gateway_silent=gateway_silent,
        service=_service(),
        rules_loaded=_rules_loaded(config, netns) if config is not None and nft_version is not None and is_root
        else False,
    )


def _prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str] | None:
    """None when the program is missing or hung: a fact the caller reports, not a crash."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


def _load(path: str) -> tuple[GatewayConfig | None, tuple[str, ...]]:
    from gateway.config.load import load_config

    try:
        return load_config(path), ()
    except ConfigError as exc:
        return None, tuple(str(issue) for issue in exc.issues)


def _certificates(config: GatewayConfig
                  ) -> tuple[tuple[str, ...], tuple[CertDates, ...], tuple[ConfigIssue, ...]]:
    """(unusable references, dates of the usable ones, references to keys kept only in a
    gateway's memory - `check_certificates`'s warnings)."""
    from gateway.pki.store import CertStore
    from gateway.runtime import check_certificates

    problems: tuple[str, ...] = ()
    memory_key_references: tuple[ConfigIssue, ...] = ()
    try:
        memory_key_references = tuple(check_certificates(config))
    except ConfigError as exc:
        problems = tuple(str(issue) for issue in exc.issues)
    store = CertStore(config.pki.dir)
    wanted = [(f"signing certificate of client proxy {p.name!r}", p.signing_certificate)
              for p in config.client_proxies]
    wanted += [(f"certificate of server proxy {p.name!r}", name) for p in config.server_proxies
               for name in p.certificates]
    dates: list[CertDates] = []
    for role, name in wanted:
        try:
            cert = store.load(name, with_key=False)
        except PkiError:
            continue  # already among `problems`
        dates.append(CertDates(role, name, cert.certificate.not_valid_after_utc))
    return problems, tuple(dates), memory_key_references


def _gateway_keys(config: GatewayConfig) -> tuple[GatewayKeys | None, str]:
    """What the gateway on the configuration's control socket says it lacks (`tlsgw
    status`'s `keys.missing`); (None, why) when no gateway answers."""
    import asyncio

    from gateway.control.protocol import Command, Request
    from gateway.control.server import ControlSocketError, request

    try:
        response = asyncio.run(request(config.gateway.control.socket, Request(Command.STATUS),
                                       timeout=GATEWAY_TIMEOUT_S))
    except ControlSocketError as exc:
        return None, str(exc)
    if not response.ok:
        return None, f"{config.gateway.control.socket}: {response.error}"
    keys = response.result.get("keys") if isinstance(response.result, dict) else None
    if not isinstance(keys, dict) or not isinstance(keys.get("missing"), list):
        return None, f"{config.gateway.control.socket}: the gateway's status says nothing about keys (older tlsgw?)"
    return GatewayKeys(tuple(ConfigIssue(str(m.get("path", "")), str(m.get("message", "")))
                             for m in keys["missing"] if isinstance(m, dict))), ""


def _nft_version() -> tuple[int, ...] | None:
    if shutil.which("nft") is None:
        return None
    done = _run(["nft", "--version"])
    found = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?", done.stdout if done else "")
    if not found:
        return (0, 0, 0)
    return tuple(int(g or 0) for g in found.groups())


def _probe(feature: str, script: str, netns: str | None, possible: bool) -> Probe:
    if not possible:
        return Probe(feature, None)
    done = _run([*_prefix(netns), "nft", "-c", "-f", "-"], script)
    if done is None:
        return Probe(feature, None)
    if done.returncode == 0:
        return Probe(feature, True)
    first = next((line.strip() for line in done.stderr.splitlines() if "Error" in line), done.stderr.strip())
    return Probe(feature, False, first[:200])


def _xt(netns: str | None) -> XtFacts:
    legacy = all(shutil.which(t) for t in ("iptables-legacy", "iptables-legacy-save"))
    imported = _run([sys.executable, "-c", "import iptc"])
    targets = _proc_list("/proc/net/ip_tables_targets", netns)
    matches = _proc_list("/proc/net/ip_tables_matches", netns)
    targets |= {t for t in XT_TARGETS if t not in targets and _module_available(XT_MODULES[t])}
    matches |= {m for m in XT_MATCHES if m not in matches and _module_available(XT_MODULES[m])}
    libraries: set[str] = set()
    for pattern in ((os.environ["XTABLES_LIBDIR"],) if os.environ.get("XTABLES_LIBDIR") else XTABLES_DIRS):
        for directory in glob.glob(pattern):
            for name in (*XT_TARGETS, *XT_MATCHES):
                if any(os.path.exists(os.path.join(directory, f"{p}_{name}.so")) for p in ("libxt", "libipt")):
                    libraries.add(name)
    return XtFacts(legacy_tools=legacy, python_iptables=imported is not None and imported.returncode == 0,
                   kernel_targets=frozenset(targets), kernel_matches=frozenset(matches),
                   library_extensions=frozenset(libraries))


def _proc_list(path: str, netns: str | None) -> set[str]:
    done = _run([*_prefix(netns), "cat", path])
    return set(done.stdout.split()) if done is not None and done.returncode == 0 else set()


def _module_available(module: str) -> bool:
    done = _run(["modprobe", "-n", "-q", module])
    return done is not None and done.returncode == 0


def _sysctls(config: GatewayConfig | None, netns: str | None) -> dict[str, str | None]:
    from netfilter.errors import NetfilterError
    from netfilter.sysctl import read_sysctl, rp_filter_key

    keys = [BRIDGE_NF_CALL_IPTABLES, IP_FORWARD, rp_filter_key("all")]
    if config is not None:
        gw = config.gateway
        keys += [rp_filter_key(n) for n in dict.fromkeys(
            [gw.bridge, *(p for s in gw.segments for p in (s.client_port, s.server_port))])]
    values: dict[str, str | None] = {}
    for key in keys:
        try:
            values[key] = read_sysctl(key, netns)
        except NetfilterError:
            values[key] = None
    return values


def _files_enabling_bridge_nf(patterns: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lines = Path(path).read_text(errors="replace").splitlines()
            except OSError:
                continue
            found += [f"{path}:{number}" for number, line in enumerate(lines, start=1) if _BRIDGE_NF_ON.match(line)]
    return tuple(found)


def _links(netns: str | None) -> dict[str, LinkFacts]:
    done = _run(["ip", *(["-n", netns] if netns else []), "-d", "-j", "address", "show"])
    if done is None or done.returncode != 0:
        return {}
    links: dict[str, LinkFacts] = {}
    for item in json.loads(done.stdout or "[]"):
        name = item.get("ifname")
        if not name:
            continue
        links[name] = LinkFacts(
            name=name,
            kind=(item.get("linkinfo") or {}).get("info_kind"),
            master=item.get("master"),
            up="UP" in item.get("flags", ()),
            ipv4=tuple(f"{a['local']}/{a['prefixlen']}" for a in item.get("addr_info", ()) if a.get("family") == "inet"),
        )
    return links


def _service() -> ServiceState:
    if not os.path.isdir("/run/systemd/system") or shutil.which("systemctl") is None:
        return ServiceState.NO_SYSTEMD
    done = _run(["systemctl", "show", "--property=LoadState,ActiveState", "--value", SERVICE])
    if done is None:
        return ServiceState.NO_SYSTEMD
    load, _, active = done.stdout.partition("\n")
    if load.strip() in ("not-found", ""):
        return ServiceState.NOT_INSTALLED
    return {"active": ServiceState.ACTIVE, "reloading": ServiceState.ACTIVE, "activating": ServiceState.ACTIVATING,
            "failed": ServiceState.FAILED}.get(active.strip(), ServiceState.INACTIVE)


def _rules_loaded(config: GatewayConfig, netns: str | None) -> bool:
    table = config.gateway.netfilter.table
    done = _run([*_prefix(netns), "nft", "list", "tables"])
    listed = done.stdout.splitlines() if done is not None and done.returncode == 0 else []
    if any(line.strip() in (f"table bridge {table}", f"table ip {table}") for line in listed):
        return True
    if "mangle" in _proc_list("/proc/net/ip_tables_names", netns) and shutil.which("iptables-legacy-save"):
        saved = _run([*_prefix(netns), "iptables-legacy-save", "-t", "mangle"])
        return saved is not None and f":{table}." in saved.stdout
    return False
