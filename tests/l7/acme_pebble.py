"""Debian's pebble (a test ACME server) and pebble-challtestsrv (its mock DNS) on loopback,
for the ACME tests; and a publisher that puts the issuer's labels into the stand-in
controller's snapshot, the path every proxy replica follows."""
from __future__ import annotations

import copy
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest

from ingressmesh.l7.acme_swarm import ProxyLabelPublisher
from l7_backends import free_ports

PROXY_SERVICE = "proxy"  # the proxies' own service (--proxy-service): the issuer's labels count only there


def binaries() -> tuple[str, str]:
    found = shutil.which("pebble"), shutil.which("pebble-challtestsrv")
    if None in found:
        if os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
            pytest.fail("pebble is not installed (make test installs it: Debian's pebble package)")
        pytest.skip("pebble is not installed")
    return found


class Pebble:
    """pebble on https://localhost:<port>/dir, validating HTTP-01 on `http_port` of whatever its
    mock DNS says (127.0.0.1 unless `point` says otherwise)."""

    def __init__(self, workdir: str, pki, http_port: int):
        pebble, challtestsrv = binaries()
        self.port, self.management, dns, dns_management = free_ports(4)
        self.dns_management = dns_management
        os.makedirs(workdir, exist_ok=True)
        self.ca_file = pki.cert  # what the issuer trusts for the ACME server (CABundle)
        cert, key = pki.leaf("pebble", "localhost", org="pebble")
        config = {"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                             "managementListenAddress": f"127.0.0.1:{self.management}",
                             "certificate": cert, "privateKey": key, "httpPort": http_port, "tlsPort": 1,
                             "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        config_file = os.path.join(workdir, "pebble.json")
        with open(config_file, "w") as handle:
            json.dump(config, handle)
        self.log = open(os.path.join(workdir, "pebble.log"), "w+")
        self.dns = subprocess.Popen(
            [challtestsrv, "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_management}", "-defaultIPv4", "127.0.0.1",
             "-defaultIPv6", ""], stdout=self.log, stderr=subprocess.STDOUT)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.proc = subprocess.Popen([pebble, "-config", config_file, "-dnsserver", f"127.0.0.1:{dns}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.context = ssl.create_default_context(cafile=self.ca_file)
        try:
            self._wait_up()
        except BaseException:
            self.close()
            raise

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.directory, context=self.context, timeout=2).read()
                urllib.request.urlopen(f"http://127.0.0.1:{self.dns_management}/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # challtestsrv answers 404 on /: it is up
            except OSError:
                time.sleep(0.1)
        raise AssertionError("pebble did not start within 20 s:\n" + self.log_text()[-3000:])

    def point(self, host: str, address: str) -> None:
        """The mock DNS answers `address` for `host` (pebble validates there)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]}).encode()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.dns_management}/add-a", body),
                               timeout=5).read()

    def trust(self) -> ssl.SSLContext:
        """A client context trusting pebble's issuing root and intermediate (its management API)."""
        pems = []
        for kind in ("roots", "intermediates"):
            pems.append(urllib.request.urlopen(f"https://localhost:{self.management}/{kind}/0",
                                               context=self.context, timeout=5).read().decode())
        context = ssl.create_default_context(cadata="\n".join(pems))
        return context

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        for proc in (self.proc, self.dns):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.log.close()


class SnapshotPublisher(ProxyLabelPublisher):
    """l7 deploy's publisher: the issuer's labels on the proxy service ("proxy") of the stand-in
    controller's snapshot, published at each change (as l7 deploy updates the swarm service,
    which the controller then snapshots)."""

    def __init__(self, controller, cluster: dict):
        self.controller, self.cluster = controller, copy.deepcopy(cluster)
        self.cluster["services"].append({"id": PROXY_SERVICE, "name": PROXY_SERVICE,
                                         "labels": {"io.ingressmesh.l7.proxy": "default"}})
        super().__init__({}, self._publish)
        self._publish()

    def _publish(self) -> None:
        proxy = next(s for s in self.cluster["services"] if s["name"] == PROXY_SERVICE)
        proxy["labels"] = {"io.ingressmesh.l7.proxy": "default", **self.labels}
        self.controller.publish(copy.deepcopy(self.cluster))

    def services(self):
        from ingressmesh import snapshot
        return snapshot.from_dict(copy.deepcopy(self.cluster)).services
