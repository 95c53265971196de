#!/usr/bin/env bash
# The server VM of the tlsgw Vagrant lab: nginx with one HTTPS virtual host per lab site
# (shop.example, www.bank.example), each on its own address as in the namespace lab, with
# certificates from a "public" root CA made here. The root certificate (never its key)
# is published on http://<first site address>/lab-root.pem for the gateway's trust store
# and the client. Each page tells the client which address the server saw.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need SERVERS LAB_MAC PUBLIC_ROOT_CN PKI_ORG

PKI=/etc/tlsgw-lab
apt_install nginx-light openssl ca-certificates curl

addresses=()
while IFS='=' read -r _ address; do addresses+=("$address"); done < <(servers)
host_network "$LAB_MAC" "${addresses[@]}"
for address in "${addresses[@]}"; do wait_for_address "$(address_of "$address")"; done

run mkdir -p "$PKI"
if dry || [ ! -e "$PKI/root.pem" ]; then
    run openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/O=$PKI_ORG/CN=$PUBLIC_ROOT_CN" -keyout "$PKI/root.key" -out "$PKI/root.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

{
    echo "# tlsgw Vagrant lab: the HTTPS sites behind the gateway"
    while IFS='=' read -r host address; do
        ip=$(address_of "$address")
        if dry || [ ! -e "$PKI/$host.pem" ]; then
            run openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=$PKI_ORG/CN=$host" \
                -keyout "$PKI/$host.key" -out "$PKI/$host.csr" >&2
            run openssl x509 -req -in "$PKI/$host.csr" -CA "$PKI/root.pem" -CAkey "$PKI/root.key" \
                -CAcreateserial -days 397 -out "$PKI/$host.pem" \
                -extfile <(printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$host") >&2
        fi
        printf 'server {\n    listen %s:443 ssl;\n    server_name %s;\n' "$ip" "$host"
        printf '    ssl_certificate %s/%s.pem;\n    ssl_certificate_key %s/%s.key;\n' "$PKI" "$host" "$PKI" "$host"
        printf '    location / {\n        default_type text/plain;\n'
        # shellcheck disable=SC2016  # $remote_addr is nginx's variable
        printf '        return 200 "hello from %s, you are $remote_addr\\n";\n    }\n}\n' "$host"
    done < <(servers)
    printf 'server {\n    listen %s:80;\n    location = /lab-root.pem {\n        alias %s/root.pem;\n    }\n}\n' \
        "$(address_of "${addresses[0]}")" "$PKI"
} | write_file /etc/nginx/conf.d/tlsgw-lab.conf 0644

run rm -f /etc/nginx/sites-enabled/default
run nginx -t
run systemctl enable nginx
run systemctl restart nginx
say "server ready: $(servers | tr '\n' ' ')"
