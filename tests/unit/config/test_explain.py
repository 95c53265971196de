from __future__ import annotations

from pathlib import Path

from gateway.config.explain import explain
from gateway.config.load import load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tlsgw.yaml"


def test_explain_follows_segment_to_profile_to_policies() -> None:
    text = explain(load_config(str(EXAMPLE)))
    lines = text.splitlines()
    segment = next(i for i, line in enumerate(lines) if line.startswith("Segment lan-wan"))
    profile = next(i for i, line in enumerate(lines) if "Profile default" in line)
    server = next(i for i, line in enumerate(lines) if "Server policy web1-in" in line)
    client = next(i for i, line in enumerate(lines) if "Client policy out " in line)
    assert segment < profile < server < client
    assert "*.bank.example" in text and "8443-8445" in text and "10.0.5.7/32" in text
    assert "listener port 8443" in lines[segment]


def test_explain_names_unused_profiles_and_empty_gateway() -> None:
    text = explain(parse_config("profiles:\n  - name: spare\n"))
    assert "No segments" in text
    assert "Profiles not used by any segment: spare" in text
