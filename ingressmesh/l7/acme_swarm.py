"""The issuer on a swarm: its certificates as Docker secrets, its labels on the proxy service.

`l7 deploy --watch` runs it (one replica on a manager: Swarm starts another when it goes, and the
new one reads the served versions back from the proxy service's labels and the secrets' names).
- `DockerSecretStore`: each certificate version is two immutable secrets (acme_names.py) carrying
  `io.ingressmesh.l7.acme` (so secret_policy lets the proxies mount them), their expiry as a
  label (a Docker secret cannot be read back) and the stack's label (`docker stack rm` removes
  them).  The account key is never stored: acme_account derives it from the cluster secret.
- `DockerLeaseStore`: which l7 deploy issues (acme_lease.py), as one secret's labels.
- `ProxyLabelPublisher`: the issuer's labels kept for the proxy service; each change is pushed at
  once (l7 deploy updates the service: a label change rolls no task, a new certificate version
  adds its secrets to the proxies' mounts, which rolls them start-first).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import docker

from ..swarm.convert import parse_timestamp
from . import acme_labels, acme_names
from .acme_lease import LeaseRecord
from .secret_policy import ACME_LABEL as SECRET_LABEL  # on the issuer's secrets
NOT_AFTER_LABEL = "io.ingressmesh.l7.acme.not_after"  # seconds since the epoch
LEASE_SECRET = "ingressmesh_acme_lease"
LEASE_HOLDER_LABEL = "io.ingressmesh.l7.acme.lease.holder"
LEASE_BEAT_LABEL = "io.ingressmesh.l7.acme.lease.beat"


class DockerSecretStore:
    def __init__(self, api, labels: Optional[Mapping[str, str]] = None):
        self.api, self.labels = api, dict(labels or {})  # e.g. the stack's namespace label

    def _ours(self) -> dict[str, dict]:
        return {s["Spec"]["Name"]: s for s in self.api.secrets(filters={"name": acme_names.PREFIX})
                if acme_names.parse(s["Spec"]["Name"]) is not None}

    def names(self) -> list[str]:
        return sorted(self._ours())

    def read(self, name: str) -> Optional[bytes]:
        return None  # Docker gives a secret's content to tasks only: the account key is derived

    def not_after(self, name: str) -> Optional[float]:
        found = self._ours().get(name)
        try:
            return float(found["Spec"]["Labels"][NOT_AFTER_LABEL]) if found else None
        except (KeyError, TypeError, ValueError):
            return None  # no expiry known: the issuer renews it now

    def created(self, name: str) -> float:
        return parse_timestamp((self._ours().get(name) or {}).get("CreatedAt", ""))

    def create(self, name: str, data: bytes, not_after: Optional[float]) -> None:
        labels = {**self.labels, SECRET_LABEL: "true"}
        if not_after is not None:
            labels[NOT_AFTER_LABEL] = f"{not_after:.0f}"
        self.api.create_secret(name, data, labels=labels)

    def remove(self, name: str) -> None:
        found = self._ours().get(name)
        if found is not None:
            self.api.remove_secret(found["ID"])  # refused while a proxy still mounts it: next pass


class DockerLeaseStore:
    """The issuer lease (acme_lease.py) as the labels of one Docker secret, LEASE_SECRET: Swarm
    updates a secret's labels only at the version given (`?version=`), the compare-and-swap the
    lease needs.  Its name starts with `ingressmesh`, so it is never given to a proxy
    (secret_policy.py); it carries the stack's label, so `docker stack rm` removes it."""

    def __init__(self, api, labels: Optional[Mapping[str, str]] = None):
        self.api, self.labels = api, dict(labels or {})

    def _found(self) -> Optional[dict]:
        return next((s for s in self.api.secrets(filters={"name": LEASE_SECRET}) if s["Spec"]["Name"] == LEASE_SECRET),
                    None)

    def read(self) -> Optional[LeaseRecord]:
        found = self._found()
        if found is None:
            return None
        labels = found["Spec"].get("Labels") or {}
        try:
            beat = int(labels.get(LEASE_BEAT_LABEL, "0"))
        except ValueError:
            beat = 0  # a hand-edited label: the next write puts a number back
        return LeaseRecord(int(found["Version"]["Index"]), labels.get(LEASE_HOLDER_LABEL), beat)

    def _labels(self, holder: str, beat: int) -> dict:
        return {**self.labels, LEASE_HOLDER_LABEL: holder, LEASE_BEAT_LABEL: str(beat)}

    def create(self, holder: str) -> bool:
        try:
            self.api.create_secret(LEASE_SECRET, b"the ACME issuer lease: see its labels\n",
                                   labels=self._labels(holder, 0))
        except docker.errors.APIError as err:
            if err.status_code == 409:  # another candidate created it first
                return False
            raise
        return True

    def swap(self, seen: LeaseRecord, holder: str, beat: int) -> bool:
        found = self._found()
        if found is None or int(found["Version"]["Index"]) != seen.version:
            return False
        # docker-py has no secret update: the Engine API's POST /secrets/{id}/update (labels only).
        response = self.api._post_json(self.api._url("/secrets/{0}/update", found["ID"]),
                                       params={"version": seen.version},
                                       data={"Name": LEASE_SECRET, "Labels": self._labels(holder, beat)})
        if response.status_code in (409, 500) and "out of sequence" in response.text:
            return False  # another candidate wrote first
        self.api._raise_for_status(response)
        return True


class ProxyLabelPublisher:
    """The issuer's labels for one proxy service; `push` brings the service in line at once."""

    def __init__(self, labels: Mapping[str, str], push: Callable[[], None]):
        self.labels = acme_labels.issuer_labels(labels)  # read back: a restarted issuer keeps them
        self.push = push

    def reload(self, labels: Mapping[str, str]) -> None:
        """Read back again, when this issuer takes the lease: another one published meanwhile."""
        self.labels = acme_labels.issuer_labels(labels)

    def answer(self, host: str, answers: dict[str, str]) -> None:
        self._set(acme_labels.http01_label(host), acme_labels.format_http01(answers.values()))

    def serve(self, versions: dict[str, int]) -> None:
        self._set(acme_labels.CERTS, acme_labels.format_certs(versions))

    def _set(self, key: str, value: str) -> None:
        """A new dict each time: l7 deploy's pass reads `labels` from another thread."""
        if value == self.labels.get(key, ""):
            return
        labels = {k: v for k, v in self.labels.items() if k != key}
        self.labels = {**labels, key: value} if value else labels
        self.push()
