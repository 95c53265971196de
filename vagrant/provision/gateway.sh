#!/usr/bin/env bash
# The gateway VM of the tlsgw Vagrant lab: tlsgw installed from the synced checkout with
# the appliance install script, its two lab NICs bridged by `tlsgw appliance init`
# (systemd-networkd), the demo scenario's configuration (rendered from the namespace lab's
# base_config), a signing CA, the servers' public root in the trust store, and the
# systemd unit enabled. The signing CA's certificate (never its key) is published on
# http://<gateway address>/signing-ca.pem for the client to trust.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need LAB_BRIDGE GATEWAY_ADDRESS CLIENT_PORT_MAC SERVER_PORT_MAC SERVERS PUBLIC_ROOT_NAME SIGNING_CA_NAME \
    SIGNING_CA_CN PKI_ORG

TLSGW=/usr/bin/tlsgw
client_port=$(iface_by_mac "$CLIENT_PORT_MAC")
server_port=$(iface_by_mac "$SERVER_PORT_MAC")
say "bridge $LAB_BRIDGE: client port $client_port, server port $server_port"

run "$PROJECT_DIR/scripts/install-appliance.sh"
run "$TLSGW" appliance init --ports "$client_port,$server_port" --bridge "$LAB_BRIDGE" \
    --address "$GATEWAY_ADDRESS" --stp off
run systemctl enable --now systemd-networkd
run networkctl reload
wait_for_address "$(address_of "$GATEWAY_ADDRESS")"

first_server=$(servers | head -n 1 | cut -d= -f2)
fetch "http://$(address_of "$first_server")/lab-root.pem" /tmp/lab-root.pem
if dry || ! "$TLSGW" cert list | grep -q "^$PUBLIC_ROOT_NAME:"; then
    run "$TLSGW" cert import-ca "$PUBLIC_ROOT_NAME" /tmp/lab-root.pem
fi
if dry || ! "$TLSGW" cert list | grep -q "^$SIGNING_CA_NAME:"; then
    run "$TLSGW" cert create-signing "$SIGNING_CA_NAME" --cn "$SIGNING_CA_CN" -O "$PKI_ORG"
fi

if dry; then
    echo "+ python -m gateway.appliance.lab_topology config --client-port $client_port --server-port $server_port > /etc/tlsgw/tlsgw.yaml"
else
    /opt/tlsgw/bin/python -m gateway.appliance.lab_topology config --client-port "$client_port" \
        --server-port "$server_port" | write_file /etc/tlsgw/tlsgw.yaml 0640
fi
run "$TLSGW" check-config /etc/tlsgw/tlsgw.yaml
run systemctl enable tlsgw.service
run systemctl restart tlsgw.service

# The client fetches the signing CA from here; port 80 is not a detection port, and the
# address is the gateway's own, so this traffic is never steered.
run mkdir -p /srv/tlsgw-lab
if dry; then
    echo "+ tlsgw cert export $SIGNING_CA_NAME > /srv/tlsgw-lab/signing-ca.pem"
else
    "$TLSGW" cert export "$SIGNING_CA_NAME" | write_file /srv/tlsgw-lab/signing-ca.pem 0644
fi
run systemctl stop tlsgw-lab-ca.service 2>/dev/null || true
run systemd-run --unit=tlsgw-lab-ca --property=Restart=always /usr/bin/python3 -m http.server 80 \
    --bind "$(address_of "$GATEWAY_ADDRESS")" --directory /srv/tlsgw-lab
run "$TLSGW" doctor || say "tlsgw doctor found problems (above)"
say "gateway ready"
