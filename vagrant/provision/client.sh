#!/usr/bin/env bash
# The client VM of the tlsgw Vagrant lab: its lab address, the lab host names, trust in
# the servers' public root and in the gateway's signing CA (as an organisation deploys it
# to its clients), then the demo scenario (demo.sh).
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need CLIENT_ADDRESS LAB_MAC SERVERS GATEWAY_ADDRESS EXPECT

apt_install curl openssl ca-certificates
host_network "$LAB_MAC" "$CLIENT_ADDRESS"
wait_for_address "$(address_of "$CLIENT_ADDRESS")"

# The lab's host names, replacing those of an earlier run.
hosts=$(grep -v "# tlsgw-lab$" /etc/hosts || true)
{
    echo "$hosts"
    while IFS='=' read -r host address; do echo "$(address_of "$address") $host # tlsgw-lab"; done < <(servers)
} | write_file /etc/hosts 0644

first_server=$(servers | head -n 1 | cut -d= -f2)
fetch "http://$(address_of "$first_server")/lab-root.pem" /tmp/tlsgw-lab-public-root.crt
fetch "http://$(address_of "$GATEWAY_ADDRESS")/signing-ca.pem" /tmp/tlsgw-lab-signing-ca.crt
run install -m 0644 /tmp/tlsgw-lab-public-root.crt /tmp/tlsgw-lab-signing-ca.crt /usr/local/share/ca-certificates/
run update-ca-certificates

# Remembered, so `demo.sh` can be run again later without the Vagrantfile's environment.
printf '%s\n' "$EXPECT" | write_file /etc/tlsgw-lab.expect 0644
run bash "$LAB_DIR/provision/demo.sh"
