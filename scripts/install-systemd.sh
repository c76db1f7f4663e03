#!/bin/sh
# Installs ingressmesh as systemd services on this machine (or under --prefix / $DESTDIR):
#   /opt/ingressmesh/venv             python3 -m venv + pip install of this repository
#   /usr/local/bin/ingressmesh        link to the venv's command (the units' ExecStart)
#   /etc/systemd/system/ingressmesh-{agent,controller}.service
#   /etc/default/ingressmesh-{agent,controller}   option templates, kept if present
#   /etc/ingressmesh/token            the token (0600), kept if present: the cluster secret, or on a
#                                     node that runs no controller its own credential (--token-file)
# then `systemctl daemon-reload` when systemd is running.  Idempotent.  Nothing is enabled or
# started: that is the operator's choice (agent on every node, controller on managers).
set -eu

usage() {
    cat <<USAGE
usage: $0 [--prefix DIR] [--venv DIR] [--token-file FILE]
  --prefix DIR      install under DIR instead of / (default: \$DESTDIR, else /)
  --venv DIR        use this existing venv (with bin/ingressmesh) instead of creating
                    /opt/ingressmesh/venv and pip-installing the repository into it
  --token-file FILE install this token if none is installed yet: the cluster secret (managers)
                    or the node's credential from \`ingressmesh token node\` (other nodes)
USAGE
}

ROOT="${DESTDIR:-}"
VENV=""
TOKEN_SRC=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { usage >&2; exit 2; }; ROOT="$2"; shift 2 ;;
        --prefix=*) ROOT="${1#--prefix=}"; shift ;;
        --venv) [ $# -ge 2 ] || { usage >&2; exit 2; }; VENV="$2"; shift 2 ;;
        --token-file) [ $# -ge 2 ] || { usage >&2; exit 2; }; TOKEN_SRC="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
ROOT="${ROOT%/}"  # "" means the real root
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    echo "installing into / needs root (or use --prefix DIR)" >&2
    exit 1
fi

say() { echo "install-systemd: $*"; }

# 1. the package, in its own venv
if [ -n "$VENV" ]; then
    [ -x "$VENV/bin/ingressmesh" ] || { echo "--venv $VENV: no executable $VENV/bin/ingressmesh" >&2; exit 1; }
    VENV="$(cd "$VENV" && pwd)"
    say "using the existing venv $VENV"
else
    VENV="$ROOT/opt/ingressmesh/venv"
    if [ ! -x "$VENV/bin/pip" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || { echo "$PYTHON is older than 3.10; ingressmesh needs Python >= 3.10" >&2; exit 1; }
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
        say "created $VENV"
    fi
    "$VENV/bin/pip" install -q --upgrade "$REPO"
    say "installed $REPO into $VENV"
fi
mkdir -p "$ROOT/usr/local/bin"
ln -sfn "$VENV/bin/ingressmesh" "$ROOT/usr/local/bin/ingressmesh"
say "$ROOT/usr/local/bin/ingressmesh -> $VENV/bin/ingressmesh"

# 2. the units (ours: replaced when they changed)
UNITS="$ROOT/etc/systemd/system"
mkdir -p "$UNITS"
for unit in ingressmesh-agent.service ingressmesh-controller.service; do
    if cmp -s "$REPO/systemd/$unit" "$UNITS/$unit"; then
        say "$UNITS/$unit unchanged"
    else
        install -m 0644 "$REPO/systemd/$unit" "$UNITS/$unit"
        say "installed $UNITS/$unit"
    fi
done

# 3. option templates (the operator's: never overwritten)
mkdir -p "$ROOT/etc/default"
write_default() {  # $1 = agent|controller, $2 = example options, $3 = what the token file holds, $4 = TLS example
    upper="$(echo "$1" | tr a-z A-Z)"
    file="$ROOT/etc/default/ingressmesh-$1"
    if [ -e "$file" ]; then
        say "$file kept"
        return
    fi
    cat > "$file" <<DEFAULTS
# Read by ingressmesh-$1.service (EnvironmentFile=); restart the service after editing.
# The token is read from /etc/ingressmesh/token (--token-file), mode 0600: $3
# Options for \`ingressmesh $1\` (see \`ingressmesh $1 --help\`), e.g.
#   INGRESSMESH_${upper}_OPTS="$2"
# With TLS (the token then never crosses the network in clear text; README: "Security of the
# controller API"):
#   INGRESSMESH_${upper}_OPTS="$4"
INGRESSMESH_${upper}_OPTS=""
DEFAULTS
    chmod 0644 "$file"
    say "wrote $file"
}
write_default agent "--controller http://<manager-1>:9401 --controller http://<manager-2>:9401" \
    "this node's own credential (\`ingressmesh token node --node-id <id>\` on a manager), or the cluster secret." \
    "--controller https://<manager-1>:9401 --controller https://<manager-2>:9401 --ca /etc/ingressmesh/tls/ca.pem"
write_default controller "--listen 0.0.0.0:9401" \
    "the cluster secret, the same on every manager." \
    "--listen 0.0.0.0:9401 --tls-cert /etc/ingressmesh/tls/controller.pem --tls-key /etc/ingressmesh/tls/controller.key"

# 4. the token (a secret: 0600, never overwritten)
TOKEN="$ROOT/etc/ingressmesh/token"
mkdir -p "$ROOT/etc/ingressmesh"
chmod 0700 "$ROOT/etc/ingressmesh"
if [ -e "$TOKEN" ]; then
    say "$TOKEN kept"
elif [ -n "$TOKEN_SRC" ]; then
    (umask 077 && tr -d ' \t\r\n' < "$TOKEN_SRC" > "$TOKEN" && echo >> "$TOKEN")
    say "installed $TOKEN from $TOKEN_SRC"
else
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$TOKEN")
    say "generated $TOKEN (the cluster secret): copy it to every manager; give every other node its own credential (ingressmesh token node --node-id ID, then --token-file)"
fi
chmod 0600 "$TOKEN"

# 5. tell systemd, if it is there
if [ -n "$ROOT" ]; then
    say "installed under $ROOT: not reloading systemd"
elif [ ! -d /run/systemd/system ]; then
    say "systemd is not running on this machine: files installed, nothing reloaded or started"
else
    systemctl daemon-reload
    say "systemd reloaded; enable with: systemctl enable --now ingressmesh-agent (and ingressmesh-controller on managers)"
fi
