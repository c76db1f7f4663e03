#!/bin/sh
# What ingressmesh needs on Debian/Ubuntu. Runs before every make target, so it must stay fast
# and idempotent: when everything is present it only asks dpkg and python3.
#   as root:     apt-get install whatever is missing, then check python3
#   as non-root: install nothing; check that python3 (>= 3.10, with venv) is there, which is
#                all the rootless targets (make unit) need
# The venv's pip comes from python3-venv (ensurepip + python3-pip-whl), so no python3-pip.
set -eu
PACKAGES="nftables conntrack iproute2 python3 python3-venv procps util-linux ipvsadm iptables"
# The swarm lab: one dockerd per node namespace (never in the root namespace), offline images
# from busybox-static and debootstrap.
PACKAGES="$PACKAGES docker.io busybox-static debootstrap"
# systemd-analyze verifies the unit files in the tests.
PACKAGES="$PACKAGES systemd"
# The L7 proxy's real-HAProxy tests and bench/l7.py (HAProxy 2.6, wrk as the load tool).
PACKAGES="$PACKAGES haproxy wrk openssl curl"
# The ACME tests: Debian's pebble (a test ACME server) and pebble-challtestsrv (its mock DNS).
PACKAGES="$PACKAGES pebble"

check_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not found: install it (as root: apt-get install python3 python3-venv, or sudo make $1)" >&2
        exit 1
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "python3 is $(python3 -c 'import platform; print(platform.python_version())'); ingressmesh needs" \
            "Python >= 3.10 (Debian 12 or Ubuntu 22.04 and later; Debian 11 and Ubuntu 20.04 are too old)" >&2
        exit 1
    fi
    # Debian/Ubuntu ship ensurepip in python3-venv; without it `python3 -m venv` fails.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "python3 cannot create a venv: install python3-venv (as root: apt-get install python3-venv," \
            "or sudo make $1)" >&2
        exit 1
    fi
}

goal="${1:-deps}"
if [ "$(id -u)" != 0 ]; then
    check_python "$goal"
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    for cmd in nft conntrack ip; do
        command -v "$cmd" >/dev/null 2>&1 ||
            { echo "no dpkg/apt-get and no $cmd: install the equivalents of: $PACKAGES" >&2; exit 1; }
    done
    check_python "$goal"
    exit 0
fi
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # docker.io's postinst would start a dockerd in the root namespace, which sets FORWARD to
    # DROP and breaks every bridge test after it: forbid service starts while installing.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# ingressmesh install-deps: no service starts during apt-get\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        guard=1
    fi
    trap 'if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
    # shellcheck disable=SC2086  # $missing is a list of words
    # Another apt-get or dpkg on the host (unattended-upgrades, a kernel lab installing QEMU):
    # wait for it, bounded, instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing ||
        { apt-get -o DPkg::Lock::Timeout=600 update -q &&
          apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing; }
    # We just installed docker.io for the lab: keep systemd from starting a root-namespace
    # dockerd at the next boot or on socket activation.  (An existing Docker is left alone.)
    case " $missing " in *" docker.io "*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now docker.service docker.socket 2>/dev/null || true
        fi;;
    esac
    # haproxy is for the L7 tests and benchmark (they start their own on loopback): Debian's
    # haproxy.service would listen on this host at the next boot.  (An existing one is left alone.)
    case " $missing " in *" haproxy "*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now haproxy.service 2>/dev/null || true
        fi;;
    esac
fi
check_python "$goal"
