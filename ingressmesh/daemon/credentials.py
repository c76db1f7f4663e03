"""Who a bearer token speaks for: the cluster secret, one node, or a read-only reader.

With one shared token any holder could report any node's tasks as stopping and drain the
whole cluster.  So each node gets its own credential, derived from the cluster secret (the
controllers need nothing but that secret to check it):

    node:<node_id>:<hex HMAC-SHA256(secret, "node:" + node_id)>   snapshot + reports of that node
    reader:<hex HMAC-SHA256(secret, "reader")>                    snapshot only (L7 proxy, CLI)
    the cluster secret itself                                      everything (as before)

The node id travels in the credential so a controller can check it without a lookup; the MAC
makes it unforgeable.  All comparisons are constant-time.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Optional, Protocol

FULL, NODE, READER = "full", "node", "reader"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # the snapshot's id syntax (no ':')


@dataclass(frozen=True)
class Principal:
    """What an authenticated request may speak for: `role` FULL, NODE (with node_id) or READER."""
    role: str
    node_id: str = ""

    def may_report_for(self, node_id: str) -> Optional[str]:
        """None when this principal may post a report about `node_id`, else why not."""
        if self.role == FULL or (self.role == NODE and self.node_id == node_id):  # ids are not secret
            return None
        if self.role == NODE:
            return f"the credential of node {self.node_id!r} may not report for node {node_id!r}"
        return "a read-only (reader) credential may not post reports"


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Optional[Principal]:
        """The principal `token` stands for, or None when it is not a valid credential."""


def _mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def node_credential(secret: str, node_id: str) -> str:
    """The credential of node `node_id` under the cluster `secret`."""
    if not _NODE_ID.match(node_id):
        raise ValueError(f"node id {node_id!r} is not a swarm node id")
    return f"node:{node_id}:{_mac(secret, 'node:' + node_id)}"


def reader_credential(secret: str) -> str:
    """The read-only credential under the cluster `secret`."""
    return f"reader:{_mac(secret, 'reader')}"


def credential_node(token: str) -> Optional[str]:
    """The node id a node credential names (unchecked), or None for any other token."""
    parts = token.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == NODE and _NODE_ID.match(parts[1]) else None


def is_derived(token: str) -> bool:
    """Whether `token` looks like a node or reader credential rather than a cluster secret."""
    return credential_node(token) is not None or token.startswith(READER + ":")


class TokenAuth:
    """Exactly one token, with full access (the agent's and proxy's own /v1/ paths)."""

    def __init__(self, token: str):
        self._token = token.encode()

    def authenticate(self, token: str) -> Optional[Principal]:
        return Principal(FULL) if hmac.compare_digest(token.encode(), self._token) else None


class ClusterAuth:
    """The controller's check: the cluster secret, any node credential, or the reader's."""

    def __init__(self, secret: str):
        self._secret = secret
        self._full = TokenAuth(secret)
        self._reader = reader_credential(secret).encode()

    def authenticate(self, token: str) -> Optional[Principal]:
        if self._full.authenticate(token):
            return Principal(FULL)
        given = token.encode()
        if hmac.compare_digest(given, self._reader):
            return Principal(READER)
        node_id = credential_node(token)
        if node_id is not None and hmac.compare_digest(given, node_credential(self._secret, node_id).encode()):
            return Principal(NODE, node_id)
        return None
