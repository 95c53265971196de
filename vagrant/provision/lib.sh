# shellcheck shell=bash
# Shared by the provisioning scripts of the Vagrant lab (sourced, never run).
#
# The topology comes from the environment, which the Vagrantfile fills from topology.yaml
# (rendered from the namespace lab's constants); `need VAR` stops with a clear message
# when one is missing. With DRY_RUN=1 every command that would change the machine is
# printed ("+ ...") instead of run, and files are printed instead of written: the test
# suite runs the scripts that way (tests/integration/test_vagrant_lab.py).
set -euo pipefail

# shellcheck disable=SC2034  # used by the scripts that source this file
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)     # vagrant/
# shellcheck disable=SC2034  # used by the scripts that source this file
PROJECT_DIR=$(cd "$LAB_DIR/.." && pwd)                         # the synced tlsgw checkout
DRY_RUN=${DRY_RUN:-0}
# The VMs reach each other only once all three are up (libvirt starts them in parallel):
# wait this long for a peer before giving up.
PEER_WAIT_S=${PEER_WAIT_S:-900}

say() { echo "[tlsgw-lab $(hostname -s 2>/dev/null || echo host)] $*"; }
die() { say "error: $*" >&2; exit 1; }
dry() { [ "$DRY_RUN" = 1 ]; }
run() { if dry; then echo "+ $*"; else "$@"; fi; }
need() { local name; for name in "$@"; do [ -n "${!name:-}" ] || die "$name is not set (the Vagrantfile sets it from topology.yaml)"; done; }
address_of() { echo "${1%/*}"; }                                 # 192.0.2.2/24 -> 192.0.2.2

write_file() {  # PATH MODE, content on stdin
    if dry; then
        echo "+ write $1 (mode $2)"
        sed 's/^/|  /'
    else
        install -D -m "$2" /dev/stdin "$1"
    fi
}

apt_install() {
    if dry; then echo "+ apt-get install $*"; return; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

iface_by_mac() {  # MAC -> the interface that has it (interface names differ between providers)
    local mac=${1,,}
    if dry; then echo "lab${mac//:/}" | cut -c1-15; return; fi
    local name
    name=$(ip -o link show | awk -v mac="$mac" '$0 ~ "link/ether " mac { sub(/:$/, "", $2); sub(/@.*/, "", $2); print $2; exit }')
    [ -n "$name" ] || die "no interface with MAC $mac (check the Vagrantfile's MACS)"
    echo "$name"
}

host_network() {  # MAC ADDRESS...: a systemd-networkd file giving the lab NIC its addresses
    local mac=$1 address
    shift
    {
        echo "# tlsgw Vagrant lab: the lab network interface"
        printf '[Match]\nMACAddress=%s\n\n[Network]\n' "$mac"
        for address in "$@"; do echo "Address=$address"; done
        printf 'LinkLocalAddressing=no\nIPv6AcceptRA=no\n'
    } | write_file /etc/systemd/network/10-tlsgw-lab.network 0644
    run systemctl enable --now systemd-networkd
    run networkctl reload
}

wait_for_address() {  # ADDRESS: until an interface of this machine has it
    dry && { echo "+ wait for $1"; return; }
    local deadline=$((SECONDS + 120))
    until ip -o -4 address show | grep -q " inet $1/"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$1 did not come up"
        sleep 1
    done
}

fetch() {  # URL FILE: download, waiting for the peer VM to be provisioned
    dry && { echo "+ fetch $1 -> $2"; return; }
    local deadline=$((SECONDS + PEER_WAIT_S))
    say "waiting for $1"
    until curl -fsS --max-time 5 -o "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "$1 did not answer within ${PEER_WAIT_S}s (is its VM up?)"
        sleep 5
    done
}

servers() {  # each "HOST=ADDRESS/PREFIX" of $SERVERS on its own line
    tr ' ' '\n' <<< "$SERVERS" | sed '/^$/d'
}
