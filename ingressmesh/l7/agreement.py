"""What services sharing a route or a host must agree on, and how a disagreement is named.

A route's claimants share one backend, so they must agree on everything the backend does; a
host's claimants share one TLS setup (the certificate is picked by SNI before any path is
known), so they must agree on that too.  The refusal names only the labels that differ.
"""
from __future__ import annotations

from . import labels


def behaviour(request: labels.RouteRequest, host_side: bool) -> dict[str, str]:
    """The labels claimants must agree on, as the operator wrote them."""
    tls = request.tls
    if host_side:
        return {"ssl_cert": tls.cert or "(none)", "ssl_key": tls.key or "(none)",
                "ssl_only": str(tls.only).lower(), "ssl_passthrough": str(tls.passthrough).lower()}
    return {"context_root_rewrite": str(request.rewrite).lower(), "backend_mode": request.backend_mode,
            "ssl_backend": str(tls.backend).lower(), "ssl_backend_tls_verify": tls.verify,
            "ssl_backend_ca": tls.ca or "(none)", "sticky_session_cookie": request.sticky_cookie or "(none)",
            "ip_hash": str(request.ip_hash).lower(),
            "websocket_endpoints": ",".join(request.websocket_endpoints) or "(none)"}


def differences(request: labels.RouteRequest, keeper: labels.RouteRequest, host_side: bool = False) -> str:
    """'' when they agree; else 'a=x, b=y differs from a=z, b=w' naming only what differs."""
    mine, theirs = behaviour(request, host_side), behaviour(keeper, host_side)
    keys = [k for k in mine if mine[k] != theirs[k]]
    if not keys:
        return ""
    return (", ".join(f"{k}={mine[k]}" for k in keys) + " differs from " +
            ", ".join(f"{k}={theirs[k]}" for k in keys))
