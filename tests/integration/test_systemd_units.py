"""The systemd units (issue 6): `systemd-analyze verify`, the sysusers and tmpfiles
snippets applied to a scratch root, and what the issue asks of the service unit.

Not namespace tests: they need systemd's tools, not root.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).parents[2] / "systemd"
UNITS = ("tlsgw.service", "tlsgw-bypass.service")


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="needs systemd-analyze (Debian package systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart binaries exist: point /usr/bin/tlsgw at this checkout's.
    tlsgw = Path(sys.executable).with_name("tlsgw")
    if not tlsgw.exists():
        pytest.skip(f"{tlsgw} is not installed (pip install -e .)")
    for unit in UNITS:
        (tmp_path / unit).write_text((SYSTEMD_DIR / unit).read_text().replace("/usr/bin/tlsgw", str(tlsgw)))
    done = subprocess.run(["systemd-analyze", "verify", *UNITS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="needs systemd-sysusers")
def test_sysusers_creates_the_role_groups(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD_DIR / "tlsgw.sysusers.conf")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    groups = {line.split(":")[0] for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    assert groups == {"tlsgw", "tlsgw-admin", "tlsgw-operator", "tlsgw-auditor"}


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="needs systemd-tmpfiles")
def test_tmpfiles_creates_the_directories(tmp_path: Path) -> None:
    done = subprocess.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}",
                           str(SYSTEMD_DIR / "tlsgw.tmpfiles.conf")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pki = tmp_path / "var" / "lib" / "tlsgw" / "pki"
    assert pki.is_dir() and (pki.stat().st_mode & 0o777) == 0o700


def test_service_is_what_the_issue_asks() -> None:
    unit = settings("tlsgw.service")
    assert unit["Type"] == ["notify"] and unit["Restart"] == ["on-failure"]
    assert unit["WatchdogSec"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["PrivateTmp"] == ["yes"] and unit["ProtectHome"] == ["yes"]
    assert unit["ExecStopPost"] == ["-/usr/bin/tlsgw cleanup --config /etc/tlsgw/tlsgw.yaml"]
    assert {"RuntimeDirectory", "StateDirectory", "LogsDirectory"} <= set(unit)


def test_every_capability_says_why() -> None:
    text = (SYSTEMD_DIR / "tlsgw.service").read_text()
    capabilities = settings("tlsgw.service")["CapabilityBoundingSet"][0].split()
    assert capabilities and "CAP_SYS_ADMIN" not in capabilities
    for capability in capabilities:
        assert f"#   {capability}" in text, f"{capability} has no comment saying why it is needed"


def test_stop_timeout_leaves_room_for_the_drain() -> None:
    """systemd must not SIGKILL tlsgw in the middle of a default drain: the drain, then the
    worker processes' stop grace, with room left for removing the rules."""
    from gateway.config.model import DEFAULT_DRAIN_TIMEOUT
    from gateway.workers.pool import STOP_GRACE

    value = settings("tlsgw.service")["TimeoutStopSec"]
    assert len(value) == 1 and value[0].endswith("s") and value[0][:-1].isdigit(), value
    assert int(value[0][:-1]) >= DEFAULT_DRAIN_TIMEOUT + STOP_GRACE + 10
    assert "drain_timeout" in (SYSTEMD_DIR / "tlsgw.service").read_text().split("TimeoutStopSec=")[0]
