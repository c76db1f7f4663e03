"""What services sharing a route or a host must agree on, and how a disagreement is named.

A route's claimants share one backend, so they must agree on everything the backend does; a
host's claimants share one TLS setup (the certificate is picked by SNI before any path is
known) and its redirects (answered before any routing), so they must agree on those too.
The refusal names only the labels that differ.
"""
from __future__ import annotations

from typing import Optional

from . import labels


def behaviour(request: labels.RouteRequest, host: Optional[str]) -> dict[str, str]:
    """The labels claimants must agree on, as the operator wrote them: a route's (host None)
    or the host's."""
    tls = request.tls
    if host is not None:
        redirects = ";".join(r.shown() for r in request.redirects if r.source_host == host)
        return {"ssl_cert": tls.cert or "(none)", "ssl_key": tls.key or "(none)",
                "ssl_only": str(tls.only).lower(), "ssl_passthrough": str(tls.passthrough).lower(),
                "redirects": redirects or "(none)"}
    return {"context_root_rewrite": str(request.rewrite).lower(), "backend_mode": request.backend_mode,
            "ssl_backend": str(tls.backend).lower(), "ssl_backend_tls_verify": tls.verify,
            "ssl_backend_ca": tls.ca or "(none)", "sticky_session_cookie": request.sticky_cookie or "(none)",
            "ip_hash": str(request.ip_hash).lower(), "proxy_protocol": str(request.proxy_protocol).lower(),
            "websocket_endpoints": ",".join(request.websocket_endpoints) or "(none)"}


def differences(request: labels.RouteRequest, keeper: labels.RouteRequest, host: Optional[str] = None) -> str:
    """'' when they agree; else 'a=x, b=y differs from a=z, b=w' naming only what differs."""
    mine, theirs = behaviour(request, host), behaviour(keeper, host)
    keys = [k for k in mine if mine[k] != theirs[k]]
    if not keys:
        return ""
    return (", ".join(f"{k}={mine[k]}" for k in keys) + " differs from " +
            ", ".join(f"{k}={theirs[k]}" for k in keys))
