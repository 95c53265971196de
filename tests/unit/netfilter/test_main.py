"""`python -m netfilter show`, end to end from a YAML file (no kernel involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netfilter.__main__ import main
from netfilter.plan import steering
from netfilter.render_nft import render
from tests.support.steering_samples import BRIDGE_MAC, ONE_SEGMENT_YAML, one_segment


def test_show_prints_the_rendered_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tlsgw.yaml"
    config.write_text(ONE_SEGMENT_YAML)
    assert main(["show", "--config", str(config), "--bridge-mac", BRIDGE_MAC]) == 0
    assert capsys.readouterr().out == render(steering(one_segment(), BRIDGE_MAC))


def test_show_with_unreadable_config_fails_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "--config", str(tmp_path / "missing.yaml"), "--bridge-mac", BRIDGE_MAC]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tlsgw netfilter show: ")
