#!/usr/bin/env bash
# The demo scenario, as seen by a client: fetch each lab site through the gateway and say
# whether it was decrypted (the certificate comes from the gateway's signing CA) or
# exempted (the server's own certificate), as the topology expects. Exit 0 only when
# every site matches and the client trusted what it was shown.
#
#   EXPECT="shop.example=Signing CA;www.bank.example=Public Root" demo.sh
#
# Runs on the client VM (client.sh, or `vagrant ssh client -c 'sudo /vagrant/vagrant/provision/demo.sh'`)
# and, in the test suite, in the namespace lab's client namespace against a real tlsgw.
set -euo pipefail
# client.sh remembers the Vagrantfile's EXPECT here, for runs by hand.
EXPECT=${EXPECT:-$(cat /etc/tlsgw-lab.expect 2>/dev/null || true)}
: "${EXPECT:?EXPECT is not set: host=issuer words;host=issuer words}"
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# A bound for each fetch, so a lab that is not up fails instead of hanging.
FETCH_TIMEOUT_S=15

ok=1
IFS=';' read -ra expectations <<< "$EXPECT"
for expectation in "${expectations[@]}"; do
    host=${expectation%%=*}
    expected=${expectation#*=}
    body=$(curl -sS --max-time "$FETCH_TIMEOUT_S" --cacert "$CA_BUNDLE" "https://$host/" 2>&1) && fetched=1 || fetched=0
    handshake=$(timeout "$FETCH_TIMEOUT_S" openssl s_client -connect "$host:443" -servername "$host" \
        -CAfile "$CA_BUNDLE" -verify_hostname "$host" < /dev/null 2>/dev/null || true)
    issuer=$(openssl x509 -noout -issuer <<< "$handshake" 2>/dev/null | sed 's/^issuer=//' || true)
    verified=$(grep -q "Verify return code: 0 (ok)" <<< "$handshake" && echo yes || echo no)
    case $expected in *"Signing CA"*) what="decrypted by tlsgw" ;; *) what="exempted (not decrypted)" ;; esac
    echo "https://$host/ - expected: $what"
    echo "    certificate issuer : ${issuer:-none}"
    echo "    client trusted it  : $verified"
    echo "    page               : $(head -n 1 <<< "$body")"
    if [ "$fetched" -eq 1 ] && [ "$verified" = yes ] && [[ $issuer == *"$expected"* ]]; then
        echo "    result             : as expected"
    else
        echo "    result             : NOT as expected (wanted an issuer containing \"$expected\")"
        ok=0
    fi
done
if [ "$ok" -eq 1 ]; then
    echo "demo OK: ${#expectations[@]} sites, each decrypted or exempted as the policy says"
else
    echo "demo FAILED"
    exit 1
fi
