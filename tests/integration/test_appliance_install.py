"""Issue 9: scripts/install-appliance.sh and scripts/uninstall-appliance.sh, run for real
against a temporary root (`--root DIR`): the files, links, units, groups, directories
with their owners and modes, the sample configuration, and an uninstall that leaves the
root exactly as it was.

The wheel is built by the script itself from setup.cfg (pip fetches setuptools and
wheel for the isolated build, from PyPI or pip's cache). Dependencies are not installed
(`--pip-arg --no-deps`, so no network is needed for them); the installed command is run
with this checkout's virtualenv on PYTHONPATH for its dependencies, while tlsgw's own
code comes from the installed wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from gateway.appliance.networkd import GENERATED_HEADER

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install-appliance.sh"
UNINSTALL = REPO / "scripts" / "uninstall-appliance.sh"
# Installing builds a wheel and a virtualenv: bounded, not asserted.
SCRIPT_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the scripts chown and create groups")


def _skeleton(root: Path) -> None:
    """The little of a Debian system the scripts touch, including things that are not theirs."""
    for directory in ("etc/systemd/network", "etc/systemd/system", "usr/bin", "usr/share/doc/tlsgw", "var/lib",
                      "var/log", "run", "opt"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name in ("group", "group-"):
        (root / "etc" / name).write_text("root:x:0:\n")
    for name in ("gshadow", "gshadow-"):
        (root / "etc" / name).write_text("root:*::\n")
    (root / "etc/.pwd.lock").write_text("")
    (root / "etc/systemd/network/20-wired.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")
    (root / "etc/systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")
    (root / "usr/share/doc/tlsgw/README.md").write_text("an older README, not the installer's\n")


def _tree(root: Path) -> dict[str, str]:
    """Every path below root -> what it is (content hash, link target, mode)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.endswith("-") or relative == "etc/.pwd.lock":
            continue  # shadow-utils' backup copies are expected to change
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[relative] = f"-> {os.readlink(path)}"
        elif stat.S_ISDIR(info.st_mode):
            found[relative] = f"dir {oct(info.st_mode & 0o7777)}"
        else:
            found[relative] = f"{oct(info.st_mode & 0o7777)} {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    return found


def _run(script: Path, *args: str) -> str:
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _installed_tlsgw(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    # cwd outside the checkout, or `import gateway` could find this source tree instead
    return subprocess.run([str(root / "opt/tlsgw/bin/tlsgw"), *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=60, check=False)


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o7777)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by the install script's own build step (from setup.cfg)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the scripts chown and create groups")
    dist = tmp_path_factory.mktemp("dist")
    out = _run(INSTALL, "--build-only", str(dist), "--python", sys.executable)
    (built,) = dist.glob("tlsgw-*.whl")
    assert str(built) in out
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
    assert {"gateway/appliance/doctor.py", "netfilter/iptc_worker.py", "gateway/cli.py"} <= names
    return built


def _install(root: Path, wheel: Path) -> str:
    return _run(INSTALL, "--root", str(root), "--no-apt", "--wheel", str(wheel), "--pip-arg", "--no-deps",
                "--python", sys.executable)


def test_install_then_uninstall_leaves_the_root_as_it_was(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    _skeleton(root)
    before = _tree(root)

    _install(root, wheel)

    # the package, from the wheel, and the command the units call
    assert os.readlink(root / "usr/bin/tlsgw") == "/opt/tlsgw/bin/tlsgw"
    version = _installed_tlsgw(root, "--version")
    assert version.returncode == 0 and version.stdout.startswith("tlsgw "), version.stderr
    imported = subprocess.run([str(root / "opt/tlsgw/bin/python"), "-c", "import gateway; print(gateway.__file__)"],
                              capture_output=True, text=True, cwd=root, check=True)
    assert imported.stdout.startswith(str(root / "opt/tlsgw/lib")), "tlsgw must run from the installed wheel"
    # units, groups, directories, configuration
    for unit in (REPO / "systemd").glob("*.service"):
        assert (root / "etc/systemd/system" / unit.name).read_bytes() == unit.read_bytes()
    if (REPO / "systemd/tlsgw.sysusers.conf").exists():
        assert "\ntlsgw:x:" in (root / "etc/group").read_text()
    assert _mode(root / "var/lib/tlsgw") == "0o750" and _mode(root / "var/lib/tlsgw/pki") == "0o700"
    assert _mode(root / "etc/tlsgw") == "0o750" and _mode(root / "var/log/tlsgw") == "0o750"
    assert (root / "var/lib/tlsgw/pki").stat().st_uid == 0
    config = root / "etc/tlsgw/tlsgw.yaml"
    assert config.read_bytes() == (REPO / "examples/tlsgw.yaml").read_bytes() and _mode(config) == "0o640"
    assert (root / "usr/share/doc/tlsgw/README.md").read_bytes() == (REPO / "README.md").read_bytes()

    # a second run upgrades in place and keeps an edited configuration
    config.write_text(config.read_text() + "# edited\n")
    manifest = (root / "opt/tlsgw/install-manifest").read_text()
    _install(root, wheel)
    assert config.read_text().endswith("# edited\n")
    assert (root / "opt/tlsgw/install-manifest").read_text() == manifest

    # the installed command writes the bridge's networkd files
    init = _installed_tlsgw(root, "appliance", "init", "--ports", "eth1,eth2", "--address", "192.0.2.2/24",
                            "--root", str(root))
    assert init.returncode == 0, init.stderr
    assert len(list((root / "etc/systemd/network").glob("10-tlsgw-*"))) == 3

    # without --purge: configuration, store and logs stay, and are listed
    out = _run(UNINSTALL, "--root", str(root))
    assert config.exists() and (root / "var/lib/tlsgw/pki").is_dir()
    assert "/etc/tlsgw/tlsgw.yaml" in out and "/var/lib/tlsgw" in out
    assert not (root / "opt/tlsgw").exists() and not (root / "usr/bin/tlsgw").exists()
    assert not list((root / "etc/systemd/network").glob("10-tlsgw-*"))
    assert (root / "etc/systemd/network/20-wired.network").exists()
    assert (root / "usr/share/doc/tlsgw/README.md").read_text() == "an older README, not the installer's\n"

    # installed again, the kept files belong to the installation again: --purge removes
    # them, and nothing of tlsgw is left while everything else is untouched
    _install(root, wheel)
    assert config.read_text().endswith("# edited\n")
    _run(UNINSTALL, "--root", str(root), "--purge")
    assert _tree(root) == before


def test_purge_after_a_plain_uninstall_removes_what_it_kept(tmp_path: Path) -> None:
    """What an uninstall without --purge leaves: the kept state and its list."""
    _skeleton(tmp_path)
    before = _tree(tmp_path)
    (tmp_path / "etc/tlsgw").mkdir()
    (tmp_path / "etc/tlsgw/tlsgw.yaml").write_text("gateway: {}\n")
    (tmp_path / "var/lib/tlsgw/pki/corp").mkdir(parents=True)
    (tmp_path / "etc/group").write_text("root:x:0:\ntlsgw:x:999:\n")
    (tmp_path / "var/lib/tlsgw/install-manifest.kept").write_text(
        "group tlsgw\nstate /etc/tlsgw\nstate /var/lib/tlsgw\nstate /var/lib/tlsgw/pki\nstate /etc/tlsgw/tlsgw.yaml\n")
    _run(UNINSTALL, "--root", str(tmp_path), "--purge")
    assert _tree(tmp_path) == before


def test_uninstall_without_an_installation_changes_nothing(tmp_path: Path) -> None:
    _skeleton(tmp_path)
    before = _tree(tmp_path)
    assert "was not installed" in _run(UNINSTALL, "--root", str(tmp_path), "--purge")
    assert _tree(tmp_path) == before


def test_uninstall_knows_the_generated_networkd_header() -> None:
    """The shell script recognises generated files by the same first line Python writes."""
    assert f"GENERATED_HEADER='{GENERATED_HEADER}'" in UNINSTALL.read_text()
    assert shutil.which("bash")
