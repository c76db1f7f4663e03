#!/bin/sh
# Install what ingressmesh needs on Debian/Ubuntu (as root); does nothing when all is present.
set -eu
PACKAGES="nftables conntrack iproute2 python3 python3-venv python3-pip procps util-linux"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q $missing || { apt-get update -q && apt-get install -y -q $missing; }
fi
