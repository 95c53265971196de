"""Configuration of the running service (issue 6): fail mode, control socket, metrics."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from gateway.config.load import parse_config
from gateway.config.model import DEFAULT_BYPASS_FILE, DEFAULT_CONTROL_SOCKET, FailMode, MetricsSettings
from gateway.errors import ConfigError


def test_defaults_fail_open_with_control_and_no_metrics() -> None:
    gw = parse_config("{}").gateway
    assert gw.fail_mode is FailMode.OPEN
    assert gw.control.socket == DEFAULT_CONTROL_SOCKET and gw.control.group == "tlsgw"
    assert gw.control.bypass_file == DEFAULT_BYPASS_FILE
    assert gw.metrics is None


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:9600", MetricsSettings(IPv4Address("127.0.0.1"), 9600)),
    ("192.0.2.2:9598", MetricsSettings(IPv4Address("192.0.2.2"), 9598)),
    (9599, MetricsSettings(IPv4Address("127.0.0.1"), 9599)),
    (":9597", MetricsSettings(IPv4Address("127.0.0.1"), 9597)),
], ids=["loopback", "explicit-address", "port-only", "colon-port"])
def test_metrics_listen(listen: object, expected: MetricsSettings) -> None:
    text = f"gateway: {{metrics: {{listen: {listen!r}}}}}" if isinstance(listen, str) else \
        f"gateway: {{metrics: {{listen: {listen}}}}}"
    assert parse_config(text).gateway.metrics == expected


@pytest.mark.parametrize(("text", "path"), [
    ("gateway: {fail_mode: shut}", "gateway.fail_mode"),
    ("gateway: {metrics: {listen: 'localhost:9598'}}", "gateway.metrics.listen"),
    ("gateway: {metrics: {listen: '127.0.0.1:70000'}}", "gateway.metrics.listen"),
    ("gateway: {metrics: {listen: '127.0.0.1:x'}}", "gateway.metrics.listen"),
    ("gateway: {metrics: {}}", "gateway.metrics.listen"),
    ("gateway: {control: {socket: run/control.sock}}", "gateway.control.socket"),
    ("gateway: {control: {group: 'Tls Gw'}}", "gateway.control.group"),
    ("gateway: {control: {bypass_file: bypass}}", "gateway.control.bypass_file"),
    ("gateway: {control: {port: 1}}", "gateway.control.port"),
], ids=["fail-mode", "host-name", "port-range", "port-text", "no-listen", "relative-socket", "group-name",
        "relative-bypass-file", "unknown-key"])
def test_bad_settings_name_their_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert [i.path for i in caught.value.issues] == [path]
