"""The pure side of sysctl.py: which keys steering needs, and which keys are acceptable."""

from __future__ import annotations

import pytest

from netfilter.errors import NetfilterError
from netfilter.plan import steering
from netfilter.sysctl import BRIDGE_NF_CALL_IPTABLES, SysctlChange, SysctlState, read_sysctl, steering_sysctls
from tests.support.steering_samples import BRIDGE_MAC, one_segment


def test_steering_needs_bridge_nf_off_and_rp_filter_off_everywhere() -> None:
    settings = steering_sysctls(steering(one_segment(), BRIDGE_MAC))
    assert settings == (
        (BRIDGE_NF_CALL_IPTABLES, "0"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/br0/rp_filter", "0"),
        ("net/ipv4/conf/eth1/rp_filter", "0"),
        ("net/ipv4/conf/eth2/rp_filter", "0"),
    )


@pytest.mark.parametrize(
    "key",
    ["", "/net/ipv4/ip_forward", "net/../../etc/passwd", "net//ipv4", "net/./ipv4"],
    ids=["empty", "absolute", "parent", "empty-part", "dot"],
)
def test_key_outside_proc_sys_is_refused(key: str) -> None:
    with pytest.raises(NetfilterError) as caught:
        read_sysctl(key)
    assert caught.value.command == f"sysctl {key}"


def test_state_answers_previous_value_by_key() -> None:
    state = SysctlState(None, (SysctlChange("net/ipv4/conf/all/rp_filter", "2", "0"),))
    assert state.previous("net/ipv4/conf/all/rp_filter") == "2"
    assert state.previous("net/ipv4/conf/br0/rp_filter") is None
