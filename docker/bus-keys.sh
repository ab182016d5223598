#!/bin/sh
# The compose cluster's CURVE keys, made once into the `bus-keys` volume on the first `up`
# (never baked into an image). One pair per role of service, and the folders that grant
# roles: consoleauth admits proxy, compute and admin keys (and its own, role server, for
# its healthcheck's ping); the compute host admits consoleauth (server) and admin.
# One volume for this demo cluster: in production give each host only its own secret.
set -eu
K=/keys
if [ -f "$K/.done" ]; then echo "bus keys: already made"; exit 0; fi
for pair in consoleauth:server proxy:proxy compute:compute admin:admin; do
    name=${pair%%:*}; role=${pair##*:}
    rm -f "$K/$name.key" "$K/$name.key_secret"
    consolectl keys generate "$name" --dir "$K" --role "$role"
done
grant() {  # folder role name
    mkdir -p "$K/$1/$2" && cp "$K/$3.key" "$K/$1/$2/$3.key"
}
grant consoleauth-authorized proxy proxy
grant consoleauth-authorized compute compute
grant consoleauth-authorized admin admin
grant consoleauth-authorized server consoleauth
grant compute-authorized server consoleauth
grant compute-authorized admin admin
grant compute-authorized compute compute
chown -R 10001:10001 "$K"  # the services run as user console
touch "$K/.done"
echo "bus keys: made in $K"
