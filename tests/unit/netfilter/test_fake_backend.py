from __future__ import annotations

import errno

import pytest

from netfilter.backend import Backend
from netfilter.errors import NetfilterError
from netfilter.fake_backend import FakeBackend
from netfilter.model import Family, Ruleset, Table
from tests.support.backend_contract import BAD, OURS, check_backend, tables_in


def test_fake_backend_meets_backend_contract() -> None:
    fake = FakeBackend()
    check_backend(lambda: fake)


def test_fake_backend_is_a_backend() -> None:
    backend: Backend = FakeBackend()
    assert backend.dump() == ""


def test_fake_records_applied_and_removed_rulesets() -> None:
    fake = FakeBackend()
    fake.apply(OURS)
    fake.remove(OURS)
    assert fake.applied == [OURS]
    assert fake.removed == [OURS]


def test_fake_refuses_kernel_only_error_at_apply_but_not_check() -> None:
    fake = FakeBackend()
    fake.check(BAD)  # like `nft -c`, which does not see this
    with pytest.raises(NetfilterError) as caught:
        fake.apply(BAD)
    assert caught.value.errno == errno.EOPNOTSUPP
    assert fake.applied == []


def test_fake_refuses_invalid_ruleset_everywhere() -> None:
    fake = FakeBackend()
    bad = Ruleset(tables=(Table(Family.IP, "not valid"),))
    for operation in (fake.check, fake.apply, fake.remove):
        with pytest.raises(NetfilterError):
            operation(bad)
    assert fake.dump() == ""


def test_replaced_table_moves_to_the_end_like_nft() -> None:
    fake = FakeBackend()
    first = Ruleset(tables=(Table(Family.IP, "a"), Table(Family.IP, "b")))
    fake.apply(first)
    fake.apply(Ruleset(tables=(Table(Family.IP, "a"),)))
    assert list(tables_in(fake.dump())) == ["ip b", "ip a"]
