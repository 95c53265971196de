from __future__ import annotations

from pathlib import Path

import pytest

from gateway.appliance.errors import ApplianceError
from gateway.appliance.generated_files import Change, remove_generated, write_generated
from gateway.appliance.networkd import GENERATED_HEADER, BridgeLayout, ifupdown_mentions, parse_layout, render_networkd
from gateway.cli import main

GOLDEN = Path(__file__).parent / "golden"

LAYOUTS: dict[str, BridgeLayout] = {
    "plain": parse_layout("br0", "eth1,eth2"),
    "managed": parse_layout("br0", "eth1,eth2", "192.0.2.2/24", "192.0.2.1", stp=True),
    "four-ports": parse_layout("brwire", "enp1s0, enp2s0,enp3s0,enp4s0", "10.20.0.5/16"),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS), ids=sorted(LAYOUTS))
def test_networkd_files_match_golden(name: str, update_golden: bool) -> None:
    files = render_networkd(LAYOUTS[name])
    directory = GOLDEN / name
    if update_golden:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for file_name, text in files.items():
            (directory / file_name).write_text(text)
        return
    assert directory.is_dir(), f"{directory} is missing; run pytest with --update-golden"
    assert {p.name: p.read_text() for p in directory.iterdir()} == files


def test_ports_carry_no_address_and_are_enslaved() -> None:
    ports = render_networkd(LAYOUTS["managed"])["10-tlsgw-br0-ports.network"]
    assert "Name=eth1 eth2\n" in ports and "Bridge=br0\n" in ports
    assert "LinkLocalAddressing=no\n" in ports and "DHCP=no\n" in ports and "Address=" not in ports


def test_stp_choice_and_management_address_land_in_their_files() -> None:
    managed = render_networkd(LAYOUTS["managed"])
    assert "STP=yes\n" in managed["10-tlsgw-br0.netdev"]
    assert "Address=192.0.2.2/24\nGateway=192.0.2.1\n" in managed["10-tlsgw-br0.network"]
    plain = render_networkd(LAYOUTS["plain"])
    assert "STP=no\n" in plain["10-tlsgw-br0.netdev"] and "Address=" not in plain["10-tlsgw-br0.network"]


def test_every_file_starts_with_the_generated_header() -> None:
    for files in map(render_networkd, LAYOUTS.values()):
        assert all(text.startswith(GENERATED_HEADER + "\n") for text in files.values())


BAD_LAYOUTS = [
    (("br0", "eth1"), "at least two", "one-port"),
    (("br0", "eth1,eth1"), "named twice", "same-port-twice"),
    (("br0", "br0,eth1"), "also named as a port", "bridge-as-port"),
    (("br0", "eth1,averyveryverylongname"), "1..15 characters", "name-too-long"),
    (("br0", "eth1,eth 2"), "refuses", "space-in-name"),
    (("br0", "eth1,eth2", "192.0.2.2"), "prefix length", "address-without-prefix"),
    (("br0", "eth1,eth2", "192.0.2.300/24"), "not an IPv4 address", "address-invalid"),
    (("br0", "eth1,eth2", "192.0.2.2/24", "198.51.100.1"), "outside", "gateway-off-subnet"),
    (("br0", "eth1,eth2", None, "192.0.2.1"), "needs --address", "gateway-without-address"),
]


@pytest.mark.parametrize(("words", "expected"), [(w, e) for w, e, _ in BAD_LAYOUTS], ids=[i for *_, i in BAD_LAYOUTS])
def test_bad_layout_is_refused_naming_the_option(words: tuple[str | None, ...], expected: str) -> None:
    with pytest.raises(ApplianceError) as caught:
        parse_layout(*words)  # type: ignore[arg-type]
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("auto lo\niface lo inet loopback\n", []),
     ("allow-hotplug eth1\niface eth1 inet dhcp\n", ["eth1"]),
     ("auto eth0 eth2 # uplinks\n", ["eth2"]),
     ("# iface eth1 inet dhcp\n", []),
     ("iface br0 inet static\n  bridge_ports eth1 eth2\n", ["br0"])],
    ids=["loopback-only", "dhcp-port", "auto-list", "commented", "ifupdown-bridge"],
)
def test_ifupdown_mentions_finds_ports_it_manages(text: str, expected: list[str]) -> None:
    assert ifupdown_mentions(text, ("eth1", "eth2", "br0")) == expected


def test_write_is_idempotent_and_replaces_own_files(tmp_path: Path) -> None:
    first = write_generated(tmp_path, render_networkd(LAYOUTS["plain"]))
    assert {c.change for c in first} == {Change.CREATED}
    assert {c.change for c in write_generated(tmp_path, render_networkd(LAYOUTS["plain"]))} == {Change.UNCHANGED}
    again = write_generated(tmp_path, render_networkd(LAYOUTS["managed"]))
    assert sorted(c.change.value for c in again) == ["replaced", "replaced", "unchanged"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in tmp_path.iterdir())


def test_foreign_file_is_not_overwritten_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "10-tlsgw-br0.network").write_text("[Match]\nName=br0\n")
    with pytest.raises(ApplianceError) as caught:
        write_generated(tmp_path, render_networkd(LAYOUTS["plain"]))
    assert "10-tlsgw-br0.network" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["10-tlsgw-br0.network"]
    write_generated(tmp_path, render_networkd(LAYOUTS["plain"]), force=True)
    assert (tmp_path / "10-tlsgw-br0.network").read_text().startswith(GENERATED_HEADER)


def test_remove_deletes_only_generated_files(tmp_path: Path) -> None:
    write_generated(tmp_path, render_networkd(LAYOUTS["plain"]))
    (tmp_path / "10-tlsgw-mine.network").write_text("[Match]\nName=eth9\n")
    (tmp_path / "20-wired.network").write_text("[Match]\nName=eth0\n")
    removed = remove_generated(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10-tlsgw-mine.network", "20-wired.network"]
    assert remove_generated(tmp_path / "absent") == []


def test_cli_init_then_deinit_under_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text("allow-hotplug eth2\niface eth2 inet dhcp\n")
    assert main(["appliance", "init", "--ports", "eth1,eth2", "--address", "192.0.2.2/24", "--stp", "on",
                 "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "etc/systemd/network").iterdir())
    assert written == ["10-tlsgw-br0-ports.network", "10-tlsgw-br0.netdev", "10-tlsgw-br0.network"]
    assert "networkctl reload" in out and "ifupdown" in err and "eth2" in err
    assert main(["appliance", "deinit", "--root", str(tmp_path)]) == 0
    assert list((tmp_path / "etc/systemd/network").iterdir()) == []


def test_cli_init_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["appliance", "init", "--ports", "eth1,eth2", "--root", str(tmp_path), "--dry-run"]) == 0
    assert "would be created" in capsys.readouterr().out
    assert not (tmp_path / "etc").exists()


def test_cli_refuses_bad_ports_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["appliance", "init", "--ports", "eth1", "--root", str(tmp_path)]) == 1
    assert "--ports" in capsys.readouterr().err
