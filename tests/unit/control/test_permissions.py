"""Who may do what (issue 6): roles from the caller's kernel credentials, and locked
policies changeable only by administrators."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config.model import ClientPolicy, ClientProxy, GatewayConfig, InspectionProfile, PortRange, ServerPolicy
from gateway.control.permissions import (
    REQUIRED_ROLE,
    Peer,
    Role,
    denial,
    locked_policy_changes,
    role_of,
)
from gateway.control.protocol import Command

GROUPS = {"tlsgw-admin": 900, "tlsgw-operator": 901, "tlsgw-auditor": 902}


@pytest.mark.parametrize(("peer", "role"), [
    (Peer(1, 0, 0), Role.ADMIN),
    (Peer(1, 1000, 1000, (900,)), Role.ADMIN),
    (Peer(1, 1000, 901), Role.OPERATOR),
    (Peer(1, 1000, 1000, (5, 902)), Role.AUDITOR),
    (Peer(1, 1000, 1000, (902, 901)), Role.OPERATOR),
    (Peer(1, 1000, 1000, (5, 6)), Role.NONE),
], ids=["root", "admin-group", "operator-primary-group", "auditor", "highest-of-two", "no-role"])
def test_role_follows_groups(peer: Peer, role: Role) -> None:
    assert role_of(peer, GROUPS) is role


def test_missing_role_group_grants_nothing() -> None:
    assert role_of(Peer(1, 1000, 1000, (900,)), {"tlsgw-admin": None}) is Role.NONE


TABLE = [
    (Role.AUDITOR, Command.STATUS, True), (Role.AUDITOR, Command.LOG, True),
    (Role.AUDITOR, Command.RELOAD, False), (Role.AUDITOR, Command.BYPASS, False),
    (Role.OPERATOR, Command.SESSIONS, True), (Role.OPERATOR, Command.RELOAD, True),
    (Role.OPERATOR, Command.BYPASS, False),
    (Role.ADMIN, Command.BYPASS, True), (Role.ADMIN, Command.RELOAD, True),
    (Role.NONE, Command.STATUS, False),
    (Role.ADMIN, Command.IMPORT_KEYS, True), (Role.OPERATOR, Command.IMPORT_KEYS, False),
]


@pytest.mark.parametrize(("role", "command", "allowed"), TABLE,
                         ids=[f"{r.label}-{c.value}" for r, c, _ in TABLE])
def test_what_each_role_may_do(role: Role, command: Command, allowed: bool) -> None:
    assert (denial(role, command) is None) is allowed


def test_every_command_has_a_required_role() -> None:
    assert set(REQUIRED_ROLE) == set(Command)


def test_denial_names_the_groups_that_would_do() -> None:
    text = denial(Role.AUDITOR, Command.RELOAD) or ""
    assert "tlsgw-operator or tlsgw-admin" in text and "role auditor" in text
    assert text.startswith("`tlsgw reload` needs")


def test_denial_of_a_key_import_names_the_command_the_operator_typed() -> None:
    text = denial(Role.OPERATOR, Command.IMPORT_KEYS) or ""
    assert text.startswith("`tlsgw cert import` (handing keys to the gateway) needs membership of tlsgw-admin")


OUT = ClientProxy("outbound", "corp", (PortRange(443, 443),))


def _config(*, locked: bool = True, enabled: bool = True, proxy: ClientProxy = OUT,
            extra: tuple[ClientPolicy, ...] = ()) -> GatewayConfig:
    policy = ClientPolicy("out", "outbound", "default", locked=locked, enabled=enabled)
    return GatewayConfig(client_proxies=(proxy,),
                         profiles=(InspectionProfile("default", client_policies=(policy, *extra)),))


@pytest.mark.parametrize(("old", "new", "expected"), [
    (_config(), _config(), []),
    (_config(), _config(enabled=False), ["locked client policy 'out' of profile 'default' changed"]),
    (_config(), _config(locked=False), ["locked client policy 'out' of profile 'default' unlocked"]),
    (_config(locked=False), _config(locked=True), ["locked client policy 'out' of profile 'default' locked"]),
    (_config(), dataclasses.replace(_config(), profiles=(InspectionProfile("default"),)),
     ["locked client policy 'out' of profile 'default' removed"]),
    (_config(), _config(proxy=dataclasses.replace(OUT, min_key_length=1024)),
     ["locked client policy 'out' of profile 'default': its client proxy 'outbound' changed"]),
    (_config(locked=False), _config(locked=False, enabled=False), []),
    (_config(), _config(extra=(ClientPolicy("more", "outbound", "default"),)), []),
], ids=["same", "disabled", "unlocked", "newly-locked", "removed", "its-proxy-changed", "unlocked-policy-free",
        "other-policy-added"])
def test_locked_policy_changes(old: GatewayConfig, new: GatewayConfig, expected: list[str]) -> None:
    assert locked_policy_changes(old, new) == expected


def test_locked_server_policy_is_guarded_too() -> None:
    old = GatewayConfig(profiles=(InspectionProfile("p", server_policies=(ServerPolicy("in", "web", locked=True),)),))
    new = GatewayConfig(profiles=(InspectionProfile("p", server_policies=(
        ServerPolicy("in", "web", locked=True, enabled=False),)),))
    assert locked_policy_changes(old, new) == ["locked server policy 'in' of profile 'p' changed"]
