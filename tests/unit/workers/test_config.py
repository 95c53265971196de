from __future__ import annotations

import pytest

from gateway.config.explain import explain
from gateway.config.load import parse_config
from gateway.errors import ConfigError


@pytest.mark.parametrize(("text", "expected"), [
    ("", 1), ("workers: auto", "auto"), ("workers: 1", 1), ("workers: 8", 8), ("workers: 64", 64),
], ids=["default", "auto", "one", "eight", "maximum"])
def test_workers_setting_is_read(text: str, expected: int | str) -> None:
    config = parse_config(f"gateway:\n  bridge: br0\n  {text}\n")
    assert config.gateway.workers == expected


@pytest.mark.parametrize("value", ["0", "65", "two", "true", "1.5", "-1"],
                         ids=["zero", "above-64", "word", "boolean", "fraction", "negative"])
def test_bad_workers_setting_names_the_field(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"gateway:\n  workers: {value}\n")
    assert [issue.path for issue in caught.value.issues] == ["gateway.workers"]


@pytest.mark.parametrize(("value", "phrase"), [
    ("1", "served by the main process"), ("auto", "one per usable CPU"), ("4", "served by 4 worker processes"),
], ids=["one", "auto", "four"])
def test_explain_says_who_serves(value: str, phrase: str) -> None:
    assert phrase in explain(parse_config(f"gateway:\n  workers: {value}\n"))
