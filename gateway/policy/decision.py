"""The vocabulary of outcomes, in the product's logged words, and the decision value the
engine returns. A decision names the policy that took it so the log can say why."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    DECRYPTED = "decrypted"
    DECRYPTED_NOT_INSPECTED = "decrypted but not inspected"
    NOT_DECRYPTED = "not decrypted"
    BYPASSED = "bypassed"
    BLOCKED = "blocked"


class Action(enum.Enum):
    """What the proxy does next with the flow."""

    DECRYPT_CLIENT = "decrypt-client"
    """Client inspection: validate upstream, forge a leaf, decrypt both sides."""
    DECRYPT_SERVER = "decrypt-server"
    """Server inspection: terminate with the organisation's own certificate."""
    SPLICE = "splice"
    """Relay the bytes untouched (not decrypted, or bypassed)."""
    BLOCK = "block"


class PolicyKind(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    outcome: Outcome
    reason: str
    profile: str | None = None
    policy: str | None = None
    policy_kind: PolicyKind | None = None
    proxy: str | None = None
    """The client or server proxy whose settings apply."""
    trust_store: str | None = None
    """For client policies: the trust store upstream certificates are validated against."""
    decryption_policy: str | None = None
    """Set when domain exemptions could not be checked for lack of SNI: the proxy then
    checks the upstream certificate's names against this policy before decrypting."""
