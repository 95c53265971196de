from __future__ import annotations

import pytest

from gateway.config import names

ACCEPTED_NAMES = [
    (names.CLIENT_PROXY, "outbound"),
    (names.CLIENT_PROXY, "Out bound_2-b"),
    (names.CLIENT_PROXY, "x" * 128),
    (names.TRUST_STORE, "x" * 64),
    (names.CERTIFICATE, "cert 34"),
    (names.CERTIFICATE, "ca2"),
]

REJECTED_NAMES = [
    (names.CLIENT_PROXY, ""),
    (names.CLIENT_PROXY, "x" * 129),
    (names.TRUST_STORE, "x" * 65),
    (names.CLIENT_PROXY, "out.bound"),
    (names.CLIENT_PROXY, "outbound!"),
    (names.CLIENT_PROXY, "café"),
    (names.CLIENT_PROXY, " outbound"),
    (names.CLIENT_PROXY, "outbound "),
    (names.CERTIFICATE, "ca"),
    (names.CERTIFICATE, "CA"),
]


@pytest.mark.parametrize(("rule", "name"), ACCEPTED_NAMES, ids=[f"{r.kind}:{n[:12]}" for r, n in ACCEPTED_NAMES])
def test_name_rule_accepts_product_names(rule: names.NameRule, name: str) -> None:
    assert rule.problem(name) is None


@pytest.mark.parametrize(("rule", "name"), REJECTED_NAMES, ids=[f"{r.kind}:{n[:12]!r}" for r, n in REJECTED_NAMES])
def test_name_rule_rejects_with_the_kind_named(rule: names.NameRule, name: str) -> None:
    problem = rule.problem(name)
    assert problem is not None and rule.kind in problem


def test_description_limit_is_512_characters() -> None:
    assert names.description_problem("d" * 512) is None
    assert names.description_problem("d" * 513) is not None


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("example.com", True),
        ("*.example.com", True),
        ("a-b.c_d.example", True),
        ("localhost", True),
        ("x" * 63 + ".example", True),
        ("x" * 64 + ".example", False),
        ("*", False),
        ("*.", False),
        ("*example.com", False),
        ("www.*.example.com", False),
        ("*.*.example.com", False),
        ("-a.example", False),
        ("a-.example", False),
        ("a..example", False),
        (".example", False),
        ("bücher.example", False),
        ("a b.example", False),
        (".".join(["abcdefghi"] * 26), False),  # 259 characters
    ],
)
def test_domain_pattern(pattern: str, ok: bool) -> None:
    assert (names.domain_pattern_problem(pattern) is None) is ok


def test_normalise_host_name_lowercases_and_drops_one_trailing_dot() -> None:
    assert names.normalise_host_name("WWW.Example.COM.") == "www.example.com"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("eth0", True),
        ("br-lan.100", True),
        ("x" * 15, True),
        ("x" * 16, False),
        ("", False),
        ("eth/0", False),
        ("eth:0", False),
        ("eth 0", False),
        ("..", False),
    ],
)
def test_interface_name(name: str, ok: bool) -> None:
    assert (names.interface_name_problem(name) is None) is ok
