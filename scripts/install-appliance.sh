#!/usr/bin/env bash
# Install tlsgw on a Debian or Ubuntu bridge appliance, from this source tree (as root).
#
#   scripts/install-appliance.sh [--enable]                 install onto this host
#   scripts/install-appliance.sh --root DIR --no-apt ...    install below DIR (tests, images)
#   scripts/install-appliance.sh --build-only DIR           only build the wheel into DIR
#
# What it does, each step idempotent (running it again upgrades in place):
#   1. system packages with apt-get (python3, python3-venv, nftables, iptables, iproute2,
#      ca-certificates, systemd for systemd-networkd);
#   2. a virtualenv at /opt/tlsgw holding the wheel built from setup.cfg (or --wheel) and
#      its dependencies from PyPI (or where --pip-arg points pip, e.g. a wheelhouse);
#   3. /usr/bin/tlsgw -> /opt/tlsgw/bin/tlsgw (the units call /usr/bin/tlsgw);
#   4. the systemd units of systemd/ in /etc/systemd/system, its sysusers and tmpfiles
#      files in /etc/sysusers.d and /etc/tmpfiles.d; the groups and the directories they
#      name, with their owners and modes (systemd-sysusers, systemd-tmpfiles);
#   5. /etc/tlsgw/tlsgw.yaml from examples/tlsgw.yaml, unless one exists (never replaced);
#   6. README and example under /usr/share/doc/tlsgw;
#   7. systemctl daemon-reload, and with --enable `systemctl enable --now tlsgw`.
# Everything it creates is listed in /opt/tlsgw/install-manifest, which
# scripts/uninstall-appliance.sh follows to put the host back as it was.
# The bridge itself is set up by `tlsgw appliance init --ports eth1,eth2` (printed at the end).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
WHEEL=""
APT=1
ENABLE=0
PYTHON=python3
PIP_ARGS=()
BUILD_ONLY=""
PACKAGES=(python3 python3-venv nftables iptables iproute2 ca-certificates systemd)
HEADER_DOC="installed by scripts/install-appliance.sh"

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    echo "options: --root DIR  --wheel FILE  --no-apt  --pip-arg ARG (repeatable)  --python PYTHON  --enable" >&2
    echo "         --build-only DIR" >&2
    exit "${1:-2}"
}
die() { echo "install-appliance: $*" >&2; exit 1; }
say() { echo "install-appliance: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=${2:?}; shift 2 ;;
        --wheel) WHEEL=${2:?}; shift 2 ;;
        --no-apt) APT=0; shift ;;
        --pip-arg) PIP_ARGS+=("${2:?}"); shift 2 ;;
        --python) PYTHON=${2:?}; shift 2 ;;
        --enable) ENABLE=1; shift ;;
        --build-only) BUILD_ONLY=${2:?}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) usage 2 ;;
    esac
done

build_wheel() {  # PYTHON DIR: the wheel of this source tree, from setup.cfg, into DIR; prints its path
    local src
    src=$(mktemp -d)
    # Built from a copy, so a read-only or shared source tree (Vagrant's /vagrant) gets no build/ dir.
    cp -r "$SRC/setup.cfg" "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/gateway" "$SRC/netfilter" "$src/"
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    "$1" -m pip wheel -q --disable-pip-version-check --no-deps -w "$2" "$src" >&2
    rm -rf "$src"
    find "$2" -maxdepth 1 -name 'tlsgw-*.whl' | sort | tail -n 1
}

if [ -n "$BUILD_ONLY" ]; then
    mkdir -p "$BUILD_ONLY"
    wheel=$(build_wheel "$PYTHON" "$BUILD_ONLY")
    [ -n "$wheel" ] || die "the wheel was not built"
    say "built $wheel"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, units and groups)"
case $ROOT in /*) ;; *) die "--root needs an absolute path" ;; esac
ROOT=${ROOT%/}            # "" means this host
[ -z "$WHEEL" ] || WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")

at() { printf '%s%s' "$ROOT" "$1"; }          # a path of the target system, seen from here
live() { [ -z "$ROOT" ]; }                     # installing onto the running system
with_systemd() { live && [ -d /run/systemd/system ]; }

VENV=/opt/tlsgw
MANIFEST=$VENV/install-manifest
KEPT=/var/lib/tlsgw/install-manifest.kept   # written by uninstall-appliance.sh without --purge
recorded() { grep -qxF "$1 $2" "$(at "$MANIFEST")" 2>/dev/null; }
record() {  # KIND PATH: remember what this installation created, once
    recorded "$1" "$2" || printf '%s %s\n' "$1" "$2" >> "$(at "$MANIFEST")"
}
make_dir() {  # PATH: create it (and its missing parents), remembering the ones created
    local missing=() dir=$1
    while [ "$dir" != / ] && [ ! -e "$(at "$dir")" ]; do
        missing=("$dir" "${missing[@]}")
        dir=$(dirname "$dir")
    done
    for dir in "${missing[@]}"; do
        mkdir "$(at "$dir")"
        record dir "$dir"
    done
}

# --- 1. system packages --------------------------------------------------------------
if [ "$APT" -eq 1 ] && live; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    say "skipping apt-get (--no-apt or --root); needed: ${PACKAGES[*]}"
fi

# --- 2. the virtualenv and the wheel ---------------------------------------------------
if [ ! -d "$(at "$VENV")" ]; then
    mkdir -p "$(at "$VENV")"
    touch "$(at "$MANIFEST")"
    record dir "$VENV"
fi
# What an earlier uninstall kept (configuration, store, groups) is this installation's again,
# so a later `uninstall --purge` removes it.
if [ -f "$(at "$KEPT")" ]; then
    while read -r kind path; do record "$kind" "$path"; done < "$(at "$KEPT")"
    rm -f "$(at "$KEPT")"
fi
if [ ! -x "$(at "$VENV")/bin/python" ]; then
    say "creating the virtualenv $VENV"
    "$PYTHON" -m venv "$(at "$VENV")"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$WHEEL" ]; then
    say "building the wheel from $SRC"
    WHEEL=$(build_wheel "$(at "$VENV")/bin/python" "$work/dist")
    [ -n "$WHEEL" ] || die "the wheel was not built"
fi
say "installing $(basename "$WHEEL") into $VENV"
"$(at "$VENV")/bin/python" -m pip install -q --disable-pip-version-check "${PIP_ARGS[@]}" "$WHEEL"
# Same version number, new files (a rebuilt checkout): replace the package itself.
"$(at "$VENV")/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WHEEL"

# --- 3. the command ----------------------------------------------------------------------
link=/usr/bin/tlsgw
if [ -L "$(at "$link")" ] || [ ! -e "$(at "$link")" ]; then
    make_dir /usr/bin
    ln -sfn "$VENV/bin/tlsgw" "$(at "$link")"
    record link "$link"
else
    say "warning: $link exists and is not a link; the units call it, so check what it is"
fi

# --- 4. units, groups, directories -------------------------------------------------------
install_file() {  # SOURCE TARGET MODE
    local target
    target=$(at "$2")
    if [ -e "$target" ] && ! recorded file "$2"; then
        cmp -s "$1" "$target" && return 0        # someone else's identical copy: leave it theirs
        cp -p "$target" "$target.pre-tlsgw"      # put back by the uninstall script
        record backup "$2"
    fi
    make_dir "$(dirname "$2")"
    install -m "$3" "$1" "$target"
    record file "$2"
}
units=0
for unit in "$SRC"/systemd/*.service "$SRC"/systemd/*.socket "$SRC"/systemd/*.timer; do
    [ -e "$unit" ] || continue
    install_file "$unit" "/etc/systemd/system/$(basename "$unit")" 0644
    units=$((units + 1))
done
[ "$units" -gt 0 ] || say "warning: no systemd units in $SRC/systemd"

sysusers=/etc/sysusers.d/tlsgw.conf
if [ -e "$SRC/systemd/tlsgw.sysusers.conf" ]; then
    install_file "$SRC/systemd/tlsgw.sysusers.conf" "$sysusers" 0644
    while read -r kind name _; do
        [ "$kind" = g ] || [ "$kind" = u ] || continue
        grep -q "^$name:" "$(at /etc/group)" 2>/dev/null || record group "$name"
    done < "$(at "$sysusers")"
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers --root="${ROOT:-/}" "$(at "$sysusers")" >/dev/null
    else
        say "warning: systemd-sysusers missing; create the groups of $sysusers by hand"
    fi
fi

tmpfiles=/etc/tmpfiles.d/tlsgw.conf
if [ -e "$SRC/systemd/tlsgw.tmpfiles.conf" ]; then
    install_file "$SRC/systemd/tlsgw.tmpfiles.conf" "$tmpfiles" 0644
    dirs_conf=$(at "$tmpfiles")
else
    # The units' RuntimeDirectory= and friends would create these; hosts running tlsgw by hand need them too.
    dirs_conf=$work/tlsgw.tmpfiles.conf
    printf '%s\n' "d /etc/tlsgw 0750 root root -" "d /var/lib/tlsgw 0750 root root -" \
        "d /var/lib/tlsgw/pki 0700 root root -" "d /var/log/tlsgw 0750 root root -" \
        "d /run/tlsgw 0755 root root -" > "$dirs_conf"
fi
# Configuration, keys and logs are "state": the uninstall script keeps them unless --purge.
while read -r kind path _; do
    if [ "$kind" != d ] || [ -e "$(at "$path")" ]; then continue; fi
    case $path in /run/*) record dir "$path" ;; *) record state "$path" ;; esac
done < "$dirs_conf"
if command -v systemd-tmpfiles >/dev/null; then
    systemd-tmpfiles --create --root="${ROOT:-/}" "$dirs_conf"
else
    while read -r kind path mode owner group _; do
        [ "$kind" = d ] || continue
        install -d -m "$mode" -o "$owner" -g "$group" "$(at "$path")"
    done < "$dirs_conf"
fi

# --- 5. configuration -----------------------------------------------------------------------
config=/etc/tlsgw/tlsgw.yaml
if [ -e "$(at "$config")" ]; then
    say "keeping the existing $config"
else
    make_dir "$(dirname "$config")"
    install -m 0640 "$SRC/examples/tlsgw.yaml" "$(at "$config")"
    record state "$config"
    say "installed the sample configuration $config: edit it before starting tlsgw"
fi

# --- 6. documentation -------------------------------------------------------------------------
install_file "$SRC/README.md" /usr/share/doc/tlsgw/README.md 0644
install_file "$SRC/examples/tlsgw.yaml" /usr/share/doc/tlsgw/examples/tlsgw.yaml 0644
echo "# $HEADER_DOC from $SRC on $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$(at "$VENV")/installed-from"

# --- 7. systemd ---------------------------------------------------------------------------------
if with_systemd; then
    systemctl daemon-reload
    if [ "$ENABLE" -eq 1 ]; then
        systemctl enable --now tlsgw.service
        say "tlsgw.service enabled and started"
    fi
elif [ "$ENABLE" -eq 1 ]; then
    say "warning: --enable ignored: systemd is not running here (or --root was given)"
fi

say "done: $("$(at "$VENV")/bin/python" -c 'import gateway; print("tlsgw", gateway.__version__)')"
cat <<EOF
next steps:
  tlsgw appliance init --ports eth1,eth2 --address 192.0.2.2/24   # the bridge, via systemd-networkd
  tlsgw cert create-signing corp-signing --cn "Example Corp TLS inspection"
  edit $config (bridge, segments, proxies), then: tlsgw check-config && tlsgw doctor
  systemctl enable --now tlsgw
EOF
