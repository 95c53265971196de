from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from gateway.appliance.doctor import (
    BRIDGE_NF_CALL_IPTABLES,
    IP_FORWARD,
    CertDates,
    Finding,
    GatewayKeys,
    HostFacts,
    LinkFacts,
    Probe,
    ServiceState,
    Severity,
    XtFacts,
    certificate_at,
    diagnose,
    has_problems,
    render_report,
)
from gateway.config.model import GatewayConfig, GatewaySection, NetfilterBackendName, NetfilterSettings, Segment
from gateway.errors import ConfigIssue
from gateway.pki.memory_keys import reimport_hint
from gateway.runtime import missing_key_issues
from tests.support.steering_samples import WEB1, WEB2, one_segment

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)
CONFIG = one_segment()  # bridge br0, segment lan-wan eth1 -> eth2


def _config(**gateway: Any) -> GatewayConfig:
    return dataclasses.replace(CONFIG, gateway=dataclasses.replace(CONFIG.gateway, **gateway))


def _healthy(**changes: Any) -> HostFacts:
    facts = HostFacts(
        now=NOW,
        config_path="/etc/tlsgw/tlsgw.yaml",
        config=CONFIG,
        nft_version=(1, 0, 6),
        probes=(Probe("tproxy", True), Probe("socket", True), Probe("bridge divert", True)),
        sysctls={BRIDGE_NF_CALL_IPTABLES: "0", IP_FORWARD: "0", "net/ipv4/conf/all/rp_filter": "0",
                 "net/ipv4/conf/br0/rp_filter": "0", "net/ipv4/conf/eth1/rp_filter": "0",
                 "net/ipv4/conf/eth2/rp_filter": "0"},
        links={
            "br0": LinkFacts("br0", kind="bridge", up=True, ipv4=("192.0.2.2/24",)),
            "eth1": LinkFacts("eth1", master="br0", up=True),
            "eth2": LinkFacts("eth2", master="br0", up=True),
        },
        certificates=(CertDates("signing certificate of client proxy 'outbound'", "corp-signing",
                                NOW + dt.timedelta(days=400)),),
        service=ServiceState.ACTIVE,
    )
    return dataclasses.replace(facts, **changes)


def _links(**changes: LinkFacts | None) -> dict[str, LinkFacts]:
    links = dict(_healthy().links)
    for name, link in changes.items():
        if link is None:
            links.pop(name)
        else:
            links[name] = link
    return links


def _sysctls() -> dict[str, str | None]:
    return dict(_healthy().sysctls)


def _not_ok(findings: tuple[Finding, ...]) -> list[Finding]:
    return [f for f in findings if f.severity is not Severity.OK]


def test_healthy_host_has_nothing_to_report() -> None:
    findings = diagnose(_healthy())
    assert _not_ok(findings) == []
    assert not has_problems(findings)
    assert render_report(findings).endswith("tlsgw doctor: nothing wrong found\n")


CASES: list[tuple[Callable[[], HostFacts], Severity, str, str]] = [
    (lambda: _healthy(config=None, config_problems=("gateway.bridge: missing",)), Severity.PROBLEM, "config",
     "gateway.bridge: missing"),
    (lambda: _healthy(nft_version=None), Severity.PROBLEM, "nft", "not installed"),
    (lambda: _healthy(nft_version=(0, 9, 1)), Severity.PROBLEM, "nft", "older than 0.9.3"),
    (lambda: _healthy(probes=(Probe("tproxy", False, "Could not process rule: No such file or directory"),)),
     Severity.PROBLEM, "kernel", "tproxy: refused"),
    (lambda: _healthy(probes=(Probe("socket", None),), is_root=False), Severity.WARNING, "kernel", "not root"),
    (lambda: _healthy(sysctls={**_sysctls(), BRIDGE_NF_CALL_IPTABLES: "1"}), Severity.PROBLEM, "sysctl",
     "while tlsgw runs"),
    (lambda: _healthy(sysctl_files_enabling_bridge_nf=("/etc/sysctl.d/99-docker.conf:3",),
                      service=ServiceState.INACTIVE),
     Severity.WARNING, "sysctl", "/etc/sysctl.d/99-docker.conf:3 sets"),
    (lambda: _healthy(sysctls={**_sysctls(), "net/ipv4/conf/eth2/rp_filter": "1"}), Severity.PROBLEM, "sysctl",
     "rp_filter is on for eth2"),
    (lambda: _healthy(sysctls={**_sysctls(), IP_FORWARD: "1"}), Severity.NOTE, "sysctl", "ip_forward is 1"),
    (lambda: _healthy(links=_links(br0=None)), Severity.PROBLEM, "bridge", "bridge br0 does not exist"),
    (lambda: _healthy(links=_links(br0=LinkFacts("br0", kind="veth", up=True))), Severity.PROBLEM, "bridge",
     "not a bridge"),
    (lambda: _healthy(links=_links(br0=LinkFacts("br0", kind="bridge", up=False, ipv4=("192.0.2.2/24",)))),
     Severity.PROBLEM, "bridge", "bridge br0 is down"),
    (lambda: _healthy(links=_links(br0=LinkFacts("br0", kind="bridge", up=True))), Severity.WARNING, "bridge",
     "no IPv4 address"),
    (lambda: _healthy(links=_links(eth2=LinkFacts("eth2", up=True))), Severity.PROBLEM, "bridge",
     "server_port eth2 is not in bridge br0 (its master is none)"),
    (lambda: _healthy(links=_links(eth1=None)), Severity.PROBLEM, "bridge", "client_port eth1 does not exist"),
    (lambda: _healthy(links=_links(eth1=LinkFacts("eth1", master="br0", up=True, ipv4=("10.0.0.1/8",)))),
     Severity.WARNING, "bridge", "has an address (10.0.0.1/8)"),
    (lambda: _healthy(config=_config(segments=(dataclasses.replace(CONFIG.gateway.segments[0], vlans=(10,)),))),
     Severity.PROBLEM, "bridge", "VLAN device br0.10 does not exist"),
    (lambda: _healthy(certificate_problems=("client_proxies[0].signing_certificate: certificate 'x': missing",)),
     Severity.PROBLEM, "certificates", "signing_certificate"),
    (lambda: _healthy(certificates=(CertDates("certificate of server proxy 'web1'", "web1",
                                              NOW - dt.timedelta(days=1)),)),
     Severity.PROBLEM, "certificates", "expired on 2030-05-31"),
    (lambda: _healthy(certificates=(CertDates("certificate of server proxy 'web1'", "web1",
                                              NOW + dt.timedelta(days=10)),)),
     Severity.WARNING, "certificates", "expires on 2030-06-11"),
    (lambda: _healthy(service=ServiceState.FAILED), Severity.PROBLEM, "service", "has failed"),
    (lambda: _healthy(service=ServiceState.INACTIVE), Severity.WARNING, "service", "not running"),
    (lambda: _healthy(service=ServiceState.NOT_INSTALLED), Severity.WARNING, "service", "not installed"),
    (lambda: _healthy(service=ServiceState.NO_SYSTEMD), Severity.NOTE, "service", "systemd is not running"),
    (lambda: _healthy(service=ServiceState.INACTIVE, rules_loaded=True), Severity.PROBLEM, "rules",
     "loaded but tlsgw is not running"),
]
IDS = ["config-invalid", "nft-missing", "nft-too-old", "tproxy-refused", "probe-not-root",
       "bridge-nf-on-while-running", "bridge-nf-set-at-boot", "rp-filter-back-on", "ip-forward-note",
       "bridge-missing", "bridge-not-a-bridge", "bridge-down", "bridge-without-address", "port-not-enslaved",
       "port-missing", "port-with-address", "vlan-device-missing", "certificate-unusable", "certificate-expired",
       "certificate-expiring", "service-failed", "service-inactive", "service-not-installed", "no-systemd",
       "stale-rules"]


@pytest.mark.parametrize(("make", "severity", "check", "words"), CASES, ids=IDS)
def test_finding_names_what_is_wrong_with_a_fix(make: Callable[[], HostFacts], severity: Severity, check: str,
                                                words: str) -> None:
    matching = [f for f in diagnose(make()) if f.check == check and words in f.message]
    assert matching, f"no {check} finding mentioning {words!r} in:\n{render_report(diagnose(make()))}"
    assert matching[0].severity is severity
    assert matching[0].fix, "every finding that is not OK comes with its fix"


def test_problems_make_has_problems_true_and_warnings_do_not() -> None:
    assert has_problems(diagnose(_healthy(service=ServiceState.FAILED)))
    assert not has_problems(diagnose(_healthy(service=ServiceState.INACTIVE)))


def test_invalid_config_skips_checks_that_need_it() -> None:
    findings = diagnose(_healthy(config=None, config_problems=("x",)))
    assert {f.check for f in findings} == {"config", "nft", "kernel", "sysctl", "service"}


IPTABLES = _config(netfilter=NetfilterSettings(backend=NetfilterBackendName.IPTABLES))
XT_OK = XtFacts(legacy_tools=True, python_iptables=True, kernel_targets=frozenset({"TPROXY", "MARK"}),
                kernel_matches=frozenset({"socket", "mark", "multiport", "comment", "tcp"}),
                library_extensions=frozenset({"TPROXY", "MARK", "socket", "mark", "multiport", "comment", "tcp"}))


@pytest.mark.parametrize(
    ("xt", "words"),
    [(dataclasses.replace(XT_OK, legacy_tools=False), "iptables-legacy is not installed"),
     (dataclasses.replace(XT_OK, python_iptables=False), "python-iptables"),
     (dataclasses.replace(XT_OK, kernel_targets=frozenset({"MARK"})), "target TPROXY"),
     (dataclasses.replace(XT_OK, library_extensions=frozenset()), "libxt_TPROXY.so")],
    ids=["no-legacy-tools", "no-python-iptables", "no-kernel-tproxy", "no-libxtables"],
)
def test_iptables_backend_needs_legacy_tools_and_extensions(xt: XtFacts, words: str) -> None:
    findings = diagnose(_healthy(config=IPTABLES, xt=xt))
    assert any(f.check == "iptables" and f.severity is Severity.PROBLEM and words in f.message for f in findings)


def test_iptables_checks_only_for_the_iptables_backend() -> None:
    assert not [f for f in diagnose(_healthy(xt=None)) if f.check == "iptables"]
    assert _not_ok(diagnose(_healthy(config=IPTABLES, xt=XT_OK))) == []


def test_report_lists_fix_under_each_finding_and_counts() -> None:
    text = render_report(diagnose(_healthy(service=ServiceState.FAILED, links=_links(br0=LinkFacts(
        "br0", kind="bridge", up=True)))))
    assert "FAIL  service: tlsgw.service has failed\n      fix: journalctl -u tlsgw" in text
    assert text.endswith("tlsgw doctor: 1 problem, 1 warning\n")


def test_port_fix_names_the_init_command_with_every_port() -> None:
    config = _config(segments=(Segment("a", "eth1", "eth2", "default"), Segment("b", "eth3", "eth4", "default")),
                     bridge="br9")
    links = {"br9": LinkFacts("br9", kind="bridge", up=True, ipv4=("10.0.0.2/24",))}
    links.update({n: LinkFacts(n, up=True) for n in ("eth1", "eth2", "eth3", "eth4")})
    facts = _healthy(config=config, links=links)
    fixes = [f.fix for f in diagnose(facts) if f.check == "bridge"]
    assert len(fixes) == 4 and all("tlsgw appliance init --ports eth1,eth2,eth3,eth4 --bridge br9" in fix for fix in fixes)


def test_gateway_section_default_is_the_sample_shape() -> None:
    """Guards the fixture: the facts above describe `one_segment()`'s bridge and ports."""
    assert isinstance(CONFIG.gateway, GatewaySection) and CONFIG.gateway.bridge == "br0"
    assert (CONFIG.gateway.segments[0].client_port, CONFIG.gateway.segments[0].server_port) == ("eth1", "eth2")


# -- keys kept only in the running gateway's memory (pki.persist_keys: false) ---------------------

SIGNING = "client_proxies[0].signing_certificate"  # corp-signing, of client proxy outbound (policy out)


def _key_issue(holder: str, config: GatewayConfig = CONFIG) -> ConfigIssue:
    """Worded as the gateway (`tlsgw status`) and `check-config` word it."""
    [issue] = missing_key_issues(config, [(SIGNING, "corp-signing", "client", "outbound")], holder=holder)
    return issue


GATEWAY_LACKS = _key_issue("this gateway was not given it since it started")
STARTING_LACKS = _key_issue("a gateway starting now would not have it (a running one may)")


def _key_findings(facts: HostFacts) -> list[Finding]:
    return [f for f in diagnose(facts) if f.check == "certificates" and "memory" in f.message]


def test_key_the_running_gateway_lacks_is_a_problem_with_its_repair() -> None:
    facts = _healthy(memory_key_references=(STARTING_LACKS,), gateway_keys=GatewayKeys((GATEWAY_LACKS,)))
    [finding] = _key_findings(facts)
    assert finding.severity is Severity.PROBLEM and has_problems(diagnose(facts))
    # The gateway's own words (path, certificate, what is out of service); the repair on the fix line.
    assert finding.message.startswith(f"{SIGNING}: certificate 'corp-signing' keeps its private key only in")
    assert "this gateway was not given it" in finding.message
    assert "client policy 'out' of profile 'default' is out of service" in finding.message
    assert "tlsgw cert import" not in finding.message
    assert finding.fix.splitlines()[0] == reimport_hint("corp-signing")
    text = render_report(diagnose(facts))
    assert f"FAIL  certificates: {SIGNING}: certificate 'corp-signing'" in text
    assert "      fix: import it again with the same files: tlsgw cert import corp-signing CERTFILE" in text


def test_keys_the_running_gateway_holds_are_ok() -> None:
    facts = _healthy(memory_key_references=(STARTING_LACKS,), gateway_keys=GatewayKeys(()))
    assert _not_ok(diagnose(facts)) == []
    assert [f.severity for f in _key_findings(facts)] == [Severity.OK]
    assert _key_findings(_healthy(gateway_keys=GatewayKeys(()))) == []  # no such keys: not mentioned


def test_keys_a_gateway_starting_now_would_lack_are_a_warning_while_none_runs() -> None:
    facts = _healthy(memory_key_references=(STARTING_LACKS,), service=ServiceState.INACTIVE,
                     gateway_silent="/run/tlsgw/control.sock does not exist: is tlsgw running?")
    [finding] = _key_findings(facts)
    assert finding.severity is Severity.WARNING
    assert finding.message.startswith(f"{SIGNING}: certificate 'corp-signing'")
    assert "a gateway starting now would not have it" in finding.message
    assert finding.fix == f"start tlsgw, then {reimport_hint('corp-signing')}"


def test_silent_running_gateway_is_a_warning_naming_why() -> None:
    facts = _healthy(memory_key_references=(STARTING_LACKS,), service=ServiceState.ACTIVE,
                     gateway_silent="/run/tlsgw/control.sock: permission denied")
    [finding] = _key_findings(facts)
    assert finding.severity is Severity.WARNING and "permission denied" in finding.message and finding.fix


def test_repair_stays_in_the_message_when_the_file_names_another_certificate() -> None:
    """The running gateway's configuration may not be the file's (not reloaded yet): a
    path that points at another certificate in the file must not produce a wrong command."""
    other = dataclasses.replace(CONFIG, client_proxies=(dataclasses.replace(CONFIG.client_proxies[0],
                                                                            signing_certificate="new-ca"),))
    [finding] = _key_findings(_healthy(config=other, gateway_keys=GatewayKeys((GATEWAY_LACKS,))))
    assert finding.severity is Severity.PROBLEM
    assert finding.message.endswith(reimport_hint("corp-signing")) and "new-ca" not in finding.fix


def test_certificate_at_follows_the_paths_the_runtime_names() -> None:
    config = dataclasses.replace(CONFIG, server_proxies=(WEB1, dataclasses.replace(WEB2, certificates=("a", "b"))))
    assert certificate_at(config, SIGNING) == "corp-signing"
    assert certificate_at(config, "server_proxies[1].certificates[1]") == "b"
    assert certificate_at(config, "server_proxies[2].certificates[0]") is None
    assert certificate_at(config, "server_proxies[0].certificates[1]") is None
    assert certificate_at(config, "client_proxies[1].signing_certificate") is None
    assert certificate_at(config, "trust_stores[0]") is None
