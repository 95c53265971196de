"""Who may do what through the control socket, from the caller's kernel credentials.

The socket is group-restricted (mode 0660, group `gateway.control.group`), so only
members of that group (and root) can connect at all. What a caller may then do follows
its groups as the kernel reports them for the connection (SO_PEERCRED, SO_PEERGROUPS;
they cannot be forged by the caller), in three roles as in the product:

    role      group            may
    admin     tlsgw-admin      everything: also bypass on|off, reloads that change a
                               locked policy, and handing private keys to the gateway
                               (`tlsgw cert import` with pki.persist_keys false)
    operator  tlsgw-operator   reload, and everything an auditor may
    auditor   tlsgw-auditor    status, stats, sessions, log (read only)

root (uid 0) is an administrator. A caller in several role groups has the highest role.

Locked policies: configuration is changed by editing the file (which only
administrators can write) and reloading. A reload by an operator that would change a
locked policy - its own settings, its removal, locking or unlocking it, or a change to
an object it uses (its client or server proxy, decryption policy, trust store) - is
refused with the path of every such change; an administrator's reload applies it. Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.model import ClientPolicy, GatewayConfig, ServerPolicy
from gateway.control.protocol import Command


class Role(enum.IntEnum):
    NONE = 0
    AUDITOR = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


ROLE_GROUPS: Mapping[Role, str] = {
    Role.ADMIN: "tlsgw-admin",
    Role.OPERATOR: "tlsgw-operator",
    Role.AUDITOR: "tlsgw-auditor",
}

REQUIRED_ROLE: Mapping[Command, Role] = {
    Command.STATUS: Role.AUDITOR,
    Command.STATS: Role.AUDITOR,
    Command.SESSIONS: Role.AUDITOR,
    Command.LOG: Role.AUDITOR,
    Command.RELOAD: Role.OPERATOR,
    Command.BYPASS: Role.ADMIN,
    Command.IMPORT_KEYS: Role.ADMIN,
}

# What the operator typed, where that is not `tlsgw COMMAND`.
COMMAND_WORDS: Mapping[Command, str] = {
    Command.IMPORT_KEYS: "tlsgw cert import` (handing keys to the gateway)",
}


@dataclass(frozen=True, slots=True)
class Peer:
    """The kernel's view of the process at the other end of a control connection."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @property
    def all_groups(self) -> frozenset[int]:
        return frozenset((self.gid, *self.groups))


def role_of(peer: Peer, group_ids: Mapping[str, int | None]) -> Role:
    """`group_ids`: role group name -> its gid on this host (None when the group does not exist)."""
    if peer.uid == 0:
        return Role.ADMIN
    mine = peer.all_groups
    for role in (Role.ADMIN, Role.OPERATOR, Role.AUDITOR):
        gid = group_ids.get(ROLE_GROUPS[role])
        if gid is not None and gid in mine:
            return role
    return Role.NONE


def denial(role: Role, command: Command) -> str | None:
    """Why `role` may not run `command`, or None when it may."""
    needed = REQUIRED_ROLE[command]
    if role >= needed:
        return None
    groups = " or ".join(ROLE_GROUPS[r] for r in Role if r >= needed and r in ROLE_GROUPS)
    mine = "no tlsgw role" if role is Role.NONE else f"role {role.label}"
    words = COMMAND_WORDS.get(command, f"tlsgw {command.value}`")
    return f"`{words} needs membership of {groups}; you have {mine}"


def locked_policy_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Every change between `old` and `new` that touches a policy locked in either."""
    changes: list[str] = []
    old_policies = _policies(old)
    new_policies = _policies(new)
    for key in sorted(set(old_policies) | set(new_policies)):
        before, after = old_policies.get(key), new_policies.get(key)
        if not ((before is not None and before.locked) or (after is not None and after.locked)):
            continue
        label = f"{key[1]} policy {key[2]!r} of profile {key[0]!r}"
        if after is None:
            changes.append(f"locked {label} removed")
        elif before is None:
            changes.append(f"locked {label} added")
        elif before != after:
            what = "unlocked" if not after.locked else "locked" if not before.locked else "changed"
            changes.append(f"locked {label} {what}")
        else:
            changes += [f"locked {label}: {item} changed" for item in _used_objects_changed(old, new, after)]
    return changes


_Key = tuple[str, str, str]


def _policies(config: GatewayConfig) -> dict[_Key, ClientPolicy | ServerPolicy]:
    found: dict[_Key, ClientPolicy | ServerPolicy] = {}
    for profile in config.profiles:
        for s in profile.server_policies:
            found[(profile.name, "server", s.name)] = s
        for c in profile.client_policies:
            found[(profile.name, "client", c.name)] = c
    return found


def _used_objects_changed(old: GatewayConfig, new: GatewayConfig, policy: ClientPolicy | ServerPolicy) -> list[str]:
    if isinstance(policy, ServerPolicy):
        pairs = [("server proxy", policy.server_proxy, "server_proxies")]
    else:
        pairs = [("client proxy", policy.client_proxy, "client_proxies"),
                 ("trust store", policy.trust_store, "trust_stores")]
        if policy.decryption_policy is not None:
            pairs.append(("decryption policy", policy.decryption_policy, "decryption_policies"))
    changed = []
    for kind, name, attribute in pairs:
        before = next((o for o in getattr(old, attribute) if o.name == name), None)
        after = next((o for o in getattr(new, attribute) if o.name == name), None)
        if before != after:
            changed.append(f"its {kind} {name!r}")
    if isinstance(policy, ClientPolicy) and policy.decryption_policy is not None:
        dpolicy = next((d for d in new.decryption_policies if d.name == policy.decryption_policy), None)
        for category in dpolicy.categories if dpolicy is not None else ():
            if old.categories.get(category) != new.categories.get(category):
                changed.append(f"category {category!r}")
    return changed
