"""The TLS label family: `ssl_cert`, `ssl_key`, `ssl_only`, `ssl_passthrough`, `ssl_backend`,
`ssl_backend_tls_verify` and ingressmesh's `ssl_backend_ca`.

Combinations that cannot mean one thing are refused rather than guessed: a certificate without
its key, passthrough together with a certificate (the app terminates, not the proxy), a CA
without verification, verification without a CA to verify against.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from . import grammar, secret_policy
from .grammar import LabelError

PREFIX = "com.docker.lb."
VERIFY = ("none", "required")
KEYS = ("ssl_cert", "ssl_key", "ssl_only", "ssl_passthrough", "ssl_backend", "ssl_backend_tls_verify",
        "ssl_backend_ca")


@dataclass(frozen=True)
class TlsRequest:
    cert: str = ""  # Docker secret names ("" = none)
    key: str = ""
    only: bool = False  # plain HTTP answers a redirect to HTTPS
    passthrough: bool = False  # TLS goes to the tasks untouched, routed by SNI
    backend: bool = False  # the proxy speaks TLS to the tasks
    verify: str = "none"  # "required": the tasks' certificates are checked against `ca`
    ca: str = ""  # Docker secret name of a PEM CA bundle

    @property
    def terminated(self) -> bool:
        return bool(self.cert)

    def host_side(self) -> tuple:
        """What every service claiming one host must agree on: TLS is per host, not per path."""
        return self.cert, self.key, self.only, self.passthrough

    def backend_side(self) -> tuple:
        return self.backend, self.verify, self.ca


def _flag(found: Mapping[str, str], key: str) -> bool:
    value = found.get(key)
    return grammar.boolean(PREFIX + key, value) if value is not None else False


def _secret(found: Mapping[str, str], key: str) -> str:
    value = found.get(key)
    if value is None:
        return ""
    name = grammar.secret_name(PREFIX + key, value)
    if secret_policy.reserved(name):  # the deployer never mounts it either (secret_policy.py)
        raise LabelError(PREFIX + key, value, "names an ingressmesh credential: never given to the proxies")
    return name


def parse(found: Mapping[str, str]) -> TlsRequest:
    """The TLS part of a service's labels (keys without the prefix); raises LabelError."""
    request = TlsRequest(cert=_secret(found, "ssl_cert"), key=_secret(found, "ssl_key"),
                         only=_flag(found, "ssl_only"), passthrough=_flag(found, "ssl_passthrough"),
                         backend=_flag(found, "ssl_backend"), ca=_secret(found, "ssl_backend_ca"))
    verify = found.get("ssl_backend_tls_verify")
    if verify is not None:
        request = replace(request, verify=grammar.choice(PREFIX + "ssl_backend_tls_verify", verify, VERIFY))
    _check(found, request)
    return request


def _check(found: Mapping[str, str], r: TlsRequest) -> None:
    def refuse(key: str, reason: str):
        raise LabelError(PREFIX + key, found.get(key, ""), reason)

    if bool(r.cert) != bool(r.key):
        refuse("ssl_key" if r.cert else "ssl_cert", "ssl_cert and ssl_key name a certificate and its key: set both")
    if r.passthrough and r.cert:
        refuse("ssl_passthrough", "with ssl_passthrough the app terminates TLS itself: drop ssl_cert and ssl_key")
    if r.passthrough and r.backend:
        refuse("ssl_backend", "ssl_passthrough already hands the TLS connection to the app")
    if r.only and not (r.cert or r.passthrough):
        refuse("ssl_only", "redirecting to HTTPS needs ssl_cert and ssl_key (or ssl_passthrough)")
    if r.verify == "required" and not r.backend:
        refuse("ssl_backend_tls_verify", "needs com.docker.lb.ssl_backend=true")
    if r.verify == "required" and not r.ca:
        refuse("ssl_backend_tls_verify", "required needs com.docker.lb.ssl_backend_ca (the CA secret to verify against)")
    if r.ca and r.verify != "required":
        refuse("ssl_backend_ca", "a CA is only used with com.docker.lb.ssl_backend_tls_verify=required")
