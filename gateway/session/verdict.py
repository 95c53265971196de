"""What to do once the upstream certificate has been judged: the client proxy's two block
settings applied to a verification result.

The rule that makes tlsgw safe to deploy: an upstream a browser would reject is never
laundered into a certificate the client trusts. It is either blocked, or forged under the
per-installation *untrusted* CA (keeping the upstream's own dates when it is expired), so
that the client shows the same failure it would have shown without tlsgw.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.config.model import ClientProxy
from gateway.pki.verify import VerifyFailure, VerifyResult

DATE_FAILURES = frozenset({VerifyFailure.EXPIRED, VerifyFailure.NOT_YET_VALID})


class UpstreamVerdictKind(enum.Enum):
    FORGE_TRUSTED = "forge with the signing CA"
    FORGE_UNTRUSTED = "forge with the untrusted CA"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class UpstreamVerdict:
    kind: UpstreamVerdictKind
    reason: str


def judge_upstream(proxy: ClientProxy, result: VerifyResult) -> UpstreamVerdict:
    if result.ok:
        return UpstreamVerdict(UpstreamVerdictKind.FORGE_TRUSTED, "upstream certificate valid")
    reason = describe_failure(result)
    if result.reason in DATE_FAILURES:
        blocked = proxy.block_expired_certificates
        setting = "block_expired_certificates"
    else:
        blocked = proxy.block_invalid_certificates
        setting = "block_invalid_certificates"
    if blocked:
        return UpstreamVerdict(UpstreamVerdictKind.BLOCK, f"{reason} ({setting} is on)")
    return UpstreamVerdict(UpstreamVerdictKind.FORGE_UNTRUSTED, f"{reason} (shown to the client as untrusted)")


def describe_failure(result: VerifyResult) -> str:
    label = result.reason.value if result.reason is not None else "invalid"
    return f"upstream certificate {label}: {result.detail}" if result.detail else f"upstream certificate {label}"
