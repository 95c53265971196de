#!/usr/bin/env bash
# Set up tlsgw on a fresh Debian machine (as root) and run the demo or the test suite.
#   ./bootstrap.sh demo   - install, then build a namespace lab and show interception
#   ./bootstrap.sh test   - install, then run the whole test suite (what CI runs)
# System packages come from apt-get, Python packages from this project's setup.cfg,
# into a virtualenv at .venv (nothing is installed into the system Python).
set -euo pipefail
cd "$(dirname "$0")"

# What tlsgw and its lab need from Debian:
#   nftables, iproute2      steering rules, namespaces, bridge, policy routing
#   iptables                legacy-iptables backend (python-iptables needs libxtables)
#   nginx-light             the lab's HTTPS origin servers
#   curl, openssl           the lab's TLS clients (and the tests' peers); `openssl s_time`
#                           is the handshake load of tests/bench/bench_gateway.py
#   wrk                     keep-alive HTTPS load generator of tests/bench/bench_gateway.py
#   python3-venv            the virtualenv; ca-certificates: Mozilla's bundle (default CA package)
#   vagrant, shellcheck     `vagrant validate` of vagrant/Vagrantfile and shellcheck of the
#                           provisioning and install scripts (tests/integration/test_vagrant_lab.py);
#                           no VM is ever started here. Both install in about 20 s.
PACKAGES=(python3 python3-venv nftables iptables iproute2 nginx-light curl openssl wrk ca-certificates procps
          vagrant shellcheck)

usage() { echo "usage: $0 demo|test [pytest args...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
mode=$1; shift

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap.sh: run as root (it installs packages and creates network namespaces)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts nginx on installation; the lab runs its own instances in namespaces.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.tlsgw-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi

case "$mode" in
    demo) exec .venv/bin/tlsgw demo "$@" ;;
    test) exec .venv/bin/python -m pytest -q -ra "$@" ;;
    *) usage ;;
esac
