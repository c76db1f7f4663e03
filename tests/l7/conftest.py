"""Real HAProxy on loopback, driven by the proxy's applier, with real HTTP backends.

Needs Debian's `haproxy` (installed by `make test`).  Without it the tests skip, unless
INGRESSMESH_REQUIRE_KERNEL=1 (make test / CI): then they fail, so CI cannot pass without them.
"""
from __future__ import annotations

import os
import shutil

import pytest

from ingressmesh.l7.applier import RouteApplier
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles
from ingressmesh.l7.render import ProxySettings
from l7_backends import Backends, free_ports
from pki import Pki


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        if os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
            pytest.fail("haproxy is not installed (make test installs it)")
        pytest.skip("haproxy is not installed")
    return found


@pytest.fixture
def backends():
    running = Backends()
    yield running
    running.close()


@pytest.fixture
def proxy(tmp_path, haproxy_binary):
    """An applier driving a real haproxy on a free loopback port; stopped at the end."""
    http_port, stats_port = free_ports(2)
    settings = ProxySettings(http_port=http_port, bind_address="127.0.0.1", stats_port=stats_port,
                             admin_socket=str(tmp_path / "admin.sock"), proxy_id="test-proxy")
    haproxy = HAProxy(HAProxyFiles(str(tmp_path)), binary=haproxy_binary)
    applier = RouteApplier(haproxy, settings)
    yield applier
    haproxy.kill()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A test CA (and the leaf certificates the tests ask it for)."""
    return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def tls_proxy(tmp_path, haproxy_binary):
    """`proxy` with an HTTPS port and a secrets directory (tmp_path/secrets, as /run/secrets)."""
    http_port, https_port, stats_port = free_ports(3)
    settings = ProxySettings(http_port=http_port, https_port=https_port, bind_address="127.0.0.1",
                             stats_port=stats_port, admin_socket=str(tmp_path / "admin.sock"),
                             proxy_id="test-proxy", secrets_dir=str(tmp_path / "secrets"))
    haproxy = HAProxy(HAProxyFiles(str(tmp_path)), binary=haproxy_binary)
    applier = RouteApplier(haproxy, settings)
    yield applier
    haproxy.kill()
