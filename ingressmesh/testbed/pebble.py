"""Debian's pebble (a test ACME server) and pebble-challtestsrv (its mock DNS), on loopback or
inside a network namespace of the test's own (the swarm lab), for the ACME tests."""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from typing import Optional

import pytest

from ..netns import Netns


def binaries() -> tuple[str, str]:
    found = shutil.which("pebble"), shutil.which("pebble-challtestsrv")
    if None in found:
        if os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
            pytest.fail("pebble is not installed (make test installs it: Debian's pebble package)")
        pytest.skip("pebble is not installed")
    return found


class Pebble:
    """pebble on https://<address>:<port>/dir, validating HTTP-01 on `http_port` of whatever its
    mock DNS says (`default_ip` unless `point` says otherwise).  On loopback by default; with
    `netns` (a path under /run/netns) both run inside that namespace, on its `address`."""

    def __init__(self, workdir: str, pki, http_port: int, ports: Optional[tuple[int, int, int, int]] = None,
                 netns: str = "", address: str = "", default_ip: str = "127.0.0.1",
                 eab_keys: Optional[dict[str, str]] = None):
        """`ports`: (ACME, management, DNS, DNS management); on loopback, free ones the caller
        chose; in a namespace of the test's own, fixed ones by default (every port is free there).
        `eab_keys` (key id -> base64url MAC key): accounts need an external account binding."""
        pebble, challtestsrv = binaries()
        self.netns, self.address = netns, address or "127.0.0.1"
        if ports is None and not netns:
            raise ValueError("pebble on loopback: pass free ports (loopback is shared with other tests)")
        self.port, self.management, dns, dns_management = ports or (14000, 15000, 8053, 8055)
        self.dns_management = dns_management
        os.makedirs(workdir, exist_ok=True)
        self.ca_file = pki.cert  # what the issuer trusts for the ACME server (CABundle)
        self.host = self.address if netns else "localhost"
        cert, key = pki.leaf("pebble", self.host, org="pebble")
        config = {"pebble": {"listenAddress": f"{self.address}:{self.port}",
                             "managementListenAddress": f"{self.address}:{self.management}",
                             "certificate": cert, "privateKey": key, "httpPort": http_port, "tlsPort": 1,
                             "ocspResponderURL": "", "externalAccountBindingRequired": bool(eab_keys),
                             "externalAccountMACKeys": dict(eab_keys or {})}}
        config_file = os.path.join(workdir, "pebble.json")
        with open(config_file, "w") as handle:
            json.dump(config, handle)
        self.log = open(os.path.join(workdir, "pebble.log"), "w+")
        inside = ["nsenter", f"--net={netns}"] if netns else []
        self.dns = subprocess.Popen(
            [*inside, challtestsrv, "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_management}", "-defaultIPv4", default_ip,
             "-defaultIPv6", ""], stdout=self.log, stderr=subprocess.STDOUT)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.proc = subprocess.Popen([*inside, pebble, "-config", config_file, "-dnsserver", f"127.0.0.1:{dns}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.context = ssl.create_default_context(cafile=self.ca_file)
        try:
            self._wait_up()
        except BaseException:
            self.close()
            raise

    @property
    def directory(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    def _get(self, url: str, data: Optional[bytes] = None, context=None) -> bytes:
        """One request to pebble or its DNS, from inside its namespace (setns is per thread)."""
        with Netns.from_ref(self.netns).entered():
            return urllib.request.urlopen(urllib.request.Request(url, data), context=context, timeout=5).read()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._get(self.directory, context=self.context)
                self._get(f"http://127.0.0.1:{self.dns_management}/")
                return
            except urllib.error.HTTPError:
                return  # challtestsrv answers 404 on /: it is up
            except OSError:
                time.sleep(0.1)
        raise AssertionError("pebble did not start within 20 s:\n" + self.log_text()[-3000:])

    def point(self, host: str, address: str) -> None:
        """The mock DNS answers `address` for `host` (pebble validates there)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]}).encode()
        self._get(f"http://127.0.0.1:{self.dns_management}/add-a", body)

    def trust(self) -> ssl.SSLContext:
        """A client context trusting pebble's issuing root and intermediate (its management API)."""
        pems = []
        for kind in ("roots", "intermediates"):
            pems.append(self._get(f"https://{self.host}:{self.management}/{kind}/0", context=self.context).decode())
        context = ssl.create_default_context(cadata="\n".join(pems))
        return context

    def trusted_pem(self) -> str:
        """pebble's issuing root and intermediate as one PEM text (a CA file for clients)."""
        return "\n".join(self._get(f"https://{self.host}:{self.management}/{kind}/0", context=self.context).decode()
                         for kind in ("roots", "intermediates"))

    def orders(self) -> int:
        """Orders pebble accepted, as its log says."""
        return self.log_text().count("Added order")

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
