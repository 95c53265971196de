"""The block settings of a client proxy applied to upstream verification results: an
invalid upstream is blocked or shown untrusted, never forged as trusted."""

from __future__ import annotations

import pytest

from gateway.config.model import ClientProxy, PortRange
from gateway.pki.verify import VerifyFailure, VerifyResult
from gateway.session.verdict import UpstreamVerdictKind, judge_upstream

FORGE_TRUSTED, FORGE_UNTRUSTED, BLOCK = (UpstreamVerdictKind.FORGE_TRUSTED, UpstreamVerdictKind.FORGE_UNTRUSTED,
                                         UpstreamVerdictKind.BLOCK)


def proxy(block_invalid: bool, block_expired: bool) -> ClientProxy:
    return ClientProxy("p", "ca", (PortRange(443, 443),), block_invalid_certificates=block_invalid,
                       block_expired_certificates=block_expired)


def failed(reason: VerifyFailure) -> VerifyResult:
    return VerifyResult(ok=False, reason=reason, detail="because")


CASES = [
    ("valid-forged-trusted", True, True, VerifyResult(ok=True, reason=None, detail=""), FORGE_TRUSTED),
    ("valid-forged-trusted-even-lenient", False, False, VerifyResult(ok=True, reason=None, detail=""), FORGE_TRUSTED),
    ("expired-blocked", True, True, failed(VerifyFailure.EXPIRED), BLOCK),
    ("expired-untrusted-when-expired-allowed", True, False, failed(VerifyFailure.EXPIRED), FORGE_UNTRUSTED),
    ("not-yet-valid-follows-expired-setting", False, True, failed(VerifyFailure.NOT_YET_VALID), BLOCK),
    ("untrusted-blocked", True, False, failed(VerifyFailure.UNTRUSTED), BLOCK),
    ("hostname-untrusted-when-invalid-allowed", False, True, failed(VerifyFailure.HOSTNAME_MISMATCH), FORGE_UNTRUSTED),
    ("weak-key-blocked", True, True, failed(VerifyFailure.WEAK_KEY), BLOCK),
    ("no-certificate-untrusted-when-allowed", False, False, failed(VerifyFailure.NO_CERTIFICATE), FORGE_UNTRUSTED),
]


@pytest.mark.parametrize(("block_invalid", "block_expired", "result", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_judge_upstream(block_invalid: bool, block_expired: bool, result: VerifyResult,
                        expected: UpstreamVerdictKind) -> None:
    assert judge_upstream(proxy(block_invalid, block_expired), result).kind is expected


def test_block_reason_names_the_setting_and_the_failure() -> None:
    verdict = judge_upstream(proxy(True, True), failed(VerifyFailure.EXPIRED))
    assert "block_expired_certificates" in verdict.reason and "expired" in verdict.reason
